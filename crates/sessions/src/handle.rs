//! [`Sessions`]: the handle on one sessions namespace of a store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use chorus_backend::{
    prefix_end, Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyValue, KvBackend,
    PutRequest, RangeRequest, RequestOp, ResponseOp, TxnRequest, TxnResponse,
};

use crate::format::{self, ConnectionBody, Keys, SessionBody};
use crate::{
    Clock, Connection, ConnectionHook, ConnectionId, Fence, NoHook, Session, SessionId,
    SessionSpec, SessionsConfig, SessionsError, Staleness, SystemClock, CLUSTER_STATE_ID,
    CONNECTION_DATA_BYTES_MAX, OWNER_BYTES_MAX, SCAN_PAGE_SESSIONS, STATE_BYTES_MAX,
    STATE_ID_BYTES_MAX,
};

type Result<T> = std::result::Result<T, SessionsError>;

/// A handle on the sessions, connections and cluster state documents
/// under one prefix of a store. Cloning is cheap; clones share the
/// cache, clock and hook. Handles on other nodes have caches of their
/// own (that is what [`Staleness::Ok`] allows to be out of date).
pub struct Sessions<B> {
    inner: Arc<Inner<B>>,
}

impl<B> Clone for Sessions<B> {
    fn clone(&self) -> Self {
        Sessions {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<B> std::fmt::Debug for Sessions<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner<B> {
    pub(crate) backend: B,
    pub(crate) config: SessionsConfig,
    pub(crate) keys: Keys,
    clock: Arc<dyn Clock>,
    hook: RwLock<Arc<dyn ConnectionHook>>,
    cache: Mutex<Cache>,
}

/// Sessions by id, each with the stamp of its last store; at most
/// `cache_sessions_max` entries.
#[derive(Default)]
struct Cache {
    entries: HashMap<SessionId, (Session, u64)>,
    stamp: u64,
}

impl Cache {
    fn put(&mut self, session: Session, max: usize) {
        if max == 0 {
            return;
        }
        // Never replace a newer version of a session with an older one
        // (two calls finishing out of order).
        if let Some((cached, _)) = self.entries.get(&session.id) {
            if cached.revision > session.revision {
                return;
            }
        }
        if self.entries.len() >= max && !self.entries.contains_key(&session.id) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, stamp))| *stamp)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.stamp += 1;
        self.entries.insert(session.id, (session, self.stamp));
    }
}

/// What [`Sessions::plan_clear`] decided for one expired session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// It still has a live connection: move its deadline to `valid_to_ms`.
    Extend { session: Session, valid_to_ms: u64 },
    /// No live connection: delete it and `connections` (read at
    /// `read_revision`).
    Delete {
        session: Session,
        connections: Vec<Connection>,
        read_revision: i64,
    },
}

/// The decisions of one clean-up, made at `now_ms`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClearPlan {
    pub now_ms: u64,
    pub decisions: Vec<Decision>,
    /// Session keys whose values could not be read (left alone).
    pub corrupt: Vec<String>,
}

/// What a clean-up did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClearReport {
    pub extended: Vec<SessionId>,
    pub deleted: Vec<SessionId>,
    /// Connections deleted (and closed through the hook) with their
    /// sessions.
    pub connections_closed: usize,
    /// Sessions changed by someone else after they were read: left as
    /// they are (the concurrent save wins).
    pub skipped: Vec<SessionId>,
    pub corrupt: Vec<String>,
}

fn compare(key: Bytes, result: CompareResult, target: CompareTarget) -> Compare {
    Compare {
        result,
        target,
        key,
        range_end: Bytes::new(),
    }
}

/// The session at `key` exists and, when `token` is given, is that
/// incarnation (its fencing token: the key's create_revision).
fn session_guard(key: Bytes, token: Option<i64>) -> Compare {
    match token {
        Some(token) => compare(key, CompareResult::Equal, CompareTarget::Create(token)),
        None => compare(key, CompareResult::Greater, CompareTarget::Version(0)),
    }
}

fn range_op(key: Bytes) -> RequestOp {
    RequestOp::Range(RangeRequest {
        key,
        ..Default::default()
    })
}

