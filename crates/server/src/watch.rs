//! etcd's `Watch` service.
//!
//! Watchers live on the member the client talks to and are not
//! replicated. Each watch stream is one task that pulls what its watchers
//! need from this member's key-value machine ([`KvMachine::events`]):
//! once when a watcher is created (catching up from its start revision),
//! and again whenever the member applies more entries
//! ([`chorus_node::Node::progress`] says so), so followers serve watches
//! as well as the leader. A pull serves every watcher of the stream in
//! one visit to the machine, in bounded batches.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_backend::Pulled;
use chorus_kv::{EventBatch, EventKind, KeyRange, KvError, KvMachine};
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::backend::Backend;
use crate::convert;
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::watch_create_request::FilterType;
use crate::pb::etcdserverpb::watch_request::RequestUnion;

/// Most responses queued for a slow client before the stream waits.
const RESPONSE_QUEUE: usize = 128;
/// etcd's `InvalidWatchID`: the id of responses that concern no one
/// watcher (progress of the whole stream, a refused creation).
const INVALID_WATCH_ID: i64 = -1;
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
const EMPTY_RANGE: &str = "mvcc: watcher range is empty";

pub(crate) struct WatchService {
    pub(crate) backend: Arc<Backend>,
    /// How often a watcher that asked for progress notifications hears
    /// the current revision when nothing else was sent to it.
    pub(crate) progress_interval: Duration,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::watch_server::Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        let (tx, rx) = mpsc::channel(RESPONSE_QUEUE);
        let stream = StreamTask {
            backend: Arc::clone(&self.backend),
            inbound: request.into_inner(),
            tx,
            watchers: BTreeMap::new(),
            next_id: 0,
            progress_interval: self.progress_interval,
            progress_requested: false,
        };
        tokio::spawn(stream.run());
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

struct Watcher {
    range: KeyRange,
    /// The next revision to deliver.
    next: i64,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    progress_notify: bool,
    last_sent: Instant,
}

struct StreamTask {
    backend: Arc<Backend>,
    inbound: Streaming<pb::WatchRequest>,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    progress_interval: Duration,
    /// A client asked for the stream's progress: answer once caught up.
    progress_requested: bool,
}

/// The stream ended (client gone, server stopping, or a failure sent).
struct Ended;

impl StreamTask {
    async fn run(mut self) {
        let mut applied = self.backend.progress.clone();
        let mut ticker = tokio::time::interval(self.progress_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                request = self.inbound.next() => match request {
                    Some(Ok(request)) => self.handle(request).await,
                    _ => Err(Ended),
                },
                changed = applied.changed() => changed.map_err(|_| Ended),
                _ = ticker.tick() => self.notify_progress().await,
                _ = self.backend.stopped() => Err(Ended),
            };
            if step.is_err() || self.pull().await.is_err() {
                return;
            }
        }
    }

    async fn send(&self, response: pb::WatchResponse) -> Result<(), Ended> {
        self.tx.send(Ok(response)).await.map_err(|_| Ended)
    }

    async fn fail(&self, status: Status) -> Ended {
        let _ = self.tx.send(Err(status)).await;
        Ended
    }

