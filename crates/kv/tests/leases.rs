//! Leases: grant, revoke, keep-alive, time-to-live, list, expiry through
//! the replicated lease clock, and what a leader change does to them.

mod common;

use chorus_kv::*;
use chorus_raft::ApplyMeta;
use common::*;

const SKEW_MS: u64 = 500;
const T0: u64 = 1_700_000_000_000;

fn attach(h: &mut Harness, key: &str, lease: i64) -> PutResponse {
    h.put_request(PutRequest {
        key: b(key),
        value: b("v"),
        lease,
        ..PutRequest::default()
    })
    .expect("put")
}

fn keep_alive(h: &mut Harness, id: i64) -> Result<LeaseKeepAliveResponse, KvError> {
    match h.apply(Command::LeaseKeepAlive(LeaseKeepAliveRequest { id }))? {
        Response::LeaseKeepAlive(response) => Ok(response),
        other => panic!("unexpected {other:?}"),
    }
}

fn revoke(h: &mut Harness, id: i64) -> Result<LeaseRevokeResponse, KvError> {
    match h.apply(Command::LeaseRevoke(LeaseRevokeRequest { id }))? {
        Response::LeaseRevoke(response) => Ok(response),
        other => panic!("unexpected {other:?}"),
    }
}

fn expire(h: &mut Harness) -> Vec<i64> {
    let meta = h.meta();
    h.machine.expire_leases(&meta).reply.expired
}

