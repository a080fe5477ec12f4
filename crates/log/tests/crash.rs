//! Crash at every write point, then recover and check that nothing
//! acknowledged was lost and nothing discarded came back; then keep using the
//! recovered log and recover again.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use chorus_log::{FaultConfig, FaultyStorage, LogConfig, LogError, LogSystem};
use chorus_raft::{Entry, HardState, ServerId};
use common::*;

#[derive(Default, Debug)]
struct ServerModel {
    created: bool,
    creating: bool,
    deleted: bool,
    deleting: bool,
    /// The log as the core sees it (after truncations).
    log: BTreeMap<u64, Entry>,
    /// Entries up to here were reported durable (and not truncated since).
    durable: u64,
    /// Acknowledged snapshot index.
    base: u64,
    /// Every (index, term) appended since the last discarding snapshot.
    appended: BTreeSet<(u64, u64)>,
    term: u64,
}

#[derive(Default, Debug)]
struct Model {
    servers: BTreeMap<u64, ServerModel>,
}

impl Model {
    fn server(&mut self, id: u64) -> &mut ServerModel {
        self.servers.entry(id).or_default()
    }

    fn durable(&mut self, notices: Vec<chorus_log::Durable>) {
        for notice in notices {
            let server = self.server(notice.server.0);
            assert_eq!(
                server.log.get(&notice.index).map(|e| e.term),
                Some(notice.term),
                "notice for an entry the log does not hold"
            );
            server.durable = server.durable.max(notice.index);
        }
    }

    fn appended(&mut self, id: u64, entries: &[Entry]) {
        let server = self.server(id);
        let first = entries[0].index;
        server.log.split_off(&first);
        server.durable = server.durable.min(first - 1);
        for entry in entries {
            server.log.insert(entry.index, entry.clone());
            server.appended.insert((entry.index, entry.term));
        }
    }
}

fn next_index(model: &Model, id: u64) -> u64 {
    let server = &model.servers[&id];
    server
        .log
        .keys()
        .next_back()
        .copied()
        .unwrap_or(server.base)
        + 1
}

/// The workload. Stops at the first error (the crash point).
fn workload(log: &mut LogSystem<FaultyStorage>, model: &mut Model) -> Result<(), LogError> {
    for id in 1..=3 {
        model.server(id).creating = true;
        create_checked(log, id)?;
        model.server(id).created = true;
    }
    for round in 0..12u64 {
        let term = round / 3 + 1;
        for (&id, server) in model.servers.iter_mut() {
            if !server.created || server.deleted {
                continue;
            }
            log.save_hard_state(
                ServerId(id),
                HardState {
                    term,
                    voted_for: Some(ServerId(id)),
                },
            )?;
            server.term = term;
        }
        let ids: Vec<u64> = model
            .servers
            .iter()
            .filter(|(_, s)| s.created && !s.deleted)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let mut first = next_index(model, id);
            if id == 1 && round == 5 {
                first -= 3; // overwrite a suffix, some of it in segments
            }
            let batch = entries(first, 4 + round % 3, term);
            log.append(ServerId(id), batch.clone())?;
            model.appended(id, &batch);
        }
        let notices = log.flush()?;
        model.durable(notices);
        if round == 6 {
            let index = model.servers[&2].durable - 2;
            let data = b"snapshot-2".to_vec();
            log.save_snapshot(
                ServerId(2),
                snapshot_meta(index, term, &data),
                Bytes::from(data),
                true,
            )?;
            let server = model.server(2);
            server.base = index;
            let rest = server.log.split_off(&(index + 1));
            server.log = rest;
        }
        if round == 8 {
            let index = next_index(model, 3) + 5;
            let data = b"leader-snapshot-3".to_vec();
            log.save_snapshot(
                ServerId(3),
                snapshot_meta(index, term + 1, &data),
                Bytes::from(data),
                false,
            )?;
            let server = model.server(3);
            server.base = index;
            server.log.clear();
            server.durable = index;
            server.appended.clear();
        }
        if round == 9 {
            model.server(1).deleting = true;
            log.delete_server(ServerId(1))?;
            model.server(1).deleted = true;
        }
        if round == 10 {
            model.server(4).creating = true;
            create_checked(log, 4)?;
            model.server(4).created = true;
        }
        if round == 11 {
            let notices = log.checkpoint()?;
            model.durable(notices);
        }
    }
    Ok(())
}

fn create_checked(log: &mut LogSystem<FaultyStorage>, id: u64) -> Result<(), LogError> {
    log.create_server(
        ServerId(id),
        chorus_raft::Configuration::voters([ServerId(id)]),
        Bytes::from_static(b"cfg"),
    )
}

