//! Linux implementation: `memfd_create` + `mmap(MAP_SHARED)` buffers, read-only file maps, and
//! the raw copies into and out of mapped memory.
//!
//! This is the crate's only unsafe room. Every function here is safe to call: each checks what
//! its unsafe blocks rely on (bounds with `assert!`, in-process exclusion with the mapping's
//! `RwLock`), so soundness does not depend on the caller in `buffer.rs` validating first (it
//! does, to return errors instead of panicking).

#![allow(
    unsafe_code,
    reason = "the OS room: memfd_create, mmap/munmap, fcntl and raw copies into mapped memory"
)]

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::ptr::{self, NonNull};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};

use crate::ALIGN;
use crate::element::Element;
use crate::error::{Error, Result, last_os_error};

/// Name shown in `/proc/<pid>/fd` (as `/memfd:milbridge-surface`); it has no other meaning.
const MEMFD_NAME: &CStr = c"milbridge-surface";

/// A live `MAP_SHARED` read-write mapping of `len` bytes of `fd`, plus the lock that orders
/// this process's accesses to it.
///
/// Invariants: `ptr..ptr + len` is mapped readable and writable for the whole life of the value
/// (it is unmapped only in `Drop`); `len > 0`; `ptr` is aligned to [`ALIGN`]. The memory is never
/// lent out as a Rust reference: it is touched only through raw pointers, by the copy functions
/// below while the matching `lock` guard is held, or by callers of `as_ptr` under their contract.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
    lock: RwLock<()>,
}

