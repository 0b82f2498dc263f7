//! Sealed gossip: the cluster gossip keyring and the datagram format that
//! carries chitchat's messages, authenticated and encrypted with
//! AES-256-GCM.
//!
//! This module works on bytes only; `ringkv-node` plugs it into chitchat's
//! `Transport` trait.
//!
//! # Datagram format 1
//!
//! ```text
//! format: u8 = 1 | key id: u32 | message id: u32 | index: u8 | count: u8
//! | cluster id length: u8 | cluster id | nonce: 12 bytes | ciphertext | tag: 16 bytes
//! ```
//!
//! Everything before the nonce is the *header*. It travels in the clear and
//! is the AEAD's associated data, so none of it can be changed without the
//! tag failing: not the key id, not the fragment numbers, not the cluster
//! id. A receiver looks the key id up in its keyring (an unknown id is
//! refused before any decryption) and opens the rest.
//!
//! The cluster id is in the header, rather than only mixed into the
//! associated data, so that a receiver can tell "not our key" (refused,
//! counted) from "our key, another cluster id" (a node of a staging cluster
//! seeded with a production address, holding a copy of production's key):
//! such a datagram is authentic but addressed to another cluster, and the
//! node layer answers only chitchat's `BadCluster` to it, so that the
//! misconfigured node stops with a clear error.
//!
//! # Nonces
//!
//! Every datagram gets a fresh random 96-bit nonce from the operating
//! system's generator (`ring::rand::SystemRandom`). A counter would need
//! state that survives restarts (and a clock or a file is exactly what a
//! restored backup or a cloned VM repeats); random nonces need none. A
//! repeat under one key breaks GCM, so the bound is the number of
//! datagrams sealed under one key, by every node together: after n
//! datagrams the chance of any repeat is about n² / 2⁹⁷, below 2⁻³² up to
//! 2³² datagrams (NIST SP 800-38D's limit for random nonces). At the
//! default 500 ms gossip interval a node sends up to about 18 datagrams a
//! second (a `Syn`, a `SynAck` and an `Ack` with each of up to three
//! peers per round), so a 10-node cluster seals 2³² datagrams in about
//! nine months of one key, a 100-node cluster in about four weeks.
//! Rotate the key (README, *Security*) well within that.
//!
//! # Fragments
//!
//! chitchat fills a message up to 65,507 bytes, the largest UDP payload
//! over IPv4, and that budget is a private constant of chitchat 0.13. The
//! header and tag add [`overhead`] bytes, so a message that does not fit in
//! one datagram is cut into at most [`MAX_FRAGMENTS`] pieces of about equal
//! size, each sealed on its own (the message id and the fragment numbers
//! are in the authenticated header). The receiver authenticates every
//! fragment before it keeps it, so only key holders can fill its
//! [`Reassembly`] buffer, which is bounded in entries and age anyway.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// The datagram format this build writes and reads.
pub const FORMAT: u8 = 1;
/// The largest UDP payload over IPv4 (65,535 less the IP and UDP headers):
/// no datagram we send is larger.
pub const MAX_DATAGRAM: usize = 65_507;
/// The most datagrams one message is cut into. chitchat's messages are at
/// most [`MAX_DATAGRAM`] bytes, so two always suffice; four leaves room.
pub const MAX_FRAGMENTS: u8 = 4;
/// Partial messages a receiver holds at once; the oldest goes first.
pub const REASSEMBLY_ENTRIES: usize = 16;
/// A partial message whose other fragments have not arrived within this is
/// dropped (fragments are sent back to back).
pub const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys a keyring may hold.
pub const MAX_KEYS: usize = 16;
/// The longest cluster id a header carries.
pub const MAX_CLUSTER_ID: usize = 255;
/// The keyring's file name in a certificate directory.
pub const KEYRING_FILE: &str = "gossip.key";

const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
/// format, key id, message id, index, count, cluster id length.
const FIXED_HEADER: usize = 1 + 4 + 4 + 1 + 1 + 1;

/// Bytes a datagram adds to the piece of message it carries.
pub fn overhead(cluster_id: &str) -> usize {
    FIXED_HEADER + cluster_id.len() + NONCE_LEN + TAG_LEN
}

