//! The fast CPU engine's threads: a team of helpers that, with the calling thread, run one
//! parallel loop at a time (`for_each`), and spin between loops instead of going to sleep.
//!
//! A forward pass is a hundred or more short parallel loops (a conv's blocks, its padded copy, a
//! pooling layer), each of tens to hundreds of microseconds, with a little serial work between
//! them. On rayon's pool each loop woke sleeping workers and put the caller to sleep until they
//! were done: 10-30 us a loop on a 2-core machine. Here the caller takes tasks too, and helpers
//! that just finished a loop are still spinning when the next one comes. Each thread first runs
//! its own share of consecutive tasks, then takes what is left of the others' one at a time: a
//! loop of 9 blocks on 2 threads waits for one block at most. (Tasks handed out one at a time
//! from the start ran whole models 1.5-5% slower than the shares: consecutive blocks read the same
//! weights, and a share's outputs are what the same share of the next layer reads.)
//!
//! One loop runs on the team at a time. A loop started while the team is busy (from inside a
//! task, from another model's thread, from the images of a batch run in parallel) runs on its
//! caller alone, in order: nothing waits for the team, so nothing can deadlock on it.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a helper spins after its last task before it sleeps: longer than the serial gaps
/// between a pass's loops (a few to tens of microseconds), short enough that an idle server's
/// helpers are asleep within a millisecond of its last pass.
const SPIN: Duration = Duration::from_micros(300);

/// The threads the fast engine uses, callers included: `RAYON_NUM_THREADS` (which `--threads`
/// sets) or every core, read when the team first runs.
pub fn threads() -> usize {
    team().threads
}

/// Runs `task(i)` for every i in `0..tasks`, each once, on the team when it is free (the caller
/// among them), else on the caller alone; returns when all are done. A panic in a task is
/// raised again here, after every other task has finished.
pub fn for_each(tasks: usize, task: impl Fn(usize) + Sync) {
    let team = team();
    if tasks <= 1 || team.threads == 1 || team.owned.swap(true, SeqCst) {
        (0..tasks).for_each(task);
        return;
    }
    let job = Job::new(&task, tasks, team.threads);
    // SAFETY (of the helpers' use of `job`): it is published here and withdrawn below, and this
    // function does not return before every helper that could have seen it is done with it.
    team.job.store(&job as *const Job as *mut Job<'static>, SeqCst);
    team.epoch.fetch_add(1, SeqCst);
    if team.sleeping.load(SeqCst) > 0 {
        // Taken, so a helper between counting itself asleep and waiting cannot miss this.
        let _lock = team.lock.lock().unwrap_or_else(|e| e.into_inner());
        team.wake.notify_all();
    }
    job.work(0);
    team.job.store(std::ptr::null_mut(), SeqCst);
    while team.busy.load(SeqCst) > 0 {
        std::hint::spin_loop();
    }
    team.owned.store(false, SeqCst);
    if let Some(payload) = job.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
        resume_unwind(payload);
    }
}

/// `task(i, chunk)` for each `chunk`-long piece of `data` (the last may be shorter), as
/// [`for_each`] runs its tasks.
pub fn for_each_chunk<T: Send>(data: &mut [T], chunk: usize, task: impl Fn(usize, &mut [T]) + Sync) {
    assert!(chunk > 0, "chunks of at least one element");
    let (len, base) = (data.len(), SharedMut(data.as_mut_ptr()));
    for_each(len.div_ceil(chunk), |i| {
        let start = i * chunk;
        // SAFETY: task i alone gets elements start..start + chunk of `data`, which this call
        // borrows mutably until every task is done.
        let piece = unsafe { std::slice::from_raw_parts_mut(base.at(start), chunk.min(len - start)) };
        task(i, piece)
    });
}

/// A pointer into a slice whose disjoint pieces go to different tasks.
struct SharedMut<T>(*mut T);
// SAFETY: only `for_each_chunk` uses it, handing each task its own piece.
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// A method, so closures capture the whole (Sync) wrapper rather than its raw field.
    fn at(&self, offset: usize) -> *mut T {
        self.0.wrapping_add(offset)
    }
}

/// One parallel loop, on its caller's stack. Each thread of the team has a share of the tasks,
/// consecutive ones (which tend to read the same weights or inputs, and whose outputs the next
/// layer's same share reads: they stay in that core's cache); a thread done with its share takes
/// the rest of the others', one task at a time.
struct Job<'a> {
    task: &'a (dyn Fn(usize) + Sync),
    /// Per thread (the caller first): the next task of its share, and where the share ends.
    shares: Vec<(AtomicUsize, usize)>,
    /// The first panic of a task, raised by the caller at the end.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl<'a> Job<'a> {
    fn new(task: &'a (dyn Fn(usize) + Sync), tasks: usize, threads: usize) -> Self {
        let shares = (0..threads).map(|t| (AtomicUsize::new(t * tasks / threads), (t + 1) * tasks / threads)).collect();
        Job { task, shares, panic: Mutex::new(None) }
    }

    /// Thread `me`'s work: its share, then whatever is left of the others'.
    fn work(&self, me: usize) {
        let count = self.shares.len();
        for share in (0..count).map(|s| &self.shares[(me + s) % count]) {
            loop {
                let i = share.0.fetch_add(1, SeqCst);
                if i >= share.1 {
                    break;
                }
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (self.task)(i))) {
                    self.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(payload);
                }
            }
        }
    }
}

