//! Events the crate emits, and the bounded queue that holds them until delivered.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::detector::NodeStatus;
use crate::site::{NodeAddr, SiteId};

/// A change of the membership state as perceived by the local site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipEvent {
    /// The site became an active member.
    Joined {
        /// The site.
        site: SiteId,
    },
    /// The site stopped being an active member (kicked, or it left).
    Kicked {
        /// The site.
        site: SiteId,
    },
    /// The site's node (address) changed; `None` when it was forgotten.
    HostChanged {
        /// The site.
        site: SiteId,
        /// Its new node.
        node: Option<NodeAddr>,
    },
    /// Everything about the site was dropped by a `forget` tombstone.
    Forgotten {
        /// The site.
        site: SiteId,
    },
    /// The queue was full and this many older events were dropped: a consumer
    /// must resynchronise from `members()` / `node_of_site()`.
    Overflow {
        /// Number of events lost.
        dropped: u64,
    },
}

/// A node changed status according to the local failure detector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusChange {
    /// The site whose status changed.
    pub site: SiteId,
    /// Its node, if known.
    pub node: Option<NodeAddr>,
    /// The new status.
    pub status: NodeStatus,
    /// phi when the change was observed.
    pub phi: f64,
    /// Local time of the observation in ms.
    pub at_ms: u64,
}

/// Whether a tracker row was written or deleted (Mnesia's `write | delete`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowOp {
    /// The row was inserted or updated.
    Write,
    /// The row was removed.
    Delete,
}

/// A row of the node tracker: `(service, node, status, last_change)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TrackerRow {
    /// The service (Beethoven's module) the row belongs to.
    pub service: String,
    /// The tracked node.
    pub node: NodeAddr,
    /// Its status.
    pub status: NodeStatus,
    /// Time in ms of the last status change.
    pub last_change_ms: u64,
}

/// A row event as a subscriber sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrackerEvent {
    /// `subscribe(simple)`: what happened and the new row.
    Simple {
        /// Write or delete.
        op: RowOp,
        /// The row written, or the row deleted.
        row: TrackerRow,
    },
    /// `subscribe(detailed)`: also the rows replaced.
    Detailed {
        /// Write or delete.
        op: RowOp,
        /// The row written, or the row deleted.
        row: TrackerRow,
        /// The rows with the same key before the change (empty for an insert).
        old_rows: Vec<TrackerRow>,
    },
    /// The subscriber fell behind and this many events were dropped.
    Lagged {
        /// Number of events lost.
        missed: u64,
    },
}

/// `alert_me`: another node changed status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeUpdate {
    /// The node.
    pub node: NodeAddr,
    /// Its new status.
    pub status: NodeStatus,
}

/// A bounded FIFO: when full, the oldest item is dropped and counted.
#[derive(Clone, Debug)]
pub struct BoundedQueue<T> {
    items: VecDeque<T>,
    capacity: usize,
    dropped: u64,
}

impl<T> BoundedQueue<T> {
    /// A queue holding at most `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        BoundedQueue {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    /// Appends, dropping the oldest item when full.
    pub fn push(&mut self, item: T) {
        if self.items.len() == self.capacity {
            self.items.pop_front();
            self.dropped += 1;
        }
        self.items.push_back(item);
    }

    /// Takes every queued item and the number dropped since the last drain.
    pub fn drain(&mut self) -> (Vec<T>, u64) {
        let dropped = std::mem::take(&mut self.dropped);
        (self.items.drain(..).collect(), dropped)
    }

    /// Number of queued items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_drops_oldest_and_counts() {
        let mut queue = BoundedQueue::new(2);
        queue.push(1);
        queue.push(2);
        queue.push(3);
        assert_eq!(queue.drain(), (vec![2, 3], 1));
        assert_eq!(queue.drain(), (vec![], 0));
    }
}
