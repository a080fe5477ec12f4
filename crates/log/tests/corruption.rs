//! Torn tails are cut and reported; corruption elsewhere is a typed error
//! naming the file and offset; arbitrary bytes never panic a decoder.

mod common;

use std::io::Write;

use chorus_log::{
    checkpoint, meta, segment, snapshot, wal, FaultyStorage, FsStorage, LogError, LogSystem,
    StorageError,
};
use chorus_raft::ServerId;
use common::*;
use proptest::prelude::*;

fn wal_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

#[test]
fn torn_wal_tail_is_truncated_and_reported() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = config(dir.path().to_str().unwrap());
    let (mut log, _) = LogSystem::open(config.clone(), FsStorage).unwrap();
    create(&mut log, 1);
    log.append(ServerId(1), entries(1, 3, 1)).unwrap();
    log.flush().unwrap();
    drop(log);
    let newest = wal_files(&config.wal_data_dir).pop().unwrap();
    let valid_len = std::fs::metadata(&newest).unwrap().len();
    // Half a batch: a torn write.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap();
    file.write_all(&[0x7c, 0xba, 0xa1, 0xc0, 40, 0, 0, 0, 1, 2])
        .unwrap();
    drop(file);
    let (mut log, report) = LogSystem::open(config.clone(), FsStorage).unwrap();
    let torn = report.torn_wal_tail.expect("torn tail reported");
    assert_eq!(torn.path, newest);
    assert_eq!(torn.offset, valid_len);
    assert_eq!(torn.bytes_dropped, 10);
    assert_eq!(report.last_indexes[&ServerId(1)], 3);
    assert_eq!(std::fs::metadata(&newest).unwrap().len(), valid_len);
    assert_eq!(log.recover(ServerId(1)).unwrap().entries, entries(1, 3, 1));
}

#[test]
fn corruption_before_valid_data_is_a_typed_error() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = config(dir.path().to_str().unwrap());
    let (mut log, _) = LogSystem::open(config.clone(), FsStorage).unwrap();
    create(&mut log, 1);
    log.append(ServerId(1), entries(1, 2, 1)).unwrap();
    log.flush().unwrap();
    log.append(ServerId(1), entries(3, 2, 1)).unwrap();
    log.flush().unwrap();
    drop(log);
    let newest = wal_files(&config.wal_data_dir).pop().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    let offset = wal::WAL_HEADER_BYTES + wal::BATCH_HEADER_BYTES + 20;
    bytes[offset] ^= 0x40;
    std::fs::write(&newest, &bytes).unwrap();
    match LogSystem::open(config, FsStorage) {
        Err(LogError::Storage(StorageError::Corrupt { path, offset, .. })) => {
            assert_eq!(path, newest);
            assert_eq!(offset, wal::WAL_HEADER_BYTES as u64);
        }
        Err(other) => panic!("wrong error {other}"),
        Ok(_) => panic!("corruption went unnoticed"),
    }
}

#[test]
fn corrupt_segment_is_a_typed_error() {
    let storage = FaultyStorage::reliable(11);
    let config = config("/n");
    let mut log = open_faulty(&storage, &config);
    create(&mut log, 1);
    for round in 0..20 {
        log.append(ServerId(1), entries(round * 5 + 1, 5, 1))
            .unwrap();
        log.flush().unwrap();
    }
    log.close().unwrap();
    let first_segment = storage
        .files()
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    storage
        .corrupt(&first_segment, segment::SEGMENT_HEADER_BYTES as u64 + 12)
        .unwrap();
    // The checkpoint lets open skip the scan; the read finds it.
    let mut log = open_faulty(&storage, &config);
    match log.recover(ServerId(1)) {
        Err(LogError::Storage(StorageError::Corrupt { path, .. })) => {
            assert_eq!(path, first_segment)
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

fn valid_wal() -> Vec<u8> {
    let mut bytes = wal::encode_wal_header(wal::WalHeader {
        seq: 1,
        checksums: true,
    });
    let mut body = Vec::new();
    wal::encode_record(&mut body, ServerId(1), 1, &entries(1, 3, 1), true);
    wal::encode_record(&mut body, ServerId(2), 1, &entries(7, 1, 2), true);
    bytes.extend_from_slice(&wal::BATCH_MARKER.to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c(&bytes[bytes.len() - 8..]);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes.extend_from_slice(&body);
    bytes
}

fn valid_segment() -> Vec<u8> {
    let mut bytes = segment::encode_segment_header(segment::SegmentHeader {
        server: ServerId(1),
        epoch: 1,
        seq: 1,
    });
    for entry in entries(5, 4, 2) {
        segment::encode_entry_record(&mut bytes, &entry);
    }
    bytes
}

fn valid_snapshot() -> Vec<u8> {
    snapshot::encode_snapshot_file(&snapshot_meta(9, 2, b"abc"), 3, true, b"abc")
}

/// Every decoder on the same bytes; none may panic.
fn decode_everything(bytes: &[u8]) {
    let _ = wal::scan_wal(bytes);
    let _ = wal::decode_batch(bytes, true);
    let _ = wal::decode_batch(bytes, false);
    let _ = segment::scan_segment(bytes);
    let _ = segment::decode_segment(bytes);
    let _ = snapshot::decode_snapshot_file(bytes);
    let _ = meta::decode_meta_file(bytes);
    let _ = meta::decode_config_file(bytes);
    let _ = checkpoint::decode_checkpoint(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&bytes);
    }

    #[test]
    fn mutated_files_decode_or_fail_cleanly(
        which in 0..3usize,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut bytes = match which {
            0 => valid_wal(),
            1 => valid_segment(),
            _ => valid_snapshot(),
        };
        for (index, value) in flips {
            let at = index.index(bytes.len());
            bytes[at] = value;
        }
        if do_cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        decode_everything(&bytes);
    }

    #[test]
    fn truncated_wal_is_a_torn_tail_never_an_error(cut in any::<prop::sample::Index>()) {
        let bytes = valid_wal();
        let cut = wal::WAL_HEADER_BYTES + cut.index(bytes.len() - wal::WAL_HEADER_BYTES + 1);
        let scan = wal::scan_wal(&bytes[..cut]).unwrap();
        if cut == bytes.len() {
            prop_assert!(scan.torn_tail.is_none());
            prop_assert_eq!(scan.records.len(), 2);
        } else if cut > wal::WAL_HEADER_BYTES {
            prop_assert!(scan.torn_tail.is_some());
            prop_assert!(scan.records.is_empty());
        }
    }

    #[test]
    fn truncated_segment_keeps_its_whole_records(cut in any::<prop::sample::Index>()) {
        let bytes = valid_segment();
        let cut = segment::SEGMENT_HEADER_BYTES + cut.index(bytes.len() - segment::SEGMENT_HEADER_BYTES + 1);
        let scan = segment::scan_segment(&bytes[..cut]).unwrap();
        prop_assert!(scan.valid_len as usize <= cut);
        prop_assert_eq!(scan.bad_tail.is_none(), scan.valid_len as usize == cut);
    }
}
