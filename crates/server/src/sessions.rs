//! chorus-sessions in a member: the `chorus.sessions.v1` gRPC service,
//! admin HTTP JSON (`GET /sessions`, `GET /sessions/{id}`), and the
//! periodic cleaner.
//!
//! Everything works on the member's own store (an [`EmbeddedKv`]
//! attached to its key-value server, so writes go through Raft to the
//! leader like any client write), under the default prefix
//! `chorus/sessions/`. The gRPC service and each HTTP router have a
//! session cache of their own ([`Staleness::Ok`] answers from it).
//!
//! The cleaner starts only once the sessions namespace holds a key: a
//! member whose clients never use sessions writes nothing for them (no
//! lease, no election key), so it stays a plain etcd-compatible store.
//! Every member runs one; the lease-backed election lets one clean.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use chorus_backend::{BackendError, EmbeddedKv, KvBackend, RangeRequest, WatchRequest};
use chorus_sessions::{
    CleanerConfig, ClearReport, Connection, ConnectionHook, ConnectionId, Fence, Session,
    SessionId, SessionSpec, Sessions, SessionsConfig, SessionsError, Staleness, CLUSTER_STATE_ID,
};
use tonic::{Request, Response, Status};

use crate::backend::Backend;
use crate::pb::sessions as pb;
use crate::pb::sessions::sessions_server::SessionsServer;

/// Pause before looking again when the store could not be read while
/// waiting for the first session.
const CLEANER_START_RETRY: Duration = Duration::from_secs(1);

/// The namespace a member serves, on its attached store.
pub(crate) fn namespace(store: EmbeddedKv, config: SessionsConfig) -> Sessions<EmbeddedKv> {
    let sessions = Sessions::new(store, config);
    sessions.set_hook(LogHook);
    sessions
}

/// A member has no connection processes of its own to close: it reports
/// the close in its log (clients learn of it from the RPC's answer).
struct LogHook;

impl ConnectionHook for LogHook {
    fn close(&self, connection: &Connection) {
        tracing::info!(session = %connection.session, connection = %connection.id, "closed a session connection");
    }
}

/// The gRPC service, for `serve_grpc`.
pub(crate) fn service(
    backend: &Arc<Backend>,
    limit_bytes: usize,
) -> SessionsServer<SessionsService> {
    SessionsServer::new(SessionsService(backend.sessions.clone()))
        .max_decoding_message_size(limit_bytes)
}

/// Starts the member's cleaner (see the module docs); it stops when the
/// member does.
pub(crate) fn start_cleaner(backend: &Arc<Backend>, config: CleanerConfig) {
    let backend = Arc::clone(backend);
    tokio::spawn(async move {
        let sessions = backend.sessions.clone();
        tokio::select! {
            _ = backend.stopped() => return,
            _ = wait_for_first_key(&sessions) => {}
        }
        let cleaner = sessions.spawn_cleaner(config);
        backend.stopped().await;
        cleaner.stop().await;
    });
}

/// Returns once the sessions namespace holds a key.
async fn wait_for_first_key(sessions: &Sessions<EmbeddedKv>) {
    let prefix = Bytes::from(sessions.config().prefix.clone());
    let store = sessions.backend();
    loop {
        let range = RangeRequest {
            range_end: chorus_backend::prefix_end(&prefix),
            key: prefix.clone(),
            limit: 1,
            keys_only: true,
            ..Default::default()
        };
        let revision = match store.range(range).await {
            Ok(found) if !found.kvs.is_empty() => return,
            Ok(found) => found.header.revision,
            Err(error) => {
                tracing::debug!(%error, "sessions cleaner: reading the namespace failed");
                tokio::time::sleep(CLEANER_START_RETRY).await;
                continue;
            }
        };
        let request = WatchRequest::prefix(prefix.clone()).from_revision(revision + 1);
        match store.watch(request).await {
            Ok(mut watch) => {
                if let Some(Ok(_)) = watch.next().await {
                    return;
                }
            }
            Err(error) => tracing::debug!(%error, "sessions cleaner: watching failed"),
        }
        tokio::time::sleep(CLEANER_START_RETRY).await;
    }
}

