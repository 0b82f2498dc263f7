//! The RESP port through real sockets: a node started with `--resp`,
//! spoken to byte for byte as Redis clients speak, replies compared with
//! what Redis sends.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Certs, Cluster, NodeProc, node_spec};

/// Cluster tests share two cores; one at a time keeps failure detection
/// honest.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A raw RESP connection.
struct Conn(TcpStream);

impl Conn {
    fn open(node: &NodeProc) -> Conn {
        Conn::to(node.resp.expect("the node serves RESP"))
    }

    fn to(addr: std::net::SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn(stream)
    }

    /// Sends `request` and expects exactly `reply` back.
    fn expect(&mut self, request: &[u8], reply: &[u8]) {
        self.0.write_all(request).unwrap();
        let mut got = vec![0; reply.len()];
        self.0.read_exact(&mut got).unwrap_or_else(|e| panic!("reading the reply to {request:?}: {e}"));
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(reply),
            "reply to {:?}",
            String::from_utf8_lossy(request)
        );
    }

    /// Sends `request` and returns the first line of the reply.
    fn line(&mut self, request: &[u8]) -> String {
        self.0.write_all(request).unwrap();
        let mut line = Vec::new();
        let mut byte = [0];
        while !line.ends_with(b"\r\n") {
            self.0.read_exact(&mut byte).unwrap();
            line.push(byte[0]);
        }
        String::from_utf8(line).unwrap()
    }

    /// Sends `request` and returns the first line of the reply, or the
    /// error of a connection that broke.
    fn try_line(&mut self, request: &[u8]) -> std::io::Result<String> {
        self.0.write_all(request)?;
        let mut line = Vec::new();
        let mut byte = [0];
        while !line.ends_with(b"\r\n") {
            if self.0.read(&mut byte)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            line.push(byte[0]);
        }
        Ok(String::from_utf8(line).unwrap())
    }

    /// Whether the server closed the connection.
    fn closed(&mut self) -> bool {
        matches!(self.0.read(&mut [0; 1]), Ok(0))
    }
}

