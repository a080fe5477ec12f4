#![no_main]
//! Arbitrary bytes as snapshot, meta, config and checkpoint files.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = chorus_log::snapshot::decode_snapshot_file(data);
    let _ = chorus_log::meta::decode_meta_file(data);
    let _ = chorus_log::meta::decode_config_file(data);
    let _ = chorus_log::checkpoint::decode_checkpoint(data);
});
