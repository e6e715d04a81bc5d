//! The compile cache: serialised plans on disk, keyed by everything that decides the plan.
//!
//! # Key
//!
//! [`CacheKey`] is a blake3 hash over, each with a tag and a length prefix so no two inputs run
//! together: the MIL text, the path and bytes of every weight file the program names, the
//! engine version string, the ISA tier, the precision, the function name, and
//! [`KEY_SCHEMA`] (bumped whenever the compile pipeline's behaviour changes without a version
//! bump). Two compiles that could produce different plans never share a key.
//!
//! # Location
//!
//! [`CacheConfig::from_env`]: `ANE_BRIDGE_CACHE=0` disables the cache; otherwise
//! `ANE_BRIDGE_CACHE_DIR` names the directory; otherwise `~/.cache/ane_bridge` (no cache when
//! `HOME` is unset). The environment is read on every call, so a C program's `setenv` between
//! compiles takes effect.
//!
//! # Entry format (`<64 hex digits of the key>.plan`)
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `MILBPLAN` |
//! | 8..12 | format version ([`FORMAT_VERSION`], u32 little-endian) |
//! | 12..16 | zero |
//! | 16..48 | the key (must equal the key the file is named after and was looked up with) |
//! | 48..56 | payload length (u64 little-endian) |
//! | 56..88 | blake3 of the payload |
//! | 88.. | payload (the engine's serialised plan) |
//!
//! # Integrity
//!
//! Writes are atomic: a temporary file in the same directory is written, `fsync`ed and renamed
//! over the entry, then the directory is synced. A reader checks every header field, the
//! length and the checksum; an entry that fails any check (corrupt, truncated, written by
//! another format version, or a foreign file under the entry's name) is deleted and reported as
//! [`Lookup::Corrupt`], and the caller recompiles. Nothing read from the cache is trusted before
//! the checksum matches, and the engine checks its own plan format again on top.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The entry file format version. Appending fields means a new version.
pub const FORMAT_VERSION: u32 = 1;

/// Bumped when the meaning of a key changes (for example a new compile option that the key
/// must cover) or the compile pipeline's output changes for the same key. Part of every key.
/// 2: the fusion pass keeps fp16 table activations unfused.
pub const KEY_SCHEMA: u32 = 2;

/// Magic bytes at the start of every entry.
pub const MAGIC: [u8; 8] = *b"MILBPLAN";

/// Size of the fixed header before the payload.
pub const HEADER_LEN: usize = 88;

/// File name extension of entries.
const ENTRY_EXT: &str = "plan";
/// File name extension of temporary files (left behind only by a crash mid-write).
const TEMP_EXT: &str = "tmp";

/// Environment variable naming the cache directory.
pub const ENV_DIR: &str = "ANE_BRIDGE_CACHE_DIR";
/// Environment variable that disables the cache when set to `0`.
pub const ENV_ENABLE: &str = "ANE_BRIDGE_CACHE";

/// A 32-byte blake3 digest identifying one compile.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// The key as 64 lowercase hex digits (the entry's file stem).
    pub fn to_hex(&self) -> String {
        use fmt::Write as _;
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            let _ = write!(out, "{byte:02x}");
        }
        out
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.to_hex())
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Builds a [`CacheKey`] from the parts of a compile, in a fixed order.
#[derive(Debug)]
pub struct KeyBuilder {
    hasher: blake3::Hasher,
}

impl KeyBuilder {
    /// Starts a key for the given engine version, ISA tier name, precision name and function
    /// (`None` = the program's entry function).
    pub fn new(
        engine_version: &str,
        isa: &str,
        precision: &str,
        function: Option<&str>,
    ) -> KeyBuilder {
        let mut builder = KeyBuilder {
            hasher: blake3::Hasher::new(),
        };
        builder.field(b"domain", b"milbridge compile cache");
        builder.field(b"schema", &KEY_SCHEMA.to_le_bytes());
        builder.field(b"engine", engine_version.as_bytes());
        builder.field(b"isa", isa.as_bytes());
        builder.field(b"precision", precision.as_bytes());
        match function {
            Some(name) => builder.field(b"function", name.as_bytes()),
            None => builder.field(b"entry", b""),
        }
        builder
    }

