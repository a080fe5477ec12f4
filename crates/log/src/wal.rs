//! The write-ahead log shared by every Raft server of a node.
//!
//! Appends from all servers are encoded into one in-memory batch;
//! [`Wal::flush`] writes the batch with one `write` and makes it durable with
//! one `fdatasync` (group commit), then reports, per server, the last index
//! that became durable. The WAL is driven without threads (the simulator calls
//! `flush` itself); [`crate::LogWriter`] adds a writer thread for the runtime.
//!
//! File format (see docs/formats.md): a header `CWAL | version | flags | seq |
//! crc`, then batches. A batch is `marker | body_len | header_crc` followed by
//! records, each `len | crc32c | server | epoch | entries`. One flush writes
//! one batch, so at a crash only the last batch can be torn: recovery drops a
//! bad last batch (reporting it) and refuses a bad batch followed by a good
//! one (corruption, not a torn write).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chorus_raft::{Entry, LogIndex, ServerId, Term};

use crate::codec::{self, Cursor, DecodeError};
use crate::config::WalWriteStrategy;
use crate::error::StorageError;
use crate::storage::{OpenOptions, Storage};

/// Bytes of a WAL file header.
pub const WAL_HEADER_BYTES: usize = 20;
/// Bytes of a batch header.
pub const BATCH_HEADER_BYTES: usize = 12;
/// Marks the start of a batch; with the header crc it lets recovery tell a
/// real batch from garbage.
pub const BATCH_MARKER: u32 = 0xC0A1_BA7C;
/// Header flag: records carry a crc32c.
const FLAG_CHECKSUMS: u16 = 1;

/// "Server `server`'s entries up to `index` (of term `term`) are durable."
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durable {
    pub server: ServerId,
    pub index: LogIndex,
    pub term: Term,
}

/// A decoded WAL file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalHeader {
    pub seq: u64,
    pub checksums: bool,
}

/// One decoded WAL record: entries appended to one server's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRecord {
    pub server: ServerId,
    /// The server's log epoch when written; records of an older epoch than
    /// the server's current one are obsolete (see [`crate::system`]).
    pub epoch: u64,
    /// Non-empty, consecutive indexes.
    pub entries: Vec<Entry>,
}

pub fn wal_file_name(seq: u64) -> String {
    format!("{seq:020}.wal")
}

pub fn parse_wal_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 {
        return None;
    }
    digits.parse().ok()
}

pub fn encode_wal_header(header: WalHeader) -> Vec<u8> {
    let mut out = Vec::with_capacity(WAL_HEADER_BYTES);
    codec::put_magic_and_version(&mut out, codec::WAL_MAGIC);
    codec::put_u16(&mut out, if header.checksums { FLAG_CHECKSUMS } else { 0 });
    codec::put_u64(&mut out, header.seq);
    codec::put_crc_of(&mut out, 0);
    debug_assert_eq!(out.len(), WAL_HEADER_BYTES);
    out
}

pub fn decode_wal_header(bytes: &[u8]) -> Result<WalHeader, DecodeError> {
    let mut cursor = Cursor::new(bytes);
    cursor.magic_and_version(codec::WAL_MAGIC)?;
    let flags = cursor.u16()?;
    let seq = cursor.u64()?;
    let covered = &bytes[..cursor.position()];
    codec::check_crc(&mut cursor, covered)?;
    if flags & !FLAG_CHECKSUMS != 0 {
        return Err(DecodeError::invalid(format!(
            "unknown WAL flags {flags:#x}"
        )));
    }
    Ok(WalHeader {
        seq,
        checksums: flags & FLAG_CHECKSUMS != 0,
    })
}

