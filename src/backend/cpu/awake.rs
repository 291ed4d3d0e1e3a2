//! Keeps the CPU backend's pool threads awake for the length of one forward step.
//!
//! A step runs a few parallel regions per layer (projections, attention, MLP), with short
//! serial work between them. Between regions rayon's idle workers spin briefly and then sleep
//! on a futex, so nearly every region began by waking a sleeping thread (in the serving
//! profile: `try_to_wake_up` and futex waits ~8 % of the CPU time of a concurrency-16 decode
//! step, on a VM where waking an idle vCPU is slow). [`run_awake`] runs the step on the
//! calling pool thread while every other pool thread polls the pool for the step's work
//! (`rayon::yield_now`, a `pause` between polls) until the step ends: one wake-up per step
//! instead of one per region. The pollers spin only while a step runs; between steps the
//! threads sleep as before.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long the step waits for the pollers to start before it runs without the missing ones
/// (a poller that has not started by then is cancelled and returns at once when it does).
const START_WAIT: Duration = Duration::from_micros(500);

/// Runs `step` on this thread (a thread of the current rayon pool) while the pool's other
/// threads poll for its parallel work; returns `step`'s result. Outside a pool, or in a pool
/// of one thread, just runs `step`.
pub fn run_awake<R: Send>(step: impl FnOnce() -> R + Send) -> R {
    let helpers = rayon::current_num_threads().saturating_sub(1);
    if helpers == 0 || rayon::current_thread_index().is_none() {
        return step();
    }
    let done = AtomicBool::new(false);
    let cancelled = AtomicBool::new(false);
    let started = AtomicUsize::new(0);
    let poll = || {
        // A poller is meaningful only when a thread takes it while idle, before the step
        // starts. Once the step runs (after all pollers started, or after the wait gave up and
        // set `cancelled`), a thread may come across a left-over poller while it waits inside
        // the step's own work; polling there until the step ends would never end.
        if cancelled.load(Ordering::SeqCst) {
            return;
        }
        started.fetch_add(1, Ordering::SeqCst);
        while !done.load(Ordering::Acquire) {
            if rayon::yield_now() != Some(rayon::Yield::Executed) {
                std::hint::spin_loop();
            }
        }
    };
    rayon::scope(|s| {
        for _ in 0..helpers {
            s.spawn(|_| poll());
        }
        let t = Instant::now();
        while started.load(Ordering::SeqCst) < helpers {
            if t.elapsed() > START_WAIT {
                cancelled.store(true, Ordering::SeqCst);
                break;
            }
            std::hint::spin_loop();
        }
        // Set on the way out, also when `step` panics: the scope waits for the pollers before
        // it passes the panic on, and they stop only on `done`.
        let _finish = SetOnDrop(&done);
        step()
    })
}

/// Sets its flag when dropped.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    /// The step's parallel work runs and its result comes back, with pollers started or
    /// cancelled, nested parallel regions included, many times over (a poller taken inside
    /// the step's own work would hang this test).
    #[test]
    fn steps_finish_with_their_results() {
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            for round in 0..200u64 {
                let got = pool.install(|| {
                    run_awake(|| {
                        (0..64u64)
                            .into_par_iter()
                            .map(|i| (0..i).into_par_iter().map(|j| j * round).sum::<u64>())
                            .sum::<u64>()
                    })
                });
                let want: u64 = (0..64u64)
                    .map(|i| (0..i).map(|j| j * round).sum::<u64>())
                    .sum();
                assert_eq!(got, want, "threads {threads} round {round}");
            }
        }
    }

    /// A step that panics passes its panic on (the pollers stop), and the pool serves the
    /// next step.
    #[test]
    fn a_panicking_step_does_not_hang_the_pool() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| {
                run_awake(|| {
                    (0..64u64)
                        .into_par_iter()
                        .for_each(|i| assert!(i != 40, "step failed"));
                })
            })
        }));
        assert!(got.is_err(), "the panic came back");
        let sum = pool.install(|| run_awake(|| (0..100u64).into_par_iter().sum::<u64>()));
        assert_eq!(sum, 4950);
    }

    /// Outside a pool the step simply runs.
    #[test]
    fn outside_a_pool_runs_the_step() {
        assert_eq!(run_awake(|| 7), 7);
    }
}
