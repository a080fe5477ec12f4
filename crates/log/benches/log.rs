//! chorus-log benchmark: durable append throughput (1 server, 1,000 servers),
//! fsyncs per 10,000 appends, recovery time, and the disk's raw
//! write+fdatasync rate in the same run. Prints a markdown table.
//!
//! `cargo bench -p chorus-log -- [--seconds S] [--recovery-mib N]`
//! Runs on a real disk (refuses tmpfs): `CHORUS_BENCH_DIR` or
//! `target/chorus-log-bench` in the workspace.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_log::{FsStorage, LogConfig, LogSystem, LogWriter};
use chorus_raft::{Configuration, Entry, Payload, ServerId};

const PAYLOAD_BYTES: usize = 256;
const SERVERS_CONCURRENT: u64 = 1000;
const CLIENT_THREADS: u64 = 8;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench_dir() -> PathBuf {
    let dir = std::env::var_os("CHORUS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/chorus-log-bench")
        });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create bench dir");
    refuse_tmpfs(&dir);
    dir
}

fn refuse_tmpfs(dir: &Path) {
    use std::os::unix::ffi::OsStrExt;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a zeroed out-parameter.
    let rc = unsafe { libc::statfs(path.as_ptr(), &mut stat) };
    assert_eq!(rc, 0, "statfs {}", dir.display());
    let kind = stat.f_type as i64;
    if kind == TMPFS_MAGIC || kind == RAMFS_MAGIC {
        eprintln!(
            "{} is on tmpfs/ramfs: fsync numbers would be meaningless",
            dir.display()
        );
        std::process::exit(2);
    }
}

fn entry(index: u64, payload: &Bytes) -> Entry {
    Entry {
        index,
        term: 1,
        time_ms: 0,
        payload: Payload::Command(payload.clone()),
    }
}

/// The physical floor: 4 KiB writes each followed by fdatasync.
fn raw_disk(dir: &Path, seconds: u64) -> f64 {
    use std::io::Write;
    let path = dir.join("raw.bin");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0xabu8; 4096];
    let start = Instant::now();
    let mut count = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        file.write_all(&block).unwrap();
        file.sync_data().unwrap();
        count += 1;
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(path).unwrap();
    rate
}

struct Throughput {
    appends_per_second: f64,
    megabytes_per_second: f64,
    syncs_per_10k: f64,
    p99_micros: u64,
}

