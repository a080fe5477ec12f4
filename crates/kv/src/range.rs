//! etcd's key-range convention, in one place.

use std::ops::Bound;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A set of keys as etcd names them with `key` and `range_end`: an empty
/// `range_end` is the single key `key`; `"\0"` is every key `>= key`;
/// otherwise `[key, range_end)`, empty when `range_end <= key`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyRange {
    pub key: Bytes,
    pub range_end: Bytes,
}

/// The `range_end` that makes `[prefix, range_end)` every key starting with
/// `prefix` (etcd's `GetPrefixRangeEnd`): the prefix with its last byte
/// below 0xff incremented and what follows dropped; `"\0"` (every key) when
/// there is no such byte.
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    match prefix.iter().rposition(|byte| *byte < 0xff) {
        Some(position) => {
            let mut end = prefix[..=position].to_vec();
            end[position] += 1;
            Bytes::from(end)
        }
        None => Bytes::from_static(b"\0"),
    }
}

impl KeyRange {
    pub fn new(key: impl Into<Bytes>, range_end: impl Into<Bytes>) -> Self {
        KeyRange {
            key: key.into(),
            range_end: range_end.into(),
        }
    }

    pub fn single(key: impl Into<Bytes>) -> Self {
        KeyRange::new(key, Bytes::new())
    }

    /// Every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        let key = prefix.into();
        let range_end = prefix_end(&key);
        KeyRange { key, range_end }
    }

    /// Every key.
    pub fn all() -> Self {
        KeyRange::new(Bytes::from_static(b"\0"), Bytes::from_static(b"\0"))
    }

    pub fn is_single(&self) -> bool {
        self.range_end.is_empty()
    }

    fn is_unbounded(&self) -> bool {
        self.range_end.as_ref() == b"\0"
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        if self.is_single() {
            key == self.key.as_ref()
        } else if self.is_unbounded() {
            key >= self.key.as_ref()
        } else {
            key >= self.key.as_ref() && key < self.range_end.as_ref()
        }
    }

    /// `(start, end)` bounds for an ordered map, `None` when the range is
    /// empty (a map's `range` panics on `start > end`, so never pass it
    /// such bounds).
    pub(crate) fn bounds(&self) -> Option<(&[u8], Bound<&[u8]>)> {
        let start = self.key.as_ref();
        if self.is_single() {
            return Some((start, Bound::Included(start)));
        }
        if self.is_unbounded() {
            return Some((start, Bound::Unbounded));
        }
        let end = self.range_end.as_ref();
        (start < end).then_some((start, Bound::Excluded(end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"abc"), Bytes::from_static(b"abd"));
        assert_eq!(prefix_end(b"a\xff\xff"), Bytes::from_static(b"b"));
        assert_eq!(prefix_end(b"\xff"), Bytes::from_static(b"\0"));
        assert_eq!(prefix_end(b""), Bytes::from_static(b"\0"));
    }

    #[test]
    fn contains_follows_etcd() {
        let single = KeyRange::single("a");
        assert!(single.contains(b"a") && !single.contains(b"ab"));
        let from = KeyRange::new("b", "\0");
        assert!(from.contains(b"b") && from.contains(b"zzz") && !from.contains(b"a"));
        let span = KeyRange::new("b", "d");
        assert!(span.contains(b"c") && !span.contains(b"d"));
        let backwards = KeyRange::new("d", "b");
        assert!(!backwards.contains(b"c") && backwards.bounds().is_none());
        let prefix = KeyRange::prefix("fo");
        assert!(prefix.contains(b"foo") && !prefix.contains(b"fp"));
        assert!(KeyRange::all().contains(b"\0") && KeyRange::all().contains(b"\xff"));
    }
}
