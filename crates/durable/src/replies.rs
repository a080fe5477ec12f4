//! Replies to calls: one watch per handle on the waiter keys, shared by
//! every call the handle has in flight.
//!
//! A call registers its position once its enqueue committed (at revision
//! `R`, the txn that also put its waiter key) and waits. The watch task
//! takes the waiter keys' changes in revision order and hands each reply
//! (or the deletion that means the server was killed) to the call
//! registered for it.
//!
//! # Nothing falls between registering and watching
//!
//! `seen` is the last revision the task has handed out, and a call
//! registers under the same mutex the task hands out under. A reply is
//! written after `R`. If `seen <= R` when the call registers, its reply has
//! not been handed out yet, so the task will hand it to the call. If
//! `seen > R`, the call reads its key once: that read is linearizable, so
//! it is at a revision `>= seen` and sees any reply up to `seen`; the task
//! hands it any later one. When the watch ends and cannot resume where it
//! stopped (the store compacted those revisions, or refused the watch),
//! the task starts again from the store's current revision `C` and tells
//! every registered call to read again: their reads are at `>= C`, the new
//! watch delivers everything after `C`.
//!
//! # Why not a watch per call
//!
//! A watch opened from `R + 1` is exact, but etcd serves a watch created
//! at a revision it has already passed from a resync loop that runs every
//! 100 ms, so under any other writes each call waited for that loop. One
//! opened "from now" needs a read after it: a round trip per call. The
//! shared watch costs neither, and the read above is needed only when the
//! task got ahead of a call's registration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use chorus_backend::{Event, EventKind, KvBackend, RangeRequest, WatchRequest};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::Error;
use crate::format::{decode, wrong, Keys, Record, ReplyRecord};
use crate::ops;

/// What the watch task hands a waiting call.
#[derive(Debug)]
pub(crate) enum Delivery {
    Reply(ReplyRecord),
    /// The waiter key was deleted: the server was killed.
    Killed,
    /// The task cannot vouch for what happened to the key (its watch
    /// started again, or the key held something other than a reply): read
    /// the key.
    ReadAgain,
}

/// The watch task's state, shared with the calls.
#[derive(Default)]
struct State {
    /// The calls waiting, by position: the registration's ticket and
    /// where its delivery goes.
    waiting: HashMap<u64, (u64, oneshot::Sender<Delivery>)>,
    /// Tickets tell a call's registrations apart (it registers again after
    /// [`Delivery::ReadAgain`]), so leaving an old one keeps the new.
    tickets: u64,
    /// The last revision handed out; `None` while no task runs and while
    /// a task looks up the revision it starts from.
    seen: Option<i64>,
    task: Option<JoinHandle<()>>,
}

/// The replies of one handle's calls.
pub(crate) struct Replies<B> {
    state: Arc<Mutex<State>>,
    backend: B,
    keys: Keys,
}

/// A call's place in the waiting list; leaving it (the call returned or
/// timed out) takes the place back.
pub(crate) struct Registration {
    state: Arc<Mutex<State>>,
    seq: u64,
    ticket: u64,
    /// Whether the call must read its key (see the module docs).
    pub(crate) read_first: bool,
    pub(crate) delivery: oneshot::Receiver<Delivery>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        if state.waiting.get(&self.seq).map(|(ticket, _)| *ticket) == Some(self.ticket) {
            state.waiting.remove(&self.seq);
        }
    }
}

/// The state is never left half-changed under the lock, so a poisoned
/// lock (a panic elsewhere while holding it) is still consistent.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<B: KvBackend> Replies<B> {
    pub(crate) fn new(backend: B, keys: Keys) -> Replies<B> {
        Replies {
            state: Arc::default(),
            backend,
            keys,
        }
    }

    /// Registers call `seq`, whose enqueue committed at `revision`;
    /// `None` asks for a read whatever the task has seen (after a
    /// [`Delivery::ReadAgain`]). Starts the watch task if none runs.
    pub(crate) fn register(&self, seq: u64, revision: Option<i64>) -> Registration {
        let (sender, delivery) = oneshot::channel();
        let mut state = lock(&self.state);
        let read_first = if state.task.is_none() {
            // From `revision` on, nothing of this call's can have passed.
            // Without one the task starts from the store's revision once
            // it has read it, and tells every call waiting by then
            // (this one too) to read again.
            state.seen = revision;
            state.task = Some(tokio::spawn(run(
                Arc::clone(&self.state),
                self.backend.clone(),
                self.keys.clone(),
                revision,
            )));
            revision.is_none()
        } else {
            match (state.seen, revision) {
                (Some(seen), Some(revision)) => seen > revision,
                // The task's start is not known yet (it will tell this call
                // to read again), or the caller asked for a read.
                _ => true,
            }
        };
        state.tickets += 1;
        let ticket = state.tickets;
        state.waiting.insert(seq, (ticket, sender));
        Registration {
            state: Arc::clone(&self.state),
            seq,
            ticket,
            read_first,
            delivery,
        }
    }
}

