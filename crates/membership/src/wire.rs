//! Gossip messages and their versioned, checksummed encoding.
//!
//! ```text
//! offset size field
//! 0      4    magic  b"CHGP"
//! 4      2    version u16 LE (= 1)
//! 6      4    payload length u32 LE (<= MESSAGE_BYTES_MAX)
//! 10     4    crc32c u32 LE of the payload
//! 14     n    payload: postcard(Envelope)
//! ```
//!
//! Decoding distinguishes "incomplete" (read more bytes) from "invalid" (drop the
//! connection), as STYLE.md asks.

use serde::{Deserialize, Serialize};

use crate::crdt::{Clock, Delta};
use crate::site::{ClusterId, NodeAddr, SiteId};

/// Magic number that starts every gossip message.
pub const WIRE_MAGIC: [u8; 4] = *b"CHGP";
/// The gossip protocol version this build speaks.
pub const WIRE_VERSION: u16 = 1;
/// Size of the fixed header in bytes.
pub const HEADER_BYTES: usize = 14;
/// Largest payload accepted, in bytes: a full-state join reply for
/// `sites_max` = 16,384 sites is about 3 MB; anything larger is refused before
/// allocating.
pub const MESSAGE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Every gossip message: who sends it, for which cluster, and what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's cluster: a receiver of another cluster refuses the message.
    pub cluster: ClusterId,
    /// The sending site.
    pub from_site: SiteId,
    /// The sending site's node, so the receiver can answer.
    pub from_node: NodeAddr,
    /// The message proper.
    pub body: Message,
}

/// One line of a digest: what the sender knows about `site`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestEntry {
    /// The site (as an op origin and as a heartbeat source).
    pub site: SiteId,
    /// Ops of this origin are known completely up to this clock.
    pub version: Clock,
    /// Highest heartbeat counter of this site seen.
    pub heartbeat: u64,
}

/// A site's heartbeat counter and whom it currently suspects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatEntry {
    /// The site that beats.
    pub site: SiteId,
    /// Incremented by the site itself once per gossip round.
    pub counter: u64,
    /// Sites that `site` reported offline when it produced this counter.
    pub suspects: Vec<SiteId>,
}

/// Why a peer refused a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// The receiver belongs to another cluster.
    ForeignCluster {
        /// The receiver's cluster.
        theirs: ClusterId,
    },
    /// The receiver is not a member, so it cannot admit anyone.
    NotAMember,
    /// The receiver's state is full.
    SitesLimit,
}

/// Gossip protocol messages (Scuttlebutt-style three-way exchange, plus join).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Round start: "this is what I know".
    Syn {
        /// The sender's digest.
        digest: Vec<DigestEntry>,
    },
    /// Answer to `Syn`: what the initiator lacks, and what I know.
    SynAck {
        /// The responder's digest.
        digest: Vec<DigestEntry>,
        /// Ops the initiator lacks.
        delta: Delta,
        /// Heartbeats newer than the initiator's.
        heartbeats: Vec<HeartbeatEntry>,
    },
    /// Closes the exchange: what the responder lacks.
    Ack {
        /// Ops the responder lacks.
        delta: Delta,
        /// Heartbeats newer than the responder's.
        heartbeats: Vec<HeartbeatEntry>,
    },
    /// A site asks a seed to admit it.
    JoinRequest,
    /// The seed admitted the sender: here is the full state.
    JoinAccepted {
        /// The whole membership state.
        delta: Delta,
    },
    /// The receiver refused the previous message.
    Rejected {
        /// Why.
        reason: RejectReason,
    },
}

impl Message {
    /// Short name for statistics and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Syn { .. } => "syn",
            Message::SynAck { .. } => "syn_ack",
            Message::Ack { .. } => "ack",
            Message::JoinRequest => "join_request",
            Message::JoinAccepted { .. } => "join_accepted",
            Message::Rejected { .. } => "rejected",
        }
    }
}

/// Why bytes are not a gossip message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// More bytes are needed (the total needed, when known).
    #[error("incomplete gossip message: need {needed_bytes} bytes")]
    Incomplete {
        /// Total bytes needed for the message.
        needed_bytes: usize,
    },
    /// Not a gossip message.
    #[error("not a chorus gossip message (bad magic)")]
    BadMagic,
    /// Another protocol version.
    #[error("gossip protocol version {found} is not supported (this build speaks {WIRE_VERSION})")]
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// Declared payload larger than [`MESSAGE_BYTES_MAX`].
    #[error("gossip message of {declared_bytes} bytes exceeds the {MESSAGE_BYTES_MAX}-byte limit")]
    TooLarge {
        /// Declared payload length.
        declared_bytes: usize,
    },
    /// Payload corrupted in transit.
    #[error("gossip message checksum mismatch")]
    Checksum,
    /// Payload does not decode.
    #[error("invalid gossip message: {0}")]
    Invalid(String),
    /// The message is too large to send.
    #[error("gossip message of {bytes} bytes exceeds the {MESSAGE_BYTES_MAX}-byte limit")]
    EncodeTooLarge {
        /// Encoded payload length.
        bytes: usize,
    },
}

