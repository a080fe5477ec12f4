//! Identities: sites, nodes and clusters.
//!
//! A **site** is a persistent identity: a 128-bit random id generated once and
//! stored in `<data_dir>/site`, so it survives restarts and address changes. A
//! **node** is a network address that a site currently runs at. A **cluster** is
//! named by a [`ClusterId`]; one site may be (or have been) a peer of several.
//!
//! The site file is the only I/O in this crate. Its format (see `docs/formats.md`):
//!
//! ```text
//! offset size field
//! 0      4    magic  b"CHST"
//! 4      2    version u16 little-endian (= 1)
//! 6      16   site id u128 little-endian
//! 22     4    crc32c u32 little-endian over bytes 0..22
//! ```

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Magic number that starts a site file.
pub const SITE_FILE_MAGIC: [u8; 4] = *b"CHST";
/// The only site-file version this build reads and writes.
pub const SITE_FILE_VERSION: u16 = 1;
/// Exact size of a version-1 site file: magic + version + id + crc.
pub const SITE_FILE_BYTES: usize = 4 + 2 + 16 + 4;
/// Name of the site file inside the data directory.
pub const SITE_FILE_NAME: &str = "site";

/// A persistent site identity (128 random bits). Displayed as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SiteId(pub u128);

impl SiteId {
    /// Draws a fresh random site id from the injected RNG.
    pub fn generate(rng: &mut impl Rng) -> Self {
        SiteId(rng.gen())
    }

    /// Reads the site id stored in `<data_dir>/site`, or — only when the file does
    /// not exist — generates one with `rng` and stores it durably (write to a
    /// temporary file, fsync, rename, fsync the directory). A file that exists but
    /// does not decode is an error, never silently replaced: a site must keep its
    /// identity for life.
    pub fn load_or_create(data_dir: &Path, rng: &mut impl Rng) -> Result<SiteId, SiteFileError> {
        let path = data_dir.join(SITE_FILE_NAME);
        match fs::read(&path) {
            Ok(bytes) => decode_site_file(&bytes),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let site = SiteId::generate(rng);
                write_site_file(data_dir, &path, site)?;
                Ok(site)
            }
            Err(source) => Err(SiteFileError::Io { path, source }),
        }
    }

    /// Reads an existing site file; errors if it is missing.
    pub fn load(data_dir: &Path) -> Result<SiteId, SiteFileError> {
        let path = data_dir.join(SITE_FILE_NAME);
        let bytes = fs::read(&path).map_err(|source| SiteFileError::Io { path, source })?;
        decode_site_file(&bytes)
    }
}

impl fmt::Debug for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "site:{:08x}", (self.0 >> 96) as u32)
    }
}

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl FromStr for SiteId {
    type Err = std::num::ParseIntError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        u128::from_str_radix(text, 16).map(SiteId)
    }
}

/// A node: the network address a site runs at (for example `10.0.0.7:4100`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeAddr(pub String);

impl NodeAddr {
    /// Makes a node address from anything string-like.
    pub fn new(addr: impl Into<String>) -> Self {
        NodeAddr(addr.into())
    }
}

impl fmt::Debug for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A cluster's name. Two clusters with different ids never exchange state.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub String);

impl ClusterId {
    /// Makes a cluster id from anything string-like.
    pub fn new(id: impl Into<String>) -> Self {
        ClusterId(id.into())
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a site file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SiteFileError {
    /// The file system refused.
    #[error("site file {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Fewer bytes than a site file needs (a torn write or a truncated copy).
    #[error("site file is {found_bytes} bytes, expected {SITE_FILE_BYTES}")]
    Incomplete {
        /// How many bytes were found.
        found_bytes: usize,
    },
    /// The file does not start with [`SITE_FILE_MAGIC`]: it is not a site file.
    #[error("not a chorus site file (magic {found:?})")]
    BadMagic {
        /// The first four bytes found.
        found: [u8; 4],
    },
    /// Written by a newer (or unknown) version of chorus.
    #[error(
        "site file version {found} is not supported (this build reads version {SITE_FILE_VERSION})"
    )]
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// The checksum does not match: the file is corrupt.
    #[error("site file checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The checksum stored in the file.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
    /// Extra bytes after a complete version-1 file.
    #[error("site file has {found_bytes} bytes, expected exactly {SITE_FILE_BYTES}")]
    TrailingBytes {
        /// How many bytes were found.
        found_bytes: usize,
    },
}

