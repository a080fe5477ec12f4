//! Key layout and value encoding (docs/formats.md, "chorus-sessions
//! formats"). Everything read back from the store is decoded here, once:
//! bad bytes become [`SessionsError::Corrupt`], never a panic.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::{ConnectionId, SessionId, SessionsError};

/// Magic of a session value.
pub(crate) const SESSION_MAGIC: [u8; 4] = *b"CSES";
/// Magic of a connection value.
pub(crate) const CONNECTION_MAGIC: [u8; 4] = *b"CCON";
/// Magic of a cluster state document value.
pub(crate) const STATE_MAGIC: [u8; 4] = *b"CSTA";
/// The one value format this version writes and reads.
pub(crate) const FORMAT_VERSION: u8 = 1;
/// magic (4) + version (1) + crc32c of the body (4).
const HEADER_BYTES: usize = 9;

/// The keys of one sessions namespace (a prefix of the store).
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// `<prefix>s/`: every session.
    pub(crate) fn sessions(&self) -> Bytes {
        Bytes::from(format!("{}s/", self.prefix))
    }

    pub(crate) fn session(&self, id: SessionId) -> Bytes {
        Bytes::from(format!("{}s/{id}", self.prefix))
    }

    /// `<prefix>c/<session>/`: the connections of one session, so they
    /// are read with one range and deleted with one delete_range inside
    /// the session's own txn.
    pub(crate) fn connections(&self, session: SessionId) -> Bytes {
        Bytes::from(format!("{}c/{session}/", self.prefix))
    }

    pub(crate) fn connection(&self, session: SessionId, id: ConnectionId) -> Bytes {
        Bytes::from(format!("{}c/{session}/{id}", self.prefix))
    }

    pub(crate) fn state(&self, id: &str) -> Bytes {
        Bytes::from(format!("{}st/{id}", self.prefix))
    }

    /// The cleaner election key: exists while a node holds the cleaner
    /// role, attached to that node's lease.
    pub(crate) fn cleaner(&self) -> Bytes {
        Bytes::from(format!("{}cleaner", self.prefix))
    }

    /// The session id at the end of a session key.
    pub(crate) fn session_id_of(&self, key: &[u8]) -> Result<SessionId, SessionsError> {
        let text = std::str::from_utf8(key).map_err(|_| corrupt(key, "key is not UTF-8"))?;
        let id = text
            .strip_prefix(&self.prefix)
            .and_then(|rest| rest.strip_prefix("s/"))
            .ok_or_else(|| corrupt(key, "not a session key"))?;
        id.parse()
            .map_err(|_| corrupt(key, "session key does not end in a UUID"))
    }

    /// The connection id at the end of a connection key.
    pub(crate) fn connection_id_of(
        &self,
        session: SessionId,
        key: &[u8],
    ) -> Result<ConnectionId, SessionsError> {
        let text = std::str::from_utf8(key).map_err(|_| corrupt(key, "key is not UTF-8"))?;
        let start = format!("{}c/{session}/", self.prefix);
        let id = text
            .strip_prefix(&start)
            .ok_or_else(|| corrupt(key, "not a connection key of this session"))?;
        id.parse()
            .map_err(|_| corrupt(key, "connection key does not end in a UUID"))
    }
}

pub(crate) fn corrupt(key: &[u8], reason: impl Into<String>) -> SessionsError {
    SessionsError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.into(),
    }
}

/// A session's stored fields (the id is in the key; the fence token is
/// the key's create_revision, kept by the store).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionBody {
    pub(crate) valid_to_ms: u64,
    pub(crate) owner: Bytes,
}

/// A connection's stored fields (ids are in the key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConnectionBody {
    pub(crate) data: Bytes,
}

/// `magic | version | crc32c(body) LE | body`.
pub(crate) fn frame(magic: [u8; 4], body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_BYTES + body.len());
    out.put_slice(&magic);
    out.put_u8(FORMAT_VERSION);
    out.put_u32_le(crc32c::crc32c(body));
    out.put_slice(body);
    out.freeze()
}

/// The body of a framed value, checked.
pub(crate) fn unframe(magic: [u8; 4], key: &[u8], value: &Bytes) -> Result<Bytes, SessionsError> {
    if value.len() < HEADER_BYTES {
        return Err(corrupt(
            key,
            format!("{} bytes, shorter than the header", value.len()),
        ));
    }
    if value[..4] != magic {
        return Err(corrupt(
            key,
            format!(
                "magic {:?}, expected {:?}",
                String::from_utf8_lossy(&value[..4]),
                String::from_utf8_lossy(&magic)
            ),
        ));
    }
    if value[4] != FORMAT_VERSION {
        return Err(corrupt(
            key,
            format!(
                "unknown format version {} (this build reads {FORMAT_VERSION})",
                value[4]
            ),
        ));
    }
    let stored = u32::from_le_bytes([value[5], value[6], value[7], value[8]]);
    let body = value.slice(HEADER_BYTES..);
    if crc32c::crc32c(&body) != stored {
        return Err(corrupt(key, "checksum mismatch"));
    }
    Ok(body)
}

pub(crate) fn encode_session(body: &SessionBody) -> Bytes {
    // Serialising plain integers and bytes to a Vec cannot fail.
    let bytes = postcard::to_allocvec(body).expect("postcard encodes a session body");
    frame(SESSION_MAGIC, &bytes)
}

pub(crate) fn decode_session(key: &[u8], value: &Bytes) -> Result<SessionBody, SessionsError> {
    let body = unframe(SESSION_MAGIC, key, value)?;
    postcard::from_bytes(&body).map_err(|error| corrupt(key, format!("session body: {error}")))
}

pub(crate) fn encode_connection(body: &ConnectionBody) -> Bytes {
    let bytes = postcard::to_allocvec(body).expect("postcard encodes a connection body");
    frame(CONNECTION_MAGIC, &bytes)
}

pub(crate) fn decode_connection(
    key: &[u8],
    value: &Bytes,
) -> Result<ConnectionBody, SessionsError> {
    let body = unframe(CONNECTION_MAGIC, key, value)?;
    postcard::from_bytes(&body).map_err(|error| corrupt(key, format!("connection body: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_round_trips_and_bad_bytes_are_typed_errors() {
        let body = SessionBody {
            valid_to_ms: 1_234,
            owner: Bytes::from_static(b"owner"),
        };
        let value = encode_session(&body);
        assert_eq!(decode_session(b"k", &value), Ok(body));
        // Every truncation and every single-byte flip is refused.
        for cut in 0..value.len() {
            assert!(
                decode_session(b"k", &value.slice(..cut)).is_err(),
                "cut {cut}"
            );
        }
        for at in 0..value.len() {
            let mut flipped = value.to_vec();
            flipped[at] ^= 0x40;
            let result = decode_session(b"k", &Bytes::from(flipped));
            assert!(
                matches!(result, Err(SessionsError::Corrupt { .. })),
                "flip {at}"
            );
        }
        // A connection is not a session.
        let connection = encode_connection(&ConnectionBody { data: Bytes::new() });
        assert!(decode_session(b"k", &connection).is_err());
    }

    #[test]
    fn ids_are_read_back_from_keys() {
        let keys = Keys::new("p/");
        let session = SessionId::random();
        let connection = ConnectionId::random();
        assert_eq!(keys.session_id_of(&keys.session(session)), Ok(session));
        assert_eq!(
            keys.connection_id_of(session, &keys.connection(session, connection)),
            Ok(connection)
        );
        assert!(keys.session_id_of(b"p/s/not-a-uuid").is_err());
        assert!(keys.session_id_of(&[0xff, 0xfe]).is_err());
    }
}
