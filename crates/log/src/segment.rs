//! Per-server segment files: where entries live once their WAL file rolls
//! over.
//!
//! Format (see docs/formats.md): header `CSEG | version | flags | server | epoch |
//! seq | crc`, then one record per entry, `len | crc32c | postcard(Entry)`,
//! with consecutive indexes. Segment records are always checksummed. A file
//! holds at most `segment_max_entries` entries; it is only ever appended to,
//! and a batch that does not continue its last index starts a new file.

use chorus_raft::{Entry, LogIndex, ServerId, Term};

use crate::codec::{self, Cursor, DecodeError};

/// Bytes of a segment file header.
pub const SEGMENT_HEADER_BYTES: usize = 36;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub server: ServerId,
    /// The server's log epoch when the file was created.
    pub epoch: u64,
    /// Node-wide sequence number: later files have larger numbers, and
    /// replaying files in this order reproduces the log.
    pub seq: u64,
}

pub fn segment_file_name(seq: u64) -> String {
    format!("{seq:020}.seg")
}

pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 {
        return None;
    }
    digits.parse().ok()
}

pub fn encode_segment_header(header: SegmentHeader) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEGMENT_HEADER_BYTES);
    codec::put_magic_and_version(&mut out, codec::SEGMENT_MAGIC);
    codec::put_u16(&mut out, 0);
    codec::put_u64(&mut out, header.server.0);
    codec::put_u64(&mut out, header.epoch);
    codec::put_u64(&mut out, header.seq);
    codec::put_crc_of(&mut out, 0);
    debug_assert_eq!(out.len(), SEGMENT_HEADER_BYTES);
    out
}

pub fn decode_segment_header(bytes: &[u8]) -> Result<SegmentHeader, DecodeError> {
    let mut cursor = Cursor::new(bytes);
    cursor.magic_and_version(codec::SEGMENT_MAGIC)?;
    let flags = cursor.u16()?;
    let server = ServerId(cursor.u64()?);
    let epoch = cursor.u64()?;
    let seq = cursor.u64()?;
    let covered = &bytes[..cursor.position()];
    codec::check_crc(&mut cursor, covered)?;
    if flags != 0 {
        return Err(DecodeError::invalid(format!(
            "unknown segment flags {flags:#x}"
        )));
    }
    Ok(SegmentHeader { server, epoch, seq })
}

/// Encodes one entry record onto `out`; returns its length.
pub fn encode_entry_record(out: &mut Vec<u8>, entry: &Entry) -> usize {
    let start = codec::begin_record(out);
    codec::encode_entry(out, entry);
    codec::finish_record(out, start, true);
    out.len() - start
}

/// Where one entry sits in a segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryLocation {
    pub offset: u64,
    pub len: u32,
    pub term: Term,
}

/// A segment file's index, built by reading it.
#[derive(Clone, Debug)]
pub struct SegmentScan {
    pub header: SegmentHeader,
    /// Index of the first entry (meaningless when `locations` is empty).
    pub first: LogIndex,
    pub locations: Vec<EntryLocation>,
    /// Bytes holding the header and whole valid records.
    pub valid_len: u64,
    /// Why the bytes after `valid_len` are bad, if there are any.
    pub bad_tail: Option<DecodeError>,
}

impl SegmentScan {
    pub fn last(&self) -> Option<LogIndex> {
        (!self.locations.is_empty()).then(|| self.first + self.locations.len() as u64 - 1)
    }
}

/// Reads a segment file's header and record frames (checking every crc and
/// that indexes are consecutive) without decoding payloads.
pub fn scan_segment(bytes: &[u8]) -> Result<SegmentScan, DecodeError> {
    let header = decode_segment_header(bytes)?;
    let mut scan = SegmentScan {
        header,
        first: 0,
        locations: Vec::new(),
        valid_len: SEGMENT_HEADER_BYTES as u64,
        bad_tail: None,
    };
    let mut position = SEGMENT_HEADER_BYTES;
    while position < bytes.len() {
        let checked = codec::decode_record(&bytes[position..], true).and_then(|(body, used)| {
            let (index, term) = codec::peek_entry_index_term(body)?;
            Ok((index, term, used))
        });
        let (index, term, used) = match checked {
            Ok(found) => found,
            Err(error) => {
                scan.bad_tail = Some(error);
                return Ok(scan);
            }
        };
        match scan.last() {
            None => scan.first = index,
            Some(last) if last.checked_add(1) == Some(index) => {}
            Some(_) => {
                scan.bad_tail = Some(DecodeError::invalid("segment: indexes not consecutive"));
                return Ok(scan);
            }
        }
        scan.locations.push(EntryLocation {
            offset: position as u64,
            len: used as u32,
            term,
        });
        position += used;
        scan.valid_len = position as u64;
    }
    Ok(scan)
}

/// Decodes a whole segment file: every entry, fully. Any bad byte is an
/// error carrying its offset.
pub fn decode_segment(bytes: &[u8]) -> Result<(SegmentHeader, Vec<Entry>), (u64, DecodeError)> {
    let scan = scan_segment(bytes).map_err(|error| (0, error))?;
    if let Some(error) = scan.bad_tail {
        return Err((scan.valid_len, error));
    }
    let mut entries = Vec::with_capacity(scan.locations.len());
    for location in &scan.locations {
        entries.push(decode_entry_at(bytes, location).map_err(|error| (location.offset, error))?);
    }
    Ok((scan.header, entries))
}

/// Decodes the entry record at `location` within `bytes` (which starts at
/// file offset 0).
pub fn decode_entry_at(bytes: &[u8], location: &EntryLocation) -> Result<Entry, DecodeError> {
    let start = location.offset as usize;
    let end = start + location.len as usize;
    if end > bytes.len() {
        return Err(DecodeError::Incomplete {
            needed: end - bytes.len(),
        });
    }
    let (body, _) = codec::decode_record(&bytes[start..end], true)?;
    codec::decode_entry(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chorus_raft::Payload;

    #[test]
    fn round_trip_and_torn_tail() {
        let header = SegmentHeader {
            server: ServerId(9),
            epoch: 2,
            seq: 5,
        };
        let mut bytes = encode_segment_header(header);
        let entries: Vec<Entry> = (10..20)
            .map(|index| Entry {
                index,
                term: 3,
                time_ms: index,
                payload: Payload::Command(Bytes::from(vec![1; 100])),
            })
            .collect();
        for entry in &entries {
            encode_entry_record(&mut bytes, entry);
        }
        let (decoded_header, decoded) = decode_segment(&bytes).unwrap();
        assert_eq!(decoded_header, header);
        assert_eq!(decoded, entries);
        let scan = scan_segment(&bytes[..bytes.len() - 3]).unwrap();
        assert_eq!(scan.first, 10);
        assert_eq!(scan.last(), Some(18));
        assert!(scan.bad_tail.as_ref().unwrap().is_incomplete());
    }
}