    /// Adds the MIL text.
    pub fn mil(mut self, text: &str) -> KeyBuilder {
        self.field(b"mil", text.as_bytes());
        self
    }

    /// Adds one weight file. Call it in a deterministic order (sorted by path).
    pub fn weight(mut self, path: &str, bytes: &[u8]) -> KeyBuilder {
        self.field(b"weight-path", path.as_bytes());
        self.field(b"weight-bytes", bytes);
        self
    }

    /// Adds a free-form tagged field (for callers with extra options that decide the plan).
    pub fn extra(mut self, tag: &str, bytes: &[u8]) -> KeyBuilder {
        self.field(b"extra-tag", tag.as_bytes());
        self.field(b"extra", bytes);
        self
    }

    /// The key.
    pub fn finish(self) -> CacheKey {
        CacheKey(*self.hasher.finalize().as_bytes())
    }

    fn field(&mut self, tag: &[u8], bytes: &[u8]) {
        self.hasher.update(&(tag.len() as u64).to_le_bytes());
        self.hasher.update(tag);
        self.hasher.update(&(bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }
}

/// Where (and whether) the cache lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheConfig {
    /// No caching: every compile is cold.
    Disabled,
    /// Entries live in this directory (created on first store).
    Dir(PathBuf),
}

impl CacheConfig {
    /// Reads `ANE_BRIDGE_CACHE`, `ANE_BRIDGE_CACHE_DIR` and `HOME` (see the module docs).
    pub fn from_env() -> CacheConfig {
        let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
        CacheConfig::from_vars(var(ENV_ENABLE), var(ENV_DIR), var("HOME"))
    }

    /// [`CacheConfig::from_env`] over explicit values (each `None` when unset or empty).
    pub fn from_vars(
        enable: Option<std::ffi::OsString>,
        dir: Option<std::ffi::OsString>,
        home: Option<std::ffi::OsString>,
    ) -> CacheConfig {
        if enable.as_deref().is_some_and(|value| value == "0") {
            return CacheConfig::Disabled;
        }
        if let Some(dir) = dir {
            return CacheConfig::Dir(PathBuf::from(dir));
        }
        match home {
            Some(home) => CacheConfig::Dir(PathBuf::from(home).join(".cache").join("ane_bridge")),
            None => CacheConfig::Disabled,
        }
    }

    /// The directory, when enabled.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            CacheConfig::Disabled => None,
            CacheConfig::Dir(dir) => Some(dir),
        }
    }
}

/// The outcome of [`load`].
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A verified payload.
    Hit(Vec<u8>),
    /// No entry for the key.
    Miss,
    /// There was an entry, it failed a check, and it has been deleted. The reason says which.
    Corrupt(String),
}

/// Process-wide cache statistics (counted by [`load`]).
static HITS: AtomicU64 = AtomicU64::new(0);
static MISSES: AtomicU64 = AtomicU64::new(0);
static CORRUPT: AtomicU64 = AtomicU64::new(0);

/// Hits, misses and corrupt entries seen by [`load`] in this process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LookupCounts {
    /// Verified entries returned.
    pub hits: u64,
    /// Keys with no entry.
    pub misses: u64,
    /// Entries rejected (and deleted).
    pub corrupt: u64,
}

/// The process-wide lookup counters.
pub fn lookup_counts() -> LookupCounts {
    LookupCounts {
        hits: HITS.load(Ordering::Relaxed),
        misses: MISSES.load(Ordering::Relaxed),
        corrupt: CORRUPT.load(Ordering::Relaxed),
    }
}

/// The entry path for `key` in `dir`.
pub fn entry_path(dir: &Path, key: &CacheKey) -> PathBuf {
    dir.join(format!("{}.{ENTRY_EXT}", key.to_hex()))
}

/// Encodes an entry: header plus payload.
pub fn encode(key: &CacheKey, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&key.0);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(blake3::hash(payload).as_bytes());
    out.extend_from_slice(payload);
    debug_assert_eq!(out.len(), HEADER_LEN + payload.len(), "cache header layout");
    out
}