/// The largest message [`seal`] takes for this cluster id.
pub fn max_message(cluster_id: &str) -> usize {
    (MAX_DATAGRAM - overhead(cluster_id)) * MAX_FRAGMENTS as usize
}

/// Why a datagram was not opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("datagram of {len} bytes is too short for a sealed gossip header")]
    Truncated { len: usize },
    #[error("unknown gossip datagram format {0} (this build reads format {FORMAT})")]
    UnknownFormat(u8),
    #[error("sealed under key {0}, which this node's keyring does not hold")]
    UnknownKey(KeyId),
    #[error("failed authentication under key {0}: sealed with another key of that id, or altered")]
    Authentication(KeyId),
    #[error("fragment {index} of {count} is not a valid fragment number")]
    BadFragment { index: u8, count: u8 },
    /// Authentic (sealed under a key we hold) but addressed to another
    /// cluster. The fragment is returned for the caller to decide what, if
    /// anything, it may answer.
    #[error("sealed for cluster '{cluster_id}', not this node's")]
    OtherCluster { cluster_id: String, fragment: Fragment },
}

/// Why a message was not sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("message of {len} bytes exceeds the {max} bytes {MAX_FRAGMENTS} datagrams carry")]
    TooLarge { len: usize, max: usize },
    #[error("cluster id of {len} bytes exceeds the {MAX_CLUSTER_ID} a gossip header carries")]
    ClusterId { len: usize },
    #[error("the system random generator failed")]
    Random,
}

/// Why a keyring could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("{path}, line {line}: {reason}")]
    Parse { path: PathBuf, line: usize, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{0}")]
    Change(String),
    #[error("the system random generator failed")]
    Random,
}

/// A key's id: 32 random bits, written as 8 hex digits. It names the key in
/// datagrams, files, logs and `ringkv status`; it reveals nothing of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u32);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl std::str::FromStr for KeyId {
    type Err = String;
    fn from_str(s: &str) -> Result<KeyId, String> {
        if s.len() != 8 {
            return Err(format!("key id '{s}' must be 8 hex digits"));
        }
        u32::from_str_radix(s, 16).map(KeyId).map_err(|_| format!("key id '{s}' must be 8 hex digits"))
    }
}

/// One 256-bit gossip key.
struct Key {
    id: KeyId,
    material: [u8; KEY_LEN],
    aead: LessSafeKey,
}

impl Key {
    fn new(id: KeyId, material: [u8; KEY_LEN]) -> Key {
        let unbound = UnboundKey::new(&AES_256_GCM, &material).expect("a 32-byte key is valid for AES-256-GCM");
        Key { id, material, aead: LessSafeKey::new(unbound) }
    }

    fn generate(rng: &SystemRandom) -> Result<Key, KeyringError> {
        let mut material = [0u8; KEY_LEN];
        rng.fill(&mut material).map_err(|_| KeyringError::Random)?;
        let mut id = [0u8; 4];
        rng.fill(&mut id).map_err(|_| KeyringError::Random)?;
        Ok(Key::new(KeyId(u32::from_be_bytes(id)), material))
    }
}

impl Clone for Key {
    fn clone(&self) -> Key {
        Key::new(self.id, self.material)
    }
}

/// The keys a node seals and opens gossip with: one primary key that every
/// datagram is sealed with, and any number of others that datagrams are
/// still opened with, so that an operator can rotate keys one node at a
/// time (README, *Security*).
///
/// # File format
///
/// A text file, one key a line: the role (`primary` or `accept`), the key
/// id (8 hex digits) and the key (64 hex digits), separated by spaces.
/// Exactly one `primary`; `#` starts a comment. For example:
///
/// ```text
/// primary 5e0c81d2 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
/// accept  0a7b33c4 60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752
/// ```
#[derive(Clone)]
pub struct Keyring {
    /// The primary key first.
    keys: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material.
        f.debug_struct("Keyring").field("primary", &self.primary()).field("accepted", &self.accepted()).finish()
    }
}

impl Keyring {
    /// A keyring of one new random key.
    pub fn generate() -> Result<Keyring, KeyringError> {
        Ok(Keyring { keys: vec![Key::generate(&SystemRandom::new())?] })
    }