/// A command as client libraries encode it.
fn cmd(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

fn node(certs: &Certs, dir: &tempfile::TempDir) -> NodeProc {
    node_spec("n1", &dir.path().join("n1"), certs.path())
        .arg("--persistence")
        .arg("none")
        .arg("--resp")
        .arg("127.0.0.1:0")
        .start()
}

#[test]
fn the_stores_operations_under_their_redis_names() {
    let (certs, dir) = (Certs::new(), tempfile::tempdir().unwrap());
    let node = node(&certs, &dir);
    let mut c = Conn::open(&node);
    c.expect(&cmd(&["PING"]), b"+PONG\r\n");
    c.expect(b"PING\r\n", b"+PONG\r\n");
    c.expect(&cmd(&["ECHO", "hi"]), b"$2\r\nhi\r\n");
    c.expect(&cmd(&["SET", "k", "v"]), b"+OK\r\n");
    c.expect(&cmd(&["GET", "k"]), b"$1\r\nv\r\n");
    c.expect(&cmd(&["GET", "missing"]), b"$-1\r\n");
    c.expect(&cmd(&["TTL", "k"]), b":-1\r\n");
    c.expect(&cmd(&["TTL", "missing"]), b":-2\r\n");
    c.expect(&cmd(&["SET", "t", "v", "EX", "100"]), b"+OK\r\n");
    c.expect(&cmd(&["TTL", "t"]), b":100\r\n");
    c.expect(&cmd(&["PERSIST", "t"]), b":1\r\n");
    c.expect(&cmd(&["PERSIST", "t"]), b":0\r\n");
    c.expect(&cmd(&["EXPIRE", "t", "50"]), b":1\r\n");
    c.expect(&cmd(&["TTL", "t"]), b":50\r\n");
    c.expect(&cmd(&["EXPIRE", "nope", "50"]), b":0\r\n");
    c.expect(&cmd(&["SETEX", "s", "100", "v"]), b"+OK\r\n");
    c.expect(&cmd(&["EXISTS", "k", "s", "missing", "k"]), b":3\r\n");
    c.expect(&cmd(&["DEL", "k", "missing", "s"]), b":2\r\n");
    c.expect(&cmd(&["EXISTS", "k"]), b":0\r\n");
    // An expiry in the past deletes, as in Redis.
    c.expect(&cmd(&["EXPIRE", "t", "-1"]), b":1\r\n");
    c.expect(&cmd(&["GET", "t"]), b"$-1\r\n");
    c.expect(&cmd(&["MSET", "a", "1", "b", "2"]), b"+OK\r\n");
    c.expect(&cmd(&["MGET", "a", "missing", "b"]), b"*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n");
    c.expect(&cmd(&["MSET", "a", "1", "b"]), b"-ERR wrong number of arguments for 'mset' command\r\n");
    c.expect(&cmd(&["STRLEN", "a"]), b":1\r\n");
    c.expect(&cmd(&["STRLEN", "missing"]), b":0\r\n");
    c.expect(&cmd(&["TYPE", "a"]), b"+string\r\n");
    c.expect(&cmd(&["TYPE", "missing"]), b"+none\r\n");
    c.expect(&cmd(&["SET", "r", "Hello World"]), b"+OK\r\n");
    c.expect(&cmd(&["GETRANGE", "r", "0", "4"]), b"$5\r\nHello\r\n");
    c.expect(&cmd(&["GETRANGE", "r", "-5", "-1"]), b"$5\r\nWorld\r\n");
    c.expect(&cmd(&["GETRANGE", "r", "5", "2"]), b"$0\r\n\r\n");
    c.expect(&cmd(&["GETRANGE", "r", "6", "100"]), b"$5\r\nWorld\r\n");
    c.expect(&cmd(&["GETRANGE", "missing", "0", "5"]), b"$0\r\n\r\n");
    // An instant in the past deletes; one in 2100 leaves a long TTL.
    c.expect(&cmd(&["PEXPIREAT", "a", "1"]), b":1\r\n");
    c.expect(&cmd(&["GET", "a"]), b"$-1\r\n");
    c.expect(&cmd(&["EXPIREAT", "b", "4102444800"]), b":1\r\n");
    let ttl: i64 = c.line(&cmd(&["TTL", "b"])).trim_start_matches(':').trim_end().parse().unwrap();
    let until_2100 =
        4_102_444_800 - std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((ttl - until_2100).abs() <= 2, "TTL {ttl}, {until_2100} s to go");
    c.expect(&cmd(&["SET", "x", "v", "EXAT", "4102444800"]), b"+OK\r\n");
    let ttl: i64 = c.line(&cmd(&["TTL", "x"])).trim_start_matches(':').trim_end().parse().unwrap();
    assert!((ttl - until_2100).abs() <= 2, "SET EXAT: TTL {ttl}, {until_2100} s to go");
    c.expect(&cmd(&["SET", "x", "v", "PXAT", "1"]), b"+OK\r\n");
    c.expect(&cmd(&["GET", "x"]), b"$-1\r\n");
    c.expect(&cmd(&["SET", "d", "v"]), b"+OK\r\n");
    c.expect(&cmd(&["DEL", "d", "d"]), b":1\r\n");
    assert_eq!(c.line(&cmd(&["TIME"])), "*2\r\n");
    let mut next = || c.line(b"").trim_end().to_string();
    let (_, seconds, _, micros) = (next(), next(), next(), next());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(seconds.parse::<u64>().unwrap().abs_diff(now) <= 2, "TIME says {seconds} s, it is {now}");
    assert!(micros.parse::<u32>().unwrap() < 1_000_000);
    c.expect(&cmd(&["CONFIG", "GET", "save"]), b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
    c.expect(
        &cmd(&["CONFIG", "GET", "MAXMEMORY*"]),
        b"*4\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n$16\r\nmaxmemory-policy\r\n$10\r\nnoeviction\r\n",
    );
    c.expect(&cmd(&["CONFIG", "GET", "nothing"]), b"*0\r\n");
    c.expect(&cmd(&["SET", "f", "v"]), b"+OK\r\n");
    c.expect(&cmd(&["FLUSHALL"]), b"+OK\r\n");
    c.expect(&cmd(&["GET", "f"]), b"$-1\r\n");

    // Errors, with Redis's prefixes and texts; the connection goes on.
    c.expect(&cmd(&["GET"]), b"-ERR wrong number of arguments for 'get' command\r\n");
    c.expect(&cmd(&["NOSUCH", "a"]), b"-ERR unknown command 'NOSUCH', with args beginning with: 'a' \r\n");
    c.expect(&cmd(&["SET", "k", "v", "EX", "0"]), b"-ERR invalid expire time in 'set' command\r\n");
    c.expect(&cmd(&["SET", "k", "v", "EX", "x"]), b"-ERR value is not an integer or out of range\r\n");
    c.expect(&cmd(&["SET", "k", "v", "BOGUS"]), b"-ERR syntax error\r\n");
    c.expect(&cmd(&["SELECT", "1"]), b"-ERR DB index is out of range\r\n");
    c.expect(&cmd(&["SELECT", "0"]), b"+OK\r\n");

    // Pipelined: every reply, in order, from one write.
    let pipeline = [cmd(&["SET", "p", "1"]), cmd(&["GET", "p"]), cmd(&["DEL", "p"]), cmd(&["GET", "p"])].concat();
    c.expect(&pipeline, b"+OK\r\n$1\r\n1\r\n:1\r\n$-1\r\n");

    // RESP3 after HELLO 3: a map, and `_` for nothing.
    let version = env!("CARGO_PKG_VERSION");
    let hello = format!(
        "%7\r\n$6\r\nserver\r\n$6\r\nringkv\r\n$7\r\nversion\r\n${}\r\n{version}\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:1\r\n\
         $4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
        version.len()
    );
    c.expect(&cmd(&["HELLO", "3"]), hello.as_bytes());
    c.expect(&cmd(&["GET", "missing"]), b"_\r\n");
    c.expect(&cmd(&["HELLO", "4"]), b"-NOPROTO unsupported protocol version\r\n");
    c.expect(&cmd(&["CLIENT", "SETNAME", "me"]), b"+OK\r\n");
    c.expect(&cmd(&["CLIENT", "GETNAME"]), b"$2\r\nme\r\n");
    c.expect(&cmd(&["QUIT"]), b"+OK\r\n");
    assert!(c.closed(), "QUIT closes the connection");
}

#[test]
fn read_modify_writes_answer_as_redis_does() {
    let (certs, dir) = (Certs::new(), tempfile::tempdir().unwrap());
    let node = node(&certs, &dir);
    let mut c = Conn::open(&node);
    // Counters.
    c.expect(&cmd(&["INCR", "n"]), b":1\r\n");
    c.expect(&cmd(&["INCRBY", "n", "41"]), b":42\r\n");
    c.expect(&cmd(&["DECR", "n"]), b":41\r\n");
    c.expect(&cmd(&["DECRBY", "n", "-9"]), b":50\r\n");
    c.expect(&cmd(&["GET", "n"]), b"$2\r\n50\r\n");
    c.expect(&cmd(&["SET", "big", "9223372036854775807"]), b"+OK\r\n");
    c.expect(&cmd(&["INCR", "big"]), b"-ERR increment or decrement would overflow\r\n");
    c.expect(&cmd(&["GET", "big"]), b"$19\r\n9223372036854775807\r\n");
    c.expect(&cmd(&["DECRBY", "n", "-9223372036854775808"]), b"-ERR decrement would overflow\r\n");
    c.expect(&cmd(&["SET", "text", "abc"]), b"+OK\r\n");
    c.expect(&cmd(&["INCR", "text"]), b"-ERR value is not an integer or out of range\r\n");
    c.expect(&cmd(&["SET", "spaced", " 1"]), b"+OK\r\n");
    c.expect(&cmd(&["INCR", "spaced"]), b"-ERR value is not an integer or out of range\r\n");
    c.expect(&cmd(&["INCRBY", "n", "1.5"]), b"-ERR value is not an integer or out of range\r\n");
    c.expect(&cmd(&["INCR"]), b"-ERR wrong number of arguments for 'incr' command\r\n");
    c.expect(&cmd(&["SET", "f", "10.50"]), b"+OK\r\n");
    c.expect(&cmd(&["INCRBYFLOAT", "f", "0.1"]), b"$4\r\n10.6\r\n");
    c.expect(&cmd(&["INCRBYFLOAT", "f", "-5.6"]), b"$1\r\n5\r\n");
    c.expect(&cmd(&["INCRBYFLOAT", "f", "x"]), b"-ERR value is not a valid float\r\n");
    c.expect(&cmd(&["INCRBYFLOAT", "text", "1"]), b"-ERR value is not a valid float\r\n");
    c.expect(&cmd(&["SET", "huge", "1.7e308"]), b"+OK\r\n");
    c.expect(&cmd(&["INCRBYFLOAT", "huge", "1.7e308"]), b"-ERR increment would produce NaN or Infinity\r\n");
    // INCR keeps the key's expiry, as APPEND and SETRANGE do.
    c.expect(&cmd(&["SET", "t", "1", "EX", "100"]), b"+OK\r\n");
    c.expect(&cmd(&["INCR", "t"]), b":2\r\n");
    c.expect(&cmd(&["TTL", "t"]), b":100\r\n");

    // Strings.
    c.expect(&cmd(&["APPEND", "s", "Hello"]), b":5\r\n");
    c.expect(&cmd(&["APPEND", "s", " World"]), b":11\r\n");
    c.expect(&cmd(&["SETRANGE", "s", "6", "Redis"]), b":11\r\n");
    c.expect(&cmd(&["GET", "s"]), b"$11\r\nHello Redis\r\n");
    c.expect(&cmd(&["SETRANGE", "pad", "3", "x"]), b":4\r\n");
    c.expect(&cmd(&["GET", "pad"]), b"$4\r\n\0\0\0x\r\n");
    c.expect(&cmd(&["SETRANGE", "none", "3", ""]), b":0\r\n");
    c.expect(&cmd(&["EXISTS", "none"]), b":0\r\n");
    c.expect(&cmd(&["SETRANGE", "s", "-1", "x"]), b"-ERR offset is out of range\r\n");
    c.expect(&cmd(&["SETRANGE", "s", "16777216", "x"]), b"-ERR string exceeds maximum allowed size\r\n");

    // SET's conditions, SETNX, GETSET, GETDEL, GETEX.
    c.expect(&cmd(&["SET", "k", "v1", "NX"]), b"+OK\r\n");
    c.expect(&cmd(&["SET", "k", "v2", "NX"]), b"$-1\r\n");
    c.expect(&cmd(&["SET", "k", "v3", "XX", "GET"]), b"$2\r\nv1\r\n");
    c.expect(&cmd(&["SET", "absent", "v", "XX"]), b"$-1\r\n");
    c.expect(&cmd(&["SET", "absent", "v", "GET"]), b"$-1\r\n");
    c.expect(&cmd(&["GET", "absent"]), b"$1\r\nv\r\n");
    c.expect(&cmd(&["SET", "k", "v", "NX", "XX"]), b"-ERR syntax error\r\n");
    c.expect(&cmd(&["SET", "k", "v", "EX", "10", "KEEPTTL"]), b"-ERR syntax error\r\n");
    c.expect(&cmd(&["SET", "k", "v4", "EX", "100"]), b"+OK\r\n");
    c.expect(&cmd(&["SET", "k", "v5", "KEEPTTL"]), b"+OK\r\n");
    c.expect(&cmd(&["TTL", "k"]), b":100\r\n");
    c.expect(&cmd(&["SET", "k", "v6", "XX"]), b"+OK\r\n");
    c.expect(&cmd(&["TTL", "k"]), b":-1\r\n");
    c.expect(&cmd(&["SETNX", "k", "v"]), b":0\r\n");
    c.expect(&cmd(&["SETNX", "fresh", "v"]), b":1\r\n");
    c.expect(&cmd(&["GETSET", "fresh", "w"]), b"$1\r\nv\r\n");
    c.expect(&cmd(&["GETSET", "other", "w"]), b"$-1\r\n");
    c.expect(&cmd(&["GETDEL", "fresh"]), b"$1\r\nw\r\n");
    c.expect(&cmd(&["GETDEL", "fresh"]), b"$-1\r\n");
    c.expect(&cmd(&["GETEX", "other", "EX", "100"]), b"$1\r\nw\r\n");
    c.expect(&cmd(&["TTL", "other"]), b":100\r\n");
    c.expect(&cmd(&["GETEX", "other", "PERSIST"]), b"$1\r\nw\r\n");
    c.expect(&cmd(&["TTL", "other"]), b":-1\r\n");
    c.expect(&cmd(&["GETEX", "other", "EX", "0"]), b"-ERR invalid expire time in 'getex' command\r\n");
    c.expect(&cmd(&["GETEX", "other", "BOGUS"]), b"-ERR syntax error\r\n");
    c.expect(&cmd(&["GETEX", "other", "PXAT", "1"]), b"$1\r\nw\r\n");
    c.expect(&cmd(&["GET", "other"]), b"$-1\r\n");
    c.expect(&cmd(&["GETEX", "missing"]), b"$-1\r\n");

    // EXPIRE's conditions; a key without an expiry counts as never expiring.
    c.expect(&cmd(&["SET", "e", "v"]), b"+OK\r\n");
    c.expect(&cmd(&["EXPIRE", "e", "100", "XX"]), b":0\r\n");
    c.expect(&cmd(&["EXPIRE", "e", "100", "GT"]), b":0\r\n");
    c.expect(&cmd(&["EXPIRE", "e", "100", "NX"]), b":1\r\n");
    c.expect(&cmd(&["EXPIRE", "e", "200", "NX"]), b":0\r\n");
    c.expect(&cmd(&["EXPIRE", "e", "50", "GT"]), b":0\r\n");
    c.expect(&cmd(&["EXPIRE", "e", "300", "gt"]), b":1\r\n");
    c.expect(&cmd(&["TTL", "e"]), b":300\r\n");
    c.expect(&cmd(&["PEXPIRE", "e", "250000", "XX", "LT"]), b":1\r\n");
    c.expect(&cmd(&["TTL", "e"]), b":250\r\n");
    c.expect(&cmd(&["PERSIST", "e"]), b":1\r\n");
    c.expect(&cmd(&["EXPIRE", "e", "100", "XX", "LT"]), b":0\r\n");
    c.expect(&cmd(&["EXPIRE", "e", "100", "LT"]), b":1\r\n");
    c.expect(
        &cmd(&["EXPIRE", "e", "10", "NX", "XX"]),
        b"-ERR NX and XX, GT or LT options at the same time are not compatible\r\n",
    );
    c.expect(
        &cmd(&["EXPIRE", "e", "10", "GT", "LT"]),
        b"-ERR GT and LT options at the same time are not compatible\r\n",
    );
    c.expect(&cmd(&["EXPIRE", "e", "10", "BOGUS"]), b"-ERR Unsupported option BOGUS\r\n");
    c.expect(&cmd(&["EXPIRE", "missing", "10", "NX"]), b":0\r\n");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let at: i64 = c.line(&cmd(&["EXPIRETIME", "e"])).trim_start_matches(':').trim_end().parse().unwrap();
    assert!((at - (now + 100)).abs() <= 2, "EXPIRETIME {at}, now {now}");
    c.expect(&cmd(&["PEXPIREAT", "e", "4102444800000", "GT"]), b":1\r\n");
    c.expect(&cmd(&["PEXPIRETIME", "e"]), b":4102444800000\r\n");
    c.expect(&cmd(&["EXPIRETIME", "e"]), b":4102444800\r\n");
    c.expect(&cmd(&["EXPIRETIME", "k"]), b":-1\r\n");
    c.expect(&cmd(&["PEXPIRETIME", "missing"]), b":-2\r\n");
    // An instant already past expires the key, if the condition allows.
    c.expect(&cmd(&["EXPIREAT", "e", "1", "GT"]), b":0\r\n");
    c.expect(&cmd(&["EXPIREAT", "e", "1", "LT"]), b":1\r\n");
    c.expect(&cmd(&["GET", "e"]), b"$-1\r\n");

    // Pipelined increments are applied one after another.
    let pipeline: Vec<u8> = (0..100).flat_map(|_| cmd(&["INCR", "p"])).collect();
    let replies: String = (1..=100).map(|i| format!(":{i}\r\n")).collect();
    c.expect(&pipeline, replies.as_bytes());
}

/// Reads a whole reply, any shape, as its raw bytes.
fn reply(c: &mut Conn, request: &[u8]) -> Vec<u8> {
    c.0.write_all(request).unwrap();
    let mut out = Vec::new();
    read_reply(c, &mut out);
    out
}

fn read_reply(c: &mut Conn, out: &mut Vec<u8>) {
    let start = out.len();
    let mut byte = [0];
    while !out.ends_with(b"\r\n") || out.len() == start {
        c.0.read_exact(&mut byte).unwrap();
        out.push(byte[0]);
    }
    let header = String::from_utf8_lossy(&out[start..out.len() - 2]).into_owned();
    let n: i64 = header[1..].parse().unwrap_or(-1);
    match header.as_bytes()[0] {
        b'$' if n >= 0 => {
            let mut body = vec![0; n as usize + 2];
            c.0.read_exact(&mut body).unwrap();
            out.extend(body);
        }
        b'*' => (0..n.max(0)).for_each(|_| read_reply(c, out)),
        _ => {}
    }
}

/// `SCAN`'s reply: the next cursor and the keys.
fn scan_page(c: &mut Conn, request: &[u8]) -> (String, Vec<String>) {
    let raw = String::from_utf8(reply(c, request)).unwrap();
    let mut lines = raw.split("\r\n");
    assert_eq!(lines.next(), Some("*2"), "SCAN answered {raw:?}");
    lines.next();
    let cursor = lines.next().unwrap().to_string();
    let n: usize = lines.next().unwrap()[1..].parse().unwrap();
    let keys = (0..n).map(|_| lines.nth(1).unwrap().to_string()).collect();
    (cursor, keys)
}

/// A whole `SCAN` walk through `c`, `COUNT` `count`.
fn scan_all(c: &mut Conn, count: usize) -> Vec<String> {
    let mut cursor = "0".to_string();
    let mut keys = Vec::new();
    loop {
        let (next, page) = scan_page(c, &cmd(&["SCAN", &cursor, "COUNT", &count.to_string()]));
        keys.extend(page);
        if next == "0" {
            return keys;
        }
        cursor = next;
    }
}

#[test]
fn keyspace_walks_and_renames_answer_as_redis_does() {
    let (certs, dir) = (Certs::new(), tempfile::tempdir().unwrap());
    let node = node(&certs, &dir);
    let mut c = Conn::open(&node);
    c.expect(&cmd(&["DBSIZE"]), b":0\r\n");
    c.expect(&cmd(&["RANDOMKEY"]), b"$-1\r\n");
    c.expect(&cmd(&["KEYS", "*"]), b"*0\r\n");
    c.expect(&cmd(&["SCAN", "0"]), b"*2\r\n$1\r\n0\r\n*0\r\n");
    let mut expected: Vec<String> = (0..500).map(|i| format!("key:{i}")).collect();
    for chunk in expected.chunks(100) {
        let mut args = vec!["MSET"];
        for key in chunk {
            args.extend([key.as_str(), "v"]);
        }
        c.expect(&cmd(&args), b"+OK\r\n");
    }
    c.expect(&cmd(&["SET", "gone", "v"]), b"+OK\r\n");
    c.expect(&cmd(&["DEL", "gone"]), b":1\r\n");
    c.expect(&cmd(&["SET", "expired", "v", "PX", "1"]), b"+OK\r\n");
    // Walked only once it has expired, however fast the walk.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c.line(&cmd(&["PTTL", "expired"])) != ":-2\r\n" {
        assert!(std::time::Instant::now() < deadline, "a 1 ms expiry did not pass in 10 s");
    }
    c.expect(&cmd(&["DBSIZE"]), b":500\r\n");
    expected.sort();
    for count in [1, 7, 1000] {
        let mut walked = scan_all(&mut c, count);
        walked.sort();
        assert_eq!(walked, expected, "SCAN … COUNT {count}: every key once, no dead one");
    }
    let (_, page) = scan_page(&mut c, &cmd(&["SCAN", "0", "COUNT", "1000", "MATCH", "key:1?"]));
    let mut page: Vec<String> = page;
    page.sort();
    assert_eq!(page, (10..20).map(|i| format!("key:{i}")).collect::<Vec<_>>());
    c.expect(&cmd(&["SCAN", "0", "COUNT", "1000", "TYPE", "hash"]), b"*2\r\n$1\r\n0\r\n*0\r\n");
    let (_, strings) = scan_page(&mut c, &cmd(&["SCAN", "0", "COUNT", "1000", "TYPE", "string"]));
    assert_eq!(strings.len(), 500);
    let keys = String::from_utf8(reply(&mut c, &cmd(&["KEYS", "key:4?9"]))).unwrap();
    assert!(keys.starts_with("*10\r\n") && keys.contains("$7\r\nkey:409\r\n"), "{keys}");
    // A pattern that would take a recursive matcher exponential time.
    let hostile = "*a".repeat(30) + "b";
    c.expect(&cmd(&["KEYS", &hostile]), b"*0\r\n");
    let random = bulk(&mut c, &cmd(&["RANDOMKEY"]));
    assert!(expected.contains(&random), "RANDOMKEY answered {random}");
    for bad in ["-1", "abc", "18446744073709551616", &(300u64 << 48).to_string()] {
        c.expect(&cmd(&["SCAN", bad]), b"-ERR invalid cursor\r\n");
    }
    c.expect(&cmd(&["SCAN", "0", "COUNT", "0"]), b"-ERR syntax error\r\n");
    c.expect(&cmd(&["SCAN", "0", "MATCH"]), b"-ERR syntax error\r\n");
    c.expect(&cmd(&["SCAN"]), b"-ERR wrong number of arguments for 'scan' command\r\n");
    c.expect(&cmd(&["KEYS"]), b"-ERR wrong number of arguments for 'keys' command\r\n");
    c.expect(&cmd(&["DBSIZE", "x"]), b"-ERR wrong number of arguments for 'dbsize' command\r\n");

    // RENAME keeps the value and its expiry and removes the source.
    c.expect(&cmd(&["RENAME", "missing", "x"]), b"-ERR no such key\r\n");
    c.expect(&cmd(&["RENAMENX", "missing", "x"]), b"-ERR no such key\r\n");
    c.expect(&cmd(&["SET", "src", "hello", "EX", "100"]), b"+OK\r\n");
    c.expect(&cmd(&["RENAME", "src", "src"]), b"+OK\r\n");
    c.expect(&cmd(&["RENAMENX", "src", "src"]), b":0\r\n");
    c.expect(&cmd(&["RENAME", "src", "dst"]), b"+OK\r\n");
    c.expect(&cmd(&["EXISTS", "src"]), b":0\r\n");
    c.expect(&cmd(&["GET", "dst"]), b"$5\r\nhello\r\n");
    let ttl = c.line(&cmd(&["TTL", "dst"]));
    assert!(ttl == ":100\r\n" || ttl == ":99\r\n", "the expiry moves with the value: {ttl}");
    c.expect(&cmd(&["SET", "src", "again"]), b"+OK\r\n");
    c.expect(&cmd(&["RENAMENX", "src", "dst"]), b":0\r\n");
    c.expect(&cmd(&["GET", "dst"]), b"$5\r\nhello\r\n");
    c.expect(&cmd(&["RENAMENX", "src", "fresh"]), b":1\r\n");
    c.expect(&cmd(&["GET", "fresh"]), b"$5\r\nagain\r\n");
    c.expect(&cmd(&["RENAME", "a"]), b"-ERR wrong number of arguments for 'rename' command\r\n");

    // COPY leaves the source and refuses to overwrite without REPLACE.
    c.expect(&cmd(&["COPY", "missing", "x"]), b":0\r\n");
    c.expect(&cmd(&["COPY", "fresh", "fresh"]), b"-ERR source and destination objects are the same\r\n");
    c.expect(&cmd(&["COPY", "fresh", "dst"]), b":0\r\n");
    c.expect(&cmd(&["COPY", "fresh", "dst", "REPLACE"]), b":1\r\n");
    c.expect(&cmd(&["MGET", "fresh", "dst"]), b"*2\r\n$5\r\nagain\r\n$5\r\nagain\r\n");
    c.expect(&cmd(&["TTL", "dst"]), b":-1\r\n");
    c.expect(&cmd(&["COPY", "fresh", "other", "DB", "0"]), b":1\r\n");
    c.expect(&cmd(&["COPY", "fresh", "other2", "DB", "1"]), b"-ERR DB index is out of range\r\n");
    c.expect(&cmd(&["COPY", "fresh", "other2", "NOW"]), b"-ERR syntax error\r\n");

    // MSETNX sets all or none; a key named twice takes its last value.
    c.expect(&cmd(&["MSETNX", "n1", "a", "n2", "b"]), b":1\r\n");
    c.expect(&cmd(&["MSETNX", "n3", "c", "n1", "x", "n4", "d"]), b":0\r\n");
    c.expect(&cmd(&["MGET", "n1", "n3", "n4"]), b"*3\r\n$1\r\na\r\n$-1\r\n$-1\r\n");
    c.expect(&cmd(&["MSETNX", "n5", "a", "n5", "b"]), b":1\r\n");
    c.expect(&cmd(&["GET", "n5"]), b"$1\r\nb\r\n");
    c.expect(&cmd(&["MSETNX", "n6", "a", "n7"]), b"-ERR wrong number of arguments for 'msetnx' command\r\n");
}

/// `CONFIG SET maxmemory` bounds a running node at once (writes past it
/// are refused under the default `noeviction`) and lifts the bound again;
/// settings ringkv cannot change live are refused by name, and nothing is
/// applied from a command that has one bad pair.
#[test]
fn config_set_changes_maxmemory_while_the_node_runs() {
    let (certs, dir) = (Certs::new(), tempfile::tempdir().unwrap());
    let node = node(&certs, &dir);
    let mut c = Conn::open(&node);
    c.expect(&cmd(&["CONFIG", "GET", "maxmemory"]), b"*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n");
    c.expect(&cmd(&["CONFIG", "SET", "maxmemory", "2mb"]), b"+OK\r\n");
    c.expect(&cmd(&["CONFIG", "GET", "maxmemory"]), b"*2\r\n$9\r\nmaxmemory\r\n$7\r\n2097152\r\n");
    assert!(bulk(&mut c, &cmd(&["INFO", "memory"])).contains("maxmemory:2097152\r\n"));
    let value = "x".repeat(10_000);
    let refused_at = (0..1_000)
        .find(|i| {
            let line = c.line(&cmd(&["SET", &format!("k{i}"), &value]));
            assert!(line == "+OK\r\n" || line.starts_with("-OOM "), "SET answered {line}");
            line != "+OK\r\n"
        })
        .expect("writes past 2mb are refused");
    assert!((100..=300).contains(&refused_at), "the bound was hit after {refused_at} values of 10 kB");
    c.expect(&cmd(&["GET", "k0"]), format!("$10000\r\n{value}\r\n").as_bytes());
    c.expect(
        &cmd(&["CONFIG", "SET", "maxmemory", "0", "maxmemory-policy", "allkeys-lru"]),
        b"-ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy') - ringkv cannot change it while \
          running; set it in the config file\r\n",
    );
    c.expect(&cmd(&["SET", "after", &value]), b"-OOM ");
    let _ = c.line(b"");
    c.expect(
        &cmd(&["CONFIG", "SET", "maxmemory", "100"]),
        b"-ERR CONFIG SET failed (possibly related to argument 'maxmemory') - maxmemory must be 0 (no limit) or at \
          least 1mb\r\n",
    );
    let garbage = c.line(&cmd(&["CONFIG", "SET", "maxmemory", "lots"]));
    assert!(garbage.starts_with("-ERR CONFIG SET failed (possibly related to argument 'maxmemory') - "), "{garbage}");
    c.expect(
        &cmd(&["CONFIG", "SET", "no-such", "1"]),
        b"-ERR Unknown option or number of arguments for CONFIG SET - 'no-such'\r\n",
    );
    c.expect(&cmd(&["CONFIG", "SET", "maxmemory"]), b"-ERR wrong number of arguments for 'config|set' command\r\n");
    c.expect(&cmd(&["CONFIG", "SET", "maxmemory", "0"]), b"+OK\r\n");
    c.expect(&cmd(&["SET", "after", &value]), b"+OK\r\n");
}

/// `resp_tls`: `redis-cli --tls` with the cluster CA and the client
/// certificate is served, on an address that is not loopback; a client
/// without a certificate, or speaking clear text, is served nothing, and
/// the node goes on serving the others.
#[test]
fn tls_on_the_resp_port_admits_only_clients_with_a_certificate_of_the_cluster() {
    let (certs, dir) = (Certs::new(), tempfile::tempdir().unwrap());
    let node = node_spec("n1", &dir.path().join("n1"), certs.path())
        .arg("--persistence")
        .arg("none")
        .arg("--resp")
        .arg("0.0.0.0:0")
        .arg("--resp-tls")
        .start();
    let port = node.resp.expect("the node serves RESP").port().to_string();
    let path = |name: &str| certs.path().join(name).display().to_string();
    let tls = ["--tls", "--cacert", &path("ca.crt"), "--cert", &path("client.crt"), "--key", &path("client.key")];
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args)
            .output()
            .expect("redis-cli (Debian's redis-tools) runs");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    assert_eq!(cli(&[&tls[..], &["SET", "k", "over tls"]].concat()), "OK\n");
    assert_eq!(cli(&[&tls[..], &["GET", "k"]].concat()), "over tls\n");
    let anonymous = cli(&["--tls", "--cacert", &path("ca.crt"), "GET", "k"]);
    assert!(!anonymous.contains("over tls"), "a client without a certificate was served: {anonymous}");
    let clear = cli(&["GET", "k"]);
    assert!(!clear.contains("over tls"), "a clear-text client was served: {clear}");
    let mut raw = Conn::to(([127, 0, 0, 1], node.resp.unwrap().port()).into());
    raw.0.write_all(&cmd(&["GET", "k"])).unwrap();
    let mut got = Vec::new();
    let _ = raw.0.read_to_end(&mut got);
    assert!(!String::from_utf8_lossy(&got).contains("over tls"), "clear text answered: {got:?}");
    assert_eq!(cli(&[&tls[..], &["GET", "k"]].concat()), "over tls\n", "the node still serves");
}