/// A sessions error as a gRPC status (the proto's table).
fn status(error: SessionsError) -> Status {
    let message = format!("chorus: {error}");
    match error {
        SessionsError::SessionNotFound(_)
        | SessionsError::ConnectionNotFound { .. }
        | SessionsError::StateNotFound(_) => Status::not_found(message),
        SessionsError::Fenced { .. } | SessionsError::NotCleaner => {
            Status::failed_precondition(message)
        }
        SessionsError::InvalidArgument(_) | SessionsError::TooLarge { .. } => {
            Status::invalid_argument(message)
        }
        SessionsError::Corrupt { .. } => Status::data_loss(message),
        SessionsError::Backend(BackendError::Unavailable(_) | BackendError::Closed) => {
            Status::unavailable(message)
        }
        SessionsError::Backend(BackendError::Indeterminate(_)) => Status::unknown(message),
        SessionsError::Backend(BackendError::Kv(_) | BackendError::Failed(_)) => {
            Status::internal(message)
        }
    }
}

fn parse<T: std::str::FromStr<Err = SessionsError>>(text: &str) -> Result<T, Status> {
    text.parse().map_err(status)
}

fn state_id(id: &str) -> &str {
    if id.is_empty() {
        CLUSTER_STATE_ID
    } else {
        id
    }
}

fn session_pb(session: &Session) -> pb::Session {
    pb::Session {
        id: session.id.to_string(),
        valid_to_ms: session.valid_to_ms,
        owner: session.owner.clone(),
        fence: session.fence_token,
        revision: session.revision,
    }
}

fn connection_pb(connection: &Connection) -> pb::Connection {
    pb::Connection {
        session: connection.session.to_string(),
        id: connection.id.to_string(),
        data: connection.data.clone(),
        revision: connection.revision,
    }
}

fn strings(ids: &[SessionId]) -> Vec<String> {
    ids.iter().map(ToString::to_string).collect()
}

fn clear_pb(report: &ClearReport) -> pb::ClearSessionsReply {
    pb::ClearSessionsReply {
        extended: strings(&report.extended),
        deleted: strings(&report.deleted),
        skipped: strings(&report.skipped),
        connections_closed: report.connections_closed as u64,
        corrupt: report.corrupt.clone(),
    }
}

pub(crate) struct SessionsService(Sessions<EmbeddedKv>);

