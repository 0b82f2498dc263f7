//! One stored entry in one allocation: key, value, version and expiry
//! behind a pointer of one word.
//!
//! This is where the engine's memory per key goes (BENCHMARKS.md, *Memory
//! per key*). An [`Entry`] beside its key in the map cost a key allocation,
//! a value allocation with the `Bytes` header it gets once shared, and 120
//! bytes of map slot for the version, options and pointers, most of it
//! padding; a record is one allocation with a header of 12 bytes for a key
//! and value of under 128 bytes each, and the map slot holds the key hash and
//! this pointer. Node tags, eight bytes each in a version, are few (one
//! per node that ever coordinated a write), so a record names them by their
//! index in its shard's [`Tags`]. Values are copied in (which also frees the receive buffer a
//! value arrived in, however large) and copied out when read: for small
//! values a copy costs less than the shared header it replaces, and a large
//! one is copied into its reply frame anyway.
//!
//! The layout is private to this process (nothing reaches the disk or the
//! network in it), so it carries no version:
//!
//! ```text
//! flags: u8               VALUE | EXPIRES | TOUCH | WIDE_NODE | WIDE_TOUCH
//! key length: LEB128
//! value length: LEB128    if VALUE
//! ts: u64 LE              the version's stamp
//! node: u8 tag index      or u64 LE if WIDE_NODE (the shard's tags are full)
//! ts: u64 LE, node        if TOUCH: the version's touch, its node as above
//! expires_at: u64 LE      if EXPIRES
//! key, value bytes
//! ```

use std::fmt;
use std::ptr::NonNull;

use ringkv_core::{EntryRef, NodeTag, Timestamp, Touch, Version};

const VALUE: u8 = 1;
const EXPIRES: u8 = 2;
const TOUCH: u8 = 4;
const WIDE_NODE: u8 = 8;
const WIDE_TOUCH: u8 = 16;

/// The node tags a shard's records name by index.
#[derive(Debug, Clone, Default)]
pub struct Tags(Vec<NodeTag>);

impl Tags {
    /// Tags beyond this many are stored whole in each record.
    const MAX: usize = 256;

    /// The index of `tag`, added if new and there is room.
    fn intern(&mut self, tag: NodeTag) -> Option<u8> {
        let at = match self.0.iter().position(|t| *t == tag) {
            Some(at) => at,
            None if self.0.len() < Self::MAX => {
                self.0.push(tag);
                self.0.len() - 1
            }
            None => return None,
        };
        Some(at as u8)
    }
}

/// An owned, immutable, encoded entry and its key.
///
/// The pointer is thin because the length is in the header: the map slot
/// that holds a record is 8 bytes smaller than one holding a `Box<[u8]>`,
/// which at a million keys is more than the whole header.
pub struct Record {
    /// Points at the first byte of a `Box<[u8]>` whose length the header
    /// gives; owned by this record alone.
    ptr: NonNull<u8>,
}

// SAFETY: a record owns its bytes exclusively, as a `Box<[u8]>` does, and
// never changes them after construction.
unsafe impl Send for Record {}
// SAFETY: shared access only ever reads.
unsafe impl Sync for Record {}

/// What the length of an entry's record depends on besides its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub value_len: Option<usize>,
    pub touched: bool,
    pub expires: bool,
}

impl From<EntryRef<'_>> for Shape {
    fn from(entry: EntryRef<'_>) -> Shape {
        Shape {
            value_len: entry.value.map(<[u8]>::len),
            touched: entry.version.touch.is_some(),
            expires: entry.expires_at.is_some(),
        }
    }
}

/// The bytes [`Record::new`] allocates for an entry of `shape` under a key
/// of `key_len` bytes, its tags interned (as they are unless a shard has
/// seen more than 256 nodes' writes).
pub fn encoded_len(key_len: usize, shape: Shape) -> usize {
    header_len(flags(shape, true, true), key_len, shape.value_len) + key_len + shape.value_len.unwrap_or(0)
}

fn flags(shape: Shape, node_interned: bool, touch_interned: bool) -> u8 {
    (if shape.value_len.is_some() { VALUE } else { 0 })
        | if shape.expires { EXPIRES } else { 0 }
        | if shape.touched { TOUCH } else { 0 }
        | if node_interned { 0 } else { WIDE_NODE }
        | if shape.touched && !touch_interned { WIDE_TOUCH } else { 0 }
}

