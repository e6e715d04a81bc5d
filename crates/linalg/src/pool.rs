//! A persistent worker pool with allocation-free dispatch.
//!
//! [`Pool::run`] publishes a job (a `&dyn Fn(usize)` plus a task count) through one atomic word
//! holding a generation number and the number of worker slots still open. A woken worker
//! *joins* by taking a slot with a compare-exchange, then claims task indices from an atomic
//! counter. The caller claims tasks too; once none are left it closes the remaining slots and
//! waits only for the workers that joined, which is what lets the job live on the caller's
//! stack, and why a slow-to-wake worker never delays a short job. Idle workers spin for `MILBRIDGE_SPIN_US` (or forever in spin mode, see
//! [`Pool::set_spin`]) and then park on a condition variable.
//!
//! Nested calls (a task calling `run` on any pool) and concurrent callers that find the pool
//! busy run their tasks serially on the calling thread.
#![allow(
    unsafe_code,
    reason = "the job pointer shared with workers outlives no call (see run) and gettid"
)]

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex, OnceLock, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cpu;

/// Low bits of [`Shared::state`] hold the open worker slots; the rest is the generation.
const PARTICIPANT_BITS: u32 = 16;
const PARTICIPANT_MASK: u64 = (1 << PARTICIPANT_BITS) - 1;

thread_local! {
    /// True on pool workers and on a caller while it runs tasks: a `run` from here is nested.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

/// One `run` call's job; lives on the caller's stack until every participant acknowledged it.
struct Job<'a> {
    task: &'a (dyn Fn(usize) + Sync + 'a),
    n_tasks: usize,
    next: AtomicUsize,
    panicked: AtomicBool,
}

impl Job<'_> {
    /// Claims and runs tasks until none are left. Panics are recorded, not propagated.
    fn work(&self) {
        loop {
            let task_idx = self.next.fetch_add(1, Ordering::Relaxed);
            if task_idx >= self.n_tasks {
                return;
            }
            if catch_unwind(AssertUnwindSafe(|| (self.task)(task_idx))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
        }
    }
}

struct Shared {
    /// `generation << PARTICIPANT_BITS | open_slots`; bumped (SeqCst) to publish a job.
    state: AtomicU64,
    /// The current job, type- and lifetime-erased; valid for workers that joined the current
    /// generation until they acknowledge it.
    job: AtomicPtr<()>,
    /// Joined workers that finished the current generation.
    acks: AtomicUsize,
    /// The caller is (about to be) parked on `done_cv`.
    caller_sleeping: AtomicBool,
    spin: AtomicBool,
    shutdown: AtomicBool,
    sleepers: AtomicUsize,
    wake_lock: Mutex<()>,
    wake_cv: Condvar,
    done_lock: Mutex<()>,
    done_cv: Condvar,
    spin_budget: Duration,
    tids: Vec<AtomicI32>,
}

impl Shared {
    /// Busy-waits (bounded unless in spin mode) while `done()` is false. Returns its last value.
    fn spin_until(&self, mut done: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        let mut iteration = 0u32;
        loop {
            if done() {
                return true;
            }
            std::hint::spin_loop();
            iteration = iteration.wrapping_add(1);
            if iteration.is_multiple_of(64)
                && !self.spin.load(Ordering::Relaxed)
                && start.elapsed() > self.spin_budget
            {
                return false;
            }
        }
    }

    /// Waits for a generation other than `seen` and returns the state word.
    fn wait_for_job(&self, seen: u64) -> u64 {
        let mut state = 0;
        let changed = || {
            state = self.state.load(Ordering::Acquire);
            state >> PARTICIPANT_BITS != seen
        };
        if self.spin_until(changed) {
            return state;
        }
        let mut guard = self
            .wake_lock
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        loop {
            let state = self.state.load(Ordering::SeqCst);
            if state >> PARTICIPANT_BITS != seen {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                return state;
            }
            guard = self
                .wake_cv
                .wait(guard)
                .unwrap_or_else(|poison| poison.into_inner());
        }
    }

