//! [`SharedBuffer`]: the safe, copy-in / copy-out face of a shared mapping, with its lock guards
//! and generation counter. No unsafe code here: validation happens here, raw access in `os`.

use std::fmt;
#[cfg(unix)]
use std::os::fd::{BorrowedFd, OwnedFd};
#[cfg(unix)]
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use half::f16;

use crate::element::Element;
use crate::error::{Error, Result, byte_range};
use crate::os;

/// Source of [`SharedBuffer::id`]; 0 is never handed out.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fixed-size byte buffer in shared memory (`memfd_create` + `mmap(MAP_SHARED)` on Linux), the
/// equivalent of an IOSurface.
///
/// - The size is fixed at creation and never 0; new buffers are zero-filled.
/// - The base address is page-aligned, so at least [`ALIGN`](crate::ALIGN)-byte aligned.
/// - The safe API copies in and out with bounds checks that return
///   [`Error::OutOfBounds`] rather than panicking; it never lends a `&[T]` into the memory, since
///   another process may write it (see the crate docs' cross-process contract).
/// - Each safe call takes the buffer's readers-writer lock for its duration; [`lock_read`] and
///   [`lock_write`] hold it longer, the way `IOSurfaceLock` does while the engine evaluates.
/// - `Drop` unmaps the memory and closes the descriptor; both are owned by the value, so they are
///   released exactly once.
///
/// `SharedBuffer` is `Send` and `Sync`. The raw parts that would otherwise prevent that live in
/// the OS layer, whose `unsafe impl`s carry the reasoning (in short: the buffer owns its mapping
/// outright, and every access from safe code goes through the lock).
///
/// **Re-entrancy.** The lock is not re-entrant. A thread holding a guard of this buffer must not
/// call another locking method of the same buffer (every method here except [`len`], [`id`],
/// [`generation`], [`fd`] and [`as_ptr`]): that deadlocks or panics. Use the guard's own copy
/// methods instead.
///
/// [`lock_read`]: SharedBuffer::lock_read
/// [`lock_write`]: SharedBuffer::lock_write
/// [`len`]: SharedBuffer::len
/// [`id`]: SharedBuffer::id
/// [`generation`]: SharedBuffer::generation
/// [`fd`]: SharedBuffer::fd
/// [`as_ptr`]: SharedBuffer::as_ptr
pub struct SharedBuffer {
    map: os::Mapping,
    id: u64,
    generation: AtomicU64,
}

impl SharedBuffer {
    /// Creates a zero-filled buffer of `len` bytes: an anonymous memfd (close-on-exec), sized
    /// with `ftruncate` and mapped shared.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroSize`] for `len == 0`; [`Error::Os`] when a system call fails (for example
    /// `ftruncate` for a size the system cannot hold, or `mmap` when address space runs out);
    /// [`Error::Unsupported`] off Linux.
    pub fn new(len: usize) -> Result<SharedBuffer> {
        Ok(Self::wrap(os::Mapping::create(len)?))
    }

    /// Maps the first `len` bytes of a shared file that another process (or another handle)
    /// created, such as a memfd received over a socket or inherited across `exec`. The
    /// descriptor must be open read-write. The new handle has its own lock and generation.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroSize`] for `len == 0`; [`Error::FileTooSmall`] when `fstat` reports fewer
    /// than `len` bytes; [`Error::Os`] when `fstat` or `mmap` fails (for example `EACCES` for a
    /// read-only descriptor); [`Error::Unsupported`] off Linux.
    #[cfg(unix)]
    pub fn from_fd(fd: OwnedFd, len: usize) -> Result<SharedBuffer> {
        Ok(Self::wrap(os::Mapping::from_fd(fd, len)?))
    }

