//! The process's randomness, from the seed: this module defines the C
//! library's `getrandom`, `getentropy` and `syscall`, so every caller in the
//! process draws from a generator the run seeds: the standard library's
//! hash-map keys (hence tokio's `select!`), rand's thread rng (hence
//! chitchat's gossip targets and quinn's connection ids), and ring, which
//! reaches the kernel through `syscall(SYS_getrandom, ..)` (the getrandom
//! crate's 0.2 line) for every private key, TLS key share and nonce. Linked
//! only into the simulator's binaries; the node never sees it.
//!
//! ring's randomness matters even though it changes only bytes: packet keys
//! decide how a node reads a stray datagram (a stateless reset, a packet of
//! a connection it closed), and the connection-id and reset keys are derived
//! from the node's private key. With the kernel's randomness there, runs
//! with random loss or slow links went apart from their replays.

use std::ffi::c_long;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// syscall(2), as glibc exports it: `SYS_getrandom` is answered from the
/// seeded stream, every other call goes on to glibc's `syscall`.
///
/// Defined with six fixed arguments: on the System V (x86-64) and AAPCS64
/// (Linux aarch64) ABIs a variadic call passes integer arguments exactly as
/// a fixed one does, and the kernel takes at most six.
///
/// # Safety
/// As the C contract of the system call named by `num`.
#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn syscall(
    num: c_long,
    a1: c_long,
    a2: c_long,
    a3: c_long,
    a4: c_long,
    a5: c_long,
    a6: c_long,
) -> c_long {
    if num == libc::SYS_getrandom {
        // SAFETY: getrandom(2)'s arguments are the buffer and its length.
        return unsafe { getrandom(a1 as *mut u8, a2 as usize, a3 as u32) } as c_long;
    }
    // SAFETY: forwarded unchanged to the C library's own `syscall`.
    unsafe { glibc_syscall()(num, a1, a2, a3, a4, a5, a6) }
}

/// glibc's `syscall`, found once. No lock: the standard library's locks
/// wait on futexes through `syscall` itself, and two threads that race
/// here store the same address.
#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
fn glibc_syscall() -> unsafe extern "C" fn(c_long, ...) -> c_long {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let mut address = NEXT.load(Ordering::Relaxed);
    if address == 0 {
        // SAFETY: a NUL-terminated name; RTLD_NEXT searches the libraries
        // loaded after this executable, where glibc's definition is.
        address = unsafe { libc::dlsym(libc::RTLD_NEXT, c"syscall".as_ptr()) } as usize;
        assert!(address != 0, "the C library exports syscall");
        NEXT.store(address, Ordering::Relaxed);
    }
    // SAFETY: the address of glibc's `long syscall(long, ...)`.
    unsafe { std::mem::transmute::<usize, unsafe extern "C" fn(c_long, ...) -> c_long>(address) }
}
