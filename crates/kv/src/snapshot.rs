//! The snapshot format (documented in `docs/formats.md`, "chorus-kv"):
//!
//! ```text
//! magic "CKVS" | version u16 LE (2; 1 is still read) | body length u64 LE | crc32c u32 LE of the body | postcard body
//! ```
//!
//! The body holds the replicated
//! state; the indexes derived from it (changes by revision, lease
//! deadlines, keys per lease) are rebuilt and every invariant is checked
//! on restore, so no bytes from disk or the network can make later code
//! panic.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::api::MemberInfo;
use crate::lease::{Lease, LeaseClock, Leases};
use crate::machine::{KvConfig, KvMachine, LEASE_TTL_MAX_S};
use crate::mvcc::{Store, Version};

pub(crate) const MAGIC: [u8; 4] = *b"CKVS";
pub(crate) const VERSION: u16 = 2;
/// Version 1 had no member directory; its bodies are read as such.
const VERSION_NO_MEMBERS: u16 = 1;
const HEADER_BYTES: usize = 18;

/// The body as written: borrowed from the machine, nothing cloned.
#[derive(Serialize)]
struct BodyRef<'a> {
    config: &'a KvConfig,
    revision: i64,
    compacted: i64,
    clock: LeaseClock,
    entries_since_release: u64,
    keys: &'a BTreeMap<Bytes, Vec<Version>>,
    leases: &'a BTreeMap<i64, Lease>,
    members: &'a BTreeMap<u64, MemberInfo>,
}

/// The body as read: the same fields in the same order.
#[derive(Deserialize)]
struct Body {
    config: KvConfig,
    revision: i64,
    compacted: i64,
    clock: LeaseClock,
    entries_since_release: u64,
    keys: BTreeMap<Bytes, Vec<Version>>,
    leases: BTreeMap<i64, Lease>,
    members: BTreeMap<u64, MemberInfo>,
}

/// A version 1 body: [`Body`] without the member directory.
#[derive(Deserialize)]
struct BodyV1 {
    config: KvConfig,
    revision: i64,
    compacted: i64,
    clock: LeaseClock,
    entries_since_release: u64,
    keys: BTreeMap<Bytes, Vec<Version>>,
    leases: BTreeMap<i64, Lease>,
}

impl From<BodyV1> for Body {
    fn from(v1: BodyV1) -> Self {
        Body {
            config: v1.config,
            revision: v1.revision,
            compacted: v1.compacted,
            clock: v1.clock,
            entries_since_release: v1.entries_since_release,
            keys: v1.keys,
            leases: v1.leases,
            members: BTreeMap::new(),
        }
    }
}

pub(crate) fn encode(machine: &KvMachine) -> Vec<u8> {
    let body = BodyRef {
        config: &machine.config,
        revision: machine.store.revision(),
        compacted: machine.store.compacted(),
        clock: machine.clock,
        entries_since_release: machine.entries_since_release,
        keys: machine.store.keys(),
        leases: machine.leases.by_id(),
        members: &machine.members,
    };
    frame(&body)
}

