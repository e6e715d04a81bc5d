//! `FileMap` over real files in the temp directory.

#![cfg(target_os = "linux")]

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use milbridge_surface::{Error, FileMap};

/// A file in the temp directory, unique to this process and call, removed on drop.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn with_contents(contents: &[u8]) -> TempFile {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "milbridge-surface-filemap-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::write(&path, contents).unwrap();
        TempFile { path }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[test]
fn maps_a_file_and_reads_it_back() {
    let contents: Vec<u8> = (0..10_000u32)
        .map(|index| (index * 7 % 256) as u8)
        .collect();
    let file = TempFile::with_contents(&contents);
    let map = FileMap::open(&file.path).unwrap();
    assert_eq!(map.len(), contents.len());
    assert!(!map.is_empty());
    assert_eq!(map.bytes(), &contents[..]);
    assert_eq!(map.as_ref(), &contents[..]);
}

#[test]
fn the_map_outlives_the_path() {
    let file = TempFile::with_contents(b"token shard");
    let map = FileMap::open(&file.path).unwrap();
    drop(file); // unlinks the file; the mapping keeps the data
    assert_eq!(map.bytes(), b"token shard");
}

#[test]
fn a_one_byte_file_works() {
    let file = TempFile::with_contents(&[7]);
    let map = FileMap::open(&file.path).unwrap();
    assert_eq!(map.bytes(), &[7]);
}

#[test]
fn an_empty_file_maps_to_an_empty_slice() {
    let file = TempFile::with_contents(&[]);
    let map = FileMap::open(&file.path).unwrap();
    assert_eq!(map.len(), 0);
    assert!(map.is_empty());
    assert!(map.bytes().is_empty());
}

#[test]
fn a_missing_file_is_an_open_error_with_the_path() {
    let path = std::env::temp_dir().join("milbridge-surface-filemap-does-not-exist");
    let err = FileMap::open(&path).unwrap_err();
    match &err {
        Error::File {
            op: "open",
            path: err_path,
            source,
        } => {
            assert_eq!(err_path, &path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("milbridge-surface-filemap-does-not-exist")
    );
}

#[test]
fn a_directory_is_an_error_not_a_panic() {
    let err = FileMap::open(std::env::temp_dir()).unwrap_err();
    assert!(matches!(err, Error::File { .. }), "{err:?}");
}

#[test]
fn maps_can_be_shared_between_threads() {
    let contents = vec![3u8; 5000];
    let file = TempFile::with_contents(&contents);
    let map = FileMap::open(&file.path).unwrap();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                assert_eq!(
                    map.bytes().iter().map(|&b| u32::from(b)).sum::<u32>(),
                    15_000
                )
            });
        }
    });
}
