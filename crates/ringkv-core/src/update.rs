//! Read-modify-write operations (Redis's `INCR`, `APPEND`, `SETRANGE`,
//! `SET … NX|XX|GET|KEEPTTL`, `GETDEL`, `GETEX`) as one pure function of the
//! value stored now. The key's leading replica (its first replica that is
//! up) runs it inside the partition's actor, so concurrent updates of one
//! key there are applied one after another, each on the last one's result.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Update {
    /// `INCR`, `DECR`, `INCRBY`, `DECRBY`.
    IncrBy(i64),
    /// `INCRBYFLOAT`, with the increment as the client wrote it.
    IncrByFloat(Bytes),
    Append(Bytes),
    SetRange {
        offset: u64,
        value: Bytes,
    },
    /// `SET` with its conditions, `SETNX`, `GETSET`: `get` answers the value
    /// that was stored before.
    Set {
        value: Bytes,
        expiry: Expiry,
        when: When,
        get: bool,
    },
    GetDel,
    GetEx {
        expiry: Expiry,
    },
    /// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT` with a condition on the
    /// current expiry: set it to `at` (wall-clock milliseconds; not after
    /// now expires the key at once).
    Expire {
        at: u64,
        when: ExpireWhen,
    },
    /// `EXPIRETIME`/`PEXPIRETIME`: the expiry in milliseconds, -1 for none,
    /// -2 for no key. Changes nothing; asked of the leader so that it sees
    /// the updates serialized there.
    ExpireTime,
    /// The value and its expiry, for `RENAME` and `COPY`, which write them
    /// under another key. Changes nothing.
    Dump,
    /// Deletes the key if it still holds this value and expiry: `RENAME`
    /// removes its source only if nothing rewrote it after the copy, and
    /// `MSETNX` takes back only its own writes.
    DeleteIf {
        value: Bytes,
        expires_at: Option<u64>,
    },
}

/// `EXPIRE`'s condition on the key's current expiry; a key without one
/// counts as expiring never, as in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpireWhen {
    Always,
    /// `NX`: only if it has no expiry.
    Unset,
    /// `XX`: only if it has one.
    Set,
    /// `GT`: only if the new expiry is later.
    Later,
    /// `LT`: only if the new expiry is earlier.
    Earlier,
    /// `XX LT`: only if it has one and the new one is earlier.
    SetEarlier,
}

/// What an update does to the key's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expiry {
    /// Leave it as it is (`KEEPTTL`; `GETEX` without options).
    Keep,
    /// Remove it (`SET` without options; `GETEX PERSIST`).
    Clear,
    /// Expire at this wall-clock instant, in milliseconds; an instant not
    /// after now deletes the key, as in Redis.
    At(u64),
}

/// `SET`'s condition on the key's existence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum When {
    Always,
    /// `NX`.
    Missing,
    /// `XX`.
    Present,
}

/// An update's answer, in the shape Redis gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    Integer(i64),
    /// A value, or none (Redis's nil).
    Value(Option<Bytes>),
    /// `SET`'s `OK`.
    Done,
    /// `SET … NX|XX` whose condition failed: nil.
    NotSet,
    /// `Dump`'s answer: the live value and its expiry, if the key exists.
    Entry(Option<(Bytes, Option<u64>)>),
}

/// Why an update was refused; the texts are Redis's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum UpdateError {
    #[error("value is not an integer or out of range")]
    NotInteger,
    #[error("increment or decrement would overflow")]
    Overflow,
    #[error("value is not a valid float")]
    NotFloat,
    #[error("increment would produce NaN or Infinity")]
    NotFinite,
    #[error("string exceeds maximum allowed size")]
    TooLarge,
}

/// What to store after an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Keep,
    Write {
        value: Bytes,
        expires_at: Option<u64>,
    },
    Delete,
    /// Keep the value, change only its expiry: stored as a rewrite of the
    /// value (a touched version, as `expire` writes), which never outranks
    /// a write stamped after the value.
    Retime {
        expires_at: Option<u64>,
    },
}

/// The live value now and its expiry, if the key exists.
pub type Current<'a> = Option<(&'a [u8], Option<u64>)>;

