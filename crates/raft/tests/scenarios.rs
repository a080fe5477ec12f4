//! Scenario tests of the sans-IO core. Where it reads well they assert the
//! exact action list the core returns (STYLE: unit tests assert the exact
//! action list).

mod common;

use bytes::Bytes;
use chorus_raft::{
    Abandoned, AppendRequest, AppendResponse, CallerId, ConflictHint, Entry, Envelope, HardState,
    Heartbeat, HeartbeatResponse, MembershipChange, Message, Payload, Persisted, Priority,
    ProposeError, Raft, RecoveryError, ReplyTo, RequestId, Role, SnapshotChunk, SnapshotMeta,
    SnapshotResponse, StepError, TransferOutcome, VoteRequest, VoteResponse,
};
use common::*;

fn vote_request(last_log_index: u64, last_log_term: u64) -> VoteRequest {
    VoteRequest {
        last_log_index,
        last_log_term,
        machine_version: 0,
        leadership_transfer: false,
    }
}

fn append(
    prev_log_index: u64,
    prev_log_term: u64,
    entries: Vec<Entry>,
    leader_commit: u64,
) -> Message {
    Message::Append(AppendRequest {
        prev_log_index,
        prev_log_term,
        entries,
        leader_commit,
    })
}

fn accepted(match_index: u64) -> Message {
    Message::AppendResponse(AppendResponse::Accepted { match_index })
}

fn granted(granted: bool) -> VoteResponse {
    VoteResponse { granted }
}

fn noop(index: u64, term: u64, time_ms: u64) -> Entry {
    entry_at(index, term, time_ms, Payload::Noop)
}

/// A single-voter leader whose noop (index 1, term 1) is committed.
fn single_leader() -> Raft<TestMachine> {
    let mut raft = fresh::<TestMachine>(1, &[1]);
    raft.trigger_election(0);
    acts(&mut raft);
    raft.log_durable(0, 1, 1);
    assert!(acts(&mut raft).is_empty());
    assert_eq!(raft.status().commit_index, 1);
    raft
}

/// A three-voter cluster led by s1 in term 1, noop committed everywhere.
fn three_with_leader() -> Cluster<TestMachine> {
    let mut cluster = Cluster::<TestMachine>::new(3, |_| {});
    cluster.elect(1);
    cluster.run(100, 100);
    for id in 1..=3 {
        assert_eq!(cluster.raft(id).status().commit_index, 1, "s{id}");
    }
    cluster
}

// ----- election --------------------------------------------------------------

#[test]
fn single_node_elects_itself_and_commits_a_proposal() {
    let mut raft = fresh::<TestMachine>(1, &[1]);
    raft.trigger_election(10);
    assert_eq!(
        acts(&mut raft),
        vec![
            Act::RoleChanged {
                role: Role::PreCandidate,
                term: 0,
                leader: None
            },
            Act::SaveHardState(HardState {
                term: 1,
                voted_for: Some(s(1))
            }),
            Act::RoleChanged {
                role: Role::Candidate,
                term: 1,
                leader: None
            },
            Act::RoleChanged {
                role: Role::Leader,
                term: 1,
                leader: Some(s(1))
            },
            Act::AppendLog(vec![noop(1, 1, 10)]),
        ]
    );
    // The leader counts itself only for durable entries.
    assert_eq!(raft.status().commit_index, 0);
    raft.log_durable(11, 1, 1);
    assert!(acts(&mut raft).is_empty());
    assert_eq!(
        (raft.status().commit_index, raft.status().applied_index),
        (1, 1)
    );

    raft.propose(
        12,
        Cmd::Add(5),
        Priority::Normal,
        ReplyTo::Request(RequestId(1)),
    )
    .unwrap();
    assert_eq!(
        acts(&mut raft),
        vec![Act::AppendLog(vec![cmd_entry(2, 1, 12, Cmd::Add(5))])]
    );
    raft.log_durable(13, 2, 1);
    assert_eq!(
        acts(&mut raft),
        vec![Act::Reply {
            request: RequestId(1),
            index: 2,
            reply: 5
        }]
    );

    // Stream callers get their replies batched in one Applied action.
    let stream = |correlation| ReplyTo::Stream {
        caller: CallerId(9),
        correlation,
    };
    raft.propose(14, Cmd::Add(1), Priority::Normal, stream(100))
        .unwrap();
    raft.propose(14, Cmd::Add(2), Priority::Normal, stream(101))
        .unwrap();
    assert_eq!(
        acts(&mut raft),
        vec![Act::AppendLog(vec![
            cmd_entry(3, 1, 14, Cmd::Add(1)),
            cmd_entry(4, 1, 14, Cmd::Add(2))
        ])]
    );
    raft.log_durable(15, 4, 1);
    assert_eq!(
        acts(&mut raft),
        vec![Act::Applied {
            caller: CallerId(9),
            replies: vec![(100, 6), (101, 8)]
        }]
    );
    assert_eq!(raft.machine().total, 8);
}

#[test]
fn three_node_election_with_pre_vote_exact_actions() {
    let mut c = Cluster::<TestMachine>::new(3, |_| {});
    c.auto_durable = false;
    c.raft(1).trigger_election(0);
    let pre_vote = Message::PreVote(vote_request(0, 0));
    assert_eq!(
        c.execute(s(1)),
        vec![
            Act::RoleChanged {
                role: Role::PreCandidate,
                term: 0,
                leader: None
            },
            Act::Send(env(1, 2, 1, pre_vote.clone())),
            Act::Send(env(1, 3, 1, pre_vote.clone())),
        ]
    );
    // Pre-votes carry term + 1 but do not move the voters' terms.
    for voter in [2, 3] {
        let (envelope, result, acts) = c.deliver_one().unwrap();
        assert_eq!(envelope, env(1, voter, 1, pre_vote.clone()));
        result.unwrap();
        assert_eq!(
            acts,
            vec![Act::Send(env(
                voter,
                1,
                1,
                Message::PreVoteResponse(granted(true))
            ))]
        );
        assert_eq!(c.raft(voter).term(), 0);
        assert_eq!(c.node(voter).disk.hard_state, HardState::default());
    }
    // The first granted pre-vote makes a quorum: a real election, with the
    // term and self-vote saved before any request leaves.
    let (_, result, acts) = c.deliver_one().unwrap();
    result.unwrap();
    let vote = Message::Vote(vote_request(0, 0));
    assert_eq!(
        acts,
        vec![
            Act::SaveHardState(HardState {
                term: 1,
                voted_for: Some(s(1))
            }),
            Act::RoleChanged {
                role: Role::Candidate,
                term: 1,
                leader: None
            },
            Act::Send(env(1, 2, 1, vote.clone())),
            Act::Send(env(1, 3, 1, vote.clone())),
        ]
    );
    // The late second pre-vote is ignored.
    let (_, result, acts) = c.deliver_one().unwrap();
    result.unwrap();
    assert!(acts.is_empty());
    // Each voter saves the new term, then its vote, then answers.
    for voter in [2, 3] {
        let (_, result, acts) = c.deliver_one().unwrap();
        result.unwrap();
        assert_eq!(
            acts,
            vec![
                Act::SaveHardState(HardState {
                    term: 1,
                    voted_for: None
                }),
                Act::RoleChanged {
                    role: Role::Follower,
                    term: 1,
                    leader: None
                },
                Act::SaveHardState(HardState {
                    term: 1,
                    voted_for: Some(s(1))
                }),
                Act::Send(env(voter, 1, 1, Message::VoteResponse(granted(true)))),
            ]
        );
    }
    // The first vote wins: the noop is sent before the leader's own write
    // (thesis §10.2.1), which is queued as AppendLog.
    let (_, result, acts) = c.deliver_one().unwrap();
    result.unwrap();
    let first = append(0, 0, vec![noop(1, 1, 0)], 0);
    assert_eq!(
        acts,
        vec![
            Act::RoleChanged {
                role: Role::Leader,
                term: 1,
                leader: Some(s(1))
            },
            Act::Send(env(1, 2, 1, first.clone())),
            Act::Send(env(1, 3, 1, first.clone())),
            Act::AppendLog(vec![noop(1, 1, 0)]),
        ]
    );
    let (_, _, acts) = c.deliver_one().unwrap();
    assert!(acts.is_empty(), "a vote after winning changes nothing");
    assert_eq!(c.leader(), Some(s(1)));
}

#[test]
fn follower_acknowledges_entries_only_after_log_durable() {
    let mut follower = fresh::<TestMachine>(2, &[1, 2, 3]);
    let entries = vec![noop(1, 1, 0), cmd_entry(2, 1, 0, Cmd::Add(3))];
    follower
        .step(5, env(1, 2, 1, append(0, 0, entries.clone(), 0)))
        .unwrap();
    assert_eq!(
        acts(&mut follower),
        vec![
            Act::SaveHardState(HardState {
                term: 1,
                voted_for: None
            }),
            Act::RoleChanged {
                role: Role::Follower,
                term: 1,
                leader: Some(s(1))
            },
            Act::AppendLog(entries),
        ]
    );
    // A repeat of the same append before durability still gets no answer.
    follower
        .step(6, env(1, 2, 1, append(0, 0, vec![noop(1, 1, 0)], 0)))
        .unwrap();
    assert!(acts(&mut follower).is_empty());
    // Durability of the first entry only: acknowledge exactly that.
    follower.log_durable(7, 1, 1);
    assert_eq!(
        acts(&mut follower),
        vec![Act::Send(env(2, 1, 1, accepted(1)))]
    );
    // A notice for a term the entry never had is ignored.
    follower.log_durable(8, 2, 7);
    assert!(acts(&mut follower).is_empty());
    follower.log_durable(9, 2, 1);
    assert_eq!(
        acts(&mut follower),
        vec![Act::Send(env(2, 1, 1, accepted(2)))]
    );
    assert_eq!(follower.status().durable_index, 2);
}

