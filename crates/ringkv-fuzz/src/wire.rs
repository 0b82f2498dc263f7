//! The wire protocol, as a node's server reads a request from a client or
//! a peer, and as a client or a coordinating node reads a reply.

use ringkv_net::NetError;
use ringkv_net::wire::{self, MAX_PEER_FRAME_BYTES, Request, Response};
use ringkv_node::NodeConfig;

use crate::{Input, on_small_stack};

/// Stack the decoders get: well under a tokio worker thread's 2 MiB.
const DECODER_STACK: usize = 256 << 10;

/// The frame limit for a client, or for a peer (a node certificate), as
/// `endpoint.rs` and the `Connector`s compute them with the default
/// configuration.
fn max_frame(peer: bool) -> usize {
    let client = NodeConfig::default().max_frame_bytes();
    if peer { client.max(MAX_PEER_FRAME_BYTES) } else { client }
}

/// `flags: u8 | the bytes of one QUIC stream`. Bit 0 of `flags`: the sender
/// presented a node certificate. As `endpoint::serve_stream` does: read the
/// length prefix, refuse an oversized or too short frame before reading
/// it, read exactly that many bytes, check the version and decode a
/// [`Request`].
pub fn wire_frame(data: &[u8]) {
    let mut input = Input::new(data);
    let peer = input.u8() & 1 == 1;
    let stream = input.rest();
    let max = max_frame(peer);
    let Some((header, rest)) = stream.split_first_chunk::<4>() else { return };
    let len = match wire::frame_len(*header, max) {
        Ok(len) => len,
        Err(e) => return expect_refusal(e),
    };
    assert!((2..=max).contains(&len), "frame_len accepted {len} bytes with a maximum of {max}");
    // The server reads exactly `len` bytes; a stream that ends sooner is
    // an incomplete frame, bytes after it are never read.
    let Some(body) = rest.get(..len) else { return };
    let decoded = on_small_stack(DECODER_STACK, || wire::decode::<Request>(body));
    match decoded {
        Ok(request) => {
            let _ = request.kind();
            roundtrip(&request, max);
        }
        Err(e) => expect_refusal(e),
    }
}

/// `flags: u8 | the bytes of a reply stream`. Bit 0 of `flags`: the caller
/// is a node (frames up to [`MAX_PEER_FRAME_BYTES`]). As the `Connector`
/// does: the whole stream, up to the limit and four bytes, decoded as one
/// frame holding a [`Response`].
pub fn wire_reply(data: &[u8]) {
    let mut input = Input::new(data);
    let peer = input.u8() & 1 == 1;
    let stream = input.rest();
    let max = max_frame(peer);
    if stream.len() > max + 4 {
        return;
    }
    match on_small_stack(DECODER_STACK, || wire::decode_frame::<Response>(stream, max)) {
        Ok(response) => roundtrip(&response, max),
        Err(e) => expect_refusal(e),
    }
}

/// A decoded message encodes to a frame that decodes back to it.
fn roundtrip<T>(message: &T, max: usize)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug + Send + Sync,
{
    let frame = wire::encode(message).expect("a decoded message encodes");
    let again: T = on_small_stack(DECODER_STACK, || wire::decode_frame(&frame, max.max(frame.len())))
        .unwrap_or_else(|e| panic!("a re-encoded message does not decode: {e}; {message:?}"));
    assert_eq!(&again, message, "a message changed in a decode/encode/decode round trip");
}

/// Bad frames are refused as a protocol error, with a message.
fn expect_refusal(e: NetError) {
    assert!(
        matches!(e, NetError::Malformed(_) | NetError::FrameTooLarge { .. } | NetError::UnsupportedVersion { .. }),
        "a bad frame gave {e:?}"
    );
    let kv = ringkv_core::KvError::from(e);
    assert!(!kv.to_string().is_empty());
}