/// Checks an entry read from disk against the key it was looked up with and returns the
/// payload, or a lowercase reason for rejecting it.
pub fn decode(key: &CacheKey, bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "truncated header: {} bytes, need {HEADER_LEN}",
            bytes.len()
        ));
    }
    let (header, payload) = bytes.split_at(HEADER_LEN);
    if header[0..8] != MAGIC {
        return Err(format!("bad magic {:02x?}", &header[0..8]));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4-byte slice"));
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}, this build reads {FORMAT_VERSION}"
        ));
    }
    if header[16..48] != key.0 {
        return Err("entry belongs to another key".to_string());
    }
    let len = u64::from_le_bytes(header[48..56].try_into().expect("8-byte slice"));
    if len != payload.len() as u64 {
        return Err(format!(
            "payload is {} bytes, header says {len}",
            payload.len()
        ));
    }
    if header[56..88] != *blake3::hash(payload).as_bytes() {
        return Err("payload checksum mismatch".to_string());
    }
    Ok(payload.to_vec())
}

/// Looks `key` up in `dir`. A missing directory or file is a miss; an unreadable or invalid
/// entry is deleted and reported as [`Lookup::Corrupt`].
pub fn load(dir: &Path, key: &CacheKey) -> Lookup {
    let path = entry_path(dir, key);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            MISSES.fetch_add(1, Ordering::Relaxed);
            return Lookup::Miss;
        }
        Err(err) => return reject(&path, format!("cannot read entry: {err}")),
    };
    match decode(key, &bytes) {
        Ok(payload) => {
            HITS.fetch_add(1, Ordering::Relaxed);
            Lookup::Hit(payload)
        }
        Err(reason) => reject(&path, reason),
    }
}

/// Deletes a rejected entry (best effort: a read-only cache simply stays rejected).
pub fn reject(path: &Path, reason: String) -> Lookup {
    CORRUPT.fetch_add(1, Ordering::Relaxed);
    let _ = fs::remove_file(path);
    Lookup::Corrupt(reason)
}

/// Stores `payload` under `key` in `dir` (created if missing), atomically.
///
/// # Errors
///
/// The I/O error and the operation that failed; the entry is then absent, never partial.
pub fn store(dir: &Path, key: &CacheKey, payload: &[u8]) -> Result<(), (&'static str, io::Error)> {
    fs::create_dir_all(dir).map_err(|err| ("create cache directory", err))?;
    let final_path = entry_path(dir, key);
    let temp_path = temp_path(dir, key);
    let write = || -> Result<(), (&'static str, io::Error)> {
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .open(&temp_path)
            .map_err(|err| ("create temporary entry", err))?;
        file.write_all(&encode(key, payload))
            .map_err(|err| ("write temporary entry", err))?;
        file.sync_all()
            .map_err(|err| ("fsync temporary entry", err))?;
        drop(file);
        fs::rename(&temp_path, &final_path).map_err(|err| ("rename entry into place", err))?;
        // Persist the rename itself; a failure here leaves a valid entry, so it is ignored.
        if let Ok(dir_file) = File::open(dir) {
            let _ = dir_file.sync_all();
        }
        Ok(())
    };
    let result = write();
    if result.is_err() {
        let _ = fs::remove_file(&temp_path);
    }
    result
}

/// A temporary file name unique to this process, thread and moment.
fn temp_path(dir: &Path, key: &CacheKey) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    dir.join(format!(
        ".{}.{}.{seq}.{nanos}.{TEMP_EXT}",
        key.to_hex(),
        std::process::id()
    ))
}

/// What a cache directory holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Entry files (`*.plan`).
    pub entries: u64,
    /// Their total size in bytes.
    pub bytes: u64,
}

fn is_entry(path: &Path) -> bool {
    let stem_ok = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .is_some_and(|stem| stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit()));
    stem_ok && path.extension().is_some_and(|ext| ext == ENTRY_EXT)
}