#[test]
fn a_malformed_stream_closes_its_connection_and_nobody_else_notices() {
    let (certs, dir) = (Certs::new(), tempfile::tempdir().unwrap());
    let node = node(&certs, &dir);
    let mut bystander = Conn::open(&node);
    bystander.expect(&cmd(&["SET", "k", "v"]), b"+OK\r\n");
    // A bulk length past max_value_bytes is refused when its header
    // arrives, before the node reserves anything for it.
    let mut huge = Conn::open(&node);
    huge.expect(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1073741824\r\n", b"-ERR Protocol error: invalid bulk length\r\n");
    assert!(huge.closed());
    let mut typed = Conn::open(&node);
    typed.expect(b"*2\r\n:1\r\n", b"-ERR Protocol error: expected '$', got ':'\r\n");
    assert!(typed.closed());
    let mut endless = Conn::open(&node);
    let mut line = vec![b'a'; 70 * 1024];
    line.extend_from_slice(b"\r\n");
    endless.expect(&line, b"-ERR Protocol error: too big inline request\r\n");
    assert!(endless.closed());
    let mut quotes = Conn::open(&node);
    quotes.expect(b"SET \"k v\r\n", b"-ERR Protocol error: unbalanced quotes in request\r\n");
    // A command split across many writes is answered once whole.
    let mut slow = Conn::open(&node);
    for byte in cmd(&["GET", "k"]) {
        slow.0.write_all(&[byte]).unwrap();
    }
    slow.expect(b"", b"$1\r\nv\r\n");
    bystander.expect(&cmd(&["GET", "k"]), b"$1\r\nv\r\n");
}

#[test]
fn a_resp_port_off_loopback_without_tls_or_a_password_is_refused_with_the_reason() {
    let (certs, dir) = (Certs::new(), tempfile::tempdir().unwrap());
    let spec = node_spec("n1", &dir.path().join("n1"), certs.path()).arg("--resp").arg("0.0.0.0:0");
    let err = spec
        .try_start()
        .err()
        .expect("a node with a RESP port on every interface and no password must not start")
        .to_string();
    assert!(err.contains("is not a loopback address and neither resp_tls nor resp_password is set"), "{err}");
}

#[test]
fn with_a_password_nothing_is_served_before_auth_and_other_addresses_are_allowed() {
    let (certs, dir) = (Certs::new(), tempfile::tempdir().unwrap());
    let node = node_spec("n1", &dir.path().join("n1"), certs.path())
        .arg("--persistence")
        .arg("none")
        .arg("--resp")
        .arg("0.0.0.0:0")
        .setting("resp_password = \"s3cret\"")
        .start();
    let port = node.resp.expect("the node serves RESP").port();
    let open = || {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn(stream)
    };
    let mut c = open();
    c.expect(&cmd(&["GET", "k"]), b"-NOAUTH Authentication required.\r\n");
    c.expect(&cmd(&["AUTH", "wrong"]), b"-WRONGPASS invalid username-password pair or user is disabled.\r\n");
    c.expect(
        &cmd(&["AUTH", "someone", "s3cret"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    c.expect(&cmd(&["HELLO", "3"]), b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n");
    // Before it authenticates, a client cannot make the node hold more
    // than a small command.
    let mut stranger = open();
    stranger.expect(b"*2\r\n$3\r\nGET\r\n$20000\r\n", b"-ERR Protocol error: invalid bulk length\r\n");
    assert!(stranger.closed());
    c.expect(&cmd(&["AUTH", "s3cret"]), b"+OK\r\n");
    c.expect(&cmd(&["SET", "k", &"v".repeat(20_000)]), b"+OK\r\n");
    // HELLO … AUTH authenticates and switches protocol at once.
    let mut h = open();
    let version = env!("CARGO_PKG_VERSION");
    let hello = format!(
        "*14\r\n$6\r\nserver\r\n$6\r\nringkv\r\n$7\r\nversion\r\n${}\r\n{version}\r\n$5\r\nproto\r\n:2\r\n$2\r\nid\r\n:3\r\n\
         $4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
        version.len()
    );
    h.expect(&cmd(&["HELLO", "2", "AUTH", "default", "s3cret"]), hello.as_bytes());
    h.expect(&cmd(&["DEL", "k"]), b":1\r\n");
    // RESET forgets the authentication, and the large-command allowance.
    h.expect(&cmd(&["CLIENT", "SETNAME", "worker"]), b"+OK\r\n");
    let info = bulk(&mut h, &cmd(&["CLIENT", "INFO"]));
    assert!(info.starts_with("id=3 addr=127.0.0.1:") && info.ends_with(" name=worker db=0 resp=2\n"), "{info}");
    h.expect(&cmd(&["RESET"]), b"+RESET\r\n");
    h.expect(&cmd(&["GET", "k"]), b"-NOAUTH Authentication required.\r\n");
    h.expect(b"*2\r\n$3\r\nGET\r\n$20000\r\n", b"-ERR Protocol error: invalid bulk length\r\n");
    assert!(h.closed());
}

fn redis_benchmark(port: &str, tests: &str) -> std::process::Output {
    std::process::Command::new("redis-benchmark")
        .args(["-p", port, "-n", "2000", "-c", "10", "--csv", "-t", tests])
        .output()
        .unwrap_or_else(|e| panic!("cannot run redis-benchmark ({e}): install Debian's redis-tools"))
}

/// redis-benchmark's default tests of the commands ringkv serves all run.
fn served_benchmarks_run(port: &str) {
    let out = redis_benchmark(port, "ping,set,get,incr,mset");
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "redis-benchmark failed: {csv}{}", String::from_utf8_lossy(&out.stderr));
    let rps = |test: &str| -> f64 {
        let line =
            csv.lines().find(|l| l.starts_with(&format!("\"{test}\""))).unwrap_or_else(|| panic!("{test}: {csv}"));
        line.split(',').nth(1).unwrap().trim_matches('"').parse().unwrap()
    };
    for test in ["PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "MSET (10 keys)"] {
        assert!(rps(test) > 0.0, "{test} ran: {csv}");
    }
}

/// Increments of one key sent to all three nodes of a cluster at once:
/// every node forwards them to the key's leading replica, which applies
/// them one after another, so each increment sees the last one's result
/// and no two get the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_through_every_node_are_serialized_at_the_leader() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3, &["resp_listen = \"127.0.0.1:0\""]);
    for i in 0..3 {
        cluster.wait_serving(i, 3, Duration::from_secs(30)).await;
    }
    const EACH: usize = 200;
    let answers: Vec<Vec<i64>> = std::thread::scope(|s| {
        let workers: Vec<_> = cluster
            .nodes
            .iter()
            .map(|node| {
                let addr = node.resp.expect("the node serves RESP");
                s.spawn(move || {
                    let mut c = Conn::to(addr);
                    // In pipelined rounds of 20, so many are in flight at once.
                    let mut got = Vec::new();
                    for _ in 0..EACH / 20 {
                        let round: Vec<u8> = (0..20).flat_map(|_| cmd(&["INCR", "counter"])).collect();
                        c.0.write_all(&round).unwrap();
                        for _ in 0..20 {
                            let line = c.line(b"");
                            let n = line.strip_prefix(':').unwrap_or_else(|| panic!("INCR answered {line:?}"));
                            got.push(n.trim_end().parse().unwrap());
                        }
                    }
                    let appended: Vec<u8> = (0..20).flat_map(|_| cmd(&["APPEND", "log", "ab"])).collect();
                    c.0.write_all(&appended).unwrap();
                    for _ in 0..20 {
                        assert!(c.line(b"").starts_with(':'));
                    }
                    got
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut all: Vec<i64> = answers.concat();
    all.sort_unstable();
    let expected: Vec<i64> = (1..=(3 * EACH) as i64).collect();
    assert_eq!(all, expected, "every increment applied once, each to the one before");
    for node in &cluster.nodes {
        let mut c = Conn::open(node);
        c.expect(&cmd(&["GET", "counter"]), format!("$3\r\n{}\r\n", 3 * EACH).as_bytes());
        c.expect(&cmd(&["STRLEN", "log"]), b":120\r\n");
    }
    // redis-benchmark through one node of the cluster: every write goes to
    // a quorum, every INCR to its key's leader.
    served_benchmarks_run(&cluster.nodes[1].resp.unwrap().port().to_string());
}

#[test]
fn command_and_info_describe_the_server_as_clients_expect() {
    let (certs, dir) = (Certs::new(), tempfile::tempdir().unwrap());
    let node = node(&certs, &dir);
    let mut c = Conn::open(&node);
    c.expect(&cmd(&["COMMAND", "COUNT"]), b":55\r\n");
    c.expect(
        &cmd(&["COMMAND", "INFO", "get", "mset", "lpush"]),
        b"*3\r\n*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n*0\r\n*0\r\n*0\r\n*0\r\n\
          *10\r\n$4\r\nmset\r\n:-3\r\n*2\r\n+write\r\n+denyoom\r\n:1\r\n:-1\r\n:2\r\n*0\r\n*0\r\n*0\r\n*0\r\n$-1\r\n",
    );
    // The rest of this long reply stays unread with its connection.
    assert_eq!(Conn::open(&node).line(&cmd(&["COMMAND"])), "*55\r\n");
    c.expect(&cmd(&["SET", "k", "v"]), b"+OK\r\n");
    let info = bulk(&mut c, &cmd(&["INFO"]));
    for line in ["# Server\r\nredis_version:7.2.0\r\n", "connected_clients:1\r\n", "db0:keys=1,", "# Cluster\r\n"] {
        assert!(info.contains(line), "{line:?} in {info}");
    }
    let memory = bulk(&mut c, &cmd(&["INFO", "MEMORY"]));
    assert!(memory.starts_with("# Memory\r\nused_memory:") && !memory.contains("# Server"), "{memory}");
    c.expect(&cmd(&["COMMAND", "DOCS"]), b"-ERR unknown subcommand 'DOCS'. Try COMMAND HELP.\r\n");

    // One shard, every slot, at the address the client reached.
    let port = node.resp.unwrap().port();
    c.expect(&cmd(&["CLUSTER", "KEYSLOT", "foo"]), b":12182\r\n");
    c.expect(&cmd(&["CLUSTER", "KEYSLOT", "{user1}.a"]), b":8106\r\n");
    let id = bulk(&mut c, &cmd(&["CLUSTER", "MYID"]));
    assert!(id.len() == 40 && id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    let slots = format!("*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:{port}\r\n$40\r\n{id}\r\n");
    c.expect(&cmd(&["CLUSTER", "SLOTS"]), slots.as_bytes());
    let nodes = bulk(&mut c, &cmd(&["CLUSTER", "NODES"]));
    assert_eq!(nodes, format!("{id} 127.0.0.1:{port}@{port} myself,master - 0 0 1 connected 0-16383\n"));
    assert!(bulk(&mut c, &cmd(&["CLUSTER", "INFO"])).starts_with("cluster_enabled:1\r\ncluster_state:ok\r\n"));
    c.expect(&cmd(&["CLUSTER", "FAILOVER"]), b"-ERR unknown subcommand 'FAILOVER'. Try CLUSTER HELP.\r\n");
}

/// A bulk reply's text.
fn bulk(c: &mut Conn, request: &[u8]) -> String {
    let header = c.line(request);
    let len: usize = header.strip_prefix('$').and_then(|n| n.trim_end().parse().ok()).expect("a bulk reply");
    let mut body = vec![0; len + 2];
    c.0.read_exact(&mut body).unwrap();
    String::from_utf8(body[..len].to_vec()).unwrap()
}

/// Redis's own tools against a node: `redis-cli` (Debian's redis-tools;
/// `.ci/run` installs it) for single commands, and `redis-benchmark`'s
/// default test list, whose commands ringkv lacks fail without harming
/// the node.
#[test]
fn redis_cli_and_redis_benchmark_work_against_a_node() {
    let (certs, dir) = (Certs::new(), tempfile::tempdir().unwrap());
    let node = node(&certs, &dir);
    let port = node.resp.unwrap().port().to_string();
    let cli = |args: &[&str]| {
        let out =
            std::process::Command::new("redis-cli").args(["-p", &port]).args(args).output().unwrap_or_else(|e| {
                panic!("cannot run redis-cli ({e}): install Debian's redis-tools, as .ci/run does")
            });
        assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim_end().to_string()
    };
    assert_eq!(cli(&["set", "greeting", "hello", "ex", "60"]), "OK");
    // In cluster mode too: redis-cli asks for the slots, and is never
    // redirected.
    assert_eq!(cli(&["-c", "set", "{tagged}.key", "v"]), "OK");
    assert_eq!(cli(&["-c", "get", "{tagged}.key"]), "v");
    assert_eq!(cli(&["get", "greeting"]), "hello");
    assert_eq!(cli(&["incr", "visits"]), "1");
    assert_eq!(cli(&["incrby", "visits", "9"]), "10");
    // Whole seconds, rounded: 60 unless half a second passed since the SET.
    let ttl: u64 = cli(&["ttl", "greeting"]).parse().unwrap();
    assert!((55..=60).contains(&ttl), "TTL {ttl}");
    assert_eq!(cli(&["lpush", "list", "a"]), "ERR unknown command 'lpush', with args beginning with: 'list' 'a'");

    let benchmark = |tests: &str| redis_benchmark(&port, tests);
    // The default list's tests of commands ringkv serves run...
    served_benchmarks_run(&port);
    // ...and the others stop at the first reply, Redis's unknown command
    // error (redis-benchmark exits on an error).
    for test in ["lpush", "rpush", "lpop", "rpop", "sadd", "hset", "spop", "zadd", "zpopmin", "lrange"] {
        let out = benchmark(test);
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success() && said.contains("ERR unknown command '"), "{test}: {said}");
    }
    // After all that, the node serves as before.
    assert_eq!(cli(&["get", "greeting"]), "hello");
    assert_eq!(cli(&["incr", "visits"]), "11");
}

/// A `SCAN` walk through one node of a cluster while a fourth node joins
/// (and partitions move to it) and then a replica is SIGKILLed, with keys
/// written and deleted all along: every key that existed throughout is
/// listed, exactly once, and nothing deleted before the walk began. A call
/// refused while the cluster notices the dead node is asked again with
/// the same cursor, as a client would. Afterwards `DBSIZE` and `KEYS`
/// count exactly what was acknowledged, and redis-py's `RedisCluster`
/// works through each node still up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_across_a_join_and_a_crash_lists_every_key_that_existed_throughout() {
    let _serial = SERIAL.lock().await;
    let settings = ["resp_listen = \"127.0.0.1:0\""];
    let mut cluster = Cluster::start_serving(3, &settings).await;
    let mut c = Conn::open(&cluster.nodes[0]);
    let keys: Vec<String> = (0..1500).map(|i| format!("key:{i}")).collect();
    for chunk in keys.chunks(100) {
        let mut args = vec!["MSET"];
        for key in chunk {
            args.extend([key.as_str(), "v"]);
        }
        c.expect(&cmd(&args), b"+OK\r\n");
    }
    let deleted_before: Vec<String> = keys.iter().step_by(15).cloned().collect();
    for key in &deleted_before {
        c.expect(&cmd(&["DEL", key]), b":1\r\n");
    }
    // Until acknowledged: a refusal may or may not have been applied.
    let until_ok = |c: &mut Conn, request: &[u8]| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let line = c.line(request);
            if !line.starts_with('-') {
                return line;
            }
            assert!(std::time::Instant::now() < deadline, "still refused: {line}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let (mut walked, mut written_during, mut deleted_during) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cursor, mut calls, mut refused) = ("0".to_string(), 0, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        assert!(std::time::Instant::now() < deadline, "the walk did not finish: {calls} calls, {refused} refused");
        match calls {
            5 if cluster.nodes.len() == 3 => {
                cluster.add(&settings);
            }
            // The ring has changed under the cursor before the walk goes on.
            15 => cluster.wait_serving(0, 4, Duration::from_secs(60)).await,
            30 if cluster.nodes[1].exited().is_none() => cluster.nodes[1].kill9(),
            _ => {}
        }
        let new = format!("new:{calls}:{refused}");
        until_ok(&mut c, &cmd(&["SET", &new, "v"]));
        written_during.push(new);
        let victim = keys[(calls * 7 + 3) % keys.len()].clone();
        if !deleted_before.contains(&victim) && !deleted_during.contains(&victim) {
            until_ok(&mut c, &cmd(&["DEL", &victim]));
            deleted_during.push(victim);
        }
        let raw = String::from_utf8(reply(&mut c, &cmd(&["SCAN", &cursor, "COUNT", "20"]))).unwrap();
        if raw.starts_with('-') {
            refused += 1;
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let mut lines = raw.split("\r\n").skip(2);
        let next = lines.next().unwrap().to_string();
        let n: usize = lines.next().unwrap()[1..].parse().unwrap();
        walked.extend((0..n).map(|_| lines.nth(1).unwrap().to_string()));
        calls += 1;
        if next == "0" {
            break;
        }
        cursor = next;
    }
    assert!(calls > 30, "the walk outlasted the join and the crash ({calls} calls)");
    eprintln!("{calls} SCAN calls, {refused} refused and asked again");
    let mut unique = walked.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), walked.len(), "no key listed twice");
    let throughout: Vec<&String> =
        keys.iter().filter(|k| !deleted_before.contains(k) && !deleted_during.contains(k)).collect();
    let missed: Vec<&&String> = throughout.iter().filter(|k| unique.binary_search(k).is_err()).collect();
    assert!(
        missed.is_empty(),
        "{} keys that existed throughout were not listed, e.g. {:?}",
        missed.len(),
        missed.first()
    );
    let resurrected: Vec<&String> = deleted_before.iter().filter(|k| unique.binary_search(k).is_ok()).collect();
    assert!(resurrected.is_empty(), "deleted before the walk yet listed: {resurrected:?}");

    let expected = keys.len() - deleted_before.len() - deleted_during.len() + written_during.len();
    assert_eq!(until_ok(&mut c, &cmd(&["DBSIZE"])), format!(":{expected}\r\n"));
    let new_keys = String::from_utf8(reply(&mut c, &cmd(&["KEYS", "new:*"]))).unwrap();
    assert!(new_keys.starts_with(&format!("*{}\r\n", written_during.len())), "{new_keys}");
    for key in &written_during {
        assert!(new_keys.contains(&format!("\r\n{key}\r\n")), "KEYS lists {key}");
    }

    let mut args = vec!["cluster".to_string()];
    args.extend([0, 2, 3].iter().map(|&i| cluster.nodes[i].resp.unwrap().port().to_string()));
    redis_py(&args);
}

/// A child process killed with the test, on every path.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// redis-cli's interactive hints, on a pseudo-terminal from util-linux's
/// `script`: typing `set greeting ` shows Redis's hint for the rest of
/// `SET`'s arguments (redis-cli uses its own copy of the command docs,
/// since `COMMAND DOCS` is refused), and the command then runs.
#[test]
fn redis_cli_shows_its_interactive_hints() {
    use std::sync::{Arc, Mutex};
    let (certs, dir) = (Certs::new(), tempfile::tempdir().unwrap());
    let node = node(&certs, &dir);
    let port = node.resp.unwrap().port();
    let mut child = KillOnDrop(
        std::process::Command::new("script")
            .args(["-q", "-c", &format!("stty cols 200 rows 50; redis-cli -p {port}"), "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("util-linux's script runs"),
    );
    let mut stdin = child.0.stdin.take().unwrap();
    let mut stdout = child.0.stdout.take().unwrap();
    let screen = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let screen = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                screen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    // Waits until the terminal has shown `text` (after `from`), and
    // answers where it ends.
    let shown = |text: &str, from: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let seen = String::from_utf8_lossy(&screen.lock().unwrap()[from..]).into_owned();
            if let Some(at) = seen.find(text) {
                return from + at + text.len();
            }
            assert!(std::time::Instant::now() < deadline, "the terminal never showed {text:?}; it shows {seen:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let prompt = format!("127.0.0.1:{port}> ");
    let at = shown(&prompt, 0);
    stdin.write_all(b"set greeting ").unwrap();
    let at = shown("value [NX|XX] [GET] [EX seconds|PX milliseconds", at);
    stdin.write_all(b"hello\r").unwrap();
    let at = shown("OK", at);
    stdin.write_all(b"get greeting\r").unwrap();
    shown("\"hello\"", at);
    stdin.write_all(b"quit\r").unwrap();
    drop(child);
    reader.join().unwrap();
}

/// A client writing through one node that is killed reconnects to another
/// and goes on; nothing it was told had succeeded is lost, and its
/// acknowledged increments stay in order (the next leader reads what the
/// last one wrote).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_killed_node_reconnects_elsewhere_and_loses_nothing_acknowledged() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &["resp_listen = \"127.0.0.1:0\""]);
    for i in 0..3 {
        cluster.wait_serving(i, 3, Duration::from_secs(30)).await;
    }
    let addrs: Vec<std::net::SocketAddr> = cluster.nodes.iter().map(|n| n.resp.unwrap()).collect();
    // The victim is the counter's leading replica, and the client's node:
    // its INCRs must move to a new leader that starts from a quorum read.
    let explained = cluster.client().explain("counter").await.unwrap();
    let leader = &explained.replicas[0].node_id;
    let victim = leader.strip_prefix('n').and_then(|n| n.parse::<usize>().ok()).expect("nodes are n1..n3") - 1;
    let mut at = victim;
    let mut c = Conn::to(addrs[at]);
    let (mut acked, mut counts, mut failures) = (Vec::new(), Vec::new(), 0i64);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    for i in 0..300 {
        if i == 100 {
            cluster.nodes[victim].kill9();
        }
        for request in [cmd(&["SET", &format!("k{i}"), &format!("v{i}")]), cmd(&["INCR", "counter"])] {
            loop {
                assert!(std::time::Instant::now() < deadline, "no progress after {i} writes");
                match c.try_line(&request) {
                    Ok(line) if line == "+OK\r\n" => acked.push(i),
                    Ok(line) if line.starts_with(':') => counts.push(line[1..].trim_end().parse::<i64>().unwrap()),
                    // Refused (a replica or leader not yet seen down): may
                    // have been applied; try again.
                    Ok(line) if line.starts_with('-') => {
                        failures += 1;
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    Ok(line) => panic!("unexpected reply {line:?}"),
                    // The node is gone: the next one, as a client library's
                    // reconnect would.
                    Err(_) => {
                        failures += 1;
                        at = (at + 1) % 3;
                        if at == victim {
                            at = (at + 1) % 3;
                        }
                        c = Conn::to(addrs[at]);
                        continue;
                    }
                }
                break;
            }
        }
    }
    assert_eq!(acked.len(), 300);
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "acknowledged increments in order: {counts:?}");
    let mut reader = Conn::to(addrs[(victim + 1) % 3]);
    for i in &acked {
        reader.expect(&cmd(&["GET", &format!("k{i}")]), format!("${}\r\nv{i}\r\n", format!("v{i}").len()).as_bytes());
    }
    let last = *counts.last().unwrap();
    assert_eq!(counts.len(), 300);
    let stored: i64 = bulk(&mut reader, &cmd(&["GET", "counter"])).parse().unwrap();
    assert!(
        stored >= last && stored <= last + failures,
        "the counter holds {stored}: at least the last acknowledged {last}, at most {failures} more"
    );
}

/// redis-py's current release (in the venv `just redis-py` makes, which
/// `just test` runs first), with RESP3, its default, and with RESP2:
/// `tests/clients/redis_py.py`.
#[test]
fn redis_py_works_with_resp3_and_resp2() {
    let (certs, dir) = (Certs::new(), tempfile::tempdir().unwrap());
    let node = node(&certs, &dir);
    redis_py(&[node.resp.unwrap().port().to_string()]);
}

/// Runs `tests/clients/redis_py.py` with `args` in redis-py's venv.
fn redis_py(args: &[String]) {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/target/redis-py/bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/redis_py.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} ({e}): `just redis-py` installs redis-py there"));
    assert!(
        out.status.success(),
        "redis-py failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
