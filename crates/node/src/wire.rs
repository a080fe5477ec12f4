//! The node-to-node wire protocol (formats.md, "node protocol").
//!
//! A connection starts with a handshake: the dialer sends a [`Hello`]; the
//! acceptor checks it and answers with its own `Hello` and a status
//! (accepted, or refused with a reason). Then both sides exchange frames:
//!
//! ```text
//! body length  u32 LE   (at most FRAME_BODY_BYTES_MAX)
//! crc32c       u32 LE   of the body
//! body         postcard(Frame)
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use chorus_raft::{Envelope, NodeId};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::rpc::{NodeRequest, NodeResponse, RawEvent};

/// "CHND": chorus node protocol.
pub const HELLO_MAGIC: [u8; 4] = *b"CHND";
/// Version of the handshake and of [`Frame`]'s encoding.
pub const PROTOCOL_VERSION: u16 = 1;
/// magic + version + reserved + cluster token + node id.
pub const HELLO_BYTES: usize = 4 + 2 + 2 + 8 + 8;
/// Largest frame body: a snapshot chunk (1 MiB by default) or an append
/// batch (1 MiB by default) with generous headroom; anything larger is a
/// corrupt length, not a message.
pub const FRAME_BODY_BYTES_MAX: usize = 64 << 20;
/// Length + checksum.
pub const FRAME_HEADER_BYTES: usize = 8;
/// Longest refusal reason sent in a handshake answer.
pub const REFUSAL_BYTES_MAX: usize = 1024;

/// The first bytes each side sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub cluster_token: u64,
    pub node: NodeId,
}

impl Hello {
    pub fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut out = [0u8; HELLO_BYTES];
        out[..4].copy_from_slice(&HELLO_MAGIC);
        out[4..6].copy_from_slice(&self.version.to_le_bytes());
        // 6..8 reserved, zero.
        out[8..16].copy_from_slice(&self.cluster_token.to_le_bytes());
        out[16..24].copy_from_slice(&self.node.0.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8; HELLO_BYTES]) -> Result<Hello, WireError> {
        if bytes[..4] != HELLO_MAGIC {
            return Err(WireError::Invalid(format!(
                "not a chorus node (magic {:02x?})",
                &bytes[..4]
            )));
        }
        let mut buf = &bytes[4..];
        let version = buf.get_u16_le();
        let _reserved = buf.get_u16_le();
        let cluster_token = buf.get_u64_le();
        let node = NodeId(buf.get_u64_le());
        Ok(Hello {
            version,
            cluster_token,
            node,
        })
    }

    /// Why `self` (a peer's hello) must be refused by a node with `local`'s
    /// settings, if it must.
    pub fn refusal(&self, local: &Hello, expected_peer: Option<NodeId>) -> Option<String> {
        if self.version != PROTOCOL_VERSION {
            return Some(format!(
                "protocol version {} is not supported (this node speaks {})",
                self.version, PROTOCOL_VERSION
            ));
        }
        if self.cluster_token != local.cluster_token {
            return Some(format!(
                "foreign cluster: token {:#x}, this node belongs to {:#x}",
                self.cluster_token, local.cluster_token
            ));
        }
        if self.node == local.node {
            return Some(format!("node id n{} is this node's own id", self.node.0));
        }
        if let Some(expected) = expected_peer {
            if expected != self.node {
                return Some(format!(
                    "expected node n{} at this address, found n{}",
                    expected.0, self.node.0
                ));
            }
        }
        None
    }
}

/// Everything nodes send each other after the handshake.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Frame {
    /// Liveness: any frame counts as a sign of life; this one is sent when
    /// nothing else was.
    Ping,
    Raft(Envelope),
    Request {
        id: u64,
        request: NodeRequest,
    },
    Response {
        id: u64,
        response: NodeResponse,
    },
    /// A pipeline event for the caller stream with this number.
    Events {
        caller: u64,
        event: RawEvent,
    },
}

/// Bytes from a peer that cannot be a frame.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("invalid frame: {0}")]
    Invalid(String),
    #[error("frame of {0} bytes exceeds the {FRAME_BODY_BYTES_MAX}-byte limit")]
    TooLarge(usize),
    #[error("frame checksum mismatch")]
    Checksum,
}

