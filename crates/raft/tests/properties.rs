//! Property tests: random inputs never panic the core, and the invariants
//! visible through `status()` hold after every step — for one server fed
//! arbitrary messages, and for a three-server harness with random delivery
//! order, drops, duplicates, crashes and durability.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use chorus_raft::{
    AppendRequest, AppendResponse, ClusterId, ConflictHint, Entry, Envelope, Heartbeat,
    HeartbeatResponse, LogIndex, MachineEvent, MembershipChange, Message, NodeId, Payload,
    Priority, Raft, ReplyTo, RequestId, Role, ServerId, SnapshotChunk, SnapshotMeta,
    SnapshotResponse, Status, StepError, Term, VoteRequest, VoteResponse,
};
use common::*;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

// ----- generators ------------------------------------------------------------

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        4 => Just(Payload::Noop),
        6 => (-5i64..5).prop_map(|n| Payload::Command(encode(&Cmd::Add(n)))),
        1 => Just(Payload::Command(encode(&Cmd::Release))),
        1 => proptest::collection::vec(any::<u8>(), 0..4).prop_map(|b| Payload::Command(Bytes::from(b))),
        1 => proptest::sample::subsequence(vec![1u64, 2, 3, 4], 0..=4).prop_map(|ids| Payload::Config(voters(&ids))),
        1 => (0u32..2).prop_map(Payload::MachineVersion),
        1 => (0u64..3).prop_map(|n| Payload::Event(MachineEvent::NodeUp(NodeId(n)))),
        1 => Just(Payload::EndOfLife),
    ]
}

/// Entries after `prev` — usually contiguous with non-decreasing terms,
/// sometimes arbitrary.
fn entries(prev: LogIndex, prev_term: Term, max_term: Term) -> BoxedStrategy<Vec<Entry>> {
    let ordered = proptest::collection::vec((0u64..2, payload()), 0..4)
        .prop_map(move |items| {
            let mut term = prev_term;
            items
                .into_iter()
                .enumerate()
                .map(|(k, (bump, payload))| {
                    term = (term + bump).min(max_term.max(prev_term));
                    entry(prev + 1 + k as u64, term, payload)
                })
                .collect::<Vec<_>>()
        })
        .boxed();
    let wild = proptest::collection::vec((0u64..10, 0u64..6, payload()), 0..3)
        .prop_map(|items| items.into_iter().map(|(i, t, p)| entry(i, t, p)).collect())
        .boxed();
    prop_oneof![5 => ordered, 1 => wild].boxed()
}

fn snapshot_chunk() -> impl Strategy<Value = SnapshotChunk> {
    (
        0u64..10,
        0u64..6,
        proptest::collection::vec(-3i64..3, 0..4),
        0u32..2,
        0usize..3,
        any::<bool>(),
    )
        .prop_map(|(index, term, history, machine_version, mode, corrupt)| {
            let state = TestMachine {
                total: history.iter().sum(),
                history,
                ..Default::default()
            };
            let mut data = postcard::to_allocvec(&state).unwrap();
            if corrupt {
                data.iter_mut().for_each(|b| *b = 0xff);
            }
            let size = data.len() as u64;
            let (offset, slice, done) = match mode {
                0 => (0, &data[..], true),
                1 => (0, &data[..data.len() / 2], false),
                _ => (data.len() as u64 / 2, &data[data.len() / 2..], true),
            };
            SnapshotChunk {
                meta: SnapshotMeta {
                    index,
                    term,
                    config: voters(&[1, 2, 3]),
                    machine_version,
                    size_bytes: size,
                },
                offset,
                data: Bytes::copy_from_slice(slice),
                done,
            }
        })
}

