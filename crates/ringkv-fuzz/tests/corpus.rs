//! Replays the fuzz corpus on stable: every checked-in corpus file and
//! every minimized finding (`fuzz/regressions/<target>/`) through the same
//! function the fuzz target runs, so `cargo test --workspace` (and CI)
//! covers every input the fuzzers kept, without nightly or cargo-fuzz.

use std::path::Path;

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<_> = entries.map(|e| e.expect("a directory entry").path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let run = ringkv_fuzz::target(target);
    let fuzz = ringkv_fuzz::fuzz_dir();
    let corpus = files(&fuzz.join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target} is empty: run `cargo run -p ringkv-fuzz --bin ringkv-fuzz-seeds`"
    );
    for path in corpus.iter().chain(&files(&fuzz.join("regressions").join(target))) {
        let bytes = std::fs::read(path).expect("read a corpus file");
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(outcome.is_ok(), "{target} panicked on {}", path.display());
    }
}

macro_rules! corpus_tests {
    ($($target:ident),* $(,)?) => {
        $(
            #[test]
            fn $target() {
                replay(stringify!($target));
            }
        )*

        #[test]
        fn every_target_is_replayed() {
            let replayed = [$(stringify!($target)),*];
            for (target, _) in ringkv_fuzz::TARGETS {
                assert!(replayed.contains(target), "add {target} to corpus_tests!");
            }
        }
    };
}

corpus_tests!(
    wire_frame,
    wire_reply,
    gossip_open,
    gossip_keyring,
    wal_record,
    snapshot_record,
    recovery,
    config,
    certs,
    resp_command
);

/// The seeds the generator makes are valid inputs that each target takes
/// without a finding (a seed that is refused early teaches the fuzzer
/// nothing about what lies past the check, but must not fail either).
#[test]
fn fresh_seeds_pass_their_targets() {
    for (target, name, bytes) in ringkv_fuzz::seeds::seeds() {
        let outcome = std::panic::catch_unwind(|| ringkv_fuzz::target(target)(&bytes));
        assert!(outcome.is_ok(), "{target} panicked on its seed {name}");
    }
}
