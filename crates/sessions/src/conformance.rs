//! The scenarios every backend runs (feature `conformance`): written once,
//! generic over [`KvBackend`], run on the embedded store, a real etcd and
//! `chorus serve` (over the etcd backend and attached to its members).
//!
//! Each scenario works under its own prefix, so they share one store.
//! Time is a [`ManualClock`]: expiry is decided by the test, never by
//! waiting. The only real waits are the cleaner's election (a lease and
//! a retry loop), bounded by [`PATIENCE`] as a hang guard.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chorus_backend::{KvBackend, PutRequest};

use crate::{
    CleanerConfig, Connection, ConnectionHook, ConnectionId, Decision, ManualClock, SessionId,
    SessionSpec, Sessions, SessionsConfig, SessionsError, Staleness,
};

/// The default validity of the scenarios' namespaces.
pub const VALIDITY_MS: u64 = 60_000;
/// Where the scenarios' clocks start (any fixed instant).
pub const START_MS: u64 = 1_700_000_000_000;
/// Longest wait for anything in a scenario: a hang guard, not a timing.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Runs every scenario that needs no restart, on `handles` (one or more
/// handles on the same store: several nodes where possible).
pub async fn run<B: KvBackend>(handles: &[B], prefix: &str) {
    assert!(!handles.is_empty(), "at least one handle");
    let first = &handles[0];
    save_and_get(first, &format!("{prefix}/save/")).await;
    list_by_valid_to(first, &format!("{prefix}/list/")).await;
    cache_modes(handles, &format!("{prefix}/cache/")).await;
    connections(first, &format!("{prefix}/connections/")).await;
    clear_rules(first, &format!("{prefix}/clear/")).await;
    concurrent_save_wins(handles, &format!("{prefix}/race/")).await;
    fencing(handles, &format!("{prefix}/fence/")).await;
    state_documents(first, &format!("{prefix}/state/")).await;
    corrupt_values(first, &format!("{prefix}/corrupt/")).await;
    concurrent_handles(handles, &format!("{prefix}/concurrent/")).await;
    cleaner_election(handles, &format!("{prefix}/cleaner/")).await;
}

/// A namespace under `prefix` with the scenarios' validity and `clock`.
pub fn namespace<B: KvBackend>(backend: B, prefix: &str, clock: &ManualClock) -> Sessions<B> {
    Sessions::new(
        backend,
        SessionsConfig {
            prefix: prefix.to_string(),
            default_validity_ms: VALIDITY_MS,
            ..SessionsConfig::default()
        },
    )
    .with_clock(clock.clone())
}

/// Awaits `future`, failing the test if it hangs.
pub async fn guard<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("hung: {what}"))
}

/// A hook that records closes and reports chosen connections as dead.
#[derive(Clone, Default)]
pub struct RecordingHook {
    pub closed: Arc<Mutex<Vec<ConnectionId>>>,
    pub dead: Arc<Mutex<HashSet<ConnectionId>>>,
}

impl RecordingHook {
    pub fn closed(&self) -> Vec<ConnectionId> {
        self.closed.lock().expect("hook lock").clone()
    }

    pub fn kill(&self, id: ConnectionId) {
        self.dead.lock().expect("hook lock").insert(id);
    }
}

impl ConnectionHook for RecordingHook {
    fn is_live(&self, connection: &Connection) -> bool {
        !self
            .dead
            .lock()
            .expect("hook lock")
            .contains(&connection.id)
    }

    fn close(&self, connection: &Connection) {
        self.closed.lock().expect("hook lock").push(connection.id);
    }
}

fn spec(id: SessionId, valid_to_ms: u64, owner: &'static str) -> SessionSpec {
    SessionSpec {
        id,
        valid_to_ms,
        owner: Bytes::from_static(owner.as_bytes()),
    }
}

fn ids(sessions: &[crate::Session]) -> BTreeSet<SessionId> {
    sessions.iter().map(|s| s.id).collect()
}

