//! Beethoven's node tracker: a table of `(service, node, status, last_change)`
//! rows with change subscriptions.
//!
//! The table is pure state (time is an argument); subscribers get a bounded
//! [`tokio::sync::broadcast`] receiver, usable synchronously (`try_next`,
//! `drain`) or from async code (`next().await`). A subscriber that falls more
//! than [`TrackerConfig::subscriber_events_max`] events behind gets a
//! [`TrackerEvent::Lagged`] instead of unbounded memory growth.
//!
//! Events are emitted only for real changes, so every subscriber sees each
//! transition exactly once. `alert_me` streams status changes of *other* nodes,
//! never the local one (Beethoven: "ignores changes to itself").

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::detector::NodeStatus;
use crate::events::{NodeUpdate, RowOp, StatusChange, TrackerEvent, TrackerRow};
use crate::site::NodeAddr;

/// Beethoven's default `until_exists` polling interval.
pub const READY_INTERVAL_DEFAULT: Duration = Duration::from_millis(15);
/// Beethoven's default `until_exists` timeout.
pub const READY_TIMEOUT_DEFAULT: Duration = Duration::from_millis(1_000);

/// Whether the tracker follows other nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only the local node is tracked; other nodes are refused.
    Standalone,
    /// Every node of the cluster is tracked.
    Clustered,
}

/// How much detail a subscriber wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionKind {
    /// The operation and the new row.
    Simple,
    /// Also the rows replaced.
    Detailed,
}

/// Tracker settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerConfig {
    /// Service name of the node rows maintained by `new_node` / `set_status`
    /// (Beethoven's `CoreServer` module).
    pub core_service: String,
    /// Events buffered per subscriber before it is reported as lagging.
    pub subscriber_events_max: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            core_service: "chorus.core".to_string(),
            subscriber_events_max: 1_024,
        }
    }
}

/// Tracker errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    /// Standalone trackers track the local node only.
    #[error("tracker is standalone: cannot track node {0}")]
    Standalone(NodeAddr),
    /// `until_ready` gave up.
    #[error("tracker not ready within {waited_ms} ms")]
    NotReady {
        /// How long it waited.
        waited_ms: u64,
    },
}

/// One change as broadcast to subscribers (always in detailed form; simple
/// subscribers drop `old_rows`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct RowChange {
    op: RowOp,
    row: TrackerRow,
    old_rows: Vec<TrackerRow>,
}

/// The node tracker.
#[derive(Debug)]
pub struct Tracker {
    mode: Mode,
    local_node: NodeAddr,
    config: TrackerConfig,
    /// Keyed by `(service, node)`: one row per node per service.
    rows: BTreeMap<(String, NodeAddr), TrackerRow>,
    changes: broadcast::Sender<RowChange>,
}

impl Tracker {
    /// A tracker whose local node is already online.
    pub fn new(mode: Mode, local_node: NodeAddr, config: TrackerConfig, now_ms: u64) -> Self {
        let (changes, _) = broadcast::channel(config.subscriber_events_max.max(1));
        let mut tracker = Tracker {
            mode,
            local_node: local_node.clone(),
            config,
            rows: BTreeMap::new(),
            changes,
        };
        let service = tracker.config.core_service.clone();
        tracker.write(service, local_node, NodeStatus::Online, now_ms);
        tracker
    }

