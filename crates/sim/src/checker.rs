//! Raft's safety properties (Raft §5.2, Figure 3), each checked on its own
//! after every event:
//!
//! * election safety — at most one leader per term;
//! * leader completeness — a leader's log holds every committed entry;
//! * log matching — two logs holding an entry with the same index and term
//!   hold the same entries up to it;
//! * state machine safety — replicas that applied the same index hold the
//!   same state (compared through the machine's chained digest), and an
//!   entry once committed never changes.

use std::collections::BTreeMap;

use chorus_raft::{Entry, LogIndex, Raft, Role, ServerId, Term};

use crate::kv::{fnv, SimKv};

#[derive(Default)]
pub struct Checker {
    /// term → the leader seen in it.
    leaders: BTreeMap<Term, ServerId>,
    /// index → (term, payload digest) of every entry seen committed.
    committed: EntryDigests,
    /// applied index → machine digest after applying it.
    applied: BTreeMap<LogIndex, u64>,
    /// Per node: the commit index checked so far.
    checked_commit: BTreeMap<usize, LogIndex>,
}

fn payload_digest(entry: &Entry) -> u64 {
    let bytes = postcard::to_allocvec(&entry.payload).unwrap_or_default();
    fnv(fnv(0, &entry.term.to_le_bytes()), &bytes)
}

impl Checker {
    pub fn committed(&self) -> u64 {
        self.committed.len() as u64
    }

    pub fn leaders(&self) -> usize {
        self.leaders.len()
    }

    pub fn node_restarted(&mut self, node: usize, raft: Option<&Raft<SimKv>>) {
        let commit = raft.map_or(0, |r| r.status().commit_index);
        self.checked_commit.insert(node, commit);
    }

    pub fn check_node(&mut self, node: usize, raft: &Raft<SimKv>) -> Result<(), String> {
        let status = raft.status();
        // Election safety.
        if status.role == Role::Leader {
            match self.leaders.get(&status.term) {
                Some(leader) if *leader != status.id => {
                    return Err(format!(
                        "election safety: {} and {} both lead term {}",
                        leader, status.id, status.term
                    ));
                }
                Some(_) => {}
                None => {
                    self.leaders.insert(status.term, status.id);
                    self.check_leader_completeness(raft)?;
                }
            }
        }
        // Committed entries never change.
        let from = self.checked_commit.get(&node).copied().unwrap_or(0);
        if status.commit_index > from {
            let first = from.max(status.snapshot_index) + 1;
            for entry in raft.log_entries().skip_while(|e| e.index < first) {
                if entry.index > status.commit_index {
                    break;
                }
                let digest = payload_digest(entry);
                match self.committed.get(&entry.index) {
                    Some(&(term, seen)) if (term, seen) != (entry.term, digest) => {
                        return Err(format!(
                            "state machine safety: {} committed entry {} with term {}, but term {} was committed there before",
                            status.id, entry.index, entry.term, term
                        ));
                    }
                    Some(_) => {}
                    None => {
                        self.committed.insert(entry.index, (entry.term, digest));
                    }
                }
            }
            self.checked_commit.insert(node, status.commit_index);
        }
        // Replicas agree on the state at each applied index.
        let digest = raft.machine().digest();
        match self.applied.get(&status.applied_index) {
            Some(seen) if *seen != digest => {
                return Err(format!(
                    "state machine safety: {} applied through {} to a state that differs from another replica's",
                    status.id, status.applied_index
                ));
            }
            Some(_) => {}
            None => {
                self.applied.insert(status.applied_index, digest);
            }
        }
        Ok(())
    }

    /// Raft §5.4: a new leader's log contains every committed entry.
    fn check_leader_completeness(&self, raft: &Raft<SimKv>) -> Result<(), String> {
        let status = raft.status();
        let entries: BTreeMap<LogIndex, Term> =
            raft.log_entries().map(|e| (e.index, e.term)).collect();
        for (index, (term, _)) in self.committed.range(status.snapshot_index + 1..) {
            if entries.get(index) != Some(term) {
                return Err(format!(
                    "leader completeness: {} leads term {} without committed entry {} (term {})",
                    status.id, status.term, index, term
                ));
            }
        }
        Ok(())
    }
}

/// index → (term, payload digest) of one server's log.
type EntryDigests = BTreeMap<LogIndex, (Term, u64)>;

/// Raft §5.3 log matching, pairwise over the logs in memory.
pub fn check_log_matching(rafts: &[&Raft<SimKv>]) -> Result<(), String> {
    let logs: Vec<(ServerId, EntryDigests)> = rafts
        .iter()
        .map(|r| {
            (
                r.id(),
                r.log_entries()
                    .map(|e| (e.index, (e.term, payload_digest(e))))
                    .collect(),
            )
        })
        .collect();
    for (i, (a_id, a)) in logs.iter().enumerate() {
        for (b_id, b) in logs.iter().skip(i + 1) {
            // The newest index where both hold an entry of the same term.
            let anchor = a
                .iter()
                .rev()
                .find(|(index, (term, _))| b.get(index).is_some_and(|(t, _)| t == term))
                .map(|(index, _)| *index);
            let Some(anchor) = anchor else { continue };
            for (index, entry) in a.range(..=anchor) {
                if let Some(other) = b.get(index) {
                    if other != entry {
                        return Err(format!(
                            "log matching: {a_id} and {b_id} agree at {anchor} but differ at {index}"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}
