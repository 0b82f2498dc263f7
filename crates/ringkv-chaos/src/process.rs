//! One `ringkv serve` process behind a drop guard: the test kit that the
//! chaos suite ([`crate::cluster`]) and the integration tests
//! (`tests/common`) both start nodes with.
//!
//! The guard, when dropped — on success, error or panic — resumes the
//! process (so that nothing is left stopped even if the kill fails), kills
//! it and reaps it. The process's stdout and stderr are appended to the
//! spec's log file, with a marker line at every start ([`START_MARKER`])
//! and at every SIGKILL the harness gives it during a run
//! ([`KILL_MARKER`]), so a failure can be matched to what the node was
//! doing, and an eviction the node logged to the process that logged it
//! ([`crate::evictions`]). The addresses come from the node's ready line,
//! so ports are chosen by the OS at first start and reused on restart.
//!
//! Starting and stopping block the calling thread (they wait for a line on
//! a pipe or for the process to exit, with a deadline); async callers that
//! must not stall their runtime run them on a blocking thread.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use crate::evictions::{KILL_MARKER, START_MARKER};

/// How to start one node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The `ringkv` binary.
    pub bin: PathBuf,
    pub node_id: String,
    pub data_dir: PathBuf,
    pub certs: PathBuf,
    pub listen: SocketAddr,
    /// The gossip address; `None` runs the node standalone.
    pub gossip: Option<SocketAddr>,
    pub seeds: Vec<SocketAddr>,
    /// Lines of TOML, written to `<data_dir>.toml` at every start and passed
    /// with `--config`; none passes no config file.
    pub settings: Vec<String>,
    /// More command-line arguments of `ringkv serve`.
    pub args: Vec<String>,
    /// The network namespace to run in (see [`crate::net`]); `None` runs
    /// the node in the harness's namespace.
    pub netns: Option<String>,
    /// The node's log filter (`RUST_LOG`).
    pub rust_log: String,
    /// The file the node's output is appended to.
    pub log: PathBuf,
    /// How long a start may take to print the ready line.
    pub ready_within: Duration,
}

impl NodeSpec {
    /// A standalone node on a loopback port the OS picks, logging at `info`
    /// to `<data_dir>.log`.
    pub fn new(bin: &Path, node_id: &str, data_dir: &Path, certs: &Path) -> NodeSpec {
        NodeSpec {
            bin: bin.into(),
            node_id: node_id.into(),
            data_dir: data_dir.into(),
            certs: certs.into(),
            listen: "127.0.0.1:0".parse().expect("valid"),
            gossip: None,
            seeds: Vec::new(),
            settings: Vec::new(),
            args: Vec::new(),
            netns: None,
            rust_log: "info".into(),
            log: data_dir.with_extension("log"),
            ready_within: Duration::from_secs(30),
        }
    }

    pub fn arg(mut self, a: &str) -> NodeSpec {
        self.args.push(a.into());
        self
    }

    pub fn setting(mut self, line: &str) -> NodeSpec {
        self.settings.push(line.into());
        self
    }