/// Appends one encoded frame to `out`.
pub(crate) fn encode_frame(frame: &Frame, out: &mut BytesMut) -> Result<(), WireError> {
    let start = out.len();
    out.put_u64_le(0); // header, filled in below
    let body = postcard::to_extend(frame, BodyWriter(out))
        .map_err(|error| WireError::Invalid(error.to_string()))?;
    let out = body.0;
    let body_len = out.len() - start - FRAME_HEADER_BYTES;
    if body_len > FRAME_BODY_BYTES_MAX {
        out.truncate(start);
        return Err(WireError::TooLarge(body_len));
    }
    let crc = crc32c::crc32c(&out[start + FRAME_HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Lets postcard write straight into the connection's buffer.
struct BodyWriter<'a>(&'a mut BytesMut);

impl Extend<u8> for BodyWriter<'_> {
    fn extend<T: IntoIterator<Item = u8>>(&mut self, iter: T) {
        for byte in iter {
            self.0.put_u8(byte);
        }
    }
}

/// Takes one frame off the front of `buf`: `Ok(None)` when more bytes are
/// needed (incomplete), an error when the bytes cannot be a frame (invalid).
pub(crate) fn decode_frame(buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
    if buf.len() < FRAME_HEADER_BYTES {
        return Ok(None);
    }
    let body_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if body_len > FRAME_BODY_BYTES_MAX {
        return Err(WireError::TooLarge(body_len));
    }
    if buf.len() < FRAME_HEADER_BYTES + body_len {
        buf.reserve(FRAME_HEADER_BYTES + body_len - buf.len());
        return Ok(None);
    }
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    buf.advance(FRAME_HEADER_BYTES);
    let body: Bytes = buf.split_to(body_len).freeze();
    if crc32c::crc32c(&body) != crc {
        return Err(WireError::Checksum);
    }
    postcard::from_bytes(&body)
        .map(Some)
        .map_err(|error| WireError::Invalid(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_raft::{ClusterId, Message, ServerId};

    fn envelope() -> Envelope {
        Envelope {
            cluster: ClusterId(1),
            from: ServerId(2),
            to: ServerId(3),
            term: 4,
            message: Message::TimeoutNow,
        }
    }

    #[test]
    fn frames_round_trip_and_split_anywhere() {
        let mut encoded = BytesMut::new();
        encode_frame(&Frame::Raft(envelope()), &mut encoded).unwrap();
        encode_frame(&Frame::Ping, &mut encoded).unwrap();
        let all = encoded.freeze();
        for split in 0..all.len() {
            let mut buf = BytesMut::from(&all[..split]);
            let mut frames = Vec::new();
            while let Some(frame) = decode_frame(&mut buf).unwrap() {
                frames.push(frame);
            }
            buf.extend_from_slice(&all[split..]);
            while let Some(frame) = decode_frame(&mut buf).unwrap() {
                frames.push(frame);
            }
            assert_eq!(frames.len(), 2, "split at {split}");
            assert!(matches!(&frames[0], Frame::Raft(e) if *e == envelope()));
            assert!(matches!(frames[1], Frame::Ping));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn bad_bytes_are_typed_errors() {
        let mut encoded = BytesMut::new();
        encode_frame(&Frame::Raft(envelope()), &mut encoded).unwrap();
        let mut flipped = encoded.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert!(matches!(
            decode_frame(&mut flipped),
            Err(WireError::Checksum)
        ));
        let mut huge = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        huge.extend_from_slice(&[0; 4]);
        assert!(matches!(
            decode_frame(&mut huge),
            Err(WireError::TooLarge(_))
        ));
        // A valid checksum over garbage: invalid, not a panic.
        let garbage = [0xffu8; 16];
        let mut buf = BytesMut::new();
        buf.put_u32_le(garbage.len() as u32);
        buf.put_u32_le(crc32c::crc32c(&garbage));
        buf.extend_from_slice(&garbage);
        assert!(matches!(decode_frame(&mut buf), Err(WireError::Invalid(_))));
    }

    #[test]
    fn handshake_refuses_foreign_cluster_and_unknown_version() {
        let local = Hello {
            version: PROTOCOL_VERSION,
            cluster_token: 7,
            node: NodeId(1),
        };
        let peer = Hello {
            node: NodeId(2),
            ..local
        };
        let decoded = Hello::decode(&peer.encode()).unwrap();
        assert_eq!(decoded, peer);
        assert_eq!(decoded.refusal(&local, Some(NodeId(2))), None);
        let foreign = Hello {
            cluster_token: 8,
            ..peer
        };
        assert!(foreign
            .refusal(&local, None)
            .unwrap()
            .contains("foreign cluster"));
        let future = Hello { version: 9, ..peer };
        assert!(future.refusal(&local, None).unwrap().contains("version 9"));
        let mut bad = peer.encode();
        bad[0] = b'X';
        assert!(Hello::decode(&bad).is_err());
    }
}