#[test]
fn leader_commits_old_term_entries_only_through_its_own_noop() {
    // Figure 8: s1 holds entry 2 of term 2 that no one else has; it wins
    // term 3. Replicating entry 2 to a majority must not commit it; only the
    // term-3 noop, once on a majority, commits it.
    let log = vec![noop(1, 1, 0), cmd_entry(2, 2, 0, Cmd::Add(1))];
    let mut leader = recovered::<TestMachine>(1, &[1, 2, 3], 2, log);
    let won = win_election(&mut leader, &[2], 0);
    assert_eq!(leader.term(), 3);
    assert!(won.contains(&Act::Send(env(
        1,
        2,
        3,
        append(2, 2, vec![noop(3, 3, 0)], 0)
    ))));
    assert_eq!(leader.status().durable_index, 2);

    // s2 reports it holds everything up to 2 (term 2): a majority, but of an
    // old term.
    leader.step(1, env(2, 1, 3, accepted(2))).unwrap();
    acts(&mut leader);
    assert_eq!(leader.status().commit_index, 0);
    leader.log_durable(2, 3, 3);
    acts(&mut leader);
    assert_eq!(
        leader.status().commit_index,
        0,
        "old-term entry counted on a majority must not commit"
    );
    // The noop reaches a majority: everything up to it commits.
    leader.step(3, env(2, 1, 3, accepted(3))).unwrap();
    acts(&mut leader);
    assert_eq!(
        (leader.status().commit_index, leader.status().applied_index),
        (3, 3)
    );
    assert_eq!(leader.machine().total, 1);
}

#[test]
fn check_quorum_isolated_leader_steps_down() {
    let mut c = three_with_leader();
    let elected_at = c.now;
    c.isolate(1);
    c.propose(1, Cmd::Add(1), ReplyTo::Request(RequestId(7)))
        .unwrap();
    let mut stepped_down_at = None;
    while c.now < elected_at + 3_000 {
        c.tick(100);
        c.deliver_all();
        if stepped_down_at.is_none() && c.raft(1).role() != Role::Leader {
            stepped_down_at = Some(c.now);
        }
    }
    let at = stepped_down_at.expect("isolated leader stepped down");
    assert!(
        at > elected_at && at <= elected_at + 2 * 1_000,
        "stepped down at {at}"
    );
    assert_eq!(c.raft(1).role(), Role::Follower);
    assert_eq!(c.raft(1).term(), 1, "it heard nothing newer");
    assert!(c.node(1).outputs.contains(&Act::Abandoned {
        reply_to: ReplyTo::Request(RequestId(7)),
        why: Abandoned::LostLeadership { leader: None },
    }));
    assert!(c.node(1).outputs.contains(&Act::RoleChanged {
        role: Role::Follower,
        term: 1,
        leader: None
    }));
    // The healthy majority elected a new leader meanwhile.
    let leader = c.leader().unwrap();
    assert_ne!(leader, s(1));
    assert_eq!(c.raft(leader.0).term(), 2);
}

#[test]
fn pre_vote_partitioned_node_rejoining_does_not_bump_terms() {
    let mut c = three_with_leader();
    c.isolate(3);
    c.run(5_000, 50);
    assert_eq!(
        c.raft(3).term(),
        1,
        "pre-vote keeps a partitioned node's term"
    );
    assert_eq!(c.raft(3).role(), Role::PreCandidate);
    assert!(c.trace.iter().any(|(id, a)| *id == s(3)
        && matches!(a, Act::Send(e) if matches!(e.message, Message::PreVote(_)) && e.term == 2)));
    c.heal(3);
    c.run(1_000, 50);
    for id in 1..=3 {
        assert_eq!(c.raft(id).term(), 1, "s{id}");
    }
    assert_eq!(c.raft(1).role(), Role::Leader);
    assert_eq!(c.raft(3).role(), Role::Follower);
    assert_eq!(c.raft(3).leader(), Some(s(1)));
}

#[test]
fn leader_stickiness_vote_ignored_while_leader_is_heard() {
    let mut follower = fresh::<TestMachine>(2, &[1, 2, 3]);
    let heartbeat = Message::Heartbeat(Heartbeat {
        commit: 0,
        read_round: 0,
        quiesce: false,
    });
    follower.step(100, env(1, 2, 1, heartbeat)).unwrap();
    acts(&mut follower);
    assert_eq!(follower.leader(), Some(s(1)));

    // Within the lease: a disruptive vote is dropped without an answer.
    follower
        .step(200, env(3, 2, 5, Message::Vote(vote_request(0, 0))))
        .unwrap();
    assert!(acts(&mut follower).is_empty());
    assert_eq!(follower.term(), 1);
    // A pre-vote is refused with our term.
    follower
        .step(300, env(3, 2, 5, Message::PreVote(vote_request(0, 0))))
        .unwrap();
    assert_eq!(
        acts(&mut follower),
        vec![Act::Send(env(
            2,
            3,
            1,
            Message::PreVoteResponse(granted(false))
        ))]
    );
    // After an election timeout without the leader, the vote is granted.
    follower
        .step(1_100, env(3, 2, 5, Message::Vote(vote_request(0, 0))))
        .unwrap();
    assert_eq!(
        acts(&mut follower),
        vec![
            Act::SaveHardState(HardState {
                term: 5,
                voted_for: None
            }),
            Act::RoleChanged {
                role: Role::Follower,
                term: 5,
                leader: None
            },
            Act::SaveHardState(HardState {
                term: 5,
                voted_for: Some(s(3))
            }),
            Act::Send(env(2, 3, 5, Message::VoteResponse(granted(true)))),
        ]
    );
}

#[test]
fn leader_stickiness_lifted_by_leadership_transfer() {
    let mut follower = fresh::<TestMachine>(2, &[1, 2, 3]);
    follower
        .step(
            100,
            env(
                1,
                2,
                1,
                Message::Heartbeat(Heartbeat {
                    commit: 0,
                    read_round: 0,
                    quiesce: false,
                }),
            ),
        )
        .unwrap();
    acts(&mut follower);
    let mut request = vote_request(0, 0);
    request.leadership_transfer = true;
    follower
        .step(150, env(3, 2, 2, Message::Vote(request)))
        .unwrap();
    let out = acts(&mut follower);
    assert_eq!(
        out.last(),
        Some(&Act::Send(env(
            2,
            3,
            2,
            Message::VoteResponse(granted(true))
        )))
    );
}

// ----- replication -------------------------------------------------------------

#[test]
fn fast_backtracking_follower_hint_names_its_conflicting_term() {
    let log = vec![
        noop(1, 1, 0),
        noop(2, 2, 0),
        noop(3, 2, 0),
        noop(4, 2, 0),
        noop(5, 2, 0),
    ];
    let mut follower = recovered::<TestMachine>(2, &[1, 2, 3, 4, 5], 2, log);
    follower
        .step(0, env(1, 2, 5, append(5, 4, vec![noop(6, 5, 0)], 0)))
        .unwrap();
    assert_eq!(
        acts(&mut follower),
        vec![
            Act::SaveHardState(HardState {
                term: 5,
                voted_for: None
            }),
            Act::RoleChanged {
                role: Role::Follower,
                term: 5,
                leader: Some(s(1))
            },
            Act::Send(env(
                2,
                1,
                5,
                Message::AppendResponse(AppendResponse::Rejected {
                    prev_log_index: 5,
                    hint: ConflictHint { term: 2, index: 2 }
                })
            )),
        ]
    );
    // A log shorter than prev: hint at its end.
    follower
        .step(1, env(1, 2, 5, append(9, 5, vec![], 0)))
        .unwrap();
    assert_eq!(
        acts(&mut follower),
        vec![Act::Send(env(
            2,
            1,
            5,
            Message::AppendResponse(AppendResponse::Rejected {
                prev_log_index: 9,
                hint: ConflictHint { term: 0, index: 6 }
            })
        ))]
    );
    // The leader's whole suffix replaces the conflicting term in one go.
    let suffix = vec![
        noop(2, 1, 0),
        noop(3, 1, 0),
        noop(4, 4, 0),
        noop(5, 4, 0),
        noop(6, 5, 0),
    ];
    follower
        .step(2, env(1, 2, 5, append(1, 1, suffix.clone(), 0)))
        .unwrap();
    assert_eq!(acts(&mut follower), vec![Act::AppendLog(suffix)]);
    assert_eq!(
        follower.status().durable_index,
        1,
        "truncation un-durables the rewritten suffix"
    );
    follower.log_durable(3, 6, 5);
    assert_eq!(
        acts(&mut follower),
        vec![Act::Send(env(2, 1, 5, accepted(6)))]
    );
}

