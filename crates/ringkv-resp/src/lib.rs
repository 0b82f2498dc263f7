//! The Redis serialization protocol (RESP2 and RESP3), without I/O.
//!
//! A connection owns a [`Decoder`] and a read buffer: it appends what the
//! socket gives to the buffer, takes whole commands off its front with
//! [`Decoder::decode`] until that needs more bytes, and writes each
//! command's [`Reply`] encoded for the protocol the connection negotiated
//! (`HELLO 2` or `HELLO 3`). Pipelining is the caller's loop: replies go out
//! in the order the commands came in.
//!
//! Clients send commands two ways, and both are accepted as Redis accepts
//! them: as an array of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`,
//! what every client library sends) and inline, as one line split at spaces
//! with Redis's quoting rules (`GET "a key"\r\n`, what a person types into
//! `telnet` and `redis-benchmark` sends for `PING_INLINE`).
//!
//! Everything a hostile client controls is bounded before memory is spent on
//! it: a length is checked against [`Limits`] when its header arrives, not
//! when its bytes do, and a line with no end is refused at 64 KiB. What a
//! decoder keeps between calls is the arguments of one unfinished command,
//! at most [`Limits::max_command`] bytes. Errors carry Redis's own texts;
//! after one, the connection is closed (Redis does the same: the stream is
//! no longer framed).

pub mod cluster;
pub mod commands;

use std::fmt::Write as _;

use bytes::{Buf, Bytes, BytesMut};

/// The longest line (an inline command, or a length header) a client may
/// send: Redis's `PROTO_INLINE_MAX_SIZE`.
pub const MAX_LINE: usize = 64 * 1024;

/// What an argument costs beyond its bytes, as [`Limits::max_command`]
/// counts: its `Bytes` handle in the command's vector.
pub const ARG_OVERHEAD: usize = std::mem::size_of::<Bytes>();

/// What one command may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest argument (Redis's `proto-max-bulk-len`).
    pub max_bulk: usize,
    /// The most arguments in one command.
    pub max_args: usize,
    /// The most bytes of all of one command's arguments together, each
    /// counted with its handle ([`ARG_OVERHEAD`]): what a connection holds
    /// for a command it has not received whole yet, however many arguments
    /// it has.
    pub max_command: usize,
}

impl Default for Limits {
    /// Redis's defaults: 512 MiB per argument, 1024 × 1024 arguments; one
    /// command at most as large as one argument may be.
    fn default() -> Limits {
        Limits { max_bulk: 512 << 20, max_args: 1024 * 1024, max_command: 512 << 20 }
    }
}

/// A stream that is not RESP. The texts are Redis's, sent to the client as
/// an `ERR` reply (see [`ProtocolError::reply`]) before the connection is
/// closed, so that clients and people see what Redis would tell them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("Protocol error: too big inline request")]
    InlineTooBig,
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("Protocol error: too big mbulk count string")]
    CountLineTooBig,
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("Protocol error: too big bulk count string")]
    BulkLineTooBig,
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// Not one of Redis's: Redis closes such a client silently when its
    /// query buffer passes `client-query-buffer-limit`.
    #[error("Protocol error: command larger than {max} bytes")]
    CommandTooBig { max: usize },
    /// An inline command with more than [`Limits::max_args`] arguments (an
    /// array says how many it has, and gets `InvalidMultibulkLength`).
    #[error("Protocol error: more than {max} arguments")]
    TooManyArguments { max: usize },
}

impl ProtocolError {
    pub fn reply(&self) -> Reply {
        Reply::Error(format!("ERR {self}"))
    }
}

/// Takes commands off the front of a connection's read buffer.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    /// The array command under way, when its header has arrived but not
    /// all of its arguments.
    partial: Option<Partial>,
}

