//! Names of servers and clusters, and how they map onto the core's numeric ids.
//!
//! Users name a server as ra does: a name registered on a node
//! ([`ServerRef`]). The core needs a number per member that is distinct
//! within a cluster and that tells the runtime where to send messages, so
//! [`ServerRef::id`] packs the node id (high 32 bits) with a 32-bit hash of
//! the name (low 32 bits). Names are unique per node and a node refuses a
//! second name with the same hash ([`crate::StartError::NameCollision`]), so
//! the mapping is one-to-one on every node, and the node part routes a
//! message without any lookup.

use std::fmt;
use std::sync::Arc;

use chorus_raft::{ClusterId, NodeId, ServerId};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// A Raft server: a name registered on a node (ra's `{Name, Node}`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServerRef {
    pub name: Arc<str>,
    pub node: NodeId,
}

impl ServerRef {
    pub fn new(name: impl Into<Arc<str>>, node: NodeId) -> Self {
        ServerRef {
            name: name.into(),
            node,
        }
    }

    /// The core's id for this server.
    pub fn id(&self) -> ServerId {
        server_id(self.node, &self.name)
    }
}

impl fmt::Debug for ServerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@n{}", self.name, self.node.0)
    }
}

impl fmt::Display for ServerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Largest node id: it must fit the high half of a [`ServerId`].
pub const NODE_ID_MAX: u64 = u32::MAX as u64;

/// FNV-1a, 64 bits: stable across builds and platforms (unlike std's
/// SipHash keys), which ids written to disk and sent between nodes need.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The core's id of the server `name` on `node`.
pub fn server_id(node: NodeId, name: &str) -> ServerId {
    let hash = fnv1a64(name.as_bytes());
    // Fold 64 bits into 32 so every name byte affects the kept half.
    let folded = (hash ^ (hash >> 32)) & 0xffff_ffff;
    ServerId((node.0 << 32) | folded)
}

/// The node hosting the server with this id.
pub fn node_of(id: ServerId) -> NodeId {
    NodeId(id.0 >> 32)
}

/// The id carried in every message of the cluster called `name`.
pub fn cluster_id(name: &str) -> ClusterId {
    ClusterId(fnv1a64(name.as_bytes()))
}

/// ra's `new_uid/1`: the first (up to) 6 alphanumeric characters of
/// `source`, upper-cased, followed by 12 random characters, so data
/// directories and names stay readable and unique.
pub fn new_uid(source: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut uid: String = source
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(6)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let mut rng = rand::thread_rng();
    for _ in 0..12 {
        let pick = rng.next_u32() as usize % ALPHABET.len();
        uid.push(char::from(ALPHABET[pick]));
    }
    uid
}

/// A valid server or cluster name: 1..=255 bytes, printable, no '/' (names
/// appear in logs and metrics).
pub fn check_name(name: &str) -> Result<(), crate::StartError> {
    let valid =
        !name.is_empty() && name.len() <= 255 && name.chars().all(|c| !c.is_control() && c != '/');
    if valid {
        Ok(())
    } else {
        Err(crate::StartError::InvalidName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_packs_the_node_and_is_stable() {
        let a = ServerRef::new("orders", NodeId(7));
        assert_eq!(node_of(a.id()), NodeId(7));
        assert_eq!(a.id(), server_id(NodeId(7), "orders"));
        assert_ne!(a.id(), server_id(NodeId(7), "orders2"));
        assert_ne!(a.id(), server_id(NodeId(8), "orders"));
        // Pinned: ids are stored on disk and sent between nodes.
        assert_eq!(cluster_id("orders"), ClusterId(fnv1a64(b"orders")));
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn uid_keeps_source_prefix() {
        let uid = new_uid("my-queue!");
        assert!(uid.starts_with("MYQUEU"), "{uid}");
        assert_eq!(uid.len(), 18);
        assert_ne!(new_uid("x"), new_uid("x"));
    }
}