fn lease_ids(h: &Harness) -> Vec<i64> {
    match h.machine.read(&Query::LeaseLeases) {
        Ok(QueryResponse::LeaseLeases(response)) => response.leases,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn grant_with_a_given_or_a_chosen_id() {
    let mut h = Harness::default();
    let granted = h.grant(42, 30).unwrap();
    assert_eq!(
        (granted.id, granted.ttl, granted.header.revision),
        (42, 30, 1)
    );
    assert_eq!(h.grant(42, 30), Err(KvError::LeaseExists));
    assert_eq!(
        KvError::LeaseExists.to_string(),
        "etcdserver: lease already exists"
    );
    let chosen = h.grant(0, 30).unwrap().id;
    assert!(chosen > 0 && chosen != 42);
    // The chosen id depends only on the log: a replica chooses the same.
    let mut replica = Harness::default();
    replica.grant(42, 30).unwrap();
    replica.index = h.index - 1;
    assert_eq!(replica.grant(0, 30).unwrap().id, chosen);
    assert_eq!(lease_ids(&h), {
        let mut ids = vec![42, chosen];
        ids.sort();
        ids
    });
}

#[test]
fn ttls_are_raised_to_the_minimum_and_capped() {
    let mut h = Harness::default();
    assert_eq!(h.grant(1, 0).unwrap().ttl, 2);
    assert_eq!(h.grant(2, -5).unwrap().ttl, 2);
    assert_eq!(
        h.grant(3, LEASE_TTL_MAX_S + 1),
        Err(KvError::LeaseTtlTooLarge)
    );
    assert_eq!(
        KvError::LeaseTtlTooLarge.to_string(),
        "etcdserver: too large lease TTL"
    );
    assert!(h.grant(3, LEASE_TTL_MAX_S).is_ok());
}

#[test]
fn revoke_deletes_the_attached_keys_at_one_revision() {
    let mut h = Harness::default();
    h.grant(7, 60).unwrap();
    attach(&mut h, "a", 7);
    attach(&mut h, "b", 7);
    h.put("c", "unleased");
    let before = h.machine.revision();
    let response = revoke(&mut h, 7).unwrap();
    assert_eq!(response.header.revision, before + 1);
    assert_eq!(h.keys("a", "\0"), ["c"]);
    let events = h.machine.events(before + 1, &KeyRange::all(), 10).unwrap();
    assert_eq!(events.events.len(), 2);
    assert!(events
        .events
        .iter()
        .all(|e| e.kind == EventKind::Delete && e.kv.mod_revision == before + 1));
    assert_eq!(revoke(&mut h, 7), Err(KvError::LeaseNotFound));
    // A lease without keys revokes without a new revision.
    h.grant(8, 60).unwrap();
    assert_eq!(revoke(&mut h, 8).unwrap().header.revision, before + 1);
}

#[test]
fn keys_move_between_leases_and_leave_them_when_deleted() {
    let mut h = Harness::default();
    h.grant(1, 60).unwrap();
    h.grant(2, 60).unwrap();
    attach(&mut h, "k", 1);
    attach(&mut h, "j", 1);
    assert_eq!(h.time_to_live(1, h.time_ms).keys, [b("j"), b("k")]);
    attach(&mut h, "k", 2);
    assert_eq!(h.time_to_live(1, h.time_ms).keys, [b("j")]);
    assert_eq!(h.time_to_live(2, h.time_ms).keys, [b("k")]);
    h.delete("j", "");
    assert!(h.time_to_live(1, h.time_ms).keys.is_empty());
    // Revoking lease 1 now leaves k, which moved to lease 2.
    revoke(&mut h, 1).unwrap();
    assert_eq!(h.get("k").unwrap().lease, 2);
}

#[test]
fn time_to_live_counts_down_and_keep_alive_renews_to_the_full_ttl() {
    let mut h = Harness::default();
    h.grant(5, 10).unwrap();
    let ttl = h.time_to_live(5, h.time_ms);
    assert_eq!((ttl.id, ttl.ttl, ttl.granted_ttl), (5, 10, 10));
    assert_eq!(h.time_to_live(5, h.time_ms + 3_500).ttl, 6);
    h.time_ms += 4_000;
    let renewed = keep_alive(&mut h, 5).unwrap();
    assert_eq!((renewed.id, renewed.ttl), (5, 10));
    assert_eq!(h.time_to_live(5, h.time_ms).ttl, 10);
    assert_eq!(keep_alive(&mut h, 6), Err(KvError::LeaseNotFound));
    // Unknown leases report TTL -1, as etcd's gRPC answer does.
    assert_eq!(h.time_to_live(6, h.time_ms).ttl, -1);
}

#[test]
fn expiry_revokes_due_leases_once_the_lease_clock_reaches_them() {
    let mut h = Harness::default();
    h.grant(1, 10).unwrap();
    h.grant(2, 20).unwrap();
    attach(&mut h, "one", 1);
    // Armed for the first deadline: TTL plus the skew margin.
    assert_eq!(h.machine.lease_timer_ms(), Some(10_000 + SKEW_MS));
    h.time_ms += 10_000;
    assert!(expire(&mut h).is_empty(), "not before the skew margin");
    assert_eq!(h.machine.lease_timer_ms(), Some(SKEW_MS));
    h.time_ms += SKEW_MS;
    assert_eq!(expire(&mut h), [1]);
    assert_eq!(h.get("one"), None);
    assert_eq!(h.machine.lease_timer_ms(), Some(10_000));
    // A keep-alive after the deadline finds the lease gone, even if its
    // expiry has not been applied yet.
    h.time_ms += 10_000;
    assert_eq!(keep_alive(&mut h, 2), Err(KvError::LeaseNotFound));
    assert_eq!(expire(&mut h), [2]);
    assert_eq!(h.machine.lease_timer_ms(), None);
}

#[test]
fn the_timer_counts_from_the_leaders_clock_when_it_has_one() {
    let mut h = Harness::default();
    h.grant(1, 10).unwrap();
    let granted_at = h.time_ms;
    assert_eq!(h.machine.lease_timer_ms_at(granted_at), Some(10_500));
    assert_eq!(h.machine.lease_timer_ms_at(granted_at + 3_000), Some(7_500));
    assert_eq!(h.machine.lease_timer_ms_at(granted_at + 20_000), Some(0));
    // A clock behind the last entry's is another leader's: fire at once.
    assert_eq!(h.machine.lease_timer_ms_at(granted_at - 1), Some(0));
    assert_eq!(KvMachine::default().lease_timer_ms_at(granted_at), None);
}

#[test]
fn expiry_revokes_at_most_a_batch_per_firing() {
    let mut h = Harness::new(KvConfig {
        lease_expire_batch_max: 2,
        ..KvConfig::default()
    });
    for id in 1..=5 {
        h.grant(id, 5).unwrap();
    }
    h.time_ms += 60_000;
    assert_eq!(expire(&mut h), [1, 2]);
    assert_eq!(h.machine.lease_timer_ms(), Some(0));
    assert_eq!(expire(&mut h), [3, 4]);
    assert_eq!(expire(&mut h), [5]);
}

/// Two replicas of one machine apply the same entries; which one leads
/// only decides whose clock stamps the next entries.
struct Cluster {
    replicas: [KvMachine; 2],
    index: u64,
}

impl Cluster {
    fn new() -> Self {
        Cluster {
            replicas: [KvMachine::default(), KvMachine::default()],
            index: 0,
        }
    }

    fn meta(&mut self, term: u64, time_ms: u64) -> ApplyMeta {
        self.index += 1;
        ApplyMeta {
            index: self.index,
            term,
            time_ms,
            machine_version: 0,
        }
    }

    fn apply(&mut self, term: u64, time_ms: u64, command: Command) {
        let meta = self.meta(term, time_ms);
        for replica in &mut self.replicas {
            replica.apply_command(&meta, command.clone()).reply.unwrap();
        }
    }

    /// A firing of the lease timer, appended by the leader of `term`.
    fn fire(&mut self, term: u64, time_ms: u64) -> Vec<i64> {
        let meta = self.meta(term, time_ms);
        let [first, second] = &mut self.replicas;
        let expired = first.expire_leases(&meta).reply.expired;
        assert_eq!(second.expire_leases(&meta).reply.expired, expired);
        expired
    }

    fn remaining_s(&self, replica: usize, now_ms: u64) -> i64 {
        let query = Query::LeaseTimeToLive {
            request: LeaseTimeToLiveRequest { id: 1, keys: false },
            now_ms,
        };
        match self.replicas[replica].read(&query) {
            Ok(QueryResponse::LeaseTimeToLive(response)) => response.ttl,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Lease 1 (TTL 10 s) granted at T0 by leader 0 (term 1), which then
    /// appends one more entry at T0 + 4 s and fails.
    fn granted_then_old_leader_fails() -> Self {
        let mut cluster = Cluster::new();
        cluster.apply(
            1,
            T0,
            Command::LeaseGrant(LeaseGrantRequest { ttl: 10, id: 1 }),
        );
        cluster.apply(
            1,
            T0 + 4_000,
            Command::Put(PutRequest {
                key: b("k"),
                lease: 1,
                ..PutRequest::default()
            }),
        );
        assert_eq!(cluster.remaining_s(0, T0 + 4_000), 6);
        cluster
    }

    /// The true time at which leader 1 (term 2, clock `offset_ms` off the
    /// true time), elected at true time T0 + 6 s, expires lease 1, firing
    /// its timer as the machine asks.
    fn expiry_under_new_leader(&mut self, offset_ms: i64) -> u64 {
        let clock = |true_ms: u64| true_ms.saturating_add_signed(offset_ms);
        let mut true_ms = T0 + 6_000;
        // Elected: the timer fires at once.
        let mut expired = self.fire(2, clock(true_ms));
        while expired.is_empty() {
            let after_ms = self.replicas[1].lease_timer_ms().expect("lease 1 is armed");
            true_ms += after_ms.max(1);
            expired = self.fire(2, clock(true_ms));
        }
        assert_eq!(expired, [1]);
        true_ms
    }
}

#[test]
fn remaining_ttl_survives_a_leader_change() {
    let mut cluster = Cluster::granted_then_old_leader_fails();
    // The new leader (a synchronised clock) is elected at T0 + 6 s; its
    // timer firing puts the lease clock on its time.
    cluster.fire(2, T0 + 6_000);
    // 4 s remain, on either replica: not the full 10 s etcd would restart.
    assert_eq!(cluster.remaining_s(1, T0 + 6_000), 4);
    assert_eq!(cluster.remaining_s(0, T0 + 6_000), 4);
    assert_eq!(cluster.replicas[0], cluster.replicas[1]);
    let mut cluster = Cluster::granted_then_old_leader_fails();
    let expired_at = cluster.expiry_under_new_leader(0);
    assert_eq!(expired_at, T0 + 10_000 + SKEW_MS);
}

#[test]
fn a_new_leader_ahead_within_the_bound_never_expires_early() {
    for offset_ms in [1, 250, 500] {
        let mut cluster = Cluster::granted_then_old_leader_fails();
        let expired_at = cluster.expiry_under_new_leader(offset_ms);
        assert!(
            expired_at >= T0 + 10_000,
            "offset {offset_ms}: {expired_at}"
        );
        assert!(expired_at <= T0 + 10_000 + SKEW_MS);
    }
}

#[test]
fn a_new_leader_behind_extends_a_lease_by_the_leaderless_gap_at_most() {
    // Up to a clock reset to zero: the lease still expires, late by at
    // most the 2 s between the old leader's last entry and the new one's
    // first, plus the skew margin.
    for offset_ms in [-1, -500, -60_000, -3_600_000, -(T0 as i64)] {
        let mut cluster = Cluster::granted_then_old_leader_fails();
        let expired_at = cluster.expiry_under_new_leader(offset_ms);
        assert!(
            expired_at >= T0 + 10_000,
            "offset {offset_ms}: {expired_at}"
        );
        assert!(
            expired_at <= T0 + 10_000 + 2_000 + SKEW_MS,
            "offset {offset_ms}: {expired_at}"
        );
    }
}
