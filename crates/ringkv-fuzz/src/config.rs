//! The node's configuration file.

use std::path::Path;
use std::time::{Duration, Instant};

use ringkv_node::NodeConfig;

/// A config file, as `ringkv serve --config` reads it: TOML, then
/// validation. A configuration that validates must be one the node can run
/// with: its derived sizes computable, and every duration usable the way
/// the node uses it (as the period of a `tokio::time::interval`, which
/// panics on zero; added to `Instant::now()` and multiplied by small
/// factors, which panic on overflow). A valid configuration also writes
/// out as TOML that reads back equal.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let config = match NodeConfig::from_toml(text, Path::new("node.toml")) {
        Ok(config) => config,
        Err(e) => return assert!(!e.to_string().is_empty()),
    };
    if config.validate().is_err() {
        return;
    }
    let _ = (config.limits(), config.max_frame_bytes(), config.batch_bytes());
    let now = Instant::now();
    let periods = [config.sweep_interval, config.gossip_interval, config.hint_replay_interval, config.repair_interval];
    for period in periods {
        assert!(!period.is_zero(), "a validated configuration has a zero timer period");
    }
    let all = [
        config.sweep_interval,
        config.tombstone_grace,
        config.max_clock_drift,
        config.request_read_timeout,
        config.gossip_interval,
        config.dead_node_grace,
        config.replica_timeout,
        config.join_timeout,
        config.hint_replay_interval,
        config.repair_interval,
    ];
    for d in all {
        let far = d.checked_mul(8).and_then(|d| d.checked_add(Duration::from_secs(60)));
        assert!(far.and_then(|far| now.checked_add(far)).is_some(), "a validated duration {d:?} overflows a deadline");
    }
    let text = toml_text(&config);
    let again = NodeConfig::from_toml(&text, Path::new("node.toml")).expect("a written configuration reads back");
    // NaN is the one value not equal to itself, and validation refuses it.
    assert_eq!(again, config, "configuration round trip through TOML");
}

fn toml_text(config: &NodeConfig) -> String {
    toml::to_string(config).expect("a valid configuration writes as TOML")
}