/// Applies `update` to the key's live value at `now_ms`. `max_value` is the
/// node's value limit: an update that would grow a value past it is
/// refused.
pub fn apply(
    update: &Update,
    current: Current<'_>,
    now_ms: u64,
    max_value: usize,
) -> Result<(Change, Answer), UpdateError> {
    let value = current.map(|(v, _)| v);
    let expires_at = current.and_then(|(_, e)| e);
    let written = |value: Bytes| Change::Write { value, expires_at };
    match update {
        Update::IncrBy(by) => {
            let old = match value {
                Some(v) => parse_i64(v).ok_or(UpdateError::NotInteger)?,
                None => 0,
            };
            let new = old.checked_add(*by).ok_or(UpdateError::Overflow)?;
            Ok((written(Bytes::from(new.to_string())), Answer::Integer(new)))
        }
        Update::IncrByFloat(by) => {
            let by = parse_f64(by).ok_or(UpdateError::NotFloat)?;
            let old = match value {
                Some(v) => parse_f64(v).ok_or(UpdateError::NotFloat)?,
                None => 0.0,
            };
            let new = old + by;
            if !new.is_finite() {
                return Err(UpdateError::NotFinite);
            }
            let text = Bytes::from(format_f64(new));
            Ok((written(text.clone()), Answer::Value(Some(text))))
        }
        Update::Append(tail) => {
            let old = value.unwrap_or_default();
            if old.len() + tail.len() > max_value {
                return Err(UpdateError::TooLarge);
            }
            let mut new = BytesMut::with_capacity(old.len() + tail.len());
            new.extend_from_slice(old);
            new.extend_from_slice(tail);
            let len = new.len() as i64;
            Ok((written(new.freeze()), Answer::Integer(len)))
        }
        Update::SetRange { offset, value: patch } => {
            let old = value.unwrap_or_default();
            // Redis changes nothing, and creates no key, for an empty patch.
            if patch.is_empty() {
                return Ok((Change::Keep, Answer::Integer(old.len() as i64)));
            }
            let end = offset.checked_add(patch.len() as u64).filter(|end| *end <= max_value as u64);
            let Some(end) = end else { return Err(UpdateError::TooLarge) };
            let (offset, end) = (*offset as usize, end as usize);
            let mut new = BytesMut::zeroed(old.len().max(end));
            new[..old.len()].copy_from_slice(old);
            new[offset..end].copy_from_slice(patch);
            let len = new.len() as i64;
            Ok((written(new.freeze()), Answer::Integer(len)))
        }
        Update::Set { value: new, expiry, when, get } => {
            let allowed = match when {
                When::Always => true,
                When::Missing => value.is_none(),
                When::Present => value.is_some(),
            };
            let answer = match (get, allowed) {
                (true, _) => Answer::Value(value.map(Bytes::copy_from_slice)),
                (false, true) => Answer::Done,
                (false, false) => Answer::NotSet,
            };
            if !allowed {
                return Ok((Change::Keep, answer));
            }
            let change = match *expiry {
                Expiry::Keep => Change::Write { value: new.clone(), expires_at },
                Expiry::Clear => Change::Write { value: new.clone(), expires_at: None },
                Expiry::At(at) if at <= now_ms => Change::Delete,
                Expiry::At(at) => Change::Write { value: new.clone(), expires_at: Some(at) },
            };
            Ok((change, answer))
        }
        Update::GetDel => match value {
            Some(v) => Ok((Change::Delete, Answer::Value(Some(Bytes::copy_from_slice(v))))),
            None => Ok((Change::Keep, Answer::Value(None))),
        },
        Update::GetEx { expiry } => {
            let Some(v) = value else { return Ok((Change::Keep, Answer::Value(None))) };
            let answer = Answer::Value(Some(Bytes::copy_from_slice(v)));
            let change = match *expiry {
                Expiry::Keep => Change::Keep,
                Expiry::Clear if expires_at.is_none() => Change::Keep,
                Expiry::Clear => Change::Retime { expires_at: None },
                Expiry::At(at) => Change::Retime { expires_at: Some(at) },
            };
            Ok((change, answer))
        }
        Update::Expire { at, when } => {
            if value.is_none() {
                return Ok((Change::Keep, Answer::Integer(0)));
            }
            let allowed = match when {
                ExpireWhen::Always => true,
                ExpireWhen::Unset => expires_at.is_none(),
                ExpireWhen::Set => expires_at.is_some(),
                ExpireWhen::Later => expires_at.is_some_and(|current| *at > current),
                ExpireWhen::Earlier => expires_at.is_none_or(|current| *at < current),
                ExpireWhen::SetEarlier => expires_at.is_some_and(|current| *at < current),
            };
            match allowed {
                true => Ok((Change::Retime { expires_at: Some(*at) }, Answer::Integer(1))),
                false => Ok((Change::Keep, Answer::Integer(0))),
            }
        }
        Update::ExpireTime => {
            let answer = match (value, expires_at) {
                (None, _) => -2,
                (Some(_), None) => -1,
                (Some(_), Some(at)) => at as i64,
            };
            Ok((Change::Keep, Answer::Integer(answer)))
        }
        Update::Dump => Ok((Change::Keep, Answer::Entry(value.map(|v| (Bytes::copy_from_slice(v), expires_at))))),
        Update::DeleteIf { value: expected, expires_at: expected_expiry } => {
            match value.is_some_and(|v| v == &expected[..]) && expires_at == *expected_expiry {
                true => Ok((Change::Delete, Answer::Integer(1))),
                false => Ok((Change::Keep, Answer::Integer(0))),
            }
        }
    }
}

