//! The core's view of the replicated log: a snapshot boundary followed by
//! the entries after it, held in memory.
//!
//! The core keeps every entry above the last snapshot in memory (payloads are
//! reference-counted `Bytes`, shared with the runtime's write path and the
//! messages that carry them). Machines bound it by releasing cursors
//! (snapshots); see "Deviations from Raft" in the crate docs.

use std::collections::VecDeque;

use crate::types::{Entry, LogIndex, Term};

#[derive(Debug, Default)]
pub(crate) struct RaftLog {
    /// Index and term of the last entry covered by the snapshot (0, 0 if none).
    snapshot_index: LogIndex,
    snapshot_term: Term,
    /// Entries `snapshot_index + 1 ..= last_index()`, contiguous.
    entries: VecDeque<Entry>,
    /// Highest index known committed. Invariant: `applied <= commit <= last_index()`
    /// except that commit may trail a freshly installed snapshot never.
    pub(crate) commit: LogIndex,
    /// Highest index applied to the machine. Invariant: `applied <= commit`.
    pub(crate) applied: LogIndex,
    /// Every entry up to here is durable on this server and is the entry the
    /// log holds now. Invariant: `durable <= last_index()`.
    pub(crate) durable: LogIndex,
}

/// The outcome of matching an AppendEntries against the log.
pub(crate) enum AppendOutcome {
    /// `prev_log_index` is beyond the log or holds another term.
    Mismatch,
    /// The log matches the leader's through `matched`; `written` holds the
    /// entries that had to be (re)written, first index truncating the rest.
    Matched {
        matched: LogIndex,
        written: Vec<Entry>,
    },
}

impl RaftLog {
    pub(crate) fn new(snapshot_index: LogIndex, snapshot_term: Term, entries: Vec<Entry>) -> Self {
        let last = snapshot_index + entries.len() as u64;
        RaftLog {
            snapshot_index,
            snapshot_term,
            entries: entries.into(),
            commit: snapshot_index,
            applied: snapshot_index,
            // Everything handed over at startup was recovered from disk.
            durable: last,
        }
    }

    pub(crate) fn snapshot_index(&self) -> LogIndex {
        self.snapshot_index
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.snapshot_index + self.entries.len() as u64
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot_term, |e| e.term)
    }

    /// The term of the entry at `index`, if the log still knows it.
    pub(crate) fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries.get((index - self.snapshot_index - 1) as usize)
    }

    /// Raft §5.4.1: a candidate's log is at least as up to date as ours if its
    /// last term is newer, or equal with an index at least as large.
    pub(crate) fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Entries from `from` on, at most `count_max` of them and about
    /// `bytes_max` bytes (at least one entry if any exists).
    pub(crate) fn slice(&self, from: LogIndex, count_max: usize, bytes_max: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        if from <= self.snapshot_index {
            return out;
        }
        let start = (from - self.snapshot_index - 1) as usize;
        let mut bytes = 0;
        for entry in self.entries.iter().skip(start).take(count_max) {
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(entry.clone());
        }
        out
    }

    /// Leader append: the entry must extend the log by exactly one index.
    pub(crate) fn push(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index() + 1,
            "leader appends must be contiguous"
        );
        self.entries.push_back(entry);
    }

    /// Remove every entry at `from` and after.
    pub(crate) fn truncate_from(&mut self, from: LogIndex) {
        assert!(
            from > self.commit,
            "Raft §5.3: committed entries are never truncated"
        );
        let keep = (from - self.snapshot_index - 1) as usize;
        self.entries.truncate(keep);
        self.durable = self.durable.min(from - 1);
    }

    /// Raft §5.3 (AppendEntries receiver rules 2–4): check the previous entry,
    /// skip entries already present, truncate at the first conflict and append
    /// the rest. The caller has validated that `entries` are contiguous from
    /// `prev_index + 1` and that no conflict reaches the commit index.
    pub(crate) fn try_append(
        &mut self,
        prev_index: LogIndex,
        prev_term: Term,
        mut entries: Vec<Entry>,
    ) -> AppendOutcome {
        if self.term(prev_index) != Some(prev_term) {
            return AppendOutcome::Mismatch;
        }
        let matched = prev_index + entries.len() as u64;
        let first_new = entries
            .iter()
            .position(|e| self.term(e.index) != Some(e.term));
        let written = match first_new {
            None => Vec::new(),
            Some(position) => {
                let from = entries[position].index;
                if from <= self.last_index() {
                    self.truncate_from(from);
                }
                let written = entries.split_off(position);
                self.entries.extend(written.iter().cloned());
                written
            }
        };
        AppendOutcome::Matched { matched, written }
    }

    /// The first index of the run of entries sharing `index`'s term, for the
    /// conflict hint (Raft §5.3's backtracking optimisation).
    pub(crate) fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let Some(term) = self.term(index) else {
            return index;
        };
        let mut first = index;
        while first > self.snapshot_index + 1 && self.term(first - 1) == Some(term) {
            first -= 1;
        }
        first
    }

    /// The last index holding `term`, if the log has any entry of it.
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        // Terms never decrease along the log, so scan back from the end.
        let mut index = self.last_index();
        while index > self.snapshot_index {
            let t = self.term(index)?;
            if t == term {
                return Some(index);
            }
            if t < term {
                return None;
            }
            index -= 1;
        }
        (self.snapshot_term == term && self.snapshot_index > 0).then_some(self.snapshot_index)
    }

    /// Drop entries up to `index` (now covered by a snapshot).
    pub(crate) fn compact(&mut self, index: LogIndex, term: Term) {
        assert!(index <= self.applied, "only applied entries are compacted");
        let drop = (index - self.snapshot_index).min(self.entries.len() as u64) as usize;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.durable = self.durable.max(index);
    }

    /// Replace the whole log by a snapshot boundary (Raft §7: the follower's
    /// log conflicts with or is shorter than the snapshot).
    pub(crate) fn reset_to_snapshot(&mut self, index: LogIndex, term: Term) {
        self.entries.clear();
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.commit = index;
        self.applied = index;
        self.durable = index;
    }

    pub(crate) fn entries(&self) -> impl DoubleEndedIterator<Item = &Entry> {
        self.entries.iter()
    }
}

/// How a run of entries fails to continue a log.
pub(crate) enum RunFault {
    /// The entry at this position does not carry the next index.
    Gap { index: LogIndex },
    /// The entry at `index` has a term older than its predecessor's.
    TermRegression { index: LogIndex, term: Term },
}

/// Check that `entries` continue a log ending at (`prev_index`,
/// `prev_term`): contiguous indexes, terms never decreasing (Raft §5.3's log
/// shape). Returns the last term.
pub(crate) fn check_run(
    prev_index: LogIndex,
    prev_term: Term,
    entries: &[Entry],
) -> Result<Term, RunFault> {
    let mut last_term = prev_term;
    for (expected, entry) in (prev_index + 1..).zip(entries) {
        if entry.index != expected {
            return Err(RunFault::Gap { index: expected });
        }
        if entry.term < last_term {
            return Err(RunFault::TermRegression {
                index: entry.index,
                term: entry.term,
            });
        }
        last_term = entry.term;
    }
    Ok(last_term)
}
