//! Snapshots: taking them when the machine releases a cursor (ra's
//! `release_cursor`), compacting the log, and installing them on followers
//! in chunks (Raft §7).

use bytes::Bytes;

use crate::action::Action;
use crate::error::StepError;
use crate::machine::Machine;
use crate::message::{Message, SnapshotChunk, SnapshotResponse};
use crate::progress::ReplicationState;
use crate::raft::Raft;
use crate::types::{Configuration, LogIndex, ServerId, SnapshotMeta};

/// A snapshot being received, chunk by chunk.
pub(crate) struct IncomingSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

impl<M: Machine> Raft<M> {
    /// The configuration in force at `index` (the newest at or before it).
    fn config_at(&self, index: LogIndex) -> Configuration {
        self.configs
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or_else(|| self.snapshot_config.clone(), |(_, c)| c.clone())
    }

    /// The machine allowed a snapshot of its state as of `index` (the entry
    /// just applied). Snapshots closer than `snapshot_interval_entries_min`
    /// to the previous one are skipped.
    pub(crate) fn release_cursor(&mut self, index: LogIndex) {
        debug_assert_eq!(index, self.log.applied);
        if index < self.log.snapshot_index() + self.config.snapshot_interval_entries_min {
            return;
        }
        let Some(term) = self.log.term(index) else {
            return;
        };
        let data = Bytes::from(self.machine.snapshot());
        let meta = SnapshotMeta {
            index,
            term,
            config: self.config_at(index),
            machine_version: self.machine_version,
            size_bytes: data.len() as u64,
        };
        // Entries the leader appended but has not yet asked to write must be
        // written before the snapshot that follows them in the action list.
        self.write_unwritten();
        self.actions.push(Action::SaveSnapshot {
            meta: meta.clone(),
            data: data.clone(),
            keep_log_after: true,
        });
        self.compact_to(&meta);
        self.snapshot = Some((meta, data));
    }

    fn compact_to(&mut self, meta: &SnapshotMeta) {
        self.log.compact(meta.index, meta.term);
        self.snapshot_config = meta.config.clone();
        self.configs.retain(|(i, _)| *i > meta.index);
    }

    /// Leader: the follower needs entries that were compacted away.
    pub(crate) fn start_snapshot_transfer(&mut self, peer: ServerId) {
        self.wake();
        let Some((meta, _)) = &self.snapshot else {
            return;
        };
        let index = meta.index;
        if let Some(progress) = self.progress.get_mut(&peer) {
            progress.become_snapshot(index);
        }
        self.send_snapshot_chunk(peer);
    }

    pub(crate) fn send_snapshot_chunk(&mut self, peer: ServerId) {
        let Some((meta, data)) = &self.snapshot else {
            return;
        };
        let Some(progress) = self.progress.get_mut(&peer) else {
            return;
        };
        let ReplicationState::Snapshot { index, offset } = progress.state else {
            return;
        };
        if progress.waiting {
            return;
        }
        // A newer snapshot replaced the one being sent: start over with it.
        let offset = if index == meta.index { offset } else { 0 };
        progress.state = ReplicationState::Snapshot {
            index: meta.index,
            offset,
        };
        progress.waiting = true;
        let start = (offset as usize).min(data.len());
        let end = (start + self.config.snapshot_chunk_bytes).min(data.len());
        let chunk = SnapshotChunk {
            meta: meta.clone(),
            offset,
            data: data.slice(start..end),
            done: end == data.len(),
        };
        self.send(peer, self.term, Message::InstallSnapshot(chunk));
    }

    pub(crate) fn on_snapshot_response(&mut self, from: ServerId, response: SnapshotResponse) {
        let now = self.now_ms;
        let Some(progress) = self.heard_from(from) else {
            return;
        };
        progress.last_ack_ms = now;
        let ReplicationState::Snapshot { index: sending, .. } = progress.state else {
            if let SnapshotResponse::Installed { index } = response {
                progress.acknowledge(index, now);
            }
            return;
        };
        match response {
            SnapshotResponse::Installed { index } => {
                let advanced = progress.acknowledge(index, now);
                progress.become_replicate();
                self.after_acknowledgement(from, advanced);
            }
            SnapshotResponse::Chunk { index, next_offset }
            | SnapshotResponse::Retry { index, next_offset } => {
                let offset = if index == sending { next_offset } else { 0 };
                progress.state = ReplicationState::Snapshot {
                    index: sending,
                    offset,
                };
                progress.waiting = false;
                self.send_snapshot_chunk(from);
            }
        }
    }