#[test]
fn fast_backtracking_leader_skips_whole_terms() {
    let log = vec![
        noop(1, 1, 0),
        noop(2, 1, 0),
        noop(3, 1, 0),
        noop(4, 4, 0),
        noop(5, 4, 0),
    ];
    let mut leader = recovered::<TestMachine>(1, &[1, 2, 3, 4, 5], 4, log);
    win_election(&mut leader, &[2, 3, 4, 5], 0);
    assert_eq!(leader.term(), 5);
    let rejected = |hint| {
        Message::AppendResponse(AppendResponse::Rejected {
            prev_log_index: 5,
            hint,
        })
    };
    let suffix_from = |leader: &Raft<TestMachine>, from: u64| -> Vec<Entry> {
        leader
            .log_entries()
            .filter(|e| e.index >= from)
            .cloned()
            .collect()
    };
    // Follower's conflicting term 2 is unknown to the leader: go to the
    // follower's first index of it.
    let from_2 = suffix_from(&leader, 2);
    leader
        .step(
            1,
            env(2, 1, 5, rejected(ConflictHint { term: 2, index: 2 })),
        )
        .unwrap();
    assert_eq!(
        acts(&mut leader),
        vec![Act::Send(env(1, 2, 5, append(1, 1, from_2, 0)))]
    );
    // Follower's conflicting term 1 is known: resume after the leader's last
    // entry of term 1.
    let from_4 = suffix_from(&leader, 4);
    leader
        .step(
            1,
            env(3, 1, 5, rejected(ConflictHint { term: 1, index: 2 })),
        )
        .unwrap();
    assert_eq!(
        acts(&mut leader),
        vec![Act::Send(env(1, 3, 5, append(3, 1, from_4, 0)))]
    );
    // Follower's log is shorter: resume at its end.
    let from_3 = suffix_from(&leader, 3);
    leader
        .step(
            1,
            env(4, 1, 5, rejected(ConflictHint { term: 0, index: 3 })),
        )
        .unwrap();
    assert_eq!(
        acts(&mut leader),
        vec![Act::Send(env(1, 4, 5, append(2, 1, from_3, 0)))]
    );
    // A duplicate of a rejection already handled is stale and ignored.
    leader
        .step(
            1,
            env(4, 1, 5, rejected(ConflictHint { term: 0, index: 3 })),
        )
        .unwrap();
    assert!(acts(&mut leader).is_empty());
}

#[test]
fn pipelining_bounded_by_inflight_appends_max() {
    let mut c = Cluster::<TestMachine>::new(3, |c| {
        c.inflight_appends_max = 3;
        c.append_entries_max = 1;
    });
    c.elect(1);
    c.run(100, 100);
    let now = c.now;
    for n in 0..5 {
        c.raft(1)
            .propose(now, Cmd::Add(n), Priority::Normal, ReplyTo::Nobody)
            .unwrap();
    }
    let out = c.execute(s(1));
    for peer in [2, 3] {
        let appends: Vec<AppendRequest> = sends(&out)
            .into_iter()
            .filter(|e| e.to == s(peer))
            .filter_map(|e| match e.message {
                Message::Append(a) => Some(a),
                _ => None,
            })
            .collect();
        assert_eq!(
            appends.len(),
            3,
            "three appends in flight to s{peer} before any answer"
        );
        for (k, a) in appends.iter().enumerate() {
            assert_eq!(a.prev_log_index, 1 + k as u64);
            assert_eq!(a.entries.len(), 1);
            assert_eq!(a.entries[0].index, 2 + k as u64);
        }
    }
    // One acknowledgement opens the window by exactly one message.
    c.net.clear();
    let (result, out) = c.step(env(2, 1, 1, accepted(2)));
    result.unwrap();
    let to_s2: Vec<_> = sends(&out).into_iter().filter(|e| e.to == s(2)).collect();
    assert_eq!(to_s2.len(), 1);
    match &to_s2[0].message {
        Message::Append(a) => {
            assert_eq!(a.prev_log_index, 4);
            assert_eq!(
                a.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
                vec![5]
            );
        }
        other => panic!("expected an append, got {other:?}"),
    }
    // s3's window is still full: no append, only (at most) a heartbeat
    // telling it the new commit index.
    assert!(
        sends(&out)
            .iter()
            .all(|e| e.to != s(3) || matches!(e.message, Message::Heartbeat(_))),
        "s3's window is still full"
    );
}

#[test]
fn low_priority_proposals_appended_after_normal_ones() {
    let mut raft = single_leader();
    raft.propose(
        5,
        Cmd::Add(1),
        Priority::Low,
        ReplyTo::Request(RequestId(1)),
    )
    .unwrap();
    raft.propose(
        5,
        Cmd::Add(2),
        Priority::Normal,
        ReplyTo::Request(RequestId(2)),
    )
    .unwrap();
    assert_eq!(
        acts(&mut raft),
        vec![Act::AppendLog(vec![
            cmd_entry(2, 1, 5, Cmd::Add(2)),
            cmd_entry(3, 1, 5, Cmd::Add(1))
        ])]
    );
    raft.log_durable(6, 3, 1);
    assert_eq!(
        acts(&mut raft),
        vec![
            Act::Reply {
                request: RequestId(2),
                index: 2,
                reply: 2
            },
            Act::Reply {
                request: RequestId(1),
                index: 3,
                reply: 3
            },
        ]
    );
}

#[test]
fn low_priority_batches_are_bounded() {
    let mut config = config(1);
    config.low_priority_batch_max = 2;
    let mut raft = fresh_with::<TestMachine>(config, &[1]);
    raft.trigger_election(0);
    acts(&mut raft);
    raft.log_durable(0, 1, 1);
    for n in 1..=3 {
        raft.propose(1, Cmd::Add(n), Priority::Low, ReplyTo::Nobody)
            .unwrap();
    }
    assert_eq!(
        acts(&mut raft),
        vec![Act::AppendLog(vec![
            cmd_entry(2, 1, 1, Cmd::Add(1)),
            cmd_entry(3, 1, 1, Cmd::Add(2))
        ])]
    );
    assert_eq!(
        acts(&mut raft),
        vec![Act::AppendLog(vec![cmd_entry(4, 1, 1, Cmd::Add(3))])]
    );
}

#[test]
fn proposals_refused_when_not_leader_or_busy() {
    let mut follower = fresh::<TestMachine>(2, &[1, 2, 3]);
    assert_eq!(
        follower.propose(0, Cmd::Add(1), Priority::Normal, ReplyTo::Nobody),
        Err(ProposeError::NotLeader { leader: None })
    );
    let mut config = config(1);
    config.pending_proposals_max = 2;
    let mut raft = fresh_with::<TestMachine>(config, &[1]);
    raft.trigger_election(0);
    raft.log_durable(0, 1, 1);
    acts(&mut raft);
    let req = |n| ReplyTo::Request(RequestId(n));
    raft.propose(1, Cmd::Add(1), Priority::Normal, req(1))
        .unwrap();
    raft.propose(1, Cmd::Add(1), Priority::Low, req(2)).unwrap();
    assert_eq!(
        raft.propose(1, Cmd::Add(1), Priority::Normal, req(3)),
        Err(ProposeError::Busy(2))
    );
}

// ----- membership --------------------------------------------------------------

#[test]
fn change_membership_errors() {
    let mut raft = fresh::<TestMachine>(1, &[1]);
    raft.trigger_election(0);
    acts(&mut raft);
    // The noop is not committed yet.
    assert_eq!(
        raft.change_membership(0, MembershipChange::AddVoter(s(2))),
        Err(ProposeError::LeaderNotReady)
    );
    raft.log_durable(0, 1, 1);
    assert_eq!(
        raft.change_membership(0, MembershipChange::AddVoter(s(1))),
        Err(ProposeError::AlreadyMember(s(1)))
    );
    assert_eq!(
        raft.change_membership(0, MembershipChange::Remove(s(9))),
        Err(ProposeError::NotMember(s(9)))
    );
    assert_eq!(
        raft.change_membership(0, MembershipChange::Remove(s(1))),
        Err(ProposeError::LastVoter(s(1)))
    );
    assert_eq!(
        raft.change_membership(0, MembershipChange::AddNonVoter(s(2))),
        Ok(2)
    );
    // The change takes effect at once, committed or not.
    assert!(raft.membership().contains(s(2)));
    assert_eq!(
        raft.change_membership(0, MembershipChange::AddVoter(s(3))),
        Err(ProposeError::ConfigChangeInProgress)
    );
    let out = acts(&mut raft);
    assert!(matches!(&out[0], Act::Send(e) if e.to == s(2)));
    assert!(
        matches!(out.last(), Some(Act::AppendLog(entries)) if entries.len() == 1 && matches!(entries[0].payload, Payload::Config(_)))
    );
    // A non-voter does not count: the leader commits alone.
    raft.log_durable(1, 2, 1);
    assert_eq!(raft.status().commit_index, 2);
    assert_eq!(
        raft.change_membership(1, MembershipChange::AddVoter(s(3))),
        Ok(3)
    );

    let mut follower = fresh::<TestMachine>(2, &[1, 2]);
    assert_eq!(
        follower.change_membership(0, MembershipChange::AddVoter(s(3))),
        Err(ProposeError::NotLeader { leader: None })
    );
}

#[test]
fn add_promotable_is_promoted_to_voter_after_catching_up() {
    let mut c = three_with_leader();
    for n in 1..=5 {
        c.propose(1, Cmd::Add(n), ReplyTo::Nobody).unwrap();
    }
    c.deliver_all();
    c.add_node(4, &[1, 2, 3], &|_| {});
    let now = c.now;
    let index = c
        .raft(1)
        .change_membership(now, MembershipChange::AddPromotable(s(4)))
        .unwrap();
    c.execute(s(1));
    let target = index - 1;
    assert_eq!(
        c.raft(1).membership().members.get(&s(4)),
        Some(&chorus_raft::Membership::Promotable {
            target_index: target
        })
    );
    c.run(500, 50);
    for id in 1..=4 {
        assert_eq!(
            c.raft(id).membership().members.get(&s(4)),
            Some(&chorus_raft::Membership::Voter),
            "s{id} sees s4 as a voter"
        );
    }
    let configs: Vec<u64> = c
        .raft(1)
        .log_entries()
        .filter(|e| matches!(e.payload, Payload::Config(_)))
        .map(|e| e.index)
        .collect();
    assert_eq!(
        configs,
        vec![index, index + 1],
        "promotion is its own config entry"
    );
    assert_eq!(c.raft(4).machine().total, 15);
}

