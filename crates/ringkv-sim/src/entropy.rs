//! The process's randomness, from the seed: this module defines the C
//! library's `getrandom` and `getentropy`, so every caller in the process
//! (the standard library's hash-map keys, hence tokio's `select!`; rand's
//! thread rng, hence chitchat's gossip targets and quinn's connection ids)
//! draws from a generator the run seeds. Linked only into the simulator's
//! binaries; the node never sees it.
//!
//! What it cannot reach: ring's `SystemRandom` calls the getrandom system
//! call directly, so keys, TLS key shares and nonces stay random. They
//! change bytes, not lengths, hence not the simulation's course, as long as
//! signatures have one length: the simulator's certificates are Ed25519
//! (an ECDSA signature's DER encoding is 70 to 72 bytes, by its random
//! nonce, which made about one run in a hundred differ from its replay).

use std::sync::Mutex;

use ringkv_core::SplitMix64;

/// Before [`seed`] is called (argument parsing, logging), a fixed stream:
/// the simulator's process is deterministic from its first instruction.
static STREAM: Mutex<Option<SplitMix64>> = Mutex::new(None);

/// Restarts the process's randomness from `seed`.
pub fn seed(seed: u64) {
    *STREAM.lock().unwrap_or_else(|e| e.into_inner()) = Some(SplitMix64::new(seed ^ 0xE17B_0C5E));
}

fn fill(dest: &mut [u8]) {
    let mut stream = STREAM.lock().unwrap_or_else(|e| e.into_inner());
    let rng = stream.get_or_insert_with(|| SplitMix64::new(0));
    for chunk in dest.chunks_mut(8) {
        let word = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// getrandom(2), as glibc exports it.
///
/// # Safety
/// `buf` must be valid for `buflen` bytes of writes, as the C contract says.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn getrandom(buf: *mut u8, buflen: usize, _flags: u32) -> isize {
    if buf.is_null() {
        return -1;
    }
    if buflen > 0 {
        // SAFETY: the caller passes a buffer of `buflen` writable bytes.
        fill(unsafe { std::slice::from_raw_parts_mut(buf, buflen) });
    }
    buflen as isize
}

/// getentropy(3): at most 256 bytes.
///
/// # Safety
/// As [`getrandom`].
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn getentropy(buf: *mut u8, buflen: usize) -> i32 {
    if buflen > 256 {
        return -1;
    }
    // SAFETY: forwarded from the caller.
    match unsafe { getrandom(buf, buflen, 0) } {
        -1 => -1,
        _ => 0,
    }
}
