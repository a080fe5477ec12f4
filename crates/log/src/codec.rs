//! Byte-level building blocks shared by every file format: magic numbers,
//! the format version, little-endian cursors, checksummed records.
//!
//! Every decoder here takes untrusted bytes and returns data or a
//! [`DecodeError`]; none of them panics on bad input (fuzzed and
//! property-tested). "Incomplete" (the bytes stop early: a torn write) is kept
//! apart from "invalid" (the bytes are wrong), because recovery treats the two
//! differently at a WAL's tail.

use thiserror::Error;

/// Version of every chorus-log file format. Each file header carries it and
/// decoders refuse any other value.
pub const FORMAT_VERSION: u16 = 1;

pub const WAL_MAGIC: [u8; 4] = *b"CWAL";
pub const SEGMENT_MAGIC: [u8; 4] = *b"CSEG";
pub const META_MAGIC: [u8; 4] = *b"CMET";
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"CSNP";
pub const CHECKPOINT_MAGIC: [u8; 4] = *b"CCKP";
pub const CONFIG_MAGIC: [u8; 4] = *b"CCFG";

/// Largest record body accepted (64 MiB). A length field above it is garbage,
/// never an allocation request: it bounds what a corrupt length can make a
/// decoder allocate.
pub const RECORD_BYTES_MAX: usize = 64 << 20;

/// Bytes of a record frame header: `len u32 | crc32c u32`.
pub const RECORD_HEADER_BYTES: usize = 8;

/// Why bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The bytes end before the structure does (a torn or short write).
    #[error("incomplete: {needed} more bytes needed")]
    Incomplete { needed: usize },
    #[error("bad magic {found:02x?}, expected {expected:02x?}")]
    BadMagic { expected: [u8; 4], found: [u8; 4] },
    #[error("unsupported format version {found} (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion { found: u16 },
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    /// The bytes are complete but wrong.
    #[error("invalid: {reason}")]
    Invalid { reason: String },
}

impl DecodeError {
    pub fn invalid(reason: impl Into<String>) -> Self {
        DecodeError::Invalid {
            reason: reason.into(),
        }
    }

    pub fn is_incomplete(&self) -> bool {
        matches!(self, DecodeError::Incomplete { .. })
    }
}

/// A little-endian reader over untrusted bytes.
pub struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, position: 0 }
    }

    pub fn position(&self) -> usize {
        self.position
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Incomplete {
                needed: n - self.remaining(),
            });
        }
        let slice = &self.bytes[self.position..self.position + n];
        self.position += n;
        Ok(slice)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// Checks `magic | version` at the cursor.
    pub fn magic_and_version(&mut self, expected: [u8; 4]) -> Result<(), DecodeError> {
        let found: [u8; 4] = self.take(4)?.try_into().expect("4 bytes");
        if found != expected {
            return Err(DecodeError::BadMagic { expected, found });
        }
        let version = self.u16()?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion { found: version });
        }
        Ok(())
    }
}

pub fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub fn put_magic_and_version(out: &mut Vec<u8>, magic: [u8; 4]) {
    out.extend_from_slice(&magic);
    put_u16(out, FORMAT_VERSION);
}

/// Appends the crc32c of `out[start..]` (a header's own checksum).
pub fn put_crc_of(out: &mut Vec<u8>, start: usize) {
    let crc = crc32c::crc32c(&out[start..]);
    put_u32(out, crc);
}

/// Reads a crc32c and checks it against `covered`.
pub fn check_crc(cursor: &mut Cursor<'_>, covered: &[u8]) -> Result<(), DecodeError> {
    let stored = cursor.u32()?;
    let computed = crc32c::crc32c(covered);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    Ok(())
}

/// Starts a record frame in `out`; finish it with [`finish_record`] once the
/// body has been appended. Returns the frame's start.
pub fn begin_record(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    start
}

