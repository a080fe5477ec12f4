//! The key layout under a tenant and the encoding of every value
//! (docs/formats.md, "chorus-durable formats").
//!
//! Keys are `<tenant> 0x00 <suffix>`: the NUL (which a tenant may not
//! contain) keeps tenants apart even when one name is a prefix of another
//! (`app` and `app/q` never share a key). Queue positions are 16 lowercase
//! hex digits, so key order is sequence order.
//!
//! Values are `"CDUR"`, a version byte ([`FORMAT_VERSION`]), then the
//! postcard encoding of a [`Record`]. The user's state and messages are
//! postcard bytes inside the record.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::{Error, FormatProblem};

/// First bytes of every value chorus-durable writes.
pub const MAGIC: [u8; 4] = *b"CDUR";
/// The record encoding's version; others are refused with
/// [`FormatProblem::Version`].
pub const FORMAT_VERSION: u8 = 1;
/// Longest tenant or registry name, in bytes: keys stay far below the
/// store's request limit.
pub const NAME_BYTES_MAX: usize = 512;
/// Separates the tenant from the layout's suffix; forbidden in tenants.
const SEPARATOR: u8 = 0;

/// Whether a queued message is a call (with a waiter key) or a cast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemKind {
    Call,
    Cast,
}

/// A queued message: its kind and the postcard bytes of the user's
/// message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub kind: ItemKind,
    pub message: Vec<u8>,
}

/// What a caller's waiter key ends up holding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplyRecord {
    /// The postcard bytes of the handler's reply.
    Reply(Vec<u8>),
    /// The handler answered the call with `noreply`.
    NoReply,
    /// The handler stopped the server.
    Stopped { reason: String },
    /// The message was dead-lettered.
    DeadLetter { attempts: u32 },
    /// The handler's result could not be used (for instance `lock` from
    /// `handle_locked`).
    Failed(String),
}

/// The lock: the message being handled by `handle_locked`. Its fencing
/// token is the lock key's `create_revision`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// The message's queue position: a cleared lock requeues it there,
    /// ahead of everything queued after it.
    pub seq: u64,
    pub item: Item,
}

/// A dead-lettered message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadRecord {
    pub item: Item,
    pub attempts: u32,
}

/// A registry entry: the tenant a name refers to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub tenant: String,
    /// `std::any::type_name` of the server type, for operators.
    pub server_type: String,
}

/// Every value chorus-durable stores. Variant order is the format: append
/// new variants, never reorder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// `s`: the postcard bytes of the user's state.
    State(Vec<u8>),
    /// `n`: the next queue position to allocate.
    Counter(u64),
    /// `q/<seq>`: a queued message.
    Item(Item),
    /// `w/<seq>`: a call waiting for its reply.
    Waiting,
    /// `w/<seq>`: the call's answer, written in the commit txn.
    Reply(ReplyRecord),
    /// `l`: the lock.
    Lock(LockRecord),
    /// `a/<seq>`: times processing of the message started.
    Attempts(u32),
    /// `o/<seq>`: a consumer is processing the message (the key is on the
    /// consumer's lease).
    Owner,
    /// `d/<seq>`: a dead-lettered message.
    Dead(DeadRecord),
    /// A registry entry.
    Registration(Registration),
    /// `n` as an enqueue writes it: the next queue position and the
    /// enqueue's random tag, by which a publisher whose enqueue's outcome
    /// was unknown recognises its own write in the counter's history.
    Enqueued { next: u64, tag: u64 },
}

impl Record {
    fn kind(&self) -> &'static str {
        match self {
            Record::State(_) => "state",
            Record::Counter(_) | Record::Enqueued { .. } => "counter",
            Record::Item(_) => "item",
            Record::Waiting => "waiting",
            Record::Reply(_) => "reply",
            Record::Lock(_) => "lock",
            Record::Attempts(_) => "attempts",
            Record::Owner => "owner",
            Record::Dead(_) => "dead",
            Record::Registration(_) => "registration",
        }
    }
}

/// The magic, the version and the record.
pub fn encode(record: &Record) -> Result<Bytes, Error> {
    let body = postcard::to_allocvec(record).map_err(|error| Error::Encode {
        what: "a record",
        reason: error.to_string(),
    })?;
    let mut out = BytesMut::with_capacity(MAGIC.len() + 1 + body.len());
    out.put_slice(&MAGIC);
    out.put_u8(FORMAT_VERSION);
    out.put_slice(&body);
    Ok(out.freeze())
}

/// Decodes a value read at `key`; every problem is a typed error.
pub fn decode(key: &[u8], value: &[u8]) -> Result<Record, Error> {
    let corrupt = |problem| Error::Corrupt {
        key: show_key(key),
        problem,
    };
    if value.len() < MAGIC.len() + 1 {
        return Err(corrupt(FormatProblem::Truncated(value.len())));
    }
    let (magic, rest) = value.split_at(MAGIC.len());
    if magic != MAGIC {
        let mut found = [0u8; 4];
        found.copy_from_slice(magic);
        return Err(corrupt(FormatProblem::Magic(found)));
    }
    if rest[0] != FORMAT_VERSION {
        return Err(corrupt(FormatProblem::Version(rest[0])));
    }
    postcard::from_bytes(&rest[1..])
        .map_err(|error| corrupt(FormatProblem::Invalid(error.to_string())))
}

/// The error for a valid record of the wrong kind.
pub fn wrong(key: &[u8], expected: &'static str, found: &Record) -> Error {
    Error::Corrupt {
        key: show_key(key),
        problem: FormatProblem::WrongRecord {
            expected,
            found: found.kind(),
        },
    }
}

