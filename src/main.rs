/// mimalloc rather than glibc's malloc: a node interleaves long-lived
/// entries (a key, a value, tree nodes) with short-lived request buffers
/// and task cells of a few KiB, and glibc's allocator fragments under that
/// pattern until the process holds about three times its live heap
/// (BENCHMARKS.md, memory per key). Size-segregated pages keep the two
/// apart, and allocation is cheaper too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ringkv_cli::main()
}
