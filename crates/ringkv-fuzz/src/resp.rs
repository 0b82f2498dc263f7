//! The RESP command decoder, which reads what Redis clients send.

use bytes::{Bytes, BytesMut};
use ringkv_resp::{Decoder, Limits, ProtocolError, encode_command};

/// Small limits, so that inputs of a few kilobytes reach every bound.
const LIMITS: Limits = Limits { max_bulk: 4096, max_args: 64, max_command: 16 * 1024 };

/// A byte stream as a connection receives it, the first byte choosing where
/// it is cut in two. How the bytes arrive must not change what they mean:
/// decoded whole and decoded in two reads, the commands and the error that
/// ends them are the same. And every command decoded, encoded again as a
/// client library sends it, decodes back to itself.
pub fn resp_command(data: &[u8]) {
    let Some((&cut, stream)) = data.split_first() else { return };
    let whole = run(&[stream]);
    let at = usize::from(cut) * stream.len() / 255;
    let split = run(&[&stream[..at], &stream[at..]]);
    assert_eq!(whole, split, "decoded whole and cut at {at}");
    for command in whole.0 {
        let mut encoded = BytesMut::new();
        encode_command(&command, &mut encoded);
        assert_eq!(run(&[&encoded]), (vec![command], None));
    }
}

/// The commands decoded from `reads` in turn, and the error that stopped
/// decoding, if one did.
fn run(reads: &[&[u8]]) -> (Vec<Vec<Bytes>>, Option<ProtocolError>) {
    let mut decoder = Decoder::new(LIMITS);
    let (mut buf, mut commands) = (BytesMut::new(), Vec::new());
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(command)) => commands.push(command),
                Ok(None) => break,
                Err(e) => return (commands, Some(e)),
            }
        }
    }
    (commands, None)
}
