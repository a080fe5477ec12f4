//! Per-server metadata: current term, vote, last applied index and log
//! epoch (file `meta`), and the server's creation-time configuration (file
//! `config`).
//!
//! `meta` holds two fixed-size slots after its header. An update writes the
//! slot *not* holding the newest state, with a higher sequence number, and
//! fsyncs: one write and one fdatasync, no rename. A torn update fails its
//! slot's crc and recovery reads the other slot (the state before the update,
//! which is what the caller must assume since its fsync never returned).

use bytes::Bytes;
use chorus_raft::{Configuration, HardState, LogIndex, ServerId};
use serde::{Deserialize, Serialize};

use crate::codec::{self, Cursor, DecodeError};

/// Bytes before the first slot.
pub const META_HEADER_BYTES: usize = 16;
/// Bytes of one slot (41 used, the rest zero).
pub const META_SLOT_BYTES: usize = 64;
/// Total size of a `meta` file.
pub const META_FILE_BYTES: usize = META_HEADER_BYTES + 2 * META_SLOT_BYTES;

/// What a `meta` slot stores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetaState {
    /// Incremented on every update; the valid slot with the larger one wins.
    pub seq: u64,
    pub hard_state: HardState,
    pub last_applied: LogIndex,
    /// The log epoch the server was created with.
    pub epoch: u64,
}

fn encode_slot(state: &MetaState) -> [u8; META_SLOT_BYTES] {
    let mut out = Vec::with_capacity(META_SLOT_BYTES);
    codec::put_u64(&mut out, state.seq);
    codec::put_u64(&mut out, state.hard_state.term);
    match state.hard_state.voted_for {
        Some(server) => {
            out.push(1);
            codec::put_u64(&mut out, server.0);
        }
        None => {
            out.push(0);
            codec::put_u64(&mut out, 0);
        }
    }
    codec::put_u64(&mut out, state.last_applied);
    codec::put_u64(&mut out, state.epoch);
    codec::put_crc_of(&mut out, 0);
    out.resize(META_SLOT_BYTES, 0);
    out.try_into().expect("exactly one slot")
}

fn decode_slot(bytes: &[u8]) -> Result<MetaState, DecodeError> {
    let mut cursor = Cursor::new(bytes);
    let seq = cursor.u64()?;
    let term = cursor.u64()?;
    let voted_flag = cursor.u8()?;
    let voted = cursor.u64()?;
    let last_applied = cursor.u64()?;
    let epoch = cursor.u64()?;
    let covered = &bytes[..cursor.position()];
    codec::check_crc(&mut cursor, covered)?;
    let voted_for = match voted_flag {
        0 => None,
        1 => Some(ServerId(voted)),
        other => return Err(DecodeError::invalid(format!("meta: vote flag {other}"))),
    };
    Ok(MetaState {
        seq,
        hard_state: HardState { term, voted_for },
        last_applied,
        epoch,
    })
}

/// A whole new `meta` file holding `state` in slot 0.
pub fn encode_meta_file(state: &MetaState) -> Vec<u8> {
    let mut out = Vec::with_capacity(META_FILE_BYTES);
    codec::put_magic_and_version(&mut out, codec::META_MAGIC);
    codec::put_u16(&mut out, 0);
    codec::put_crc_of(&mut out, 0);
    out.resize(META_HEADER_BYTES, 0);
    out.extend_from_slice(&encode_slot(state));
    out.extend_from_slice(&[0u8; META_SLOT_BYTES]);
    out
}

/// The offset and bytes that store `state` over a file whose newest slot is
/// `current_slot` (the other slot is written).
pub fn encode_meta_update(state: &MetaState, current_slot: usize) -> (u64, [u8; META_SLOT_BYTES]) {
    let slot = 1 - current_slot;
    (
        (META_HEADER_BYTES + slot * META_SLOT_BYTES) as u64,
        encode_slot(state),
    )
}

