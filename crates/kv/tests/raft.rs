//! The machine under chorus-raft: replies, the lease timer effect and its
//! firing through the log, release_cursor snapshots.

use std::collections::BTreeMap;

use bytes::Bytes;
use chorus_kv::*;
use chorus_raft::{
    Action, ClusterId, Config, Configuration, Effect, Entry, HardState, Machine, MachineEvent,
    Persisted, Priority, Raft, ReplyTo, RequestId, ServerId,
};

/// One voter, driven as chorus-node drives a server: actions executed in
/// order, writes durable at once, timers fired through the log.
struct Single {
    raft: Raft<KvMachine>,
    now_ms: u64,
    next_request: u64,
    replies: BTreeMap<RequestId, Reply>,
    timers: BTreeMap<String, u64>,
    snapshots: Vec<Bytes>,
    /// What a disk would hold (no snapshots are taken in restart tests).
    log: Vec<Entry>,
    hard_state: HardState,
}

impl Single {
    fn new(config: KvConfig) -> Self {
        Single::start(config, 1_700_000_000_000, HardState::default(), Vec::new())
    }

    fn start(config: KvConfig, now_ms: u64, hard_state: HardState, log: Vec<Entry>) -> Self {
        let me = ServerId(1);
        let raft_config = Config {
            snapshot_interval_entries_min: 1,
            ..Config::new(ClusterId(1), me)
        };
        let persisted = Persisted {
            hard_state,
            entries: log.clone(),
            initial_config: Configuration::voters([me]),
            ..Persisted::default()
        };
        let raft = Raft::new(raft_config, persisted, KvMachine::new(config), 7, now_ms)
            .expect("the server starts");
        let mut single = Single {
            raft,
            now_ms,
            next_request: 0,
            replies: BTreeMap::new(),
            timers: BTreeMap::new(),
            snapshots: Vec::new(),
            log,
            hard_state,
        };
        single.raft.trigger_election(now_ms);
        single.pump();
        single
    }

    /// Crash, stay down for `down_ms`, start again from the log.
    fn restart(self, down_ms: u64) -> Self {
        let config = self.raft.machine().config().clone();
        Single::start(config, self.now_ms + down_ms, self.hard_state, self.log)
    }

    fn pump(&mut self) {
        loop {
            let actions = self.raft.take_actions();
            if actions.is_empty() {
                return;
            }
            let mut durable = None;
            for action in actions {
                match action {
                    Action::AppendLog(entries) => {
                        durable = entries.last().map(|e| (e.index, e.term));
                        if let Some(first) = entries.first() {
                            self.log.retain(|e| e.index < first.index);
                        }
                        self.log.extend(entries);
                    }
                    Action::SaveHardState(hard_state) => self.hard_state = hard_state,
                    Action::Reply { request, reply, .. } => {
                        self.replies.insert(request, reply);
                    }
                    Action::Effect(Effect::Timer { name, after_ms }) => match after_ms {
                        Some(after_ms) => {
                            self.timers.insert(name, self.now_ms + after_ms);
                        }
                        None => {
                            self.timers.remove(&name);
                        }
                    },
                    Action::SaveSnapshot { data, .. } => self.snapshots.push(data),
                    _ => {}
                }
            }
            if let Some((index, term)) = durable {
                self.raft.log_durable(self.now_ms, index, term);
            }
        }
    }

    fn propose(&mut self, command: Command) -> Reply {
        self.next_request += 1;
        let request = RequestId(self.next_request);
        self.raft
            .propose(
                self.now_ms,
                command,
                Priority::Normal,
                ReplyTo::Request(request),
            )
            .expect("the only voter leads");
        self.pump();
        self.replies.remove(&request).expect("applied at once")
    }

