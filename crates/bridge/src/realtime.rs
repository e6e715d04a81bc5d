//! Real-time mode: the Linux stand-in for the ANE client's real-time task.
//!
//! [`begin_realtime`] moves the evaluating threads (the caller and every worker of
//! [`Pool::global`]) to `SCHED_FIFO` (with `SCHED_RESET_ON_FORK`, so nothing they spawn inherits
//! it), pins each to its own CPU out of the caller's allowed set, locks all memory with
//! `mlockall(MCL_CURRENT | MCL_FUTURE)`, and makes idle workers spin instead of parking.
//! [`end_realtime`] restores each thread's previous policy, priority and affinity, unlocks
//! memory and stops the spinning.
//!
//! Every step that the system refuses (no `CAP_SYS_NICE`, a memlock limit, a cgroup without
//! real-time budget) is skipped quietly; [`realtime_status`] reports what was achieved and why
//! the rest was not. `SCHED_FIFO` is only requested when every thread gets a CPU of its own: a
//! spinning FIFO worker sharing a CPU with another FIFO thread of the same priority would starve
//! it.
//!
//! The mode is process-wide and nests: only the outermost begin/end pair acts. Any thread may
//! end it; the threads changed at begin are the ones restored.

use std::sync::{Mutex, MutexGuard};

use milbridge_linalg::pool::Pool;

use crate::rt::{self, CpuSet, Sched};

/// The `SCHED_FIFO` priority requested (clamped to the system's range): above every normal
/// thread, well below the kernel's own real-time threads (which run at 50 and 99).
pub const FIFO_PRIORITY: i32 = 10;

/// What real-time mode achieved. All counts are of the threads that evaluate: the caller of
/// [`begin_realtime`] and the worker pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RealtimeStatus {
    /// Between an outermost begin and its end.
    pub active: bool,
    /// Nesting depth of begin calls.
    pub depth: u32,
    /// Threads the mode covers.
    pub threads: usize,
    /// Threads running `SCHED_FIFO` now.
    pub fifo_threads: usize,
    /// The FIFO priority used (0 when none was set).
    pub fifo_priority: i32,
    /// Threads pinned to a single CPU.
    pub pinned_threads: usize,
    /// `mlockall` succeeded.
    pub memory_locked: bool,
    /// Idle workers spin.
    pub spinning: bool,
    /// Why a step fell back, one lowercase line each (empty when everything was granted).
    pub fallbacks: Vec<String>,
}

impl RealtimeStatus {
    /// True when every step was granted: all threads FIFO and pinned, memory locked.
    pub fn fully_granted(&self) -> bool {
        self.active
            && self.threads > 0
            && self.fifo_threads == self.threads
            && self.pinned_threads == self.threads
            && self.memory_locked
    }
}

/// One thread changed by begin, with what to put back.
#[derive(Debug)]
struct SavedThread {
    tid: i32,
    sched: Option<Sched>,
    affinity: Option<CpuSet>,
}

#[derive(Debug, Default)]
struct State {
    status: RealtimeStatus,
    saved: Vec<SavedThread>,
}

static STATE: Mutex<State> = Mutex::new(State {
    status: RealtimeStatus {
        active: false,
        depth: 0,
        threads: 0,
        fifo_threads: 0,
        fifo_priority: 0,
        pinned_threads: 0,
        memory_locked: false,
        spinning: false,
        fallbacks: Vec::new(),
    },
    saved: Vec::new(),
});

fn state() -> MutexGuard<'static, State> {
    // A panic while holding the lock leaves plain data behind; carry on with it.
    STATE.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Enters real-time mode (or deepens the nesting) and returns what is in force.