    /// Opens an existing shared file read-write and maps its first `len` bytes, as
    /// [`SharedBuffer::from_fd`] does. Typical paths are `/proc/<pid>/fd/<n>` (another process's
    /// memfd, or `/proc/self/fd/<n>` for an inherited one) and files under `/dev/shm`.
    ///
    /// # Errors
    ///
    /// [`Error::File`] when the path cannot be opened; otherwise as [`SharedBuffer::from_fd`].
    #[cfg(unix)]
    pub fn open(path: impl AsRef<Path>, len: usize) -> Result<SharedBuffer> {
        let path = path.as_ref();
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Error::File {
                op: "open",
                path: path.to_owned(),
                source,
            })?;
        Self::from_fd(file.into(), len)
    }

    fn wrap(map: os::Mapping) -> SharedBuffer {
        SharedBuffer {
            map,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
        }
    }

    /// Size of the buffer in bytes (never 0).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Always `false`: a shared buffer has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The buffer's file descriptor, to share it (send it over a socket, or `dup` it). It is
    /// close-on-exec for buffers made by [`SharedBuffer::new`].
    #[cfg(unix)]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.map.fd()
    }

    /// A new close-on-exec descriptor for the same shared memory.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when `fcntl(F_DUPFD_CLOEXEC)` fails (descriptor limit reached).
    #[cfg(unix)]
    pub fn try_clone_fd(&self) -> Result<OwnedFd> {
        self.fd().try_clone_to_owned().map_err(|source| Error::Os {
            op: "fcntl(F_DUPFD_CLOEXEC)",
            source,
        })
    }

    /// A new descriptor for the same shared memory *without* close-on-exec, so that a child
    /// started with `exec` inherits it (under the same number). The child can map it with
    /// [`SharedBuffer::open`] on `/proc/self/fd/<n>`. Drop it once the child is spawned. Until
    /// then, any child that *another* thread of this process spawns inherits it too.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when `fcntl(F_DUPFD)` fails (descriptor limit reached).
    #[cfg(unix)]
    pub fn try_clone_fd_inheritable(&self) -> Result<OwnedFd> {
        self.map.dup_inheritable()
    }

    /// A number unique among the buffers this process has created or mapped (two handles that
    /// map the same memory have different ids).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A counter bumped each time a [`WriteGuard`] of this handle is released, which includes
    /// every successful safe write ([`write_bytes`](Self::write_bytes),
    /// [`write_f16`](Self::write_f16), [`copy_to`](Self::copy_to) into this buffer,
    /// [`fill_zero`](Self::fill_zero), ...); a write rejected with an error leaves it alone. A
    /// consumer that caches something derived from the contents (a packed weight panel)
    /// compares generations to know when to rebuild it. Writes through raw pointers
    /// ([`as_ptr`](Self::as_ptr)) or by other processes or other handles do not count.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Copies `src` into the buffer at byte `offset`.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] when `offset + src.len()` exceeds the size (including overflow).
    pub fn write_bytes(&self, offset: usize, src: &[u8]) -> Result<()> {
        self.write_slice(offset, src)
    }

    /// Copies bytes from byte `offset` into all of `dst`.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] when `offset + dst.len()` exceeds the size (including overflow).
    pub fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.read_slice(offset, dst)
    }

    /// Copies fp16 values into the buffer, starting at element `offset_elems` (byte
    /// `2 * offset_elems`).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] when the range exceeds the size (including overflow).
    pub fn write_f16(&self, offset_elems: usize, src: &[f16]) -> Result<()> {
        self.write_slice(offset_elems, src)
    }

    /// Copies fp16 values out of the buffer, starting at element `offset_elems`.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] when the range exceeds the size (including overflow).
    pub fn read_f16(&self, offset_elems: usize, dst: &mut [f16]) -> Result<()> {
        self.read_slice(offset_elems, dst)
    }

    /// Copies fp32 values into the buffer, starting at element `offset_elems` (byte
    /// `4 * offset_elems`).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] when the range exceeds the size (including overflow).
    pub fn write_f32(&self, offset_elems: usize, src: &[f32]) -> Result<()> {
        self.write_slice(offset_elems, src)
    }

    /// Copies fp32 values out of the buffer, starting at element `offset_elems`.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] when the range exceeds the size (including overflow).
    pub fn read_f32(&self, offset_elems: usize, dst: &mut [f32]) -> Result<()> {
        self.read_slice(offset_elems, dst)
    }

    /// Copies elements of any [`Element`] type into the buffer, starting at element
    /// `offset_elems` (byte `offset_elems * size_of::<T>()`), in native byte order.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] when the range exceeds the size (including overflow).
    pub fn write_slice<T: Element>(&self, offset_elems: usize, src: &[T]) -> Result<()> {
        // Checked before locking, so a rejected write neither waits nor bumps the generation.
        let offset = byte_range(offset_elems, src.len(), size_of::<T>(), self.len())?;
        self.lock_write().inner.copy_in(offset, src);
        Ok(())
    }

    /// Copies elements of any [`Element`] type out of the buffer, starting at element
    /// `offset_elems`, in native byte order.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] when the range exceeds the size (including overflow).
    pub fn read_slice<T: Element>(&self, offset_elems: usize, dst: &mut [T]) -> Result<()> {
        let offset = byte_range(offset_elems, dst.len(), size_of::<T>(), self.len())?;
        self.map.read().copy_out(offset, dst);
        Ok(())
    }

    /// Copies the whole buffer into `dst`, holding this buffer's lock shared and `dst`'s
    /// exclusively (taken in a fixed order, so concurrent opposite copies cannot deadlock).
    /// Copying a buffer to itself does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::SizeMismatch`] unless both buffers have the same size.
    pub fn copy_to(&self, dst: &SharedBuffer) -> Result<()> {
        if self.len() != dst.len() {
            return Err(Error::SizeMismatch {
                src: self.len(),
                dst: dst.len(),
            });
        }
        if std::ptr::eq(self, dst) {
            return Ok(());
        }
        // Lock in increasing id order: a copy a→b and a concurrent b→a then both start with the
        // lower id, so neither can hold one lock while waiting for the other.
        if self.id < dst.id {
            let src = self.map.read();
            dst.lock_write().inner.copy_from(&src);
        } else {
            let mut dst = dst.lock_write();
            dst.inner.copy_from(&self.map.read());
        }
        Ok(())
    }

    /// Sets every byte to zero.
    pub fn fill_zero(&self) {
        self.lock_write().fill_zero();
    }

    /// Takes the lock shared, blocking while a writer holds it (or waits for it). Any number of
    /// readers may hold it at once.
    pub fn lock_read(&self) -> ReadGuard<'_> {
        ReadGuard {
            inner: self.map.read(),
        }
    }

    /// Takes the lock shared if that is possible without blocking.
    pub fn try_lock_read(&self) -> Option<ReadGuard<'_>> {
        Some(ReadGuard {
            inner: self.map.try_read()?,
        })
    }

    /// Takes the lock exclusively, blocking while anyone else holds it. Releasing the guard
    /// bumps [`generation`](Self::generation).
    pub fn lock_write(&self) -> WriteGuard<'_> {
        WriteGuard {
            inner: self.map.write(),
            generation: &self.generation,
        }
    }

    /// Takes the lock exclusively if nobody holds it.
    pub fn try_lock_write(&self) -> Option<WriteGuard<'_>> {
        Some(WriteGuard {
            inner: self.map.try_write()?,
            generation: &self.generation,
        })
    }

    /// The base address (at least [`ALIGN`](crate::ALIGN)-aligned), for the engine's inner unsafe
    /// layer. Reading or writing through it is sound only while no writer races the access:
    /// hold a guard of this buffer for the duration (or otherwise guarantee, in this process and
    /// every other sharing the memory, that no write overlaps the evaluation), stay within
    /// [`len`](Self::len) bytes, never keep a `&`/`&mut` reference into the memory across a call
    /// that may write it, and don't use the pointer after the buffer is dropped. Writes through
    /// it do not bump [`generation`](Self::generation).
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }
}

