//! The [`DurableServer`] trait (dgen_server's callback module) and what
//! its callbacks return.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A handler's failure. For a queued message it counts as a failed
/// attempt (see `StartOptions::dead_letter_threshold`); a panic counts the
/// same.
pub type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Runs after the transaction that committed the handler's result; never
/// if it did not commit. At most once: a consumer that crashes between the
/// commit and the action loses it.
pub type Action = Box<dyn FnOnce() + Send>;

/// A durable server: its state lives in the store, its messages in a
/// durable queue, and any number of processes may run its callbacks (one
/// message at a time, each exactly once).
///
/// Callbacks are synchronous and should be quick: they run between a
/// read and a commit. Long work belongs in `handle_locked` (after
/// returning [`Outcome::Lock`]), which runs outside any transaction.
pub trait DurableServer: Sized + Send + Sync + 'static {
    type State: Serialize + DeserializeOwned + Send + 'static;
    type Call: Serialize + DeserializeOwned + Send + 'static;
    type Cast: Serialize + DeserializeOwned + Send + 'static;
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// Local, non-durable messages ([`Durable::info`](crate::Durable::info)).
    type Info: Send + 'static;

    /// The initial state, written when the tenant has none (or on
    /// `reset`).
    fn init(&self) -> Result<Self::State, Failure>;

    fn handle_call(&self, call: Self::Call, state: Self::State) -> Result<Outcome<Self>, Failure>;

    /// A reply in the outcome is dropped: a cast has no caller.
    fn handle_cast(&self, cast: Self::Cast, state: Self::State) -> Result<Outcome<Self>, Failure>;

    fn handle_info(&self, info: Self::Info, state: Self::State) -> Result<Outcome<Self>, Failure> {
        let _ = info;
        Ok(Outcome::noreply(state))
    }

    /// The message whose handler returned [`Outcome::Lock`], handled
    /// again with the lock held: outside any transaction, while the queue
    /// waits (priority messages still run). Its result commits only if the
    /// lock is still this holder's (fencing); a lock older than
    /// `lock_timeout` is cleared by another consumer and the message
    /// requeued. Returning `Lock` again is refused (the caller gets
    /// [`Error::Handler`](crate::Error::Handler)).
    fn handle_locked(
        &self,
        message: Message<Self>,
        state: Self::State,
    ) -> Result<Outcome<Self>, Failure> {
        let _ = (message, state);
        Err("handle_locked is not implemented".into())
    }

    /// A message that failed `attempts` times, moved to the dead-letter
    /// queue in the same transaction that commits this state. Its caller
    /// gets [`Error::DeadLetter`](crate::Error::DeadLetter) whatever this
    /// returns; `Lock` and `Stop` count as `noreply`. If it fails, the
    /// message is dead-lettered with the state unchanged.
    fn handle_dead_letter(
        &self,
        message: Message<Self>,
        attempts: u32,
        state: Self::State,
    ) -> Result<Outcome<Self>, Failure> {
        let _ = (message, attempts);
        Ok(Outcome::noreply(state))
    }
}

/// A queued message, as `handle_locked` and `handle_dead_letter` see it.
pub enum Message<S: DurableServer> {
    Call(S::Call),
    Cast(S::Cast),
}

impl<S: DurableServer> std::fmt::Debug for Message<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Message::Call(_) => "Message::Call(..)",
            Message::Cast(_) => "Message::Cast(..)",
        })
    }
}

/// What a callback returns (dgen's `{reply, ...}`, `{noreply, ...}`,
/// `{lock, ...}`, `{stop, ...}`).
pub enum Outcome<S: DurableServer> {
    /// Commit `state`, answer the call, then run `actions`.
    Reply {
        reply: S::Reply,
        state: S::State,
        actions: Vec<Action>,
    },
    /// Commit `state`, then run `actions`. A call gets
    /// [`Error::NoReply`](crate::Error::NoReply).
    NoReply {
        state: S::State,
        actions: Vec<Action>,
    },
    /// Commit `state` and take the lock: the message goes to
    /// `handle_locked`, and the queue waits until it returns.
    Lock { state: S::State },
    /// Commit `state`, answer the call with `reply` (or
    /// [`Error::Stopped`](crate::Error::Stopped)), and stop this consumer.
    /// The durable server lives on: other consumers keep going.
    Stop {
        reason: String,
        reply: Option<S::Reply>,
        state: S::State,
    },
}

impl<S: DurableServer> Outcome<S> {
    pub fn reply(reply: S::Reply, state: S::State) -> Outcome<S> {
        Outcome::Reply {
            reply,
            state,
            actions: Vec::new(),
        }
    }

    pub fn noreply(state: S::State) -> Outcome<S> {
        Outcome::NoReply {
            state,
            actions: Vec::new(),
        }
    }

    pub fn lock(state: S::State) -> Outcome<S> {
        Outcome::Lock { state }
    }

    pub fn stop(reason: impl Into<String>, state: S::State) -> Outcome<S> {
        Outcome::Stop {
            reason: reason.into(),
            reply: None,
            state,
        }
    }

    /// Adds an action to run after the commit (ignored by `Lock` and
    /// `Stop`).
    pub fn with_action(mut self, action: impl FnOnce() + Send + 'static) -> Outcome<S> {
        if let Outcome::Reply { actions, .. } | Outcome::NoReply { actions, .. } = &mut self {
            actions.push(Box::new(action));
        }
        self
    }
}

/// Runs a callback, turning a panic into a failure: a panicking handler
/// must not take the consumer (or a priority caller) down with it. On a
/// multi-threaded runtime the callback runs under `block_in_place`, so a
/// slow (synchronous) callback does not hold up the other tasks queued on
/// its worker thread, such as the store client's connection.
pub(crate) fn guarded<T>(callback: impl FnOnce() -> Result<T, Failure>) -> Result<T, String> {
    let caught = || std::panic::catch_unwind(std::panic::AssertUnwindSafe(callback));
    let result = match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(caught)
        }
        _ => caught(),
    };
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(failure)) => Err(failure.to_string()),
        Err(panic) => Err(panic
            .downcast_ref::<&str>()
            .map(|text| text.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .map(|text| format!("panicked: {text}"))
            .unwrap_or_else(|| "panicked".to_string())),
    }
}