    /// Follower: one chunk of the leader's snapshot. Chunks are accepted only
    /// in order; the last one is checked against the announced size, restored
    /// and made durable before the leader is told (a barrier action).
    pub(crate) fn on_snapshot_chunk(
        &mut self,
        from: ServerId,
        chunk: SnapshotChunk,
    ) -> Result<(), StepError> {
        self.note_leader_contact(from);
        let index = chunk.meta.index;
        if index > self.log.commit {
            // A snapshot we lack: the leader is active, the timer runs. (A
            // stale chunk of one we already hold does not count.)
            self.quiesced_leader_active();
        }
        let reply = |raft: &mut Self, response: SnapshotResponse| {
            raft.send(from, raft.term, Message::InstallSnapshotResponse(response));
        };
        if index <= self.log.commit {
            // We already hold everything the snapshot covers, committed.
            self.incoming_snapshot = None;
            self.leader_match = self.leader_match.max(index);
            reply(self, SnapshotResponse::Installed { index });
            return Ok(());
        }
        let malformed = |reason: String| StepError::MalformedSnapshot { from, reason };
        if chunk.offset + chunk.data.len() as u64 > chunk.meta.size_bytes {
            self.incoming_snapshot = None;
            reply(
                self,
                SnapshotResponse::Retry {
                    index,
                    next_offset: 0,
                },
            );
            return Err(malformed(format!(
                "chunk ends at {} past the snapshot's size {}",
                chunk.offset + chunk.data.len() as u64,
                chunk.meta.size_bytes
            )));
        }
        if chunk.offset == 0 {
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta: chunk.meta.clone(),
                data: Vec::with_capacity(chunk.meta.size_bytes.min(1 << 26) as usize),
            });
        }
        let next_offset = match &mut self.incoming_snapshot {
            Some(incoming)
                if incoming.meta == chunk.meta && incoming.data.len() as u64 == chunk.offset =>
            {
                incoming.data.extend_from_slice(&chunk.data);
                incoming.data.len() as u64
            }
            Some(incoming) if incoming.meta == chunk.meta => {
                let next_offset = incoming.data.len() as u64;
                reply(self, SnapshotResponse::Retry { index, next_offset });
                return Ok(());
            }
            _ => {
                reply(
                    self,
                    SnapshotResponse::Retry {
                        index,
                        next_offset: 0,
                    },
                );
                return Ok(());
            }
        };
        if !chunk.done {
            reply(self, SnapshotResponse::Chunk { index, next_offset });
            return Ok(());
        }
        let Some(IncomingSnapshot { meta, data }) = self.incoming_snapshot.take() else {
            return Ok(());
        };
        if data.len() as u64 != meta.size_bytes {
            reply(
                self,
                SnapshotResponse::Retry {
                    index,
                    next_offset: 0,
                },
            );
            return Err(malformed(format!(
                "snapshot ended at {} bytes, announced {}",
                data.len(),
                meta.size_bytes
            )));
        }
        let machine = match M::restore(&data) {
            Ok(machine) => machine,
            Err(error) => {
                reply(
                    self,
                    SnapshotResponse::Retry {
                        index,
                        next_offset: 0,
                    },
                );
                return Err(malformed(error.to_string()));
            }
        };
        self.install_snapshot(meta, Bytes::from(data), machine);
        reply(self, SnapshotResponse::Installed { index });
        Ok(())
    }

    /// Raft §7: if the log holds the snapshot's last entry, keep what follows
    /// it; otherwise discard the whole log. The machine becomes the snapshot.
    fn install_snapshot(&mut self, meta: SnapshotMeta, data: Bytes, machine: M) {
        let keep_log_after = self.log.term(meta.index) == Some(meta.term);
        self.write_unwritten();
        self.machine = machine;
        self.machine_version = meta.machine_version;
        self.halted_at = None;
        if keep_log_after {
            self.log.commit = meta.index;
            self.log.applied = meta.index;
            self.compact_to(&meta);
        } else {
            self.log.reset_to_snapshot(meta.index, meta.term);
            self.snapshot_config = meta.config.clone();
            self.configs.clear();
        }
        self.leader_match = self.leader_match.max(meta.index);
        self.acknowledged = self.acknowledged.max(meta.index);
        self.actions.push(Action::SaveSnapshot {
            meta: meta.clone(),
            data: data.clone(),
            keep_log_after,
        });
        self.snapshot = Some((meta, data));
        // Confirmed reads waiting for an index the snapshot covers can go.
        self.answer_ready_reads();
    }
}
