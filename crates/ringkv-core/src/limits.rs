use serde::{Deserialize, Serialize};

use crate::KvError;

/// Size limits on what a client may store. Checked by whichever node first
/// receives a request, before anything is written anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_key_bytes: 64 * 1024, max_value_bytes: 16 * 1024 * 1024 }
    }
}

impl Limits {
    /// The largest `max_key_bytes` any configuration may set.
    pub const KEY_CAP: usize = 1 << 20;
    /// The largest `max_value_bytes` any configuration may set. Recovery
    /// sizes its record limit from these caps, not from the configuration
    /// of the day, so that lowering a limit between restarts never turns
    /// records written under the old one into "corruption".
    pub const VALUE_CAP: usize = 512 << 20;

    pub fn check_key(&self, key: &[u8]) -> Result<(), KvError> {
        if key.is_empty() {
            return Err(KvError::EmptyKey);
        }
        if key.len() > self.max_key_bytes {
            return Err(KvError::KeyTooLarge { len: key.len(), max: self.max_key_bytes });
        }
        Ok(())
    }

    pub fn check_value(&self, value: &[u8]) -> Result<(), KvError> {
        if value.len() > self.max_value_bytes {
            return Err(KvError::ValueTooLarge { len: value.len(), max: self.max_value_bytes });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_inclusive_and_reject_empty_keys() {
        let limits = Limits { max_key_bytes: 3, max_value_bytes: 4 };
        assert_eq!(limits.check_key(b""), Err(KvError::EmptyKey));
        assert_eq!(limits.check_key(b"abc"), Ok(()));
        assert_eq!(limits.check_key(b"abcd"), Err(KvError::KeyTooLarge { len: 4, max: 3 }));
        assert_eq!(limits.check_value(b""), Ok(()));
        assert_eq!(limits.check_value(b"abcd"), Ok(()));
        assert_eq!(limits.check_value(b"abcde"), Err(KvError::ValueTooLarge { len: 5, max: 4 }));
    }
}