#[test]
fn promote_makes_a_non_voter_a_voter_once_caught_up() {
    let mut c = three_with_leader();
    c.add_node(4, &[1, 2, 3], &|_| {});
    let now = c.now;
    c.raft(1)
        .change_membership(now, MembershipChange::AddNonVoter(s(4)))
        .unwrap();
    c.execute(s(1));
    c.run(300, 50);
    // Refusals first: only members, only non-voters.
    let now = c.now;
    assert_eq!(
        c.raft(1)
            .change_membership(now, MembershipChange::Promote(s(9))),
        Err(ProposeError::NotMember(s(9)))
    );
    assert_eq!(
        c.raft(1)
            .change_membership(now, MembershipChange::Promote(s(2))),
        Err(ProposeError::AlreadyVoter(s(2)))
    );
    for n in 1..=5 {
        c.propose(1, Cmd::Add(n), ReplyTo::Nobody).unwrap();
    }
    let now = c.now;
    c.raft(1)
        .change_membership(now, MembershipChange::Promote(s(4)))
        .unwrap();
    c.execute(s(1));
    assert!(matches!(
        c.raft(1).membership().members.get(&s(4)),
        Some(chorus_raft::Membership::Promotable { .. })
    ));
    c.run(500, 50);
    for id in 1..=4 {
        assert_eq!(
            c.raft(id).membership().members.get(&s(4)),
            Some(&chorus_raft::Membership::Voter),
            "s{id} sees s4 as a voter"
        );
    }
    assert_eq!(c.raft(4).machine().total, 15);
}

#[test]
fn removed_leader_steps_down_after_removal_commits() {
    let mut c = three_with_leader();
    let now = c.now;
    let index = c
        .raft(1)
        .change_membership(now, MembershipChange::Remove(s(1)))
        .unwrap();
    c.execute(s(1));
    assert_eq!(
        c.raft(1).role(),
        Role::Leader,
        "still leading until the removal commits"
    );
    assert!(!c.raft(1).membership().contains(s(1)));
    c.deliver_all();
    assert!(c.raft(1).status().commit_index >= index);
    assert_eq!(c.raft(1).role(), Role::Follower);
    c.run(4_000, 100);
    let leader = c.leader().unwrap();
    assert_ne!(leader, s(1));
    assert_eq!(
        c.raft(1).role(),
        Role::Follower,
        "a removed server never campaigns"
    );
    assert_eq!(c.raft(1).next_deadline_ms(), None);
}

// ----- leadership transfer -------------------------------------------------------

#[test]
fn transfer_leadership_to_caught_up_target() {
    let mut c = three_with_leader();
    let now = c.now;
    c.tick(0);
    assert_eq!(
        c.raft(1).transfer_leadership(now, s(1)),
        Ok(TransferOutcome::AlreadyLeader)
    );
    assert_eq!(
        c.raft(1).transfer_leadership(now, s(2)),
        Ok(TransferOutcome::Started)
    );
    assert_eq!(
        c.execute(s(1)),
        vec![Act::Send(env(1, 2, 1, Message::TimeoutNow))]
    );
    assert_eq!(
        c.raft(1)
            .propose(now, Cmd::Add(1), Priority::Normal, ReplyTo::Nobody),
        Err(ProposeError::TransferInProgress)
    );
    assert_eq!(
        c.raft(1).transfer_leadership(now, s(3)),
        Err(ProposeError::TransferInProgress)
    );
    // TimeoutNow makes s2 campaign at once, without pre-vote.
    let (_, result, out) = c.deliver_one().unwrap();
    result.unwrap();
    let mut transfer_vote = vote_request(1, 1);
    transfer_vote.leadership_transfer = true;
    assert_eq!(
        out,
        vec![
            Act::SaveHardState(HardState {
                term: 2,
                voted_for: Some(s(2))
            }),
            Act::RoleChanged {
                role: Role::Candidate,
                term: 2,
                leader: None
            },
            Act::Send(env(2, 1, 2, Message::Vote(transfer_vote.clone()))),
            Act::Send(env(2, 3, 2, Message::Vote(transfer_vote))),
        ]
    );
    c.deliver_all();
    assert_eq!(c.leader(), Some(s(2)));
    assert_eq!(c.raft(2).term(), 2);
    assert_eq!(c.raft(1).role(), Role::Follower);
    assert_eq!(c.raft(1).leader(), Some(s(2)));
}

#[test]
fn transfer_leadership_waits_for_target_to_catch_up() {
    let mut c = three_with_leader();
    c.isolate(3);
    c.propose(1, Cmd::Add(1), ReplyTo::Nobody).unwrap();
    c.deliver_all();
    c.heal(3);
    let now = c.now;
    assert_eq!(
        c.raft(1).transfer_leadership(now, s(3)),
        Ok(TransferOutcome::Started)
    );
    let out = c.execute(s(1));
    assert!(!out
        .iter()
        .any(|a| matches!(a, Act::Send(e) if e.message == Message::TimeoutNow)));
    c.run(300, 50);
    assert!(c.trace.iter().any(|(id, a)| *id == s(1)
        && matches!(a, Act::Send(e) if e.message == Message::TimeoutNow && e.to == s(3))));
    assert_eq!(c.leader(), Some(s(3)));
    assert_eq!(c.raft(3).machine().total, 1);
}

#[test]
fn transfer_leadership_abandoned_after_election_timeout() {
    let mut c = three_with_leader();
    c.isolate(2);
    let now = c.now;
    assert_eq!(
        c.raft(1).transfer_leadership(now, s(2)),
        Ok(TransferOutcome::Started)
    );
    c.execute(s(1));
    c.run(900, 100);
    assert_eq!(
        c.propose(1, Cmd::Add(1), ReplyTo::Nobody),
        Err(ProposeError::TransferInProgress)
    );
    c.run(200, 100);
    assert_eq!(c.raft(1).role(), Role::Leader);
    assert_eq!(c.propose(1, Cmd::Add(1), ReplyTo::Nobody), Ok(()));
    let now = c.now;
    assert_eq!(
        c.raft(1).transfer_leadership(now, s(3)),
        Ok(TransferOutcome::Started)
    );
    assert_eq!(
        c.raft(1).transfer_leadership(now, s(2)),
        Err(ProposeError::TransferInProgress)
    );
    assert_eq!(
        c.raft(1).transfer_leadership(now, s(9)),
        Err(ProposeError::NotVoter(s(9)))
    );
    let mut f = fresh::<TestMachine>(2, &[1, 2]);
    assert_eq!(
        f.transfer_leadership(0, s(1)),
        Err(ProposeError::NotLeader { leader: None })
    );
}

#[test]
fn transfer_leadership_to_non_voter_is_refused() {
    let mut raft = single_leader();
    raft.change_membership(0, MembershipChange::AddNonVoter(s(2)))
        .unwrap();
    assert_eq!(
        raft.transfer_leadership(0, s(2)),
        Err(ProposeError::NotVoter(s(2)))
    );
}

// ----- consistent queries ----------------------------------------------------------

#[test]
fn consistent_query_waits_for_a_quorum_heartbeat_round() {
    let mut c = three_with_leader();
    c.propose(1, Cmd::Add(5), ReplyTo::Nobody).unwrap();
    c.deliver_all();
    c.tick(0);
    c.net.clear();
    let now = c.now;
    c.raft(1)
        .consistent_query(now, RequestId(2), Query::Total)
        .unwrap();
    let out = c.execute(s(1));
    let hb = |to, commit| {
        env(
            1,
            to,
            1,
            Message::Heartbeat(Heartbeat {
                commit,
                read_round: 1,
                quiesce: false,
            }),
        )
    };
    assert_eq!(out, vec![Act::Send(hb(2, 2)), Act::Send(hb(3, 2))]);
    // An answer to an older round does not confirm the read.
    let (result, out) = c.step(env(
        2,
        1,
        1,
        Message::HeartbeatResponse(HeartbeatResponse {
            read_round: 0,
            last_index: 2,
            quiesced: false,
        }),
    ));
    result.unwrap();
    assert!(out.is_empty());
    // One follower echoing the round makes a quorum with the leader.
    let (result, out) = c.step(env(
        3,
        1,
        1,
        Message::HeartbeatResponse(HeartbeatResponse {
            read_round: 1,
            last_index: 2,
            quiesced: false,
        }),
    ));
    result.unwrap();
    assert_eq!(
        out,
        vec![Act::QueryReply {
            request: RequestId(2),
            reply: 5
        }]
    );
}

#[test]
fn consistent_query_blocked_until_leaders_first_commit() {
    let mut c = Cluster::<TestMachine>::new(3, |_| {});
    c.raft(1).trigger_election(0);
    c.execute(s(1));
    while c.raft(1).role() != Role::Leader {
        let (_, result, _) = c.deliver_one().unwrap();
        result.unwrap();
    }
    assert_eq!(c.raft(1).status().commit_index, 0);
    c.raft(1)
        .consistent_query(0, RequestId(1), Query::Len)
        .unwrap();
    let out = c.execute(s(1));
    // (A leader's first tick sends an ordinary heartbeat, round 0.)
    assert!(!out
        .iter()
        .any(|a| matches!(a, Act::Send(e) if matches!(e.message, Message::Heartbeat(Heartbeat { read_round, .. }) if read_round > 0))));
    // Deliver until the noop commits; the read's round starts only then.
    while c.raft(1).status().commit_index == 0 {
        let (envelope, result, _) = c.deliver_one().unwrap();
        result.unwrap();
        assert!(!matches!(
            envelope.message,
            Message::Heartbeat(Heartbeat { read_round: 1, .. })
        ));
    }
    assert!(!c
        .node(1)
        .outputs
        .iter()
        .any(|a| matches!(a, Act::QueryReply { .. })));
    assert!(c.net.iter().any(|e| matches!(
        e.message,
        Message::Heartbeat(Heartbeat { read_round: 1, .. })
    )));
    c.deliver_all();
    assert!(c.node(1).outputs.contains(&Act::QueryReply {
        request: RequestId(1),
        reply: 0
    }));
}