fn durable_appends(dir: &Path, servers: u64, threads: u64, seconds: u64) -> Throughput {
    let config = LogConfig::new(dir);
    let (mut log, _) = LogSystem::open(config, FsStorage).unwrap();
    for id in 0..servers {
        log.create_server(
            ServerId(id),
            Configuration::voters([ServerId(id)]),
            Bytes::new(),
        )
        .unwrap();
    }
    let writer = Arc::new(LogWriter::start(log, Box::new(|_| {})));
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let writer = writer.clone();
            let stop = stop.clone();
            let appended = appended.clone();
            std::thread::spawn(move || {
                let payload = Bytes::from(vec![7u8; PAYLOAD_BYTES]);
                let mine: Vec<u64> = (0..servers).filter(|id| id % threads == thread).collect();
                let mut histogram = hdrhistogram::Histogram::<u64>::new(3).unwrap();
                let mut next = 1;
                while !stop.load(Ordering::Relaxed) {
                    // Each server has one append in flight, like a Raft
                    // server waiting for its write before acknowledging.
                    let began = Instant::now();
                    let mut last = None;
                    for &id in &mine {
                        last = Some(
                            writer
                                .append(ServerId(id), vec![entry(next, &payload)])
                                .unwrap(),
                        );
                    }
                    writer.wait_durable(last.unwrap()).unwrap();
                    histogram
                        .record(began.elapsed().as_micros() as u64)
                        .unwrap();
                    appended.fetch_add(mine.len() as u64, Ordering::Relaxed);
                    next += 1;
                }
                histogram
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    for handle in handles {
        histogram.add(handle.join().unwrap()).unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let writer = Arc::try_unwrap(writer).ok().expect("threads joined");
    let log = writer.stop().unwrap();
    let stats = log.stats();
    let appends = appended.load(Ordering::Relaxed) as f64;
    let entry_bytes = stats.wal_bytes_written as f64 / stats.appends.max(1) as f64;
    Throughput {
        appends_per_second: appends / elapsed,
        megabytes_per_second: appends * entry_bytes / elapsed / 1e6,
        syncs_per_10k: stats.wal_syncs as f64 * 10_000.0 / stats.appends.max(1) as f64,
        p99_micros: histogram.value_at_quantile(0.99),
    }
}

struct Recovery {
    bytes: u64,
    write_seconds: f64,
    crash_restart_seconds: f64,
    orderly_restart_seconds: f64,
    wal_replayed_crash: u64,
}

fn recovery(dir: &Path, mebibytes: u64) -> Recovery {
    const SERVERS: u64 = 100;
    const PAYLOAD: usize = 4096;
    const BATCH: u64 = 16;
    let config = LogConfig::new(dir);
    let (mut log, _) = LogSystem::open(config.clone(), FsStorage).unwrap();
    for id in 0..SERVERS {
        log.create_server(
            ServerId(id),
            Configuration::voters([ServerId(id)]),
            Bytes::new(),
        )
        .unwrap();
    }
    let payload = Bytes::from(vec![3u8; PAYLOAD]);
    let target = mebibytes << 20;
    let mut written = 0u64;
    let mut next = 1u64;
    let start = Instant::now();
    while written < target {
        for id in 0..SERVERS {
            let batch: Vec<Entry> = (next..next + BATCH).map(|i| entry(i, &payload)).collect();
            log.append(ServerId(id), batch).unwrap();
        }
        next += BATCH;
        written += SERVERS * BATCH * PAYLOAD as u64;
        log.flush().unwrap();
    }
    let write_seconds = start.elapsed().as_secs_f64();
    let expected_last = next - 1;
    drop(log); // crash-like: no checkpoint since the last rollover

    let restart = |config: &LogConfig| -> (f64, u64) {
        let start = Instant::now();
        let (mut log, report) = LogSystem::open(config.clone(), FsStorage).unwrap();
        let mut total = 0;
        for id in 0..SERVERS {
            let persisted = log.recover(ServerId(id)).unwrap();
            assert_eq!(persisted.entries.last().unwrap().index, expected_last);
            total += persisted.entries.len();
        }
        let seconds = start.elapsed().as_secs_f64();
        assert_eq!(total as u64, SERVERS * expected_last);
        log.close().unwrap();
        (seconds, report.wal_records_replayed)
    };
    let (crash_restart_seconds, wal_replayed_crash) = restart(&config);
    let (orderly_restart_seconds, _) = restart(&config);
    Recovery {
        bytes: written,
        write_seconds,
        crash_restart_seconds,
        orderly_restart_seconds,
        wal_replayed_crash,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` compatibility
    }
    let seconds = arg("--seconds", 10);
    let recovery_mib = arg("--recovery-mib", 1024);
    let root = bench_dir();
    eprintln!("bench dir {}", root.display());

    eprintln!("raw disk...");
    let raw = raw_disk(&root, seconds);
    eprintln!("1 server...");
    let single = durable_appends(&root.join("single"), 1, 1, seconds);
    eprintln!("{SERVERS_CONCURRENT} servers...");
    let many = durable_appends(
        &root.join("many"),
        SERVERS_CONCURRENT,
        CLIENT_THREADS,
        seconds,
    );
    eprintln!("recovery of {recovery_mib} MiB...");
    let recovered = recovery(&root.join("recovery"), recovery_mib);
    let _ = std::fs::remove_dir_all(&root);

    println!("<!-- log:begin -->");
    println!("## chorus-log: the shared WAL\n");
    println!(
        "Generated by `cargo bench -p chorus-log -- --seconds {seconds} --recovery-mib {recovery_mib}` \
         on {} (real disk, release build). Entries carry a {PAYLOAD_BYTES}-byte command; every \
         append is waited on until durable (default write strategy: one write + one fdatasync \
         per batch). The {SERVERS_CONCURRENT}-server case runs {CLIENT_THREADS} client threads, \
         each server keeping one append in flight.\n",
        std::env::consts::ARCH
    );
    println!("| measurement | value |");
    println!("|---|---|");
    println!("| raw disk: 4 KiB write + fdatasync per second (physical floor) | {raw:.0} |");
    println!(
        "| 1 server: durable appends/s | {:.0} |",
        single.appends_per_second
    );
    println!(
        "| 1 server: MB/s (WAL bytes) | {:.2} |",
        single.megabytes_per_second
    );
    println!(
        "| 1 server: p99 append-to-durable latency | {} µs |",
        single.p99_micros
    );
    println!(
        "| 1 server: fsyncs per 10,000 appends | {:.0} |",
        single.syncs_per_10k
    );
    println!(
        "| {SERVERS_CONCURRENT} servers: aggregate durable appends/s | {:.0} |",
        many.appends_per_second
    );
    println!(
        "| {SERVERS_CONCURRENT} servers: MB/s (WAL bytes) | {:.2} |",
        many.megabytes_per_second
    );
    println!(
        "| {SERVERS_CONCURRENT} servers: p99 round latency (all of a thread's servers durable) | {} µs |",
        many.p99_micros
    );
    println!(
        "| {SERVERS_CONCURRENT} servers: fsyncs per 10,000 appends | {:.1} |",
        many.syncs_per_10k
    );
    println!(
        "| aggregate / single-server appends/s | {:.1}x |",
        many.appends_per_second / single.appends_per_second
    );
    println!(
        "| 1 server durable appends/s ÷ raw fsyncs/s | {:.2} |",
        single.appends_per_second / raw
    );
    println!(
        "| {SERVERS_CONCURRENT} servers durable appends/s ÷ raw fsyncs/s | {:.1} |",
        many.appends_per_second / raw
    );
    println!(
        "| recovery data written (100 servers, 4 KiB entries) | {:.0} MiB in {:.1} s |",
        recovered.bytes as f64 / (1 << 20) as f64,
        recovered.write_seconds
    );
    println!(
        "| restart after crash (no checkpoint since last rollover; {} WAL records replayed): open + recover all | {:.2} s |",
        recovered.wal_replayed_crash, recovered.crash_restart_seconds
    );
    println!(
        "| restart after orderly shutdown (checkpoint): open + recover all | {:.2} s |",
        recovered.orderly_restart_seconds
    );
    println!(
        "\nRecovery reads files the page cache may still hold from writing them (no cache \
         drop is possible in this environment); `recover` returns every entry of every server \
         (the core's `Persisted`), so it decodes the full {:.0} MiB.",
        recovered.bytes as f64 / (1 << 20) as f64
    );
    println!("<!-- log:end -->");
}
