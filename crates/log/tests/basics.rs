//! Round trips, rollover, snapshots, deletion, many servers, fsync errors.

mod common;

use std::path::Path;

use bytes::Bytes;
use chorus_log::{
    ApiError, FaultConfig, FaultyStorage, FsStorage, LogConfig, LogError, LogSystem, LogWriter,
    Storage, StorageError, WalWriteStrategy,
};
use chorus_raft::{HardState, ServerId};
use common::*;

#[test]
fn round_trip_on_the_real_file_system() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    for strategy in [WalWriteStrategy::Default, WalWriteStrategy::OSync] {
        let data_dir = dir.path().join(format!("{strategy:?}"));
        let mut config = LogConfig::new(&data_dir);
        config.wal_write_strategy = strategy;
        config.wal_data_dir = dir.path().join(format!("{strategy:?}-wal"));
        let (mut log, _) = LogSystem::open(config.clone(), FsStorage).unwrap();
        create(&mut log, 1);
        let hard_state = HardState {
            term: 3,
            voted_for: Some(ServerId(2)),
        };
        log.save_hard_state(ServerId(1), hard_state).unwrap();
        log.save_last_applied(ServerId(1), 2).unwrap();
        log.append(ServerId(1), entries(1, 5, 3)).unwrap();
        let durable = log.flush().unwrap();
        assert_eq!(durable.len(), 1);
        assert_eq!((durable[0].index, durable[0].term), (5, 3));
        drop(log); // no checkpoint: recovery replays the WAL
        let (mut log, report) = LogSystem::open(config.clone(), FsStorage).unwrap();
        assert!(!report.used_checkpoint);
        assert_eq!(report.last_indexes[&ServerId(1)], 5);
        let persisted = log.recover(ServerId(1)).unwrap();
        assert_eq!(persisted.hard_state, hard_state);
        assert_eq!(persisted.entries, entries(1, 5, 3));
        assert_eq!(persisted.initial_config.members.len(), 1);
        assert_eq!(log.last_applied(ServerId(1)).unwrap(), 2);
        assert_eq!(
            log.server_config(ServerId(1)).unwrap(),
            Bytes::from_static(b"server-1")
        );
        log.close().unwrap();
        let (mut log, report) = LogSystem::open(config, FsStorage).unwrap();
        assert!(report.used_checkpoint);
        assert_eq!(report.wal_records_replayed, 0);
        assert_eq!(report.segment_files_scanned, 0);
        assert_eq!(log.recover(ServerId(1)).unwrap().entries, entries(1, 5, 3));
    }
}

#[test]
fn reads_see_unflushed_entries_and_overwrite_truncates() {
    let storage = FaultyStorage::reliable(1);
    let config = config("/n");
    let mut log = open_faulty(&storage, &config);
    create(&mut log, 1);
    let s = ServerId(1);
    log.append(s, entries(1, 10, 1)).unwrap();
    assert_eq!(log.read(s, 3..6).unwrap(), entries(3, 3, 1));
    log.flush().unwrap();
    // A follower replaces a conflicting suffix (Raft §5.3).
    log.append(s, entries(6, 2, 2)).unwrap();
    assert_eq!(log.last_index_term(s).unwrap(), (7, 2));
    assert_eq!(
        log.read(s, 5..8).unwrap(),
        [entries(5, 1, 1), entries(6, 2, 2)].concat()
    );
    assert!(matches!(
        log.read(s, 5..9),
        Err(LogError::Api(ApiError::PastEnd { .. }))
    ));
    assert!(matches!(
        log.append(s, entries(9, 1, 2)),
        Err(LogError::Api(ApiError::Gap { first: 9, last: 7 }))
    ));
    log.flush().unwrap();
    drop(log);
    storage.crash();
    let mut log = open_faulty(&storage, &config);
    assert_eq!(
        log.recover(s).unwrap().entries,
        [entries(1, 5, 1), entries(6, 2, 2)].concat()
    );
}