#[test]
fn consistent_query_single_voter_answers_at_once() {
    let mut raft = single_leader();
    raft.consistent_query(1, RequestId(4), Query::Total)
        .unwrap();
    assert_eq!(
        acts(&mut raft),
        vec![Act::QueryReply {
            request: RequestId(4),
            reply: 0
        }]
    );
    let mut follower = fresh::<TestMachine>(2, &[1, 2]);
    assert_eq!(
        follower.consistent_query(0, RequestId(1), Query::Total),
        Err(ProposeError::NotLeader { leader: None })
    );
}

#[test]
fn consistent_query_abandoned_when_leadership_is_lost() {
    let mut c = three_with_leader();
    let now = c.now;
    c.raft(1)
        .consistent_query(now, RequestId(3), Query::Total)
        .unwrap();
    c.execute(s(1));
    c.net.clear();
    let (result, out) = c.step(env(
        2,
        1,
        2,
        Message::Heartbeat(Heartbeat {
            commit: 1,
            read_round: 0,
            quiesce: false,
        }),
    ));
    result.unwrap();
    assert_eq!(
        out[0],
        Act::SaveHardState(HardState {
            term: 2,
            voted_for: None
        })
    );
    assert!(
        out.iter().any(|a| matches!(
            a,
            Act::QueryAbandoned {
                request: RequestId(3),
                ..
            }
        )),
        "{out:?}"
    );
    assert!(out.contains(&Act::RoleChanged {
        role: Role::Follower,
        term: 2,
        leader: Some(s(2))
    }));
    assert!(!out.iter().any(|a| matches!(a, Act::QueryReply { .. })));
}

#[test]

fn abandoned_requests_name_the_new_leader_when_it_is_known() {
    let mut c = three_with_leader();
    let now = c.now;
    c.raft(1)
        .consistent_query(now, RequestId(3), Query::Total)
        .unwrap();
    c.raft(1)
        .propose(
            now,
            Cmd::Add(1),
            Priority::Normal,
            ReplyTo::Request(RequestId(4)),
        )
        .unwrap();
    c.execute(s(1));
    c.net.clear();
    let (_, out) = c.step(env(
        2,
        1,
        2,
        Message::Heartbeat(Heartbeat {
            commit: 1,
            read_round: 0,
            quiesce: false,
        }),
    ));
    assert!(out.contains(&Act::QueryAbandoned {
        request: RequestId(3),
        leader: Some(s(2))
    }));
    assert!(out.contains(&Act::Abandoned {
        reply_to: ReplyTo::Request(RequestId(4)),
        why: Abandoned::LostLeadership { leader: Some(s(2)) }
    }));
}

// ----- snapshots ---------------------------------------------------------------------

#[test]
fn release_cursor_triggers_save_snapshot() {
    let mut config = config(1);
    config.snapshot_interval_entries_min = 2;
    let mut raft = fresh_with::<TestMachine>(config, &[1]);
    raft.trigger_election(0);
    acts(&mut raft);
    raft.log_durable(0, 1, 1);
    raft.propose(1, Cmd::Add(3), Priority::Normal, ReplyTo::Nobody)
        .unwrap();
    raft.propose(
        1,
        Cmd::Release,
        Priority::Normal,
        ReplyTo::Request(RequestId(5)),
    )
    .unwrap();
    acts(&mut raft);
    raft.log_durable(2, 3, 1);
    let state = Counter::<0> {
        total: 3,
        history: vec![3],
        ..Default::default()
    };
    let data = Bytes::from(postcard::to_allocvec(&state).unwrap());
    assert_eq!(
        acts(&mut raft),
        vec![
            Act::Reply {
                request: RequestId(5),
                index: 3,
                reply: 3
            },
            Act::SaveSnapshot {
                meta: SnapshotMeta {
                    index: 3,
                    term: 1,
                    config: voters(&[1]),
                    machine_version: 0,
                    size_bytes: data.len() as u64,
                },
                data,
                keep_log_after: true,
            },
        ]
    );
    let status = raft.status();
    assert_eq!(
        (
            status.snapshot_index,
            status.last_index,
            status.commit_index
        ),
        (3, 3, 3)
    );
    assert_eq!(raft.log_entries().count(), 0);
    // A release too close to the last snapshot is ignored.
    raft.propose(3, Cmd::Release, Priority::Normal, ReplyTo::Nobody)
        .unwrap();
    acts(&mut raft);
    raft.log_durable(3, 4, 1);
    assert!(acts(&mut raft).is_empty());
    assert_eq!(raft.status().snapshot_index, 3);
}