    async fn handle(&mut self, request: pb::WatchRequest) -> Result<(), Ended> {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                // etcd answers only for a watcher the stream has.
                if self.watchers.remove(&cancel.watch_id).is_none() {
                    return Ok(());
                }
                let header = self.backend.header(self.revision().await?.0);
                self.send(pb::WatchResponse {
                    header: Some(header),
                    watch_id: cancel.watch_id,
                    canceled: true,
                    ..Default::default()
                })
                .await
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                self.progress_requested = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// The machine's revision and compacted revision on this member.
    async fn revision(&self) -> Result<(i64, i64), Ended> {
        let answer = self
            .backend
            .node
            .local_query_with::<KvMachine, _, _>(&self.backend.local, |machine| {
                (machine.revision(), machine.compact_revision())
            })
            .await;
        match answer {
            Ok(reply) => Ok(reply.reply),
            Err(error) => Err(self.fail(self.backend.call_failed(error)).await),
        }
    }

    async fn create(&mut self, create: pb::WatchCreateRequest) -> Result<(), Ended> {
        let (revision, compacted) = self.revision().await?;
        let header = self.backend.header(revision);
        // A refused creation is answered as etcd does: created and
        // canceled at once, under no watcher's id.
        let refused = |reason: &str| pb::WatchResponse {
            header: Some(header),
            watch_id: INVALID_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason.into(),
            ..Default::default()
        };
        // A range end of "\0" means every key from `key` on.
        let from_key = create.range_end.as_ref() == [0];
        if !create.range_end.is_empty() && !from_key && create.key >= create.range_end {
            return self.send(refused(EMPTY_RANGE)).await;
        }
        let id = if create.watch_id != 0 {
            create.watch_id
        } else {
            // Ids are never reused on a stream (etcd's nextID).
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            let id = self.next_id;
            self.next_id += 1;
            id
        };
        if self.watchers.contains_key(&id) || id < 0 {
            return self.send(refused(DUPLICATE_ID)).await;
        }
        self.send(pb::WatchResponse {
            header: Some(header),
            watch_id: id,
            created: true,
            ..Default::default()
        })
        .await?;
        let start = if create.start_revision > 0 {
            create.start_revision
        } else {
            revision + 1
        };
        if start < compacted {
            return self.cancel_compacted(id, revision, compacted).await;
        }
        let filters = |wanted: FilterType| create.filters.contains(&(wanted as i32));
        self.watchers.insert(
            id,
            Watcher {
                range: KeyRange::new(create.key, create.range_end),
                next: start,
                no_put: filters(FilterType::Noput),
                no_delete: filters(FilterType::Nodelete),
                prev_kv: create.prev_kv,
                progress_notify: create.progress_notify,
                last_sent: Instant::now(),
            },
        );
        Ok(())
    }

    async fn cancel_compacted(
        &mut self,
        id: i64,
        revision: i64,
        compacted: i64,
    ) -> Result<(), Ended> {
        self.watchers.remove(&id);
        self.send(pb::WatchResponse {
            header: Some(self.backend.header(revision)),
            watch_id: id,
            canceled: true,
            compact_revision: compacted,
            cancel_reason: COMPACTED.into(),
            ..Default::default()
        })
        .await
    }

    /// Delivers what every watcher is missing, until all are caught up.
    async fn pull(&mut self) -> Result<(), Ended> {
        loop {
            let wants: Vec<(i64, KeyRange, i64)> = self
                .watchers
                .iter()
                .map(|(id, w)| (*id, w.range.clone(), w.next))
                .collect();
            if wants.is_empty() && !self.progress_requested {
                return Ok(());
            }
            let answer =
                chorus_backend::pull_events(&self.backend.node, &self.backend.local, wants).await;
            let Pulled {
                revision,
                compact_revision: compacted,
                batches,
            } = match answer {
                Ok(pulled) => pulled,
                Err(error) => return Err(self.fail(self.backend.call_failed(error)).await),
            };
            let mut behind = false;
            for (id, batch) in batches {
                match batch {
                    Ok(batch) => {
                        behind |= batch.next_revision <= revision;
                        self.deliver(id, revision, batch).await?;
                    }
                    Err(KvError::Compacted { .. }) => {
                        self.cancel_compacted(id, revision, compacted).await?
                    }
                    Err(error) => {
                        return Err(self.fail(crate::error::kv_status(&error)).await);
                    }
                }
            }
            if !behind {
                if self.progress_requested {
                    self.progress_requested = false;
                    self.send(pb::WatchResponse {
                        header: Some(self.backend.header(revision)),
                        watch_id: INVALID_WATCH_ID,
                        ..Default::default()
                    })
                    .await?;
                }
                return Ok(());
            }
        }
    }

    async fn deliver(&mut self, id: i64, revision: i64, batch: EventBatch) -> Result<(), Ended> {
        let Some(watcher) = self.watchers.get_mut(&id) else {
            return Ok(());
        };
        watcher.next = batch.next_revision;
        let (no_put, no_delete, prev_kv) = (watcher.no_put, watcher.no_delete, watcher.prev_kv);
        let events: Vec<_> = batch
            .events
            .into_iter()
            .filter(|event| match event.kind {
                EventKind::Put => !no_put,
                EventKind::Delete => !no_delete,
            })
            .map(|event| convert::event(event, prev_kv))
            .collect();
        if events.is_empty() {
            return Ok(());
        }
        watcher.last_sent = Instant::now();
        self.send(pb::WatchResponse {
            header: Some(self.backend.header(revision)),
            watch_id: id,
            events,
            ..Default::default()
        })
        .await
    }

    /// etcd's progress notification: watchers that asked for it and heard
    /// nothing for an interval get the current revision.
    async fn notify_progress(&mut self) -> Result<(), Ended> {
        let quiet: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.progress_notify && w.last_sent.elapsed() >= self.progress_interval)
            .map(|(id, _)| *id)
            .collect();
        if quiet.is_empty() {
            return Ok(());
        }
        let (revision, _) = self.revision().await?;
        for id in quiet {
            let caught_up = self.watchers.get(&id).is_some_and(|w| w.next > revision);
            if caught_up {
                self.send(pb::WatchResponse {
                    header: Some(self.backend.header(revision)),
                    watch_id: id,
                    ..Default::default()
                })
                .await?;
                if let Some(watcher) = self.watchers.get_mut(&id) {
                    watcher.last_sent = Instant::now();
                }
            }
        }
        Ok(())
    }
}
