//! The commands ringkv serves, described as Redis's `COMMAND` describes its
//! own: client libraries read this to learn each command's arity and where
//! its keys are (redis-py's cluster client routes by it).

use bytes::Bytes;

use crate::Reply;

/// One command as `COMMAND INFO` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    pub name: &'static str,
    /// Arguments including the name; negative for "at least".
    pub arity: i64,
    pub flags: &'static [&'static str],
    /// Position of the first key, of the last (negative: from the end),
    /// and the step between keys; zeros for a command without keys.
    pub first_key: i64,
    pub last_key: i64,
    pub step: i64,
}

const fn spec(name: &'static str, arity: i64, flags: &'static [&'static str], keys: (i64, i64, i64)) -> CommandSpec {
    CommandSpec { name, arity, flags, first_key: keys.0, last_key: keys.1, step: keys.2 }
}

const NONE: (i64, i64, i64) = (0, 0, 0);
const ONE: (i64, i64, i64) = (1, 1, 1);
const ALL: (i64, i64, i64) = (1, -1, 1);
const READ: &[&str] = &["readonly", "fast"];
const WRITE: &[&str] = &["write", "denyoom"];
const WRITE_FAST: &[&str] = &["write", "denyoom", "fast"];
const CONNECTION: &[&str] = &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"];

/// Every command ringkv answers, with Redis 7's arity, flags and keys.
pub const COMMANDS: &[CommandSpec] = &[
    spec("append", 3, WRITE_FAST, ONE),
    spec("auth", -2, CONNECTION, NONE),
    spec("client", -2, &["noscript", "loading", "stale"], NONE),
    spec("cluster", -2, &["loading", "stale"], NONE),
    spec("command", -1, &["loading", "stale"], NONE),
    spec("config", -2, &["admin", "noscript", "loading", "stale"], NONE),
    spec("copy", -3, WRITE, (1, 2, 1)),
    spec("dbsize", 1, &["readonly", "fast"], NONE),
    spec("decr", 2, WRITE_FAST, ONE),
    spec("decrby", 3, WRITE_FAST, ONE),
    spec("del", -2, &["write"], ALL),
    spec("echo", 2, &["fast"], NONE),
    spec("exists", -2, READ, ALL),
    spec("expire", -3, &["write", "fast"], ONE),
    spec("expireat", -3, &["write", "fast"], ONE),
    spec("expiretime", 2, READ, ONE),
    spec("flushall", -1, &["write"], NONE),
    spec("flushdb", -1, &["write"], NONE),
    spec("get", 2, READ, ONE),
    spec("getdel", 2, &["write", "fast"], ONE),
    spec("getex", -2, &["write", "fast"], ONE),
    spec("getrange", 4, &["readonly"], ONE),
    spec("getset", 3, WRITE_FAST, ONE),
    spec("hello", -1, CONNECTION, NONE),
    spec("incr", 2, WRITE_FAST, ONE),
    spec("incrby", 3, WRITE_FAST, ONE),
    spec("incrbyfloat", 3, WRITE_FAST, ONE),
    spec("info", -1, &["loading", "stale"], NONE),
    spec("keys", 2, &["readonly"], NONE),
    spec("mget", -2, READ, ALL),
    spec("mset", -3, WRITE, (1, -1, 2)),
    spec("msetnx", -3, WRITE, (1, -1, 2)),
    spec("persist", 2, &["write", "fast"], ONE),
    spec("pexpire", -3, &["write", "fast"], ONE),
    spec("pexpireat", -3, &["write", "fast"], ONE),
    spec("pexpiretime", 2, READ, ONE),
    spec("ping", -1, &["fast"], NONE),
    spec("psetex", 4, WRITE, ONE),
    spec("pttl", 2, READ, ONE),
    spec("quit", -1, CONNECTION, NONE),
    spec("randomkey", 1, &["readonly"], NONE),
    spec("rename", 3, &["write"], (1, 2, 1)),
    spec("renamenx", 3, &["write", "fast"], (1, 2, 1)),
    spec("reset", 1, CONNECTION, NONE),
    spec("scan", -2, &["readonly"], NONE),
    spec("select", 2, &["loading", "stale", "fast"], NONE),
    spec("set", -3, WRITE, ONE),
    spec("setex", 4, WRITE, ONE),
    spec("setnx", 3, WRITE_FAST, ONE),
    spec("setrange", 4, WRITE, ONE),
    spec("strlen", 2, READ, ONE),
    spec("time", 1, &["loading", "stale", "fast"], NONE),
    spec("ttl", 2, READ, ONE),
    spec("type", 2, READ, ONE),
    spec("unlink", -2, &["write", "fast"], ALL),
];

/// The command named `name`, in any case.
pub fn find(name: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}

impl CommandSpec {
    /// The command's entry in `COMMAND` and `COMMAND INFO`: name, arity,
    /// flags, keys, then Redis 7's ACL categories, tips, key specs and
    /// subcommands, all empty here.
    pub fn reply(&self) -> Reply {
        let flags = self.flags.iter().map(|f| Reply::Status((*f).to_string())).collect();
        Reply::Array(vec![
            Reply::Bulk(Bytes::from_static(self.name.as_bytes())),
            Reply::Integer(self.arity),
            Reply::Array(flags),
            Reply::Integer(self.first_key),
            Reply::Integer(self.last_key),
            Reply::Integer(self.step),
            Reply::Array(Vec::new()),
            Reply::Array(Vec::new()),
            Reply::Array(Vec::new()),
            Reply::Array(Vec::new()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_unique_and_found_in_any_case() {
        assert!(COMMANDS.windows(2).all(|w| w[0].name < w[1].name), "sorted, no duplicates");
        assert_eq!(find(b"MSET").map(|c| (c.first_key, c.last_key, c.step)), Some((1, -1, 2)));
        assert!(find(b"lpush").is_none());
    }
}
