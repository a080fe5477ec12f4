//! How a process takes part in a durable server.

use std::time::Duration;

/// The default call timeout (dgen's 5000 ms).
pub const CALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// The default lock timeout: long enough for real work in
/// `handle_locked`, short enough that a dead holder does not stall the
/// queue for long.
pub const LOCK_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);
/// The default TTL of a consumer's claim lease (seconds): a consumer
/// that dies holding a message frees it after at most this long.
pub const CLAIM_TTL_DEFAULT_S: i64 = 5;

/// Options of [`Durable::start`](crate::Durable::start).
#[derive(Clone, Debug)]
pub struct StartOptions {
    /// The key prefix (dgen's tenant) holding the server's state, queue
    /// and waiting calls. Any string without NUL bytes.
    pub tenant: String,
    /// Whether this process consumes the queue (runs callbacks); without
    /// it, it only publishes (and runs priority messages itself).
    pub consume: bool,
    /// Re-initialise the state even if it exists.
    pub reset: bool,
    /// Keep the decoded-state bytes between messages, validated by the
    /// state key's `mod_revision` in every commit's compares: a stale
    /// cache fails the commit and is refreshed, so it costs nothing in
    /// correctness and saves a read per message.
    pub cache: bool,
    /// After this many failed attempts (handler error, panic, or a
    /// consumer crash while holding the message) the message moves to the
    /// dead-letter queue. `None` (the default) retries forever. Turning
    /// it on adds one claim write per message: the attempt counter must be
    /// durable before processing, or a crash would not count.
    pub dead_letter_threshold: Option<u32>,
    /// How long a lock may be held before another consumer clears it and
    /// requeues its message; `None`: never (a dead holder then stalls the
    /// queue until someone calls `Durable::clear_lock`).
    pub lock_timeout: Option<Duration>,
    /// TTL of a consumer's claim lease, in seconds (only with
    /// `dead_letter_threshold`).
    pub claim_ttl_s: i64,
    /// Register the server under this name in the durable registry.
    pub name: Option<String>,
}

impl StartOptions {
    /// The defaults for `tenant`: consume, no reset, no cache, no dead
    /// letters, a 60 s lock timeout.
    pub fn new(tenant: impl Into<String>) -> StartOptions {
        StartOptions {
            tenant: tenant.into(),
            consume: true,
            reset: false,
            cache: false,
            dead_letter_threshold: None,
            lock_timeout: Some(LOCK_TIMEOUT_DEFAULT),
            claim_ttl_s: CLAIM_TTL_DEFAULT_S,
            name: None,
        }
    }

    pub fn consume(mut self, consume: bool) -> StartOptions {
        self.consume = consume;
        self
    }
    pub fn reset(mut self, reset: bool) -> StartOptions {
        self.reset = reset;
        self
    }
    pub fn cache(mut self, cache: bool) -> StartOptions {
        self.cache = cache;
        self
    }
    pub fn dead_letter_threshold(mut self, threshold: Option<u32>) -> StartOptions {
        self.dead_letter_threshold = threshold;
        self
    }
    pub fn lock_timeout(mut self, timeout: Option<Duration>) -> StartOptions {
        self.lock_timeout = timeout;
        self
    }
    pub fn claim_ttl_s(mut self, ttl_s: i64) -> StartOptions {
        self.claim_ttl_s = ttl_s;
        self
    }
    pub fn name(mut self, name: impl Into<String>) -> StartOptions {
        self.name = Some(name.into());
        self
    }
}
