//! Damaged log files, at process level: the node must refuse to start on
//! corruption (naming file and offset) and must start, with a warning, after
//! a torn tail.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Certs, NodeSpec, node_spec};
use ringkv::KvStore;

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("wal-"))
        .filter(|p| std::fs::metadata(p).unwrap().len() > 20)
        .collect();
    segs.sort();
    segs
}

/// Writes `n` keys through a node with fsync=always and stops it cleanly.
async fn populated(certs: &Certs, data: &Path, n: usize) -> NodeSpec {
    let spec = node_spec("c1", data, certs.path()).arg("--fsync").arg("always");
    let mut node = spec.start();
    let client = certs.client(vec![node.addr]);
    for i in 0..n {
        client.put(format!("key-{i:04}"), vec![b'v'; 64]).await.unwrap();
    }
    assert!(node.terminate(Duration::from_secs(10)).unwrap().success());
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_in_the_middle_stops_the_node_with_file_and_offset() {
    let certs = Certs::new();
    let data = tempfile::tempdir().unwrap();
    let spec = populated(&certs, data.path(), 200).await;
    let segment = segments(data.path()).pop().expect("a log segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&segment, &bytes).unwrap();

    let stderr = spec.try_start().err().expect("a corrupt log must stop the node").to_string();
    let name = segment.file_name().unwrap().to_str().unwrap();
    assert!(stderr.contains(name), "error does not name {name}:\n{stderr}");
    assert!(stderr.contains("corrupt write-ahead log") && stderr.contains("at offset"), "{stderr}");
    assert!(stderr.contains("exit status: 2"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_last_record_is_dropped_with_a_warning() {
    let certs = Certs::new();
    let data = tempfile::tempdir().unwrap();
    let spec = populated(&certs, data.path(), 200).await;
    let segment = segments(data.path()).pop().expect("a log segment");
    let len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(len - 7).unwrap();

    let node = spec.start();
    let client = certs.client(vec![node.addr]);
    let mut present = 0;
    for i in 0..200 {
        if client.get(format!("key-{i:04}")).await.unwrap().is_some() {
            present += 1;
        }
    }
    assert_eq!(present, 199, "exactly the torn record is lost");
    assert_eq!(client.get("key-0199").await.unwrap(), None, "the last write was the torn one");
    let log = node.log_lines().join("\n");
    assert!(log.contains("truncating torn tail"), "no warning in:\n{log}");
    // The node keeps working.
    client.put("after", "repair").await.unwrap();
    assert_eq!(client.get("after").await.unwrap().unwrap(), "repair");
}
