use ringkv_core::Clock;

/// The production clock. The only place in the node that reads the system
/// time; everything else receives a `Clock`, so tests and the simulator can
/// drive time themselves.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

#[allow(clippy::disallowed_methods, reason = "the production clock: the one place that reads the system time")]
impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}
