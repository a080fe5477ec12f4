//! [`EtcdKv`]: any etcd v3 endpoint over gRPC (a real etcd cluster, or
//! `chorus serve`), through the generated clients of chorus-proto.
//!
//! Requests go to one endpoint at a time. A request the endpoint refused
//! without acting on it (no connection, no leader, stopping) moves on to
//! the next endpoint and is sent again; any other failure is returned,
//! with [`BackendError::Indeterminate`] when the write may have happened.
//! A watch whose stream breaks resumes on the next endpoint from the
//! revision after the last one it delivered, so it neither skips nor
//! repeats events.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chorus_kv as kv;
use chorus_proto::etcdserverpb as pb;
use chorus_proto::etcdserverpb::kv_client::KvClient;
use chorus_proto::etcdserverpb::lease_client::LeaseClient;
use chorus_proto::etcdserverpb::watch_client::WatchClient;
use chorus_proto::etcdserverpb::{compare, request_op, response_op, watch_request};
use chorus_proto::mvccpb;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::{BackendError, KvBackend, Watch, WatchRequest, WATCH_BUFFER_BATCHES};

/// How long a watch keeps trying to resume on some endpoint before it
/// reports the failure.
const WATCH_RESUME_ATTEMPTS_MAX: u32 = 50;
/// Pause between two attempts to resume a watch.
const WATCH_RESUME_PAUSE: Duration = Duration::from_millis(100);

/// Where and how to reach the store.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// `http://host:port` of one or more members.
    pub endpoints: Vec<String>,
    /// Longest wait for a TCP connection to an endpoint.
    pub connect_timeout_ms: u64,
    /// Longest wait for any one answer; past it a write's outcome is
    /// unknown.
    pub request_timeout_ms: u64,
}

impl EtcdConfig {
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> EtcdConfig {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            connect_timeout_ms: 2_000,
            request_timeout_ms: 10_000,
        }
    }
}

/// A client of an etcd v3 endpoint. See the module docs.
#[derive(Clone, Debug)]
pub struct EtcdKv {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    channels: Vec<Channel>,
    /// Counts moves between endpoints; modulo the endpoint count, it is
    /// the one requests go to first.
    current: AtomicUsize,
}

impl EtcdKv {
    /// A client of `config.endpoints`. Connections are made when first
    /// used, so this fails only on a malformed endpoint.
    pub fn connect(config: EtcdConfig) -> Result<EtcdKv, BackendError> {
        if config.endpoints.is_empty() {
            return Err(BackendError::Failed("no etcd endpoint given".into()));
        }
        let channels = config
            .endpoints
            .iter()
            .map(|url| {
                let endpoint = Endpoint::from_shared(url.clone()).map_err(|error| {
                    BackendError::Failed(format!("bad endpoint {url:?}: {error}"))
                })?;
                Ok(endpoint
                    .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
                    .timeout(Duration::from_millis(config.request_timeout_ms))
                    .tcp_nodelay(true)
                    .connect_lazy())
            })
            .collect::<Result<Vec<_>, BackendError>>()?;
        Ok(EtcdKv {
            inner: Arc::new(Inner {
                channels,
                current: AtomicUsize::new(0),
            }),
        })
    }