#[tonic::async_trait]
impl pb::sessions_server::Sessions for SessionsService {
    async fn save_session(
        &self,
        request: Request<pb::SaveSessionRequest>,
    ) -> Result<Response<pb::SessionReply>, Status> {
        let request = request.into_inner();
        let id = if request.id.is_empty() {
            SessionId::random()
        } else {
            parse(&request.id)?
        };
        let spec = SessionSpec {
            id,
            valid_to_ms: request.valid_to_ms,
            owner: request.owner,
        };
        let session = if request.fence == 0 {
            self.0.save_session(spec).await
        } else {
            let fence = Fence {
                session: id,
                token: request.fence,
            };
            self.0.save_session_fenced(spec, fence).await
        }
        .map_err(status)?;
        Ok(Response::new(pb::SessionReply {
            session: Some(session_pb(&session)),
        }))
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::SessionReply>, Status> {
        let request = request.into_inner();
        let staleness = if request.update_before {
            Staleness::UpdateBefore
        } else {
            Staleness::Ok
        };
        let session = self
            .0
            .get_session(parse(&request.id)?, staleness)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SessionReply {
            session: Some(session_pb(&session)),
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsReply>, Status> {
        let sessions = self
            .0
            .list_sessions(request.into_inner().valid_from_ms)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListSessionsReply {
            sessions: sessions.iter().map(session_pb).collect(),
        }))
    }

    async fn remove_session(
        &self,
        request: Request<pb::SessionRequest>,
    ) -> Result<Response<pb::RemoveReply>, Status> {
        let request = request.into_inner();
        let id = parse(&request.id)?;
        if request.fence != 0 {
            return Err(Status::invalid_argument(
                "chorus: RemoveSession is unfenced; use CloseSession with a fence",
            ));
        }
        self.0.remove_session(id).await.map_err(status)?;
        Ok(Response::new(pb::RemoveReply {}))
    }

    async fn close_session(
        &self,
        request: Request<pb::SessionRequest>,
    ) -> Result<Response<pb::CloseSessionReply>, Status> {
        let request = request.into_inner();
        let id = parse(&request.id)?;
        let closed = if request.fence == 0 {
            self.0.close_session(id).await
        } else {
            self.0
                .close_session_fenced(Fence {
                    session: id,
                    token: request.fence,
                })
                .await
        }
        .map_err(status)?;
        Ok(Response::new(pb::CloseSessionReply {
            closed: closed.iter().map(connection_pb).collect(),
        }))
    }

    async fn save_connection(
        &self,
        request: Request<pb::SaveConnectionRequest>,
    ) -> Result<Response<pb::ConnectionReply>, Status> {
        let request = request.into_inner();
        let session: SessionId = parse(&request.session)?;
        let id = if request.id.is_empty() {
            ConnectionId::random()
        } else {
            parse(&request.id)?
        };
        let connection = if request.fence == 0 {
            self.0
                .save_connection_unfenced(session, id, request.data)
                .await
        } else {
            let fence = Fence {
                session,
                token: request.fence,
            };
            self.0.save_connection(fence, id, request.data).await
        }
        .map_err(status)?;
        Ok(Response::new(pb::ConnectionReply {
            connection: Some(connection_pb(&connection)),
        }))
    }

    async fn get_connection(
        &self,
        request: Request<pb::ConnectionRequest>,
    ) -> Result<Response<pb::ConnectionReply>, Status> {
        let request = request.into_inner();
        let connection = self
            .0
            .get_connection(parse(&request.session)?, parse(&request.id)?)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ConnectionReply {
            connection: Some(connection_pb(&connection)),
        }))
    }

    async fn list_connections(
        &self,
        request: Request<pb::ListConnectionsRequest>,
    ) -> Result<Response<pb::ListConnectionsReply>, Status> {
        let connections = self
            .0
            .list_connections(parse(&request.into_inner().session)?)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListConnectionsReply {
            connections: connections.iter().map(connection_pb).collect(),
        }))
    }

    async fn remove_connection(
        &self,
        request: Request<pb::ConnectionRequest>,
    ) -> Result<Response<pb::RemoveReply>, Status> {
        let request = request.into_inner();
        self.0
            .remove_connection(parse(&request.session)?, parse(&request.id)?)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RemoveReply {}))
    }

    async fn close_connection(
        &self,
        request: Request<pb::ConnectionRequest>,
    ) -> Result<Response<pb::ConnectionReply>, Status> {
        let request = request.into_inner();
        let connection = self
            .0
            .close_connection(parse(&request.session)?, parse(&request.id)?)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ConnectionReply {
            connection: Some(connection_pb(&connection)),
        }))
    }

    async fn clear_sessions(
        &self,
        _request: Request<pb::ClearSessionsRequest>,
    ) -> Result<Response<pb::ClearSessionsReply>, Status> {
        let report = self.0.clear_sessions().await.map_err(status)?;
        Ok(Response::new(clear_pb(&report)))
    }

    async fn save_state(
        &self,
        request: Request<pb::SaveStateRequest>,
    ) -> Result<Response<pb::RemoveReply>, Status> {
        let request = request.into_inner();
        self.0
            .save_state(state_id(&request.id), request.value)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RemoveReply {}))
    }

    async fn get_state(
        &self,
        request: Request<pb::StateRequest>,
    ) -> Result<Response<pb::StateReply>, Status> {
        let value = self
            .0
            .get_state(state_id(&request.into_inner().id))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::StateReply { value }))
    }

    async fn clear_state(
        &self,
        request: Request<pb::StateRequest>,
    ) -> Result<Response<pb::RemoveReply>, Status> {
        self.0
            .clear_state(state_id(&request.into_inner().id))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RemoveReply {}))
    }
}

// ---------------------------------------------------------------------
// Admin HTTP JSON
// ---------------------------------------------------------------------

