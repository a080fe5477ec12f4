//! [`LogWriter`]: a thin threaded wrapper giving concurrent callers group
//! commit. Callers append (buffered under a short lock); one writer thread
//! repeatedly takes everything buffered, writes and fsyncs it *without*
//! holding the log's lock (so appends keep accumulating during the fsync and
//! form the next batch), and publishes the durability notices.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use chorus_raft::{Entry, ServerId};

use crate::error::{ApiError, LogError, LogResult, StorageError};
use crate::storage::Storage;
use crate::system::LogSystem;
use crate::wal::Durable;

/// Receives every batch of durability notices, on the writer thread. Keep it
/// short (forward to the servers' queues).
pub type DurableCallback = Box<dyn FnMut(Vec<Durable>) + Send>;

struct Progress {
    /// Every append with a ticket up to this is durable.
    flushed_generation: u64,
    failed: Option<String>,
    shutdown: bool,
    checkpoint_requests: u64,
    checkpoints_done: u64,
}

struct Shared<S: Storage> {
    log: Mutex<LogSystem<S>>,
    progress: Mutex<Progress>,
    /// Wakes the writer: appends arrived, or shutdown/checkpoint requested.
    work: Condvar,
    /// Wakes callers: a flush finished (or failed), buffer space freed.
    flushed: Condvar,
}