impl fmt::Debug for SharedBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBuffer")
            .field("id", &self.id)
            .field("len", &self.len())
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

/// The buffer's lock held shared (from [`SharedBuffer::lock_read`]): no safe write through the
/// same handle can happen until it is dropped.
pub struct ReadGuard<'a> {
    inner: os::MapRead<'a>,
}

impl ReadGuard<'_> {
    /// The buffer's base address. Valid to read `len()` bytes while the guard lives, under the
    /// cross-process contract (no other process writes meanwhile).
    pub fn as_ptr(&self) -> *const u8 {
        self.inner.as_ptr()
    }

    /// Size of the buffer in bytes.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Always `false`: a shared buffer has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// As [`SharedBuffer::read_bytes`], under this guard.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] when the range exceeds the size (including overflow).
    pub fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.read_slice(offset, dst)
    }

    /// As [`SharedBuffer::read_slice`], under this guard.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] when the range exceeds the size (including overflow).
    pub fn read_slice<T: Element>(&self, offset_elems: usize, dst: &mut [T]) -> Result<()> {
        let offset = byte_range(offset_elems, dst.len(), size_of::<T>(), self.len())?;
        self.inner.copy_out(offset, dst);
        Ok(())
    }
}

impl fmt::Debug for ReadGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadGuard")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// The buffer's lock held exclusively (from [`SharedBuffer::lock_write`]). Dropping it bumps the
/// buffer's [`generation`](SharedBuffer::generation) (before the lock is released).
pub struct WriteGuard<'a> {
    inner: os::MapWrite<'a>,
    generation: &'a AtomicU64,
}

