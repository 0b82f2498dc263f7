//! A node whose disk fills up stops rather than serve writes its log does
//! not hold, and after it restarts on a disk with room again it has every
//! write it acknowledged. The data directory is a small tmpfs of its own
//! (so the suite needs root, as the chaos tests do).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Certs, node_spec};
use ringkv::{Bytes, KvStore};

/// A tmpfs mounted for the test, unmounted on every path.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).status();
        assert!(status.unwrap().success(), "mount a tmpfs on {} (the test needs root)", dir.display());
        Tmpfs(dir.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).status();
        assert!(status.unwrap().success(), "resize the tmpfs on {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_node_and_it_keeps_what_it_acknowledged() {
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let disk = Tmpfs::mount(&data, "2m");
    let spec = node_spec("n1", &data, certs.path())
        .setting("persistence = \"wal\"")
        .setting("fsync = \"always\"")
        .setting("wal_segment_bytes = 262144");
    let mut node = spec.start();
    let client = certs.client(vec![node.addr]);

    let value = |i: usize| Bytes::from(format!("{i:08}").repeat(512));
    let mut acked = Vec::new();
    let refusal = loop {
        let i = acked.len();
        assert!(i < 10_000, "4 KiB values never filled a 2 MiB disk");
        match client.put(format!("k{i}"), value(i)).await {
            Ok(()) => acked.push(i),
            Err(e) => break e,
        }
    };
    assert!(acked.len() > 100, "the disk filled after {} writes", acked.len());

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = node.exited() {
            break status;
        }
        assert!(Instant::now() < deadline, "the node still runs 20 s after its disk filled ({refusal})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(2), "a failed node exits with status 2");
    // The reader thread may lag the exit by a moment.
    let log = common::wait_for("the log's last lines", Duration::from_secs(5), || {
        let log = node.log_lines().join("\n");
        async move { log.contains("the write-ahead log failed").then_some(log) }
    })
    .await;
    assert!(log.contains("No space left on device") || log.contains("storage full"), "{log}");

    disk.resize("64m");
    let node = node.restart();
    let client = certs.client(vec![node.addr]);
    for i in &acked {
        let got = client.get(format!("k{i}")).await.unwrap();
        assert_eq!(got, Some(value(*i)), "k{i}, acknowledged before the disk filled");
    }
}