/// Saving (the past-deadline rule, fences, revisions), reading, and every
/// missing-document case as a typed error.
pub async fn save_and_get<B: KvBackend>(backend: &B, prefix: &str) {
    let clock = ManualClock::new(START_MS);
    let sessions = namespace(backend.clone(), prefix, &clock);
    let now = START_MS;

    let fresh = sessions
        .save_session(SessionSpec::new(0, "owner"))
        .await
        .expect("save");
    assert_eq!(fresh.valid_to_ms, now + VALIDITY_MS, "0 is in the past");
    assert_eq!(fresh.fence_token, fresh.revision, "a new key: created now");
    let past = sessions
        .save_session(SessionSpec::new(now - 1, "o"))
        .await
        .expect("save");
    assert_eq!(past.valid_to_ms, now + VALIDITY_MS, "a past deadline");
    let exact = sessions
        .save_session(SessionSpec::new(now, "o"))
        .await
        .expect("save");
    assert_eq!(exact.valid_to_ms, now, "now is not in the past");
    let later = sessions
        .save_session(SessionSpec::new(now + 5, "o"))
        .await
        .expect("save");
    assert_eq!(
        later.valid_to_ms,
        now + 5,
        "a future deadline is kept exactly"
    );

    // Overwriting keeps the incarnation (fence), moves the revision.
    let again = sessions
        .save_session(spec(fresh.id, now + 7, "owner-2"))
        .await
        .expect("overwrite");
    assert_eq!(again.fence_token, fresh.fence_token);
    assert!(again.revision > fresh.revision);
    let read = sessions
        .get_session(fresh.id, Staleness::UpdateBefore)
        .await
        .expect("get");
    assert_eq!(read, again);
    assert_eq!(read.owner, "owner-2");

    // The seed's no_return cases, typed.
    let nobody = SessionId::random();
    let nothing = ConnectionId::random();
    for staleness in [Staleness::Ok, Staleness::UpdateBefore] {
        assert_eq!(
            sessions.get_session(nobody, staleness).await,
            Err(SessionsError::SessionNotFound(nobody))
        );
    }
    assert_eq!(
        sessions.remove_session(nobody).await,
        Err(SessionsError::SessionNotFound(nobody))
    );
    assert_eq!(
        sessions.close_session(nobody).await,
        Err(SessionsError::SessionNotFound(nobody))
    );
    let missing_connection = SessionsError::ConnectionNotFound {
        session: fresh.id,
        connection: nothing,
    };
    assert_eq!(
        sessions.get_connection(fresh.id, nothing).await,
        Err(missing_connection.clone())
    );
    assert_eq!(
        sessions.remove_connection(fresh.id, nothing).await,
        Err(missing_connection.clone())
    );
    assert_eq!(
        sessions.close_connection(fresh.id, nothing).await,
        Err(missing_connection)
    );
    assert_eq!(
        sessions
            .save_connection_unfenced(nobody, nothing, "x")
            .await,
        Err(SessionsError::SessionNotFound(nobody))
    );
    assert_eq!(
        sessions.list_connections(nobody).await,
        Ok(Vec::new()),
        "listing is a select, not a lookup"
    );
    assert!(matches!(
        "not-a-uuid".parse::<SessionId>(),
        Err(SessionsError::InvalidArgument(_))
    ));
    let huge = Bytes::from(vec![0u8; crate::OWNER_BYTES_MAX + 1]);
    assert!(matches!(
        sessions.save_session(SessionSpec::new(0, huge)).await,
        Err(SessionsError::TooLarge { .. })
    ));
}

/// `list_sessions(t)` returns exactly the sessions with `valid_to >= t`.
pub async fn list_by_valid_to<B: KvBackend>(backend: &B, prefix: &str) {
    let clock = ManualClock::new(START_MS);
    let sessions = namespace(backend.clone(), prefix, &clock);
    let mut saved = BTreeMap::new();
    // More than one scan page, so paging is exercised.
    let count = crate::SCAN_PAGE_SESSIONS as u64 + 4;
    for i in 0..count {
        let session = sessions
            .save_session(SessionSpec::new(START_MS + 10 * i, "o"))
            .await
            .expect("save");
        saved.insert(session.id, session.valid_to_ms);
    }
    for from in [
        0,
        START_MS,
        START_MS + 10,
        START_MS + 15,
        START_MS + 10 * (count - 1),
        START_MS + 10 * count,
    ] {
        let listed = sessions.list_sessions(from).await.expect("list");
        let expected: BTreeSet<SessionId> = saved
            .iter()
            .filter(|(_, valid_to)| **valid_to >= from)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(ids(&listed), expected, "valid_to >= {from}");
        let mut sorted = listed.clone();
        sorted.sort_by_key(|s| s.id.to_string());
        assert_eq!(listed, sorted, "in id order");
    }
}