/// Fills in the frame header of the record begun at `start`: its body length
/// and, when `checksum` is set, the body's crc32c (0 otherwise).
pub fn finish_record(out: &mut [u8], start: usize, checksum: bool) {
    let body = &out[start + RECORD_HEADER_BYTES..];
    assert!(
        body.len() <= RECORD_BYTES_MAX,
        "record over RECORD_BYTES_MAX"
    );
    let crc = if checksum { crc32c::crc32c(body) } else { 0 };
    let len = body.len() as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes one record frame at the start of `bytes`: returns its body and the
/// bytes consumed (header + body).
pub fn decode_record(bytes: &[u8], verify_checksum: bool) -> Result<(&[u8], usize), DecodeError> {
    let mut cursor = Cursor::new(bytes);
    let len = cursor.u32()? as usize;
    let stored = cursor.u32()?;
    if len > RECORD_BYTES_MAX {
        return Err(DecodeError::invalid(format!(
            "record length {len} over the {RECORD_BYTES_MAX} byte limit"
        )));
    }
    let body = cursor.take(len)?;
    if verify_checksum {
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(DecodeError::Checksum { stored, computed });
        }
    }
    Ok((body, RECORD_HEADER_BYTES + len))
}

/// Encodes an entry with postcard (the core's serde derive).
pub fn encode_entry(out: &mut Vec<u8>, entry: &chorus_raft::Entry) {
    // Vec<u8> as the flavor never fails: the only error postcard can return
    // while serializing this type is running out of buffer.
    let encoded = postcard::to_extend(entry, std::mem::take(out)).expect("postcard to Vec");
    *out = encoded;
}

/// Decodes one postcard-encoded entry that must fill `bytes` exactly.
pub fn decode_entry(bytes: &[u8]) -> Result<chorus_raft::Entry, DecodeError> {
    let (entry, rest) = postcard::take_from_bytes::<chorus_raft::Entry>(bytes)
        .map_err(|error| DecodeError::invalid(format!("entry: {error}")))?;
    if !rest.is_empty() {
        return Err(DecodeError::invalid(format!(
            "entry: {} trailing bytes",
            rest.len()
        )));
    }
    Ok(entry)
}

/// Reads the leading `(index, term)` of a postcard-encoded entry without
/// decoding its payload (postcard writes the struct's fields in order, u64s
/// as LEB128 varints).
pub fn peek_entry_index_term(bytes: &[u8]) -> Result<(u64, u64), DecodeError> {
    let mut position = 0;
    let index = read_varint(bytes, &mut position)?;
    let term = read_varint(bytes, &mut position)?;
    Ok((index, term))
}

fn read_varint(bytes: &[u8], position: &mut usize) -> Result<u64, DecodeError> {
    let mut value: u64 = 0;
    for shift in (0..70).step_by(7) {
        let Some(&byte) = bytes.get(*position) else {
            return Err(DecodeError::invalid("entry: truncated varint"));
        };
        *position += 1;
        if shift == 63 && byte > 1 {
            return Err(DecodeError::invalid("entry: varint overflow"));
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::invalid("entry: varint too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chorus_raft::{Entry, Payload};

    #[test]
    fn record_round_trip_and_errors() {
        let mut out = Vec::new();
        let start = begin_record(&mut out);
        out.extend_from_slice(b"hello");
        finish_record(&mut out, start, true);
        assert_eq!(decode_record(&out, true).unwrap(), (&b"hello"[..], 13));
        assert!(decode_record(&out[..10], true).unwrap_err().is_incomplete());
        let mut bad = out.clone();
        bad[9] ^= 1;
        assert!(matches!(
            decode_record(&bad, true),
            Err(DecodeError::Checksum { .. })
        ));
        assert!(decode_record(&bad, false).is_ok());
    }

    #[test]
    fn peek_matches_full_decode() {
        for (index, term) in [(1, 1), (300, 2), (u64::MAX, u64::MAX - 1)] {
            let entry = Entry {
                index,
                term,
                time_ms: 7,
                payload: Payload::Command(Bytes::from_static(b"x")),
            };
            let mut out = Vec::new();
            encode_entry(&mut out, &entry);
            assert_eq!(peek_entry_index_term(&out).unwrap(), (index, term));
            assert_eq!(decode_entry(&out).unwrap(), entry);
        }
    }
}
