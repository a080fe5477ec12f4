//! The machine under chorus-raft: replies, the lease timer effect and its
//! firing through the log, release_cursor snapshots.

use std::collections::BTreeMap;

use bytes::Bytes;
use chorus_kv::*;
use chorus_raft::{
    Action, ClusterId, Config, Configuration, Effect, Machine, MachineEvent, Persisted, Priority,
    Raft, ReplyTo, RequestId, ServerId,
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
}

impl Single {
    fn new(config: KvConfig) -> Self {
        let me = ServerId(1);
        let raft_config = Config {
            snapshot_interval_entries_min: 1,
            ..Config::new(ClusterId(1), me)
        };
        let persisted = Persisted {
            initial_config: Configuration::voters([me]),
            ..Persisted::default()
        };
        let now_ms = 1_700_000_000_000;
        let raft = Raft::new(raft_config, persisted, KvMachine::new(config), 7, now_ms)
            .expect("a fresh server starts");
        let mut single = Single {
            raft,
            now_ms,
            next_request: 0,
            replies: BTreeMap::new(),
            timers: BTreeMap::new(),
            snapshots: Vec::new(),
        };
        single.raft.trigger_election(now_ms);
        single.pump();
        single
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
                    }
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
