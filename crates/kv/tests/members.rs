//! The member directory: what `MemberList` reads, replicated like keys.

mod common;

use chorus_kv::*;
use chorus_raft::Machine;
use common::Harness;

fn member(id: u64, name: &str) -> MemberInfo {
    MemberInfo {
        id,
        name: name.into(),
        peer_urls: vec![format!("http://10.0.0.{id}:2380")],
        client_urls: vec![format!("http://10.0.0.{id}:2379")],
    }
}

fn directory(h: &Harness) -> Vec<MemberInfo> {
    match h.machine.read(&Query::Members) {
        Ok(QueryResponse::Members(members)) => members,
        other => panic!("unexpected answer {other:?}"),
    }
}

#[test]
fn members_are_added_replaced_and_removed_without_touching_the_keyspace() {
    let mut h = Harness::default();
    let revision = h.machine.revision();
    h.apply(Command::MemberPut(member(2, "b"))).unwrap();
    h.apply(Command::MemberPut(member(1, "a"))).unwrap();
    assert_eq!(directory(&h), vec![member(1, "a"), member(2, "b")]);
    // A member added by `member add` has no name until it publishes itself.
    let renamed = h.apply(Command::MemberPut(member(2, "b2"))).unwrap();
    assert_eq!(
        renamed,
        Response::Members(vec![member(1, "a"), member(2, "b2")])
    );
    h.apply(Command::MemberRemove { id: 1 }).unwrap();
    assert_eq!(directory(&h), vec![member(2, "b2")]);
    // Removing an unknown member is not an error (a retried remove).
    h.apply(Command::MemberRemove { id: 9 }).unwrap();
    assert_eq!(
        h.machine.revision(),
        revision,
        "directory changes take no revision"
    );
}

#[test]
fn the_directory_survives_a_snapshot() {
    let mut h = Harness::default();
    h.put("k", "v");
    h.apply(Command::MemberPut(member(7, "g"))).unwrap();
    let restored = KvMachine::restore(&h.machine.snapshot()).unwrap();
    assert_eq!(restored, h.machine);
    assert_eq!(
        restored.read(&Query::Members),
        Ok(QueryResponse::Members(vec![member(7, "g")]))
    );
}