fn header_len(flags: u8, key_len: usize, value_len: Option<usize>) -> usize {
    1 + leb128_len(key_len) + value_len.map_or(0, leb128_len) + fixed_len(flags)
}

impl Record {
    pub fn new(key: &[u8], entry: EntryRef<'_>, tags: &mut Tags) -> Record {
        let node = tags.intern(entry.version.node);
        let touch = entry.version.touch.map(|t| (t, tags.intern(t.node)));
        let flags = flags(entry.into(), node.is_some(), touch.is_none_or(|(_, at)| at.is_some()));
        let value_len = entry.value.map(<[u8]>::len);
        let len = header_len(flags, key.len(), value_len) + key.len() + value_len.unwrap_or(0);
        let mut buf = Vec::with_capacity(len);
        let put_node = |buf: &mut Vec<u8>, tag: NodeTag, at: Option<u8>| match at {
            Some(at) => buf.push(at),
            None => buf.extend_from_slice(&tag.0.to_le_bytes()),
        };
        buf.push(flags);
        put_leb128(&mut buf, key.len());
        if let Some(value_len) = value_len {
            put_leb128(&mut buf, value_len);
        }
        buf.extend_from_slice(&entry.version.ts.0.to_le_bytes());
        put_node(&mut buf, entry.version.node, node);
        if let Some((touch, at)) = touch {
            buf.extend_from_slice(&touch.ts.0.to_le_bytes());
            put_node(&mut buf, touch.node, at);
        }
        if let Some(at) = entry.expires_at {
            buf.extend_from_slice(&at.to_le_bytes());
        }
        buf.extend_from_slice(key);
        buf.extend_from_slice(entry.value.unwrap_or_default());
        debug_assert_eq!(buf.len(), len);
        let raw = Box::into_raw(buf.into_boxed_slice());
        // SAFETY: `Box::into_raw` never returns null; the slice is never
        // empty (the header alone is at least 11 bytes).
        Record { ptr: unsafe { NonNull::new_unchecked(raw.cast::<u8>()) } }
    }

    /// The lengths at the start of the encoding, read in place.
    fn header(&self) -> Header {
        let byte = |i: usize| {
            // SAFETY: the lengths are at the start of the allocation, which
            // is read only as far as they themselves say they extend.
            unsafe { self.ptr.as_ptr().add(i).read() }
        };
        let flags = byte(0);
        let (key_len, mut fields) = leb128(byte, 1);
        let value_len = (flags & VALUE != 0).then(|| {
            let (len, next) = leb128(byte, fields);
            fields = next;
            len
        });
        Header { flags, key_len, value_len, key_at: fields + fixed_len(flags), fields }
    }

    /// The whole encoding.
    fn bytes(&self, header: &Header) -> &[u8] {
        // SAFETY: `ptr` is the start of the boxed slice `new` leaked, which
        // is `header.len()` bytes long and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), header.len()) }
    }

    /// The encoding's length.
    pub fn len(&self) -> usize {
        self.header().len()
    }

    pub fn key(&self) -> &[u8] {
        let header = self.header();
        &self.bytes(&header)[header.key_at..header.key_at + header.key_len]
    }

    /// The entry, its node tags looked up in `tags`, which must be those
    /// the record was made with.
    pub fn entry(&self, tags: &Tags) -> EntryRef<'_> {
        let header = self.header();
        let (flags, bytes) = (header.flags, self.bytes(&header));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let node_at = |at: &mut usize, wide: u8| {
            if flags & wide != 0 {
                *at += 8;
                NodeTag(u64_at(*at - 8))
            } else {
                *at += 1;
                tags.0[usize::from(bytes[*at - 1])]
            }
        };
        let mut at = header.fields;
        let ts = Timestamp(u64_at(at));
        at += 8;
        let mut version = Version::new(ts, node_at(&mut at, WIDE_NODE));
        if flags & TOUCH != 0 {
            let ts = Timestamp(u64_at(at));
            at += 8;
            version.touch = Some(Touch { ts, node: node_at(&mut at, WIDE_TOUCH) });
        }
        let expires_at = (flags & EXPIRES != 0).then(|| u64_at(at));
        let value_at = header.key_at + header.key_len;
        let value = header.value_len.map(|len| &bytes[value_at..value_at + len]);
        EntryRef { version, value, expires_at }
    }
}