// SAFETY: `Mapping` owns its mapping and descriptor outright; the raw pointer is the only thing
// that keeps the auto traits away. Moving it to another thread moves nothing thread-bound (mmap
// memory and file descriptors are process-wide). Sharing `&Mapping` between threads is sound
// because every access to the memory made by this module takes `lock` first (shared for copies
// out, exclusive for copies in), so safe code in two threads can never race; raw access through
// `as_ptr` carries its own documented contract.
unsafe impl Send for Mapping {}
// SAFETY: see the `Send` impl just above: all memory accesses from safe code go through `lock`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Creates an anonymous memfd of `len` bytes (zero-filled by the kernel) and maps it.
    pub(crate) fn create(len: usize) -> Result<Mapping> {
        if len == 0 {
            return Err(Error::ZeroSize);
        }
        // SAFETY: `MEMFD_NAME` is a NUL-terminated string with static lifetime; memfd_create only
        // reads it during the call. The flags are valid constants.
        let raw = unsafe { libc::memfd_create(MEMFD_NAME.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(last_os_error("memfd_create"));
        }
        // SAFETY: memfd_create succeeded, so `raw` is a fresh descriptor that nothing else in
        // this process owns or will close.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let file = File::from(fd);
        // `usize` always fits in `u64` on the targets Linux supports.
        file.set_len(len as u64).map_err(|source| Error::Os {
            op: "ftruncate",
            source,
        })?;
        Self::map(file.into(), len)
    }

    /// Maps the first `len` bytes of a file another process (or this one) shared.
    pub(crate) fn from_fd(fd: OwnedFd, len: usize) -> Result<Mapping> {
        if len == 0 {
            return Err(Error::ZeroSize);
        }
        let file = File::from(fd);
        let file_size = file
            .metadata()
            .map_err(|source| Error::Os {
                op: "fstat",
                source,
            })?
            .len();
        if file_size < len as u64 {
            return Err(Error::FileTooSmall { file_size, len });
        }
        Self::map(file.into(), len)
    }

    /// Maps `len` (> 0) bytes of `fd` read-write and shared.
    fn map(fd: OwnedFd, len: usize) -> Result<Mapping> {
        debug_assert!(len > 0, "Mapping::map called with len 0");
        // SAFETY: a null address hint without MAP_FIXED lets the kernel pick a free range, so no
        // existing mapping is replaced. `len` is non-zero (both callers reject 0), `fd` is a live
        // descriptor for the duration of the call, offset 0 is page-aligned, and the result is
        // checked against MAP_FAILED before use.
        let addr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(last_os_error("mmap"));
        }
        let ptr = NonNull::new(addr.cast::<u8>())
            .expect("mmap without MAP_FIXED never returns address 0");
        let mapping = Mapping {
            ptr,
            len,
            fd,
            lock: RwLock::new(()),
        };
        // Checked after `mapping` exists, so a failure still unmaps in `Drop`.
        assert!(
            mapping.ptr.as_ptr().addr().is_multiple_of(ALIGN),
            "mmap returned a base address not aligned to {ALIGN} bytes"
        );
        Ok(mapping)
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Base address of the mapping.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The memfd (or shared file) behind the mapping.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// A duplicate of the descriptor *without* `FD_CLOEXEC`, so an `exec`ed child inherits it.
    pub(crate) fn dup_inheritable(&self) -> Result<OwnedFd> {
        // SAFETY: F_DUPFD with a minimum of 0 reads the live descriptor `self.fd` (owned by
        // `self` for the whole call) and allocates a new one; it touches no memory. F_DUPFD,
        // unlike F_DUPFD_CLOEXEC, leaves the new descriptor's close-on-exec flag clear.
        let raw = unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_DUPFD, 0) };
        if raw < 0 {
            return Err(last_os_error("fcntl(F_DUPFD)"));
        }
        // SAFETY: fcntl succeeded, so `raw` is a fresh descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    }

    /// Takes the lock shared. Poisoning is ignored: the lock guards `()`, and a panic in a
    /// holder cannot leave the bytes in a state that is unsafe to read.
    pub(crate) fn read(&self) -> MapRead<'_> {
        MapRead {
            map: self,
            _guard: self.lock.read().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Takes the lock shared if no writer holds it.
    pub(crate) fn try_read(&self) -> Option<MapRead<'_>> {
        let guard = match self.lock.try_read() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(MapRead {
            map: self,
            _guard: guard,
        })
    }

    /// Takes the lock exclusively (poisoning ignored, as in [`Mapping::read`]).
    pub(crate) fn write(&self) -> MapWrite<'_> {
        MapWrite {
            map: self,
            _guard: self.lock.write().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Takes the lock exclusively if nobody holds it.
    pub(crate) fn try_write(&self) -> Option<MapWrite<'_>> {
        let guard = match self.lock.try_write() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(MapWrite {
            map: self,
            _guard: guard,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the range our `mmap` returned in `Mapping::map`, and
        // this is the only place that unmaps it, once. Every guard borrows `self`, so none is
        // alive here; raw pointers from `as_ptr` must not be used after drop (their contract).
        let rc = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        debug_assert_eq!(rc, 0, "munmap of our own mapping failed");
        // `self.fd` closes itself when the fields are dropped.
    }
}

/// Panics unless `offset + n_bytes <= len` (callers return `OutOfBounds` before getting here).
fn assert_in_bounds(offset: usize, n_bytes: usize, len: usize) {
    assert!(
        offset <= len && n_bytes <= len - offset,
        "copy of {n_bytes} bytes at offset {offset} is outside the {len}-byte mapping \
         (the caller must check bounds first)"
    );
}

/// Copies bytes of the mapping at `offset` into `dst`.
fn copy_out<T: Element>(map: &Mapping, offset: usize, dst: &mut [T]) {
    let n_bytes = size_of_val(dst);
    assert_in_bounds(offset, n_bytes, map.len);
    // SAFETY: `offset + n_bytes <= map.len` was asserted just above, so the source range lies in
    // the live mapping (it stays mapped while `map` is borrowed); mapped memory is initialized.
    // The destination is the whole of `dst`, `n_bytes` long and writable through `&mut`. The
    // bytes may be any values: `T: Element` has no padding and no invalid bit patterns. The
    // caller holds the mapping's lock (shared or exclusive), so no copy-in in this process races
    // this read. `ptr::copy` tolerates overlap, so nothing is assumed about where `dst` lives.
    unsafe {
        ptr::copy(
            map.ptr.as_ptr().add(offset),
            dst.as_mut_ptr().cast::<u8>(),
            n_bytes,
        );
    }
}

/// The mapping's lock held shared: copies out are allowed.
pub(crate) struct MapRead<'a> {
    map: &'a Mapping,
    _guard: RwLockReadGuard<'a, ()>,
}

impl MapRead<'_> {
    /// Base address of the mapping.
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.map.ptr.as_ptr()
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.map.len
    }

    /// Copies `dst.len()` elements from byte `offset`. Panics if out of bounds.
    pub(crate) fn copy_out<T: Element>(&self, offset: usize, dst: &mut [T]) {
        copy_out(self.map, offset, dst);
    }
}

/// The mapping's lock held exclusively: copies in and out are allowed.
pub(crate) struct MapWrite<'a> {
    map: &'a Mapping,
    _guard: RwLockWriteGuard<'a, ()>,
}