pub fn begin_realtime() -> RealtimeStatus {
    let mut state = state();
    state.status.depth += 1;
    if state.status.depth > 1 {
        return state.status.clone();
    }
    let pool = Pool::global();
    let mut tids = vec![rt::gettid()];
    tids.extend(pool.worker_tids().into_iter().filter(|&tid| tid > 0));

    let mut status = RealtimeStatus {
        active: true,
        depth: 1,
        threads: tids.len(),
        ..RealtimeStatus::default()
    };
    let cpus = match rt::get_affinity(0) {
        Ok(set) => set.cpus(),
        Err(err) => {
            status
                .fallbacks
                .push(format!("sched_getaffinity failed: {err}"));
            Vec::new()
        }
    };
    let own_cpu_each = !cpus.is_empty() && tids.len() <= cpus.len();
    if !own_cpu_each && !cpus.is_empty() {
        status.fallbacks.push(format!(
            "{} threads for {} cpus: no pinning and no sched_fifo (a spinning fifo thread would starve a neighbour)",
            tids.len(),
            cpus.len()
        ));
    }
    let (min, max) = rt::fifo_priority_range();
    let priority = FIFO_PRIORITY.clamp(min, max);

    let mut saved = Vec::with_capacity(tids.len());
    for (idx, &tid) in tids.iter().enumerate() {
        let mut entry = SavedThread {
            tid,
            sched: None,
            affinity: None,
        };
        if own_cpu_each {
            match rt::get_affinity(tid) {
                Ok(previous) => match rt::set_affinity(tid, &CpuSet::single(cpus[idx])) {
                    Ok(()) => {
                        entry.affinity = Some(previous);
                        status.pinned_threads += 1;
                    }
                    Err(err) => status
                        .fallbacks
                        .push(format!("pinning thread {tid} to cpu {}: {err}", cpus[idx])),
                },
                Err(err) => status
                    .fallbacks
                    .push(format!("reading thread {tid}'s affinity: {err}")),
            }
            match rt::get_sched(tid) {
                Ok(previous) => {
                    match rt::set_sched(
                        tid,
                        Sched {
                            policy: rt::FIFO_RESET_ON_FORK,
                            priority,
                        },
                    ) {
                        Ok(()) => {
                            entry.sched = Some(previous);
                            status.fifo_threads += 1;
                        }
                        Err(err) => status.fallbacks.push(format!(
                            "sched_fifo priority {priority} for thread {tid}: {err}"
                        )),
                    }
                }
                Err(err) => status
                    .fallbacks
                    .push(format!("reading thread {tid}'s policy: {err}")),
            }
        }
        saved.push(entry);
    }
    if status.fifo_threads > 0 {
        status.fifo_priority = priority;
    }
    match rt::lock_all_memory() {
        // Sanitizer runtimes intercept mlockall and do nothing: trust only what the kernel
        // reports as locked.
        Ok(()) if rt::locked_kib().unwrap_or(0) > 0 => status.memory_locked = true,
        Ok(()) => status.fallbacks.push(
            "mlockall returned success but no memory is locked (intercepted, e.g. by a sanitizer)"
                .to_string(),
        ),
        Err(err) => status.fallbacks.push(format!("mlockall: {err}")),
    }
    pool.set_spin(true);
    status.spinning = true;

    state.saved = saved;
    state.status = status;
    state.status.clone()
}

/// Leaves real-time mode (or reduces the nesting): the outermost end restores every thread's
/// previous policy and affinity, unlocks memory and stops the spinning. Does nothing when the
/// mode is not active. Returns what is in force afterwards.
pub fn end_realtime() -> RealtimeStatus {
    let mut state = state();
    match state.status.depth {
        0 => return state.status.clone(),
        1 => {}
        _ => {
            state.status.depth -= 1;
            return state.status.clone();
        }
    }
    Pool::global().set_spin(false);
    let mut fallbacks = Vec::new();
    // Policy first: once back to normal priority, nothing of ours can starve the restore.
    for entry in state.saved.drain(..) {
        if let Some(sched) = entry.sched
            && let Err(err) = rt::set_sched(entry.tid, sched)
        {
            fallbacks.push(format!("restoring thread {}'s policy: {err}", entry.tid));
        }
        if let Some(affinity) = entry.affinity
            && let Err(err) = rt::set_affinity(entry.tid, &affinity)
        {
            fallbacks.push(format!("restoring thread {}'s affinity: {err}", entry.tid));
        }
    }
    if state.status.memory_locked
        && let Err(err) = rt::unlock_all_memory()
    {
        fallbacks.push(format!("munlockall: {err}"));
    }
    state.status = RealtimeStatus {
        fallbacks,
        ..RealtimeStatus::default()
    };
    state.status.clone()
}

