//! The crate's error type: every variant is a failure of the world or of the caller's request,
//! never a bug of ours (those panic with the invariant's name).

use std::path::PathBuf;

/// What went wrong in a buffer or file-map operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A copy would reach outside the buffer. All three numbers are in bytes; a request whose
    /// own offset or length overflows `usize` reports `usize::MAX` for that field.
    #[error(
        "access out of bounds: {len} bytes at offset {offset} exceed the buffer's {size} bytes"
    )]
    OutOfBounds {
        /// Byte offset of the requested range.
        offset: usize,
        /// Byte length of the requested range.
        len: usize,
        /// Size of the buffer in bytes.
        size: usize,
    },
    /// [`SharedBuffer::copy_to`](crate::SharedBuffer::copy_to) between buffers of different sizes.
    #[error("buffer sizes differ: source has {src} bytes, destination has {dst} bytes")]
    SizeMismatch {
        /// Size of the source buffer in bytes.
        src: usize,
        /// Size of the destination buffer in bytes.
        dst: usize,
    },
    /// A buffer of zero bytes was requested; shared buffers are never empty.
    #[error("a shared buffer needs a non-zero size")]
    ZeroSize,
    /// A file descriptor handed to [`SharedBuffer::from_fd`](crate::SharedBuffer::from_fd) is
    /// smaller than the length the caller wants to map.
    #[error("shared file has {file_size} bytes, fewer than the {len} requested")]
    FileTooSmall {
        /// Size of the file behind the descriptor, from `fstat`.
        file_size: u64,
        /// Requested mapping length in bytes.
        len: usize,
    },
    /// A file is larger than this process's address space can map.
    #[error("file of {size} bytes is too large to map")]
    FileTooLarge {
        /// Size of the file in bytes.
        size: u64,
    },
    /// A system call failed.
    #[error("{op} failed")]
    Os {
        /// The call that failed, such as `"memfd_create"` or `"mmap"`.
        op: &'static str,
        /// The OS error it returned.
        #[source]
        source: std::io::Error,
    },
    /// A system call on a named file failed (opening or mapping it).
    #[error("{op} {path} failed", path = path.display())]
    File {
        /// The call that failed, such as `"open"` or `"mmap"`.
        op: &'static str,
        /// The file it was called on.
        path: PathBuf,
        /// The OS error it returned.
        #[source]
        source: std::io::Error,
    },
    /// Shared buffers and file maps are not implemented on this platform.
    #[error("shared buffers are not supported on this platform")]
    Unsupported,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds [`Error::Os`] from `errno`; call it right after the failing call.
#[cfg(target_os = "linux")]
#[cold]
pub(crate) fn last_os_error(op: &'static str) -> Error {
    Error::Os {
        op,
        source: std::io::Error::last_os_error(),
    }
}

/// Checks that `n_elems` elements of `elem_size` bytes at element offset `offset_elems` fit in a
/// buffer of `size` bytes, and returns the byte offset of the range.
pub(crate) fn byte_range(
    offset_elems: usize,
    n_elems: usize,
    elem_size: usize,
    size: usize,
) -> Result<usize> {
    let offset = offset_elems.checked_mul(elem_size);
    let len = n_elems.checked_mul(elem_size);
    match (offset, len) {
        (Some(offset), Some(len)) if offset.checked_add(len).is_some_and(|end| end <= size) => {
            Ok(offset)
        }
        _ => Err(Error::OutOfBounds {
            offset: offset.unwrap_or(usize::MAX),
            len: len.unwrap_or(usize::MAX),
            size,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_range_accepts_ranges_ending_at_the_end() {
        assert_eq!(byte_range(0, 16, 1, 16).unwrap(), 0);
        assert_eq!(byte_range(3, 1, 4, 16).unwrap(), 12);
        assert_eq!(byte_range(16, 0, 1, 16).unwrap(), 16);
        assert_eq!(byte_range(0, 0, 4, 0).unwrap(), 0);
    }

    #[test]
    fn byte_range_rejects_past_the_end() {
        let err = byte_range(4, 1, 4, 16).unwrap_err();
        assert!(matches!(
            err,
            Error::OutOfBounds {
                offset: 16,
                len: 4,
                size: 16
            }
        ));
        assert!(byte_range(17, 0, 1, 16).is_err());
    }

    #[test]
    fn byte_range_reports_overflow_as_max() {
        let err = byte_range(usize::MAX / 2, 1, 4, 16).unwrap_err();
        assert!(matches!(
            err,
            Error::OutOfBounds {
                offset: usize::MAX,
                len: 4,
                size: 16
            }
        ));
        // The multiplication fits but the end does not.
        let err = byte_range(usize::MAX, 1, 1, 16).unwrap_err();
        assert!(matches!(
            err,
            Error::OutOfBounds {
                offset: usize::MAX,
                len: 1,
                ..
            }
        ));
    }

    #[test]
    fn messages_are_lowercase_without_period() {
        let msg = Error::OutOfBounds {
            offset: 8,
            len: 4,
            size: 10,
        }
        .to_string();
        assert_eq!(
            msg,
            "access out of bounds: 4 bytes at offset 8 exceed the buffer's 10 bytes"
        );
        let msg = Error::File {
            op: "open",
            path: "/nope".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }
        .to_string();
        assert_eq!(msg, "open /nope failed");
    }
}