#[derive(Debug)]
struct Partial {
    args: Vec<Bytes>,
    remaining: usize,
    bytes: usize,
    /// The length of the next argument, once its header has arrived.
    bulk: Option<usize>,
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder { limits, partial: None }
    }

    /// Changes the limits from the next command on: a server lowers them
    /// for clients that have not authenticated yet, as Redis does.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The next whole command at the front of `buf`, taken off it, or
    /// `Ok(None)` if more bytes are needed (what has been decoded so far is
    /// kept, and taken off `buf`). Empty commands (an empty line, `*0`) are
    /// skipped, as Redis skips them. Arguments share `buf`'s allocation.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        loop {
            if self.partial.is_none() {
                match buf.first() {
                    None => return Ok(None),
                    Some(b'*') => {
                        let Some(count) = take_line(buf, ProtocolError::CountLineTooBig)? else { return Ok(None) };
                        let count = parse_int(&count[1..]).ok_or(ProtocolError::InvalidMultibulkLength)?;
                        if count <= 0 {
                            continue;
                        }
                        let count = usize::try_from(count).map_err(|_| ProtocolError::InvalidMultibulkLength)?;
                        if count > self.limits.max_args {
                            return Err(ProtocolError::InvalidMultibulkLength);
                        }
                        let args = Vec::with_capacity(count.min(64));
                        self.partial = Some(Partial { args, remaining: count, bytes: 0, bulk: None });
                    }
                    Some(_) => {
                        let Some(line) = take_inline(buf)? else { return Ok(None) };
                        let args = split_args(&line)?;
                        let bytes: usize = args.iter().map(|a| a.len() + ARG_OVERHEAD).sum();
                        if bytes > self.limits.max_command {
                            return Err(ProtocolError::CommandTooBig { max: self.limits.max_command });
                        }
                        if args.len() > self.limits.max_args {
                            return Err(ProtocolError::TooManyArguments { max: self.limits.max_args });
                        }
                        if args.is_empty() {
                            continue;
                        }
                        return Ok(Some(args));
                    }
                }
            }
            let partial = self.partial.as_mut().expect("a command under way");
            while partial.remaining > 0 {
                let len = match partial.bulk {
                    Some(len) => len,
                    None => {
                        match buf.first() {
                            None => return Ok(None),
                            Some(b'$') => {}
                            Some(&other) => return Err(ProtocolError::ExpectedBulk(char::from(other))),
                        }
                        let Some(header) = take_line(buf, ProtocolError::BulkLineTooBig)? else { return Ok(None) };
                        let len = parse_int(&header[1..])
                            .and_then(|len| usize::try_from(len).ok())
                            .filter(|len| *len <= self.limits.max_bulk)
                            .ok_or(ProtocolError::InvalidBulkLength)?;
                        if partial.bytes + len + ARG_OVERHEAD > self.limits.max_command {
                            return Err(ProtocolError::CommandTooBig { max: self.limits.max_command });
                        }
                        partial.bulk = Some(len);
                        len
                    }
                };
                if buf.len() < len + 2 {
                    // Room for the whole argument at once, rather than
                    // doubling as it trickles in: it was checked above.
                    buf.reserve(len + 2 - buf.len());
                    return Ok(None);
                }
                let arg = buf.split_to(len).freeze();
                // Redis does not check the terminator either: it skips it.
                buf.advance(2);
                partial.args.push(arg);
                partial.bytes += len + ARG_OVERHEAD;
                partial.remaining -= 1;
                partial.bulk = None;
            }
            return Ok(self.partial.take().map(|p| p.args));
        }
    }
}

/// Takes a `\r\n`-terminated header line off `buf`, without its terminator.
fn take_line(buf: &mut BytesMut, too_big: ProtocolError) -> Result<Option<Bytes>, ProtocolError> {
    let window = &buf[..buf.len().min(MAX_LINE + 1)];
    match window.iter().position(|b| *b == b'\r') {
        Some(at) if at + 1 < buf.len() => {
            let line = buf.split_to(at).freeze();
            buf.advance(2);
            Ok(Some(line))
        }
        Some(_) => Ok(None),
        None if buf.len() > MAX_LINE => Err(too_big),
        None => Ok(None),
    }
}

/// Takes an inline command's line off `buf`, without its `\n` or `\r\n`.
fn take_inline(buf: &mut BytesMut) -> Result<Option<Bytes>, ProtocolError> {
    let window = &buf[..buf.len().min(MAX_LINE + 1)];
    match window.iter().position(|b| *b == b'\n') {
        Some(at) => {
            let mut line = buf.split_to(at + 1);
            line.truncate(at);
            if line.last() == Some(&b'\r') {
                line.truncate(at - 1);
            }
            Ok(Some(line.freeze()))
        }
        None if buf.len() > MAX_LINE => Err(ProtocolError::InlineTooBig),
        None => Ok(None),
    }
}