    fn command(&self) -> anyhow::Result<Command> {
        // `ip netns exec` execs the node in place, so the child's pid is the
        // node's and signals reach it directly.
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(&self.bin);
                cmd
            }
            None => Command::new(&self.bin),
        };
        cmd.arg("serve")
            .arg("--node-id")
            .arg(&self.node_id)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--certs")
            .arg(&self.certs)
            .arg("--listen")
            .arg(self.listen.to_string())
            .args(&self.args)
            .env("RUST_LOG", &self.rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(gossip) = self.gossip {
            cmd.arg("--gossip").arg(gossip.to_string());
        }
        if !self.seeds.is_empty() {
            let seeds: Vec<String> = self.seeds.iter().map(|s| s.to_string()).collect();
            cmd.arg("--seeds").arg(seeds.join(","));
        }
        if !self.settings.is_empty() {
            std::fs::create_dir_all(&self.data_dir).with_context(|| format!("create {}", self.data_dir.display()))?;
            let path = self.data_dir.with_extension("toml");
            std::fs::write(&path, self.settings.join("\n")).with_context(|| format!("write {}", path.display()))?;
            cmd.arg("--config").arg(path);
        }
        Ok(cmd)
    }

    /// Starts the node and waits (up to [`NodeSpec::ready_within`]) for its
    /// ready line; the addresses it reports become the spec's, so a restart
    /// reuses them. On failure the error carries the log's tail.
    pub fn try_start(&self) -> anyhow::Result<NodeProc> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        let gossip = self.gossip.map_or("none".to_string(), |g| g.to_string());
        writeln!(file, "{START_MARKER}{} listen {} gossip {gossip}", self.node_id, self.listen)?;
        let mut child = self.command()?.spawn().with_context(|| format!("spawn {}", self.bin.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let log_file = Arc::new(Mutex::new(file));
        let (copied_tx, copied) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let echo = std::env::var_os("RINGKV_TEST_ECHO").is_some().then(|| self.node_id.clone());
        copy_lines(stderr, log_file.clone(), "", echo, None, copied_tx.clone());
        copy_lines(stdout, log_file.clone(), "[stdout] ", None, Some(ready_tx), copied_tx);
        let mut node = NodeProc {
            spec: self.clone(),
            addr: self.listen,
            resp: None,
            metrics: None,
            child: Some(child),
            log_file,
            copied,
            copies_open: 2,
            paused: false,
        };
        let deadline = Instant::now() + self.ready_within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match ready_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(ready) = Ready::parse(&line) {
                        node.addr = ready.addr;
                        node.spec.listen = ready.addr;
                        node.spec.gossip = ready.gossip.or(node.spec.gossip);
                        node.resp = ready.resp;
                        node.metrics = ready.metrics;
                        return Ok(node);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the process is exiting. Its stderr is
                    // in the log once both copies have ended.
                    let status = node.child.as_mut().expect("running").wait()?;
                    node.child = None;
                    node.wait_copied();
                    bail!(
                        "node {} exited with {status} before it was ready; log tail:\n{}",
                        self.node_id,
                        tail(&self.log, 30)
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                    "node {} printed no ready line within {:?}; log tail:\n{}",
                    self.node_id,
                    self.ready_within,
                    tail(&self.log, 30)
                ),
            }
        }
    }

    /// [`NodeSpec::try_start`] for tests: a node that does not start fails
    /// the test with its log.
    pub fn start(&self) -> NodeProc {
        self.try_start().unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts the node on a thread of its own, for a node that is expected
    /// not to become ready yet; see [`Starting`].
    pub fn start_in_background(&self) -> Starting {
        let spec = self.clone();
        Starting(Some(std::thread::spawn(move || spec.start())))
    }
}

/// Copies `pipe` line by line into the log (and the first line stream to
/// `ready`), and reports on `done` when the pipe closes.
fn copy_lines(
    pipe: impl std::io::Read + Send + 'static,
    log: Arc<Mutex<std::fs::File>>,
    prefix: &'static str,
    echo: Option<String>,
    ready: Option<mpsc::Sender<String>>,
    done: mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Some(node) = &echo {
                eprintln!("[{node}] {line}");
            }
            let _ = writeln!(log.lock().unwrap_or_else(|e| e.into_inner()), "{prefix}{line}");
            if let Some(ready) = &ready {
                let _ = ready.send(line);
            }
        }
        let _ = done.send(());
    });
}

/// The addresses in a node's ready line:
/// `ringkv node n1 serving on ADDR [gossip ADDR] [resp ADDR] [metrics ADDR]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub addr: SocketAddr,
    pub gossip: Option<SocketAddr>,
    pub resp: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

impl Ready {
    pub fn parse(line: &str) -> Option<Ready> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |marker: &str| {
            words.iter().position(|w| *w == marker).and_then(|i| words.get(i + 1)).and_then(|a| a.parse().ok())
        };
        Some(Ready { addr: after("on")?, gossip: after("gossip"), resp: after("resp"), metrics: after("metrics") })
    }
}

/// A node process (running, killed, or paused), killed when dropped.
pub struct NodeProc {
    pub spec: NodeSpec,
    /// The QUIC address it serves on.
    pub addr: SocketAddr,
    /// The RESP port, if it serves one (`--resp`).
    pub resp: Option<SocketAddr>,
    /// The metrics port, if it serves one (`--metrics`).
    pub metrics: Option<SocketAddr>,
    child: Option<Child>,
    /// The log, shared with the threads that copy the process's output
    /// into it.
    log_file: Arc<Mutex<std::fs::File>>,
    /// One message from each of those two threads when its pipe closed.
    copied: mpsc::Receiver<()>,
    /// Those threads that have not sent it yet.
    copies_open: usize,
    pub paused: bool,
}

