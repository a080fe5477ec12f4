//! A simulated disk for one server: what is durable, and the writes still in
//! flight that a crash may lose.
//!
//! It executes the core's persistence actions with their contract
//! (`chorus_raft::Action`): hard state and snapshots are barriers (durable at
//! once, and every earlier write is ordered before them); log writes are
//! queued and become durable at a later sync event. A crash keeps a random
//! prefix of the queued writes — what the OS happened to flush — and loses
//! the rest, which is what a write-ahead log recovers to.

use std::collections::VecDeque;

use bytes::Bytes;
use chorus_raft::{Configuration, Entry, HardState, LogIndex, Persisted, SnapshotMeta, Term};

#[derive(Debug, Default)]
pub struct Disk {
    hard_state: HardState,
    snapshot: Option<(SnapshotMeta, Bytes)>,
    /// Durable entries after the snapshot, contiguous.
    entries: Vec<Entry>,
    /// Log writes not yet synced, in order.
    queue: VecDeque<Vec<Entry>>,
    /// Index and term of the newest entry written (queued or durable).
    last_written: Option<(LogIndex, Term)>,
    initial_config: Configuration,
}

impl Disk {
    pub fn new(initial_config: Configuration) -> Self {
        Disk {
            initial_config,
            ..Disk::default()
        }
    }

    pub fn save_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// Queue a log write. Returns whether a sync needs scheduling.
    pub fn append(&mut self, entries: Vec<Entry>) -> bool {
        let was_idle = self.queue.is_empty();
        if let Some(last) = entries.last() {
            self.last_written = Some((last.index, last.term));
            self.queue.push_back(entries);
        }
        was_idle && !self.queue.is_empty()
    }

    pub fn save_snapshot(&mut self, meta: SnapshotMeta, data: Bytes, keep_log_after: bool) {
        // Earlier writes are ordered before the snapshot.
        self.sync();
        let index = meta.index;
        if keep_log_after {
            self.entries.retain(|e| e.index > index);
        } else {
            self.entries.clear();
        }
        if self.last_written.is_none_or(|(i, _)| i < index) || !keep_log_after {
            self.last_written = Some((index, meta.term));
        }
        self.snapshot = Some((meta, data));
    }

    /// Make every queued write durable. Returns the newest written entry,
    /// for the core's `log_durable`.
    pub fn sync(&mut self) -> Option<(LogIndex, Term)> {
        while let Some(write) = self.queue.pop_front() {
            self.apply(write);
        }
        self.last_written
    }

    fn apply(&mut self, write: Vec<Entry>) {
        let snapshot_index = self.snapshot.as_ref().map_or(0, |(m, _)| m.index);
        let write: Vec<Entry> = write
            .into_iter()
            .filter(|e| e.index > snapshot_index)
            .collect();
        let Some(first) = write.first() else { return };
        let next = snapshot_index + self.entries.len() as u64 + 1;
        assert!(
            first.index <= next,
            "simulated disk: write at {} leaves a gap after {}",
            first.index,
            next - 1
        );
        self.entries
            .truncate((first.index - snapshot_index - 1) as usize);
        self.entries.extend(write);
    }

    /// Power loss: the first `kept` queued writes reached the disk, the rest
    /// are gone.
    pub fn crash(&mut self, kept: usize) {
        for _ in 0..kept {
            if let Some(write) = self.queue.pop_front() {
                self.apply(write);
            }
        }
        self.queue.clear();
        self.last_written = self.entries.last().map(|e| (e.index, e.term));
    }

    pub fn queued_writes(&self) -> usize {
        self.queue.len()
    }

    /// What a restarting server recovers.
    pub fn recover(&self) -> Persisted {
        Persisted {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.clone(),
            initial_config: self.initial_config.clone(),
        }
    }
}