impl WriteGuard<'_> {
    /// The buffer's base address, for reading. See [`WriteGuard::as_mut_ptr`].
    pub fn as_ptr(&self) -> *const u8 {
        self.inner.as_ptr()
    }

    /// The buffer's base address. Valid to read and write `len()` bytes while the guard lives,
    /// under the cross-process contract (no other process touches the memory meanwhile).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.inner.as_ptr()
    }

    /// Size of the buffer in bytes.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Always `false`: a shared buffer has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// As [`SharedBuffer::write_bytes`], under this guard.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] when the range exceeds the size (including overflow).
    pub fn write_bytes(&mut self, offset: usize, src: &[u8]) -> Result<()> {
        self.write_slice(offset, src)
    }

    /// As [`SharedBuffer::write_slice`], under this guard.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] when the range exceeds the size (including overflow).
    pub fn write_slice<T: Element>(&mut self, offset_elems: usize, src: &[T]) -> Result<()> {
        let offset = byte_range(offset_elems, src.len(), size_of::<T>(), self.len())?;
        self.inner.copy_in(offset, src);
        Ok(())
    }

    /// As [`SharedBuffer::read_bytes`], under this guard.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] when the range exceeds the size (including overflow).
    pub fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.read_slice(offset, dst)
    }

    /// As [`SharedBuffer::read_slice`], under this guard.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] when the range exceeds the size (including overflow).
    pub fn read_slice<T: Element>(&self, offset_elems: usize, dst: &mut [T]) -> Result<()> {
        let offset = byte_range(offset_elems, dst.len(), size_of::<T>(), self.len())?;
        self.inner.copy_out(offset, dst);
        Ok(())
    }

    /// As [`SharedBuffer::fill_zero`], under this guard.
    pub fn fill_zero(&mut self) {
        self.inner.fill_zero();
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        // Runs before the fields drop, so the bump is visible to whoever takes the lock next.
        self.generation.fetch_add(1, Ordering::Release);
    }
}

impl fmt::Debug for WriteGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteGuard")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}