#[test]
fn segment_rollover_moves_entries_and_deletes_wal_files() {
    let storage = FaultyStorage::reliable(2);
    let config = config("/n");
    let mut log = open_faulty(&storage, &config);
    create(&mut log, 1);
    create(&mut log, 2);
    for round in 0..40u64 {
        for id in [1, 2] {
            log.append(ServerId(id), entries(round * 5 + 1, 5, 1))
                .unwrap();
        }
        log.flush().unwrap();
    }
    let stats = log.stats();
    assert!(stats.rollovers >= 2, "{stats:?}");
    assert!(log.segment_count(ServerId(1)).unwrap() >= 10);
    let wal_files = storage
        .files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .count();
    assert_eq!(wal_files, 1, "old WAL files are deleted after rollover");
    // Overwrite entries that already live in segments.
    log.append(ServerId(1), entries(100, 3, 2)).unwrap();
    log.flush().unwrap();
    let expected = [entries(1, 99, 1), entries(100, 3, 2)].concat();
    assert_eq!(log.read(ServerId(1), 1..103).unwrap(), expected);
    drop(log);
    storage.crash();
    // Recovery with the checkpoint of the last rollover.
    let (mut log, report) = LogSystem::open(config.clone(), storage.clone()).unwrap();
    assert!(report.used_checkpoint);
    assert_eq!(log.recover(ServerId(1)).unwrap().entries, expected);
    assert_eq!(
        log.recover(ServerId(2)).unwrap().entries,
        entries(1, 200, 1)
    );
    log.checkpoint().unwrap();
    drop(log);
    // Recovery without any checkpoint: scan everything.
    storage.remove(Path::new("/n/checkpoint")).unwrap();
    storage.sync_dir(Path::new("/n")).unwrap();
    let (mut log, report) = LogSystem::open(config, storage.clone()).unwrap();
    assert!(!report.used_checkpoint);
    assert!(report.segment_files_scanned > 0);
    assert_eq!(log.recover(ServerId(1)).unwrap().entries, expected);
    assert_eq!(
        log.recover(ServerId(2)).unwrap().entries,
        entries(1, 200, 1)
    );
}

#[test]
fn snapshots_truncate_the_log_and_reclaim_segments() {
    let storage = FaultyStorage::reliable(3);
    let config = config("/n");
    let mut log = open_faulty(&storage, &config);
    create(&mut log, 1);
    let s = ServerId(1);
    let mut next = 1;
    let mut peak = 0;
    for round in 0..30u64 {
        log.append(s, entries(next, 20, 1)).unwrap();
        next += 20;
        log.flush().unwrap();
        let data = format!("state-{round}").into_bytes();
        let index = next - 5;
        log.save_snapshot(s, snapshot_meta(index, 1, &data), Bytes::from(data), true)
            .unwrap();
        assert!(matches!(
            log.read(s, index..index + 1),
            Err(LogError::Api(ApiError::Compacted { .. }))
        ));
        assert_eq!(
            log.read(s, index + 1..next).unwrap(),
            entries(index + 1, 4, 1)
        );
        let used = log.server_disk_bytes(s).unwrap();
        peak = peak.max(used);
    }
    // Disk use stays bounded: segments below the snapshot are reclaimed.
    assert!(peak < 12_000, "server used {peak} bytes");
    assert!(log.segment_count(s).unwrap() <= 2);
    drop(log);
    storage.crash();
    let mut log = open_faulty(&storage, &config);
    let persisted = log.recover(s).unwrap();
    let (meta, data) = persisted.snapshot.unwrap();
    assert_eq!(meta.index, next - 5);
    assert_eq!(data, Bytes::from_static(b"state-29"));
    assert_eq!(persisted.entries, entries(next - 4, 4, 1));

    // keep_log_after = false: the whole log goes, and stays gone.
    let data = b"leader-state".to_vec();
    log.save_snapshot(s, snapshot_meta(1000, 5, &data), Bytes::from(data), false)
        .unwrap();
    assert_eq!(log.last_index_term(s).unwrap(), (1000, 5));
    log.append(s, entries(1001, 2, 5)).unwrap();
    log.flush().unwrap();
    drop(log);
    storage.crash();
    let mut log = open_faulty(&storage, &config);
    let persisted = log.recover(s).unwrap();
    assert_eq!(persisted.snapshot.unwrap().0.index, 1000);
    assert_eq!(persisted.entries, entries(1001, 2, 5));
}

