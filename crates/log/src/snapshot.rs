//! Per-server snapshot file (`snapshot`): the newest durable snapshot.
//!
//! Format (see docs/formats.md): a 40-byte header `CSNP | version | flags |
//! epoch | meta_len | data_len | meta_crc | data_crc | header_crc`, then
//! the postcard-encoded [`SnapshotMeta`], then the machine's bytes. Written as
//! `snapshot.tmp`, fsynced, renamed over `snapshot`, directory fsynced.

use chorus_raft::SnapshotMeta;

use crate::codec::{self, Cursor, DecodeError};

pub const SNAPSHOT_HEADER_BYTES: usize = 40;
const FLAG_KEEP_LOG_AFTER: u16 = 1;

/// A snapshot's header and meta: what recovery needs without its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub meta: SnapshotMeta,
    /// The server's log epoch from this snapshot on.
    pub epoch: u64,
    pub keep_log_after: bool,
    pub data_len: u64,
    pub data_crc: u32,
}

impl SnapshotHeader {
    /// Offset of the data within the file.
    pub fn data_offset(&self) -> u64 {
        (SNAPSHOT_HEADER_BYTES + self.meta_len()) as u64
    }

    fn meta_len(&self) -> usize {
        postcard::to_allocvec(&self.meta)
            .expect("postcard to Vec")
            .len()
    }
}

pub fn encode_snapshot_file(
    meta: &SnapshotMeta,
    epoch: u64,
    keep_log_after: bool,
    data: &[u8],
) -> Vec<u8> {
    let meta_bytes = postcard::to_allocvec(meta).expect("postcard to Vec");
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + meta_bytes.len() + data.len());
    codec::put_magic_and_version(&mut out, codec::SNAPSHOT_MAGIC);
    codec::put_u16(
        &mut out,
        if keep_log_after {
            FLAG_KEEP_LOG_AFTER
        } else {
            0
        },
    );
    codec::put_u64(&mut out, epoch);
    codec::put_u32(&mut out, meta_bytes.len() as u32);
    codec::put_u64(&mut out, data.len() as u64);
    codec::put_u32(&mut out, crc32c::crc32c(&meta_bytes));
    codec::put_u32(&mut out, crc32c::crc32c(data));
    codec::put_crc_of(&mut out, 0);
    debug_assert_eq!(out.len(), SNAPSHOT_HEADER_BYTES);
    out.extend_from_slice(&meta_bytes);
    out.extend_from_slice(data);
    out
}

/// Decodes the header and meta at the start of a snapshot file (`bytes`
/// may stop anywhere after the meta).
pub fn decode_snapshot_header(bytes: &[u8]) -> Result<SnapshotHeader, DecodeError> {
    let mut cursor = Cursor::new(bytes);
    cursor.magic_and_version(codec::SNAPSHOT_MAGIC)?;
    let flags = cursor.u16()?;
    let epoch = cursor.u64()?;
    let meta_len = cursor.u32()? as usize;
    let data_len = cursor.u64()?;
    let meta_crc = cursor.u32()?;
    let data_crc = cursor.u32()?;
    let covered = &bytes[..cursor.position()];
    codec::check_crc(&mut cursor, covered)?;
    if flags & !FLAG_KEEP_LOG_AFTER != 0 {
        return Err(DecodeError::invalid(format!(
            "unknown snapshot flags {flags:#x}"
        )));
    }
    if meta_len > codec::RECORD_BYTES_MAX {
        return Err(DecodeError::invalid("snapshot meta length over the limit"));
    }
    let meta_bytes = cursor.take(meta_len)?;
    let computed = crc32c::crc32c(meta_bytes);
    if computed != meta_crc {
        return Err(DecodeError::Checksum {
            stored: meta_crc,
            computed,
        });
    }
    let meta: SnapshotMeta = postcard::from_bytes(meta_bytes)
        .map_err(|error| DecodeError::invalid(format!("snapshot meta: {error}")))?;
    if meta.size_bytes != data_len {
        return Err(DecodeError::invalid(
            "snapshot meta size disagrees with data length",
        ));
    }
    Ok(SnapshotHeader {
        meta,
        epoch,
        keep_log_after: flags & FLAG_KEEP_LOG_AFTER != 0,
        data_len,
        data_crc,
    })
}

/// Decodes a whole snapshot file: header and data, every checksum verified.
pub fn decode_snapshot_file(bytes: &[u8]) -> Result<(SnapshotHeader, &[u8]), DecodeError> {
    let header = decode_snapshot_header(bytes)?;
    let mut cursor = Cursor::new(bytes);
    cursor.take(header.data_offset() as usize)?;
    let data_len = usize::try_from(header.data_len)
        .map_err(|_| DecodeError::invalid("snapshot data length over usize"))?;
    let data = cursor.take(data_len)?;
    let computed = crc32c::crc32c(data);
    if computed != header.data_crc {
        return Err(DecodeError::Checksum {
            stored: header.data_crc,
            computed,
        });
    }
    if cursor.remaining() != 0 {
        return Err(DecodeError::invalid("trailing bytes after snapshot data"));
    }
    Ok((header, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_raft::{Configuration, ServerId};

    #[test]
    fn round_trip() {
        let meta = SnapshotMeta {
            index: 10,
            term: 2,
            config: Configuration::voters([ServerId(1)]),
            machine_version: 0,
            size_bytes: 5,
        };
        let bytes = encode_snapshot_file(&meta, 4, true, b"state");
        let (header, data) = decode_snapshot_file(&bytes).unwrap();
        assert_eq!(header.meta, meta);
        assert_eq!(header.epoch, 4);
        assert!(header.keep_log_after);
        assert_eq!(data, b"state");
        assert!(decode_snapshot_file(&bytes[..bytes.len() - 1])
            .unwrap_err()
            .is_incomplete());
    }
}