    /// A keyring of one given key, for tests and tools.
    pub fn from_key(id: KeyId, material: [u8; KEY_LEN]) -> Keyring {
        Keyring { keys: vec![Key::new(id, material)] }
    }

    pub fn primary(&self) -> KeyId {
        self.keys[0].id
    }

    /// The ids of the other keys datagrams are opened with.
    pub fn accepted(&self) -> Vec<KeyId> {
        self.keys[1..].iter().map(|k| k.id).collect()
    }

    pub fn contains(&self, id: KeyId) -> bool {
        self.keys.iter().any(|k| k.id == id)
    }

    fn get(&self, id: KeyId) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Adds a new random key, accepted but not primary; returns its id.
    pub fn add_new(&mut self) -> Result<KeyId, KeyringError> {
        if self.keys.len() >= MAX_KEYS {
            return Err(KeyringError::Change(format!("the keyring already holds {MAX_KEYS} keys; remove one first")));
        }
        let rng = SystemRandom::new();
        let mut key = Key::generate(&rng)?;
        while self.contains(key.id) {
            key = Key::generate(&rng)?;
        }
        let id = key.id;
        self.keys.push(key);
        Ok(id)
    }

    /// Makes `id` the key datagrams are sealed with; the former primary
    /// stays accepted.
    pub fn promote(&mut self, id: KeyId) -> Result<(), KeyringError> {
        let i = self
            .keys
            .iter()
            .position(|k| k.id == id)
            .ok_or_else(|| KeyringError::Change(format!("the keyring holds no key {id}")))?;
        let key = self.keys.remove(i);
        self.keys.insert(0, key);
        Ok(())
    }

    /// Removes an accepted key. The primary key cannot be removed: promote
    /// another first.
    pub fn remove(&mut self, id: KeyId) -> Result<(), KeyringError> {
        if self.primary() == id {
            return Err(KeyringError::Change(format!(
                "{id} is the primary key; promote another key before removing it"
            )));
        }
        let before = self.keys.len();
        self.keys.retain(|k| k.id != id);
        if self.keys.len() == before {
            return Err(KeyringError::Change(format!("the keyring holds no key {id}")));
        }
        Ok(())
    }

    /// The file's text (see the type's docs).
    pub fn to_text(&self) -> String {
        let mut text = String::from(
            "# ringkv gossip keyring: keep it secret (mode 0600). One key a line: role (primary seals,\n\
             # accept only opens), key id, key. Manage it with `ringkv certs gossip-key`.\n",
        );
        for (i, key) in self.keys.iter().enumerate() {
            let role = if i == 0 { "primary" } else { "accept " };
            text.push_str(&format!("{role} {} {}\n", key.id, hex(&key.material)));
        }
        text
    }

    /// Parses the file's text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Keyring, KeyringError> {
        let parse_err = |line: usize, reason: String| KeyringError::Parse { path: path.into(), line, reason };
        let mut primary = None;
        let mut others: Vec<Key> = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [role, id, material] = fields[..] else {
                return Err(parse_err(n + 1, "expected `primary|accept <key id> <key>`".into()));
            };
            let id: KeyId = id.parse().map_err(|e| parse_err(n + 1, e))?;
            let material = unhex(material)
                .and_then(|bytes| <[u8; KEY_LEN]>::try_from(bytes).ok())
                .ok_or_else(|| parse_err(n + 1, format!("key {id} must be 64 hex digits (256 bits)")))?;
            let taken = primary.as_ref().is_some_and(|k: &Key| k.id == id) || others.iter().any(|k| k.id == id);
            if taken {
                return Err(parse_err(n + 1, format!("key id {id} appears twice")));
            }
            let key = Key::new(id, material);
            match role {
                "primary" if primary.is_some() => {
                    return Err(parse_err(n + 1, "a second primary key; a keyring has exactly one".into()));
                }
                "primary" => primary = Some(key),
                "accept" => others.push(key),
                other => return Err(parse_err(n + 1, format!("unknown role '{other}' (use primary or accept)"))),
            }
        }
        let Some(primary) = primary else {
            return Err(KeyringError::Invalid { path: path.into(), reason: "no primary key".into() });
        };
        let mut keys = vec![primary];
        keys.extend(others);
        if keys.len() > MAX_KEYS {
            return Err(KeyringError::Invalid {
                path: path.into(),
                reason: format!("{} keys; a keyring holds at most {MAX_KEYS}", keys.len()),
            });
        }
        Ok(Keyring { keys })
    }

    pub fn load(path: &Path) -> Result<Keyring, KeyringError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| KeyringError::Read { path: path.into(), reason: e.to_string() })?;
        Keyring::parse(&text, path)
    }

    /// Writes the keyring with mode 0600, atomically: a node polling the
    /// file never reads half of it.
    pub fn save(&self, path: &Path) -> Result<(), KeyringError> {
        let write_err = |p: &Path, e: std::io::Error| KeyringError::Write { path: p.into(), reason: e.to_string() };
        let tmp = path.with_extension("key.tmp");
        {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&tmp).map_err(|e| write_err(&tmp, e))?;
            file.write_all(self.to_text().as_bytes()).map_err(|e| write_err(&tmp, e))?;
            file.sync_all().map_err(|e| write_err(&tmp, e))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| write_err(path, e))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