/// `Staleness::Ok` answers from the handle's cache (stale allowed),
/// `UpdateBefore` from the store, refreshing the cache.
pub async fn cache_modes<B: KvBackend>(handles: &[B], prefix: &str) {
    let clock = ManualClock::new(START_MS);
    let writer = namespace(handles[0].clone(), prefix, &clock);
    let reader = namespace(handles[handles.len() - 1].clone(), prefix, &clock);
    let id = SessionId::random();
    let v1 = writer
        .save_session(spec(id, START_MS + 1, "v1"))
        .await
        .expect("save");
    assert_eq!(
        reader.get_session(id, Staleness::Ok).await,
        Ok(v1.clone()),
        "a miss reads the store"
    );
    let v2 = writer
        .save_session(spec(id, START_MS + 2, "v2"))
        .await
        .expect("save");
    assert_eq!(
        reader.get_session(id, Staleness::Ok).await,
        Ok(v1.clone()),
        "stale ok"
    );
    assert_eq!(
        writer.get_session(id, Staleness::Ok).await,
        Ok(v2.clone()),
        "the writer's cache has its own save"
    );
    assert_eq!(
        reader.get_session(id, Staleness::UpdateBefore).await,
        Ok(v2.clone())
    );
    assert_eq!(
        reader.get_session(id, Staleness::Ok).await,
        Ok(v2.clone()),
        "refreshed"
    );

    writer.remove_session(id).await.expect("remove");
    assert_eq!(
        writer.get_session(id, Staleness::Ok).await,
        Err(SessionsError::SessionNotFound(id)),
        "remove drops the session from the cache"
    );
    assert_eq!(
        reader.get_session(id, Staleness::Ok).await,
        Ok(v2),
        "stale ok"
    );
    assert_eq!(
        reader.get_session(id, Staleness::UpdateBefore).await,
        Err(SessionsError::SessionNotFound(id))
    );
    assert_eq!(
        reader.get_session(id, Staleness::Ok).await,
        Err(SessionsError::SessionNotFound(id)),
        "a refresh that finds nothing drops the entry"
    );

    // A bounded cache forgets its oldest entries, and then reads through.
    let small = Sessions::new(
        handles[0].clone(),
        SessionsConfig {
            prefix: prefix.to_string(),
            default_validity_ms: VALIDITY_MS,
            cache_sessions_max: 2,
        },
    )
    .with_clock(clock.clone());
    let mut saved = Vec::new();
    for owner in ["a", "b", "c"] {
        saved.push(
            small
                .save_session(SessionSpec::new(0, owner))
                .await
                .expect("save"),
        );
    }
    writer.remove_session(saved[0].id).await.expect("remove");
    writer
        .save_session(spec(saved[2].id, START_MS + 9, "changed"))
        .await
        .expect("save");
    assert_eq!(
        small.get_session(saved[0].id, Staleness::Ok).await,
        Err(SessionsError::SessionNotFound(saved[0].id)),
        "the oldest entry was evicted, so the read went to the store"
    );
    assert_eq!(
        small.get_session(saved[2].id, Staleness::Ok).await,
        Ok(saved[2].clone()),
        "cached"
    );
}