/// Encodes one record (entries for one server) onto `out`.
pub fn encode_record(
    out: &mut Vec<u8>,
    server: ServerId,
    epoch: u64,
    entries: &[Entry],
    checksums: bool,
) {
    let start = codec::begin_record(out);
    codec::put_u64(out, server.0);
    codec::put_u64(out, epoch);
    for entry in entries {
        let len_at = out.len();
        codec::put_u32(out, 0);
        codec::encode_entry(out, entry);
        let len = (out.len() - len_at - 4) as u32;
        out[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
    }
    codec::finish_record(out, start, checksums);
}

fn decode_record_body(body: &[u8]) -> Result<WalRecord, DecodeError> {
    let mut cursor = Cursor::new(body);
    let server = ServerId(cursor.u64()?);
    let epoch = cursor.u64()?;
    let mut entries: Vec<Entry> = Vec::new();
    while cursor.remaining() > 0 {
        let len = cursor.u32()? as usize;
        let bytes = cursor
            .take(len)
            .map_err(|_| DecodeError::invalid("WAL record: entry length past the record's end"))?;
        let entry = codec::decode_entry(bytes)?;
        if let Some(previous) = entries.last() {
            if previous.index.checked_add(1) != Some(entry.index) {
                return Err(DecodeError::invalid("WAL record: indexes not consecutive"));
            }
        }
        entries.push(entry);
    }
    if entries.is_empty() {
        return Err(DecodeError::invalid("WAL record: no entries"));
    }
    Ok(WalRecord {
        server,
        epoch,
        entries,
    })
}

/// Decodes one batch at the start of `bytes`: its records and the bytes it
/// occupies.
pub fn decode_batch(bytes: &[u8], checksums: bool) -> Result<(Vec<WalRecord>, usize), DecodeError> {
    let mut cursor = Cursor::new(bytes);
    let marker = cursor.u32()?;
    let body_len = cursor.u32()? as usize;
    let covered = &bytes[..cursor.position()];
    codec::check_crc(&mut cursor, covered)?;
    if marker != BATCH_MARKER {
        return Err(DecodeError::invalid("WAL batch: bad marker"));
    }
    let body = cursor.take(body_len)?;
    let mut records = Vec::new();
    let mut position = 0;
    while position < body.len() {
        let (record, consumed) =
            codec::decode_record(&body[position..], checksums).map_err(|error| match error {
                // The batch length said the bytes are here: short is invalid.
                DecodeError::Incomplete { .. } => {
                    DecodeError::invalid("WAL record runs past its batch")
                }
                other => other,
            })?;
        records.push(decode_record_body(record)?);
        position += consumed;
    }
    if records.is_empty() {
        return Err(DecodeError::invalid("WAL batch: no records"));
    }
    Ok((records, BATCH_HEADER_BYTES + body_len))
}

/// What a WAL file holds.
#[derive(Debug)]
pub struct WalScan {
    pub header: WalHeader,
    /// Records in write order.
    pub records: Vec<WalRecord>,
    /// Bytes from the start of the file that hold whole, valid batches.
    pub valid_len: u64,
    /// The bad bytes after `valid_len`, if any, and why they are bad. They
    /// are a torn tail: no valid batch follows them.
    pub torn_tail: Option<DecodeError>,
}

/// Why a WAL file could not be scanned.
#[derive(Debug, PartialEq, Eq)]
pub struct WalScanError {
    pub offset: u64,
    pub error: DecodeError,
}

/// Decodes a whole WAL file. A bad batch with no valid batch anywhere after
/// it is reported as a torn tail; a bad batch followed by a valid one is an
/// error (the earlier batch was synced before the later one was written, so
/// it cannot be torn: it is corrupt).
pub fn scan_wal(bytes: &[u8]) -> Result<WalScan, WalScanError> {
    let header = decode_wal_header(bytes).map_err(|error| WalScanError { offset: 0, error })?;
    let mut records = Vec::new();
    let mut position = WAL_HEADER_BYTES;
    while position < bytes.len() {
        match decode_batch(&bytes[position..], header.checksums) {
            Ok((batch, consumed)) => {
                records.extend(batch);
                position += consumed;
            }
            Err(error) => {
                if valid_batch_after(bytes, position + 1, header.checksums) {
                    return Err(WalScanError {
                        offset: position as u64,
                        error,
                    });
                }
                return Ok(WalScan {
                    header,
                    records,
                    valid_len: position as u64,
                    torn_tail: Some(error),
                });
            }
        }
    }
    Ok(WalScan {
        header,
        records,
        valid_len: position as u64,
        torn_tail: None,
    })
}

fn valid_batch_after(bytes: &[u8], from: usize, checksums: bool) -> bool {
    let marker = BATCH_MARKER.to_le_bytes();
    let mut position = from;
    while position + BATCH_HEADER_BYTES <= bytes.len() {
        let Some(found) = bytes[position..]
            .windows(4)
            .position(|window| window == marker)
        else {
            return false;
        };
        position += found;
        if decode_batch(&bytes[position..], checksums).is_ok() {
            return true;
        }
        position += 1;
    }
    false
}

/// The open WAL: the current file plus the batch being accumulated.
pub struct Wal<S: Storage> {
    dir: PathBuf,
    seq: u64,
    /// `None` while a [`FlushJob`] holds it.
    file: Option<S::File>,
    checksums: bool,
    strategy: WalWriteStrategy,
    /// The batch being accumulated: a header placeholder, then records.
    buffer: Vec<u8>,
    /// Per server, the last (index, term) in `buffer`.
    pending: BTreeMap<ServerId, (LogIndex, Term)>,
    /// Bytes written to the current file (durable once the flush returned).
    file_len: u64,
    /// Set by the first failed write or sync; never cleared.
    failed: Option<String>,
}

/// A batch handed out for writing, possibly on another thread.
pub struct FlushJob<S: Storage> {
    file: S::File,
    path: PathBuf,
    bytes: Vec<u8>,
    notices: Vec<Durable>,
    strategy: WalWriteStrategy,
    /// Set by [`FlushJob::run`].
    result: Option<Result<(), std::io::Error>>,
}

impl<S: Storage> FlushJob<S> {
    /// The one write and (with the default strategy) the one fdatasync of
    /// the batch. Needs no lock on the log system.
    pub fn run(&mut self, storage: &S) {
        let result = storage.append(&mut self.file, &self.bytes).and_then(|()| {
            match self.strategy {
                // Durability: the batch is durable only once fdatasync
                // returned Ok; only then are its notices released.
                WalWriteStrategy::Default => storage.sync(&mut self.file),
                // The file was opened O_DSYNC: the write returning Ok means
                // the data is durable.
                WalWriteStrategy::OSync => Ok(()),
            }
        });
        self.result = Some(result);
    }

    pub fn len_bytes(&self) -> usize {
        self.bytes.len()
    }
}

impl<S: Storage> Wal<S> {
    /// Creates WAL file `seq` in `dir` and makes it (and its name) durable.
    pub fn create(
        storage: &S,
        dir: &Path,
        seq: u64,
        checksums: bool,
        strategy: WalWriteStrategy,
    ) -> Result<Self, StorageError> {
        let path = dir.join(wal_file_name(seq));
        let options = OpenOptions {
            create: true,
            sync_writes: strategy == WalWriteStrategy::OSync,
        };
        let mut file = storage
            .open(&path, options)
            .map_err(|e| StorageError::io(&path, e))?;
        let header = encode_wal_header(WalHeader { seq, checksums });
        storage
            .append(&mut file, &header)
            .and_then(|()| storage.sync(&mut file))
            .map_err(|e| StorageError::io(&path, e))?;
        // Durability: the new file's name must survive a crash before any
        // batch in it is acknowledged.
        storage
            .sync_dir(dir)
            .map_err(|e| StorageError::io(dir, e))?;
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            seq,
            file: Some(file),
            checksums,
            strategy,
            buffer: Vec::new(),
            pending: BTreeMap::new(),
            file_len: WAL_HEADER_BYTES as u64,
            failed: None,
        };
        wal.reset_buffer();
        Ok(wal)
    }

    fn reset_buffer(&mut self) {
        self.buffer.clear();
        self.buffer.extend_from_slice(&[0u8; BATCH_HEADER_BYTES]);
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(wal_file_name(self.seq))
    }

    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len() - BATCH_HEADER_BYTES
    }

    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    pub fn check_healthy(&self) -> Result<(), StorageError> {
        match &self.failed {
            Some(reason) => Err(StorageError::Failed {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Buffers `entries` for `server`. Nothing is written until a flush.
    pub fn append(&mut self, server: ServerId, epoch: u64, entries: &[Entry]) {
        let last = entries.last().expect("callers pass non-empty batches");
        encode_record(&mut self.buffer, server, epoch, entries, self.checksums);
        self.pending.insert(server, (last.index, last.term));
    }

    /// Forgets the pending durability notice of `server` (its buffered
    /// entries were discarded by a snapshot or it was deleted; the bytes still
    /// go out but recovery ignores them by their epoch).
    pub fn forget_pending(&mut self, server: ServerId) {
        self.pending.remove(&server);
    }

    /// Takes the buffered batch for writing. `None` when nothing is buffered
    /// (or a job is already out).
    pub fn begin_flush(&mut self) -> Result<Option<FlushJob<S>>, StorageError> {
        self.check_healthy()?;
        if self.buffered_bytes() == 0 || self.file.is_none() {
            return Ok(None);
        }
        let body_len = (self.buffer.len() - BATCH_HEADER_BYTES) as u32;
        self.buffer[0..4].copy_from_slice(&BATCH_MARKER.to_le_bytes());
        self.buffer[4..8].copy_from_slice(&body_len.to_le_bytes());
        let crc = crc32c::crc32c(&self.buffer[0..8]);
        self.buffer[8..12].copy_from_slice(&crc.to_le_bytes());
        let bytes = std::mem::take(&mut self.buffer);
        self.reset_buffer();
        let notices = std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(server, (index, term))| Durable {
                server,
                index,
                term,
            })
            .collect();
        Ok(Some(FlushJob {
            file: self.file.take().expect("checked above"),
            path: self.path(),
            bytes,
            notices,
            strategy: self.strategy,
            result: None,
        }))
    }

    /// Takes back a job's file and returns its notices, or the error that
    /// failed the WAL.
    pub fn finish_flush(&mut self, job: FlushJob<S>) -> Result<Vec<Durable>, StorageError> {
        let FlushJob {
            file,
            path,
            bytes,
            notices,
            result,
            ..
        } = job;
        self.file = Some(file);
        match result.expect("FlushJob::run was called") {
            Ok(()) => {
                self.file_len += bytes.len() as u64;
                Ok(notices)
            }
            Err(error) => {
                // Durability: a failed write or fsync is never retried. After
                // a failed fsync the kernel may have dropped the dirty pages
                // and a retry could "succeed" without the data: the WAL is
                // failed for good and every caller hears about it.
                let reason = format!("WAL {}: {error}", path.display());
                tracing::error!(%reason, "WAL failed");
                self.failed = Some(reason);
                Err(StorageError::io(path, error))
            }
        }
    }

    /// Writes and syncs everything buffered (single-threaded use).
    pub fn flush(&mut self, storage: &S) -> Result<Vec<Durable>, StorageError> {
        match self.begin_flush()? {
            None => Ok(Vec::new()),
            Some(mut job) => {
                job.run(storage);
                self.finish_flush(job)
            }
        }
    }

    /// Marks the WAL failed (another component of the log system failed).
    pub fn fail(&mut self, reason: String) {
        if self.failed.is_none() {
            self.failed = Some(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chorus_raft::Payload;

    fn entries(first: u64, count: u64) -> Vec<Entry> {
        (first..first + count)
            .map(|index| Entry {
                index,
                term: 1,
                time_ms: 0,
                payload: Payload::Command(Bytes::from(vec![index as u8; 10])),
            })
            .collect()
    }

    fn file_with_batches(batches: &[Vec<(u64, Vec<Entry>)>]) -> Vec<u8> {
        let mut bytes = encode_wal_header(WalHeader {
            seq: 3,
            checksums: true,
        });
        for batch in batches {
            let mut body = Vec::new();
            for (server, entries) in batch {
                encode_record(&mut body, ServerId(*server), 1, entries, true);
            }
            bytes.extend_from_slice(&BATCH_MARKER.to_le_bytes());
            bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
            let crc = crc32c::crc32c(&bytes[bytes.len() - 8..]);
            bytes.extend_from_slice(&crc.to_le_bytes());
            bytes.extend_from_slice(&body);
        }
        bytes
    }

    #[test]
    fn scan_reads_batches_and_reports_torn_tail() {
        let bytes = file_with_batches(&[
            vec![(1, entries(1, 3)), (2, entries(1, 1))],
            vec![(1, entries(4, 2))],
        ]);
        let scan = scan_wal(&bytes).unwrap();
        assert_eq!(scan.header.seq, 3);
        assert_eq!(scan.records.len(), 3);
        assert!(scan.torn_tail.is_none());
        // Every cut inside the last batch is a torn tail.
        let first_end = {
            let one = file_with_batches(&[vec![(1, entries(1, 3)), (2, entries(1, 1))]]);
            one.len()
        };
        for cut in first_end + 1..bytes.len() {
            let scan = scan_wal(&bytes[..cut]).unwrap();
            assert_eq!(scan.valid_len, first_end as u64);
            assert_eq!(scan.records.len(), 2);
            assert!(scan.torn_tail.is_some());
        }
    }

    #[test]
    fn corruption_followed_by_a_valid_batch_is_an_error() {
        let mut bytes = file_with_batches(&[vec![(1, entries(1, 3))], vec![(1, entries(4, 2))]]);
        bytes[WAL_HEADER_BYTES + BATCH_HEADER_BYTES + 12] ^= 0xff;
        let error = scan_wal(&bytes).unwrap_err();
        assert_eq!(error.offset, WAL_HEADER_BYTES as u64);
    }
}