/// Decodes a `meta` file: the newest valid slot and its number.
pub fn decode_meta_file(bytes: &[u8]) -> Result<(MetaState, usize), DecodeError> {
    let mut cursor = Cursor::new(bytes);
    cursor.magic_and_version(codec::META_MAGIC)?;
    let flags = cursor.u16()?;
    let covered = &bytes[..cursor.position()];
    codec::check_crc(&mut cursor, covered)?;
    if flags != 0 {
        return Err(DecodeError::invalid(format!(
            "unknown meta flags {flags:#x}"
        )));
    }
    if bytes.len() < META_FILE_BYTES {
        return Err(DecodeError::Incomplete {
            needed: META_FILE_BYTES - bytes.len(),
        });
    }
    let mut best: Option<(MetaState, usize)> = None;
    let mut last_error = None;
    for slot in 0..2 {
        let start = META_HEADER_BYTES + slot * META_SLOT_BYTES;
        match decode_slot(&bytes[start..start + META_SLOT_BYTES]) {
            Ok(state) if best.is_none_or(|(b, _)| state.seq > b.seq) => best = Some((state, slot)),
            Ok(_) => {}
            Err(error) => last_error = Some(error),
        }
    }
    best.ok_or_else(|| last_error.expect("no slot decoded and no error"))
}

/// What the `config` file stores: given at server creation, never changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerConfigFile {
    /// The membership the server starts with (ra's initial members); goes
    /// into [`chorus_raft::Persisted::initial_config`].
    pub initial_config: Configuration,
    /// Opaque bytes for the runtime (machine name and version, cluster
    /// name, anything it needs to restart the server).
    pub server_config: Bytes,
}

/// Bytes of the header of files framed by [`encode_framed`].
pub const FRAMED_HEADER_BYTES: usize = 20;

/// A small file: `magic | version | flags | body_len | body_crc |
/// header_crc | body`. Used by `config` and the checkpoint.
pub fn encode_framed(magic: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAMED_HEADER_BYTES + body.len());
    codec::put_magic_and_version(&mut out, magic);
    codec::put_u16(&mut out, 0);
    codec::put_u32(&mut out, body.len() as u32);
    codec::put_u32(&mut out, crc32c::crc32c(body));
    codec::put_crc_of(&mut out, 0);
    out.extend_from_slice(body);
    out
}

/// Decodes a file framed by [`encode_framed`]; returns its body.
pub fn decode_framed(magic: [u8; 4], bytes: &[u8]) -> Result<&[u8], DecodeError> {
    let mut cursor = Cursor::new(bytes);
    cursor.magic_and_version(magic)?;
    let flags = cursor.u16()?;
    let body_len = cursor.u32()? as usize;
    let body_crc = cursor.u32()?;
    let covered = &bytes[..cursor.position()];
    codec::check_crc(&mut cursor, covered)?;
    if flags != 0 {
        return Err(DecodeError::invalid(format!("unknown flags {flags:#x}")));
    }
    let body = cursor.take(body_len)?;
    let computed = crc32c::crc32c(body);
    if computed != body_crc {
        return Err(DecodeError::Checksum {
            stored: body_crc,
            computed,
        });
    }
    if cursor.remaining() != 0 {
        return Err(DecodeError::invalid("trailing bytes after the body"));
    }
    Ok(body)
}

pub fn encode_config_file(config: &ServerConfigFile) -> Vec<u8> {
    let body = postcard::to_allocvec(config).expect("postcard to Vec");
    encode_framed(codec::CONFIG_MAGIC, &body)
}

pub fn decode_config_file(bytes: &[u8]) -> Result<ServerConfigFile, DecodeError> {
    let body = decode_framed(codec::CONFIG_MAGIC, bytes)?;
    postcard::from_bytes(body).map_err(|error| DecodeError::invalid(format!("config: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_slot_update_keeps_the_previous_state() {
        let first = MetaState {
            seq: 1,
            hard_state: HardState {
                term: 3,
                voted_for: Some(ServerId(2)),
            },
            last_applied: 0,
            epoch: 7,
        };
        let mut file = encode_meta_file(&first);
        assert_eq!(decode_meta_file(&file).unwrap(), (first, 0));
        let second = MetaState {
            seq: 2,
            hard_state: HardState {
                term: 4,
                voted_for: None,
            },
            ..first
        };
        let (offset, slot) = encode_meta_update(&second, 0);
        let offset = offset as usize;
        // Torn: only half the slot reached the disk.
        file[offset..offset + 20].copy_from_slice(&slot[..20]);
        assert_eq!(decode_meta_file(&file).unwrap(), (first, 0));
        file[offset..offset + META_SLOT_BYTES].copy_from_slice(&slot);
        assert_eq!(decode_meta_file(&file).unwrap(), (second, 1));
    }
}