/// Connections: save, get, list by session, remove (no hook), close
/// (hook); closing or removing a session takes its connections.
pub async fn connections<B: KvBackend>(backend: &B, prefix: &str) {
    let clock = ManualClock::new(START_MS);
    let sessions = namespace(backend.clone(), prefix, &clock);
    let hook = RecordingHook::default();
    sessions.set_hook(hook.clone());
    let session = sessions
        .save_session(SessionSpec::new(0, "o"))
        .await
        .expect("save");
    let other = sessions
        .save_session(SessionSpec::new(0, "o"))
        .await
        .expect("save");
    let (c1, c2) = (ConnectionId::random(), ConnectionId::random());
    let saved1 = sessions
        .save_connection(session.fence(), c1, "one")
        .await
        .expect("save c1");
    sessions
        .save_connection(session.fence(), c2, "two")
        .await
        .expect("save c2");
    sessions
        .save_connection(other.fence(), ConnectionId::random(), "x")
        .await
        .expect("other");
    assert_eq!(
        sessions.get_connection(session.id, c1).await,
        Ok(saved1.clone())
    );
    assert_eq!(saved1.session, session.id);
    let listed: BTreeSet<ConnectionId> = sessions
        .list_connections(session.id)
        .await
        .expect("list")
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(listed, BTreeSet::from([c1, c2]), "only this session's");

    sessions
        .remove_connection(session.id, c1)
        .await
        .expect("remove");
    assert!(hook.closed().is_empty(), "remove does not close");
    let closed = sessions
        .close_connection(session.id, c2)
        .await
        .expect("close");
    assert_eq!(closed.data, "two");
    assert_eq!(hook.closed(), vec![c2]);
    assert!(sessions
        .list_connections(session.id)
        .await
        .expect("list")
        .is_empty());
    assert!(matches!(
        sessions.close_connection(session.id, c2).await,
        Err(SessionsError::ConnectionNotFound { .. })
    ));

    // close_session: the session and every connection, each closed.
    let (c3, c4) = (ConnectionId::random(), ConnectionId::random());
    sessions
        .save_connection(session.fence(), c3, "3")
        .await
        .expect("c3");
    sessions
        .save_connection_unfenced(session.id, c4, "4")
        .await
        .expect("c4");
    let closed = sessions
        .close_session(session.id)
        .await
        .expect("close session");
    assert_eq!(
        closed.iter().map(|c| c.id).collect::<BTreeSet<_>>(),
        BTreeSet::from([c3, c4])
    );
    assert_eq!(hook.closed().len(), 3);
    assert!(hook.closed().contains(&c3) && hook.closed().contains(&c4));
    assert!(sessions
        .list_connections(session.id)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        sessions.get_session(session.id, Staleness::Ok).await,
        Err(SessionsError::SessionNotFound(session.id))
    );

    // remove_session: the session and its connections, none closed.
    sessions
        .remove_session(other.id)
        .await
        .expect("remove session");
    assert_eq!(hook.closed().len(), 3);
    assert!(sessions
        .list_connections(other.id)
        .await
        .expect("list")
        .is_empty());
}

/// The clean-up rules under a controlled clock, with exact deadlines.
pub async fn clear_rules<B: KvBackend>(backend: &B, prefix: &str) {
    let clock = ManualClock::new(START_MS);
    let sessions = namespace(backend.clone(), prefix, &clock);
    let hook = RecordingHook::default();
    sessions.set_hook(hook.clone());
    let deadline = START_MS + 100;
    let live = sessions
        .save_session(SessionSpec::new(deadline, "live"))
        .await
        .expect("save");
    let idle = sessions
        .save_session(SessionSpec::new(deadline, "idle"))
        .await
        .expect("save");
    let dead = sessions
        .save_session(SessionSpec::new(deadline, "dead"))
        .await
        .expect("save");
    let valid = sessions
        .save_session(SessionSpec::new(deadline + 10_000, "valid"))
        .await
        .expect("save");
    let live_connection = ConnectionId::random();
    sessions
        .save_connection(live.fence(), live_connection, "")
        .await
        .expect("c");
    let dead_connection = ConnectionId::random();
    sessions
        .save_connection(dead.fence(), dead_connection, "")
        .await
        .expect("c");
    hook.kill(dead_connection);

    clock.set(deadline);
    let report = sessions.clear_sessions().await.expect("clear");
    assert_eq!(
        report,
        crate::ClearReport::default(),
        "valid_to == now is not expired"
    );

    clock.set(deadline + 1);
    let report = sessions.clear_sessions().await.expect("clear");
    assert_eq!(report.extended, vec![live.id]);
    assert_eq!(
        report.deleted.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([idle.id, dead.id])
    );
    assert_eq!(report.connections_closed, 1);
    assert!(report.skipped.is_empty());
    assert_eq!(
        hook.closed(),
        vec![dead_connection],
        "deleted connections are closed"
    );
    let extended = sessions
        .get_session(live.id, Staleness::UpdateBefore)
        .await
        .expect("get");
    assert_eq!(
        extended.valid_to_ms,
        deadline + 1 + VALIDITY_MS,
        "extended from now, exactly"
    );
    assert_eq!(
        extended.fence_token, live.fence_token,
        "extension is not re-establishment"
    );
    assert_eq!(extended.owner, "live");
    for gone in [idle.id, dead.id] {
        assert_eq!(
            sessions.get_session(gone, Staleness::Ok).await,
            Err(SessionsError::SessionNotFound(gone))
        );
    }
    assert!(sessions
        .list_connections(dead.id)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        sessions
            .get_session(valid.id, Staleness::UpdateBefore)
            .await,
        Ok(valid.clone())
    );

    // Extended again while the connection lives; deleted once it is gone.
    clock.set(extended.valid_to_ms + 1);
    let report = sessions.clear_sessions().await.expect("clear");
    assert_eq!(
        report.extended.iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([&live.id])
    );
    assert_eq!(report.deleted, vec![valid.id], "no connection: deleted");
    sessions
        .remove_connection(live.id, live_connection)
        .await
        .expect("remove");
    clock.advance(VALIDITY_MS + 1);
    let report = sessions.clear_sessions().await.expect("clear");
    assert_eq!(report.deleted, vec![live.id]);
    assert!(sessions.list_sessions(0).await.expect("list").is_empty());
}