    /// Publishes a new generation and wakes parked workers.
    fn publish(&self, participants: usize) {
        let generation = (self.state.load(Ordering::Relaxed) >> PARTICIPANT_BITS) + 1;
        self.state.store(
            generation << PARTICIPANT_BITS | participants as u64,
            Ordering::SeqCst,
        );
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = self
                .wake_lock
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            self.wake_cv.notify_all();
        }
    }

    /// Closes the current generation to late joiners and blocks until every worker that
    /// joined has acknowledged it.
    fn close_and_wait(&self, participants: usize) {
        let old = self.state.fetch_and(!PARTICIPANT_MASK, Ordering::SeqCst);
        let joined = participants - (old & PARTICIPANT_MASK) as usize;
        let all_done = || self.acks.load(Ordering::Acquire) >= joined;
        if self.spin_until(all_done) {
            return;
        }
        let mut guard = self
            .done_lock
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        self.caller_sleeping.store(true, Ordering::SeqCst);
        while self.acks.load(Ordering::SeqCst) < joined {
            guard = self
                .done_cv
                .wait(guard)
                .unwrap_or_else(|poison| poison.into_inner());
        }
        self.caller_sleeping.store(false, Ordering::Relaxed);
    }

    /// Takes one open slot of generation `generation`; false if it is closed or gone.
    fn join(&self, generation: u64, mut state: u64) -> bool {
        loop {
            if state >> PARTICIPANT_BITS != generation || state & PARTICIPANT_MASK == 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                state,
                state - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(current) => state = current,
            }
        }
    }

    fn worker_main(&self, worker_idx: usize, started: &Barrier) {
        // Any worker may take any open slot; the index only names the thread's tid slot.
        IN_TASK.with(|flag| flag.set(true));
        self.tids[worker_idx].store(current_tid(), Ordering::Relaxed);
        started.wait();
        let mut seen = 0;
        loop {
            let state = self.wait_for_job(seen);
            seen = state >> PARTICIPANT_BITS;
            if self.shutdown.load(Ordering::Acquire) {
                return;
            }
            if !self.join(seen, state) {
                continue;
            }
            let job = self.job.load(Ordering::Acquire).cast::<Job<'_>>();
            // SAFETY: `run` stored a pointer to its stack `Job` before publishing this
            // generation, and after closing it waits for every worker that joined (we did,
            // through the successful compare-exchange) to acknowledge below before the job
            // goes out of scope.
            let job = unsafe { &*job };
            job.work();
            self.acks.fetch_add(1, Ordering::SeqCst);
            if self.caller_sleeping.load(Ordering::SeqCst) {
                let _guard = self
                    .done_lock
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                self.done_cv.notify_one();
            }
        }
    }
}

/// A persistent pool of `n_threads - 1` worker threads; the caller of [`Pool::run`] is the
/// n-th thread.
pub struct Pool {
    shared: Arc<Shared>,
    /// Held by the thread currently dispatching; others run serially instead of waiting.
    submit: Mutex<()>,
    workers: Vec<JoinHandle<()>>,
    n_threads: usize,
}

