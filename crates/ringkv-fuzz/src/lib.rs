//! The bodies of ringkv's fuzz targets: one function per decoder that takes
//! bytes from outside the process, run on those bytes exactly as the node,
//! the client or recovery runs it.
//!
//! Every function here must return normally for *any* input: a decoder
//! answers a clear error, never a panic, an unbounded allocation or a hang.
//! Where a decoder accepts its input, the function also checks what must
//! then hold (a message re-encodes to what decodes back to it, a recovered
//! directory recovers again to the same state), and panics if it does not.
//!
//! They live in a crate of the main workspace, not in `fuzz/`, for two
//! callers: the cargo-fuzz targets in `fuzz/fuzz_targets/` (nightly,
//! libFuzzer), each a one-line call into [`TARGETS`], and this crate's
//! `tests/corpus.rs`, which feeds every checked-in corpus file and every
//! minimized finding (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`)
//! to the same function on stable, in `cargo test --workspace`.

use std::path::PathBuf;

mod certs;
mod config;
mod gossip;
mod resp;
pub mod seeds;
mod storage;
mod wire;

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/Cargo.toml` names its binaries and
/// `fuzz/corpus/` its directories.
pub const TARGETS: &[(&str, Target)] = &[
    ("wire_frame", wire::wire_frame),
    ("wire_reply", wire::wire_reply),
    ("gossip_open", gossip::gossip_open),
    ("gossip_keyring", gossip::gossip_keyring),
    ("wal_record", storage::wal_record),
    ("snapshot_record", storage::snapshot_record),
    ("recovery", storage::recovery),
    ("config", config::config),
    ("certs", certs::certs),
    ("resp_command", resp::resp_command),
];

/// Looks a target up by name.
pub fn target(name: &str) -> Target {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).unwrap_or_else(|| panic!("no fuzz target {name}"))
}

/// The repository's `fuzz/` directory.
pub fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Runs `f` on a thread with a stack of `bytes`: decoders of recursive
/// types must not need more stack than a tokio worker thread has (2 MiB),
/// whatever the input, so the wire targets decode on a smaller stack than
/// that and a recursion the input controls overflows it here first.
pub(crate) fn on_small_stack<R: Send>(bytes: usize, f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new().stack_size(bytes).spawn_scoped(s, f).expect("spawn a decoder thread");
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Reads bytes off the front of a fuzz input, with defaults once it runs
/// out: turns unstructured bytes into the structure a target needs.
pub(crate) struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub(crate) fn u8(&mut self) -> u8 {
        let Some((first, rest)) = self.data.split_first() else { return 0 };
        self.data = rest;
        *first
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `len` bytes.
    pub(crate) fn bytes(&mut self, len: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        taken
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}
