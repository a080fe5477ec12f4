//! The recovery checkpoint (`data_dir/checkpoint`): a summary of every
//! server's segment files, written at every WAL rollover and on orderly
//! shutdown, so a restart neither replays WAL files already moved to
//! segments nor reads thousands of segment files to learn their ranges.
//!
//! It is a cache, never the only copy of anything: a missing or undecodable
//! checkpoint makes recovery scan everything instead, and a segment file
//! whose length differs from its summary is scanned.

use chorus_raft::{LogIndex, ServerId};
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::meta::{decode_framed, encode_framed};

/// One segment file as the checkpoint remembers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentSummary {
    pub seq: u64,
    pub epoch: u64,
    pub first: LogIndex,
    /// Physical last index in the file.
    pub last: LogIndex,
    pub len_bytes: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// WAL files with a smaller sequence number are entirely in segments.
    pub wal_seq: u64,
    /// Larger than every log epoch in use when written.
    pub next_epoch: u64,
    /// Larger than every segment sequence number in use when written.
    pub next_segment_seq: u64,
    pub servers: Vec<(ServerId, Vec<SegmentSummary>)>,
}

pub const CHECKPOINT_FILE_NAME: &str = "checkpoint";

pub fn encode_checkpoint(checkpoint: &Checkpoint) -> Vec<u8> {
    let body = postcard::to_allocvec(checkpoint).expect("postcard to Vec");
    encode_framed(codec::CHECKPOINT_MAGIC, &body)
}

pub fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint, DecodeError> {
    let body = decode_framed(codec::CHECKPOINT_MAGIC, bytes)?;
    postcard::from_bytes(body).map_err(|error| DecodeError::invalid(format!("checkpoint: {error}")))
}