struct Team {
    threads: usize,
    /// Set while a loop runs on the team.
    owned: AtomicBool,
    /// The running loop, null between loops.
    job: AtomicPtr<Job<'static>>,
    /// Bumped for every loop, so a helper knows a new one came.
    epoch: AtomicU64,
    /// Helpers looking at or working on a loop: its caller waits for them to leave it.
    busy: AtomicUsize,
    /// Helpers asleep (or about to be), and what they sleep on.
    sleeping: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

fn team() -> &'static Team {
    static TEAM: OnceLock<&'static Team> = OnceLock::new();
    TEAM.get_or_init(|| {
        let threads = candle_core::utils::get_num_threads().max(1);
        let team: &'static Team = Box::leak(Box::new(Team {
            threads,
            owned: AtomicBool::new(false),
            job: AtomicPtr::new(std::ptr::null_mut()),
            epoch: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }));
        for i in 1..threads {
            std::thread::Builder::new()
                .name(format!("csp-team-{i}"))
                .spawn(move || helper(team, i))
                .expect("spawning a CPU team thread");
        }
        team
    })
}

/// A helper's life: wait for a new loop (spinning, then asleep), take its tasks, repeat.
fn helper(team: &'static Team, me: usize) {
    let mut seen = team.epoch.load(SeqCst);
    loop {
        let since = Instant::now();
        let mut spins = 0u32;
        while team.epoch.load(SeqCst) == seen {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && since.elapsed() > SPIN {
                let lock = team.lock.lock().unwrap_or_else(|e| e.into_inner());
                // Counted before the epoch is read again: a caller that bumps the epoch after
                // this read sees the count and notifies under the lock.
                team.sleeping.fetch_add(1, SeqCst);
                let mut lock = lock;
                while team.epoch.load(SeqCst) == seen {
                    lock = team.wake.wait(lock).unwrap_or_else(|e| e.into_inner());
                }
                team.sleeping.fetch_sub(1, SeqCst);
                break;
            }
        }
        seen = team.epoch.load(SeqCst);
        team.busy.fetch_add(1, SeqCst);
        let job = team.job.load(SeqCst);
        if !job.is_null() {
            // SAFETY: the caller withdraws the job, then waits for `busy` to fall to zero before
            // its stack frame (and the job) goes away; this helper counted itself busy before
            // it read the pointer.
            unsafe { &*job }.work(me);
        }
        team.busy.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_exactly_once() {
        for tasks in [0, 1, 2, 3, 9, 100, 1000] {
            let counts: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            for_each(tasks, |i| {
                counts[i].fetch_add(1, SeqCst);
            });
            assert!(counts.iter().all(|c| c.load(SeqCst) == 1), "{tasks} tasks");
        }
    }

    #[test]
    fn nested_and_concurrent_loops_run_every_task() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        for_each(7, |_| for_each(5, |_| _ = total.fetch_add(1, SeqCst)));
                    }
                });
            }
        });
        assert_eq!(total.load(SeqCst), 4 * 50 * 7 * 5);
    }

    #[test]
    fn a_panicking_task_is_raised_in_the_caller_after_the_others_finish() {
        let done = AtomicUsize::new(0);
        let result = catch_unwind(AssertUnwindSafe(|| {
            for_each(64, |i| {
                if i == 5 {
                    panic!("task five");
                }
                done.fetch_add(1, SeqCst);
            })
        }));
        let payload = result.expect_err("the panic comes back");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"task five"));
        assert_eq!(done.load(SeqCst), 63);
        // The team is free again.
        let after = AtomicUsize::new(0);
        for_each(10, |_| _ = after.fetch_add(1, SeqCst));
        assert_eq!(after.load(SeqCst), 10);
    }

    #[test]
    fn chunks_cover_the_slice_once() {
        let mut data = vec![0usize; 1001];
        for_each_chunk(&mut data, 64, |i, piece| {
            assert!(piece.len() == 64 || (i == 15 && piece.len() == 41));
            piece.iter_mut().enumerate().for_each(|(j, v)| *v += i * 64 + j);
        });
        assert!(data.iter().enumerate().all(|(i, &v)| v == i));
    }

    #[test]
    fn helpers_take_tasks() {
        if threads() == 1 {
            return;
        }
        // Other tests may hold the team for a while (their loops then run alone): try again.
        let on_helpers = (0..200).any(|_| {
            let caller = std::thread::current().id();
            let elsewhere = AtomicUsize::new(0);
            for_each(8, |_| {
                std::thread::sleep(Duration::from_micros(200));
                if std::thread::current().id() != caller {
                    elsewhere.fetch_add(1, SeqCst);
                }
            });
            elsewhere.load(SeqCst) > 0
        });
        assert!(on_helpers, "no task ran on a helper");
    }

    #[test]
    fn helpers_wake_after_sleeping() {
        for_each(4, |_| {});
        std::thread::sleep(SPIN * 4);
        let count = AtomicUsize::new(0);
        for_each(16, |_| _ = count.fetch_add(1, SeqCst));
        assert_eq!(count.load(SeqCst), 16);
    }
}
