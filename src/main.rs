fn main() -> std::process::ExitCode {
    ringkv_cli::main()
}
