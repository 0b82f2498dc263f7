//! Record framing shared by the write-ahead log, snapshots and hint logs.
//!
//! ```text
//! | len: u32 LE | len_check: u32 LE | crc: u32 LE | payload: len bytes |
//! ```
//!
//! `len_check` is a CRC of the length field alone. Without it, a bit flip in
//! the length of a record in the middle of a file would look exactly like a
//! torn tail (a record running past the end of the file), and recovery would
//! silently drop everything after it. With it, a damaged length is reported as
//! corruption and only a genuinely incomplete last write is treated as torn.

use std::io::{self, Read};

use ringkv_core::Limits;

use crate::StorageError;

pub const HEADER_LEN: usize = 12;

/// The largest record payload, written or read: a maximal key and value
/// under the configuration's caps, plus room for the record's other fields
/// (format byte, tags, version, expiry, partition, a hint's target name).
///
/// Fixed rather than taken from the running configuration, so that lowering
/// `max_value_bytes` between restarts never makes records written before
/// look corrupt. A damaged length cannot hide behind the larger bound: the
/// length field has its own checksum.
pub const MAX_RECORD_BYTES: usize = Limits::KEY_CAP + Limits::VALUE_CAP + (64 << 10);

/// Frames a record payload; refuses one that recovery would refuse.
pub fn encode(what: &'static str, payload: &[u8], out: &mut Vec<u8>) -> Result<(), StorageError> {
    if payload.len() > MAX_RECORD_BYTES {
        return Err(StorageError::Encode {
            what,
            reason: format!("record of {} bytes exceeds the maximum of {MAX_RECORD_BYTES}", payload.len()),
        });
    }
    let len = u32::try_from(payload.len()).expect("records are bounded far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&len.to_le_bytes()).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// What the reader found at its current offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Record(Vec<u8>),
    /// Nothing left.
    End,
    /// An incomplete last write: a partial header, a payload cut short by
    /// the end of the file, a checksum failure on the very last record, or
    /// zero fill. Safe to truncate at [`FrameReader::offset`].
    Torn {
        reason: &'static str,
    },
    /// Damage with intact data after it: not something a crash produces.
    Corrupt {
        reason: String,
    },
}

/// Reads frames from a file of known length, one at a time.
pub struct FrameReader<R> {
    inner: R,
    offset: u64,
    file_len: u64,
    max_len: usize,
}

impl<R: Read> FrameReader<R> {
    /// `offset` is where frames start (after any file header already read).
    pub fn new(inner: R, offset: u64, file_len: u64, max_len: usize) -> FrameReader<R> {
        FrameReader { inner, offset, file_len, max_len }
    }

    /// Offset of the next unread frame: after a `Torn` or `Corrupt` answer,
    /// where the damage starts.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn next(&mut self) -> io::Result<Next> {
        let remaining = self.file_len - self.offset;
        if remaining == 0 {
            return Ok(Next::End);
        }
        if remaining < HEADER_LEN as u64 {
            return Ok(Next::Torn { reason: "partial record header" });
        }
        let mut header = [0u8; HEADER_LEN];
        self.inner.read_exact(&mut header)?;
        let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let (len, len_check, crc) = (word(0), word(4), word(8));
        if crc32fast::hash(&len.to_le_bytes()) != len_check {
            // File systems may leave zeroes after the last write on power loss.
            if header.iter().all(|b| *b == 0) && self.rest_is_zero()? {
                return Ok(Next::Torn { reason: "zero-filled tail" });
            }
            return Ok(Next::Corrupt { reason: "record length field fails its checksum".into() });
        }
        let len = len as usize;
        if len > self.max_len {
            return Ok(Next::Corrupt {
                reason: format!("record of {len} bytes exceeds the maximum of {}", self.max_len),
            });
        }
        let end = self.offset + (HEADER_LEN + len) as u64;
        if end > self.file_len {
            return Ok(Next::Torn { reason: "record cut short by the end of the file" });
        }
        let mut payload = vec![0u8; len];
        self.inner.read_exact(&mut payload)?;
        if crc32fast::hash(&payload) != crc {
            if end == self.file_len {
                return Ok(Next::Torn { reason: "checksum mismatch in the last record" });
            }
            return Ok(Next::Corrupt { reason: "record checksum mismatch".into() });
        }
        self.offset = end;
        Ok(Next::Record(payload))
    }

    fn rest_is_zero(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 8192];
        loop {
            let n = self.inner.read(&mut buf)?;
            if n == 0 {
                return Ok(true);
            }
            if buf[..n].iter().any(|b| *b != 0) {
                return Ok(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: usize = HEADER_LEN + 5;

    fn two_records() -> Vec<u8> {
        let mut buf = Vec::new();
        encode("test record", b"hello", &mut buf).unwrap();
        encode("test record", b"world!", &mut buf).unwrap();
        buf
    }

    fn read_all(buf: &[u8]) -> (Vec<Vec<u8>>, Next, u64) {
        let mut r = FrameReader::new(io::Cursor::new(buf), 0, buf.len() as u64, 100);
        let mut records = Vec::new();
        loop {
            match r.next().unwrap() {
                Next::Record(p) => records.push(p),
                other => return (records, other, r.offset()),
            }
        }
    }

    #[test]
    fn roundtrip() {
        let (records, end, offset) = read_all(&two_records());
        assert_eq!(records, vec![b"hello".to_vec(), b"world!".to_vec()]);
        assert_eq!((end, offset), (Next::End, two_records().len() as u64));
    }

    #[test]
    fn every_truncation_of_the_last_record_is_torn_at_its_start() {
        let buf = two_records();
        for cut in FIRST + 1..buf.len() {
            let (records, end, offset) = read_all(&buf[..cut]);
            assert_eq!(records.len(), 1, "cut at {cut}");
            assert!(matches!(end, Next::Torn { .. }), "cut at {cut}: {end:?}");
            assert_eq!(offset, FIRST as u64);
        }
    }

    #[test]
    fn every_flipped_byte_before_the_tail_is_corruption() {
        let buf = two_records();
        for i in 0..FIRST {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            let (records, end, offset) = read_all(&bad);
            assert!(records.is_empty());
            assert!(matches!(end, Next::Corrupt { .. }), "flip at {i}: {end:?}");
            assert_eq!(offset, 0);
        }
    }

    #[test]
    fn flipped_byte_in_the_last_record_and_zero_fill_are_torn() {
        let mut buf = two_records();
        let last = buf.len() - 1;
        buf[last] ^= 1;
        assert!(matches!(read_all(&buf).1, Next::Torn { .. }));
        let mut zeroed = two_records();
        zeroed.extend_from_slice(&[0; 100]);
        let (records, end, _) = read_all(&zeroed);
        assert_eq!(records.len(), 2);
        assert_eq!(end, Next::Torn { reason: "zero-filled tail" });
    }
}