/// An integer as Redis's `string2ll` reads it: an optional minus sign and
/// digits, without leading zeros (`0` itself aside, and not `-0`), within
/// `i64`. Redis reads lengths and numeric arguments alike this way.
pub fn parse_int(text: &[u8]) -> Option<i64> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let canonical = match digits {
        [] => false,
        [b'0'] => digits.len() == text.len(),
        [first, ..] => *first != b'0' && digits.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Splits an inline command into arguments with Redis's rules
/// (`sdssplitargs`): arguments are separated by white space; `"…"`
/// understands `\n \r \t \b \a \\ \"` and `\xHH`, `'…'` only `\'`; a quote
/// inside an argument starts a quoted part of it; a closing quote must be
/// followed by white space or the end.
fn split_args(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Ok(args);
        }
        let mut arg = Vec::new();
        let (mut double, mut single) = (false, false);
        loop {
            let Some(&c) = line.get(i) else {
                if double || single {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                break;
            };
            if double {
                match c {
                    b'\\'
                        if line.get(i + 1) == Some(&b'x')
                            && line.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
                            && line.get(i + 3).is_some_and(u8::is_ascii_hexdigit) =>
                    {
                        arg.push(hex(line[i + 2]) * 16 + hex(line[i + 3]));
                        i += 3;
                    }
                    b'\\' if i + 1 < line.len() => {
                        i += 1;
                        arg.push(match line[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                    b'"' => {
                        i = after_closing_quote(line, i)?;
                        break;
                    }
                    other => arg.push(other),
                }
            } else if single {
                match c {
                    b'\\' if line.get(i + 1) == Some(&b'\'') => {
                        i += 1;
                        arg.push(b'\'');
                    }
                    b'\'' => {
                        i = after_closing_quote(line, i)?;
                        break;
                    }
                    other => arg.push(other),
                }
            } else {
                match c {
                    c if is_space(c) => break,
                    b'"' => double = true,
                    b'\'' => single = true,
                    other => arg.push(other),
                }
            }
            i += 1;
        }
        args.push(Bytes::from(arg));
    }
}

/// Where the next argument may start after the closing quote at `at`,
/// which must be followed by white space or the end.
fn after_closing_quote(line: &[u8], at: usize) -> Result<usize, ProtocolError> {
    match line.get(at + 1) {
        Some(next) if !is_space(*next) => Err(ProtocolError::UnbalancedQuotes),
        _ => Ok(at + 1),
    }
}

/// C's `isspace`, which `sdssplitargs` uses, plus the NUL it also stops at.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c | 0)
}

fn hex(c: u8) -> u8 {
    char::from(c).to_digit(16).expect("a hex digit") as u8
}

/// Encodes a command as clients send it, an array of bulk strings.
pub fn encode_command(args: &[Bytes], out: &mut BytesMut) {
    Reply::Array(args.iter().cloned().map(Reply::Bulk).collect()).encode(Protocol::Resp2, out);
}

/// The protocol a connection speaks: RESP2 until it says `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

/// A reply to one command. RESP3's types are written as RESP2 writes them
/// on a RESP2 connection, as Redis does.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`. Line breaks in it are written as spaces.
    Status(String),
    /// With its prefix: `ERR unknown command 'x'`, `WRONGTYPE …`. Line
    /// breaks in it are written as spaces.
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    /// No value: `_` in RESP3, a null bulk string (`$-1`) in RESP2.
    Null,
    Array(Vec<Reply>),
    /// `%` in RESP3; keys and values in turn, as an array, in RESP2.
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Status("OK".into())
    }

    pub fn encode(&self, protocol: Protocol, out: &mut BytesMut) {
        match self {
            Reply::Status(s) => line(out, '+', s),
            Reply::Error(s) => line(out, '-', s),
            Reply::Integer(n) => header(out, ':', *n),
            Reply::Bulk(bytes) => {
                header(out, '$', bytes.len() as i64);
                out.extend_from_slice(bytes);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Null => match protocol {
                Protocol::Resp2 => out.extend_from_slice(b"$-1\r\n"),
                Protocol::Resp3 => out.extend_from_slice(b"_\r\n"),
            },
            Reply::Array(items) => {
                header(out, '*', items.len() as i64);
                items.iter().for_each(|item| item.encode(protocol, out));
            }
            Reply::Map(pairs) => {
                match protocol {
                    Protocol::Resp2 => header(out, '*', 2 * pairs.len() as i64),
                    Protocol::Resp3 => header(out, '%', pairs.len() as i64),
                }
                for (key, value) in pairs {
                    key.encode(protocol, out);
                    value.encode(protocol, out);
                }
            }
        }
    }
}

fn header(out: &mut BytesMut, kind: char, n: i64) {
    write!(out, "{kind}{n}\r\n").expect("writing to memory");
}

fn line(out: &mut BytesMut, kind: char, text: &str) {
    out.extend_from_slice(&[kind as u8]);
    out.extend(text.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(decoder: &mut Decoder, buf: &mut BytesMut) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut out = Vec::new();
        while let Some(command) = decoder.decode(buf)? {
            out.push(command);
        }
        Ok(out)
    }

    fn decode(input: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        decode_all(&mut Decoder::new(Limits::default()), &mut BytesMut::from(input))
    }

    fn args(list: &[&str]) -> Vec<Bytes> {
        list.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect()
    }

    #[test]
    fn arrays_of_bulk_strings_pipelined_and_empty_ones_skipped() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*0\r\n*-1\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n";
        assert_eq!(decode(input).unwrap(), vec![args(&["GET", "k"]), args(&["SET", "k", ""])]);
    }

    #[test]
    fn inline_commands_split_as_redis_splits_them() {
        assert_eq!(decode(b"PING\r\n").unwrap(), vec![args(&["PING"])]);
        assert_eq!(decode(b"  set  k   v\n\r\n\n").unwrap(), vec![args(&["set", "k", "v"])], "blank lines skipped");
        let quoted = decode(b"SET \"a key\" 'it\\'s' \"\\x41\\n\\\"\" x\"y z\"\r\n").unwrap();
        assert_eq!(quoted, vec![args(&["SET", "a key", "it's", "A\n\"", "xy z"])]);
        assert_eq!(decode(b"SET \"k\r\n"), Err(ProtocolError::UnbalancedQuotes));
        assert_eq!(
            decode(b"SET \"k\"v\r\n"),
            Err(ProtocolError::UnbalancedQuotes),
            "a closing quote ends the argument"
        );
    }

    #[test]
    fn lengths_are_refused_when_their_header_arrives() {
        let limits = Limits { max_bulk: 1_000, max_args: 4, max_command: 1_500 };
        let refused = |input: &[u8]| decode_all(&mut Decoder::new(limits), &mut BytesMut::from(input)).unwrap_err();
        assert_eq!(refused(b"*2\r\n$1001\r\n"), ProtocolError::InvalidBulkLength, "before a byte of it came");
        assert_eq!(refused(b"*1\r\n$-1\r\n"), ProtocolError::InvalidBulkLength);
        assert_eq!(refused(b"*5\r\n"), ProtocolError::InvalidMultibulkLength);
        assert_eq!(refused(b"a b c d e\r\n"), ProtocolError::TooManyArguments { max: 4 }, "inline commands too");
        assert_eq!(refused(b"*x\r\n"), ProtocolError::InvalidMultibulkLength);
        assert_eq!(refused(b"*01\r\n"), ProtocolError::InvalidMultibulkLength, "no leading zeros");
        assert_eq!(refused(b"*99999999999999999999\r\n"), ProtocolError::InvalidMultibulkLength);
        assert_eq!(refused(b"*2\r\n:1\r\n"), ProtocolError::ExpectedBulk(':'));
        let two = [b"*2\r\n$1000\r\n".as_slice(), &[b'x'; 1000], b"\r\n$600\r\n"].concat();
        assert_eq!(refused(&two), ProtocolError::CommandTooBig { max: 1_500 });
        let empties = [b"*4\r\n".as_slice(), &b"$0\r\n\r\n".repeat(4)].concat();
        let tight = Limits { max_bulk: 10, max_args: 100, max_command: 3 * ARG_OVERHEAD };
        let err = decode_all(&mut Decoder::new(tight), &mut BytesMut::from(&empties[..])).unwrap_err();
        assert_eq!(err, ProtocolError::CommandTooBig { max: 3 * ARG_OVERHEAD }, "empty arguments count too");
        assert_eq!(refused(&[b'*'; MAX_LINE + 1]), ProtocolError::CountLineTooBig);
        assert_eq!(refused(&[b'a'; MAX_LINE + 1]), ProtocolError::InlineTooBig);
        let long_header = [b"*1\r\n$".as_slice(), &[b'1'; MAX_LINE + 1]].concat();
        assert_eq!(refused(&long_header), ProtocolError::BulkLineTooBig);
    }

    #[test]
    fn integers_are_read_as_redis_reads_them() {
        for (text, value) in
            [("0", Some(0)), ("-1", Some(-1)), ("42", Some(42)), ("-9223372036854775808", Some(i64::MIN))]
        {
            assert_eq!(parse_int(text.as_bytes()), value, "{text}");
        }
        for text in ["", "-", "-0", "01", "+1", " 1", "1 ", "1.0", "9223372036854775808"] {
            assert_eq!(parse_int(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn an_unfinished_command_holds_only_what_arrived() {
        let mut decoder = Decoder::new(Limits::default());
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$5\r\nab"[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert_eq!(&buf[..], b"ab", "the first argument and the second's header were taken");
        buf.extend_from_slice(b"cde\r\n");
        assert_eq!(decoder.decode(&mut buf), Ok(Some(args(&["GET", "abcde"]))));
        assert!(buf.is_empty());
    }

    #[test]
    fn replies_in_both_protocols() {
        let encoded = |reply: &Reply, protocol| {
            let mut out = BytesMut::new();
            reply.encode(protocol, &mut out);
            out
        };
        let map =
            Reply::Map(vec![(Reply::Bulk("proto".into()), Reply::Integer(3)), (Reply::Bulk("x".into()), Reply::Null)]);
        assert_eq!(&encoded(&map, Protocol::Resp3)[..], b"%2\r\n$5\r\nproto\r\n:3\r\n$1\r\nx\r\n_\r\n");
        assert_eq!(&encoded(&map, Protocol::Resp2)[..], b"*4\r\n$5\r\nproto\r\n:3\r\n$1\r\nx\r\n$-1\r\n");
        assert_eq!(&encoded(&Reply::Error("ERR a\r\nb".into()), Protocol::Resp2)[..], b"-ERR a  b\r\n");
        assert_eq!(&encoded(&Reply::ok(), Protocol::Resp3)[..], b"+OK\r\n");
        assert_eq!(&encoded(&Reply::Integer(-7), Protocol::Resp2)[..], b":-7\r\n");
        assert_eq!(
            ProtocolError::ExpectedBulk(':').reply(),
            Reply::Error("ERR Protocol error: expected '$', got ':'".into())
        );
    }

    /// Everything a stream decodes to, to the first error.
    fn outcome(reads: &[&[u8]], limits: Limits) -> (Vec<Vec<Bytes>>, Option<ProtocolError>) {
        let (mut decoder, mut buf, mut commands) = (Decoder::new(limits), BytesMut::new(), Vec::new());
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

    proptest! {
        /// Streams of RESP's own tokens, mostly malformed: however they are
        /// cut, the commands before the first error and the error agree.
        #[test]
        fn malformed_streams_fail_the_same_however_they_arrive(
            tokens in prop::collection::vec(prop::sample::select(vec![
                "*", "$", "*2", "$3", "$-1", "*-1", "0", "1", "3", "99999999999", "\r\n", "\r", "\n", "\"", "'",
                "\\", "\\x4", "GET", " ", "k", ":", "\x00",
            ]), 0..40),
            cut in any::<prop::sample::Index>(),
        ) {
            let stream: Vec<u8> = tokens.concat().into_bytes();
            let limits = Limits { max_bulk: 64, max_args: 8, max_command: 128 };
            let at = cut.index(stream.len() + 1);
            prop_assert_eq!(outcome(&[&stream], limits), outcome(&[&stream[..at], &stream[at..]], limits));
        }

        #[test]
        fn any_split_of_the_stream_decodes_the_same(
            commands in prop::collection::vec(prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..5), 1..6),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let commands: Vec<Vec<Bytes>> =
                commands.into_iter().map(|c| c.into_iter().map(Bytes::from).collect()).collect();
            let mut stream = BytesMut::new();
            for command in &commands {
                encode_command(command, &mut stream);
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut decoder = Decoder::new(Limits::default());
            let (mut buf, mut decoded, mut from) = (BytesMut::new(), Vec::new(), 0);
            for to in cuts.into_iter().chain([stream.len()]) {
                buf.extend_from_slice(&stream[from..to]);
                from = to;
                decoded.extend(decode_all(&mut decoder, &mut buf).unwrap());
            }
            prop_assert_eq!(decoded, commands);
            prop_assert!(buf.is_empty());
        }
    }
}