/// A signed 64-bit integer as Redis's `string2ll` reads one: an optional
/// minus sign and digits, no leading zeros, no spaces, no plus sign.
pub fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    let mut magnitude: u64 = 0;
    for d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative { 0i64.checked_sub_unsigned(magnitude) } else { i64::try_from(magnitude).ok() }
}

/// A float as Redis reads one for `INCRBYFLOAT`: the whole text, no
/// surrounding spaces, finite.
pub fn parse_f64(text: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(text).ok()?;
    if text.is_empty() || text.starts_with(char::is_whitespace) || text.ends_with(char::is_whitespace) {
        return None;
    }
    text.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// The shortest text that reads back as `value`, without an exponent, as
/// Redis prints `INCRBYFLOAT`'s results (`10.5`, `3`, `0.1`).
fn format_f64(value: f64) -> String {
    let text = format!("{value}");
    if text == "-0" { "0".to_string() } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(update: Update, current: Current<'_>) -> Result<(Change, Answer), UpdateError> {
        apply(&update, current, 1_000, 100)
    }

    fn write(value: &str, expires_at: Option<u64>) -> Change {
        Change::Write { value: Bytes::from(value.to_string()), expires_at }
    }

    #[test]
    fn integers_are_read_as_redis_reads_them() {
        for (text, n) in [("0", Some(0)), ("-1", Some(-1)), ("42", Some(42)), ("9223372036854775807", Some(i64::MAX))] {
            assert_eq!(parse_i64(text.as_bytes()), n, "{text}");
        }
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for text in ["", "-", "-0", "01", "+1", " 1", "1 ", "1.0", "9223372036854775808", "abc"] {
            assert_eq!(parse_i64(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn incr_keeps_the_expiry_and_refuses_what_is_not_an_integer() {
        assert_eq!(run(Update::IncrBy(1), None), Ok((write("1", None), Answer::Integer(1))));
        assert_eq!(
            run(Update::IncrBy(-5), Some((b"10", Some(9_000)))),
            Ok((write("5", Some(9_000)), Answer::Integer(5)))
        );
        assert_eq!(run(Update::IncrBy(1), Some((b"1.5", None))), Err(UpdateError::NotInteger));
        assert_eq!(run(Update::IncrBy(1), Some((b"9223372036854775807", None))), Err(UpdateError::Overflow));
        assert_eq!(run(Update::IncrBy(i64::MIN), Some((b"-1", None))), Err(UpdateError::Overflow));
    }

    #[test]
    fn incrbyfloat_prints_the_shortest_text() {
        let by = |s: &str| Update::IncrByFloat(Bytes::from(s.to_string()));
        let answer = |s: &str| Answer::Value(Some(Bytes::from(s.to_string())));
        assert_eq!(run(by("0.1"), Some((b"10.5", None))), Ok((write("10.6", None), answer("10.6"))));
        assert_eq!(run(by("2.0e2"), Some((b"3", None))), Ok((write("203", None), answer("203"))));
        assert_eq!(run(by("1"), Some((b"abc", None))), Err(UpdateError::NotFloat));
        assert_eq!(run(by("1.7e308"), Some((b"1.7e308", None))), Err(UpdateError::NotFinite));
        assert_eq!(run(by("-1.5"), Some((b"1.5", None))), Ok((write("0", None), answer("0"))));
    }

    #[test]
    fn append_and_setrange_grow_within_the_limit() {
        let tail = Bytes::from_static(b" World");
        assert_eq!(run(Update::Append(tail.clone()), Some((b"Hello", Some(5_000)))).unwrap().1, Answer::Integer(11));
        assert_eq!(run(Update::Append(tail), None).unwrap().0, write(" World", None));
        assert_eq!(
            run(Update::Append(Bytes::from(vec![b'x'; 96])), Some((b"12345", None))),
            Err(UpdateError::TooLarge)
        );
        let patch = |offset, value: &'static [u8]| Update::SetRange { offset, value: Bytes::from_static(value) };
        assert_eq!(run(patch(6, b"Redis"), Some((b"Hello World", None))).unwrap().0, write("Hello Redis", None));
        assert_eq!(run(patch(3, b"ab"), None).unwrap(), (write("\0\0\0ab", None), Answer::Integer(5)));
        assert_eq!(run(patch(3, b""), None).unwrap(), (Change::Keep, Answer::Integer(0)));
        assert_eq!(run(patch(99, b"ab"), None), Err(UpdateError::TooLarge));
        assert_eq!(run(patch(u64::MAX, b"ab"), None), Err(UpdateError::TooLarge));
    }

    #[test]
    fn set_follows_its_conditions_and_expiry() {
        let set = |when, expiry, get| Update::Set { value: Bytes::from_static(b"new"), expiry, when, get };
        let old = Some((&b"old"[..], Some(5_000)));
        assert_eq!(run(set(When::Missing, Expiry::Clear, false), old).unwrap(), (Change::Keep, Answer::NotSet));
        assert_eq!(run(set(When::Missing, Expiry::Clear, false), None).unwrap(), (write("new", None), Answer::Done));
        assert_eq!(run(set(When::Present, Expiry::Clear, false), None).unwrap(), (Change::Keep, Answer::NotSet));
        let previous = Answer::Value(Some(Bytes::from_static(b"old")));
        assert_eq!(run(set(When::Present, Expiry::Keep, true), old).unwrap(), (write("new", Some(5_000)), previous));
        assert_eq!(
            run(set(When::Always, Expiry::Clear, true), None).unwrap(),
            (write("new", None), Answer::Value(None))
        );
        assert_eq!(run(set(When::Always, Expiry::At(900), false), old).unwrap(), (Change::Delete, Answer::Done));
        assert_eq!(run(set(When::Always, Expiry::At(2_000), false), old).unwrap().0, write("new", Some(2_000)));
    }

    #[test]
    fn expire_conditions_count_no_expiry_as_never() {
        let expire = |at, when| Update::Expire { at, when };
        let set = |at| (Change::Retime { expires_at: Some(at) }, Answer::Integer(1));
        let kept = (Change::Keep, Answer::Integer(0));
        let (persistent, expiring) = (Some((&b"v"[..], None)), Some((&b"v"[..], Some(5_000))));
        assert_eq!(run(expire(2_000, ExpireWhen::Always), None).unwrap(), kept);
        assert_eq!(run(expire(2_000, ExpireWhen::Unset), persistent).unwrap(), set(2_000));
        assert_eq!(run(expire(2_000, ExpireWhen::Unset), expiring).unwrap(), kept);
        assert_eq!(run(expire(2_000, ExpireWhen::Set), persistent).unwrap(), kept);
        assert_eq!(run(expire(2_000, ExpireWhen::Set), expiring).unwrap(), set(2_000));
        assert_eq!(run(expire(9_000, ExpireWhen::Later), expiring).unwrap(), set(9_000));
        assert_eq!(run(expire(2_000, ExpireWhen::Later), expiring).unwrap(), kept);
        assert_eq!(run(expire(9_000, ExpireWhen::Later), persistent).unwrap(), kept);
        assert_eq!(run(expire(2_000, ExpireWhen::Earlier), expiring).unwrap(), set(2_000));
        assert_eq!(run(expire(2_000, ExpireWhen::Earlier), persistent).unwrap(), set(2_000));
        assert_eq!(run(expire(9_000, ExpireWhen::Earlier), expiring).unwrap(), kept);
        assert_eq!(run(expire(2_000, ExpireWhen::SetEarlier), expiring).unwrap(), set(2_000));
        assert_eq!(run(expire(2_000, ExpireWhen::SetEarlier), persistent).unwrap(), kept);
        // At or before now, allowed: the key expires at once.
        assert_eq!(run(expire(500, ExpireWhen::Always), persistent).unwrap(), set(500));
        assert_eq!(run(Update::ExpireTime, expiring).unwrap().1, Answer::Integer(5_000));
        assert_eq!(run(Update::ExpireTime, persistent).unwrap().1, Answer::Integer(-1));
        assert_eq!(run(Update::ExpireTime, None).unwrap().1, Answer::Integer(-2));
    }

    #[test]
    fn getdel_and_getex_answer_the_value_they_found() {
        let found = Answer::Value(Some(Bytes::from_static(b"v")));
        assert_eq!(run(Update::GetDel, Some((b"v", None))).unwrap(), (Change::Delete, found.clone()));
        assert_eq!(run(Update::GetDel, None).unwrap(), (Change::Keep, Answer::Value(None)));
        let getex = |expiry| Update::GetEx { expiry };
        assert_eq!(run(getex(Expiry::Keep), Some((b"v", Some(5_000)))).unwrap(), (Change::Keep, found.clone()));
        assert_eq!(run(getex(Expiry::Clear), Some((b"v", None))).unwrap(), (Change::Keep, found.clone()));
        let retimed = |expires_at| Change::Retime { expires_at };
        assert_eq!(run(getex(Expiry::Clear), Some((b"v", Some(5_000)))).unwrap().0, retimed(None));
        assert_eq!(run(getex(Expiry::At(1_000)), Some((b"v", None))).unwrap(), (retimed(Some(1_000)), found.clone()));
        assert_eq!(run(getex(Expiry::At(3_000)), Some((b"v", None))).unwrap().0, retimed(Some(3_000)));
        assert_eq!(run(getex(Expiry::At(3_000)), None).unwrap(), (Change::Keep, Answer::Value(None)));
    }

    #[test]
    fn dump_reads_and_delete_if_takes_back_only_what_it_names() {
        let entry = |v: &str, at| Answer::Entry(Some((Bytes::from(v.to_string()), at)));
        assert_eq!(run(Update::Dump, Some((b"v", Some(5_000)))).unwrap(), (Change::Keep, entry("v", Some(5_000))));
        assert_eq!(run(Update::Dump, None).unwrap(), (Change::Keep, Answer::Entry(None)));
        let delete_if = |v: &str, at| Update::DeleteIf { value: Bytes::from(v.to_string()), expires_at: at };
        assert_eq!(run(delete_if("v", None), Some((b"v", None))).unwrap(), (Change::Delete, Answer::Integer(1)));
        assert_eq!(run(delete_if("v", None), Some((b"w", None))).unwrap(), (Change::Keep, Answer::Integer(0)));
        assert_eq!(run(delete_if("v", None), Some((b"v", Some(9)))).unwrap(), (Change::Keep, Answer::Integer(0)));
        assert_eq!(run(delete_if("v", Some(9)), Some((b"v", Some(9)))).unwrap().0, Change::Delete);
        assert_eq!(run(delete_if("v", None), None).unwrap(), (Change::Keep, Answer::Integer(0)));
    }
}