#[test]
fn lagging_follower_receives_chunked_snapshot() {
    let mut c = Cluster::<TestMachine>::new(3, |c| {
        c.snapshot_chunk_bytes = 4;
        c.snapshot_interval_entries_min = 1;
    });
    c.isolate(3);
    c.elect(1);
    for n in 1..=10 {
        c.propose(1, Cmd::Add(n), ReplyTo::Nobody).unwrap();
    }
    c.propose(1, Cmd::Release, ReplyTo::Nobody).unwrap();
    c.propose(1, Cmd::Add(100), ReplyTo::Nobody).unwrap();
    c.run(200, 50);
    let snapshot_index = c.raft(1).status().snapshot_index;
    assert_eq!(snapshot_index, 12);
    assert_eq!(c.raft(3).status().last_index, 0);
    c.heal(3);
    c.run(2_000, 50);
    let chunks: Vec<SnapshotChunk> = c
        .trace
        .iter()
        .filter_map(|(id, a)| match a {
            Act::Send(e) if *id == s(1) && e.to == s(3) => match &e.message {
                Message::InstallSnapshot(chunk) => Some(chunk.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let size = chunks[0].meta.size_bytes;
    assert!(size > 8, "snapshot spans several chunks ({size} bytes)");
    assert!(chunks.len() as u64 >= size.div_ceil(4));
    assert!(chunks.iter().all(|ch| ch.data.len() <= 4));
    assert!(chunks.last().unwrap().done);
    assert_eq!(c.node(3).raft.machine(), c.node(1).raft.machine());
    assert_eq!(c.node(3).raft.machine().total, 155);
    assert_eq!(c.node(3).raft.status().snapshot_index, snapshot_index);
    assert_eq!(
        c.node(3).raft.status().applied_index,
        c.node(1).raft.status().applied_index
    );
    assert!(c.node(3).disk.snapshot.is_some());
}

#[test]
fn malformed_snapshot_gives_step_error_without_panic() {
    let mut follower = fresh::<TestMachine>(2, &[1, 2, 3]);
    let meta = |size_bytes| SnapshotMeta {
        index: 5,
        term: 1,
        config: voters(&[1, 2, 3]),
        machine_version: 0,
        size_bytes,
    };
    let chunk = |size, offset, data: &[u8], done| {
        env(
            1,
            2,
            1,
            Message::InstallSnapshot(SnapshotChunk {
                meta: meta(size),
                offset,
                data: Bytes::copy_from_slice(data),
                done,
            }),
        )
    };
    let retry = env(
        2,
        1,
        1,
        Message::InstallSnapshotResponse(SnapshotResponse::Retry {
            index: 5,
            next_offset: 0,
        }),
    );
    let before = follower.status();
    // A chunk past the announced size.
    let result = follower.step(1, chunk(4, 0, &[1, 2, 3, 4, 5, 6], true));
    assert!(
        matches!(result, Err(StepError::MalformedSnapshot { from, .. }) if from == s(1)),
        "{result:?}"
    );
    assert_eq!(acts(&mut follower).last(), Some(&Act::Send(retry.clone())));
    // A last chunk that ends short of the announced size.
    let result = follower.step(2, chunk(10, 0, &[1, 2, 3, 4], true));
    assert!(
        matches!(result, Err(StepError::MalformedSnapshot { .. })),
        "{result:?}"
    );
    assert_eq!(acts(&mut follower), vec![Act::Send(retry.clone())]);
    // The right size but bytes the machine cannot restore.
    let result = follower.step(3, chunk(3, 0, &[0xff, 0xff, 0xff], true));
    match result {
        Err(StepError::MalformedSnapshot { reason, .. }) => {
            assert!(reason.contains("cannot be restored"), "{reason}")
        }
        other => panic!("expected MalformedSnapshot, got {other:?}"),
    }
    assert_eq!(acts(&mut follower), vec![Act::Send(retry)]);
    let after = follower.status();
    assert_eq!(
        (
            after.commit_index,
            after.applied_index,
            after.snapshot_index,
            after.last_index
        ),
        (
            before.commit_index,
            before.applied_index,
            before.snapshot_index,
            before.last_index
        )
    );
    // A good snapshot in two chunks installs.
    let state = Counter::<0> {
        total: 9,
        history: vec![4, 5],
        ..Default::default()
    };
    let data = postcard::to_allocvec(&state).unwrap();
    let size = data.len() as u64;
    follower.step(4, chunk(size, 0, &data[..2], false)).unwrap();
    assert_eq!(
        acts(&mut follower),
        vec![Act::Send(env(
            2,
            1,
            1,
            Message::InstallSnapshotResponse(SnapshotResponse::Chunk {
                index: 5,
                next_offset: 2
            })
        ))]
    );
    follower.step(5, chunk(size, 2, &data[2..], true)).unwrap();
    assert_eq!(
        acts(&mut follower),
        vec![
            Act::SaveSnapshot {
                meta: meta(size),
                data: Bytes::from(data),
                keep_log_after: false
            },
            Act::Send(env(
                2,
                1,
                1,
                Message::InstallSnapshotResponse(SnapshotResponse::Installed { index: 5 })
            )),
        ]
    );
    assert_eq!(follower.machine(), &state);
    assert_eq!(follower.status().commit_index, 5);
}

// ----- end of life -------------------------------------------------------------------

#[test]
fn end_of_life_followers_first_leader_last() {
    let mut c = three_with_leader();
    c.isolate(3);
    let now = c.now;
    let index = c.raft(1).propose_end_of_life(now).unwrap();
    c.execute(s(1));
    c.run(300, 50);
    assert!(c.raft(1).status().commit_index >= index);
    assert!(
        c.node(2).outputs.contains(&Act::EndOfLife),
        "a follower stops on apply"
    );
    assert!(c.raft(2).status().terminated);
    assert!(
        !c.node(1).outputs.contains(&Act::EndOfLife),
        "the leader waits for every member"
    );
    assert!(!c.raft(1).status().terminated);
    let now = c.now;
    assert_eq!(
        c.raft(1)
            .propose(now, Cmd::Add(1), Priority::Normal, ReplyTo::Nobody),
        Err(ProposeError::Terminated)
    );
    c.heal(3);
    c.run(300, 50);
    assert!(c.node(3).outputs.contains(&Act::EndOfLife));
    assert!(c.node(1).outputs.contains(&Act::EndOfLife));
    let leader_eol = c
        .trace
        .iter()
        .position(|(id, a)| *id == s(1) && *a == Act::EndOfLife)
        .unwrap();
    let s3_eol = c
        .trace
        .iter()
        .position(|(id, a)| *id == s(3) && *a == Act::EndOfLife)
        .unwrap();
    assert!(s3_eol < leader_eol, "the leader goes last");
    let now = c.now;
    assert_eq!(
        c.raft(1).step(now, env(2, 1, 1, accepted(1))),
        Err(StepError::Terminated)
    );
    assert_eq!(c.raft(1).next_deadline_ms(), None);
}

// ----- machine versions ---------------------------------------------------------------

#[test]
fn newer_leader_appends_machine_version_and_upgrades() {
    let mut raft = fresh::<Counter<1>>(1, &[1]);
    raft.trigger_election(0);
    assert_eq!(
        acts(&mut raft),
        vec![
            Act::RoleChanged {
                role: Role::PreCandidate,
                term: 0,
                leader: None
            },
            Act::SaveHardState(HardState {
                term: 1,
                voted_for: Some(s(1))
            }),
            Act::RoleChanged {
                role: Role::Candidate,
                term: 1,
                leader: None
            },
            Act::RoleChanged {
                role: Role::Leader,
                term: 1,
                leader: Some(s(1))
            },
            Act::AppendLog(vec![noop(1, 1, 0), entry(2, 1, Payload::MachineVersion(1))]),
        ]
    );
    assert_eq!(raft.status().machine_version, 0);
    raft.log_durable(1, 2, 1);
    acts(&mut raft);
    assert_eq!(raft.status().machine_version, 1);
    assert_eq!(raft.machine().upgrades, vec![(2, 0)]);
    // A re-elected leader of the same version appends no second one.
    let mut raft = fresh::<Counter<0>>(1, &[1]);
    raft.trigger_election(0);
    let out = acts(&mut raft);
    assert_eq!(out.last(), Some(&Act::AppendLog(vec![noop(1, 1, 0)])));
}

#[test]
fn older_code_halts_at_newer_machine_version_entry() {
    let mut follower = fresh::<Counter<0>>(2, &[1, 2, 3]);
    let entries = vec![
        noop(1, 1, 0),
        entry(2, 1, Payload::MachineVersion(1)),
        cmd_entry(3, 1, 0, Cmd::Add(4)),
    ];
    follower
        .step(0, env(1, 2, 1, append(0, 0, entries.clone(), 3)))
        .unwrap();
    let out = acts(&mut follower);
    assert_eq!(out.len(), 4, "{out:?}");
    assert_eq!(out[2], Act::AppendLog(entries));
    assert!(
        matches!(&out[3], Act::ApplyHalted { index: 2, .. }),
        "{out:?}"
    );
    let status = follower.status();
    assert_eq!((status.commit_index, status.applied_index), (3, 1));
    assert_eq!(follower.machine().total, 0);
    // It stays halted, and says so only once.
    follower
        .step(
            1,
            env(
                1,
                2,
                1,
                Message::Heartbeat(Heartbeat {
                    commit: 3,
                    read_round: 0,
                    quiesce: false,
                }),
            ),
        )
        .unwrap();
    assert!(!acts(&mut follower)
        .iter()
        .any(|a| matches!(a, Act::ApplyHalted { .. })));
    assert_eq!(follower.status().applied_index, 1);
}

#[test]
fn voter_refuses_candidate_with_older_machine_version() {
    let mut voter = fresh::<Counter<1>>(2, &[1, 2, 3]);
    voter
        .step(0, env(1, 2, 1, Message::PreVote(vote_request(0, 0))))
        .unwrap();
    assert_eq!(
        acts(&mut voter),
        vec![Act::Send(env(
            2,
            1,
            0,
            Message::PreVoteResponse(granted(false))
        ))]
    );
    voter
        .step(0, env(1, 2, 1, Message::Vote(vote_request(0, 0))))
        .unwrap();
    assert_eq!(
        acts(&mut voter),
        vec![
            Act::SaveHardState(HardState {
                term: 1,
                voted_for: None
            }),
            Act::RoleChanged {
                role: Role::Follower,
                term: 1,
                leader: None
            },
            Act::Send(env(2, 1, 1, Message::VoteResponse(granted(false)))),
        ]
    );
    let mut upgraded = vote_request(0, 0);
    upgraded.machine_version = 1;
    voter
        .step(0, env(3, 2, 1, Message::Vote(upgraded)))
        .unwrap();
    assert_eq!(
        acts(&mut voter),
        vec![
            Act::SaveHardState(HardState {
                term: 1,
                voted_for: Some(s(3))
            }),
            Act::Send(env(2, 3, 1, Message::VoteResponse(granted(true)))),
        ]
    );
}

// ----- bad input ---------------------------------------------------------------------

#[test]
fn foreign_cluster_and_misaddressed_messages_are_refused() {
    let mut raft = fresh::<TestMachine>(2, &[1, 2, 3]);
    let before = raft.status();
    let mut foreign = env(1, 2, 9, Message::TimeoutNow);
    foreign.cluster = chorus_raft::ClusterId(99);
    assert_eq!(
        raft.step(0, foreign),
        Err(StepError::ForeignCluster {
            expected: CLUSTER,
            got: chorus_raft::ClusterId(99)
        })
    );
    assert_eq!(
        raft.step(0, env(1, 9, 9, Message::TimeoutNow)),
        Err(StepError::Misaddressed { to: s(9), me: s(2) })
    );
    // A message from ourselves is ignored.
    assert_eq!(raft.step(0, env(2, 2, 9, Message::TimeoutNow)), Ok(()));
    assert!(acts(&mut raft).is_empty());
    assert_eq!(raft.status(), before);
}

#[test]
fn malformed_appends_are_refused() {
    let mut raft = fresh::<TestMachine>(2, &[1, 2, 3]);
    let gap = append(0, 0, vec![noop(1, 1, 0), noop(3, 1, 0)], 0);
    assert!(matches!(
        raft.step(0, env(1, 2, 1, gap)),
        Err(StepError::MalformedAppend { from, .. }) if from == s(1)
    ));
    let wrong_start = append(0, 0, vec![noop(2, 1, 0)], 0);
    assert!(matches!(
        raft.step(0, env(1, 2, 1, wrong_start)),
        Err(StepError::MalformedAppend { .. })
    ));
    let term_backwards = append(0, 0, vec![noop(1, 1, 0), noop(2, 0, 0)], 0);
    assert!(matches!(
        raft.step(0, env(1, 2, 1, term_backwards)),
        Err(StepError::MalformedAppend { .. })
    ));
    let term_ahead_of_leader = append(0, 0, vec![noop(1, 2, 0)], 0);
    assert!(matches!(
        raft.step(0, env(1, 2, 1, term_ahead_of_leader)),
        Err(StepError::MalformedAppend { .. })
    ));
    let out = acts(&mut raft);
    assert!(
        !out.iter().any(|a| matches!(a, Act::AppendLog(_))),
        "{out:?}"
    );
    assert_eq!(raft.status().last_index, 0);
    // Overwriting a committed entry is refused too.
    raft.step(1, env(1, 2, 1, append(0, 0, vec![noop(1, 1, 0)], 1)))
        .unwrap();
    raft.log_durable(1, 1, 1);
    assert_eq!(raft.status().commit_index, 1);
    acts(&mut raft);
    let rewrite = append(0, 0, vec![noop(1, 2, 0)], 1);
    assert!(matches!(
        raft.step(2, env(3, 2, 2, rewrite)),
        Err(StepError::MalformedAppend { .. })
    ));
    assert_eq!(raft.log_entries().next(), Some(&noop(1, 1, 0)));
}

#[test]
fn stale_term_messages_follow_the_rules() {
    let mut raft = recovered::<TestMachine>(2, &[1, 2, 3], 3, vec![noop(1, 1, 0)]);
    let stale = |message| env(1, 2, 2, message);
    let nudge = Act::Send(env(
        2,
        1,
        3,
        Message::HeartbeatResponse(HeartbeatResponse {
            read_round: 0,
            last_index: 1,
            quiesced: false,
        }),
    ));
    // A deposed leader's append or heartbeat is answered with our term.
    raft.step(0, stale(append(1, 1, vec![noop(2, 2, 0)], 0)))
        .unwrap();
    assert_eq!(acts(&mut raft), vec![nudge.clone()]);
    raft.step(
        0,
        stale(Message::Heartbeat(Heartbeat {
            commit: 1,
            read_round: 4,
            quiesce: false,
        })),
    )
    .unwrap();
    assert_eq!(acts(&mut raft), vec![nudge]);
    raft.step(0, stale(Message::PreVote(vote_request(1, 1))))
        .unwrap();
    assert_eq!(
        acts(&mut raft),
        vec![Act::Send(env(
            2,
            1,
            3,
            Message::PreVoteResponse(granted(false))
        ))]
    );
    for message in [
        Message::Vote(vote_request(5, 2)),
        Message::VoteResponse(granted(true)),
        Message::PreVoteResponse(granted(true)),
        accepted(1),
        Message::TimeoutNow,
    ] {
        raft.step(0, stale(message.clone())).unwrap();
        assert!(acts(&mut raft).is_empty(), "{message:?}");
    }
    assert_eq!(raft.term(), 3);
    assert_eq!(raft.role(), Role::Follower);
    assert_eq!(raft.status().last_index, 1);
}

#[test]
fn deposed_leader_steps_down_on_newer_term_answer() {
    let mut c = three_with_leader();
    let (result, out) = c.step(env(
        2,
        1,
        3,
        Message::HeartbeatResponse(HeartbeatResponse {
            read_round: 0,
            last_index: 1,
            quiesced: false,
        }),
    ));
    result.unwrap();
    assert_eq!(
        out,
        vec![
            Act::SaveHardState(HardState {
                term: 3,
                voted_for: None
            }),
            Act::RoleChanged {
                role: Role::Follower,
                term: 3,
                leader: None
            },
        ]
    );
}

#[test]
fn raft_new_rejects_inconsistent_persisted_state() {
    let build = |persisted: Persisted| {
        Raft::<TestMachine>::new(config(1), persisted, TestMachine::default(), 1, 0)
    };
    let with = |term, entries| Persisted {
        hard_state: HardState {
            term,
            voted_for: None,
        },
        entries,
        initial_config: voters(&[1, 2, 3]),
        snapshot: None,
    };
    assert_eq!(
        build(with(2, vec![noop(1, 1, 0), noop(3, 1, 0)])).err(),
        Some(RecoveryError::Gap { index: 2 })
    );
    assert_eq!(
        build(with(2, vec![noop(2, 1, 0)])).err(),
        Some(RecoveryError::Gap { index: 1 })
    );
    assert_eq!(
        build(with(2, vec![noop(1, 2, 0), noop(2, 1, 0)])).err(),
        Some(RecoveryError::TermRegression { index: 2, term: 1 })
    );
    assert_eq!(
        build(with(1, vec![noop(1, 1, 0), noop(2, 2, 0)])).err(),
        Some(RecoveryError::TermBehindLog {
            hard_term: 1,
            log_term: 2
        })
    );
    // Against a snapshot.
    let state = postcard::to_allocvec(&TestMachine::default()).unwrap();
    let meta = SnapshotMeta {
        index: 5,
        term: 2,
        config: voters(&[1, 2, 3]),
        machine_version: 0,
        size_bytes: state.len() as u64,
    };
    let mut persisted = with(2, vec![noop(7, 2, 0)]);
    persisted.snapshot = Some((meta.clone(), Bytes::from(state.clone())));
    assert_eq!(
        build(persisted).err(),
        Some(RecoveryError::Gap { index: 6 })
    );
    let mut persisted = with(2, vec![noop(6, 1, 0)]);
    persisted.snapshot = Some((meta.clone(), Bytes::from(state.clone())));
    assert_eq!(
        build(persisted).err(),
        Some(RecoveryError::TermRegression { index: 6, term: 1 })
    );
    let mut persisted = with(1, vec![]);
    persisted.snapshot = Some((meta.clone(), Bytes::from(state.clone())));
    assert!(matches!(
        build(persisted).err(),
        Some(RecoveryError::TermBehindLog { .. })
    ));
    let mut persisted = with(2, vec![]);
    persisted.snapshot = Some((meta.clone(), Bytes::from_static(&[0xff, 0xff])));
    assert!(matches!(
        build(persisted).err(),
        Some(RecoveryError::Machine(_))
    ));
    // Bad tunables.
    let mut bad = config(1);
    bad.heartbeat_interval_ms = bad.election_timeout_ms;
    assert!(matches!(
        Raft::<TestMachine>::new(bad, with(0, vec![]), TestMachine::default(), 1, 0).err(),
        Some(RecoveryError::Config(_))
    ));
    // A consistent recovery.
    let mut persisted = with(2, vec![noop(6, 2, 0), cmd_entry(7, 2, 0, Cmd::Add(1))]);
    persisted.snapshot = Some((meta, Bytes::from(state)));
    let raft = build(persisted).unwrap();
    let status = raft.status();
    assert_eq!(
        (
            status.snapshot_index,
            status.commit_index,
            status.last_index,
            status.durable_index,
            status.term
        ),
        (5, 5, 7, 7, 2)
    );
}

#[test]
fn recovered_server_keeps_its_vote() {
    let persisted = Persisted {
        hard_state: HardState {
            term: 4,
            voted_for: Some(s(3)),
        },
        initial_config: voters(&[1, 2, 3]),
        ..Persisted::default()
    };
    let mut raft =
        Raft::<TestMachine>::new(config(2), persisted, TestMachine::default(), 2, 0).unwrap();
    raft.step(0, env(1, 2, 4, Message::Vote(vote_request(9, 9))))
        .unwrap();
    assert_eq!(
        acts(&mut raft),
        vec![Act::Send(env(
            2,
            1,
            4,
            Message::VoteResponse(granted(false))
        ))]
    );
    raft.step(0, env(3, 2, 4, Message::Vote(vote_request(0, 0))))
        .unwrap();
    assert_eq!(
        acts(&mut raft),
        vec![
            Act::SaveHardState(HardState {
                term: 4,
                voted_for: Some(s(3))
            }),
            Act::Send(env(2, 3, 4, Message::VoteResponse(granted(true)))),
        ]
    );
}

// ----- quiescence ----------------------------------------------------------------------

/// Three voters with quiescence on, led by s1 in term 1, noop committed.
fn three_quiescing() -> Cluster<TestMachine> {
    let mut c = Cluster::<TestMachine>::new(3, |config| config.quiesce = true);
    c.elect(1);
    c
}

fn all_quiesced(c: &mut Cluster<TestMachine>) -> bool {
    c.ids().into_iter().all(|id| {
        let raft = c.raft(id.0);
        raft.status().quiesced && raft.next_deadline_ms().is_none()
    })
}

/// The messages sent in the trace from index `from` on.
fn sent_since(c: &Cluster<TestMachine>, from: usize) -> Vec<Envelope> {
    c.trace[from..]
        .iter()
        .filter_map(|(_, act)| match act {
            Act::Send(envelope) => Some(envelope.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn quiesce_three_servers_after_a_write_then_nothing_is_sent() {
    let mut c = three_quiescing();
    let mark = c.trace.len();
    c.propose(1, Cmd::Add(5), ReplyTo::Request(RequestId(1)))
        .unwrap();
    c.deliver_all();
    assert!(c.node(1).outputs.contains(&Act::Reply {
        request: RequestId(1),
        index: 2,
        reply: 5
    }));
    // Once both followers hold (durably) and have committed the whole log,
    // the leader announces one quiescing round: a fresh ReadIndex round
    // whose heartbeats carry the flag and commit = the last index. (Round 1
    // quiesced the cluster after the election, the proposal woke it with
    // round 2, this is round 3.)
    let quiescing: Vec<Envelope> = sent_since(&c, mark)
        .into_iter()
        .filter(|e| {
            matches!(
                e.message,
                Message::Heartbeat(Heartbeat { quiesce: true, .. })
            )
        })
        .collect();
    let round = |to| {
        env(
            1,
            to,
            1,
            Message::Heartbeat(Heartbeat {
                commit: 2,
                read_round: 3,
                quiesce: true,
            }),
        )
    };
    assert_eq!(quiescing, vec![round(2), round(3)]);
    assert!(all_quiesced(&mut c));
    for id in 1..=3 {
        let status = c.raft(id).status();
        assert_eq!((status.commit_index, status.applied_index), (2, 2), "s{id}");
    }
    // Idle: hours of ticks send nothing, and nobody campaigns.
    let mark = c.trace.len();
    for _ in 0..100 {
        c.run(60_000, 60_000);
    }
    assert!(
        sent_since(&c, mark).is_empty(),
        "an idle cluster sent messages"
    );
    assert_eq!(c.leader(), Some(s(1)));
    assert_eq!(c.raft(2).term(), 1);
}

#[test]
fn quiesced_leader_wakes_on_propose_and_quiesces_again() {
    let mut c = three_quiescing();
    c.run(100, 100);
    assert!(all_quiesced(&mut c));
    c.now += 3_600_000;
    let now = c.now;
    c.raft(1)
        .propose(
            now,
            Cmd::Add(2),
            Priority::Normal,
            ReplyTo::Request(RequestId(2)),
        )
        .unwrap();
    assert!(!c.raft(1).status().quiesced);
    assert_eq!(
        c.raft(1).next_deadline_ms(),
        Some(now),
        "heartbeat due at once"
    );
    let acts = c.execute(s(1));
    assert_eq!(sends(&acts).len(), 2, "appends to both followers: {acts:?}");
    // A follower that receives new entries runs its election timer again.
    c.deliver_one().unwrap().1.unwrap();
    assert!(!c.raft(2).status().quiesced);
    assert!(c.raft(2).next_deadline_ms().is_some());
    c.deliver_all();
    assert!(c.node(1).outputs.contains(&Act::Reply {
        request: RequestId(2),
        index: 2,
        reply: 2
    }));
    assert!(all_quiesced(&mut c));
    // Reads and transfers wake it too.
    let now = c.now;
    c.raft(1)
        .consistent_query(now, RequestId(3), Query::Total)
        .unwrap();
    assert!(c.raft(1).next_deadline_ms().is_some());
    c.execute(s(1));
    c.deliver_all();
    assert!(c.node(1).outputs.contains(&Act::QueryReply {
        request: RequestId(3),
        reply: 2
    }));
    assert!(all_quiesced(&mut c));
    c.raft(1).transfer_leadership(now, s(3)).unwrap();
    c.execute(s(1));
    c.deliver_all();
    assert_eq!(c.leader(), Some(s(3)));
    c.run(100, 100);
    assert!(all_quiesced(&mut c));
}

#[test]
fn follower_obeys_only_the_newest_quiescing_round() {
    let mut f = fresh::<TestMachine>(2, &[1, 2, 3]);
    let heartbeat = |commit, read_round, quiesce| {
        env(
            1,
            2,
            1,
            Message::Heartbeat(Heartbeat {
                commit,
                read_round,
                quiesce,
            }),
        )
    };
    f.step(0, env(1, 2, 1, append(0, 0, vec![noop(1, 1, 0)], 0)))
        .unwrap();
    f.log_durable(0, 1, 1);
    f.step(1, heartbeat(1, 1, true)).unwrap();
    assert!(f.status().quiesced);
    assert_eq!(f.next_deadline_ms(), None);
    assert_eq!(
        sends(&acts(&mut f)).last().map(|e| e.message.clone()),
        Some(Message::HeartbeatResponse(HeartbeatResponse {
            read_round: 1,
            last_index: 1,
            quiesced: true,
        }))
    );
    // New entries: the leader is active, the timer runs again, and a
    // reordered heartbeat of the old quiescing round changes nothing (the
    // simulator found a removed leader's followers stuck this way).
    let entry = cmd_entry(2, 1, 5, Cmd::Add(1));
    f.step(5, env(1, 2, 1, append(1, 1, vec![entry], 1)))
        .unwrap();
    assert!(!f.status().quiesced);
    f.step(6, heartbeat(1, 1, true)).unwrap();
    assert!(!f.status().quiesced);
    assert!(f.next_deadline_ms().is_some());
    // The leader's next quiescing round (after its wake round) counts.
    f.log_durable(7, 2, 1);
    f.step(8, heartbeat(2, 3, true)).unwrap();
    assert!(f.status().quiesced);
    // Reported down: the timer runs, and no heartbeat from it quiesces this
    // follower again until it is reported up.
    f.peer_down(9, s(1));
    assert!(!f.status().quiesced);
    let deadline = f.next_deadline_ms().unwrap();
    assert!((9..9 + 250).contains(&deadline));
    f.step(10, heartbeat(2, 4, true)).unwrap();
    assert!(!f.status().quiesced);
    f.peer_up(11, s(1));
    f.step(12, heartbeat(2, 5, true)).unwrap();
    assert!(f.status().quiesced);
}

#[test]
fn followers_campaign_soon_after_peer_down_of_their_quiesced_leader() {
    let mut c = three_quiescing();
    c.run(100, 100);
    assert!(all_quiesced(&mut c));
    c.now += 3_600_000;
    // s1's process dies; the node-level failure detector tells the others.
    c.isolate(1);
    let down_at = c.now;
    for id in [2, 3] {
        c.raft(id).peer_down(down_at, s(1));
        let deadline = c.raft(id).next_deadline_ms().expect("a timer again");
        assert!(
            (down_at..down_at + 1_000 / 4).contains(&deadline),
            "s{id} campaigns within a quarter election timeout, not at {deadline}"
        );
        assert!(!c.raft(id).status().quiesced);
    }
    let mut elected_at = None;
    while elected_at.is_none() && c.now < down_at + 5_000 {
        c.tick(10);
        c.deliver_all();
        if c.ids()
            .iter()
            .any(|id| id.0 != 1 && c.node(id.0).raft.role() == Role::Leader)
        {
            elected_at = Some(c.now);
        }
    }
    let elected_at = elected_at.expect("a new leader");
    assert!(
        elected_at - down_at < 1_000,
        "failover took {} ms",
        elected_at - down_at
    );
    let leader = c.leader().unwrap();
    assert_ne!(leader, s(1));
    assert_eq!(c.raft(leader.0).term(), 2, "one election, no split vote");
    // The new leader, knowing s1 is down, quiesces without it.
    c.run(300, 10);
    for id in [2, 3] {
        assert!(c.raft(id).status().quiesced, "s{id}");
        assert_eq!(c.raft(id).next_deadline_ms(), None, "s{id}");
    }
}

#[test]
fn leader_steps_down_when_peer_down_leaves_no_live_quorum() {
    let mut c = three_quiescing();
    c.run(100, 100);
    assert!(all_quiesced(&mut c));
    let now = c.now;
    c.raft(1).peer_down(now, s(2));
    assert_eq!(c.raft(1).role(), Role::Leader, "s1 and s3 are a quorum");
    assert!(c.raft(1).status().quiesced);
    c.raft(1).peer_down(now, s(3));
    assert_eq!(c.raft(1).role(), Role::Follower);
    assert_eq!(c.raft(1).term(), 1);
    assert!(!c.raft(1).status().quiesced);
    assert!(c.raft(1).next_deadline_ms().is_some());
    // An active leader too (check-quorum by liveness).
    let mut c = Cluster::<TestMachine>::new(3, |_| {});
    c.elect(1);
    let now = c.now;
    c.raft(1).peer_down(now, s(2));
    c.raft(1).peer_down(now, s(3));
    assert_eq!(c.raft(1).role(), Role::Follower);
}

#[test]
fn peer_up_brings_a_lagging_follower_up_to_date() {
    let mut c = three_quiescing();
    c.run(100, 100);
    assert!(all_quiesced(&mut c));
    c.isolate(3);
    let now = c.now;
    c.raft(1).peer_down(now, s(3));
    for n in 1..=3 {
        c.propose(1, Cmd::Add(n), ReplyTo::Nobody).unwrap();
    }
    c.run(200, 10);
    // s1 and s2 quiesce without waiting for s3, and s1 sends it nothing.
    assert!(c.raft(1).status().quiesced && c.raft(2).status().quiesced);
    assert_eq!(c.raft(1).next_deadline_ms(), None);
    assert_eq!(c.raft(1).status().commit_index, 4);
    assert_eq!(c.raft(3).status().last_index, 1);
    let mark = c.trace.len();
    c.run(10_000, 100);
    assert!(sent_since(&c, mark).is_empty());
    // s3's node is back.
    c.heal(3);
    let now = c.now;
    c.raft(1).peer_up(now, s(3));
    assert!(!c.raft(1).status().quiesced);
    c.execute(s(1));
    c.run(200, 10);
    let status = c.raft(3).status();
    assert_eq!(
        (status.last_index, status.commit_index, status.applied_index),
        (4, 4, 4)
    );
    assert_eq!(c.raft(3).machine().total, 6);
    assert!(all_quiesced(&mut c));
    assert_eq!(c.leader(), Some(s(1)));
}

#[test]
fn restarted_follower_runs_its_timer_and_is_brought_back_without_an_election() {
    let mut c = three_quiescing();
    c.run(100, 100);
    assert!(all_quiesced(&mut c));
    c.restart(s(2));
    assert!(!c.raft(2).status().quiesced);
    assert!(
        c.raft(2).next_deadline_ms().is_some(),
        "no leader known: normal timer"
    );
    // Its timer fires; the quiesced leader answers the pre-vote with a
    // heartbeat, and s2 follows it (s3, quiesced, would have granted).
    c.run(3_000, 10);
    assert_eq!(c.leader(), Some(s(1)));
    assert_eq!(c.raft(2).term(), 1);
    assert_eq!(c.raft(2).leader(), Some(s(1)));
    assert!(all_quiesced(&mut c));
}

#[test]
fn false_suspicion_of_a_live_quiesced_leader_costs_no_election() {
    let mut c = three_quiescing();
    c.run(100, 100);
    c.now += 3_600_000;
    // s2's detector wrongly suspects s1: s2 campaigns at once. s3, quiesced
    // and out of its lease long ago, grants the pre-vote by the usual rules;
    // s1 answers the pre-vote with a heartbeat, which s2 hears first and
    // follows.
    let now = c.now;
    c.raft(2).peer_down(now, s(1));
    let mark = c.trace.len();
    c.run(500, 10);
    assert!(sent_since(&c, mark).contains(&env(3, 2, 2, Message::PreVoteResponse(granted(true)))));
    assert_eq!(c.leader(), Some(s(1)));
    for id in 1..=3 {
        assert_eq!(c.raft(id).term(), 1, "s{id}");
    }
    // While its detector reports s1 down, s2 keeps its timer and s1 keeps
    // heartbeating; the correction lets the cluster quiesce again.
    assert!(!c.raft(2).status().quiesced && !c.raft(1).status().quiesced);
    let now = c.now;
    c.raft(2).peer_up(now, s(1));
    c.run(300, 10);
    assert!(all_quiesced(&mut c));
}

// ----- determinism -------------------------------------------------------------------

fn scripted_run() -> Vec<(chorus_raft::ServerId, Act)> {
    let mut c = Cluster::<TestMachine>::new(3, |_| {});
    // No trigger: the randomized timeouts decide who campaigns first.
    while c.leader().is_none() {
        c.tick(10);
        c.deliver_all();
    }
    let leader = c.leader().unwrap().0;
    for n in 0..5 {
        c.propose(leader, Cmd::Add(n), ReplyTo::Request(RequestId(n as u64)))
            .unwrap();
    }
    let now = c.now;
    c.raft(leader)
        .consistent_query(now, RequestId(99), Query::Total)
        .unwrap();
    c.execute(s(leader));
    c.run(300, 30);
    c.isolate(leader);
    c.run(3_000, 30);
    c.heal(leader);
    c.run(1_000, 30);
    c.trace
}

#[test]
fn same_inputs_and_seeds_give_identical_actions() {
    let a = scripted_run();
    let b = scripted_run();
    assert!(a.len() > 50);
    assert_eq!(a, b);
}