#[test]
fn a_snapshot_written_in_steps_lets_other_servers_append_meanwhile() {
    let storage = FaultyStorage::reliable(4);
    let config = config("/n");
    let mut log = open_faulty(&storage, &config);
    for id in 1..=3 {
        create(&mut log, id);
    }
    let (busy, other, doomed) = (ServerId(1), ServerId(2), ServerId(3));
    log.append(busy, entries(1, 10, 1)).unwrap();
    log.append(doomed, entries(1, 10, 1)).unwrap();
    log.flush().unwrap();
    let data = b"busy-state".to_vec();
    let write = log
        .begin_snapshot(busy, snapshot_meta(8, 1, &data), Bytes::from(data), true)
        .unwrap();
    // Nothing changed yet; the log serves everyone while the file is written.
    assert_eq!(log.read(busy, 1..11).unwrap(), entries(1, 10, 1));
    log.append(other, entries(1, 5, 1)).unwrap();
    log.flush().unwrap();
    let written = write.write();
    log.finish_snapshot(written).unwrap();
    assert!(matches!(
        log.read(busy, 8..9),
        Err(LogError::Api(ApiError::Compacted { .. }))
    ));
    assert_eq!(log.read(busy, 9..11).unwrap(), entries(9, 2, 1));

    // A server deleted while its snapshot was being written: an error for
    // that server, not a failed log.
    let data = b"doomed-state".to_vec();
    let write = log
        .begin_snapshot(doomed, snapshot_meta(5, 1, &data), Bytes::from(data), true)
        .unwrap();
    log.delete_server(doomed).unwrap();
    assert!(matches!(
        log.finish_snapshot(write.write()),
        Err(LogError::Api(ApiError::UnknownServer(_)))
    ));
    log.append(other, entries(6, 1, 1)).unwrap();
    log.flush().unwrap();

    drop(log);
    storage.crash();
    let mut log = open_faulty(&storage, &config);
    let persisted = log.recover(busy).unwrap();
    let (meta, data) = persisted.snapshot.unwrap();
    assert_eq!((meta.index, data), (8, Bytes::from_static(b"busy-state")));
    assert_eq!(persisted.entries, entries(9, 2, 1));
    assert_eq!(log.recover(other).unwrap().entries, entries(1, 6, 1));
    assert!(!log.contains(doomed));
}

#[test]
fn discarding_snapshot_without_new_entries_survives_restart() {
    let storage = FaultyStorage::reliable(4);
    let config = config("/n");
    let mut log = open_faulty(&storage, &config);
    create(&mut log, 1);
    let s = ServerId(1);
    log.append(s, entries(1, 10, 1)).unwrap();
    log.flush().unwrap();
    let data = b"x".to_vec();
    // The leader's snapshot at 5 (term 3) conflicts with our entries 6..10.
    log.save_snapshot(s, snapshot_meta(5, 3, &data), Bytes::from(data), false)
        .unwrap();
    drop(log);
    storage.crash();
    let mut log = open_faulty(&storage, &config);
    let persisted = log.recover(s).unwrap();
    assert_eq!(persisted.snapshot.unwrap().0.index, 5);
    assert!(persisted.entries.is_empty(), "stale entries came back");
}

#[test]
fn a_thousand_servers_share_one_wal_and_one_fsync() {
    let storage = FaultyStorage::reliable(5);
    let mut config = LogConfig::new("/n");
    config.segment_max_entries = 64;
    let (mut log, _) = LogSystem::open(config.clone(), storage.clone()).unwrap();
    for id in 0..1000 {
        create(&mut log, id);
    }
    let syncs_before = storage.stats().syncs;
    for round in 0..3 {
        for id in 0..1000 {
            log.append(ServerId(id), entries(round * 4 + 1, 4, 1))
                .unwrap();
        }
        let durable = log.flush().unwrap();
        assert_eq!(durable.len(), 1000);
        assert!(durable.iter().all(|d| d.index == round * 4 + 4));
    }
    assert_eq!(
        storage.stats().syncs - syncs_before,
        3,
        "one fsync per batch"
    );
    assert_eq!(log.stats().wal_syncs, 3);
    drop(log);
    storage.crash();
    let (mut log, report) = LogSystem::open(config.clone(), storage.clone()).unwrap();
    assert_eq!(report.servers, 1000);
    for id in 0..1000 {
        assert_eq!(
            log.recover(ServerId(id)).unwrap().entries,
            entries(1, 12, 1)
        );
    }
    log.close().unwrap();
    let (_, report) = LogSystem::open(config, storage).unwrap();
    assert!(report.used_checkpoint);
    assert_eq!(report.wal_records_replayed, 0);
}