    /// Standalone or clustered.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Switches mode. Going standalone deletes every other node's rows (with
    /// delete events).
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
        if mode == Mode::Standalone {
            let others: Vec<(String, NodeAddr)> = self
                .rows
                .keys()
                .filter(|(_, node)| *node != self.local_node)
                .cloned()
                .collect();
            for (service, node) in others {
                self.remove(&service, &node);
            }
        }
    }

    /// The local node.
    pub fn local_node(&self) -> &NodeAddr {
        &self.local_node
    }

    /// True once the table holds the local node's row (Beethoven's "table exists").
    pub fn is_ready(&self) -> bool {
        self.rows
            .contains_key(&(self.config.core_service.clone(), self.local_node.clone()))
    }

    fn write(&mut self, service: String, node: NodeAddr, status: NodeStatus, now_ms: u64) -> bool {
        let key = (service.clone(), node.clone());
        let old = self.rows.get(&key).cloned();
        if old.as_ref().is_some_and(|row| row.status == status) {
            return false;
        }
        let row = TrackerRow {
            service,
            node,
            status,
            last_change_ms: now_ms,
        };
        self.rows.insert(key, row.clone());
        // No subscriber is not an error: the change is simply unobserved.
        let _ = self.changes.send(RowChange {
            op: RowOp::Write,
            row,
            old_rows: old.into_iter().collect(),
        });
        true
    }

    /// Beethoven's `new_node`: adds `node` online, or marks it online if tracked.
    pub fn new_node(&mut self, node: NodeAddr, now_ms: u64) -> Result<(), TrackerError> {
        let service = self.config.core_service.clone();
        self.upsert(&service, node, NodeStatus::Online, now_ms)
    }

    /// Sets the status of `node`'s core-service row (adding it if new).
    pub fn set_status(
        &mut self,
        node: NodeAddr,
        status: NodeStatus,
        now_ms: u64,
    ) -> Result<(), TrackerError> {
        let service = self.config.core_service.clone();
        self.upsert(&service, node, status, now_ms)
    }

    /// Writes the row `(service, node)` with `status`. A write that changes
    /// nothing emits no event; a changed status updates `last_change_ms`.
    pub fn upsert(
        &mut self,
        service: &str,
        node: NodeAddr,
        status: NodeStatus,
        now_ms: u64,
    ) -> Result<(), TrackerError> {
        if self.mode == Mode::Standalone && node != self.local_node {
            return Err(TrackerError::Standalone(node));
        }
        self.write(service.to_string(), node, status, now_ms);
        Ok(())
    }

    /// Feeds a failure-detector transition (from the gossip core) into the table.
    /// Ignored in standalone mode and for changes without a known node.
    pub fn apply_status_change(&mut self, change: &StatusChange) {
        if let Some(node) = &change.node {
            if self.mode == Mode::Clustered {
                let service = self.config.core_service.clone();
                self.write(service, node.clone(), change.status, change.at_ms);
            }
        }
    }

    /// Deletes a row; returns it if it existed.
    pub fn remove(&mut self, service: &str, node: &NodeAddr) -> Option<TrackerRow> {
        let row = self.rows.remove(&(service.to_string(), node.clone()))?;
        let _ = self.changes.send(RowChange {
            op: RowOp::Delete,
            row: row.clone(),
            old_rows: vec![row.clone()],
        });
        Some(row)
    }

    /// Every row whose key (the service) is `service`.
    pub fn fetch(&self, service: &str) -> Vec<TrackerRow> {
        self.rows
            .iter()
            .filter(|((row_service, _), _)| row_service == service)
            .map(|(_, row)| row.clone())
            .collect()
    }

    /// The row `(service, node)`.
    pub fn get(&self, service: &str, node: &NodeAddr) -> Option<&TrackerRow> {
        self.rows.get(&(service.to_string(), node.clone()))
    }

    /// The core-service row of `node`.
    pub fn node_row(&self, node: &NodeAddr) -> Option<&TrackerRow> {
        self.get(&self.config.core_service.clone(), node)
    }

    /// Every row, ordered by `(service, node)`.
    pub fn fetch_all(&self) -> Vec<TrackerRow> {
        self.rows.values().cloned().collect()
    }

    /// Rows matching `predicate` (Beethoven's `dirty_select`).
    pub fn select(&self, predicate: impl Fn(&TrackerRow) -> bool) -> Vec<TrackerRow> {
        self.rows
            .values()
            .filter(|row| predicate(row))
            .cloned()
            .collect()
    }

    /// Subscribes to row events from now on.
    pub fn subscribe(&self, kind: SubscriptionKind) -> Subscription {
        Subscription {
            kind,
            receiver: self.changes.subscribe(),
        }
    }

    /// Status changes of other nodes' core-service rows, never the local node's.
    pub fn alert_me(&self) -> AlertStream {
        AlertStream {
            local_node: self.local_node.clone(),
            core_service: self.config.core_service.clone(),
            receiver: self.changes.subscribe(),
            missed: 0,
        }
    }
}

/// A row-event subscription.
#[derive(Debug)]
pub struct Subscription {
    kind: SubscriptionKind,
    receiver: broadcast::Receiver<RowChange>,
}

impl Subscription {
    fn shape(&self, change: RowChange) -> TrackerEvent {
        match self.kind {
            SubscriptionKind::Simple => TrackerEvent::Simple {
                op: change.op,
                row: change.row,
            },
            SubscriptionKind::Detailed => TrackerEvent::Detailed {
                op: change.op,
                row: change.row,
                old_rows: change.old_rows,
            },
        }
    }

