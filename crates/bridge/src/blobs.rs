//! Weight files from disk: a [`BlobSource`] that resolves `@model_path/...` against a root
//! directory (mil-spec 7.1 path resolution, step 2).
//!
//! Absolute paths, `..` components, and paths that resolve (through symlinks) outside the root
//! are refused (E155). Each file is read once per compile and kept in memory.

use milbridge_mil::facts::{BlobLoadError, BlobMap, BlobSource};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The prefix that denotes the model root in BLOBFILE paths.
pub const MODEL_PATH_PREFIX: &str = "@model_path/";

/// Resolves `@model_path/...` against a directory, reading each file once.
#[derive(Debug)]
pub struct ModelDir {
    root: PathBuf,
    overlay: BlobMap,
    loaded: Mutex<BTreeMap<String, Arc<[u8]>>>,
}

impl ModelDir {
    /// Files under `root`.
    pub fn new(root: impl Into<PathBuf>) -> ModelDir {
        ModelDir {
            root: root.into(),
            overlay: BlobMap::new(),
            loaded: Mutex::new(BTreeMap::new()),
        }
    }

    /// Files under `root`, with in-memory entries (keyed by the full path string as written)
    /// taking precedence over the disk, as the ANE descriptor's weights dictionary does.
    pub fn with_overlay(root: impl Into<PathBuf>, overlay: BlobMap) -> ModelDir {
        ModelDir {
            root: root.into(),
            overlay,
            loaded: Mutex::new(BTreeMap::new()),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file a BLOBFILE path denotes, after the escape checks.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, BlobLoadError> {
        let Some(relative) = path.strip_prefix(MODEL_PATH_PREFIX) else {
            return Err(if Path::new(path).is_absolute() {
                BlobLoadError::Escapes(path.to_string())
            } else {
                BlobLoadError::NotFound(path.to_string())
            });
        };
        let relative = Path::new(relative);
        let clean = relative
            .components()
            .all(|component| matches!(component, Component::Normal(_)));
        if !clean || relative.as_os_str().is_empty() {
            return Err(BlobLoadError::Escapes(path.to_string()));
        }
        let full = self.root.join(relative);
        // Symlinks may still point outside: compare canonical forms when the file exists.
        if let (Ok(canonical_root), Ok(canonical)) = (self.root.canonicalize(), full.canonicalize())
            && !canonical.starts_with(&canonical_root)
        {
            return Err(BlobLoadError::Escapes(path.to_string()));
        }
        Ok(full)
    }
}

impl BlobSource for ModelDir {
    fn load(&self, path: &str) -> Result<Arc<[u8]>, BlobLoadError> {
        if let Ok(bytes) = self.overlay.load(path) {
            return Ok(bytes);
        }
        let mut loaded = self
            .loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(bytes) = loaded.get(path) {
            return Ok(bytes.clone());
        }
        let full = self.resolve(path)?;
        let bytes: Arc<[u8]> = match std::fs::read(&full) {
            Ok(bytes) => Arc::from(bytes),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobLoadError::NotFound(path.to_string()));
            }
            Err(err) => {
                return Err(BlobLoadError::Io {
                    path: path.to_string(),
                    reason: err.to_string(),
                });
            }
        };
        loaded.insert(path.to_string(), bytes.clone());
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("milbridge-blobs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("weights")).expect("temp dir");
        dir
    }

    #[test]
    fn resolves_and_caches() {
        let dir = temp_dir("ok");
        std::fs::write(dir.join("weights/w.bin"), [1u8, 2, 3]).expect("write");
        let source = ModelDir::new(&dir);
        assert_eq!(
            &*source.load("@model_path/weights/w.bin").expect("load"),
            &[1, 2, 3]
        );
        std::fs::remove_file(dir.join("weights/w.bin")).expect("rm");
        // Read once per compile: the second load comes from memory.
        assert_eq!(
            &*source.load("@model_path/weights/w.bin").expect("cached"),
            &[1, 2, 3]
        );
        assert_eq!(
            source.load("@model_path/weights/missing.bin"),
            Err(BlobLoadError::NotFound(
                "@model_path/weights/missing.bin".into()
            ))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn refuses_escapes() {
        let dir = temp_dir("esc");
        let source = ModelDir::new(&dir);
        for bad in [
            "@model_path/../etc/passwd",
            "/etc/passwd",
            "@model_path//etc/passwd",
            "@model_path/",
        ] {
            assert!(
                matches!(source.load(bad), Err(BlobLoadError::Escapes(_))),
                "{bad} must be refused as an escape"
            );
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc", dir.join("weights/link")).expect("symlink");
            assert!(matches!(
                source.load("@model_path/weights/link/passwd"),
                Err(BlobLoadError::Escapes(_))
            ));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn overlay_wins() {
        let dir = temp_dir("ovl");
        let mut map = BlobMap::new();
        map.insert("@model_path/weights/w.bin", vec![9u8]);
        let source = ModelDir::with_overlay(&dir, map);
        assert_eq!(
            &*source.load("@model_path/weights/w.bin").expect("overlay"),
            &[9]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