impl MapWrite<'_> {
    /// Base address of the mapping.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.map.ptr.as_ptr()
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.map.len
    }

    /// Copies `dst.len()` elements from byte `offset`. Panics if out of bounds.
    pub(crate) fn copy_out<T: Element>(&self, offset: usize, dst: &mut [T]) {
        copy_out(self.map, offset, dst);
    }

    /// Copies `src` into the mapping at byte `offset`. Panics if out of bounds.
    pub(crate) fn copy_in<T: Element>(&mut self, offset: usize, src: &[T]) {
        let n_bytes = size_of_val(src);
        assert_in_bounds(offset, n_bytes, self.map.len);
        // SAFETY: `offset + n_bytes <= len` was asserted just above, so the destination range
        // lies in the live, writable mapping. The source is the whole of `src`, `n_bytes` long
        // and readable; `T: Element` has no padding, so every source byte is initialized. This
        // guard holds the lock exclusively, so no other access in this process races the write.
        // `ptr::copy` tolerates overlap.
        unsafe {
            ptr::copy(
                src.as_ptr().cast::<u8>(),
                self.map.ptr.as_ptr().add(offset),
                n_bytes,
            );
        }
    }

    /// Sets every byte of the mapping to zero.
    pub(crate) fn fill_zero(&mut self) {
        // SAFETY: the whole range `ptr..ptr + len` is the live, writable mapping, and this guard
        // holds the lock exclusively, so no other access in this process races the write.
        unsafe { ptr::write_bytes(self.map.ptr.as_ptr(), 0, self.map.len) };
    }

    /// Copies all of `src`'s mapping over this one. Panics unless the lengths are equal.
    pub(crate) fn copy_from(&mut self, src: &MapRead<'_>) {
        assert_eq!(
            src.map.len, self.map.len,
            "copy_from between mappings of different lengths (the caller must check sizes)"
        );
        // SAFETY: both ranges are whole live mappings of `len` bytes (lengths asserted equal
        // above). `src`'s lock is held shared and ours exclusively, so they are distinct
        // `Mapping`s (one `RwLock` cannot be held both ways) and no copy in this process races.
        // If both map the same file the ranges alias physically; `ptr::copy` then rewrites each
        // byte with its own value.
        unsafe { ptr::copy(src.map.ptr.as_ptr(), self.map.ptr.as_ptr(), self.map.len) };
    }
}

/// A read-only private mapping of a whole file; `None` for an empty file (nothing is mapped).
///
/// Invariant: when `ptr` is `Some`, `ptr..ptr + len` is mapped readable until `Drop`.
pub(crate) struct FileMapping {
    ptr: Option<NonNull<u8>>,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by the value; nothing in it is thread-bound. Shared
// references hand out only `&[u8]` (see `bytes`), which is `Sync` itself.
unsafe impl Send for FileMapping {}
// SAFETY: see the `Send` impl just above.
unsafe impl Sync for FileMapping {}

impl FileMapping {
    /// Opens `path` read-only and maps the whole file.
    pub(crate) fn open(path: &Path) -> Result<FileMapping> {
        let file_error = |op, source| Error::File {
            op,
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(|source| file_error("open", source))?;
        let metadata = file
            .metadata()
            .map_err(|source| file_error("fstat", source))?;
        if !metadata.is_file() {
            // A directory, device or pipe: its `st_size` says nothing about mappable bytes.
            let source =
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file");
            return Err(file_error("mmap", source));
        }
        let size = metadata.len();
        let len = usize::try_from(size).map_err(|_| Error::FileTooLarge { size })?;
        if len == 0 {
            return Ok(FileMapping { ptr: None, len: 0 });
        }
        // SAFETY: a null address hint without MAP_FIXED lets the kernel pick a free range; `len`
        // is non-zero (checked above); `file` is open for the whole call; offset 0 is
        // page-aligned; the result is checked against MAP_FAILED before use. PROT_READ with
        // MAP_PRIVATE: this mapping can never write the file.
        let addr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(file_error("mmap", std::io::Error::last_os_error()));
        }
        let ptr = NonNull::new(addr.cast::<u8>())
            .expect("mmap without MAP_FIXED never returns address 0");
        // The descriptor is closed when `file` drops; the mapping stays valid without it.
        Ok(FileMapping {
            ptr: Some(ptr),
            len,
        })
    }

    /// Length of the file (and mapping) in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The mapped bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self.ptr {
            None => &[],
            // SAFETY: `ptr..ptr + len` is a live read-only mapping owned by `self` (unmapped only
            // in `Drop`, which this borrow of `self` excludes), and mapped file memory is
            // initialized. `len <= isize::MAX` because the kernel mapped it. That the bytes do not
            // change while the slice is borrowed is `FileMap`'s documented contract: nobody writes
            // or truncates the file while it is mapped (memmap2's `Mmap::map` states the same).
            Some(ptr) => unsafe { std::slice::from_raw_parts(ptr.as_ptr(), self.len) },
        }
    }
}

impl Drop for FileMapping {
    fn drop(&mut self) {
        if let Some(ptr) = self.ptr {
            // SAFETY: `ptr`/`len` are exactly the range our `mmap` returned in `open`, unmapped
            // only here, once; every slice from `bytes` borrows `self`, so none is alive.
            let rc = unsafe { libc::munmap(ptr.as_ptr().cast(), self.len) };
            debug_assert_eq!(rc, 0, "munmap of our own file mapping failed");
        }
    }
}