fn is_temp(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("");
    name.starts_with('.') && path.extension().is_some_and(|ext| ext == TEMP_EXT)
}

/// Counts the entries in `dir` and their size. A missing directory holds nothing.
///
/// # Errors
///
/// Reading the directory failed for another reason than its absence.
pub fn stats(dir: &Path) -> io::Result<CacheStats> {
    let mut stats = CacheStats::default();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(stats),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if is_entry(&path) {
            let meta = entry.metadata()?;
            if meta.is_file() {
                stats.entries += 1;
                stats.bytes += meta.len();
            }
        }
    }
    Ok(stats)
}

/// Deletes every entry (and any temporary file left by a crash) in `dir`, and returns what the
/// entries were. Other files are left alone. A missing directory is already clear.
///
/// # Errors
///
/// Reading the directory or deleting a file failed.
pub fn clear(dir: &Path) -> io::Result<CacheStats> {
    let mut removed = CacheStats::default();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if is_entry(&path) {
            let len = entry.metadata().map_or(0, |meta| meta.len());
            match fs::remove_file(&path) {
                Ok(()) => {
                    removed.entries += 1;
                    removed.bytes += len;
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        } else if is_temp(&path) {
            let _ = fs::remove_file(&path);
        }
    }
    Ok(removed)
}

/// The cache directory the environment selects (see [`CacheConfig::from_env`]), for tools such
/// as `milbridge cache stats`.
pub fn default_dir() -> Option<PathBuf> {
    CacheConfig::from_env().dir().map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("milbridge-cache-test-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn key(text: &str) -> CacheKey {
        KeyBuilder::new("0.1.0", "avx2", "exact", None)
            .mil(text)
            .finish()
    }

    #[test]
    fn keys_separate_every_part() {
        let base = || KeyBuilder::new("0.1.0", "avx2", "exact", None);
        let k = base().mil("abc").weight("w", b"1").finish();
        assert_eq!(k, base().mil("abc").weight("w", b"1").finish());
        assert_ne!(k, base().mil("abc").weight("w", b"2").finish());
        assert_ne!(k, base().mil("abc").weight("v", b"1").finish());
        assert_ne!(k, base().mil("abd").weight("w", b"1").finish());
        // Length prefixes: moving a byte between fields changes the key.
        assert_ne!(
            base().mil("ab").weight("cw", b"1").finish(),
            base().mil("abc").weight("w", b"1").finish()
        );
        assert_ne!(
            k,
            KeyBuilder::new("0.1.1", "avx2", "exact", None)
                .mil("abc")
                .weight("w", b"1")
                .finish()
        );
        assert_ne!(
            k,
            KeyBuilder::new("0.1.0", "avx512", "exact", None)
                .mil("abc")
                .weight("w", b"1")
                .finish()
        );
        assert_ne!(
            k,
            KeyBuilder::new("0.1.0", "avx2", "fast", None)
                .mil("abc")
                .weight("w", b"1")
                .finish()
        );
        assert_ne!(
            k,
            KeyBuilder::new("0.1.0", "avx2", "exact", Some("main"))
                .mil("abc")
                .weight("w", b"1")
                .finish()
        );
        assert_eq!(k.to_hex().len(), 64);
    }

    #[test]
    fn store_then_load_round_trips() {
        let dir = temp_dir("rt");
        let k = key("program");
        assert_eq!(load(&dir, &k), Lookup::Miss);
        store(&dir, &k, b"payload bytes").expect("store");
        assert_eq!(load(&dir, &k), Lookup::Hit(b"payload bytes".to_vec()));
        // Overwriting is atomic and leaves no temporary files.
        store(&dir, &k, b"second").expect("store again");
        assert_eq!(load(&dir, &k), Lookup::Hit(b"second".to_vec()));
        let names: Vec<_> = fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "only the entry remains: {names:?}");
        let _ = fs::remove_dir_all(&dir);
    }

    fn assert_rejected(dir: &Path, k: &CacheKey, bytes: &[u8], reason_part: &str) {
        let path = entry_path(dir, k);
        fs::write(&path, bytes).expect("write entry");
        match load(dir, k) {
            Lookup::Corrupt(reason) => assert!(
                reason.contains(reason_part),
                "{reason:?} lacks {reason_part:?}"
            ),
            other => panic!("expected a corrupt entry ({reason_part}), got {other:?}"),
        }
        assert!(!path.exists(), "a rejected entry is deleted");
        assert_eq!(load(dir, k), Lookup::Miss);
    }

    #[test]
    fn corrupt_truncated_and_foreign_entries_are_rejected_and_deleted() {
        let dir = temp_dir("bad");
        fs::create_dir_all(&dir).expect("dir");
        let k = key("program");
        let good = encode(&k, b"0123456789abcdef");
        assert_eq!(decode(&k, &good), Ok(b"0123456789abcdef".to_vec()));

        let mut flipped = good.clone();
        *flipped.last_mut().expect("payload") ^= 0x01;
        assert_rejected(&dir, &k, &flipped, "checksum");

        assert_rejected(
            &dir,
            &k,
            &good[..good.len() - 3],
            "payload is 13 bytes, header says 16",
        );
        assert_rejected(&dir, &k, &good[..40], "truncated header: 40 bytes");
        assert_rejected(&dir, &k, b"", "truncated header: 0 bytes");

        let foreign = encode(&key("another program"), b"0123456789abcdef");
        assert_rejected(&dir, &k, &foreign, "another key");

        let mut magic = good.clone();
        magic[0] = b'X';
        assert_rejected(&dir, &k, &magic, "bad magic");

        let mut version = good.clone();
        version[8] = 99;
        assert_rejected(&dir, &k, &version, "format version 99");

        let before = lookup_counts().corrupt;
        assert_rejected(&dir, &k, &flipped, "checksum");
        assert!(lookup_counts().corrupt > before);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn stats_and_clear() {
        let dir = temp_dir("stats");
        assert_eq!(stats(&dir).expect("missing dir"), CacheStats::default());
        assert_eq!(clear(&dir).expect("missing dir"), CacheStats::default());
        store(&dir, &key("a"), &[0u8; 10]).expect("store a");
        store(&dir, &key("b"), &[0u8; 20]).expect("store b");
        fs::write(dir.join("unrelated.txt"), b"keep me").expect("other file");
        fs::write(dir.join(".deadbeef.1.2.3.tmp"), b"crash leftover").expect("temp file");
        let expected = CacheStats {
            entries: 2,
            bytes: (2 * HEADER_LEN + 30) as u64,
        };
        assert_eq!(stats(&dir).expect("stats"), expected);
        assert_eq!(clear(&dir).expect("clear"), expected);
        assert_eq!(
            stats(&dir).expect("stats after clear"),
            CacheStats::default()
        );
        assert!(
            dir.join("unrelated.txt").exists(),
            "clear leaves other files alone"
        );
        assert!(
            !dir.join(".deadbeef.1.2.3.tmp").exists(),
            "clear removes crash leftovers"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn config_from_vars() {
        let some = |text: &str| Some(std::ffi::OsString::from(text));
        assert_eq!(
            CacheConfig::from_vars(some("0"), some("/x"), some("/home/u")),
            CacheConfig::Disabled
        );
        assert_eq!(
            CacheConfig::from_vars(some("1"), some("/x"), some("/home/u")),
            CacheConfig::Dir("/x".into())
        );
        assert_eq!(
            CacheConfig::from_vars(None, None, some("/home/u")),
            CacheConfig::Dir("/home/u/.cache/ane_bridge".into())
        );
        assert_eq!(
            CacheConfig::from_vars(None, None, None),
            CacheConfig::Disabled
        );
    }

    #[test]
    fn store_into_unwritable_place_fails_cleanly() {
        let dir = temp_dir("ro");
        fs::create_dir_all(dir.parent().expect("parent")).expect("tmp");
        // A regular file where the directory should be.
        fs::write(&dir, b"not a directory").expect("file");
        let err = store(&dir, &key("a"), b"x").expect_err("cannot store under a file");
        assert_eq!(err.0, "create cache directory");
        let _ = fs::remove_file(&dir);
    }
}
