//! The bridge's only unsafe room: the Linux real-time system calls (`sched_setscheduler`,
//! `sched_setaffinity`, `mlockall`) and slice views of a locked shared buffer for the duration of
//! one evaluation.
//!
//! Every function here is safe to call. The syscall wrappers pass only values they own or build
//! on the stack; the views borrow the lock guard, so a view cannot outlive the lock that makes
//! it sound within this process (the cross-process rule is the surface crate's contract: no
//! other process writes a surface while it is evaluated).
#![allow(
    unsafe_code,
    reason = "real-time syscalls through libc, and slice views of locked shared buffers during eval"
)]

use std::io;

use half::f16;

use milbridge_surface::{ReadGuard, WriteGuard};

/// Views the whole locked buffer as bytes, for as long as the guard is borrowed.
pub(crate) fn read_view<'g>(guard: &'g ReadGuard<'_>) -> &'g [u8] {
    // SAFETY: `guard.as_ptr()` is the base of a live mapping of `guard.len()` bytes (never 0),
    // page-aligned, that stays mapped while the guard (and so the buffer) lives. The guard holds
    // the buffer's lock shared, so no safe write through this handle can happen while the
    // returned borrow of the guard lives; writes by other processes are excluded by the surface
    // crate's documented cross-process contract, which the bridge's docs pass on to its users.
    unsafe { std::slice::from_raw_parts(guard.as_ptr(), guard.len()) }
}

/// Views the whole locked buffer as mutable bytes, for as long as the guard is borrowed.
pub(crate) fn write_view<'g>(guard: &'g mut WriteGuard<'_>) -> &'g mut [u8] {
    let len = guard.len();
    let ptr = guard.as_mut_ptr();
    // SAFETY: as in `read_view`; in addition the guard holds the lock exclusively and is
    // borrowed mutably for the lifetime of the slice, so this is the only reference to the
    // memory in this process until the slice is dropped.
    unsafe { std::slice::from_raw_parts_mut(ptr, len) }
}

/// Views the whole locked buffer as fp16 values (`len / 2` of them).
pub(crate) fn read_view_f16<'g>(guard: &'g ReadGuard<'_>) -> &'g [f16] {
    let ptr = guard.as_ptr();
    assert!(
        ptr.cast::<f16>().is_aligned(),
        "shared buffers are page-aligned"
    );
    // SAFETY: as in `read_view`, for `len / 2` whole f16 values inside the mapping; the base is
    // aligned for f16 (asserted just above) and every bit pattern is a valid f16.
    unsafe { std::slice::from_raw_parts(ptr.cast::<f16>(), guard.len() / 2) }
}

/// Views the whole locked buffer as mutable fp16 values (`len / 2` of them).
pub(crate) fn write_view_f16<'g>(guard: &'g mut WriteGuard<'_>) -> &'g mut [f16] {
    let len = guard.len() / 2;
    let ptr = guard.as_mut_ptr();
    assert!(
        ptr.cast::<f16>().is_aligned(),
        "shared buffers are page-aligned"
    );
    // SAFETY: as in `write_view`, for `len` whole f16 values inside the mapping; the base is
    // aligned for f16 (asserted just above) and every bit pattern is a valid f16.
    unsafe { std::slice::from_raw_parts_mut(ptr.cast::<f16>(), len) }
}

/// A vector kept only for its allocation: it is empty whenever it is stored, so no `T` is ever
/// moved or shared between threads through it. That is what lets a kernel keep the capacity of
/// its per-eval lock list (lock guards are `!Send`) while staying `Send` and `Sync`.
pub(crate) struct SpareVec<T>(Vec<T>);

// SAFETY: a `SpareVec` never holds an element: `put` clears the vector before storing it and
// nothing else writes the field, so moving it to another thread moves only an allocation.
unsafe impl<T> Send for SpareVec<T> {}
// SAFETY: as for `Send`: a shared `&SpareVec` exposes no method at all, and there are no
// elements to share.
unsafe impl<T> Sync for SpareVec<T> {}

impl<T> SpareVec<T> {
    /// An empty vector without an allocation.
    pub(crate) const fn new() -> SpareVec<T> {
        SpareVec(Vec::new())
    }

    /// Takes the (empty) vector out, leaving no allocation behind.
    pub(crate) fn take(&mut self) -> Vec<T> {
        std::mem::take(&mut self.0)
    }

    /// Stores a vector's allocation for the next `take`, dropping its elements first.
    pub(crate) fn put(&mut self, mut spare: Vec<T>) {
        spare.clear();
        self.0 = spare;
    }
}

/// The calling thread's kernel thread id.
pub(crate) fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// A thread's scheduling policy (including flags such as `SCHED_RESET_ON_FORK`) and priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sched {
    pub(crate) policy: i32,
    pub(crate) priority: i32,
}

/// The scheduling policy and priority of thread `tid` (0 = the caller).
pub(crate) fn get_sched(tid: i32) -> io::Result<Sched> {
    // SAFETY: sched_getscheduler takes a plain integer and touches no memory of ours.
    let policy = unsafe { libc::sched_getscheduler(tid) };
    if policy < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid, writable sched_param on our stack for the whole call.
    let rc = unsafe { libc::sched_getparam(tid, &mut param) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Sched {
        policy,
        priority: param.sched_priority,
    })
}

