#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringkv_fuzz::target("resp_command")(data));