/// One opened datagram: a piece of a message, or all of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Fragment {
    pub key: KeyId,
    pub message: u32,
    pub index: u8,
    pub count: u8,
    pub payload: Vec<u8>,
}

impl fmt::Debug for Fragment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Fragment({} of {}, message {}, {} bytes)",
            self.index + 1,
            self.count,
            self.message,
            self.payload.len()
        )
    }
}

/// Seals `message` under the keyring's primary key into one datagram, or
/// into at most [`MAX_FRAGMENTS`] if it does not fit in one. `message_id`
/// tells a message's fragments apart from another's; a sender counts it up.
pub fn seal(
    keyring: &Keyring,
    cluster_id: &str,
    message_id: u32,
    message: &[u8],
    rng: &dyn SecureRandom,
) -> Result<Vec<Vec<u8>>, SealError> {
    if cluster_id.len() > MAX_CLUSTER_ID {
        return Err(SealError::ClusterId { len: cluster_id.len() });
    }
    let room = MAX_DATAGRAM - overhead(cluster_id);
    let count = message.len().div_ceil(room).max(1);
    if count > MAX_FRAGMENTS as usize {
        return Err(SealError::TooLarge { len: message.len(), max: max_message(cluster_id) });
    }
    // Pieces of about equal size rather than a full one and a small rest.
    let piece = message.len().div_ceil(count).max(1);
    let key = &keyring.keys[0];
    let mut datagrams = Vec::with_capacity(count);
    for index in 0..count {
        let chunk = message.get(index * piece..((index + 1) * piece).min(message.len())).unwrap_or(&[]);
        let mut datagram = Vec::with_capacity(overhead(cluster_id) + chunk.len());
        datagram.push(FORMAT);
        datagram.extend_from_slice(&key.id.0.to_be_bytes());
        datagram.extend_from_slice(&message_id.to_be_bytes());
        datagram.push(index as u8);
        datagram.push(count as u8);
        datagram.push(cluster_id.len() as u8);
        datagram.extend_from_slice(cluster_id.as_bytes());
        let header_len = datagram.len();
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        datagram.extend_from_slice(&nonce);
        let mut body = chunk.to_vec();
        let tag = key
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&datagram[..header_len]),
                &mut body,
            )
            .map_err(|_| SealError::TooLarge { len: message.len(), max: max_message(cluster_id) })?;
        datagram.extend_from_slice(&body);
        datagram.extend_from_slice(tag.as_ref());
        datagrams.push(datagram);
    }
    Ok(datagrams)
}