fn send_signal(pid: u32, signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is one of
    // our own children, not yet reaped (we hold its Child), so it cannot
    // have been reused by another process.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

impl NodeProc {
    /// The gossip address of a clustered node.
    pub fn gossip(&self) -> SocketAddr {
        self.spec.gossip.expect("a clustered node")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn signal(&self, signal: libc::c_int) -> anyhow::Result<()> {
        let pid = self.pid().ok_or_else(|| anyhow!("node {} is not running", self.spec.node_id))?;
        send_signal(pid, signal).with_context(|| format!("signal {signal} to {}", self.spec.node_id))
    }

    /// SIGSTOP: the process keeps its sockets but runs nothing.
    pub fn pause(&mut self) -> anyhow::Result<()> {
        self.signal(libc::SIGSTOP)?;
        self.paused = true;
        Ok(())
    }

    pub fn resume(&mut self) -> anyhow::Result<()> {
        self.signal(libc::SIGCONT)?;
        self.paused = false;
        Ok(())
    }

    /// SIGCONT (in case it is stopped), SIGKILL, reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = send_signal(child.id(), libc::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// SIGKILL during a run: [`NodeProc::kill9`], then, once the process's
    /// output is in the log, [`KILL_MARKER`] and `why`. What the process
    /// logged but had not yet made durable or sent (an eviction's
    /// tombstone, say) may be lost, and the marker tells the log's readers
    /// which lines that concerns. Without the wait, lines still in the pipe
    /// could land after the marker, or after the next start's.
    pub fn kill9_marked(&mut self, why: &str) {
        if self.child.is_none() {
            return;
        }
        // Before the signal: no earlier than the kill.
        let at = crate::history::now_wall_ms();
        self.kill9();
        self.wait_copied();
        let mut log = self.log_file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(log, "{KILL_MARKER}{} at {at} ({why})", self.spec.node_id);
    }

    /// Waits until the output of a process that has been reaped is all in
    /// the log. Both pipes close when it is (it has no children); the bound
    /// only keeps a stuck copy from stopping the run.
    fn wait_copied(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.copies_open > 0 {
            if self.copied.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_err() {
                break;
            }
            self.copies_open -= 1;
        }
    }

    /// Sends `signal` and waits for the process to exit by itself within
    /// `timeout`; on timeout the process is killed and an error returned.
    pub fn stop_with(&mut self, signal: libc::c_int, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.signal(signal)?;
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait()? {
                self.child = None;
                self.wait_copied();
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.kill9_marked(&format!("did not exit after signal {signal}"));
                bail!("node {} did not exit within {timeout:?} of signal {signal}", self.spec.node_id);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (the node hands its partitions off and leaves the ring), and
    /// a clean exit within `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.stop_with(libc::SIGTERM, timeout)
    }

    /// Whether the process has exited on its own (a crash); reported once,
    /// the node then counts as not running.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())?;
        self.child = None;
        self.wait_copied();
        Some(status)
    }

    pub fn log_path(&self) -> &Path {
        &self.spec.log
    }

    /// What this start of the node has logged so far: the log's lines after
    /// the last start marker.
    pub fn log_lines(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.spec.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.iter().rposition(|l| l.starts_with(START_MARKER)).map_or(0, |i| i + 1);
        lines[from..].iter().map(|l| l.to_string()).collect()
    }

    /// Waits until the node has recorded in its data directory that it is a
    /// ring member (a few seconds after it serves), so that it comes back
    /// from a restart as the same member rather than joining as a new one.
    pub async fn wait_member_file(&self) {
        let file = self.spec.data_dir.join("member");
        wait_for(&format!("{}'s member file", self.spec.node_id), Duration::from_secs(20), || {
            let exists = file.exists();
            async move { exists.then_some(()) }
        })
        .await;
    }

    /// SIGKILL, then delete the node's log and snapshots but keep its member
    /// file: it comes back as the same ring member holding nothing.
    pub fn kill9_and_wipe_keeping_membership(&mut self) {
        self.kill9();
        for file in std::fs::read_dir(&self.spec.data_dir).expect("the node's data directory") {
            let path = file.expect("a directory entry").path();
            if path.file_name() != Some("member".as_ref()) {
                std::fs::remove_file(&path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
            }
        }
    }

    /// Kills the node and starts it again on the same ports and data
    /// directory.
    pub fn restart(&mut self) -> NodeProc {
        self.kill9();
        self.spec.start()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A node being started in the background. Dropping it (a test that
/// panicked) waits for the start to end and kills the node, so no process
/// outlives the test.
pub struct Starting(Option<std::thread::JoinHandle<NodeProc>>);

impl Starting {
    /// Whether the node announced itself ready (or failed to start).
    pub fn is_finished(&self) -> bool {
        self.0.as_ref().is_none_or(|h| h.is_finished())
    }

    pub fn wait(mut self) -> NodeProc {
        self.0.take().expect("not yet joined").join().expect("the starting thread panicked")
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            let _ = handle.join();
        }
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` at the
/// deadline.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ready_line() {
        let ready = Ready::parse("ringkv node n1 serving on 127.0.0.1:4000 gossip 127.0.0.1:4001").unwrap();
        assert_eq!(ready.addr, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(ready.gossip, Some("127.0.0.1:4001".parse().unwrap()));
        assert_eq!(ready.resp, None);
        let ready =
            Ready::parse("ringkv node n1 serving on 127.0.0.1:4000 resp 127.0.0.1:6379 metrics 127.0.0.1:9").unwrap();
        assert_eq!(ready.gossip, None);
        assert_eq!(ready.resp, Some("127.0.0.1:6379".parse().unwrap()));
        assert_eq!(ready.metrics, Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(Ready::parse("something else"), None);
    }
}