/// A decision is dropped when its session changed after it was read: a
/// concurrent save, connection or removal always wins over the cleaner.
pub async fn concurrent_save_wins<B: KvBackend>(handles: &[B], prefix: &str) {
    let clock = ManualClock::new(START_MS);
    let cleaner = namespace(handles[0].clone(), prefix, &clock);
    let client = namespace(handles[handles.len() - 1].clone(), prefix, &clock);
    let resaved = client
        .save_session(SessionSpec::new(START_MS + 1, "a"))
        .await
        .expect("save");
    let connected = client
        .save_session(SessionSpec::new(START_MS + 1, "b"))
        .await
        .expect("save");
    let removed = client
        .save_session(SessionSpec::new(START_MS + 1, "c"))
        .await
        .expect("save");
    client
        .save_connection(removed.fence(), ConnectionId::random(), "")
        .await
        .expect("c");
    clock.set(START_MS + 2);

    let plan = cleaner.plan_clear().await.expect("plan");
    assert_eq!(plan.decisions.len(), 3);
    for decision in &plan.decisions {
        match decision {
            Decision::Extend { session, .. } => assert_eq!(session.id, removed.id),
            Decision::Delete { session, .. } => {
                assert!(session.id == resaved.id || session.id == connected.id)
            }
        }
    }
    // Between the plan and its application, the client acts.
    let renewed = client
        .save_session(spec(resaved.id, START_MS + 50_000, "a2"))
        .await
        .expect("save");
    let late = ConnectionId::random();
    client
        .save_connection(connected.fence(), late, "")
        .await
        .expect("connect");
    client.remove_session(removed.id).await.expect("remove");

    let report = cleaner.apply_clear(plan).await.expect("apply");
    assert!(
        report.deleted.is_empty() && report.extended.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.skipped.len(), 3);
    assert_eq!(
        cleaner
            .get_session(resaved.id, Staleness::UpdateBefore)
            .await,
        Ok(renewed)
    );
    assert!(cleaner
        .get_session(connected.id, Staleness::UpdateBefore)
        .await
        .is_ok());
    assert_eq!(
        cleaner
            .list_connections(connected.id)
            .await
            .expect("list")
            .len(),
        1
    );
    assert_eq!(
        cleaner
            .get_session(removed.id, Staleness::UpdateBefore)
            .await,
        Err(SessionsError::SessionNotFound(removed.id)),
        "an extension never resurrects a removed session"
    );
}

/// A stale holder (an older incarnation's fence) is refused everywhere.
pub async fn fencing<B: KvBackend>(handles: &[B], prefix: &str) {
    let clock = ManualClock::new(START_MS);
    let old_holder = namespace(handles[0].clone(), prefix, &clock);
    let new_holder = namespace(handles[handles.len() - 1].clone(), prefix, &clock);
    let first = old_holder
        .save_session(SessionSpec::new(0, "first"))
        .await
        .expect("save");
    let stale = first.fence();
    let renewed = old_holder
        .renew_session(stale, START_MS + 5_000)
        .await
        .expect("renew");
    assert_eq!(renewed.valid_to_ms, START_MS + 5_000);
    assert_eq!(renewed.fence(), stale, "renewal keeps the incarnation");
    assert_eq!(renewed.owner, "first");
    old_holder
        .save_session_fenced(spec(first.id, 0, "first-b"), stale)
        .await
        .expect("fenced save by the holder");

    // The session is lost and re-established by another holder.
    new_holder.remove_session(first.id).await.expect("remove");
    let second = new_holder
        .save_session(spec(first.id, 0, "second"))
        .await
        .expect("save");
    assert_ne!(
        second.fence_token, stale.token,
        "a new incarnation, a new fence"
    );
    let fenced = SessionsError::Fenced {
        session: first.id,
        presented: stale.token,
        current: Some(second.fence_token),
    };
    assert_eq!(
        old_holder
            .save_connection(stale, ConnectionId::random(), "")
            .await,
        Err(fenced.clone())
    );
    assert_eq!(
        old_holder.renew_session(stale, START_MS + 9_000).await,
        Err(fenced.clone())
    );
    assert_eq!(
        old_holder
            .save_session_fenced(spec(first.id, 0, "stale"), stale)
            .await,
        Err(fenced.clone())
    );
    assert_eq!(old_holder.close_session_fenced(stale).await, Err(fenced));
    let current = new_holder
        .get_session(first.id, Staleness::UpdateBefore)
        .await
        .expect("get");
    assert_eq!(
        current.owner, "second",
        "nothing the stale holder did took effect"
    );
    assert!(new_holder
        .list_connections(first.id)
        .await
        .expect("list")
        .is_empty());

    new_holder
        .save_connection(second.fence(), ConnectionId::random(), "")
        .await
        .expect("the current holder connects");
    assert_eq!(
        new_holder
            .close_session_fenced(second.fence())
            .await
            .map(|c| c.len()),
        Ok(1)
    );
    assert_eq!(
        new_holder.renew_session(second.fence(), 0).await,
        Err(SessionsError::Fenced {
            session: first.id,
            presented: second.fence_token,
            current: None,
        }),
        "a closed session fences everyone"
    );
}

