#![no_main]
//! Arbitrary bytes as a WAL file: data or a typed error, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = chorus_log::wal::scan_wal(data);
    let _ = chorus_log::wal::decode_batch(data, true);
    let _ = chorus_log::wal::decode_batch(data, false);
});