/// Opens one datagram sealed by [`seal`] under any key of `keyring`, for
/// cluster `cluster_id`.
pub fn open(keyring: &Keyring, cluster_id: &str, datagram: &[u8]) -> Result<Fragment, OpenError> {
    let truncated = || OpenError::Truncated { len: datagram.len() };
    let format = *datagram.first().ok_or_else(truncated)?;
    if format != FORMAT {
        return Err(OpenError::UnknownFormat(format));
    }
    if datagram.len() < FIXED_HEADER {
        return Err(truncated());
    }
    let key_id = KeyId(u32::from_be_bytes(datagram[1..5].try_into().expect("4 bytes")));
    let message = u32::from_be_bytes(datagram[5..9].try_into().expect("4 bytes"));
    let (index, count, id_len) = (datagram[9], datagram[10], datagram[11] as usize);
    let header_len = FIXED_HEADER + id_len;
    if datagram.len() < header_len + NONCE_LEN + TAG_LEN {
        return Err(truncated());
    }
    let key = keyring.get(key_id).ok_or(OpenError::UnknownKey(key_id))?;
    let (header, rest) = datagram.split_at(header_len);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| truncated())?;
    let mut body = sealed.to_vec();
    let plain_len = key
        .aead
        .open_in_place(nonce, Aad::from(header), &mut body)
        .map_err(|_| OpenError::Authentication(key_id))?
        .len();
    body.truncate(plain_len);
    // Authenticated from here on: the header is what the sender wrote.
    if count == 0 || count > MAX_FRAGMENTS || index >= count {
        return Err(OpenError::BadFragment { index, count });
    }
    let fragment = Fragment { key: key_id, message, index, count, payload: body };
    let theirs = &header[FIXED_HEADER..];
    if theirs != cluster_id.as_bytes() {
        let cluster_id = String::from_utf8_lossy(theirs).into_owned();
        return Err(OpenError::OtherCluster { cluster_id, fragment });
    }
    Ok(fragment)
}

/// Joins the fragments of messages cut by [`seal`]. Holds at most
/// [`REASSEMBLY_ENTRIES`] partial messages, each for at most
/// [`REASSEMBLY_TIMEOUT`]; time is passed in so tests need no clock.
#[derive(Default)]
pub struct Reassembly {
    partial: HashMap<(SocketAddr, u32), Partial>,
}

struct Partial {
    since: Instant,
    pieces: Vec<Option<Vec<u8>>>,
}