/// Cluster state documents by id, the default id included.
pub async fn state_documents<B: KvBackend>(backend: &B, prefix: &str) {
    let clock = ManualClock::new(START_MS);
    let sessions = namespace(backend.clone(), prefix, &clock);
    let missing = SessionsError::StateNotFound(crate::CLUSTER_STATE_ID.into());
    assert_eq!(sessions.get_cluster_state().await, Err(missing.clone()));
    assert_eq!(sessions.clear_cluster_state().await, Err(missing.clone()));
    sessions.save_cluster_state("v1").await.expect("save");
    assert_eq!(
        sessions.get_state(crate::CLUSTER_STATE_ID).await,
        Ok(Bytes::from("v1"))
    );
    sessions.save_cluster_state("v2").await.expect("overwrite");
    assert_eq!(sessions.get_cluster_state().await, Ok(Bytes::from("v2")));
    sessions
        .save_state("other", Bytes::new())
        .await
        .expect("save empty");
    sessions.clear_cluster_state().await.expect("clear");
    assert_eq!(sessions.get_cluster_state().await, Err(missing));
    assert_eq!(
        sessions.get_state("other").await,
        Ok(Bytes::new()),
        "untouched"
    );
    assert!(matches!(
        sessions.save_state("", "x").await,
        Err(SessionsError::InvalidArgument(_))
    ));
}

/// Bad bytes in the store are typed errors, never panics; the cleaner
/// leaves them alone and still does the rest.
pub async fn corrupt_values<B: KvBackend>(backend: &B, prefix: &str) {
    let clock = ManualClock::new(START_MS);
    let sessions = namespace(backend.clone(), prefix, &clock);
    let expired = sessions
        .save_session(SessionSpec::new(START_MS + 1, "ok"))
        .await
        .expect("save");
    let bad = SessionId::random();
    let garbage = [
        (format!("{prefix}s/{bad}"), Bytes::from_static(b"\xff\xfe")),
        (
            format!("{prefix}st/bad"),
            Bytes::from_static(b"CSTA\x09...."),
        ),
        (
            format!("{prefix}c/{}/{}", expired.id, ConnectionId::random()),
            Bytes::from_static(b"CCON\x01\0\0\0\0x"),
        ),
    ];
    for (key, value) in &garbage {
        backend
            .put(PutRequest {
                key: key.clone().into(),
                value: value.clone(),
                ..Default::default()
            })
            .await
            .expect("plant garbage");
    }
    assert!(matches!(
        sessions.get_session(bad, Staleness::UpdateBefore).await,
        Err(SessionsError::Corrupt { .. })
    ));
    assert!(matches!(
        sessions.list_sessions(0).await,
        Err(SessionsError::Corrupt { .. })
    ));
    assert!(matches!(
        sessions.get_state("bad").await,
        Err(SessionsError::Corrupt { .. })
    ));
    assert!(matches!(
        sessions.list_connections(expired.id).await,
        Err(SessionsError::Corrupt { .. })
    ));
    clock.set(START_MS + 2);
    let report = sessions.clear_sessions().await.expect("clear");
    assert_eq!(report.corrupt, vec![format!("{prefix}s/{bad}")]);
    assert_eq!(
        report.extended,
        vec![expired.id],
        "an unreadable connection is still a connection"
    );
    // Removing works on what cannot be read.
    let closed = sessions.close_session(expired.id).await.expect("close");
    assert_eq!(closed.len(), 1);
    assert!(closed[0].data.is_empty());
    sessions
        .remove_session(bad)
        .await
        .expect("remove the unreadable session");
    sessions
        .clear_state("bad")
        .await
        .expect("clear the unreadable document");
    assert!(sessions.list_sessions(0).await.expect("list").is_empty());
}