    /// Sends `call` to the current endpoint, and to the next ones while
    /// they refuse it without acting on it.
    async fn send<R, F, Fut>(&self, call: F) -> Result<R, BackendError>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<R, Status>>,
    {
        let count = self.inner.channels.len();
        let mut last = None;
        for _ in 0..count {
            let seen = self.inner.current.load(Ordering::Relaxed);
            match call(self.inner.channels[seen % count].clone()).await {
                Ok(response) => return Ok(response),
                Err(status) => {
                    let error = status_error(&status);
                    if !matches!(error, BackendError::Unavailable(_)) {
                        return Err(error);
                    }
                    // Move on, unless another request already did. The
                    // counter itself is compared, not the index it maps
                    // to: once it passed the endpoint count, comparing the
                    // index never matched and requests stayed on a dead
                    // endpoint.
                    let _ = self.inner.current.compare_exchange(
                        seen,
                        seen.wrapping_add(1),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    last = Some(error);
                }
            }
        }
        Err(last.unwrap_or(BackendError::Closed))
    }

    fn channel(&self) -> Channel {
        let count = self.inner.channels.len();
        self.inner.channels[self.inner.current.load(Ordering::Relaxed) % count].clone()
    }

    fn rotate(&self) {
        self.inner.current.fetch_add(1, Ordering::Relaxed);
    }
}

/// etcd's messages for refusals made before acting (rpctypes), which
/// make retrying on another endpoint safe.
const NOT_APPLIED: &[&str] = &[
    "etcdserver: no leader",
    "etcdserver: server stopped",
    "etcdserver: too many requests",
    "etcdserver: not capable",
];

/// Every machine refusal, to recognise etcd's message for it.
fn kv_errors() -> [kv::KvError; 12] {
    [
        kv::KvError::Compacted {
            compact_revision: 0,
        },
        kv::KvError::FutureRevision,
        kv::KvError::EmptyKey,
        kv::KvError::KeyNotFound,
        kv::KvError::ValueProvided,
        kv::KvError::LeaseProvided,
        kv::KvError::DuplicateKey,
        kv::KvError::TooManyOps,
        kv::KvError::LeaseNotFound,
        kv::KvError::LeaseExists,
        kv::KvError::LeaseTtlTooLarge,
        kv::KvError::TxnNotReadOnly,
    ]
}

/// What a gRPC status means for the caller.
fn status_error(status: &Status) -> BackendError {
    let message = status.message();
    if let Some(error) = kv_errors()
        .into_iter()
        .find(|error| error.to_string() == message)
    {
        return BackendError::Kv(error);
    }
    let text = format!("{:?}: {message}", status.code());
    match status.code() {
        Code::Unavailable | Code::ResourceExhausted
            if NOT_APPLIED.contains(&message) || refused_connection(status) =>
        {
            BackendError::Unavailable(text)
        }
        // etcd's "request timed out" and "leader changed" are UNAVAILABLE
        // too, but the write may still commit; so may one whose
        // connection broke after it was sent.
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            BackendError::Indeterminate(text)
        }
        _ => BackendError::Failed(text),
    }
}

/// Whether the request failed because no connection could be made (so
/// it was never sent).
fn refused_connection(status: &Status) -> bool {
    use std::error::Error;
    let mut source = status.source();
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
            );
        }
        if error.to_string().contains("tcp connect error") {
            return true;
        }
        source = error.source();
    }
    false
}

impl KvBackend for EtcdKv {
    async fn range(&self, request: kv::RangeRequest) -> Result<kv::RangeResponse, BackendError> {
        let request = range_request(request);
        let response = self
            .send(|channel| {
                let request = request.clone();
                async move { KvClient::new(channel).range(request).await }
            })
            .await?;
        Ok(range_response(response.into_inner()))
    }

    async fn put(&self, request: kv::PutRequest) -> Result<kv::PutResponse, BackendError> {
        let request = put_request(request);
        let response = self
            .send(|channel| {
                let request = request.clone();
                async move { KvClient::new(channel).put(request).await }
            })
            .await?
            .into_inner();
        Ok(kv::PutResponse {
            header: header(response.header),
            prev_kv: response.prev_kv.map(key_value),
        })
    }

    async fn delete_range(
        &self,
        request: kv::DeleteRangeRequest,
    ) -> Result<kv::DeleteRangeResponse, BackendError> {
        let request = delete_request(request);
        let response = self
            .send(|channel| {
                let request = request.clone();
                async move { KvClient::new(channel).delete_range(request).await }
            })
            .await?;
        Ok(delete_response(response.into_inner()))
    }

    async fn txn(&self, request: kv::TxnRequest) -> Result<kv::TxnResponse, BackendError> {
        let request = txn_request(request);
        let response = self
            .send(|channel| {
                let request = request.clone();
                async move { KvClient::new(channel).txn(request).await }
            })
            .await?;
        txn_response(response.into_inner())
    }

    async fn lease_grant(&self, ttl_s: i64) -> Result<kv::LeaseGrantResponse, BackendError> {
        let request = pb::LeaseGrantRequest { ttl: ttl_s, id: 0 };
        let response = self
            .send(|channel| async move { LeaseClient::new(channel).lease_grant(request).await })
            .await?
            .into_inner();
        if !response.error.is_empty() {
            return Err(BackendError::Failed(response.error));
        }
        Ok(kv::LeaseGrantResponse {
            header: header(response.header),
            id: response.id,
            ttl: response.ttl,
        })
    }

    async fn lease_revoke(&self, id: i64) -> Result<(), BackendError> {
        let request = pb::LeaseRevokeRequest { id };
        self.send(|channel| async move { LeaseClient::new(channel).lease_revoke(request).await })
            .await?;
        Ok(())
    }