/// Sets thread `tid`'s policy and priority.
pub(crate) fn set_sched(tid: i32, sched: Sched) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: sched.priority,
    };
    // SAFETY: `param` is a valid sched_param on our stack that the call only reads.
    let rc = unsafe { libc::sched_setscheduler(tid, sched.policy, &param) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `SCHED_FIFO` with `SCHED_RESET_ON_FORK`, so children never inherit real-time priority.
pub(crate) const FIFO_RESET_ON_FORK: i32 = libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK;

/// The lowest and highest `SCHED_FIFO` priorities.
pub(crate) fn fifo_priority_range() -> (i32, i32) {
    // SAFETY: both calls take an integer policy and touch no memory.
    let (min, max) = unsafe {
        (
            libc::sched_get_priority_min(libc::SCHED_FIFO),
            libc::sched_get_priority_max(libc::SCHED_FIFO),
        )
    };
    (min.max(1), max.max(1))
}

/// A set of CPUs (`cpu_set_t`).
#[derive(Clone, Copy)]
pub(crate) struct CpuSet(libc::cpu_set_t);

impl CpuSet {
    /// The empty set.
    pub(crate) fn empty() -> CpuSet {
        // SAFETY: cpu_set_t is a plain bit array for which all-zero is the valid empty set.
        CpuSet(unsafe { std::mem::zeroed() })
    }

    /// The set holding only `cpu` (ignored if beyond `CPU_SETSIZE`).
    pub(crate) fn single(cpu: usize) -> CpuSet {
        let mut set = CpuSet::empty();
        if cpu < libc::CPU_SETSIZE as usize {
            // SAFETY: `cpu` is below CPU_SETSIZE, checked just above, so the bit lies inside the
            // set's array.
            unsafe { libc::CPU_SET(cpu, &mut set.0) };
        }
        set
    }

    /// The CPUs in the set, lowest first.
    pub(crate) fn cpus(&self) -> Vec<usize> {
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: every `cpu` of the range is below CPU_SETSIZE, so the bit lies inside the
            // set's array.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &self.0) })
            .collect()
    }
}

impl std::fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CpuSet").field(&self.cpus()).finish()
    }
}

/// The CPUs thread `tid` (0 = the caller) may run on.
pub(crate) fn get_affinity(tid: i32) -> io::Result<CpuSet> {
    let mut set = CpuSet::empty();
    // SAFETY: `set.0` is a writable cpu_set_t of exactly the size passed.
    let rc = unsafe { libc::sched_getaffinity(tid, size_of::<libc::cpu_set_t>(), &mut set.0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(set)
}

/// Restricts thread `tid` to the CPUs in `set`.
pub(crate) fn set_affinity(tid: i32, set: &CpuSet) -> io::Result<()> {
    // SAFETY: `set.0` is a valid cpu_set_t of exactly the size passed; the call only reads it.
    let rc = unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set.0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Locks every current and future page of the process in memory.
pub(crate) fn lock_all_memory() -> io::Result<()> {
    // SAFETY: mlockall takes flags only and changes no memory contents.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Undoes [`lock_all_memory`].
pub(crate) fn unlock_all_memory() -> io::Result<()> {
    // SAFETY: munlockall takes no arguments and changes no memory contents.
    let rc = unsafe { libc::munlockall() };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the process currently has memory locked with `MCL_FUTURE` semantics, read from
/// `/proc/self/status` (`VmLck` > 0 means some memory is locked).
pub(crate) fn locked_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmLck:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_round_trips() {
        let before = get_affinity(0).expect("getaffinity");
        let cpus = before.cpus();
        assert!(!cpus.is_empty(), "the test thread may run somewhere");
        set_affinity(0, &CpuSet::single(cpus[0])).expect("pin to an allowed cpu");
        assert_eq!(get_affinity(0).expect("getaffinity").cpus(), vec![cpus[0]]);
        set_affinity(0, &before).expect("restore");
        assert_eq!(get_affinity(0).expect("getaffinity").cpus(), cpus);
    }

    #[test]
    fn sched_reads_and_rejects_bad_policies() {
        let own = get_sched(gettid()).expect("own policy");
        assert_eq!(own, get_sched(0).expect("caller policy"));
        let err = set_sched(
            0,
            Sched {
                policy: 12345,
                priority: 0,
            },
        )
        .expect_err("no such policy");
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        assert_eq!(get_sched(0).expect("unchanged"), own);
        let (min, max) = fifo_priority_range();
        assert!(1 <= min && min <= max, "fifo priorities {min}..{max}");
    }

    #[test]
    fn views_cover_the_buffer() {
        let buffer = milbridge_surface::SharedBuffer::new(10).expect("buffer");
        {
            let mut guard = buffer.lock_write();
            let view = write_view(&mut guard);
            assert_eq!(view.len(), 10);
            view.copy_from_slice(b"0123456789");
        }
        let guard = buffer.lock_read();
        assert_eq!(read_view(&guard), b"0123456789");
    }
}