impl Reassembly {
    /// Takes one authenticated fragment from `from`; returns the whole
    /// message once every fragment of it has arrived.
    pub fn insert(&mut self, from: SocketAddr, fragment: Fragment, now: Instant) -> Option<Vec<u8>> {
        if fragment.count == 1 {
            return Some(fragment.payload);
        }
        self.partial.retain(|_, p| now.saturating_duration_since(p.since) < REASSEMBLY_TIMEOUT);
        let slot = (from, fragment.message);
        if !self.partial.contains_key(&slot) && self.partial.len() >= REASSEMBLY_ENTRIES {
            let oldest = self.partial.iter().min_by_key(|(_, p)| p.since).map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                self.partial.remove(&oldest);
            }
        }
        let partial = self
            .partial
            .entry(slot)
            .or_insert_with(|| Partial { since: now, pieces: vec![None; fragment.count as usize] });
        if partial.pieces.len() != fragment.count as usize {
            // The same message id with another fragment count: a new message
            // (the sender restarted its count); start over.
            *partial = Partial { since: now, pieces: vec![None; fragment.count as usize] };
        }
        partial.pieces[fragment.index as usize].get_or_insert(fragment.payload);
        if partial.pieces.iter().all(Option::is_some) {
            let partial = self.partial.remove(&slot).expect("present");
            return Some(partial.pieces.into_iter().flatten().flatten().collect());
        }
        None
    }

    /// Partial messages held.
    pub fn len(&self) -> usize {
        self.partial.len()
    }

    pub fn is_empty(&self) -> bool {
        self.partial.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_of(id: u32, byte: u8) -> Keyring {
        Keyring::from_key(KeyId(id), [byte; KEY_LEN])
    }

    fn seal_one(keyring: &Keyring, cluster: &str, message: &[u8]) -> Vec<u8> {
        let mut datagrams = seal(keyring, cluster, 7, message, &SystemRandom::new()).unwrap();
        assert_eq!(datagrams.len(), 1);
        datagrams.remove(0)
    }

    #[test]
    fn a_sealed_datagram_opens_and_hides_its_message() {
        let keyring = ring_of(1, 0xaa);
        let message = b"the truncate epoch is 12345";
        let datagram = seal_one(&keyring, "prod", message);
        assert_eq!(datagram.len(), message.len() + overhead("prod"));
        assert!(!datagram.windows(message.len()).any(|w| w == message), "the message travels encrypted");
        let fragment = open(&keyring, "prod", &datagram).unwrap();
        assert_eq!((fragment.index, fragment.count, fragment.message), (0, 1, 7));
        assert_eq!(fragment.payload, message);
        // Two seals of the same message differ (fresh nonces).
        assert_ne!(seal_one(&keyring, "prod", message), datagram);
    }

    #[test]
    fn every_kind_of_bad_datagram_is_a_clear_error() {
        let keyring = ring_of(1, 0xaa);
        let datagram = seal_one(&keyring, "prod", b"hello");

        // Another key under an id we do not hold, and under the same id.
        assert_eq!(open(&ring_of(2, 0xaa), "prod", &datagram), Err(OpenError::UnknownKey(KeyId(1))));
        assert_eq!(open(&ring_of(1, 0xbb), "prod", &datagram), Err(OpenError::Authentication(KeyId(1))));

        // Any flipped byte after the format byte: the key id, the header,
        // the nonce, the ciphertext or the tag.
        for i in 1..datagram.len() {
            let mut bad = datagram.clone();
            bad[i] ^= 0x01;
            match open(&keyring, "prod", &bad) {
                Err(OpenError::Authentication(_) | OpenError::UnknownKey(_) | OpenError::Truncated { .. }) => {}
                other => panic!("byte {i} flipped: {other:?}"),
            }
        }

        // Every truncation.
        for len in 0..datagram.len() {
            let err = open(&keyring, "prod", &datagram[..len]).unwrap_err();
            assert!(matches!(err, OpenError::Truncated { .. } | OpenError::Authentication(_)), "{len} bytes: {err:?}");
        }

        // A format this build does not know.
        let mut future = datagram.clone();
        future[0] = 2;
        assert_eq!(open(&keyring, "prod", &future), Err(OpenError::UnknownFormat(2)));
        assert!(open(&keyring, "prod", &[0u8; 3]).unwrap_err().to_string().contains("format 0"));

        // Authentic, but for another cluster: told apart, with the message.
        match open(&keyring, "staging", &datagram) {
            Err(OpenError::OtherCluster { cluster_id, fragment }) => {
                assert_eq!(cluster_id, "prod");
                assert_eq!(fragment.payload, b"hello");
            }
            other => panic!("{other:?}"),
        }
        // And the cluster id cannot be rewritten in transit.
        let mut renamed = datagram.clone();
        let at = FIXED_HEADER;
        renamed[at..at + 4].copy_from_slice(b"stag");
        assert_eq!(open(&keyring, "stag", &renamed), Err(OpenError::Authentication(KeyId(1))));

        // Messages are lowercase without a trailing period.
        for err in
            [OpenError::Truncated { len: 3 }, OpenError::UnknownKey(KeyId(1)), OpenError::Authentication(KeyId(1))]
        {
            let text = err.to_string();
            assert!(text.chars().next().unwrap().is_lowercase() && !text.ends_with('.'), "{text}");
        }
    }

    #[test]
    fn a_maximal_chitchat_message_is_cut_in_two_and_joined() {
        let keyring = ring_of(9, 0x11);
        let cluster = "a-cluster-id";
        let message: Vec<u8> = (0..MAX_DATAGRAM).map(|i| (i % 251) as u8).collect();
        let datagrams = seal(&keyring, cluster, 42, &message, &SystemRandom::new()).unwrap();
        assert_eq!(datagrams.len(), 2);
        assert!(datagrams.iter().all(|d| d.len() <= MAX_DATAGRAM));
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let now = Instant::now();
        let mut reassembly = Reassembly::default();
        // Out of order, with a duplicate.
        let second = open(&keyring, cluster, &datagrams[1]).unwrap();
        assert_eq!(reassembly.insert(from, second.clone(), now), None);
        assert_eq!(reassembly.insert(from, second, now), None);
        let first = open(&keyring, cluster, &datagrams[0]).unwrap();
        assert_eq!(reassembly.insert(from, first, now), Some(message.clone()));
        assert!(reassembly.is_empty());

        // The largest message a datagram holds whole, and one byte more.
        let room = MAX_DATAGRAM - overhead(cluster);
        assert_eq!(seal(&keyring, cluster, 1, &message[..room], &SystemRandom::new()).unwrap().len(), 1);
        assert_eq!(seal(&keyring, cluster, 1, &message[..room + 1], &SystemRandom::new()).unwrap().len(), 2);
        let huge = vec![0u8; max_message(cluster) + 1];
        assert!(matches!(seal(&keyring, cluster, 1, &huge, &SystemRandom::new()), Err(SealError::TooLarge { .. })));
    }

    #[test]
    fn reassembly_is_bounded_in_entries_and_time() {
        let keyring = ring_of(9, 0x11);
        let message = vec![5u8; MAX_DATAGRAM];
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let start = Instant::now();
        let mut reassembly = Reassembly::default();
        let mut firsts = Vec::new();
        for id in 0..(REASSEMBLY_ENTRIES as u32 + 5) {
            let datagrams = seal(&keyring, "c", id, &message, &SystemRandom::new()).unwrap();
            firsts.push(datagrams);
        }
        for (id, datagrams) in firsts.iter().enumerate() {
            let at = start + Duration::from_millis(id as u64);
            assert_eq!(reassembly.insert(from, open(&keyring, "c", &datagrams[0]).unwrap(), at), None);
            assert!(reassembly.len() <= REASSEMBLY_ENTRIES);
        }
        // The oldest partial messages were dropped; the newest completes.
        let last = firsts.last().unwrap();
        let done = reassembly.insert(from, open(&keyring, "c", &last[1]).unwrap(), start);
        assert_eq!(done.as_deref(), Some(&message[..]));
        assert_eq!(reassembly.insert(from, open(&keyring, "c", &firsts[0][1]).unwrap(), start), None);
        // Past the timeout everything partial is gone.
        let later = start + REASSEMBLY_TIMEOUT + Duration::from_secs(1);
        assert_eq!(reassembly.insert(from, open(&keyring, "c", &firsts[1][1]).unwrap(), later), None);
        assert_eq!(reassembly.len(), 1);
    }

    #[test]
    fn keyring_file_roundtrips_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEYRING_FILE);
        let mut keyring = Keyring::generate().unwrap();
        let old = keyring.primary();
        keyring.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let before_rotation = seal_one(&keyring, "c", b"x");
        let new = keyring.add_new().unwrap();
        assert_eq!(keyring.accepted(), vec![new]);
        keyring.promote(new).unwrap();
        assert_eq!((keyring.primary(), keyring.accepted()), (new, vec![old]));
        assert!(keyring.remove(new).unwrap_err().to_string().contains("primary"));
        keyring.save(&path).unwrap();
        let loaded = Keyring::load(&path).unwrap();
        assert_eq!((loaded.primary(), loaded.accepted()), (new, vec![old]));
        // A datagram sealed under the old primary still opens, until the
        // old key is removed; the new primary seals.
        assert_eq!(open(&loaded, "c", &before_rotation).unwrap().key, old);
        assert_eq!(open(&loaded, "c", &seal_one(&loaded, "c", b"y")).unwrap().key, new);
        let mut without_old = loaded.clone();
        without_old.remove(old).unwrap();
        assert_eq!(open(&without_old, "c", &before_rotation), Err(OpenError::UnknownKey(old)));
        assert!(!format!("{loaded:?}").contains(&hex(&loaded.keys[0].material)), "debug output hides keys");
    }

    #[test]
    fn bad_keyring_files_are_explained() {
        let p = Path::new("gossip.key");
        let key = "00".repeat(32);
        let cases = [
            (String::new(), "no primary key"),
            (format!("primary 0000000g {key}"), "line 1: key id '0000000g' must be 8 hex digits"),
            (format!("primary 00000001 {}", &key[2..]), "line 1: key 00000001 must be 64 hex digits"),
            (format!("primary 00000001 {key}\nprimary 00000002 {key}"), "line 2: a second primary"),
            (format!("primary 00000001 {key}\naccept 00000001 {key}"), "line 2: key id 00000001 appears twice"),
            (format!("# c\nsecondary 00000001 {key}"), "line 2: unknown role 'secondary'"),
            ("primary 00000001".into(), "line 1: expected"),
        ];
        for (text, expected) in cases {
            let err = Keyring::parse(&text, p).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        let ok = Keyring::parse(&format!("primary 00000001 {key} # comment\n\naccept 00000002 {key}\n"), p).unwrap();
        assert_eq!((ok.primary(), ok.accepted()), (KeyId(1), vec![KeyId(2)]));
    }
}
