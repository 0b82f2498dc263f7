//! The chaos suite, CI variant: a fixed seed and a short fault phase, so
//! that it runs in a few minutes and must pass every time. `just chaos`
//! runs the long version (see crates/ringkv-chaos).
//!
//! It runs alongside the other tests: its nodes run in network namespaces
//! of their own (named after the test process, on a private /24; this needs
//! root and iproute2, which `.ci/run` installs) and listen on ports the OS
//! picks, and its certificates, data and logs live in its own directory
//! under the target directory (kept after the run for inspection:
//! history.jsonl, summary.txt, logs/).

use std::path::PathBuf;
use std::time::Duration;

use ringkv_chaos::schedule::FaultKind;
use ringkv_chaos::{Options, run};

/// Every fault kind appears in this seed's 45 s schedule, a pause and a
/// partition that outlast both grace periods, and two faults that overlap
/// (the generator guarantees it for every seed); pinned so CI replays the
/// same faults.
const SEED: u64 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_ci_seed_survives_its_faults() {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("chaos-ci-seed-{SEED}"));
    let mut opts = Options::new(SEED, Duration::from_secs(45), out, PathBuf::from(env!("CARGO_BIN_EXE_ringkv")));
    opts.clients = 4;
    opts.convergence_bound = Duration::from_secs(90);
    let summary = run(&opts).await.expect("the chaos harness failed");
    println!("{summary}");
    for kind in [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Mute,
        FaultKind::Deaf,
        FaultKind::Split,
        FaultKind::ClockSkew,
        FaultKind::AddNode,
        FaultKind::RemoveNode,
        FaultKind::Clear,
    ] {
        assert!(summary.faults.iter().any(|f| f.fault.kind == kind), "the schedule should include {kind:?}");
    }
    for kind in [FaultKind::Pause, FaultKind::Partition] {
        assert!(
            summary.faults.iter().any(|f| f.fault.kind == kind && f.fault.is_long()),
            "the schedule should include a {kind:?} past both grace periods"
        );
    }
    assert!(summary.faults.iter().any(|f| f.fault.also.is_some()), "the schedule should overlap two faults");
    assert!(summary.passed(), "{} violations; see {}", summary.violations.len(), summary.out_dir.display());
}
