use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::KvError;

/// The instant, in wall-clock milliseconds since the Unix epoch, after which
/// the client that sent a request has given up on it, so nothing may start
/// applying it. An instant on the wall clock rather than a budget, because
/// the time a request spends in the socket buffers of a stopped or starved
/// process is invisible to that process's own clocks; the price is that
/// client and node clocks must agree to well within the client's timeout
/// (ARCHITECTURE.md, "Deadlines").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Deadline(pub u64);

impl Deadline {
    /// `budget` after `now_ms`.
    pub fn after(now_ms: u64, budget: Duration) -> Deadline {
        Deadline(now_ms.saturating_add(u64::try_from(budget.as_millis()).unwrap_or(u64::MAX)))
    }

    /// Refuses to start work once the deadline has passed at `now_ms`.
    pub fn check(self, now_ms: u64) -> Result<(), KvError> {
        match now_ms.checked_sub(self.0) {
            Some(late_ms) if late_ms > 0 => Err(KvError::DeadlineExpired { late_ms }),
            _ => Ok(()),
        }
    }
}

/// Parses durations as people write them: `500ms`, `10s`, `5m`, `2h`, `1d`,
/// or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (amount, unit) =
        number_and_unit(text).ok_or_else(|| format!("'{text}' is not a duration such as 500ms, 10s, 5m or 2h"))?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("unknown duration unit '{other}' in '{text}' (use ms, s, m, h or d)")),
    };
    amount.checked_mul(ms_per_unit).map(Duration::from_millis).ok_or_else(|| format!("duration '{text}' is too large"))
}

/// `"512mb"` → `(512, "mb")`: the leading number and what follows it,
/// trimmed, for the config's durations and sizes.
pub(crate) fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    Some((digits.parse().ok()?, unit.trim()))
}

/// The inverse of [`parse_duration`] for display, in the largest unit that
/// divides evenly.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_refuses_only_after_its_instant() {
        let deadline = Deadline::after(1_000, Duration::from_millis(500));
        assert_eq!(deadline, Deadline(1_500));
        assert_eq!(deadline.check(1_499), Ok(()));
        assert_eq!(deadline.check(1_500), Ok(()), "the instant itself is still in time");
        assert_eq!(deadline.check(1_750), Err(KvError::DeadlineExpired { late_ms: 250 }));
        assert_eq!(Deadline::after(u64::MAX - 1, Duration::MAX), Deadline(u64::MAX));
    }

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("10x").unwrap_err().contains("unknown duration unit"));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