/// A key for messages: printable, the separator shown as `\0`.
pub fn show_key(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

/// Encodes a user value (state, message, reply) with postcard.
pub fn encode_user<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, Error> {
    postcard::to_allocvec(value).map_err(|error| Error::Encode {
        what,
        reason: error.to_string(),
    })
}

/// Decodes a user value found in the record at `key`.
pub fn decode_user<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(|error| Error::Corrupt {
        key: show_key(key),
        problem: FormatProblem::Invalid(error.to_string()),
    })
}

/// Checks a tenant or registry name.
pub fn check_name(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > NAME_BYTES_MAX {
        Some("longer than NAME_BYTES_MAX bytes")
    } else if name.as_bytes().contains(&SEPARATOR) {
        Some("contains a NUL byte")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The keys of one tenant.
#[derive(Clone, Debug)]
pub struct Keys {
    /// `<tenant> 0x00`: every key of the tenant starts with it.
    prefix: Bytes,
}

impl Keys {
    pub fn new(tenant: &str) -> Result<Keys, Error> {
        check_name(tenant)?;
        let mut prefix = BytesMut::with_capacity(tenant.len() + 1);
        prefix.put_slice(tenant.as_bytes());
        prefix.put_u8(SEPARATOR);
        Ok(Keys {
            prefix: prefix.freeze(),
        })
    }

    fn join(&self, suffix: &[u8]) -> Bytes {
        let mut key = BytesMut::with_capacity(self.prefix.len() + suffix.len());
        key.put_slice(&self.prefix);
        key.put_slice(suffix);
        key.freeze()
    }

    fn at(&self, family: &[u8], seq: u64) -> Bytes {
        self.join(format!("{}{seq:016x}", String::from_utf8_lossy(family)).as_bytes())
    }

    /// Every key of the tenant starts with this.
    pub fn prefix(&self) -> Bytes {
        self.prefix.clone()
    }
    pub fn state(&self) -> Bytes {
        self.join(b"s")
    }
    pub fn counter(&self) -> Bytes {
        self.join(b"n")
    }
    pub fn lock(&self) -> Bytes {
        self.join(b"l")
    }
    pub fn queue_prefix(&self) -> Bytes {
        self.join(b"q/")
    }
    pub fn item(&self, seq: u64) -> Bytes {
        self.at(b"q/", seq)
    }
    pub fn waiter_prefix(&self) -> Bytes {
        self.join(b"w/")
    }
    pub fn waiter(&self, seq: u64) -> Bytes {
        self.at(b"w/", seq)
    }
    pub fn attempts_prefix(&self) -> Bytes {
        self.join(b"a/")
    }
    pub fn attempts(&self, seq: u64) -> Bytes {
        self.at(b"a/", seq)
    }
    pub fn owner_prefix(&self) -> Bytes {
        self.join(b"o/")
    }
    pub fn owner(&self, seq: u64) -> Bytes {
        self.at(b"o/", seq)
    }
    pub fn dead_prefix(&self) -> Bytes {
        self.join(b"d/")
    }
    pub fn dead(&self, seq: u64) -> Bytes {
        self.at(b"d/", seq)
    }

    /// The queue position in a key of the family `family_prefix` (one of
    /// the `*_prefix` keys).
    pub fn seq_of(&self, family_prefix: &[u8], key: &[u8]) -> Result<u64, Error> {
        let bad = || Error::Corrupt {
            key: show_key(key),
            problem: FormatProblem::Key,
        };
        let digits = key.strip_prefix(family_prefix).ok_or_else(bad)?;
        if digits.len() != 16 {
            return Err(bad());
        }
        let text = std::str::from_utf8(digits).map_err(|_| bad())?;
        u64::from_str_radix(text, 16).map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_bytes_are_typed_errors() {
        let record = Record::Item(Item {
            kind: ItemKind::Call,
            message: vec![1, 2, 3],
        });
        let bytes = encode(&record).expect("encode");
        assert_eq!(&bytes[..4], b"CDUR");
        assert_eq!(bytes[4], FORMAT_VERSION);
        assert_eq!(decode(b"k", &bytes).expect("decode"), record);
        let problem = |value: &[u8]| match decode(b"k", value) {
            Err(Error::Corrupt { problem, .. }) => problem,
            other => panic!("expected Corrupt, got {other:?}"),
        };
        assert_eq!(problem(b"CDU"), FormatProblem::Truncated(3));
        assert_eq!(problem(b"XXXX\x01\x00"), FormatProblem::Magic(*b"XXXX"));
        assert_eq!(problem(b"CDUR\x09\x00"), FormatProblem::Version(9));
        assert!(matches!(
            problem(b"CDUR\x01\xff"),
            FormatProblem::Invalid(_)
        ));
        let mut cut = bytes.to_vec();
        cut.truncate(cut.len() - 1);
        assert!(matches!(problem(&cut), FormatProblem::Invalid(_)));
    }

    #[test]
    fn keys_keep_tenants_apart_and_sort_by_position() {
        let a = Keys::new("app").expect("tenant");
        let nested = Keys::new("app/q").expect("tenant");
        assert!(!nested.state().starts_with(&a.prefix()));
        assert!(a.item(2) < a.item(10));
        assert!(a.item(0xff) < a.item(0x100));
        assert_eq!(a.seq_of(&a.queue_prefix(), &a.item(42)).expect("seq"), 42);
        assert!(a.seq_of(&a.queue_prefix(), &a.state()).is_err());
        assert!(Keys::new("").is_err());
        assert!(Keys::new("a\0b").is_err());
    }
}