/// Where a record's parts are, from the lengths at its start.
struct Header {
    flags: u8,
    key_len: usize,
    value_len: Option<usize>,
    /// Where the version starts.
    fields: usize,
    key_at: usize,
}

impl Header {
    fn len(&self) -> usize {
        self.key_at + self.key_len + self.value_len.unwrap_or(0)
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let len = self.header().len();
        // SAFETY: reconstructs exactly the box `new` leaked, once.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), len)) });
    }
}

impl Clone for Record {
    fn clone(&self) -> Record {
        let raw = Box::into_raw(Box::<[u8]>::from(self.bytes(&self.header())));
        // SAFETY: as in `new`.
        Record { ptr: unsafe { NonNull::new_unchecked(raw.cast::<u8>()) } }
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Without its shard's tags a record can show its key and size.
        f.debug_struct("Record").field("key", &self.key()).field("len", &self.len()).finish()
    }
}

/// The header's fields after the lengths, under `flags`.
fn fixed_len(flags: u8) -> usize {
    let node = |wide| if flags & wide != 0 { 8 } else { 1 };
    8 + node(WIDE_NODE)
        + if flags & TOUCH != 0 { 8 + node(WIDE_TOUCH) } else { 0 }
        + if flags & EXPIRES != 0 { 8 } else { 0 }
}

fn leb128_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn put_leb128(buf: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

/// Decodes a LEB128 length starting at `at`; returns it and where the next
/// field starts.
fn leb128(byte: impl Fn(usize) -> u8, mut at: usize) -> (usize, usize) {
    let (mut n, mut shift) = (0usize, 0);
    loop {
        let b = byte(at);
        at += 1;
        n |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return (n, at);
        }
        shift += 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;
    use ringkv_core::Entry;

    fn entry() -> impl Strategy<Value = Entry> {
        let value = prop::option::of(prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            prop::collection::vec(any::<u8>(), 16_000..17_000),
        ]);
        (
            any::<u64>(),
            any::<u64>(),
            prop::option::of((any::<u64>(), any::<u64>())),
            value,
            prop::option::of(any::<u64>()),
        )
            .prop_map(|(ts, node, touch, value, expires_at)| Entry {
                version: Version {
                    ts: Timestamp(ts),
                    node: NodeTag(node),
                    touch: touch.map(|(ts, node)| Touch { ts: Timestamp(ts), node: NodeTag(node) }),
                },
                value: value.map(Bytes::from),
                expires_at,
            })
    }

    proptest! {
        #[test]
        fn a_record_gives_back_what_it_was_made_of(
            key in prop::collection::vec(any::<u8>(), 1..300),
            e in entry(),
            known in 0..=Tags::MAX,
        ) {
            // A shard that has seen `known` other nodes already: at 256 the
            // tags are full and the record names its nodes in full.
            let mut tags = Tags((0..known as u64).map(|n| NodeTag(n.wrapping_mul(0x9e37_79b9_7f4a_7c15))).collect());
            let record = Record::new(&key, e.view(), &mut tags);
            prop_assert_eq!(record.key(), &key[..]);
            prop_assert_eq!(record.entry(&tags), e.view());
            if known < Tags::MAX - 1 {
                prop_assert_eq!(record.len(), encoded_len(key.len(), e.view().into()));
            }
            let copy = record.clone();
            drop(record);
            prop_assert_eq!(copy.entry(&tags).to_entry(), e);
        }
    }

    #[test]
    fn a_small_entry_has_a_small_header() {
        let e = Entry::value(Version::new(Timestamp(1), NodeTag(2)), Bytes::from(vec![7; 100]), None);
        assert_eq!(encoded_len(16, e.view().into()) - 116, 12);
        let tombstone = Entry::tombstone(Version::new(Timestamp(1), NodeTag(2)));
        assert_eq!(encoded_len(16, tombstone.view().into()) - 16, 11);
    }

    #[test]
    fn lengths_cross_their_byte_boundaries() {
        for len in [0, 1, 127, 128, 16_383, 16_384, 2_097_152] {
            let e = Entry::value(Version::ZERO, Bytes::from(vec![1; len]), Some(5));
            let key = vec![2; len.clamp(1, 20_000)];
            let record = Record::new(&key, e.view(), &mut Tags::default());
            assert_eq!(record.key().len(), key.len());
            assert_eq!(record.len(), encoded_len(key.len(), e.view().into()));
            assert_eq!(record.key(), &key[..]);
        }
    }
}