/// The first key-value of the first range response of a txn branch.
fn first_range_kv(response: &TxnResponse) -> Option<&KeyValue> {
    response.responses.iter().find_map(|op| match op {
        ResponseOp::Range(range) => range.kvs.first(),
        _ => None,
    })
}

impl<B: KvBackend> Sessions<B> {
    /// A handle on the namespace `config.prefix` of `backend`, with the
    /// system clock and no hook.
    pub fn new(backend: B, config: SessionsConfig) -> Sessions<B> {
        Sessions {
            inner: Arc::new(Inner {
                keys: Keys::new(&config.prefix),
                backend,
                config,
                clock: Arc::new(SystemClock),
                hook: RwLock::new(Arc::new(NoHook)),
                cache: Mutex::new(Cache::default()),
            }),
        }
    }

    /// This handle with another clock (before it is cloned).
    pub fn with_clock(self, clock: impl Clock) -> Sessions<B> {
        let mut inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("with_clock must be called before the handle is cloned"));
        inner.clock = Arc::new(clock);
        Sessions {
            inner: Arc::new(inner),
        }
    }

    /// Registers the hook that closes connections and says whether they
    /// are live (replacing the previous one, for every clone).
    pub fn set_hook(&self, hook: impl ConnectionHook) {
        *self.inner.hook.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(hook);
    }

    fn hook(&self) -> Arc<dyn ConnectionHook> {
        Arc::clone(&self.inner.hook.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn backend(&self) -> &B {
        &self.inner.backend
    }

    pub fn config(&self) -> &SessionsConfig {
        &self.inner.config
    }

    /// Now, by this handle's clock.
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    fn cache_put(&self, session: Session) {
        let max = self.inner.config.cache_sessions_max;
        self.inner
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(session, max);
    }

    fn cache_drop(&self, id: SessionId) {
        self.inner
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .remove(&id);
    }

    fn cache_get(&self, id: SessionId) -> Option<Session> {
        self.inner
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .get(&id)
            .map(|(session, _)| session.clone())
    }

    /// The deadline to store: the seed's rule, a deadline in the past is
    /// replaced by the default validity from now.
    fn effective_valid_to(&self, valid_to_ms: u64) -> u64 {
        let now = self.now_ms();
        if valid_to_ms < now {
            now.saturating_add(self.inner.config.default_validity_ms)
        } else {
            valid_to_ms
        }
    }

    fn decode_session(&self, kv: &KeyValue) -> Result<Session> {
        let id = self.keys().session_id_of(&kv.key)?;
        let body = format::decode_session(&kv.key, &kv.value)?;
        Ok(Session {
            id,
            valid_to_ms: body.valid_to_ms,
            owner: body.owner,
            fence_token: kv.create_revision,
            revision: kv.mod_revision,
        })
    }

    fn decode_connection(&self, session: SessionId, kv: &KeyValue) -> Result<Connection> {
        let id = self.keys().connection_id_of(session, &kv.key)?;
        let body = format::decode_connection(&kv.key, &kv.value)?;
        Ok(Connection {
            session,
            id,
            data: body.data,
            revision: kv.mod_revision,
        })
    }

    // ---------------------------------------------------------------
    // Sessions
    // ---------------------------------------------------------------

    /// Creates or overwrites a session (unfenced: whoever saves it owns
    /// it). A deadline in the past becomes now + the default validity.
    /// Overwriting keeps the fence; saving after a removal starts a new
    /// incarnation with a new fence.
    pub async fn save_session(&self, spec: SessionSpec) -> Result<Session> {
        check_size("owner data", spec.owner.len(), OWNER_BYTES_MAX)?;
        let body = SessionBody {
            valid_to_ms: self.effective_valid_to(spec.valid_to_ms),
            owner: spec.owner,
        };
        let response = self
            .inner
            .backend
            .put(PutRequest {
                key: self.keys().session(spec.id),
                value: format::encode_session(&body),
                prev_kv: true,
                ..Default::default()
            })
            .await?;
        let revision = response.header.revision;
        let session = Session {
            id: spec.id,
            valid_to_ms: body.valid_to_ms,
            owner: body.owner,
            // The key's create_revision: its previous one when it
            // existed, else this put's.
            fence_token: response
                .prev_kv
                .map_or(revision, |previous| previous.create_revision),
            revision,
        };
        self.cache_put(session.clone());
        Ok(session)
    }

    /// [`Sessions::save_session`] by the holder of `fence`: refused with
    /// [`SessionsError::Fenced`] unless the stored session is that
    /// incarnation.
    pub async fn save_session_fenced(&self, spec: SessionSpec, fence: Fence) -> Result<Session> {
        if spec.id != fence.session {
            return Err(SessionsError::InvalidArgument(format!(
                "the fence is for session {}, not {}",
                fence.session, spec.id
            )));
        }
        check_size("owner data", spec.owner.len(), OWNER_BYTES_MAX)?;
        let key = self.keys().session(spec.id);
        let body = SessionBody {
            valid_to_ms: self.effective_valid_to(spec.valid_to_ms),
            owner: spec.owner,
        };
        let response = self
            .inner
            .backend
            .txn(TxnRequest {
                compare: vec![compare(
                    key.clone(),
                    CompareResult::Equal,
                    CompareTarget::Create(fence.token),
                )],
                success: vec![RequestOp::Put(PutRequest {
                    key: key.clone(),
                    value: format::encode_session(&body),
                    ..Default::default()
                })],
                failure: vec![range_op(key)],
            })
            .await?;
        if !response.succeeded {
            return Err(self.fenced(fence, &response));
        }
        let session = Session {
            id: spec.id,
            valid_to_ms: body.valid_to_ms,
            owner: body.owner,
            fence_token: fence.token,
            revision: response.header.revision,
        };
        self.cache_put(session.clone());
        Ok(session)
    }

    /// Moves the deadline of the session `fence` holds, keeping its
    /// owner data (a deadline in the past becomes the default).
    pub async fn renew_session(&self, fence: Fence, valid_to_ms: u64) -> Result<Session> {
        let current = match self.read_session(fence.session).await {
            Ok(session) => session,
            Err(SessionsError::SessionNotFound(_)) => {
                return Err(SessionsError::Fenced {
                    session: fence.session,
                    presented: fence.token,
                    current: None,
                })
            }
            Err(error) => return Err(error),
        };
        self.save_session_fenced(
            SessionSpec {
                id: fence.session,
                valid_to_ms,
                owner: current.owner,
            },
            fence,
        )
        .await
    }

    fn fenced(&self, fence: Fence, response: &TxnResponse) -> SessionsError {
        let current = first_range_kv(response).map(|kv| kv.create_revision);
        SessionsError::Fenced {
            session: fence.session,
            presented: fence.token,
            current,
        }
    }

    /// The session from the store (no cache).
    async fn read_session(&self, id: SessionId) -> Result<Session> {
        let kv = self
            .inner
            .backend
            .get(self.keys().session(id))
            .await?
            .ok_or(SessionsError::SessionNotFound(id))?;
        self.decode_session(&kv)
    }

    /// A session by id, from the cache or the store (see [`Staleness`]).
    pub async fn get_session(&self, id: SessionId, staleness: Staleness) -> Result<Session> {
        if staleness == Staleness::Ok {
            if let Some(session) = self.cache_get(id) {
                return Ok(session);
            }
        }
        match self.read_session(id).await {
            Ok(session) => {
                self.cache_put(session.clone());
                Ok(session)
            }
            Err(error) => {
                if matches!(error, SessionsError::SessionNotFound(_)) {
                    self.cache_drop(id);
                }
                Err(error)
            }
        }
    }

    /// Every session with `valid_to_ms >= valid_from_ms`, in id order
    /// (a scan of every session, [`SCAN_PAGE_SESSIONS`] at a time).
    pub async fn list_sessions(&self, valid_from_ms: u64) -> Result<Vec<Session>> {
        let mut found = Vec::new();
        for kv in self.scan_sessions().await? {
            let session = self.decode_session(&kv)?;
            if session.valid_to_ms >= valid_from_ms {
                found.push(session);
            }
        }
        Ok(found)
    }

    /// Every session key-value, page by page.
    async fn scan_sessions(&self) -> Result<Vec<KeyValue>> {
        let prefix = self.keys().sessions();
        let end = prefix_end(&prefix);
        let mut from = prefix;
        let mut all = Vec::new();
        loop {
            let page = self
                .inner
                .backend
                .range(RangeRequest {
                    key: from,
                    range_end: end.clone(),
                    limit: SCAN_PAGE_SESSIONS,
                    ..Default::default()
                })
                .await?;
            let Some(last) = page.kvs.last() else {
                break;
            };
            // The next page starts just after the last key read.
            let mut next = last.key.to_vec();
            next.push(0);
            from = Bytes::from(next);
            let more = page.more;
            all.extend(page.kvs);
            if !more {
                break;
            }
        }
        Ok(all)
    }

    /// Deletes the session and its connections (without closing them:
    /// see [`Sessions::close_session`]) and drops it from the cache.
    pub async fn remove_session(&self, id: SessionId) -> Result<()> {
        self.end_session(id, None).await.map(|_| ())
    }

    /// Deletes the session and all its connections, closes each through
    /// the hook, and returns them.
    pub async fn close_session(&self, id: SessionId) -> Result<Vec<Connection>> {
        let closed = self.end_session(id, None).await?;
        self.close_through_hook(&closed);
        Ok(closed)
    }

    /// [`Sessions::close_session`] by the holder of `fence`.
    pub async fn close_session_fenced(&self, fence: Fence) -> Result<Vec<Connection>> {
        let closed = self.end_session(fence.session, Some(fence.token)).await?;
        self.close_through_hook(&closed);
        Ok(closed)
    }

    fn close_through_hook(&self, connections: &[Connection]) {
        let hook = self.hook();
        for connection in connections {
            hook.close(connection);
        }
    }

    /// One txn: the session and its connections go together, if the
    /// session exists (and is the incarnation `token`, when given).
    async fn end_session(&self, id: SessionId, token: Option<i64>) -> Result<Vec<Connection>> {
        let key = self.keys().session(id);
        let connections = self.keys().connections(id);
        let guard = session_guard(key.clone(), token);
        let response = self
            .inner
            .backend
            .txn(TxnRequest {
                compare: vec![guard],
                success: vec![
                    RequestOp::DeleteRange(DeleteRangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    }),
                    RequestOp::DeleteRange(DeleteRangeRequest {
                        range_end: prefix_end(&connections),
                        key: connections,
                        prev_kv: true,
                    }),
                ],
                failure: vec![range_op(key)],
            })
            .await?;
        self.cache_drop(id);
        if !response.succeeded {
            return Err(match token {
                Some(token) => self.fenced(Fence { session: id, token }, &response),
                None => SessionsError::SessionNotFound(id),
            });
        }
        let deleted = response
            .responses
            .iter()
            .filter_map(|op| match op {
                ResponseOp::DeleteRange(delete) => Some(delete.prev_kvs.iter()),
                _ => None,
            })
            .flatten()
            .filter(|kv| kv.key.starts_with(&self.keys().connections(id)));
        Ok(self.decode_connections_lenient(id, deleted))
    }

    /// Connections that were deleted: a corrupt one is still reported
    /// (with empty data) so its removal is not lost on the hook.
    fn decode_connections_lenient<'a>(
        &self,
        session: SessionId,
        kvs: impl Iterator<Item = &'a KeyValue>,
    ) -> Vec<Connection> {
        kvs.filter_map(|kv| match self.decode_connection(session, kv) {
            Ok(connection) => Some(connection),
            Err(error) => {
                tracing::warn!(%error, "deleted a connection whose value is unreadable");
                let id = self.keys().connection_id_of(session, &kv.key).ok()?;
                Some(Connection {
                    session,
                    id,
                    data: Bytes::new(),
                    revision: kv.mod_revision,
                })
            }
        })
        .collect()
    }

    // ---------------------------------------------------------------
    // Connections
    // ---------------------------------------------------------------

    /// Saves a connection of the session `fence` holds: refused with
    /// [`SessionsError::Fenced`] unless that incarnation is stored, so a
    /// connection never outlives (or attaches to a later incarnation of)
    /// its session.
    pub async fn save_connection(
        &self,
        fence: Fence,
        id: ConnectionId,
        data: impl Into<Bytes>,
    ) -> Result<Connection> {
        self.put_connection(fence.session, Some(fence.token), id, data.into())
            .await
    }

    /// Saves a connection of whatever incarnation of `session` is stored
    /// ([`SessionsError::SessionNotFound`] when none is).
    pub async fn save_connection_unfenced(
        &self,
        session: SessionId,
        id: ConnectionId,
        data: impl Into<Bytes>,
    ) -> Result<Connection> {
        self.put_connection(session, None, id, data.into()).await
    }

    async fn put_connection(
        &self,
        session: SessionId,
        token: Option<i64>,
        id: ConnectionId,
        data: Bytes,
    ) -> Result<Connection> {
        check_size("connection data", data.len(), CONNECTION_DATA_BYTES_MAX)?;
        let session_key = self.keys().session(session);
        let guard = session_guard(session_key.clone(), token);
        let body = ConnectionBody { data };
        let response = self
            .inner
            .backend
            .txn(TxnRequest {
                compare: vec![guard],
                success: vec![RequestOp::Put(PutRequest {
                    key: self.keys().connection(session, id),
                    value: format::encode_connection(&body),
                    ..Default::default()
                })],
                failure: vec![range_op(session_key)],
            })
            .await?;
        if !response.succeeded {
            return Err(match token {
                Some(token) => self.fenced(Fence { session, token }, &response),
                None => SessionsError::SessionNotFound(session),
            });
        }
        Ok(Connection {
            session,
            id,
            data: body.data,
            revision: response.header.revision,
        })
    }

    pub async fn get_connection(&self, session: SessionId, id: ConnectionId) -> Result<Connection> {
        let kv = self
            .inner
            .backend
            .get(self.keys().connection(session, id))
            .await?
            .ok_or(SessionsError::ConnectionNotFound {
                session,
                connection: id,
            })?;
        self.decode_connection(session, &kv)
    }

    /// Every connection of `session`, in id order (empty when it has none
    /// or does not exist).
    pub async fn list_connections(&self, session: SessionId) -> Result<Vec<Connection>> {
        let (connections, _) = self.read_connections(session).await?;
        connections
            .iter()
            .map(|kv| self.decode_connection(session, kv))
            .collect()
    }

    /// The connection key-values of `session` and the revision read at.
    async fn read_connections(&self, session: SessionId) -> Result<(Vec<KeyValue>, i64)> {
        let response = self
            .inner
            .backend
            .get_prefix(self.keys().connections(session))
            .await?;
        Ok((response.kvs, response.header.revision))
    }

    /// Deletes a connection (without closing it).
    pub async fn remove_connection(&self, session: SessionId, id: ConnectionId) -> Result<()> {
        self.delete_connection(session, id).await.map(|_| ())
    }

    /// Deletes a connection and closes it through the hook. Like the
    /// seed, fails when it does not exist.
    pub async fn close_connection(
        &self,
        session: SessionId,
        id: ConnectionId,
    ) -> Result<Connection> {
        let connection = self.delete_connection(session, id).await?;
        self.close_through_hook(std::slice::from_ref(&connection));
        Ok(connection)
    }

    async fn delete_connection(&self, session: SessionId, id: ConnectionId) -> Result<Connection> {
        let response = self
            .inner
            .backend
            .delete_range(DeleteRangeRequest {
                key: self.keys().connection(session, id),
                prev_kv: true,
                ..Default::default()
            })
            .await?;
        let mut deleted = self.decode_connections_lenient(session, response.prev_kvs.iter());
        match deleted.pop() {
            Some(connection) => Ok(connection),
            None => Err(SessionsError::ConnectionNotFound {
                session,
                connection: id,
            }),
        }
    }

    // ---------------------------------------------------------------
    // Clean-up
    // ---------------------------------------------------------------

    /// Extends every expired session that has a live connection and
    /// deletes the others with their connections (closing those through
    /// the hook). Safe to run anywhere, any time, concurrently with
    /// anything: each decision is a guarded txn.
    pub async fn clear_sessions(&self) -> Result<ClearReport> {
        let plan = self.plan_clear().await?;
        self.apply_clear(plan).await
    }

    /// The first half of [`Sessions::clear_sessions`]: reads and decides.
    pub async fn plan_clear(&self) -> Result<ClearPlan> {
        let now_ms = self.now_ms();
        let hook = self.hook();
        let mut plan = ClearPlan {
            now_ms,
            ..Default::default()
        };
        for kv in self.scan_sessions().await? {
            let session = match self.decode_session(&kv) {
                Ok(session) => session,
                Err(error) => {
                    tracing::warn!(%error, "leaving an unreadable session alone");
                    plan.corrupt
                        .push(String::from_utf8_lossy(&kv.key).into_owned());
                    continue;
                }
            };
            if !session.is_expired(now_ms) {
                continue;
            }
            let (kvs, read_revision) = self.read_connections(session.id).await?;
            let connections = self.decode_connections_lenient(session.id, kvs.iter());
            // An unreadable connection still counts as one: its key is
            // there (the default liveness rule), and a lenient decode
            // keeps it in the list.
            if connections.iter().any(|c| hook.is_live(c)) {
                plan.decisions.push(Decision::Extend {
                    valid_to_ms: now_ms.saturating_add(self.inner.config.default_validity_ms),
                    session,
                });
            } else {
                plan.decisions.push(Decision::Delete {
                    session,
                    connections,
                    read_revision,
                });
            }
        }
        Ok(plan)
    }

    /// The second half of [`Sessions::clear_sessions`]: applies each
    /// decision unless its session (or its connections) changed since
    /// the plan read them.
    pub async fn apply_clear(&self, plan: ClearPlan) -> Result<ClearReport> {
        self.apply_clear_guarded(plan, None).await
    }

    /// As [`Sessions::apply_clear`]; with `cleaner_lease`, every txn also
    /// requires the cleaner key to be held by that lease, and losing it
    /// stops the clean-up with [`SessionsError::NotCleaner`].
    pub(crate) async fn apply_clear_guarded(
        &self,
        plan: ClearPlan,
        cleaner_lease: Option<i64>,
    ) -> Result<ClearReport> {
        let mut report = ClearReport {
            corrupt: plan.corrupt,
            ..Default::default()
        };
        let cleaner = self.keys().cleaner();
        for decision in plan.decisions {
            let session = match &decision {
                Decision::Extend { session, .. } | Decision::Delete { session, .. } => {
                    session.clone()
                }
            };
            let key = self.keys().session(session.id);
            // A save, renewal or removal since the read changes the
            // mod_revision: the decision is then stale and dropped.
            let mut guards = vec![compare(
                key.clone(),
                CompareResult::Equal,
                CompareTarget::Mod(session.revision),
            )];
            if let Some(lease) = cleaner_lease {
                guards.push(compare(
                    cleaner.clone(),
                    CompareResult::Equal,
                    CompareTarget::Lease(lease),
                ));
            }
            let success = match &decision {
                Decision::Extend { valid_to_ms, .. } => {
                    vec![RequestOp::Put(PutRequest {
                        key: key.clone(),
                        value: format::encode_session(&SessionBody {
                            valid_to_ms: *valid_to_ms,
                            owner: session.owner.clone(),
                        }),
                        ..Default::default()
                    })]
                }
                Decision::Delete { read_revision, .. } => {
                    let connections = self.keys().connections(session.id);
                    // No connection created or changed since the read:
                    // every key of the range has mod_revision <= it (an
                    // empty range compares as a zero key, and holds).
                    guards.push(Compare {
                        result: CompareResult::Less,
                        target: CompareTarget::Mod(read_revision + 1),
                        range_end: prefix_end(&connections),
                        key: connections.clone(),
                    });
                    vec![
                        RequestOp::DeleteRange(DeleteRangeRequest {
                            key: key.clone(),
                            ..Default::default()
                        }),
                        RequestOp::DeleteRange(DeleteRangeRequest {
                            range_end: prefix_end(&connections),
                            key: connections,
                            prev_kv: true,
                        }),
                    ]
                }
            };
            let failure = match cleaner_lease {
                Some(_) => vec![range_op(cleaner.clone())],
                None => Vec::new(),
            };
            let response = self
                .inner
                .backend
                .txn(TxnRequest {
                    compare: guards,
                    success,
                    failure,
                })
                .await?;
            if !response.succeeded {
                if let Some(lease) = cleaner_lease {
                    if first_range_kv(&response).map(|kv| kv.lease) != Some(lease) {
                        return Err(SessionsError::NotCleaner);
                    }
                }
                report.skipped.push(session.id);
                continue;
            }
            match decision {
                Decision::Extend { valid_to_ms, .. } => {
                    self.cache_put(Session {
                        valid_to_ms,
                        revision: response.header.revision,
                        ..session.clone()
                    });
                    report.extended.push(session.id);
                }
                Decision::Delete { .. } => {
                    self.cache_drop(session.id);
                    let prefix = self.keys().connections(session.id);
                    let deleted = response
                        .responses
                        .iter()
                        .filter_map(|op| match op {
                            ResponseOp::DeleteRange(delete) => Some(delete.prev_kvs.iter()),
                            _ => None,
                        })
                        .flatten()
                        .filter(|kv| kv.key.starts_with(&prefix));
                    let closed = self.decode_connections_lenient(session.id, deleted);
                    self.close_through_hook(&closed);
                    report.connections_closed += closed.len();
                    report.deleted.push(session.id);
                }
            }
        }
        Ok(report)
    }

    // ---------------------------------------------------------------
    // Cluster state documents
    // ---------------------------------------------------------------

    /// Saves the cluster state document `id` (overwriting it).
    pub async fn save_state(&self, id: &str, value: impl Into<Bytes>) -> Result<()> {
        check_state_id(id)?;
        let value = value.into();
        check_size("cluster state document", value.len(), STATE_BYTES_MAX)?;
        self.inner
            .backend
            .put(PutRequest {
                key: self.keys().state(id),
                value: format::frame(format::STATE_MAGIC, &value),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// The cluster state document `id`.
    pub async fn get_state(&self, id: &str) -> Result<Bytes> {
        check_state_id(id)?;
        let kv = self
            .inner
            .backend
            .get(self.keys().state(id))
            .await?
            .ok_or_else(|| SessionsError::StateNotFound(id.to_string()))?;
        format::unframe(format::STATE_MAGIC, &kv.key, &kv.value)
    }

    /// Deletes the cluster state document `id`; fails when it does not
    /// exist.
    pub async fn clear_state(&self, id: &str) -> Result<()> {
        check_state_id(id)?;
        let response = self
            .inner
            .backend
            .delete_range(DeleteRangeRequest {
                key: self.keys().state(id),
                ..Default::default()
            })
            .await?;
        if response.deleted == 0 {
            return Err(SessionsError::StateNotFound(id.to_string()));
        }
        Ok(())
    }

    /// [`Sessions::save_state`] of [`CLUSTER_STATE_ID`].
    pub async fn save_cluster_state(&self, value: impl Into<Bytes>) -> Result<()> {
        self.save_state(CLUSTER_STATE_ID, value).await
    }

    /// [`Sessions::get_state`] of [`CLUSTER_STATE_ID`].
    pub async fn get_cluster_state(&self) -> Result<Bytes> {
        self.get_state(CLUSTER_STATE_ID).await
    }

    /// [`Sessions::clear_state`] of [`CLUSTER_STATE_ID`].
    pub async fn clear_cluster_state(&self) -> Result<()> {
        self.clear_state(CLUSTER_STATE_ID).await
    }
}

fn check_size(what: &'static str, bytes: usize, limit_bytes: usize) -> Result<()> {
    if bytes > limit_bytes {
        return Err(SessionsError::TooLarge {
            what,
            bytes,
            limit_bytes,
        });
    }
    Ok(())
}

fn check_state_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > STATE_ID_BYTES_MAX {
        return Err(SessionsError::InvalidArgument(format!(
            "a cluster state id must be 1 to {STATE_ID_BYTES_MAX} bytes"
        )));
    }
    Ok(())
}