/// Encodes a site file (see the module docs for the layout).
pub fn encode_site_file(site: SiteId) -> [u8; SITE_FILE_BYTES] {
    let mut out = [0u8; SITE_FILE_BYTES];
    out[0..4].copy_from_slice(&SITE_FILE_MAGIC);
    out[4..6].copy_from_slice(&SITE_FILE_VERSION.to_le_bytes());
    out[6..22].copy_from_slice(&site.0.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..22]);
    out[22..26].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes and validates a site file: magic, then version, then length, then crc.
pub fn decode_site_file(bytes: &[u8]) -> Result<SiteId, SiteFileError> {
    if bytes.len() < 6 {
        return Err(SiteFileError::Incomplete {
            found_bytes: bytes.len(),
        });
    }
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic != SITE_FILE_MAGIC {
        return Err(SiteFileError::BadMagic { found: magic });
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != SITE_FILE_VERSION {
        return Err(SiteFileError::UnsupportedVersion { found: version });
    }
    if bytes.len() < SITE_FILE_BYTES {
        return Err(SiteFileError::Incomplete {
            found_bytes: bytes.len(),
        });
    }
    if bytes.len() > SITE_FILE_BYTES {
        return Err(SiteFileError::TrailingBytes {
            found_bytes: bytes.len(),
        });
    }
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(&bytes[22..26]);
    let stored = u32::from_le_bytes(crc_bytes);
    let computed = crc32c::crc32c(&bytes[0..22]);
    if stored != computed {
        return Err(SiteFileError::Checksum { stored, computed });
    }
    let mut id_bytes = [0u8; 16];
    id_bytes.copy_from_slice(&bytes[6..22]);
    Ok(SiteId(u128::from_le_bytes(id_bytes)))
}

fn write_site_file(data_dir: &Path, path: &Path, site: SiteId) -> Result<(), SiteFileError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SiteFileError::Io { path, source }
    };
    fs::create_dir_all(data_dir).map_err(io_error(data_dir))?;
    let temporary = data_dir.join(format!("{SITE_FILE_NAME}.tmp"));
    {
        let mut file = fs::File::create(&temporary).map_err(io_error(&temporary))?;
        file.write_all(&encode_site_file(site))
            .map_err(io_error(&temporary))?;
        file.sync_all().map_err(io_error(&temporary))?;
    }
    fs::rename(&temporary, path).map_err(io_error(path))?;
    // The rename is durable only once the directory entry is synced.
    if let Ok(dir) = fs::File::open(data_dir) {
        dir.sync_all().map_err(io_error(data_dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn site_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let first = SiteId::load_or_create(dir.path(), &mut rng).unwrap();
        let second = SiteId::load_or_create(dir.path(), &mut rng).unwrap();
        assert_eq!(first, second);
        assert_eq!(SiteId::load(dir.path()).unwrap(), first);
    }

    #[test]
    fn corrupt_site_files_are_typed_errors() {
        let good = encode_site_file(SiteId(42));
        assert_eq!(decode_site_file(&good).unwrap(), SiteId(42));
        assert!(matches!(
            decode_site_file(&good[..10]),
            Err(SiteFileError::Incomplete { found_bytes: 10 })
        ));
        let mut bad = good;
        bad[0] = b'X';
        assert!(matches!(
            decode_site_file(&bad),
            Err(SiteFileError::BadMagic { .. })
        ));
        let mut bad = good;
        bad[4] = 9;
        assert!(matches!(
            decode_site_file(&bad),
            Err(SiteFileError::UnsupportedVersion { found: 9 })
        ));
        let mut bad = good;
        bad[10] ^= 1;
        assert!(matches!(
            decode_site_file(&bad),
            Err(SiteFileError::Checksum { .. })
        ));
        let mut long = good.to_vec();
        long.push(0);
        assert!(matches!(
            decode_site_file(&long),
            Err(SiteFileError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn a_corrupt_file_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SITE_FILE_NAME), b"garbage!").unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        assert!(SiteId::load_or_create(dir.path(), &mut rng).is_err());
    }

    #[test]
    fn site_id_text_round_trip() {
        let site = SiteId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(site.to_string().parse::<SiteId>().unwrap(), site);
    }
}
