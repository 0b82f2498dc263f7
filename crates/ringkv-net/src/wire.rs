//! The wire protocol: one versioned enum of requests and one of replies,
//! postcard-encoded in length-prefixed frames, one request and one reply per
//! QUIC stream.
//!
//! ```text
//! | len: u32 BE | version: u16 BE | postcard body: len - 2 bytes |
//! ```
//!
//! The version sits outside the postcard body so that a node can tell a
//! client from the future ("unsupported protocol version") from garbage
//! ("malformed frame") before trying to decode anything. Enum variants are
//! only ever appended; changing the meaning or layout of an existing one
//! requires a new protocol version.

use bytes::Bytes;
use ringkv_core::{Consistency, KeyTtl, KvError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::NetError;

pub const PROTOCOL_VERSION: u16 = 1;
pub const FRAME_HEADER_LEN: usize = 6;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Ping,
    Put { key: Bytes, value: Bytes, ttl_ms: Option<u64>, consistency: Consistency },
    Get { key: Bytes, consistency: Consistency },
    Delete { key: Bytes, consistency: Consistency },
    Exists { key: Bytes, consistency: Consistency },
    Ttl { key: Bytes, consistency: Consistency },
    Expire { key: Bytes, ttl_ms: u64, consistency: Consistency },
    Persist { key: Bytes, consistency: Consistency },
    Clear,
}

impl Request {
    /// Name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Put { .. } => "put",
            Request::Get { .. } => "get",
            Request::Delete { .. } => "delete",
            Request::Exists { .. } => "exists",
            Request::Ttl { .. } => "ttl",
            Request::Expire { .. } => "expire",
            Request::Persist { .. } => "persist",
            Request::Clear => "clear",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Pong { node_id: String, version: String },
    Done,
    Value(Option<Bytes>),
    Flag(bool),
    Ttl(KeyTtl),
}

pub type Response = Result<Reply, KvError>;

/// Encodes a message as one frame.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, NetError> {
    let mut buf = vec![0u8; FRAME_HEADER_LEN];
    buf[4..6].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    let mut buf = postcard::to_extend(message, buf).map_err(|e| NetError::Malformed(format!("cannot encode: {e}")))?;
    let len = u32::try_from(buf.len() - 4)
        .map_err(|_| NetError::FrameTooLarge { len: buf.len() as u64, max: u32::MAX as usize })?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Reads the length prefix, refusing frames over `max` before reading them.
pub fn frame_len(header: [u8; 4], max: usize) -> Result<usize, NetError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(NetError::FrameTooLarge { len: len as u64, max });
    }
    if len < 2 {
        return Err(NetError::Malformed(format!("frame of {len} bytes is too short to hold a version")));
    }
    Ok(len)
}

/// Decodes a frame body (everything after the length prefix).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, NetError> {
    let (version, payload) =
        body.split_at_checked(2).ok_or_else(|| NetError::Malformed("frame has no version".into()))?;
    let version = u16::from_be_bytes([version[0], version[1]]);
    if version != PROTOCOL_VERSION {
        return Err(NetError::UnsupportedVersion { found: version, supported: PROTOCOL_VERSION });
    }
    let (message, rest) = postcard::take_from_bytes(payload).map_err(|e| NetError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(NetError::Malformed(format!("{} trailing bytes after the message", rest.len())));
    }
    Ok(message)
}

/// Splits a whole frame (as read from a finished stream) and decodes it.
pub fn decode_frame<T: DeserializeOwned>(frame: &[u8], max: usize) -> Result<T, NetError> {
    let (header, body) =
        frame.split_at_checked(4).ok_or_else(|| NetError::Malformed("frame shorter than its length prefix".into()))?;
    let len = frame_len(header.try_into().expect("4 bytes"), max)?;
    if body.len() != len {
        return Err(NetError::Malformed(format!("length prefix says {len} bytes, the stream carried {}", body.len())));
    }
    decode(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejections() {
        let req = Request::Put {
            key: Bytes::from("k"),
            value: Bytes::from("v"),
            ttl_ms: Some(5),
            consistency: Consistency::All,
        };
        let frame = encode(&req).unwrap();
        assert_eq!(decode_frame::<Request>(&frame, 1024).unwrap(), req);
        assert!(matches!(decode_frame::<Request>(&frame, 4), Err(NetError::FrameTooLarge { .. })));

        let mut future = frame.clone();
        future[4..6].copy_from_slice(&9u16.to_be_bytes());
        assert!(matches!(
            decode_frame::<Request>(&future, 1024),
            Err(NetError::UnsupportedVersion { found: 9, supported: PROTOCOL_VERSION })
        ));

        let mut garbage = frame.clone();
        garbage[6] = 0xee;
        assert!(matches!(decode_frame::<Request>(&garbage, 1024), Err(NetError::Malformed(_))));
        assert!(matches!(decode_frame::<Request>(&frame[..frame.len() - 1], 1024), Err(NetError::Malformed(_))));
    }

    #[test]
    fn errors_cross_the_wire_intact() {
        let resp: Response = Err(KvError::KeyTooLarge { len: 10, max: 5 });
        assert_eq!(decode_frame::<Response>(&encode(&resp).unwrap(), 1024).unwrap(), resp);
    }
}
