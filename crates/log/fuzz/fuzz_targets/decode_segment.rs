#![no_main]
//! Arbitrary bytes as a segment file: data or a typed error, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = chorus_log::segment::scan_segment(data);
    let _ = chorus_log::segment::decode_segment(data);
});
