//! The replicated state machine interface (ra's `ra_machine`).
//!
//! A machine is deterministic: given the same commands in the same order it
//! reaches the same state on every replica. It never reads a clock or a
//! global RNG; time reaches it through [`ApplyMeta::time_ms`] (the leader's
//! clock, written into the log) and [`Machine::tick`].

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::types::{LogIndex, MachineEvent, NodeId, Role, Term};

/// Facts about the entry being applied.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ApplyMeta {
    pub index: LogIndex,
    pub term: Term,
    /// The leader's clock when it appended the entry (same on every replica).
    pub time_ms: u64,
    /// The machine version in force at this index.
    pub machine_version: u32,
}

/// A local subscriber of machine messages (ra's `send_msg` target). The
/// runtime hands these out; the machine stores them in its state when a
/// command registers one.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize, serde::Deserialize,
)]
pub struct SubscriberId(pub u64);

/// Side effects a machine asks for. They run on the leader only, after the
/// entry that produced them is applied, except `ReleaseCursor`, which every
/// replica honours (each keeps its own log bounded).
#[derive(Debug)]
pub enum Effect<M: Machine> {
    /// Deliver a message to a local subscriber.
    Send {
        to: SubscriberId,
        message: M::Message,
    },
    /// The state after the entry being applied may be snapshotted and the log
    /// below it dropped (ra's `release_cursor`).
    ReleaseCursor,
    /// Start (or restart) the named timer; on expiry the leader appends
    /// [`MachineEvent::Timer`]. `after_ms: None` cancels it.
    Timer {
        name: String,
        after_ms: Option<u64>,
    },
    /// Propose a command (ra's `{append, Cmd}`), e.g. a lease expiry decided
    /// by the leader.
    Append(M::Command),
    /// Deliver [`MachineEvent::NodeDown`] / [`MachineEvent::NodeUp`] for this node.
    MonitorNode(NodeId),
    DemonitorNode(NodeId),
}

/// Collects the effects of one callback.
pub struct Effects<M: Machine> {
    pub(crate) list: Vec<Effect<M>>,
}

impl<M: Machine> Effects<M> {
    pub(crate) fn new() -> Self {
        Effects { list: Vec::new() }
    }

    pub fn push(&mut self, effect: Effect<M>) {
        self.list.push(effect);
    }

    pub fn send(&mut self, to: SubscriberId, message: M::Message) {
        self.list.push(Effect::Send { to, message });
    }

    pub fn release_cursor(&mut self) {
        self.list.push(Effect::ReleaseCursor);
    }

    pub fn append(&mut self, command: M::Command) {
        self.list.push(Effect::Append(command));
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// A machine's snapshot could not be restored.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("snapshot cannot be restored: {reason}")]
pub struct RestoreError {
    pub reason: String,
}

/// A replicated state machine (ra's `ra_machine` behaviour).
pub trait Machine: Sized {
    /// Commands carried in the log.
    type Command: Serialize + DeserializeOwned + std::fmt::Debug;
    /// What applying a command returns to the proposer.
    type Reply: std::fmt::Debug;
    /// A serializable query, so queries can cross nodes (the Rust form of
    /// ra's `{M, F, A}` query funs). `local_query` may also take a closure
    /// over `&Self` in the runtime.
    type Query: Serialize + DeserializeOwned;
    type QueryReply: Serialize + DeserializeOwned + std::fmt::Debug;
    /// Messages sent to local subscribers.
    type Message: std::fmt::Debug;

    /// The version of this machine's code. A leader whose version is newer
    /// than the log's appends [`crate::Payload::MachineVersion`]; replicas
    /// switch at that index and call [`Machine::upgrade`].
    const VERSION: u32 = 0;

    /// Apply one committed command.
    fn apply(
        &mut self,
        meta: &ApplyMeta,
        command: Self::Command,
        effects: &mut Effects<Self>,
    ) -> Self::Reply;

    /// A timer fired or a monitored node changed state.
    fn event(&mut self, _meta: &ApplyMeta, _event: MachineEvent, _effects: &mut Effects<Self>) {}

    /// The server changed role. Effects returned while becoming leader run;
    /// this is where a machine re-arms its timers and monitors.
    fn state_enter(&mut self, _role: Role, _effects: &mut Effects<Self>) {}

    /// Called on the leader at every tick; it cannot change the state (that
    /// would not be replicated) but may ask for effects, such as appending a
    /// command.
    fn tick(&self, _now_ms: u64, _effects: &mut Effects<Self>) {}

    /// The log switched to a newer machine version at `meta.index`.
    fn upgrade(&mut self, _meta: &ApplyMeta, _from_version: u32) {}

    /// Answer a query over the current state.
    fn query(&self, query: &Self::Query) -> Self::QueryReply;

    /// Serialize the whole state.
    fn snapshot(&self) -> Vec<u8>;

    /// Rebuild the state from [`Machine::snapshot`]'s bytes. The bytes come
    /// from disk or the network: bad bytes must give an error, not a panic.
    fn restore(data: &[u8]) -> Result<Self, RestoreError>;
}
