//! The simulator in the test suite: a batch of seeds, each a 3-node
//! cluster under its fault schedule for a minute of simulated time, judged
//! by the chaos checker; and seeds run twice, in two processes, that must
//! give the same history byte for byte. `just sim` runs longer searches.

use std::process::Command;

fn sim(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ringkv-sim"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run ringkv-sim");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success(), stdout)
}

#[test]
fn seeds_pass_the_checker() {
    let (ok, out) = sim(&["--seed", "1000", "--seeds", "8", "--duration", "60s", "--jobs", "2"]);
    assert!(ok, "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("seed ")).count(), 8, "{out}");
    assert!(out.contains("8 seeds of 60 s simulated: 0 failed"), "{out}");
}

/// Seeds that found bugs. They found them with ECDSA certificates, whose
/// random signature lengths made a few runs differ from their replays; the
/// simulator uses Ed25519 since, and these seeds now run other histories
/// through the same kinds of faults.
///
/// 25, 28, 77, 94, 98: deleted keys came back. A node joining (here, one
/// that rejoined as new after a crash) pulled a key, then missed its delete
/// behind a one-way partition (writes to a gaining replica keep no hint);
/// the other replicas purged the tombstone after `tombstone_grace`, since
/// the purge horizon counted only the current replicas, and the gainer's
/// copy came back through anti-entropy once it served. Fixed: the horizon
/// waits for gaining replicas too (`progress.rs`).
///
/// 82: an acknowledged write was lost, by the simulator's fault: it crashed
/// a second node while the first, restarted with its memory lost, was still
/// pulling its partitions back. Fixed in the schedule: a crash waits until
/// every node has served for a while.
#[test]
fn seeds_that_found_bugs_pass() {
    let seeds = ["25", "28", "77", "82", "94", "98"];
    // Two at a time, as the batch runs them.
    std::thread::scope(|scope| {
        for half in seeds.chunks(3) {
            scope.spawn(move || {
                for seed in half {
                    let (ok, out) = sim(&["--seed", seed, "--duration", "60s"]);
                    assert!(ok, "seed {seed}: {out}");
                }
            });
        }
    });
}

#[test]
fn a_seed_gives_the_same_history_in_another_process() {
    let (ok, out) = sim(&["--seed", "7", "--seeds", "4", "--duration", "20s", "--twice", "--jobs", "2"]);
    assert!(ok, "{out}");
    assert!(out.contains("4 seeds of 20 s simulated, each run twice: 0 failed"), "{out}");
    // One run's report, to show what is compared.
    let (ok, once) = sim(&["--seed", "7", "--duration", "20s"]);
    assert!(ok, "{once}");
    let hash = |text: &str| text.split("history ").nth(1).map(|rest| rest[..16].to_string());
    let batch_line = out.lines().find(|l| l.starts_with("seed 7:")).expect("seed 7 reported");
    assert_eq!(hash(batch_line), hash(&once), "a replay gives the batch's history");
}