/// `GET /sessions[?valid_from_ms=T]` (every session, or those valid at
/// or after T) and `GET /sessions/{id}` (one session, read from the
/// store, with its connections).
pub(crate) fn routes(backend: &Arc<Backend>) -> axum::Router {
    let sessions = backend.sessions.clone();
    let one = sessions.clone();
    axum::Router::new()
        .route(
            "/sessions",
            get(move |RawQuery(query): RawQuery| {
                let sessions = sessions.clone();
                async move { list_json(&sessions, query.as_deref()).await }
            }),
        )
        .route(
            "/sessions/{id}",
            get(move |Path(id): Path<String>| {
                let sessions = one.clone();
                async move { session_json(&sessions, &id).await }
            }),
        )
}

type JsonReply = (
    StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    String,
);

fn json(code: StatusCode, body: String) -> JsonReply {
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
}

fn error_json(error: SessionsError) -> JsonReply {
    let code = match &error {
        SessionsError::SessionNotFound(_)
        | SessionsError::ConnectionNotFound { .. }
        | SessionsError::StateNotFound(_) => StatusCode::NOT_FOUND,
        SessionsError::InvalidArgument(_) | SessionsError::TooLarge { .. } => {
            StatusCode::BAD_REQUEST
        }
        error if error.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json(code, format!("{{\"error\":{}}}", quote(&error.to_string())))
}

async fn list_json(sessions: &Sessions<EmbeddedKv>, query: Option<&str>) -> JsonReply {
    let mut valid_from_ms = 0;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("valid_from_ms", value)) => match value.parse() {
                Ok(ms) => valid_from_ms = ms,
                Err(_) => {
                    return error_json(SessionsError::InvalidArgument(format!(
                        "valid_from_ms={value:?} is not a number of milliseconds"
                    )))
                }
            },
            _ => {
                return error_json(SessionsError::InvalidArgument(format!(
                    "unknown query parameter {pair:?}"
                )))
            }
        }
    }
    match sessions.list_sessions(valid_from_ms).await {
        Ok(list) => {
            let items: Vec<String> = list.iter().map(|s| session_object(s, None)).collect();
            json(
                StatusCode::OK,
                format!(
                    "{{\"now_ms\":{},\"sessions\":[{}]}}",
                    sessions.now_ms(),
                    items.join(",")
                ),
            )
        }
        Err(error) => error_json(error),
    }
}

async fn session_json(sessions: &Sessions<EmbeddedKv>, id: &str) -> JsonReply {
    let id: SessionId = match id.parse() {
        Ok(id) => id,
        Err(error) => return error_json(error),
    };
    let session = match sessions.get_session(id, Staleness::UpdateBefore).await {
        Ok(session) => session,
        Err(error) => return error_json(error),
    };
    match sessions.list_connections(id).await {
        Ok(connections) => json(StatusCode::OK, session_object(&session, Some(&connections))),
        Err(error) => error_json(error),
    }
}

fn session_object(session: &Session, connections: Option<&[Connection]>) -> String {
    let mut out = format!(
        "{{\"id\":\"{}\",\"valid_to_ms\":{},\"fence\":{},\"revision\":{},{}",
        session.id,
        session.valid_to_ms,
        session.fence_token,
        session.revision,
        bytes_fields("owner", &session.owner)
    );
    if let Some(connections) = connections {
        let items: Vec<String> = connections
            .iter()
            .map(|c| {
                format!(
                    "{{\"id\":\"{}\",\"revision\":{},{}}}",
                    c.id,
                    c.revision,
                    bytes_fields("data", &c.data)
                )
            })
            .collect();
        out.push_str(&format!(",\"connections\":[{}]", items.join(",")));
    }
    out.push('}');
    out
}

/// `"<name>":<text or null>,"<name>_hex":"<hex>"`: bytes are opaque, so
/// both a readable and an exact form.
fn bytes_fields(name: &str, bytes: &[u8]) -> String {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => quote(text),
        Err(_) => "null".into(),
    };
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{name}\":{text},\"{name}_hex\":\"{hex}\"")
}

/// A JSON string literal.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(quote("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        assert_eq!(bytes_fields("x", &[0xff]), "\"x\":null,\"x_hex\":\"ff\"");
    }
}
