//! The metrics port through real sockets: nodes started with `--metrics`,
//! scraped over HTTP as Prometheus scrapes them, the exposition checked by
//! `promtool check metrics` (Debian's `prometheus` package; `.ci/run`
//! installs it) and its numbers checked against what the test did.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Certs, Cluster, NodeProc, node_spec, wait_for};
use ringkv::KvStore;

struct Http {
    status: String,
    headers: String,
    body: String,
}

fn http(addr: SocketAddr, request: &[u8]) -> Http {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(request).unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    let all = String::from_utf8(all).expect("the exposition is text");
    let (head, body) = all.split_once("\r\n\r\n").expect("an HTTP response");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    Http { status: status.to_string(), headers: headers.to_string(), body: body.to_string() }
}

fn scrape(node: &NodeProc) -> String {
    let response = http(node.metrics.expect("the node serves metrics"), b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(response.status, "HTTP/1.1 200 OK", "{}", response.body);
    assert!(response.headers.contains("Content-Type: text/plain; version=0.0.4"), "{}", response.headers);
    response.body
}

/// The value of the sample named exactly `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

/// `promtool check metrics`: the format, and Prometheus's naming rules
/// (help text everywhere, `_total` on counters only, base units).
fn promtool(text: &str) {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("cannot run promtool ({e}): install Debian's `prometheus` package, as .ci/run does"),
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn resp(node: &NodeProc, commands: &[u8], replies: usize) -> String {
    let mut stream = TcpStream::connect(node.resp.expect("the node serves RESP")).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(commands).unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while got.matches("\r\n").count() < replies {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {got:?}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_counts_what_it_serves_and_prometheus_accepts_the_exposition() {
    let certs = Certs::new();
    let data = tempfile::tempdir().unwrap();
    let mut node = node_spec("n1", &data.path().join("n1"), certs.path())
        .arg("--resp")
        .arg("127.0.0.1:0")
        .arg("--metrics")
        .arg("127.0.0.1:0")
        .setting("fsync = \"always\"")
        .start();

    // 20 RESP writes, 10 reads in one MGET and one GET, a wrong command, an
    // unknown one; then 5 QUIC writes and 5 reads.
    let mut commands = Vec::new();
    for i in 0..20 {
        commands.extend_from_slice(format!("SET k{i} v{i}\r\n").as_bytes());
    }
    commands.extend_from_slice(b"MGET k0 k1 k2 k3 k4 k5 k6 k7 k8 k9\r\nGET k0\r\nGET\r\nLPUSH l a\r\n");
    // Reply lines: 20 `+OK`; MGET's header and 10 values of two lines; GET's
    // two; the two errors' one each. All are read before scraping, so every
    // command has been counted.
    let replies = resp(&node, &commands, 20 + 21 + 2 + 1 + 1);
    assert!(replies.contains("-ERR unknown command 'LPUSH'"), "{replies}");
    let client = certs.client(vec![node.addr]);
    for i in 0..5 {
        client.put(format!("q{i}"), "v").await.unwrap();
        assert!(client.get(format!("q{i}")).await.unwrap().is_some());
    }

    let text = scrape(&node);
    promtool(&text);
    assert_eq!(value(&text, r#"ringkv_requests_total{op="put",protocol="resp",result="ok"}"#), 20.0);
    assert_eq!(value(&text, r#"ringkv_requests_total{op="get",protocol="resp",result="ok"}"#), 2.0);
    assert_eq!(value(&text, r#"ringkv_requests_total{op="get",protocol="resp",result="invalid"}"#), 1.0);
    assert_eq!(value(&text, r#"ringkv_requests_total{op="unknown",protocol="resp",result="invalid"}"#), 1.0);
    // The client's session requests count under the operation they wrap.
    assert_eq!(value(&text, r#"ringkv_requests_total{op="put",protocol="quic",result="ok"}"#), 5.0);
    assert_eq!(value(&text, r#"ringkv_requests_total{op="get",protocol="quic",result="ok"}"#), 5.0);
    assert_eq!(value(&text, r#"ringkv_request_duration_seconds_count{op="put",protocol="resp"}"#), 20.0);
    assert_eq!(value(&text, r#"ringkv_request_duration_seconds_bucket{op="put",protocol="resp",le="+Inf"}"#), 20.0);
    assert!(value(&text, r#"ringkv_request_duration_seconds_sum{op="put",protocol="resp"}"#) > 0.0);
    assert_eq!(value(&text, "ringkv_keys"), 25.0);
    assert!(value(&text, "ringkv_memory_used_bytes") > 0.0);
    // fsync = "always": every write was synced, some together.
    let fsyncs = value(&text, "ringkv_wal_fsync_duration_seconds_count");
    assert!((1.0..=25.0).contains(&fsyncs), "{fsyncs} fsyncs for 25 writes");
    assert_eq!(value(&text, r#"ringkv_members{status="serving",live="true"}"#), 1.0, "standalone: itself");

    // What is not a scrape gets HTTP's answer, and the port goes on.
    let metrics = node.metrics.unwrap();
    assert!(http(metrics, b"GET / HTTP/1.1\r\n\r\n").status.starts_with("HTTP/1.1 404"));
    assert!(http(metrics, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").status.starts_with("HTTP/1.1 405"));
    let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    let mut stream = TcpStream::connect(metrics).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The node answers before the whole head is sent and closes; the rest
    // of the write may fail, which is the point.
    let _ = stream.write_all(&huge);
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    // A scraper that connects and says nothing holds one slot, not the port.
    let _silent = TcpStream::connect(metrics).unwrap();
    let text = scrape(&node);
    assert_eq!(value(&text, r#"ringkv_requests_total{op="put",protocol="resp",result="ok"}"#), 20.0);
    node.terminate(Duration::from_secs(20)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_cluster_shows_replication_hints_and_members() {
    let mut cluster = Cluster::start(3, &["metrics_listen = \"127.0.0.1:0\"", "hint_replay_interval = \"200ms\""]);
    for i in 0..3 {
        cluster.wait_serving(i, 3, Duration::from_secs(30)).await;
    }
    for node in &cluster.nodes {
        let text = scrape(node);
        promtool(&text);
        assert_eq!(value(&text, r#"ringkv_members{status="serving",live="true"}"#), 3.0, "{text}");
    }

    // Writes with n3 down: quorum holds (W = 2), and whichever of n1 and n2
    // coordinates a write keeps a hint for n3, which replicates every key
    // (N = 3).
    // Killed once it has recorded its membership, n3 returns as the same
    // member, with its data.
    cluster.nodes[2].wait_member_file().await;
    cluster.nodes[2].kill9();
    let client = cluster.client_of(0);
    for i in 0..2 {
        wait_for("n1 and n2 to see n3 down", Duration::from_secs(30), || {
            let text = scrape(&cluster.nodes[i]);
            async move { (sample(&text, r#"ringkv_members{status="serving",live="false"}"#) == Some(1.0)).then_some(()) }
        })
        .await;
    }
    for i in 0..50 {
        client.put(format!("key-{i}"), "value").await.unwrap();
    }
    let texts = [scrape(&cluster.nodes[0]), scrape(&cluster.nodes[1])];
    let total = |series: &str| texts.iter().map(|text| value(text, series)).sum::<f64>();
    for text in &texts {
        promtool(text);
        // Batches are counted twice, as a histogram and as a counter.
        let sent = value(text, r#"ringkv_replica_items_sent_total{lane="writes"}"#);
        assert_eq!(value(text, r#"ringkv_replica_batch_items_sum{lane="writes"}"#), sent);
        let batches = value(text, r#"ringkv_replica_requests_sent_total{lane="writes"}"#);
        assert_eq!(value(text, r#"ringkv_replica_batch_items_count{lane="writes"}"#), batches);
        assert!(batches <= sent, "{batches} batches for {sent} items");
    }
    assert_eq!(total(r#"ringkv_requests_total{op="put",protocol="quic",result="ok"}"#), 50.0);
    let sent = total(r#"ringkv_replica_items_sent_total{lane="writes"}"#);
    assert!(sent >= 50.0, "each of 50 writes went to its other live replica; sent {sent}");
    assert!(total(r#"ringkv_requests_total{op="replica",protocol="quic",result="ok"}"#) > 0.0);
    assert_eq!(total("ringkv_hints_held"), 50.0);
    assert_eq!(total("ringkv_hints_delivered_total"), 0.0);

    // n3 comes back; the hints go to it and the metrics say so.
    cluster.nodes[2] = cluster.nodes[2].spec.start();
    wait_for("hints delivered to n3", Duration::from_secs(60), || {
        let texts = [scrape(&cluster.nodes[0]), scrape(&cluster.nodes[1])];
        async move {
            let total = |series: &str| texts.iter().map(|text| sample(text, series)).sum::<Option<f64>>();
            (total("ringkv_hints_delivered_total")? == 50.0 && total("ringkv_hints_held")? == 0.0).then_some(())
        }
    })
    .await;
    let text = scrape(&cluster.nodes[2]);
    promtool(&text);
    assert_eq!(value(&text, "ringkv_keys"), 50.0, "{text}");
}