impl<B> Drop for Replies<B> {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.state).task.take() {
            task.abort();
        }
    }
}

/// The watch task: hands out the changes of the waiter keys after
/// `start` (after the store's current revision without one).
async fn run<B: KvBackend>(state: Arc<Mutex<State>>, backend: B, keys: Keys, start: Option<i64>) {
    let prefix = keys.waiter_prefix();
    let mut seen = match start {
        Some(start) => start,
        None => match start_from_now(&state, &backend, &prefix).await {
            Some(now) => now,
            None => return,
        },
    };
    let mut wait = ops::BACKOFF_MIN;
    loop {
        let request = WatchRequest::prefix(prefix.clone()).from_revision(seen + 1);
        let resumable = match backend.watch(request).await {
            Ok(mut watch) => loop {
                match watch.next().await {
                    Some(Ok(events)) => {
                        wait = ops::BACKOFF_MIN;
                        seen = hand_out(&state, &keys, &prefix, events);
                    }
                    Some(Err(error)) => break error.is_transient(),
                    // The watch ended without a word (the store closed it):
                    // resume it.
                    None => break true,
                }
            },
            Err(error) => error.is_transient(),
        };
        if !resumable {
            // Compacted past `seen`, or refused: start again from now.
            seen = match start_from_now(&state, &backend, &prefix).await {
                Some(now) => now,
                None => return,
            };
        }
        wait = ops::backoff(wait).await;
    }
}

/// Reads the store's current revision, makes it the task's start and
/// tells every waiting call to read again. `None` (the task must end) if
/// the store cannot be read: the task is then marked gone, and the calls
/// told to read again start another.
async fn start_from_now<B: KvBackend>(
    state: &Mutex<State>,
    backend: &B,
    prefix: &Bytes,
) -> Option<i64> {
    let read = ops::retrying(|| {
        backend.range(RangeRequest {
            key: prefix.clone(),
            count_only: true,
            ..Default::default()
        })
    })
    .await;
    let mut state = lock(state);
    let now = match read {
        Ok(response) => Some(response.header.revision),
        Err(error) => {
            tracing::debug!(%error, "durable replies: cannot read the store");
            state.task = None;
            None
        }
    };
    state.seen = now;
    read_again(&mut state);
    now
}

/// Tells every waiting call to read its key.
fn read_again(state: &mut State) {
    for (_, (_, sender)) in state.waiting.drain() {
        let _ = sender.send(Delivery::ReadAgain);
    }
}

/// What a waiter key holds: the reply, or `None` while the call waits.
pub(crate) fn reply_in(key: &[u8], value: &[u8]) -> Result<Option<ReplyRecord>, Error> {
    match decode(key, value)? {
        Record::Reply(reply) => Ok(Some(reply)),
        Record::Waiting => Ok(None),
        other => Err(wrong(key, "reply", &other)),
    }
}

/// Hands one batch out; returns the last revision handed out so far.
fn hand_out(state: &Mutex<State>, keys: &Keys, prefix: &[u8], events: Vec<Event>) -> i64 {
    let mut state = lock(state);
    let mut last = 0;
    for event in events {
        last = last.max(event.kv.mod_revision);
        // A key under the prefix that is not a waiter key is not ours to
        // judge: no call waits on it.
        let Ok(seq) = keys.seq_of(prefix, &event.kv.key) else {
            continue;
        };
        let delivery = match event.kind {
            EventKind::Delete => Delivery::Killed,
            EventKind::Put => match reply_in(&event.kv.key, &event.kv.value) {
                Ok(Some(reply)) => Delivery::Reply(reply),
                Ok(None) => continue,
                // The call's own read reports what is wrong with it.
                Err(_) => Delivery::ReadAgain,
            },
        };
        if let Some((_, sender)) = state.waiting.remove(&seq) {
            let _ = sender.send(delivery);
        }
    }
    let seen = state.seen.unwrap_or(0).max(last);
    state.seen = Some(seen);
    seen
}