fn message() -> impl Strategy<Value = Message> {
    let request =
        (0u64..10, 0u64..6, 0u32..2, any::<bool>()).prop_map(|(i, t, v, transfer)| VoteRequest {
            last_log_index: i,
            last_log_term: t,
            machine_version: v,
            leadership_transfer: transfer,
        });
    let append = (0u64..8, 0u64..5, 1u64..6, 0u64..10)
        .prop_flat_map(|(prev, prev_term, max_term, commit)| {
            entries(prev, prev_term, max_term).prop_map(move |entries| AppendRequest {
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries,
                leader_commit: commit,
            })
        })
        .prop_map(Message::Append);
    prop_oneof![
        1 => request.clone().prop_map(Message::PreVote),
        1 => request.prop_map(Message::Vote),
        1 => any::<bool>().prop_map(|granted| Message::PreVoteResponse(VoteResponse { granted })),
        2 => any::<bool>().prop_map(|granted| Message::VoteResponse(VoteResponse { granted })),
        6 => append,
        2 => (0u64..10).prop_map(|match_index| Message::AppendResponse(AppendResponse::Accepted { match_index })),
        1 => (0u64..10, 0u64..6, 0u64..10).prop_map(|(prev_log_index, term, index)| {
            Message::AppendResponse(AppendResponse::Rejected {
                prev_log_index,
                hint: ConflictHint { term, index },
            })
        }),
        2 => (0u64..10, 0u64..4, any::<bool>()).prop_map(|(commit, read_round, quiesce)| Message::Heartbeat(Heartbeat { commit, read_round, quiesce })),
        2 => (0u64..4, 0u64..10, any::<bool>()).prop_map(|(read_round, last_index, quiesced)| {
            Message::HeartbeatResponse(HeartbeatResponse { read_round, last_index, quiesced })
        }),
        2 => snapshot_chunk().prop_map(Message::InstallSnapshot),
        1 => (0u64..10, 0u64..40, 0usize..3).prop_map(|(index, next_offset, kind)| {
            Message::InstallSnapshotResponse(match kind {
                0 => SnapshotResponse::Chunk { index, next_offset },
                1 => SnapshotResponse::Installed { index },
                _ => SnapshotResponse::Retry { index, next_offset },
            })
        }),
        1 => Just(Message::TimeoutNow),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        prop_oneof![20 => Just(CLUSTER), 1 => Just(ClusterId(99))],
        prop_oneof![10 => 2u64..4, 1 => 1u64..6],
        prop_oneof![20 => Just(1u64), 1 => Just(5u64)],
        0u64..7,
        message(),
    )
        .prop_map(|(cluster, from, to, term, message)| Envelope {
            cluster,
            from: ServerId(from),
            to: ServerId(to),
            term,
            message,
        })
}

#[derive(Clone, Debug)]
enum Op {
    Step(Envelope),
    /// The envelope with its term set relative to the server's current one.
    StepRelative(Envelope, i64),
    /// A peer grants the pre-vote / vote in progress, or (to a leader)
    /// acknowledges up to `k` modulo the log's length.
    Grant(u64, u64),
    Tick(u64),
    Propose(i64, bool),
    Release,
    Query(u64),
    /// A durability notice for arbitrary (index, term).
    Durable(LogIndex, Term),
    /// Everything written so far is durable.
    DurableAll,
    Member(u8, u64),
    Trigger,
    Transfer(u64),
    Event,
    EndOfLife,
    /// The failure detector reports a server down / up (possibly falsely).
    PeerDown(u64),
    PeerUp(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => envelope().prop_map(Op::Step),
        24 => (envelope(), -1i64..2).prop_map(|(e, d)| Op::StepRelative(e, d)),
        8 => (2u64..4, any::<u64>()).prop_map(|(from, k)| Op::Grant(from, k)),
        6 => prop_oneof![3 => 0u64..200, 1 => 0u64..1_500].prop_map(Op::Tick),
        4 => (any::<i8>(), any::<bool>()).prop_map(|(n, low)| Op::Propose(n as i64, low)),
        1 => Just(Op::Release),
        2 => (0u64..100).prop_map(Op::Query),
        2 => (0u64..12, 0u64..7).prop_map(|(i, t)| Op::Durable(i, t)),
        6 => Just(Op::DurableAll),
        1 => (0u8..5, 1u64..6).prop_map(|(k, id)| Op::Member(k, id)),
        3 => Just(Op::Trigger),
        1 => (1u64..4).prop_map(Op::Transfer),
        1 => Just(Op::Event),
        1 => Just(Op::EndOfLife),
        2 => (1u64..5).prop_map(Op::PeerDown),
        2 => (1u64..5).prop_map(Op::PeerUp),
    ]
}

// ----- invariants --------------------------------------------------------------

fn check_status(status: &Status, previous: Option<&Status>) -> Result<(), TestCaseError> {
    prop_assert!(
        status.commit_index <= status.last_index,
        "commit past the log: {status:?}"
    );
    prop_assert!(
        status.applied_index <= status.commit_index,
        "applied past commit: {status:?}"
    );
    prop_assert!(
        status.durable_index <= status.last_index,
        "durable past the log: {status:?}"
    );
    prop_assert!(
        status.snapshot_index <= status.applied_index,
        "snapshot past applied: {status:?}"
    );
    if status.role == Role::Leader {
        prop_assert_eq!(status.leader, Some(status.id));
    }
    if let Some(previous) = previous {
        prop_assert!(
            status.term >= previous.term,
            "term went back: {previous:?} -> {status:?}"
        );
    }
    Ok(())
}

fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ----- one server, arbitrary input ----------------------------------------------------

fn run_single(quiesce: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut config = config(1);
    config.snapshot_interval_entries_min = 2;
    config.snapshot_chunk_bytes = 3;
    config.quiesce = quiesce;
    let mut raft: Raft<TestMachine> = fresh_with(config, &[1, 2, 3]);
    let mut now = 0u64;
    let mut previous = raft.status();
    let mut request = 0u64;
    for op in ops {
        match op {
            Op::Step(envelope) => {
                if let Err(e) = raft.step(now, envelope) {
                    // Errors are typed, never panics; a terminated server
                    // refuses everything.
                    let _ = e.to_string();
                }
            }
            Op::StepRelative(mut envelope, delta) => {
                envelope.term = raft.term().saturating_add_signed(delta);
                let _ = raft.step(now, envelope);
            }
            Op::Grant(from, k) => {
                let status = raft.status();
                let (term, message) = match status.role {
                    Role::PreCandidate => (
                        status.term + 1,
                        Message::PreVoteResponse(VoteResponse { granted: true }),
                    ),
                    Role::Candidate => (
                        status.term,
                        Message::VoteResponse(VoteResponse { granted: true }),
                    ),
                    Role::Leader => (
                        status.term,
                        Message::AppendResponse(AppendResponse::Accepted {
                            match_index: k % (status.last_index + 1),
                        }),
                    ),
                    Role::Follower => (
                        status.term,
                        Message::HeartbeatResponse(HeartbeatResponse {
                            read_round: k % 4,
                            last_index: k % 8,
                            quiesced: k % 3 == 0,
                        }),
                    ),
                };
                let _ = raft.step(now, env(from, 1, term, message));
            }
            Op::Tick(ms) => {
                now += ms;
                raft.tick(now);
            }
            Op::Propose(n, low) => {
                request += 1;
                let priority = if low { Priority::Low } else { Priority::Normal };
                let _ = raft.propose(
                    now,
                    Cmd::Add(n),
                    priority,
                    ReplyTo::Request(RequestId(request)),
                );
            }
            Op::Release => {
                let _ = raft.propose(now, Cmd::Release, Priority::Normal, ReplyTo::Nobody);
            }
            Op::Query(r) => {
                let _ = raft.consistent_query(now, RequestId(r), Query::Total);
            }
            Op::Durable(index, term) => raft.log_durable(now, index, term),
            Op::DurableAll => {
                let status = raft.status();
                raft.log_durable(now, status.last_index, status.last_term);
            }
            Op::Member(kind, id) => {
                let change = match kind {
                    0 => MembershipChange::AddVoter(ServerId(id)),
                    1 => MembershipChange::AddNonVoter(ServerId(id)),
                    2 => MembershipChange::AddPromotable(ServerId(id)),
                    3 => MembershipChange::Promote(ServerId(id)),
                    _ => MembershipChange::Remove(ServerId(id)),
                };
                let _ = raft.change_membership(now, change);
            }
            Op::Trigger => raft.trigger_election(now),
            Op::Transfer(id) => {
                let _ = raft.transfer_leadership(now, ServerId(id));
            }
            Op::Event => {
                let _ = raft.propose_event(now, MachineEvent::NodeDown(NodeId(1)));
            }
            Op::EndOfLife => {
                let _ = raft.propose_end_of_life(now);
            }
            Op::PeerDown(id) => raft.peer_down(now, ServerId(id)),
            Op::PeerUp(id) => raft.peer_up(now, ServerId(id)),
        }
        for action in acts(&mut raft) {
            if let Act::AppendLog(entries) = &action {
                prop_assert!(!entries.is_empty());
                prop_assert!(entries.windows(2).all(|w| w[1].index == w[0].index + 1));
            }
        }
        let status = raft.status();
        check_status(&status, Some(&previous))?;
        match raft.next_deadline_ms() {
            Some(deadline) => prop_assert!(
                deadline <= now + 10_000,
                "deadline far away: {deadline} at {now}"
            ),
            // Only a quiesced server, a terminated one or one that cannot
            // campaign may go without a timer.
            None => prop_assert!(
                status.quiesced
                    || status.terminated
                    || (status.role != Role::Leader && !status.members.is_voter(status.id)),
                "no deadline: {status:?}"
            ),
        }
        if status.quiesced {
            prop_assert!(quiesce || status.role != Role::Leader);
            // A quiesced server does nothing when ticked.
            now += 100_000;
            raft.tick(now);
            prop_assert!(
                acts(&mut raft).is_empty(),
                "a quiesced server acted on a tick"
            );
        }
        previous = status;
    }
    Ok(())
}