    /// Let time pass, firing due timers as the runtime does.
    fn advance(&mut self, ms: u64) {
        let until = self.now_ms + ms;
        while let Some((name, at)) = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= until)
            .min_by_key(|(_, at)| **at)
            .map(|(name, at)| (name.clone(), *at))
        {
            self.now_ms = self.now_ms.max(at);
            self.timers.remove(&name);
            self.raft
                .propose_event(self.now_ms, MachineEvent::Timer { name })
                .expect("the only voter leads");
            self.pump();
        }
        self.now_ms = until;
        self.raft.tick(until);
        self.pump();
    }

    fn get(&self, key: &str) -> Option<KeyValue> {
        let query = Query::Range(RangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            ..RangeRequest::default()
        });
        match self.raft.machine().query(&query) {
            Ok(QueryResponse::Range(mut response)) => response.kvs.pop(),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn put(key: &str, lease: i64) -> Command {
    Command::Put(PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from_static(b"v"),
        lease,
        ..PutRequest::default()
    })
}

#[test]
fn commands_apply_and_reply_through_raft() {
    let mut single = Single::new(KvConfig::default());
    let Ok(Response::Put(response)) = single.propose(put("a", 0)) else {
        panic!()
    };
    assert_eq!(response.header.revision, 2);
    assert_eq!(single.get("a").unwrap().mod_revision, 2);
    let refused = single.propose(put("b", 99));
    assert_eq!(refused, Err(KvError::LeaseNotFound));
}

#[test]
fn the_lease_timer_expires_leases_through_the_log() {
    let mut single = Single::new(KvConfig::default());
    let Ok(Response::LeaseGrant(grant)) =
        single.propose(Command::LeaseGrant(LeaseGrantRequest { ttl: 3, id: 0 }))
    else {
        panic!()
    };
    single.propose(put("held", grant.id)).unwrap();
    assert_eq!(
        single.timers.get(LEASE_TIMER).copied(),
        Some(single.now_ms + 3_000 + 500)
    );
    single.advance(3_000);
    assert!(single.get("held").is_some());
    single.advance(500);
    assert_eq!(single.get("held"), None);
    assert!(single.timers.is_empty(), "no lease left: timer cancelled");
}

#[test]
fn keep_alives_push_the_timer_back() {
    let mut single = Single::new(KvConfig::default());
    single
        .propose(Command::LeaseGrant(LeaseGrantRequest { ttl: 3, id: 5 }))
        .unwrap();
    single.propose(put("held", 5)).unwrap();
    for _ in 0..5 {
        single.advance(2_000);
        single
            .propose(Command::LeaseKeepAlive(LeaseKeepAliveRequest { id: 5 }))
            .unwrap();
    }
    assert!(single.get("held").is_some());
    single.advance(4_000);
    assert_eq!(single.get("held"), None);
}

#[test]
fn a_restarted_leader_corrects_the_timer_its_replay_armed() {
    let mut single = Single::new(KvConfig::default());
    single
        .propose(Command::LeaseGrant(LeaseGrantRequest { ttl: 10, id: 1 }))
        .unwrap();
    single.propose(put("held", 1)).unwrap();
    // Down for 8 s: replaying the grant arms the timer for the full 10.5 s
    // from the restart, as if no time had passed...
    let mut restarted = single.restart(8_000);
    assert!(restarted.get("held").is_some());
    let now_ms = restarted.now_ms;
    assert_eq!(restarted.timers.get(LEASE_TIMER), Some(&(now_ms + 10_500)));
    // ...and the first tick re-arms it from the leader's clock.
    restarted.advance(0);
    assert_eq!(restarted.timers.get(LEASE_TIMER), Some(&(now_ms + 2_500)));
    restarted.advance(2_499);
    assert!(restarted.get("held").is_some());
    restarted.advance(1);
    assert_eq!(restarted.get("held"), None);
}

#[test]
fn release_cursor_snapshots_restore_to_the_same_state() {
    let mut single = Single::new(KvConfig {
        release_cursor_every_entries: 4,
        ..KvConfig::default()
    });
    for i in 0..4 {
        single.propose(put(&format!("k{i}"), 0)).unwrap();
    }
    let snapshot = single.snapshots.last().expect("a snapshot after 4 entries");
    let restored = KvMachine::restore(snapshot).expect("restores");
    assert_eq!(&restored, single.raft.machine());
}