    async fn lease_keep_alive(&self, id: i64) -> Result<kv::LeaseKeepAliveResponse, BackendError> {
        let response = self
            .send(|channel| async move {
                let requests = tokio_stream::once(pb::LeaseKeepAliveRequest { id });
                let mut answers = LeaseClient::new(channel)
                    .lease_keep_alive(requests)
                    .await?
                    .into_inner();
                match answers.next().await {
                    Some(answer) => answer,
                    None => Err(Status::unavailable(
                        "the keep-alive stream ended without an answer",
                    )),
                }
            })
            .await?;
        // etcd answers a keep-alive of an unknown lease with TTL 0.
        if response.ttl <= 0 {
            return Err(BackendError::Kv(kv::KvError::LeaseNotFound));
        }
        Ok(kv::LeaseKeepAliveResponse {
            header: header(response.header),
            id: response.id,
            ttl: response.ttl,
        })
    }

    async fn lease_time_to_live(
        &self,
        id: i64,
    ) -> Result<kv::LeaseTimeToLiveResponse, BackendError> {
        let request = pb::LeaseTimeToLiveRequest { id, keys: false };
        let response =
            self.send(|channel| async move {
                LeaseClient::new(channel).lease_time_to_live(request).await
            })
            .await?
            .into_inner();
        Ok(kv::LeaseTimeToLiveResponse {
            header: header(response.header),
            id: response.id,
            ttl: response.ttl,
            granted_ttl: response.granted_ttl,
            keys: response.keys,
        })
    }

    async fn watch(&self, request: WatchRequest) -> Result<Watch, BackendError> {
        // Open the first stream here, so a refusal reaches the caller.
        let (stream, next) = open_watch(self, &request, request.start_revision).await?;
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER_BATCHES);
        tokio::spawn(run_watch(self.clone(), request, stream, next, sender));
        Ok(Watch::new(receiver))
    }
}

/// A watch stream and its request sender (dropping the sender would end
/// the stream).
struct WatchStream {
    _requests: mpsc::Sender<pb::WatchRequest>,
    responses: tonic::Streaming<pb::WatchResponse>,
}

/// Opens a watch from `start_revision` on the current endpoint (trying
/// the next ones while they refuse); returns it with the first revision
/// it will deliver.
async fn open_watch(
    backend: &EtcdKv,
    request: &WatchRequest,
    start_revision: i64,
) -> Result<(WatchStream, i64), BackendError> {
    let create = pb::WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: request.key.clone(),
                range_end: request.range_end.clone(),
                start_revision: start_revision.max(0),
                prev_kv: request.prev_kv,
                ..Default::default()
            },
        )),
    };
    let mut last = BackendError::Closed;
    for _ in 0..backend.inner.channels.len() {
        let (requests, outgoing) = mpsc::channel(1);
        // The channel is empty and its receiver alive: this cannot fail.
        let _ = requests.send(create.clone()).await;
        let opened = WatchClient::new(backend.channel())
            .watch(tokio_stream::wrappers::ReceiverStream::new(outgoing))
            .await;
        let mut responses = match opened {
            Ok(responses) => responses.into_inner(),
            Err(status) => {
                last = status_error(&status);
                backend.rotate();
                continue;
            }
        };
        match responses.message().await {
            Ok(Some(created)) if created.created && !created.canceled => {
                let next = if start_revision > 0 {
                    start_revision
                } else {
                    header(created.header).revision + 1
                };
                let stream = WatchStream {
                    _requests: requests,
                    responses,
                };
                return Ok((stream, next));
            }
            Ok(Some(refused)) => return Err(canceled(&refused)),
            Ok(None) => {
                last = BackendError::Unavailable("the watch stream ended at once".into());
                backend.rotate();
            }
            Err(status) => {
                last = status_error(&status);
                backend.rotate();
            }
        }
    }
    Err(last)
}

/// Why etcd canceled a watch.
fn canceled(response: &pb::WatchResponse) -> BackendError {
    if response.compact_revision > 0 {
        BackendError::Kv(kv::KvError::Compacted {
            compact_revision: response.compact_revision,
        })
    } else {
        BackendError::Failed(format!("watch canceled: {}", response.cancel_reason))
    }
}

