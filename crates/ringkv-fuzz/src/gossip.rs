//! Sealed gossip: opening datagrams with a fixed test keyring, joining
//! their fragments, and parsing the keyring file.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ringkv_net::gossip::{self, FORMAT, KeyId, Keyring, MAX_DATAGRAM, MAX_FRAGMENTS, OpenError, Reassembly};

use crate::Input;

/// The cluster id the test node runs with.
pub const CLUSTER: &str = "fuzz-cluster";
/// The test keyring: a primary key and an accepted one.
pub const KEYS: [(u32, u8); 2] = [(0x0000_0001, 0x11), (0x0000_0002, 0x22)];

fn keyring_text() -> String {
    let line = |role: &str, (id, byte): (u32, u8)| format!("{role} {id:08x} {}\n", format!("{byte:02x}").repeat(32));
    format!("{}{}", line("primary", KEYS[0]), line("accept", KEYS[1]))
}

fn keyring() -> &'static Keyring {
    static KEYRING: OnceLock<Keyring> = OnceLock::new();
    KEYRING.get_or_init(|| Keyring::parse(&keyring_text(), Path::new("gossip.key")).expect("the test keyring parses"))
}

/// Seals a datagram the way `gossip::seal` does, but with every header
/// field chosen by the caller, so that fuzzing reaches what happens after
/// authentication (fragment numbers, cluster ids, reassembly) instead of
/// stopping at the tag. `key` is the key material's byte.
pub fn seal_raw(
    key: (u32, u8),
    message: u32,
    index: u8,
    count: u8,
    cluster: &[u8],
    nonce: u32,
    body: &[u8],
) -> Vec<u8> {
    let mut datagram = vec![FORMAT];
    datagram.extend_from_slice(&key.0.to_be_bytes());
    datagram.extend_from_slice(&message.to_be_bytes());
    datagram.extend_from_slice(&[index, count, cluster.len() as u8]);
    datagram.extend_from_slice(&cluster[..cluster.len().min(255)]);
    let header_len = datagram.len();
    let mut nonce_bytes = [0u8; NONCE_LEN];
    nonce_bytes[..4].copy_from_slice(&nonce.to_be_bytes());
    datagram.extend_from_slice(&nonce_bytes);
    let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[key.1; 32]).expect("a 32-byte key"));
    let mut sealed = body.to_vec();
    let tag = aead
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce_bytes),
            Aad::from(&datagram[..header_len]),
            &mut sealed,
        )
        .expect("seal");
    datagram.extend_from_slice(&sealed);
    datagram.extend_from_slice(tag.as_ref());
    datagram
}

/// A sequence of datagrams, each `op: u8` then:
///
/// - `op & 1 == 0`: a raw datagram, `len: u16 | bytes`, opened as it came;
/// - `op & 1 == 1`: a datagram sealed here with fuzzed header fields,
///   `message: u8 | index: u8 | count: u8 | cluster: u8 | len: u16 | body`,
///   under key `KEYS[op >> 1 & 1]` (or, if `op & 4`, under an unknown key
///   id, or, if `op & 8`, the right id with the wrong key material); the
///   cluster id is ours unless `cluster` is non-zero.
///
/// Bits 4–5 of `op` pick the sender, bits 6–7 how long after the previous
/// datagram it arrives. Every datagram that opens goes into one
/// [`Reassembly`], as the node's socket does.
pub fn gossip_open(data: &[u8]) {
    let keyring = keyring();
    let mut input = Input::new(data);
    let mut reassembly = Reassembly::default();
    let start = Instant::now();
    let mut now = start;
    let mut nonce = 0u32;
    while !input.is_empty() {
        let op = input.u8();
        let from = SocketAddr::from(([127, 0, 0, 1], 7000 + u16::from(op >> 4 & 3)));
        now += Duration::from_millis([0, 10, 1_000, 5_000][usize::from(op >> 6)]);
        let (datagram, expect) = if op & 1 == 0 {
            let len = usize::from(input.u16());
            (input.bytes(len).to_vec(), None)
        } else {
            let message = u32::from(input.u8());
            let (index, count) = (input.u8(), input.u8());
            let other_cluster = input.u8();
            let len = usize::from(input.u16());
            let body = input.bytes(len);
            let mut key = KEYS[usize::from(op >> 1 & 1)];
            if op & 4 != 0 {
                key.0 = 0xdead_beef;
            } else if op & 8 != 0 {
                key.1 ^= 0xff;
            }
            let cluster = match other_cluster {
                0 => CLUSTER.to_string(),
                n => format!("other-{n}"),
            };
            nonce += 1;
            let datagram = seal_raw(key, message, index, count, cluster.as_bytes(), nonce, body);
            (datagram, Some((key, index, count, other_cluster != 0, body)))
        };
        let opened = gossip::open(keyring, CLUSTER, &datagram);
        if let Some((key, index, count, other_cluster, body)) = expect {
            check_sealed(&opened, key, index, count, other_cluster, body);
        }
        let Ok(fragment) = opened else { continue };
        assert!((1..=MAX_FRAGMENTS).contains(&fragment.count) && fragment.index < fragment.count);
        assert!(fragment.payload.len() <= datagram.len());
        if let Some(message) = reassembly.insert(from, fragment, now) {
            assert!(message.len() <= MAX_DATAGRAM * MAX_FRAGMENTS as usize, "a message of {} bytes", message.len());
        }
        assert!(reassembly.len() <= gossip::REASSEMBLY_ENTRIES, "{} partial messages held", reassembly.len());
    }
}

/// What opening a datagram sealed here must give.
fn check_sealed(
    opened: &Result<gossip::Fragment, OpenError>,
    key: (u32, u8),
    index: u8,
    count: u8,
    other_cluster: bool,
    body: &[u8],
) {
    let known = KEYS.iter().any(|k| k.0 == key.0);
    let right_key = KEYS.contains(&key);
    let valid_numbers = (1..=MAX_FRAGMENTS).contains(&count) && index < count;
    match opened {
        Ok(fragment) => {
            assert!(right_key && valid_numbers && !other_cluster, "opened a datagram it must refuse");
            assert_eq!((fragment.key, fragment.index, fragment.count), (KeyId(key.0), index, count));
            assert_eq!(fragment.payload, body);
        }
        Err(OpenError::UnknownKey(id)) => assert!(!known && id.0 == key.0),
        Err(OpenError::Authentication(_)) => {
            assert!(known && !right_key, "a datagram sealed right failed authentication")
        }
        Err(OpenError::BadFragment { .. }) => assert!(right_key && !valid_numbers),
        Err(OpenError::OtherCluster { fragment, .. }) => {
            assert!(right_key && valid_numbers && other_cluster);
            assert_eq!(fragment.payload, body);
        }
        Err(e) => panic!("a well-formed sealed datagram gave {e:?}"),
    }
}

/// The keyring file, as `Keyring::load` reads it. A keyring that parses
/// writes out as text that parses to the same keys.
pub fn gossip_keyring(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Keyring::parse(text, Path::new("gossip.key")) {
        Ok(keyring) => {
            let again = Keyring::parse(&keyring.to_text(), Path::new("gossip.key")).expect("a written keyring parses");
            assert_eq!((again.primary(), again.accepted()), (keyring.primary(), keyring.accepted()));
            assert!(keyring.accepted().len() < gossip::MAX_KEYS);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// The keyring file's text, for the seed corpus.
pub fn keyring_file() -> String {
    keyring_text()
}
