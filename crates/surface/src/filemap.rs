//! Read-only maps of whole files: token shards and weight blob files.

use std::fmt;
use std::path::Path;

use crate::error::Result;
use crate::os;

/// A read-only memory map of a whole file, opened once and read as a `&[u8]`.
///
/// # Contract
///
/// [`FileMap::bytes`] lends the file's pages as an ordinary shared slice, which Rust assumes
/// cannot change while it is borrowed. That holds only if **nobody writes to or truncates the
/// file while it is mapped**, in this process or any other: a write would change bytes behind a
/// `&[u8]`, and a truncation makes reading the lost pages raise `SIGBUS`. This is the reasoning
/// behind memmap2's `unsafe fn Mmap::map`; this crate keeps `open` safe for milbridge's own
/// files (token shards, weight blobs, cache entries), which are written once, renamed into place
/// atomically and never modified afterwards. Don't point it at files other programs may change.
///
/// An empty file maps nothing: [`FileMap::len`] is 0 and [`FileMap::bytes`] is empty.
pub struct FileMap {
    inner: os::FileMapping,
}

impl FileMap {
    /// Opens `path` read-only and maps the whole file.
    ///
    /// # Errors
    ///
    /// [`Error::File`](crate::Error::File) when the file cannot be opened (missing, no
    /// permission), stat'ed or mapped (a directory, a pipe);
    /// [`Error::FileTooLarge`](crate::Error::FileTooLarge) when it is larger than the address
    /// space; [`Error::Unsupported`](crate::Error::Unsupported) off Linux.
    pub fn open(path: impl AsRef<Path>) -> Result<FileMap> {
        Ok(FileMap {
            inner: os::FileMapping::open(path.as_ref())?,
        })
    }

    /// Length of the file in bytes, as it was when opened.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether the file was empty when opened.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file's contents (see the type's contract).
    pub fn bytes(&self) -> &[u8] {
        self.inner.bytes()
    }
}

impl AsRef<[u8]> for FileMap {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

impl fmt::Debug for FileMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileMap").field("len", &self.len()).finish()
    }
}
