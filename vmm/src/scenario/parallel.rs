//! Many runs at once (`--jobs N`): N worker threads take run indices in
//! turn, each run in a VM of its own restored from the same snapshot
//! (`Restorer` hands each its own guest memory), and the results reach
//! the caller in index order, so tables, JSON lines and JUnit are the same
//! whatever N is. Seeds are the caller's function of the index.
//!
//! A run that fails returns `None` after calling `boot::stop_runs`: no new
//! run starts, the ones under way finish and are kept. Ctrl-C ends the
//! runs under way (their verdict is `Interrupted`) the same way.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Run `work(i)` for `i` in `0..n` on `jobs` threads; `sink(i, result)` is
/// called on this thread in increasing `i` (a run after a failed one, if
/// any finished, comes last, still in order). With one job, everything
/// runs on this thread, one run after another.
pub fn in_order<T: Send>(
    n: usize,
    jobs: usize,
    work: impl Fn(usize) -> Option<T> + Sync,
    mut sink: impl FnMut(usize, T),
) {
    let jobs = jobs.clamp(1, n.max(1));
    if jobs == 1 {
        for i in 0..n {
            if crate::boot::stopped() {
                break;
            }
            match work(i) {
                Some(t) => sink(i, t),
                None => break,
            }
        }
        return;
    }
    let next = AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            let tx = tx.clone();
            let (next, work) = (&next, &work);
            s.spawn(move || loop {
                if crate::boot::stopped() {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                match work(i) {
                    Some(t) => {
                        if tx.send((i, t)).is_err() {
                            break;
                        }
                    }
                    None => break,
                }
            });
        }
        drop(tx);
        let mut pending = BTreeMap::new();
        let mut want = 0;
        for (i, t) in rx {
            pending.insert(i, t);
            while let Some(t) = pending.remove(&want) {
                sink(want, t);
                want += 1;
            }
        }
        for (i, t) in pending {
            sink(i, t);
        }
    });
}

/// [`in_order`] for runs that can fail: `work` gives `Ok(None)` for a run
/// that ended without a result (interrupted). A failure stops the runs
/// (`boot::stop_runs`, with `what(i)` and the error); every run that
/// finished still reaches `sink`, and then the first failure is returned.
pub fn try_in_order<T: Send, E: Send + std::fmt::Display>(
    n: usize,
    jobs: usize,
    what: impl Fn(usize) -> String + Sync,
    work: impl Fn(usize) -> Result<Option<T>, E> + Sync,
    sink: impl FnMut(usize, T),
) -> Result<(), E> {
    let failed = std::sync::Mutex::new(None);
    let run = |i: usize| match work(i) {
        Ok(t) => t,
        Err(e) => {
            crate::boot::stop_runs(format!("{}: {e}", what(i)));
            failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(e);
            None
        }
    };
    in_order(n, jobs, run, sink);
    match failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_arrive_in_order_whatever_the_jobs() {
        for jobs in [1, 2, 3, 8] {
            let mut got = vec![];
            in_order(
                20,
                jobs,
                |i| {
                    // Later indices finish first.
                    std::thread::sleep(std::time::Duration::from_micros(((20 - i) * 200) as u64));
                    Some(i * 10)
                },
                |i, t| got.push((i, t)),
            );
            let want: Vec<_> = (0..20).map(|i| (i, i * 10)).collect();
            assert_eq!(got, want, "jobs {jobs}");
        }
    }

    #[test]
    fn a_failure_starts_no_new_run_and_keeps_the_finished() {
        let started = AtomicUsize::new(0);
        let mut got = vec![];
        in_order(
            50,
            2,
            |i| {
                started.fetch_add(1, Ordering::Relaxed);
                (i != 3).then_some(i)
            },
            |i, _| got.push(i),
        );
        assert!(got.starts_with(&[0, 1, 2]), "{got:?}");
        assert!(!got.contains(&3));
        // Each worker stops at its own failure or the other's: the worker
        // that failed takes no more; the other may go on (no stop_runs in
        // this test), but the run order stays increasing.
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    }
}