fn frame(body: &BodyRef) -> Vec<u8> {
    let body = postcard::to_allocvec(body)
        .expect("postcard encodes in-memory maps and sequences of known length");
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

pub(crate) fn decode(data: &[u8]) -> Result<KvMachine, String> {
    let Some((header, body)) = data.split_at_checked(HEADER_BYTES) else {
        return Err(format!(
            "kv snapshot incomplete: {} bytes, the header alone is {HEADER_BYTES}",
            data.len()
        ));
    };
    if header[..4] != MAGIC {
        return Err("not a kv snapshot (bad magic)".into());
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != VERSION && version != VERSION_NO_MEMBERS {
        return Err(format!(
            "kv snapshot version {version} is not supported (this code reads {VERSION})"
        ));
    }
    let mut length = [0u8; 8];
    length.copy_from_slice(&header[6..14]);
    let length = u64::from_le_bytes(length);
    if length > body.len() as u64 {
        return Err(format!(
            "kv snapshot incomplete: body of {length} bytes, {} present",
            body.len()
        ));
    }
    if length < body.len() as u64 {
        return Err(format!(
            "{} bytes after the kv snapshot body",
            body.len() as u64 - length
        ));
    }
    let stored = u32::from_le_bytes([header[14], header[15], header[16], header[17]]);
    if crc32c(body) != stored {
        return Err("kv snapshot checksum mismatch".into());
    }
    let (body, rest) = if version == VERSION_NO_MEMBERS {
        postcard::take_from_bytes::<BodyV1>(body).map(|(body, rest)| (Body::from(body), rest))
    } else {
        postcard::take_from_bytes::<Body>(body)
    }
    .map_err(|error| format!("kv snapshot body is invalid: {error}"))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the kv snapshot value", rest.len()));
    }
    build(body)
}

fn build(body: Body) -> Result<KvMachine, String> {
    if let Some(problem) = body.config.problem() {
        return Err(format!("kv snapshot config: {problem}"));
    }
    for (id, lease) in &body.leases {
        if *id == 0 || !(1..=LEASE_TTL_MAX_S).contains(&lease.ttl_s) {
            return Err(format!("lease {id} is invalid"));
        }
    }
    let mut leases = Leases::from_parts(body.leases);
    let store = Store::from_parts(body.keys, body.revision, body.compacted)?;
    for (key, versions) in store.keys() {
        let attached = versions
            .last()
            .and_then(|v| v.live.as_ref())
            .map_or(0, |live| live.lease);
        if attached != 0 {
            if !leases.contains(attached) {
                return Err(format!("a key is attached to missing lease {attached}"));
            }
            leases.attach(attached, key.clone());
        }
    }
    for (id, member) in &body.members {
        if *id != member.id {
            return Err(format!("member {} is filed under id {id}", member.id));
        }
    }
    Ok(KvMachine {
        members: body.members,
        config: body.config,
        store,
        leases,
        clock: body.clock,
        entries_since_release: body.entries_since_release,
    })
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of
/// every chorus format.
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82f6_3b78
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for byte in data {
        crc = TABLE[((crc ^ u32::from(*byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let good = encode(&KvMachine::default());
        assert!(decode(&good).is_ok());
        assert!(decode(b"").unwrap_err().contains("incomplete"));
        assert!(decode(&good[..good.len() - 1])
            .unwrap_err()
            .contains("incomplete"));
        let mut longer = good.clone();
        longer.push(0);
        assert!(decode(&longer)
            .unwrap_err()
            .contains("after the kv snapshot"));
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        assert!(decode(&bad_magic).unwrap_err().contains("magic"));
        let mut future = good.clone();
        future[4] = 9;
        assert!(decode(&future).unwrap_err().contains("version 9"));
        let mut flipped = good.clone();
        flipped[HEADER_BYTES] ^= 1;
        assert!(decode(&flipped).unwrap_err().contains("checksum"));
    }

    #[test]
    fn a_version_1_snapshot_without_members_is_still_read() {
        let mut machine = KvMachine::default();
        machine.members.clear();
        let v2 = encode(&machine);
        // Version 2's body is version 1's followed by the member map,
        // which postcard writes as one byte (its length, 0) when empty.
        let body = &v2[HEADER_BYTES..v2.len() - 1];
        let mut v1 = Vec::new();
        v1.extend_from_slice(&MAGIC);
        v1.extend_from_slice(&VERSION_NO_MEMBERS.to_le_bytes());
        v1.extend_from_slice(&(body.len() as u64).to_le_bytes());
        v1.extend_from_slice(&crc32c(body).to_le_bytes());
        v1.extend_from_slice(body);
        assert_eq!(decode(&v1).unwrap(), machine);
    }

    #[test]
    fn a_checksummed_but_inconsistent_body_is_refused() {
        let machine = KvMachine::default();
        // A revision below the compacted one, framed with a good checksum:
        // the framing is fine, the content is not.
        let bytes = frame(&BodyRef {
            config: &machine.config,
            revision: 1,
            compacted: 5,
            clock: machine.clock,
            entries_since_release: 0,
            keys: machine.store.keys(),
            leases: machine.leases.by_id(),
            members: &machine.members,
        });
        assert!(decode(&bytes).unwrap_err().contains("inconsistent"));
    }
}