#[test]
fn deleting_a_server_removes_everything_and_stays_deleted() {
    let storage = FaultyStorage::reliable(6);
    let config = config("/n");
    let mut log = open_faulty(&storage, &config);
    create(&mut log, 1);
    create(&mut log, 2);
    let s = ServerId(1);
    for round in 0..10 {
        log.append(s, entries(round * 10 + 1, 10, 1)).unwrap();
        log.append(ServerId(2), entries(round * 10 + 1, 10, 1))
            .unwrap();
        log.flush().unwrap();
    }
    let data = b"snap".to_vec();
    log.save_snapshot(s, snapshot_meta(50, 1, &data), Bytes::from(data), true)
        .unwrap();
    log.append(s, entries(101, 1, 1)).unwrap();
    log.delete_server(s).unwrap();
    assert!(log.flush().unwrap().iter().all(|d| d.server != s));
    let leftovers: Vec<_> = storage
        .files()
        .into_iter()
        .filter(|p| p.starts_with("/n/servers/00000000000000000001"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Its records are still in the WAL; re-creating the id must not revive them.
    create(&mut log, 1);
    assert_eq!(log.last_index_term(s).unwrap(), (0, 0));
    drop(log);
    storage.crash();
    let mut log = open_faulty(&storage, &config);
    assert_eq!(log.recover(s).unwrap().entries, vec![]);
    assert_eq!(
        log.recover(ServerId(2)).unwrap().entries,
        entries(1, 100, 1)
    );
    log.delete_server(s).unwrap();
    log.delete_server(ServerId(2)).unwrap();
    log.close().unwrap();
    let remaining: Vec<_> = storage
        .files()
        .into_iter()
        .filter(|p| p.starts_with("/n/servers"))
        .collect();
    assert!(remaining.is_empty(), "{remaining:?}");
}

#[test]
fn an_fsync_error_fails_the_wal_for_good() {
    let storage = FaultyStorage::reliable(7);
    let config = config("/n");
    let mut log = open_faulty(&storage, &config);
    create(&mut log, 1);
    let s = ServerId(1);
    log.append(s, entries(1, 3, 1)).unwrap();
    log.flush().unwrap();
    storage.set_faults(FaultConfig {
        sync_error_at: Some(storage.stats().syncs),
        ..FaultConfig::default()
    });
    log.append(s, entries(4, 3, 1)).unwrap();
    let error = log.flush().unwrap_err();
    assert!(error.is_fatal(), "{error}");
    // No retry, no pretending: every later call reports the failure.
    assert!(matches!(
        log.append(s, entries(7, 1, 1)),
        Err(LogError::Storage(StorageError::Failed { .. }))
    ));
    assert!(matches!(
        log.flush(),
        Err(LogError::Storage(StorageError::Failed { .. }))
    ));
    assert!(log.save_hard_state(s, HardState::default()).is_err());
    drop(log);
    storage.set_faults(FaultConfig::default());
    storage.crash();
    let mut log = open_faulty(&storage, &config);
    let recovered = log.recover(s).unwrap().entries;
    assert!(recovered.starts_with(&entries(1, 3, 1)));
}

#[test]
fn enospc_fails_the_log_and_recovery_keeps_what_was_durable() {
    let storage = FaultyStorage::reliable(8);
    let config = config("/n");
    let mut log = open_faulty(&storage, &config);
    create(&mut log, 1);
    let s = ServerId(1);
    log.append(s, entries(1, 3, 1)).unwrap();
    log.flush().unwrap();
    storage.set_faults(FaultConfig {
        capacity_bytes: Some(storage.used_bytes() + 50),
        ..FaultConfig::default()
    });
    log.append(s, entries(4, 30, 1)).unwrap();
    let error = log.flush().unwrap_err();
    assert!(error.to_string().contains("space"), "{error}");
    drop(log);
    storage.set_faults(FaultConfig::default());
    storage.crash();
    let mut log = open_faulty(&storage, &config);
    assert_eq!(log.recover(s).unwrap().entries, entries(1, 3, 1));
}

#[test]
fn log_writer_group_commits_concurrent_appends() {
    let storage = FaultyStorage::reliable(9);
    let mut config = LogConfig::new("/n");
    config.segment_max_entries = 64;
    let (mut log, _) = LogSystem::open(config.clone(), storage.clone()).unwrap();
    for id in 0..64 {
        create(&mut log, id);
    }
    let notices = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = notices.clone();
    let writer = std::sync::Arc::new(LogWriter::start(
        log,
        Box::new(move |batch| {
            counter.fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }),
    ));
    let threads: Vec<_> = (0..8u64)
        .map(|thread| {
            let writer = writer.clone();
            std::thread::spawn(move || {
                for round in 0..20u64 {
                    let mut last = None;
                    for id in (thread * 8)..(thread * 8 + 8) {
                        last = Some(
                            writer
                                .append(ServerId(id), entries(round + 1, 1, 1))
                                .unwrap(),
                        );
                    }
                    writer.wait_durable(last.unwrap()).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    writer.checkpoint().unwrap();
    let writer = std::sync::Arc::try_unwrap(writer).ok().unwrap();
    let log = writer.stop().unwrap();
    let stats = log.stats();
    assert_eq!(stats.appends, 64 * 20);
    assert!(stats.wal_syncs < stats.appends, "{stats:?}");
    assert!(notices.load(std::sync::atomic::Ordering::Relaxed) > 0);
    log.close().unwrap();
    let (mut log, _) = LogSystem::open(config, storage).unwrap();
    for id in 0..64 {
        assert_eq!(
            log.recover(ServerId(id)).unwrap().entries,
            entries(1, 20, 1)
        );
    }
}