/// Delivers a watch's events, resuming on a broken stream.
async fn run_watch(
    backend: EtcdKv,
    request: WatchRequest,
    mut stream: WatchStream,
    mut next: i64,
    sender: mpsc::Sender<Result<Vec<kv::Event>, BackendError>>,
) {
    loop {
        let message = tokio::select! {
            message = stream.responses.message() => message,
            () = sender.closed() => return,
        };
        let failure = match message {
            Ok(Some(response)) if response.canceled => {
                let _ = sender.send(Err(canceled(&response))).await;
                return;
            }
            Ok(Some(response)) => {
                if response.events.is_empty() {
                    continue; // a progress notification
                }
                let events: Result<Vec<kv::Event>, BackendError> =
                    response.events.into_iter().map(event).collect();
                match events {
                    Ok(events) => {
                        if let Some(last) = events.last() {
                            next = last.kv.mod_revision + 1;
                        }
                        if sender.send(Ok(events)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                }
            }
            Ok(None) => BackendError::Unavailable("the watch stream ended".into()),
            Err(status) => status_error(&status),
        };
        // Resume from the first revision not yet delivered.
        tracing::debug!(%failure, next, "watch stream broke; resuming");
        let mut attempts = 0;
        stream = loop {
            backend.rotate();
            match open_watch(&backend, &request, next).await {
                Ok((stream, _)) => break stream,
                Err(error @ BackendError::Kv(_)) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
                Err(error) => {
                    attempts += 1;
                    if attempts >= WATCH_RESUME_ATTEMPTS_MAX {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(WATCH_RESUME_PAUSE) => {}
                        () = sender.closed() => return,
                    }
                }
            }
        };
    }
}

// chorus-kv's requests to etcd's messages, and etcd's answers back.

fn header(header: Option<pb::ResponseHeader>) -> kv::ResponseHeader {
    kv::ResponseHeader {
        revision: header.map_or(0, |header| header.revision),
    }
}

fn key_value(kv: mvccpb::KeyValue) -> kv::KeyValue {
    kv::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

fn event(event: mvccpb::Event) -> Result<kv::Event, BackendError> {
    let kind = match mvccpb::event::EventType::try_from(event.r#type) {
        Ok(mvccpb::event::EventType::Put) => kv::EventKind::Put,
        Ok(mvccpb::event::EventType::Delete) => kv::EventKind::Delete,
        Err(_) => {
            return Err(BackendError::Failed(format!(
                "unknown event type {}",
                event.r#type
            )))
        }
    };
    let Some(current) = event.kv else {
        return Err(BackendError::Failed("an event without a key".into()));
    };
    Ok(kv::Event {
        kind,
        kv: key_value(current),
        prev_kv: event.prev_kv.map(key_value),
    })
}

fn range_request(request: kv::RangeRequest) -> pb::RangeRequest {
    use pb::range_request::{SortOrder, SortTarget};
    let sort_order = match request.sort_order {
        kv::SortOrder::None => SortOrder::None,
        kv::SortOrder::Ascend => SortOrder::Ascend,
        kv::SortOrder::Descend => SortOrder::Descend,
    };
    let sort_target = match request.sort_target {
        kv::SortTarget::Key => SortTarget::Key,
        kv::SortTarget::Version => SortTarget::Version,
        kv::SortTarget::Create => SortTarget::Create,
        kv::SortTarget::Mod => SortTarget::Mod,
        kv::SortTarget::Value => SortTarget::Value,
    };
    pb::RangeRequest {
        key: request.key,
        range_end: request.range_end,
        limit: request.limit,
        revision: request.revision,
        sort_order: sort_order as i32,
        sort_target: sort_target as i32,
        serializable: false,
        keys_only: request.keys_only,
        count_only: request.count_only,
        min_mod_revision: request.min_mod_revision,
        max_mod_revision: request.max_mod_revision,
        min_create_revision: request.min_create_revision,
        max_create_revision: request.max_create_revision,
    }
}

fn range_response(response: pb::RangeResponse) -> kv::RangeResponse {
    kv::RangeResponse {
        header: header(response.header),
        kvs: response.kvs.into_iter().map(key_value).collect(),
        more: response.more,
        count: response.count,
    }
}

fn put_request(request: kv::PutRequest) -> pb::PutRequest {
    pb::PutRequest {
        key: request.key,
        value: request.value,
        lease: request.lease,
        prev_kv: request.prev_kv,
        ignore_value: request.ignore_value,
        ignore_lease: request.ignore_lease,
    }
}

fn delete_request(request: kv::DeleteRangeRequest) -> pb::DeleteRangeRequest {
    pb::DeleteRangeRequest {
        key: request.key,
        range_end: request.range_end,
        prev_kv: request.prev_kv,
    }
}

fn delete_response(response: pb::DeleteRangeResponse) -> kv::DeleteRangeResponse {
    kv::DeleteRangeResponse {
        header: header(response.header),
        deleted: response.deleted,
        prev_kvs: response.prev_kvs.into_iter().map(key_value).collect(),
    }
}

fn compare(compare: kv::Compare) -> pb::Compare {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    let result = match compare.result {
        kv::CompareResult::Equal => CompareResult::Equal,
        kv::CompareResult::Greater => CompareResult::Greater,
        kv::CompareResult::Less => CompareResult::Less,
        kv::CompareResult::NotEqual => CompareResult::NotEqual,
    };
    let (target, union) = match compare.target {
        kv::CompareTarget::Version(v) => (CompareTarget::Version, TargetUnion::Version(v)),
        kv::CompareTarget::Create(v) => (CompareTarget::Create, TargetUnion::CreateRevision(v)),
        kv::CompareTarget::Mod(v) => (CompareTarget::Mod, TargetUnion::ModRevision(v)),
        kv::CompareTarget::Value(v) => (CompareTarget::Value, TargetUnion::Value(v)),
        kv::CompareTarget::Lease(v) => (CompareTarget::Lease, TargetUnion::Lease(v)),
    };
    pb::Compare {
        result: result as i32,
        target: target as i32,
        key: compare.key,
        range_end: compare.range_end,
        target_union: Some(union),
    }
}

fn request_op(op: kv::RequestOp) -> pb::RequestOp {
    let request = match op {
        kv::RequestOp::Range(range) => request_op::Request::RequestRange(range_request(range)),
        kv::RequestOp::Put(put) => request_op::Request::RequestPut(put_request(put)),
        kv::RequestOp::DeleteRange(delete) => {
            request_op::Request::RequestDeleteRange(delete_request(delete))
        }
        kv::RequestOp::Txn(txn) => request_op::Request::RequestTxn(txn_request(txn)),
    };
    pb::RequestOp {
        request: Some(request),
    }
}

fn txn_request(request: kv::TxnRequest) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: request.compare.into_iter().map(compare).collect(),
        success: request.success.into_iter().map(request_op).collect(),
        failure: request.failure.into_iter().map(request_op).collect(),
    }
}

fn txn_response(response: pb::TxnResponse) -> Result<kv::TxnResponse, BackendError> {
    let responses = response
        .responses
        .into_iter()
        .map(|op| {
            Ok(match op.response {
                Some(response_op::Response::ResponseRange(range)) => {
                    kv::ResponseOp::Range(range_response(range))
                }
                Some(response_op::Response::ResponsePut(put)) => {
                    kv::ResponseOp::Put(kv::PutResponse {
                        header: header(put.header),
                        prev_kv: put.prev_kv.map(key_value),
                    })
                }
                Some(response_op::Response::ResponseDeleteRange(delete)) => {
                    kv::ResponseOp::DeleteRange(delete_response(delete))
                }
                Some(response_op::Response::ResponseTxn(txn)) => {
                    kv::ResponseOp::Txn(txn_response(txn)?)
                }
                None => {
                    return Err(BackendError::Failed(
                        "a txn response without its operation's response".into(),
                    ))
                }
            })
        })
        .collect::<Result<_, BackendError>>()?;
    Ok(kv::TxnResponse {
        header: header(response.header),
        succeeded: response.succeeded,
        responses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every endpoint refusing as etcd does without a leader.
    async fn refuse_everywhere(store: &EtcdKv) -> BackendError {
        let refused = store
            .send(|_| async { Err::<(), _>(Status::unavailable("etcdserver: no leader")) })
            .await;
        match refused {
            Err(error) => error,
            Ok(()) => panic!("a refusing endpoint answered"),
        }
    }

    #[tokio::test]
    async fn refusals_move_on_to_every_endpoint_round_after_round() {
        let endpoints = [
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
            "http://127.0.0.1:3",
        ];
        let store = EtcdKv::connect(EtcdConfig::new(endpoints)).expect("lazy channels");
        for round in 1..=3 {
            let error = refuse_everywhere(&store).await;
            assert!(matches!(error, BackendError::Unavailable(_)), "{error}");
            // Each round tried all three endpoints, past the wrap too.
            assert_eq!(store.inner.current.load(Ordering::Relaxed), 3 * round);
        }
        // An answer keeps the endpoint that gave it.
        store
            .send(|_| async { Ok::<_, Status>(()) })
            .await
            .expect("answered");
        assert_eq!(store.inner.current.load(Ordering::Relaxed), 9);
    }
}