/// A ticket for one append: pass it to [`LogWriter::wait_durable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// Group commit across threads over a [`LogSystem`].
pub struct LogWriter<S: Storage> {
    shared: Arc<Shared<S>>,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl<S: Storage> LogWriter<S> {
    /// Starts the writer thread. `on_durable` receives every batch of
    /// notices.
    pub fn start(log: LogSystem<S>, on_durable: DurableCallback) -> Self {
        let shared = Arc::new(Shared {
            log: Mutex::new(log),
            progress: Mutex::new(Progress {
                flushed_generation: 0,
                failed: None,
                shutdown: false,
                checkpoint_requests: 0,
                checkpoints_done: 0,
            }),
            work: Condvar::new(),
            flushed: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("chorus-wal-writer".into())
            .spawn(move || writer_loop(thread_shared, on_durable))
            .expect("spawn the WAL writer thread");
        LogWriter {
            shared,
            thread: Some(thread),
        }
    }

    /// Buffers `entries` for `server` and wakes the writer. Blocks only when
    /// `wal_buffer_bytes_max` bytes are already waiting (backpressure).
    pub fn append(&self, server: ServerId, entries: Vec<Entry>) -> LogResult<Ticket> {
        let ticket = {
            let mut log = lock(&self.shared.log);
            let limit = log.config().wal_buffer_bytes_max;
            while log.buffered_bytes() >= limit {
                drop(log);
                let progress = lock(&self.shared.progress);
                self.check(&progress)?;
                // Woken by the writer after each flush; the timeout only
                // guards against a missed wake-up.
                let _ = self
                    .shared
                    .flushed
                    .wait_timeout(progress, std::time::Duration::from_millis(10));
                log = lock(&self.shared.log);
            }
            log.append(server, entries)?;
            Ticket(log.generation())
        };
        self.shared.work.notify_one();
        Ok(ticket)
    }

    /// Waits on the writer's progress until `done` holds, or the log fails.
    fn wait_until(
        &self,
        mut progress: std::sync::MutexGuard<'_, Progress>,
        done: impl Fn(&Progress) -> bool,
    ) -> LogResult<()> {
        loop {
            if done(&progress) {
                return Ok(());
            }
            self.check(&progress)?;
            progress = self
                .shared
                .flushed
                .wait(progress)
                .unwrap_or_else(|poison| poison.into_inner());
        }
    }

    fn check(&self, progress: &Progress) -> LogResult<()> {
        if let Some(reason) = &progress.failed {
            return Err(StorageError::Failed {
                reason: reason.clone(),
            }
            .into());
        }
        if progress.shutdown {
            return Err(ApiError::Closed.into());
        }
        Ok(())
    }

    /// Waits until the append with `ticket` is durable.
    pub fn wait_durable(&self, ticket: Ticket) -> LogResult<()> {
        let progress = lock(&self.shared.progress);
        self.wait_until(progress, |p| p.flushed_generation >= ticket.0)
    }

    /// Runs `f` on the log system (barriers: hard state, snapshots, reads,
    /// server creation and deletion). Do not call `flush` or `checkpoint` in
    /// it: the writer thread owns those.
    pub fn with_log<R>(&self, f: impl FnOnce(&mut LogSystem<S>) -> R) -> R {
        f(&mut lock(&self.shared.log))
    }

    /// Asks the writer thread for a checkpoint and waits for it.
    pub fn checkpoint(&self) -> LogResult<()> {
        let mut progress = lock(&self.shared.progress);
        progress.checkpoint_requests += 1;
        let wanted = progress.checkpoint_requests;
        self.shared.work.notify_one();
        self.wait_until(progress, |p| p.checkpoints_done >= wanted)
    }

    /// Flushes what is buffered, stops the writer thread and returns the
    /// log system (call [`LogSystem::close`] for an orderly shutdown).
    pub fn stop(mut self) -> LogResult<LogSystem<S>> {
        self.stop_thread();
        let shared = Arc::clone(&self.shared);
        drop(self);
        let shared = Arc::try_unwrap(shared)
            .unwrap_or_else(|_| panic!("the writer thread has exited and holds no reference"));
        let log = shared
            .log
            .into_inner()
            .unwrap_or_else(|poison| poison.into_inner());
        log.check_healthy()?;
        Ok(log)
    }

    fn stop_thread(&mut self) {
        if let Some(thread) = self.thread.take() {
            lock(&self.shared.progress).shutdown = true;
            self.shared.work.notify_one();
            let _ = thread.join();
        }
    }
}

impl<S: Storage> Drop for LogWriter<S> {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn writer_loop<S: Storage>(shared: Arc<Shared<S>>, mut on_durable: DurableCallback) {
    loop {
        // Wait for work.
        let (shutdown, checkpoint_wanted) = {
            let mut progress = lock(&shared.progress);
            loop {
                let pending = lock(&shared.log).generation() > progress.flushed_generation;
                let checkpoint = progress.checkpoint_requests > progress.checkpoints_done;
                if pending || checkpoint || progress.shutdown || progress.failed.is_some() {
                    break (progress.shutdown, checkpoint);
                }
                progress = shared
                    .work
                    .wait(progress)
                    .unwrap_or_else(|poison| poison.into_inner());
            }
        };
        if lock(&shared.progress).failed.is_some() {
            shared.flushed.notify_all();
            return;
        }
        // Take the batch under the lock; write and sync it outside.
        let (job, generation) = {
            let mut log = lock(&shared.log);
            let generation = log.generation();
            (log.begin_flush(), generation)
        };
        let result: Result<Vec<Durable>, LogError> = match job {
            Ok(Some(mut job)) => {
                let storage = Arc::clone(lock(&shared.log).storage());
                let started = std::time::Instant::now();
                job.run(&storage);
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                let mut log = lock(&shared.log);
                log.record_flush_latency(micros);
                log.finish_flush(job)
            }
            Ok(None) => Ok(Vec::new()),
            Err(error) => Err(error),
        };
        let checkpoint_result = match (&result, checkpoint_wanted) {
            (Ok(_), true) => {
                let mut log = lock(&shared.log);
                let generation = log.generation();
                Some(log.checkpoint().map(|notices| (generation, notices)))
            }
            _ => None,
        };
        let mut checkpoint_notices = Vec::new();
        {
            let mut progress = lock(&shared.progress);
            match &result {
                Ok(_) => progress.flushed_generation = generation,
                Err(error) => progress.failed = Some(error.to_string()),
            }
            match checkpoint_result {
                Some(Ok((generation, notices))) => {
                    progress.flushed_generation = generation;
                    progress.checkpoints_done = progress.checkpoint_requests;
                    checkpoint_notices = notices;
                }
                Some(Err(error)) => progress.failed = Some(error.to_string()),
                None => {}
            }
        }
        shared.flushed.notify_all();
        if let Ok(notices) = result {
            if !notices.is_empty() {
                on_durable(notices);
            }
        }
        if !checkpoint_notices.is_empty() {
            on_durable(checkpoint_notices);
        }
        if shutdown {
            // Drain anything appended meanwhile, then stop.
            let mut log = lock(&shared.log);
            let generation = log.generation();
            let drained = log.flush();
            drop(log);
            let mut progress = lock(&shared.progress);
            match drained {
                Ok(notices) => {
                    progress.flushed_generation = generation;
                    drop(progress);
                    if !notices.is_empty() {
                        on_durable(notices);
                    }
                }
                Err(error) => progress.failed = Some(error.to_string()),
            }
            shared.flushed.notify_all();
            return;
        }
    }
}
