#![allow(dead_code)]

use bytes::Bytes;
use chorus_log::{FaultyStorage, LogConfig, LogSystem, Storage};
use chorus_raft::{Configuration, Entry, Payload, ServerId, SnapshotMeta};

pub fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        time_ms: index * 10,
        payload: Payload::Command(Bytes::from(format!("cmd-{index}-{term}").into_bytes())),
    }
}

pub fn entries(first: u64, count: u64, term: u64) -> Vec<Entry> {
    (first..first + count).map(|i| entry(i, term)).collect()
}

pub fn config(dir: &str) -> LogConfig {
    let mut config = LogConfig::new(dir);
    config.segment_max_entries = 8;
    config.wal_max_size_bytes = 4096;
    config
}

pub fn snapshot_meta(index: u64, term: u64, data: &[u8]) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term,
        config: Configuration::voters([ServerId(1), ServerId(2), ServerId(3)]),
        machine_version: 0,
        size_bytes: data.len() as u64,
    }
}

pub fn create<S: Storage>(log: &mut LogSystem<S>, id: u64) {
    log.create_server(
        ServerId(id),
        Configuration::voters([ServerId(id)]),
        Bytes::from(format!("server-{id}").into_bytes()),
    )
    .unwrap();
}

pub fn open_faulty(storage: &FaultyStorage, config: &LogConfig) -> LogSystem<FaultyStorage> {
    LogSystem::open(config.clone(), storage.clone()).unwrap().0
}
