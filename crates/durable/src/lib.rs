//! chorus-durable: durable, distributed servers with a durable queue
//! (the semantics of Erlang's `dgen_server`), on any
//! [`KvBackend`](chorus_backend::KvBackend).
//!
//! # Where it sits
//!
//! Above chorus-backend, beside chorus-sessions, below the `chorus`
//! binary (whose admin HTTP shows each registered server's queue depth
//! and state size, via [`stats`]). It talks only to the `KvBackend`
//! trait, so the same server runs on the embedded store
//! ([`EmbeddedKv`](chorus_backend::EmbeddedKv), no setup), on a `chorus
//! serve` cluster, or on an existing etcd cluster
//! ([`EtcdKv`](chorus_backend::EtcdKv)).
//!
//! # The model
//!
//! A durable server is a [`DurableServer`] implementation (its
//! callbacks) plus, in the store under a tenant prefix, its state and a
//! queue of messages. Any number of processes hold a [`Durable`] handle on
//! it: all may publish ([`Durable::call`], [`Durable::cast`],
//! [`Durable::cast_batch`], [`Durable::outbox_cast`]); those started with
//! `consume` also run a consumer. Every queued message is handled exactly
//! once, one at a time, in queue order: the new state, the call's reply
//! and the dequeue commit in one compare-guarded txn (see `consumer.rs`
//! for the txn and the rules), so a consumer may crash anywhere and
//! another takes over. Consumers learn of new messages from a watch on
//! the tenant that stays open across waits, not by polling; a handle's
//! calls get their replies from one watch on its waiter keys (see
//! `replies.rs`), not one per call. [`Durable::priority_call`] and
//! [`Durable::priority_cast`] skip the queue, its order and the lock.
//!
//! ```no_run
//! use chorus_durable::{Durable, DurableServer, Failure, Outcome, StartOptions};
//!
//! struct Counter;
//! impl DurableServer for Counter {
//!     type State = u64;
//!     type Call = ();
//!     type Cast = u64;
//!     type Reply = u64;
//!     type Info = ();
//!     fn init(&self) -> Result<u64, Failure> { Ok(0) }
//!     fn handle_call(&self, _: (), n: u64) -> Result<Outcome<Self>, Failure> {
//!         Ok(Outcome::reply(n, n))
//!     }
//!     fn handle_cast(&self, add: u64, n: u64) -> Result<Outcome<Self>, Failure> {
//!         Ok(Outcome::noreply(n + add))
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = chorus_backend::EmbeddedKv::open("./state").await?;
//! let counter = Durable::start(Counter, store, StartOptions::new("counter")).await?;
//! counter.cast(5).await?;
//! assert_eq!(counter.call(()).await?, 5);
//! # Ok(())
//! # }
//! ```
//!
//! Formats: docs/formats.md, "chorus-durable formats".

mod consumer;
mod error;
pub mod format;
mod handle;
mod ops;
mod options;
mod registry;
mod replies;
mod server;
pub mod stats;

pub use consumer::{ConsumerExit, FAILURE_RETRY_WAIT, PREFETCH_ITEMS_MAX};
pub use error::{Error, FormatProblem};
pub use format::Registration;
pub use handle::{
    DeadLetter, Durable, OutboxCast, CAST_BATCH_MAX, ENQUEUE_CONFLICTS_MAX, PRIORITY_CONFLICTS_MAX,
};
pub use ops::{BACKOFF_MAX, BACKOFF_MIN};
pub use options::{StartOptions, CALL_TIMEOUT_DEFAULT, CLAIM_TTL_DEFAULT_S, LOCK_TIMEOUT_DEFAULT};
pub use registry::{Registry, REGISTRY_TENANT};
pub use server::{Action, DurableServer, Failure, Message, Outcome};