proptest! {
    #![proptest_config(proptest_config(1_000))]

    #[test]
    fn single_server_survives_arbitrary_input(
        quiesce in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..150),
    ) {
        run_single(quiesce, ops)?;
    }
}

// ----- three servers, random network ---------------------------------------------------

#[derive(Clone, Debug)]
enum NetOp {
    Deliver(usize),
    /// Deliver up to this many messages, oldest first.
    Burst(usize),
    Drop(usize),
    Duplicate(usize),
    Tick(u64),
    /// Server 0 stands for the current leader.
    Propose(u64, i64),
    Release(u64),
    Query(u64),
    Durable(u64),
    Trigger(u64),
    Transfer(u64, u64),
    Restart(u64),
    Remove(u64),
    Add(u64),
    /// `.0`'s failure detector reports `.1` down / up (possibly falsely).
    PeerDown(u64, u64),
    PeerUp(u64, u64),
}

fn net_op() -> impl Strategy<Value = NetOp> {
    let server = 1u64..4;
    prop_oneof![
        30 => any::<usize>().prop_map(NetOp::Deliver),
        10 => (1usize..12).prop_map(NetOp::Burst),
        4 => any::<usize>().prop_map(NetOp::Drop),
        2 => any::<usize>().prop_map(NetOp::Duplicate),
        8 => prop_oneof![4 => 1u64..150, 1 => 150u64..1_200].prop_map(NetOp::Tick),
        16 => (0u64..4, -9i64..10).prop_map(|(s, n)| NetOp::Propose(s, n)),
        1 => server.clone().prop_map(NetOp::Release),
        2 => server.clone().prop_map(NetOp::Query),
        12 => server.clone().prop_map(NetOp::Durable),
        2 => server.clone().prop_map(NetOp::Trigger),
        1 => (server.clone(), server.clone()).prop_map(|(a, b)| NetOp::Transfer(a, b)),
        1 => server.clone().prop_map(NetOp::Restart),
        1 => server.clone().prop_map(NetOp::Remove),
        1 => server.clone().prop_map(NetOp::Add),
        2 => (server.clone(), server.clone()).prop_map(|(a, b)| NetOp::PeerDown(a, b)),
        2 => (server.clone(), server).prop_map(|(a, b)| NetOp::PeerUp(a, b)),
    ]
}

/// What the whole run has seen, to check safety across steps.
#[derive(Default)]
struct History {
    /// The leader of each term.
    leaders: BTreeMap<Term, ServerId>,
    /// Every committed entry, by index.
    committed: BTreeMap<LogIndex, Entry>,
    /// The machine's history at each applied index.
    applied: BTreeMap<LogIndex, Vec<i64>>,
    statuses: BTreeMap<ServerId, Status>,
}

fn check_cluster(c: &Cluster<TestMachine>, seen: &mut History) -> Result<(), TestCaseError> {
    for (id, node) in &c.nodes {
        let status = node.raft.status();
        check_status(&status, seen.statuses.get(id))?;
        if status.role == Role::Leader {
            let leader = *seen.leaders.entry(status.term).or_insert(*id);
            prop_assert_eq!(leader, *id, "two leaders in term {}", status.term);
        }
        for entry in node
            .raft
            .log_entries()
            .filter(|e| e.index <= status.commit_index)
        {
            match seen.committed.get(&entry.index) {
                Some(known) => prop_assert_eq!(
                    known,
                    entry,
                    "{} changed committed entry {}",
                    id,
                    entry.index
                ),
                None => {
                    seen.committed.insert(entry.index, entry.clone());
                }
            }
        }
        let history = &node.raft.machine().history;
        match seen.applied.get(&status.applied_index) {
            Some(known) => prop_assert_eq!(
                known,
                history,
                "{} diverged at applied {}",
                id,
                status.applied_index
            ),
            None => {
                seen.applied.insert(status.applied_index, history.clone());
            }
        }
        seen.statuses.insert(*id, status);
    }
    Ok(())
}