/// Several nodes at once: writers create sessions and connections while
/// a cleaner (whose clock is ahead, so it sees them all expired) clears.
/// No connection outlives its session, and no session that got a
/// connection is ever deleted by the cleaner.
pub async fn concurrent_handles<B: KvBackend>(handles: &[B], prefix: &str) {
    const WRITERS: usize = 3;
    const SESSIONS_PER_WRITER: usize = 12;
    let writer_clock = ManualClock::new(START_MS);
    let cleaner_clock = ManualClock::new(START_MS + 1_000);
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let sessions = namespace(handles[w % handles.len()].clone(), prefix, &writer_clock);
        tasks.push(tokio::spawn(async move {
            let mut connected = Vec::new();
            for i in 0..SESSIONS_PER_WRITER {
                let session = sessions
                    .save_session(SessionSpec::new(START_MS + 500, "w"))
                    .await
                    .expect("save session");
                match sessions
                    .save_connection(session.fence(), ConnectionId::random(), "c")
                    .await
                {
                    Ok(_) => connected.push(session),
                    // The cleaner deleted it first: the connection was
                    // refused, not orphaned.
                    Err(SessionsError::Fenced { current: None, .. }) => {}
                    Err(error) => panic!("connect: {error}"),
                }
                if i % 4 == 3 {
                    if let Some(closing) = connected.pop() {
                        sessions.close_session(closing.id).await.expect("close");
                    }
                }
            }
            connected
        }));
    }
    let cleaner = namespace(handles[handles.len() - 1].clone(), prefix, &cleaner_clock);
    let clearing = {
        let cleaner = cleaner.clone();
        tokio::spawn(async move {
            let mut deleted = BTreeSet::new();
            for _ in 0..10 {
                let report = cleaner.clear_sessions().await.expect("clear");
                deleted.extend(report.deleted);
                tokio::task::yield_now().await;
            }
            deleted
        })
    };
    let mut connected = Vec::new();
    for task in tasks {
        connected.extend(guard("writer", task).await.expect("writer task"));
    }
    let mut deleted = guard("cleaner", clearing).await.expect("cleaner task");
    deleted.extend(cleaner.clear_sessions().await.expect("final clear").deleted);

    for session in &connected {
        assert!(
            !deleted.contains(&session.id),
            "a connected session was deleted"
        );
        let now = cleaner
            .get_session(session.id, Staleness::UpdateBefore)
            .await
            .expect("a connected session survives");
        assert_eq!(now.fence_token, session.fence_token);
        assert_eq!(
            cleaner
                .list_connections(session.id)
                .await
                .expect("list")
                .len(),
            1
        );
    }
    // No orphans: every connection's session exists.
    let all = handles[0]
        .get_prefix(format!("{prefix}c/"))
        .await
        .expect("read connections");
    let live: BTreeSet<String> = cleaner
        .list_sessions(0)
        .await
        .expect("list")
        .iter()
        .map(|s| s.id.to_string())
        .collect();
    for kv in &all.kvs {
        let key = String::from_utf8_lossy(&kv.key);
        let session = key[prefix.len() + 2..]
            .split('/')
            .next()
            .expect("session part");
        assert!(live.contains(session), "orphan connection {key}");
    }
    // Everything left is either connected or not yet expired for the
    // cleaner (just extended).
    for session in cleaner.list_sessions(0).await.expect("list") {
        let has_connection = !cleaner
            .list_connections(session.id)
            .await
            .expect("list")
            .is_empty();
        assert!(
            has_connection,
            "an unconnected expired session survived a final clear"
        );
    }
}