    /// The next event if one is ready (never blocks).
    pub fn try_next(&mut self) -> Option<TrackerEvent> {
        match self.receiver.try_recv() {
            Ok(change) => Some(self.shape(change)),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                Some(TrackerEvent::Lagged { missed })
            }
            Err(_) => None,
        }
    }

    /// Every ready event.
    pub fn drain(&mut self) -> Vec<TrackerEvent> {
        std::iter::from_fn(|| self.try_next()).collect()
    }

    /// Waits for the next event; `None` once the tracker is dropped.
    pub async fn next(&mut self) -> Option<TrackerEvent> {
        match self.receiver.recv().await {
            Ok(change) => Some(self.shape(change)),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                Some(TrackerEvent::Lagged { missed })
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// `alert_me`: status changes of other nodes.
#[derive(Debug)]
pub struct AlertStream {
    local_node: NodeAddr,
    core_service: String,
    receiver: broadcast::Receiver<RowChange>,
    missed: u64,
}

impl AlertStream {
    fn alert(&self, change: &RowChange) -> Option<NodeUpdate> {
        if change.row.node == self.local_node || change.row.service != self.core_service {
            return None;
        }
        let old_status = change.old_rows.first().map(|row| row.status);
        let status = match change.op {
            RowOp::Write => change.row.status,
            // A tracked node that disappears is no longer online.
            RowOp::Delete => NodeStatus::Offline,
        };
        (old_status != Some(status)).then(|| NodeUpdate {
            node: change.row.node.clone(),
            status,
        })
    }

    /// The next alert if one is ready (never blocks).
    pub fn try_next(&mut self) -> Option<NodeUpdate> {
        loop {
            match self.receiver.try_recv() {
                Ok(change) => {
                    if let Some(update) = self.alert(&change) {
                        return Some(update);
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(missed)) => self.missed += missed,
                Err(_) => return None,
            }
        }
    }

    /// Every ready alert.
    pub fn drain(&mut self) -> Vec<NodeUpdate> {
        std::iter::from_fn(|| self.try_next()).collect()
    }

    /// Waits for the next alert; `None` once the tracker is dropped.
    pub async fn next(&mut self) -> Option<NodeUpdate> {
        loop {
            match self.receiver.recv().await {
                Ok(change) => {
                    if let Some(update) = self.alert(&change) {
                        return Some(update);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => self.missed += missed,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Alerts lost because this stream fell behind (then resynchronise with
    /// `fetch_all`).
    pub fn missed(&self) -> u64 {
        self.missed
    }
}

/// Beethoven's `until_exists`: polls `is_ready` every `interval` until it returns
/// true or `timeout` elapses. Uses tokio's clock, so tests can pause time.
pub async fn until_ready(
    mut is_ready: impl FnMut() -> bool,
    interval: Duration,
    timeout: Duration,
) -> Result<(), TrackerError> {
    let start = tokio::time::Instant::now();
    loop {
        if is_ready() {
            return Ok(());
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(TrackerError::NotReady {
                waited_ms: waited.as_millis() as u64,
            });
        }
        tokio::time::sleep(interval.min(timeout - waited)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeAddr {
        NodeAddr::new(name)
    }

    #[test]
    fn rows_fetch_and_select() {
        let mut tracker = Tracker::new(Mode::Clustered, node("a"), TrackerConfig::default(), 0);
        tracker.new_node(node("b"), 5).unwrap();
        tracker
            .set_status(node("b"), NodeStatus::Offline, 7)
            .unwrap();
        tracker
            .upsert("queue", node("a"), NodeStatus::Online, 8)
            .unwrap();
        assert_eq!(tracker.fetch_all().len(), 3);
        assert_eq!(tracker.fetch("chorus.core").len(), 2);
        let offline = tracker.select(|row| row.status == NodeStatus::Offline);
        assert_eq!(offline.len(), 1);
        assert_eq!(offline[0].node, node("b"));
        assert_eq!(offline[0].last_change_ms, 7);
        // new_node marks a known node online again.
        tracker.new_node(node("b"), 9).unwrap();
        assert_eq!(
            tracker.node_row(&node("b")).unwrap().status,
            NodeStatus::Online
        );
        assert_eq!(tracker.node_row(&node("b")).unwrap().last_change_ms, 9);
        assert!(tracker.is_ready());
    }

    #[test]
    fn standalone_refuses_other_nodes() {
        let mut tracker = Tracker::new(Mode::Standalone, node("a"), TrackerConfig::default(), 0);
        assert_eq!(
            tracker.new_node(node("b"), 1),
            Err(TrackerError::Standalone(node("b")))
        );
        tracker.set_mode(Mode::Clustered);
        tracker.new_node(node("b"), 1).unwrap();
        tracker.set_mode(Mode::Standalone);
        assert_eq!(tracker.fetch_all().len(), 1);
    }

    #[test]
    fn subscriptions_simple_and_detailed() {
        let mut tracker = Tracker::new(Mode::Clustered, node("a"), TrackerConfig::default(), 0);
        let mut simple = tracker.subscribe(SubscriptionKind::Simple);
        let mut detailed = tracker.subscribe(SubscriptionKind::Detailed);
        tracker.new_node(node("b"), 1).unwrap();
        tracker.new_node(node("b"), 2).unwrap(); // no change, no event
        tracker
            .set_status(node("b"), NodeStatus::Offline, 3)
            .unwrap();
        tracker.remove("chorus.core", &node("b"));
        let simple_events = simple.drain();
        assert_eq!(simple_events.len(), 3);
        assert!(matches!(
            &simple_events[0],
            TrackerEvent::Simple { op: RowOp::Write, row } if row.node == node("b")
        ));
        let detailed_events = detailed.drain();
        match &detailed_events[1] {
            TrackerEvent::Detailed { op, row, old_rows } => {
                assert_eq!(*op, RowOp::Write);
                assert_eq!(row.status, NodeStatus::Offline);
                assert_eq!(old_rows.len(), 1);
                assert_eq!(old_rows[0].status, NodeStatus::Online);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            detailed_events[2],
            TrackerEvent::Detailed {
                op: RowOp::Delete,
                ..
            }
        ));
    }

    #[test]
    fn alert_me_never_reports_the_local_node() {
        let mut tracker = Tracker::new(Mode::Clustered, node("a"), TrackerConfig::default(), 0);
        let mut alerts = tracker.alert_me();
        tracker
            .set_status(node("a"), NodeStatus::Offline, 1)
            .unwrap();
        tracker.new_node(node("b"), 1).unwrap();
        tracker
            .upsert("other", node("b"), NodeStatus::Offline, 1)
            .unwrap();
        tracker
            .set_status(node("b"), NodeStatus::Offline, 2)
            .unwrap();
        assert_eq!(
            alerts.drain(),
            vec![
                NodeUpdate {
                    node: node("b"),
                    status: NodeStatus::Online
                },
                NodeUpdate {
                    node: node("b"),
                    status: NodeStatus::Offline
                }
            ]
        );
    }

    #[test]
    fn slow_subscribers_lag_instead_of_growing() {
        let config = TrackerConfig {
            subscriber_events_max: 2,
            ..TrackerConfig::default()
        };
        let mut tracker = Tracker::new(Mode::Clustered, node("a"), config, 0);
        let mut subscription = tracker.subscribe(SubscriptionKind::Simple);
        for step in 0..6u64 {
            let status = if step % 2 == 0 {
                NodeStatus::Online
            } else {
                NodeStatus::Offline
            };
            tracker.set_status(node("b"), status, step).unwrap();
        }
        let events = subscription.drain();
        assert_eq!(events[0], TrackerEvent::Lagged { missed: 4 });
        assert_eq!(events.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn until_ready_polls_and_times_out() {
        let mut polls = 0;
        until_ready(
            || {
                polls += 1;
                polls == 3
            },
            READY_INTERVAL_DEFAULT,
            READY_TIMEOUT_DEFAULT,
        )
        .await
        .unwrap();
        assert_eq!(polls, 3);
        let error = until_ready(
            || false,
            Duration::from_millis(15),
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
        assert_eq!(error, TrackerError::NotReady { waited_ms: 100 });
    }

    #[tokio::test]
    async fn async_subscribers() {
        let mut tracker = Tracker::new(Mode::Clustered, node("a"), TrackerConfig::default(), 0);
        let mut alerts = tracker.alert_me();
        tracker.new_node(node("b"), 1).unwrap();
        assert_eq!(
            alerts.next().await,
            Some(NodeUpdate {
                node: node("b"),
                status: NodeStatus::Online
            })
        );
    }
}