/// Returns the highest index seen committed.
fn run_cluster(
    auto_durable: bool,
    quiesce: bool,
    ops: Vec<NetOp>,
) -> Result<LogIndex, TestCaseError> {
    let mut c = Cluster::<TestMachine>::new(3, |config| {
        config.snapshot_interval_entries_min = 3;
        config.snapshot_chunk_bytes = 5;
        config.inflight_appends_max = 2;
        config.append_entries_max = 2;
        config.quiesce = quiesce;
    });
    c.auto_durable = auto_durable;
    let mut seen = History::default();
    let mut request = 0;
    for op in ops {
        let now = c.now;
        match op {
            NetOp::Deliver(k) | NetOp::Drop(k) | NetOp::Duplicate(k) if c.net.is_empty() => {
                let _ = k;
            }
            NetOp::Deliver(k) => {
                let envelope = c.net.remove(k % c.net.len()).expect("in range");
                let (result, _) = c.step(envelope.clone());
                match result {
                    Ok(()) | Err(StepError::Terminated) => {}
                    Err(e) => prop_assert!(false, "honest message {envelope:?} refused: {e}"),
                }
            }
            NetOp::Burst(n) => {
                for _ in 0..n {
                    let Some((envelope, result, _)) = c.deliver_one() else {
                        break;
                    };
                    match result {
                        Ok(()) | Err(StepError::Terminated) => {}
                        Err(e) => prop_assert!(false, "honest message {envelope:?} refused: {e}"),
                    }
                }
            }
            NetOp::Drop(k) => {
                c.net.remove(k % c.net.len());
            }
            NetOp::Duplicate(k) => {
                let envelope = c.net[k % c.net.len()].clone();
                c.net.push_back(envelope);
            }
            NetOp::Tick(ms) => c.tick(ms),
            NetOp::Propose(id, n) => {
                // Server 0: whoever leads now, if anyone.
                let id = if id == 0 {
                    c.leader().map_or(1, |l| l.0)
                } else {
                    id
                };
                request += 1;
                let _ = c.propose(id, Cmd::Add(n), ReplyTo::Request(RequestId(request)));
            }
            NetOp::Release(id) => {
                let _ = c.propose(id, Cmd::Release, ReplyTo::Nobody);
            }
            NetOp::Query(id) => {
                request += 1;
                let _ = c
                    .raft(id)
                    .consistent_query(now, RequestId(request), Query::Total);
                c.execute(ServerId(id));
            }
            NetOp::Durable(id) => {
                c.durable(id);
            }
            NetOp::Trigger(id) => {
                c.raft(id).trigger_election(now);
                c.execute(ServerId(id));
            }
            NetOp::Transfer(id, target) => {
                let _ = c.raft(id).transfer_leadership(now, ServerId(target));
                c.execute(ServerId(id));
            }
            NetOp::Restart(id) => c.restart(ServerId(id)),
            NetOp::Remove(id) => {
                if let Some(leader) = c.leader() {
                    let _ = c
                        .raft(leader.0)
                        .change_membership(now, MembershipChange::Remove(ServerId(id)));
                    c.execute(leader);
                }
            }
            NetOp::Add(id) => {
                if let Some(leader) = c.leader() {
                    let _ = c
                        .raft(leader.0)
                        .change_membership(now, MembershipChange::AddVoter(ServerId(id)));
                    c.execute(leader);
                }
            }
            NetOp::PeerDown(observer, peer) => {
                c.raft(observer).peer_down(now, ServerId(peer));
                c.execute(ServerId(observer));
            }
            NetOp::PeerUp(observer, peer) => {
                c.raft(observer).peer_up(now, ServerId(peer));
                c.execute(ServerId(observer));
            }
        }
        check_cluster(&c, &mut seen)?;
    }

    Ok(seen.committed.keys().last().copied().unwrap_or(0))
}

proptest! {
    #![proptest_config(proptest_config(600))]

    #[test]
    fn three_servers_stay_safe_under_random_delivery(
        auto_durable in any::<bool>(),
        quiesce in any::<bool>(),
        ops in proptest::collection::vec(net_op(), 1..400),
    ) {
        run_cluster(auto_durable, quiesce, ops)?;
    }
}

/// A long, mostly-delivering run must make progress: the harness is not so
/// hostile that the safety properties hold vacuously.
#[test]
fn random_harness_makes_progress() {
    let mut ops = Vec::new();
    for round in 0..200u64 {
        ops.push(NetOp::Tick(50));
        ops.push(NetOp::Propose(1 + round % 3, 1));
        for id in 1..=3 {
            ops.push(NetOp::Durable(id));
        }
        for k in 0..20 {
            ops.push(NetOp::Deliver(k));
        }
    }
    for quiesce in [false, true] {
        let committed = run_cluster(false, quiesce, ops.clone()).unwrap();
        assert!(
            committed > 40,
            "only {committed} entries committed (quiesce {quiesce})"
        );
    }
}
