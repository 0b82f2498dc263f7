//! Encoded sizes, for cutting batches.
//!
//! Every batch that crosses a process or reaches disk (transfer pages,
//! repair lists and pushes, hint deliveries, snapshot records) is cut by
//! what it will cost *encoded*, because that is what the receiver's frame
//! limit or the recovery's record limit measures. Counting entries instead
//! lets a batch of large values grow past any limit. A batch always takes
//! its first item, so a single entry (which the limits are sized to hold)
//! never stalls a transfer.

use serde::Serialize;

/// The postcard-encoded size of a value.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    // Measuring cannot fail where encoding succeeds; a value that cannot be
    // encoded is refused when it is, so counting it as huge is safe.
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default()).unwrap_or(usize::MAX / 4)
}

/// How many leading `items` to send together: as many as fit in `max_bytes`
/// encoded, and at least one (if there is one).
pub fn fitting<T: Serialize>(items: &[T], max_bytes: usize) -> usize {
    let mut used = 0usize;
    for (i, item) in items.iter().enumerate() {
        used = used.saturating_add(encoded_len(item));
        if used > max_bytes {
            return i.max(1);
        }
    }
    items.len()
}

/// Splits `items` into consecutive batches cut by [`fitting`].
pub fn batches<T: Serialize>(mut items: Vec<T>, max_bytes: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    while !items.is_empty() {
        let rest = items.split_off(fitting(&items, max_bytes));
        out.push(std::mem::replace(&mut items, rest));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_fit_their_budget_and_always_take_one_item() {
        let items: Vec<Vec<u8>> = [10usize, 10, 10, 50, 10].iter().map(|n| vec![0u8; *n]).collect();
        // Each vector costs its length plus a one-byte length prefix.
        assert_eq!(encoded_len(&items[0]), 11);
        assert_eq!(fitting(&items, 33), 3);
        assert_eq!(fitting(&items, 32), 2);
        assert_eq!(fitting(&items[3..], 5), 1, "an item larger than the budget goes alone");
        assert_eq!(fitting::<Vec<u8>>(&[], 5), 0);
        let sizes: Vec<usize> = batches(items, 33).iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 1, 1]);
    }
}