/// What real-time mode has in force now.
pub fn realtime_status() -> RealtimeStatus {
    state().status.clone()
}

/// Real-time mode for a scope: begins on creation, ends on drop (also when unwinding).
#[derive(Debug)]
#[must_use = "real-time mode ends when the guard is dropped"]
pub struct RealtimeGuard {
    status: RealtimeStatus,
}

impl RealtimeGuard {
    /// Calls [`begin_realtime`].
    pub fn new() -> RealtimeGuard {
        RealtimeGuard {
            status: begin_realtime(),
        }
    }

    /// What begin achieved.
    pub fn status(&self) -> &RealtimeStatus {
        &self.status
    }
}

impl Default for RealtimeGuard {
    fn default() -> Self {
        RealtimeGuard::new()
    }
}

impl Drop for RealtimeGuard {
    fn drop(&mut self) {
        end_realtime();
    }
}

/// Serialises tests (in this crate) that change the process-wide real-time state.
#[cfg(test)]
pub(crate) static TEST_LOCK: Mutex<()> = Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_end_restores_everything() {
        let _serial = TEST_LOCK
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let pool = Pool::global();
        let tid = rt::gettid();
        let sched_before = rt::get_sched(tid).expect("policy");
        let affinity_before = rt::get_affinity(tid).expect("affinity").cpus();
        let workers: Vec<_> = pool.worker_tids();
        let worker_before: Vec<_> = workers
            .iter()
            .map(|&w| {
                (
                    rt::get_sched(w).expect("worker policy"),
                    rt::get_affinity(w).expect("aff").cpus(),
                )
            })
            .collect();
        assert!(!realtime_status().active);

        let status = {
            let guard = RealtimeGuard::new();
            let status = guard.status().clone();
            assert!(status.active && status.spinning && status.depth == 1);
            assert_eq!(status.threads, 1 + workers.len());
            // Whatever was granted is really in force.
            let now = rt::get_sched(tid).expect("policy");
            if status.fifo_threads > 0 {
                assert_eq!(now.policy & !libc::SCHED_RESET_ON_FORK, libc::SCHED_FIFO);
                assert_eq!(now.priority, status.fifo_priority);
            }
            if status.pinned_threads > 0 {
                assert_eq!(rt::get_affinity(tid).expect("affinity").cpus().len(), 1);
            }
            if status.memory_locked {
                assert!(
                    rt::locked_kib().unwrap_or(0) > 0,
                    "VmLck shows locked memory"
                );
            }
            assert_eq!(
                status.fallbacks.is_empty(),
                status.fully_granted(),
                "fallbacks explain exactly what was not granted: {:?}",
                status.fallbacks
            );
            // Nesting: an inner pair changes nothing.
            assert_eq!(begin_realtime().depth, 2);
            assert_eq!(end_realtime().depth, 1);
            assert!(realtime_status().active);
            status
        };
        eprintln!("real-time mode granted: {status:?}");

        let after = realtime_status();
        assert!(
            !after.active && after.depth == 0 && !after.spinning,
            "{after:?}"
        );
        assert!(
            after.fallbacks.is_empty(),
            "restore problems: {:?}",
            after.fallbacks
        );
        assert_eq!(rt::get_sched(tid).expect("policy"), sched_before);
        assert_eq!(
            rt::get_affinity(tid).expect("affinity").cpus(),
            affinity_before
        );
        for (&w, before) in workers.iter().zip(&worker_before) {
            assert_eq!(rt::get_sched(w).expect("worker policy"), before.0);
            assert_eq!(
                rt::get_affinity(w).expect("worker affinity").cpus(),
                before.1
            );
        }
        if status.memory_locked {
            assert_eq!(rt::locked_kib(), Some(0), "munlockall released everything");
        }
        // A stray end is a no-op.
        assert!(!end_realtime().active);
    }
}
