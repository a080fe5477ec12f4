//! The physical floors a put's latency is judged against, measured in the
//! same run as the servers: a 4 KiB write + fdatasync on the data disk,
//! and a TCP round trip on loopback. Also the refusal of RAM-backed data
//! dirs (fsync there is free, so a benchmark on them measures nothing).

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;

/// One write of the disk floor, bytes (a page: the smallest WAL write).
const WRITE_BYTES: usize = 4_096;
/// The preallocated file of the disk floor, bytes; writes wrap around in it.
const PREALLOCATED_FILE_BYTES: u64 = 64 << 20;
/// The growing file stops growing here, bytes (then wraps; a floor run is
/// short enough not to reach it on this machine's disk).
const GROWING_FILE_BYTES_MAX: u64 = 1 << 30;
/// One message of the loopback round trip, bytes (a small request).
const PING_BYTES: usize = 64;
/// Latencies above this are recorded as this, µs.
const LATENCY_US_MAX: u64 = 60_000_000;

const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

#[derive(Clone, Debug)]
pub struct Floor {
    pub name: &'static str,
    pub p50_us: u64,
    pub p99_us: u64,
    pub per_second: f64,
}

#[derive(Clone, Debug)]
pub struct Floors {
    pub fsync_growing: Floor,
    pub fsync_preallocated: Floor,
    pub loopback_round_trip: Floor,
}

/// The file system type of `dir`, refusing tmpfs and ramfs.
pub fn check_real_disk(dir: &Path) -> Result<String> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .context("a data dir path with a NUL byte")?;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: statfs fills the struct it is given a pointer to; the path
    // is a valid NUL-terminated string.
    let code = unsafe { libc::statfs(path.as_ptr(), stat.as_mut_ptr()) };
    if code != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statfs {}", dir.display()));
    }
    // SAFETY: statfs returned 0, so it filled the struct.
    let stat = unsafe { stat.assume_init() };
    // f_type's width differs between architectures (i64 here, u32 or i32
    // elsewhere); the cast is a no-op on x86_64 only.
    #[allow(clippy::unnecessary_cast)]
    let kind = stat.f_type as i64;
    let name = match kind {
        TMPFS_MAGIC | RAMFS_MAGIC => bail!(
            "{} is on tmpfs/ramfs: fsync there is fiction; give --data-dir on a real disk",
            dir.display()
        ),
        0xEF53 => "ext2/3/4".to_string(),
        0x5846_5342 => "xfs".to_string(),
        0x9123_683E => "btrfs".to_string(),
        0x794C_7630 => "overlayfs".to_string(),
        0x2FC1_2FC1 => "zfs".to_string(),
        other => format!("file system 0x{other:x}"),
    };
    Ok(name)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
        .unwrap_or_else(|_| unreachable!("constant, valid histogram bounds"))
}

fn floor(name: &'static str, histogram: &Histogram<u64>, elapsed: Duration) -> Floor {
    Floor {
        name,
        p50_us: histogram.value_at_quantile(0.5),
        p99_us: histogram.value_at_quantile(0.99),
        per_second: histogram.len() as f64 / elapsed.as_secs_f64().max(1e-9),
    }
}

/// Measures the three floors for about `seconds` each (blocking).
pub fn measure(dir: &Path, seconds: f64) -> Result<Floors> {
    let duration = Duration::from_secs_f64(seconds);
    Ok(Floors {
        fsync_growing: fsync_floor(dir, duration, false)?,
        fsync_preallocated: fsync_floor(dir, duration, true)?,
        loopback_round_trip: round_trip_floor(duration)?,
    })
}

/// 4 KiB writes, each followed by fdatasync: appended to a new file (its
/// size changes every time, as a WAL without preallocation does), or
/// overwriting a file written and synced in full beforehand.
fn fsync_floor(dir: &Path, duration: Duration, preallocated: bool) -> Result<Floor> {
    let path = dir.join(if preallocated {
        "floor-preallocated"
    } else {
        "floor-growing"
    });
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let block = vec![0x5Au8; WRITE_BYTES];
    let wrap_bytes = if preallocated {
        let chunk = vec![0u8; 1 << 20];
        let mut offset = 0;
        while offset < PREALLOCATED_FILE_BYTES {
            file.write_all_at(&chunk, offset)?;
            offset += chunk.len() as u64;
        }
        file.sync_all()?;
        PREALLOCATED_FILE_BYTES
    } else {
        GROWING_FILE_BYTES_MAX
    };
    let mut latencies = histogram();
    let mut offset = 0u64;
    let started = Instant::now();
    while started.elapsed() < duration {
        let sent = Instant::now();
        file.write_all_at(&block, offset)?;
        file.sync_data()?;
        latencies.saturating_record(sent.elapsed().as_micros().max(1) as u64);
        offset = (offset + WRITE_BYTES as u64) % wrap_bytes;
    }
    let elapsed = started.elapsed();
    drop(file);
    std::fs::remove_file(&path).ok();
    Ok(floor(
        if preallocated {
            "4 KiB write + fdatasync, preallocated file (overwrite)"
        } else {
            "4 KiB write + fdatasync, growing file (append)"
        },
        &latencies,
        elapsed,
    ))
}

/// A 64-byte ping and its echo over loopback TCP (Nagle off, as gRPC).
fn round_trip_floor(duration: Duration) -> Result<Floor> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the echo server")?;
    let address = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut buffer = [0u8; PING_BYTES];
        // Ends when the client closes the connection.
        while stream.read_exact(&mut buffer).is_ok() {
            stream.write_all(&buffer)?;
        }
        Ok(())
    });
    let mut stream = TcpStream::connect(address).context("connecting to the echo server")?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let ping = [7u8; PING_BYTES];
    let mut pong = [0u8; PING_BYTES];
    let mut latencies = histogram();
    let started = Instant::now();
    while started.elapsed() < duration {
        let sent = Instant::now();
        stream.write_all(&ping)?;
        stream.read_exact(&mut pong)?;
        latencies.saturating_record(sent.elapsed().as_micros().max(1) as u64);
    }
    let elapsed = started.elapsed();
    drop(stream);
    match echo.join() {
        Ok(result) => result.context("the echo server")?,
        Err(_) => bail!("the echo server thread panicked"),
    }
    Ok(floor(
        "loopback TCP round trip (64 B each way)",
        &latencies,
        elapsed,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_are_measured_and_tmpfs_is_told_apart() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let kind = check_real_disk(dir.path()).unwrap();
        assert!(!kind.is_empty());
        let floors = measure(dir.path(), 0.05).unwrap();
        assert!(floors.fsync_growing.per_second > 0.0);
        assert!(floors.loopback_round_trip.p50_us >= 1);
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        if mounts
            .lines()
            .any(|l| l.starts_with("tmpfs /dev/shm tmpfs "))
        {
            assert!(check_real_disk(Path::new("/dev/shm")).is_err());
        }
    }
}