impl Pool {
    /// Creates a pool of `n_threads` threads including the caller (so `n_threads - 1` workers;
    /// 0 is treated as 1). Returns once every worker has started.
    pub fn new(n_threads: usize) -> Pool {
        let n_threads = n_threads.clamp(1, PARTICIPANT_MASK as usize);
        let n_workers = n_threads - 1;
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            acks: AtomicUsize::new(0),
            caller_sleeping: AtomicBool::new(false),
            spin: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            wake_lock: Mutex::new(()),
            wake_cv: Condvar::new(),
            done_lock: Mutex::new(()),
            done_cv: Condvar::new(),
            spin_budget: Duration::from_micros(cpu::spin_micros()),
            tids: (0..n_workers).map(|_| AtomicI32::new(0)).collect(),
        });
        let started = Arc::new(Barrier::new(n_workers + 1));
        let workers = (0..n_workers)
            .map(|worker_idx| {
                let shared = Arc::clone(&shared);
                let started = Arc::clone(&started);
                std::thread::Builder::new()
                    .name(format!("milbridge-w{worker_idx}"))
                    .spawn(move || shared.worker_main(worker_idx, &started))
                    .expect("failed to spawn a pool worker thread")
            })
            .collect();
        started.wait();
        Pool {
            shared,
            submit: Mutex::new(()),
            workers,
            n_threads,
        }
    }

    /// The process-wide pool with [`cpu::thread_count`] threads, created on first use.
    pub fn global() -> &'static Pool {
        static GLOBAL: OnceLock<Pool> = OnceLock::new();
        GLOBAL.get_or_init(|| Pool::new(cpu::thread_count()))
    }

    /// Threads that run tasks, the caller included.
    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Calls `task(i)` for every `i` in `0..n_tasks`, spread over the workers and the calling
    /// thread, and returns when all calls have finished. Does not allocate. A call from inside
    /// a task (nested), or while another thread is dispatching on this pool, runs the tasks
    /// serially on the calling thread. If a task panics, the panic is re-raised here after all
    /// tasks have finished.
    pub fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        let nested = IN_TASK.with(|flag| flag.get());
        if nested || n_tasks == 1 || self.n_threads == 1 {
            return run_serial(n_tasks, task);
        }
        let _submit = match self.submit.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poison)) => poison.into_inner(),
            Err(TryLockError::WouldBlock) => return run_serial(n_tasks, task),
        };
        let participants = (n_tasks - 1).min(self.n_threads - 1);
        let job = Job {
            task,
            n_tasks,
            next: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        };
        let shared = &*self.shared;
        shared
            .job
            .store((&raw const job).cast_mut().cast(), Ordering::Relaxed);
        shared.acks.store(0, Ordering::Relaxed);
        shared.publish(participants);
        {
            // Closes the job and waits for the joined workers even if one of our own tasks
            // unwinds, since they hold references to `job`.
            let _wait = WaitGuard {
                shared,
                participants,
            };
            let _in_task = InTaskGuard::enter();
            job.work();
        }
        if job.panicked.load(Ordering::Relaxed) {
            panic!("a task in Pool::run panicked");
        }
    }

    /// Realtime mode: when `spin` is true, idle workers busy-wait for the next job instead of
    /// parking (lowest dispatch latency, one core busy per worker).
    pub fn set_spin(&self, spin: bool) {
        self.shared.spin.store(spin, Ordering::Relaxed);
    }

    /// Linux thread ids of the worker threads (not the caller), e.g. for `SCHED_FIFO` or
    /// pinning.
    pub fn worker_tids(&self) -> Vec<i32> {
        self.shared
            .tids
            .iter()
            .map(|tid| tid.load(Ordering::Relaxed))
            .collect()
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("n_threads", &self.n_threads)
            .finish_non_exhaustive()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.publish(0);
        for worker in self.workers.drain(..) {
            // A worker that panicked outside a task has nothing left to report.
            let _ = worker.join();
        }
    }
}

/// The calling thread's kernel thread id (0 where there is none to report).
#[cfg(target_os = "linux")]
fn current_tid() -> i32 {
    // SAFETY: gettid has no preconditions; it returns the calling thread's id.
    unsafe { libc::gettid() }
}

/// The calling thread's kernel thread id (0 where there is none to report).
#[cfg(not(target_os = "linux"))]
fn current_tid() -> i32 {
    0
}

fn run_serial(n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
    let _in_task = InTaskGuard::enter();
    for task_idx in 0..n_tasks {
        task(task_idx);
    }
}

struct WaitGuard<'a> {
    shared: &'a Shared,
    participants: usize,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.shared.close_and_wait(self.participants);
    }
}

/// Marks the current thread as running tasks; restores the previous flag on drop.
struct InTaskGuard {
    previous: bool,
}

impl InTaskGuard {
    fn enter() -> InTaskGuard {
        InTaskGuard {
            previous: IN_TASK.with(|flag| flag.replace(true)),
        }
    }
}

