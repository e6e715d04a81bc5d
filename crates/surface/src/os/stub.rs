//! Fallback for platforms without `memfd_create`: every constructor returns
//! [`Error::Unsupported`], so no value of these types ever exists and every method is
//! unreachable by construction (memmap2's `src/stub.rs` pattern).

use std::convert::Infallible;
#[cfg(unix)]
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use crate::element::Element;
use crate::error::{Error, Result};

/// Uninhabited stand-in for the Linux mapping.
pub(crate) struct Mapping {
    never: Infallible,
}

impl Mapping {
    /// Always [`Error::Unsupported`] (or [`Error::ZeroSize`] for 0, as on Linux).
    pub(crate) fn create(len: usize) -> Result<Mapping> {
        if len == 0 {
            return Err(Error::ZeroSize);
        }
        Err(Error::Unsupported)
    }

    /// Always [`Error::Unsupported`] (or [`Error::ZeroSize`] for 0, as on Linux).
    #[cfg(unix)]
    pub(crate) fn from_fd(fd: OwnedFd, len: usize) -> Result<Mapping> {
        drop(fd);
        if len == 0 {
            return Err(Error::ZeroSize);
        }
        Err(Error::Unsupported)
    }

    pub(crate) fn len(&self) -> usize {
        match self.never {}
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        match self.never {}
    }

    #[cfg(unix)]
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        match self.never {}
    }

    #[cfg(unix)]
    pub(crate) fn dup_inheritable(&self) -> Result<OwnedFd> {
        match self.never {}
    }

    pub(crate) fn read(&self) -> MapRead<'_> {
        match self.never {}
    }

    pub(crate) fn try_read(&self) -> Option<MapRead<'_>> {
        match self.never {}
    }

    pub(crate) fn write(&self) -> MapWrite<'_> {
        match self.never {}
    }

    pub(crate) fn try_write(&self) -> Option<MapWrite<'_>> {
        match self.never {}
    }
}

/// Uninhabited stand-in for a shared lock on a mapping.
pub(crate) struct MapRead<'a> {
    never: Infallible,
    _map: std::marker::PhantomData<&'a Mapping>,
}

impl MapRead<'_> {
    pub(crate) fn as_ptr(&self) -> *const u8 {
        match self.never {}
    }

    pub(crate) fn len(&self) -> usize {
        match self.never {}
    }

    pub(crate) fn copy_out<T: Element>(&self, _offset: usize, _dst: &mut [T]) {
        match self.never {}
    }
}

/// Uninhabited stand-in for an exclusive lock on a mapping.
pub(crate) struct MapWrite<'a> {
    never: Infallible,
    _map: std::marker::PhantomData<&'a Mapping>,
}

impl MapWrite<'_> {
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        match self.never {}
    }

    pub(crate) fn len(&self) -> usize {
        match self.never {}
    }

    pub(crate) fn copy_out<T: Element>(&self, _offset: usize, _dst: &mut [T]) {
        match self.never {}
    }

    pub(crate) fn copy_in<T: Element>(&mut self, _offset: usize, _src: &[T]) {
        match self.never {}
    }

    pub(crate) fn fill_zero(&mut self) {
        match self.never {}
    }

    pub(crate) fn copy_from(&mut self, _src: &MapRead<'_>) {
        match self.never {}
    }
}

/// Uninhabited stand-in for a read-only file mapping.
pub(crate) struct FileMapping {
    never: Infallible,
}

impl FileMapping {
    /// Always [`Error::Unsupported`].
    pub(crate) fn open(_path: &Path) -> Result<FileMapping> {
        Err(Error::Unsupported)
    }

    pub(crate) fn len(&self) -> usize {
        match self.never {}
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match self.never {}
    }
}