/// One cleaner at a time; it cleans; stopping hands the role over.
pub async fn cleaner_election<B: KvBackend>(handles: &[B], prefix: &str) {
    let clock = ManualClock::new(START_MS);
    let a = namespace(handles[0].clone(), prefix, &clock);
    let b = namespace(handles[handles.len() - 1].clone(), prefix, &clock);
    let config = |holder: &str| CleanerConfig {
        holder: holder.into(),
        interval_ms: 20,
        lease_ttl_s: 5,
        retry_ms: 20,
    };
    let doomed = a
        .save_session(SessionSpec::new(START_MS + 1, "doomed"))
        .await
        .expect("save");
    assert_eq!(a.cleaner_holder().await, Ok(None));

    let first = a.spawn_cleaner(config("a"));
    guard("a takes the role", first.wait_holding(true)).await;
    let second = b.spawn_cleaner(config("b"));
    // Several rounds of the holder, and so of b's attempts, later:
    guard("a cleans", first.wait_runs(3)).await;
    assert_eq!(a.cleaner_holder().await, Ok(Some("a".into())));
    assert!(!second.is_holding(), "two cleaners at once");
    assert_eq!(
        a.get_session(doomed.id, Staleness::UpdateBefore)
            .await
            .map(|s| s.id),
        Ok(doomed.id),
        "not expired yet"
    );

    clock.set(START_MS + 2);
    let seen = first.runs();
    guard("a cleans again", first.wait_runs(seen + 2)).await;
    assert_eq!(
        a.get_session(doomed.id, Staleness::UpdateBefore).await,
        Err(SessionsError::SessionNotFound(doomed.id)),
        "the holder deleted the expired session"
    );

    first.stop().await;
    guard("b takes over", second.wait_holding(true)).await;
    assert_eq!(b.cleaner_holder().await, Ok(Some("b".into())));
    guard("b cleans", second.wait_runs(1)).await;

    second.stop().await;
    assert_eq!(
        b.cleaner_holder().await,
        Ok(None),
        "stopping gives the role up"
    );
}

/// What [`before_restart`] wrote, for [`after_restart`] to check.
#[derive(Clone, Debug)]
pub struct Written {
    pub connected: crate::Session,
    pub idle: crate::Session,
    pub connection: ConnectionId,
}

/// Writes sessions with exact deadlines, a connection and a state
/// document, before every node is restarted.
pub async fn before_restart<B: KvBackend>(backend: &B, prefix: &str) -> Written {
    let clock = ManualClock::new(START_MS);
    let sessions = namespace(backend.clone(), prefix, &clock);
    let connected = sessions
        .save_session(SessionSpec::new(START_MS + 30_000, "c"))
        .await
        .expect("save");
    let idle = sessions
        .save_session(SessionSpec::new(START_MS + 40_000, "i"))
        .await
        .expect("save");
    let connection = ConnectionId::random();
    sessions
        .save_connection(connected.fence(), connection, "conn")
        .await
        .expect("connect");
    sessions.save_cluster_state("state").await.expect("state");
    Written {
        connected,
        idle,
        connection,
    }
}

/// After the restart: the same deadlines and fences, exactly; expiry
/// happens at the stored deadline, not earlier and not later.
pub async fn after_restart<B: KvBackend>(backend: &B, prefix: &str, written: &Written) {
    let clock = ManualClock::new(START_MS + 30_000);
    let sessions = namespace(backend.clone(), prefix, &clock);
    for session in [&written.connected, &written.idle] {
        let read = sessions
            .get_session(session.id, Staleness::Ok)
            .await
            .expect("survived");
        assert_eq!(
            read.valid_to_ms, session.valid_to_ms,
            "the deadline is exact"
        );
        assert_eq!(
            read.fence_token, session.fence_token,
            "the same incarnation"
        );
        assert_eq!(read.owner, session.owner);
    }
    assert_eq!(
        sessions
            .get_connection(written.connected.id, written.connection)
            .await
            .map(|c| c.data),
        Ok(Bytes::from("conn"))
    );
    assert_eq!(sessions.get_cluster_state().await, Ok(Bytes::from("state")));
    let report = sessions.clear_sessions().await.expect("clear");
    assert!(
        report.deleted.is_empty() && report.extended.is_empty(),
        "no early expiry: {report:?}"
    );
    clock.set(START_MS + 40_001);
    let report = sessions.clear_sessions().await.expect("clear");
    assert_eq!(report.extended, vec![written.connected.id]);
    assert_eq!(
        report.deleted,
        vec![written.idle.id],
        "no late expiry either"
    );
    let extended = sessions
        .get_session(written.connected.id, Staleness::UpdateBefore)
        .await
        .expect("get");
    assert_eq!(extended.valid_to_ms, START_MS + 40_001 + VALIDITY_MS);
    assert_eq!(extended.fence_token, written.connected.fence_token);
}