impl Drop for InTaskGuard {
    fn drop(&mut self) {
        let previous = self.previous;
        IN_TASK.with(|flag| flag.set(previous));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_all(pool: &Pool, n_tasks: usize) {
        let hits: Vec<AtomicUsize> = (0..n_tasks).map(|_| AtomicUsize::new(0)).collect();
        pool.run(n_tasks, &|task_idx| {
            hits[task_idx].fetch_add(1, Ordering::Relaxed);
        });
        for (task_idx, hit) in hits.iter().enumerate() {
            assert_eq!(
                hit.load(Ordering::Relaxed),
                1,
                "task {task_idx} of {n_tasks}"
            );
        }
    }

    #[test]
    fn many_runs_cover_every_task_once() {
        for n_threads in [1, 2, 3, 4] {
            let pool = Pool::new(n_threads);
            assert_eq!(pool.n_threads(), n_threads);
            for round in 0..500 {
                count_all(&pool, round % 17);
            }
        }
    }

    #[test]
    fn tasks_run_concurrently() {
        // Each task waits until every task has started: only finishes if all threads join.
        for n_threads in [2, 3] {
            let pool = Pool::new(n_threads);
            for _ in 0..20 {
                let started = AtomicUsize::new(0);
                pool.run(n_threads, &|_| {
                    started.fetch_add(1, Ordering::SeqCst);
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while started.load(Ordering::SeqCst) < n_threads {
                        assert!(Instant::now() < deadline, "a worker never joined the job");
                        std::thread::yield_now();
                    }
                });
            }
        }
    }

    #[test]
    fn zero_tasks_is_a_no_op() {
        let pool = Pool::new(3);
        pool.run(0, &|_| panic!("no task should run"));
    }

    #[test]
    fn more_tasks_than_threads() {
        let pool = Pool::new(2);
        let sum = AtomicUsize::new(0);
        pool.run(10_000, &|task_idx| {
            sum.fetch_add(task_idx, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 10_000 * 9_999 / 2);
    }

    #[test]
    fn nested_run_is_serial_and_complete() {
        let pool = Pool::new(3);
        let sum = AtomicUsize::new(0);
        pool.run(8, &|outer| {
            let thread = std::thread::current().id();
            pool.run(5, &|inner| {
                assert_eq!(
                    std::thread::current().id(),
                    thread,
                    "nested run must stay on its thread"
                );
                sum.fetch_add(outer * 10 + inner, Ordering::Relaxed);
            });
        });
        let expected: usize = (0..8).flat_map(|o| (0..5).map(move |i| o * 10 + i)).sum();
        assert_eq!(sum.load(Ordering::Relaxed), expected);
    }

    #[test]
    fn parked_workers_wake_up() {
        // Spin budget is small by default; sleep past it so workers park, then dispatch.
        let pool = Pool::new(2);
        count_all(&pool, 4);
        std::thread::sleep(Duration::from_millis(5));
        count_all(&pool, 4);
    }

    #[test]
    fn spin_mode_and_tids() {
        let pool = Pool::new(3);
        pool.set_spin(true);
        for _ in 0..100 {
            count_all(&pool, 7);
        }
        pool.set_spin(false);
        let tids = pool.worker_tids();
        assert_eq!(tids.len(), 2);
        assert!(tids.iter().all(|&tid| tid > 0));
    }

    #[test]
    fn concurrent_callers_share_one_pool() {
        let pool = Pool::new(2);
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    for round in 0..200 {
                        count_all(&pool, round % 9 + 1);
                    }
                });
            }
        });
    }

    #[test]
    fn task_panic_is_reraised_after_all_tasks() {
        let pool = Pool::new(2);
        let ran = AtomicUsize::new(0);
        let result = catch_unwind(AssertUnwindSafe(|| {
            pool.run(16, &|task_idx| {
                ran.fetch_add(1, Ordering::Relaxed);
                if task_idx == 3 {
                    panic!("boom");
                }
            });
        }));
        assert!(result.is_err());
        // The pool is still usable.
        count_all(&pool, 5);
    }
}
