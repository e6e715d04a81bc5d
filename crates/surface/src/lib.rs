//! Shared-memory buffers for milbridge: the Linux stand-in for the IOSurfaces that Apple's ANE
//! bridge evaluates kernels over.
//!
//! # What this crate owns
//!
//! - [`SharedBuffer`]: a fixed-size, zero-filled byte buffer backed by a `memfd_create` file and
//!   mapped `MAP_SHARED`, so another process can map the same memory from its file descriptor.
//!   The safe API is copy-in / copy-out ([`SharedBuffer::write_f16`],
//!   [`SharedBuffer::read_f32`], [`SharedBuffer::copy_to`], ...), with bounds checks that return
//!   [`Error::OutOfBounds`] instead of panicking. A readers-writer lock
//!   ([`SharedBuffer::lock_read`], [`SharedBuffer::lock_write`]) plays the part of
//!   `IOSurfaceLock`, and [`SharedBuffer::generation`] tells a consumer that a safe write happened
//!   (for example that a weight changed and must be repacked).
//! - [`FileMap`]: a read-only map of a whole file (token shards, weight blob files).
//!
//! Nothing else: no kernels, no MIL, no memory-locking policy. This is a leaf crate.
//!
// `no_run`: the example is compiled, not linked, so it also builds under the ASan command of
// style.md (f), which sets RUSTFLAGS but not RUSTDOCFLAGS. tests/buffer.rs runs the same calls.
//! ```no_run
//! # #[cfg(target_os = "linux")] {
//! use half::f16;
//! use milbridge_surface::SharedBuffer;
//!
//! let input = SharedBuffer::new(4 * size_of::<f16>())?;
//! input.write_f16(0, &[f16::ONE, f16::from_f32(2.0)])?;
//! assert_eq!(input.generation(), 1); // a consumer caching derived data can see the change
//!
//! let output = SharedBuffer::new(input.len())?;
//! input.copy_to(&output)?;
//! let mut back = [f16::ZERO; 2];
//! output.read_f16(0, &mut back)?;
//! assert_eq!(back[1].to_f32(), 2.0);
//!
//! // Past the end is an error, never a panic.
//! assert!(output.write_f16(3, &[f16::ONE, f16::ONE]).is_err());
//! # }
//! # Ok::<(), milbridge_surface::Error>(())
//! ```
//!
//! # Alignment guarantee
//!
//! The base address of every [`SharedBuffer`] is page-aligned, hence aligned to at least
//! [`ALIGN`] (64) bytes; creation asserts it. Element offsets in the typed functions count
//! elements from that base, so an element at offset `i` is naturally aligned for its type.
//!
//! # Cross-process contract
//!
//! The memory of a [`SharedBuffer`] can be written by any process that holds its file descriptor
//! ([`SharedBuffer::fd`], [`SharedBuffer::try_clone_fd`],
//! [`SharedBuffer::try_clone_fd_inheritable`]), which maps it with [`SharedBuffer::from_fd`] or
//! [`SharedBuffer::open`] (for example through `/proc/<pid>/fd/<n>`). Because of that:
//!
//! - The crate never hands out a `&[T]` or `&mut [T]` into a shared buffer. Rust's aliasing
//!   rules cannot be upheld against another process, so all safe access copies through raw
//!   pointers while the buffer's lock is held.
//! - The lock and the generation counter belong to one [`SharedBuffer`] handle in one process.
//!   They order the accesses made through that handle; they do not reach other processes, nor
//!   other handles mapping the same file. Processes sharing a buffer must coordinate on their own
//!   (a pipe, a socket, a child's exit) so that no process writes while another reads or writes
//!   the same bytes. Under that contract every copy sees whole, consistent data.
//! - [`SharedBuffer::as_ptr`] and the guards' pointers are for the engine's inner unsafe layer.
//!   Their contract: no writer (in this process or another) races an evaluation that reads or
//!   writes through them, and no pointer is used after the buffer is dropped.
//!
//! # Platforms
//!
//! The OS code lives in one module chosen by `cfg`: Linux gets the real implementation, every
//! other platform a stub whose constructors return [`Error::Unsupported`].

mod buffer;
mod element;
mod error;
mod filemap;

#[cfg_attr(target_os = "linux", path = "os/linux.rs")]
#[cfg_attr(not(target_os = "linux"), path = "os/stub.rs")]
mod os;

pub use buffer::{ReadGuard, SharedBuffer, WriteGuard};
pub use element::Element;
pub use error::{Error, Result};
pub use filemap::FileMap;

/// The alignment, in bytes, that the base address of every [`SharedBuffer`] has at least.
pub const ALIGN: usize = 64;