/// Encodes an envelope with its header.
pub fn encode(envelope: &Envelope) -> Result<Vec<u8>, WireError> {
    let payload = postcard::to_allocvec(envelope).map_err(|e| WireError::Invalid(e.to_string()))?;
    if payload.len() > MESSAGE_BYTES_MAX {
        return Err(WireError::EncodeTooLarge {
            bytes: payload.len(),
        });
    }
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&WIRE_MAGIC);
    out.extend_from_slice(&WIRE_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes one message from the start of `bytes`; returns it and the number of
/// bytes consumed (so a stream can carry several).
pub fn decode(bytes: &[u8]) -> Result<(Envelope, usize), WireError> {
    if bytes.len() < 4 {
        if !WIRE_MAGIC.starts_with(bytes) {
            return Err(WireError::BadMagic);
        }
        return Err(WireError::Incomplete {
            needed_bytes: HEADER_BYTES,
        });
    }
    if bytes[0..4] != WIRE_MAGIC {
        return Err(WireError::BadMagic);
    }
    if bytes.len() < HEADER_BYTES {
        return Err(WireError::Incomplete {
            needed_bytes: HEADER_BYTES,
        });
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != WIRE_VERSION {
        return Err(WireError::UnsupportedVersion { found: version });
    }
    let length = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize;
    if length > MESSAGE_BYTES_MAX {
        return Err(WireError::TooLarge {
            declared_bytes: length,
        });
    }
    let total = HEADER_BYTES + length;
    if bytes.len() < total {
        return Err(WireError::Incomplete {
            needed_bytes: total,
        });
    }
    let crc = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]);
    let payload = &bytes[HEADER_BYTES..total];
    if crc32c::crc32c(payload) != crc {
        return Err(WireError::Checksum);
    }
    let envelope = postcard::from_bytes(payload).map_err(|e| WireError::Invalid(e.to_string()))?;
    Ok((envelope, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            cluster: ClusterId::new("c"),
            from_site: SiteId(7),
            from_node: NodeAddr::new("n7"),
            body: Message::Syn {
                digest: vec![DigestEntry {
                    site: SiteId(7),
                    version: 3,
                    heartbeat: 9,
                }],
            },
        }
    }

    #[test]
    fn round_trip_and_streaming() {
        let bytes = encode(&sample()).unwrap();
        let mut stream = bytes.clone();
        stream.extend_from_slice(&bytes);
        let (first, used) = decode(&stream).unwrap();
        assert_eq!(first, sample());
        assert_eq!(used, bytes.len());
        assert_eq!(decode(&stream[used..]).unwrap().0, sample());
    }

    #[test]
    fn typed_errors() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(
            decode(&bytes[..2]),
            Err(WireError::Incomplete {
                needed_bytes: HEADER_BYTES
            })
        );
        assert_eq!(
            decode(&bytes[..bytes.len() - 1]),
            Err(WireError::Incomplete {
                needed_bytes: bytes.len()
            })
        );
        assert_eq!(decode(b"HTTP/1.1 200"), Err(WireError::BadMagic));
        let mut bad = bytes.clone();
        bad[4] = 2;
        assert_eq!(
            decode(&bad),
            Err(WireError::UnsupportedVersion { found: 2 })
        );
        let mut bad = bytes.clone();
        bad[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&bad), Err(WireError::TooLarge { .. })));
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x55;
        assert_eq!(decode(&bad), Err(WireError::Checksum));
        // Valid header and checksum around garbage: invalid, not a panic.
        let garbage = [0xffu8; 8];
        let mut forged = Vec::new();
        forged.extend_from_slice(&WIRE_MAGIC);
        forged.extend_from_slice(&WIRE_VERSION.to_le_bytes());
        forged.extend_from_slice(&(garbage.len() as u32).to_le_bytes());
        forged.extend_from_slice(&crc32c::crc32c(&garbage).to_le_bytes());
        forged.extend_from_slice(&garbage);
        assert!(matches!(decode(&forged), Err(WireError::Invalid(_))));
    }
}