fn verify(log: &mut LogSystem<FaultyStorage>, model: &Model, context: &str) {
    for (&id, server) in &model.servers {
        let exists = log.contains(ServerId(id));
        if server.created && !server.deleting {
            assert!(exists, "{context}: server {id} lost");
        }
        if server.deleted || (!server.creating) {
            assert!(!exists, "{context}: server {id} should not exist");
        }
        if !exists {
            continue;
        }
        let persisted = log.recover(ServerId(id)).unwrap();
        assert!(
            persisted.hard_state.term >= server.term,
            "{context}: server {id} term went back"
        );
        let base = persisted
            .snapshot
            .as_ref()
            .map_or(0, |(meta, _)| meta.index);
        assert!(base >= server.base, "{context}: server {id} snapshot lost");
        for (offset, entry) in persisted.entries.iter().enumerate() {
            assert_eq!(
                entry.index,
                base + 1 + offset as u64,
                "{context}: not contiguous"
            );
            if entry.index <= server.durable {
                assert_eq!(
                    Some(entry),
                    server.log.get(&entry.index),
                    "{context}: server {id} durable entry differs"
                );
            } else {
                assert!(
                    server.appended.contains(&(entry.index, entry.term)),
                    "{context}: server {id} entry {} term {} was never appended (or was discarded)",
                    entry.index,
                    entry.term
                );
            }
        }
        let last = base + persisted.entries.len() as u64;
        assert!(
            last >= server.durable,
            "{context}: server {id} lost durable entries: last {last} < durable {}",
            server.durable
        );
    }
}

fn crash_config() -> LogConfig {
    let mut config = config("/node");
    config.wal_data_dir = "/wal-disk/wal".into();
    config.wal_max_size_bytes = 1500;
    config.segment_max_entries = 5;
    config
}

fn run_with_crash_at(point: Option<u64>, seed: u64) -> (u64, bool) {
    let storage = FaultyStorage::new(
        seed,
        FaultConfig {
            crash_at_operation: point,
            ..FaultConfig::default()
        },
    );
    let config = crash_config();
    let mut model = Model::default();
    let result = LogSystem::open(config.clone(), storage.clone())
        .and_then(|(mut log, _)| workload(&mut log, &mut model));
    let operations = storage.stats().operations;
    let crashed = storage.is_dead();
    match (&result, point) {
        (Ok(()), _) => {}
        (Err(error), Some(_)) => assert!(crashed, "error without a crash: {error}"),
        (Err(error), None) => panic!("fault-free run failed: {error}"),
    }
    storage.crash();
    let context = format!("crash at {point:?}, seed {seed}");
    let (mut log, _report) = LogSystem::open(config.clone(), storage.clone()).unwrap_or_else(|e| {
        if std::env::var("DUMP").is_ok() {
            for f in storage.files() {
                let b = chorus_log::storage::read_file(&storage, &f).unwrap();
                eprintln!("{} {:?}", f.display(), &b[..b.len().min(150)]);
            }
        }
        panic!("{context}: recovery failed: {e}")
    });
    verify(&mut log, &model, &context);
    // Keep going on the recovered log, then recover again.
    let mut extra = BTreeMap::new();
    for id in log.servers() {
        let (last, _) = log.last_index_term(id).unwrap();
        let entry = entry(last + 1, 99);
        log.append(id, vec![entry.clone()]).unwrap();
        extra.insert(id, entry);
    }
    log.flush().unwrap();
    drop(log);
    storage.crash();
    let (mut log, _) = LogSystem::open(config, storage)
        .unwrap_or_else(|e| panic!("{context}: second recovery failed: {e}"));
    for (id, entry) in extra {
        let persisted = log.recover(id).unwrap();
        assert_eq!(
            persisted.entries.last(),
            Some(&entry),
            "{context}: second life lost"
        );
    }
    (operations, crashed)
}

#[test]
fn crash_at_every_write_point_then_recover() {
    let (total, crashed) = run_with_crash_at(None, 0);
    assert!(!crashed);
    assert!(total > 200, "workload too small: {total} operations");
    eprintln!("crashing at each of {total} write points");
    for point in 0..total {
        // Two seeds per point: different amounts of unsynced data survive.
        for seed in [point, point + 1_000_003] {
            let (_, crashed) = run_with_crash_at(Some(point), seed);
            assert!(crashed, "crash point {point} not reached");
        }
    }
}

#[test]
fn random_fsync_errors_never_lose_acknowledged_data() {
    for seed in 0..200u64 {
        let storage = FaultyStorage::new(
            seed,
            FaultConfig {
                sync_error_probability: 0.02,
                ..FaultConfig::default()
            },
        );
        let config = crash_config();
        let mut model = Model::default();
        let result = LogSystem::open(config.clone(), storage.clone())
            .and_then(|(mut log, _)| workload(&mut log, &mut model));
        storage.set_faults(FaultConfig::default());
        storage.crash();
        let context = format!("fsync errors, seed {seed}, result {result:?}");
        let (mut log, _) = LogSystem::open(config, storage)
            .unwrap_or_else(|e| panic!("{context}: recovery failed: {e}"));
        verify(&mut log, &model, &context);
    }
}
