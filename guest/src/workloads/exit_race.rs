//! The seed race's workload (b5740f4b2cb3): threads pinned to CPU `a` exit
//! while a sibling pinned to CPU `b` takes `mmap_lock` for writing in a
//! loop. An exiting thread's `do_exit()` → `exit_mm()` → `mmap_read_lock()`
//! then queues on the rwsem behind the writer, and the writer's `up_write()`
//! wakes it through `rwsem_wake()` → `wake_up_q()` → `try_to_wake_up()`:
//! the waker on CPU b, the exiting task on CPU a.
//!
//! Arguments (key=value): iters (rounds), threads (exiting threads per
//! round), a, b (CPU numbers), jitter (each exiting thread first spins a
//! number of iterations below this, drawn from the run's seed, so runs
//! restored from one snapshot still differ in timing).
//!
//! The main thread, which spawns the exiting threads, runs on CPU b too.
//!
//! The snapshot point ([`crate::ready`]) is after the setup: pinned, the
//! writer and all exiting threads spawned and parked. Restored runs start
//! straight at the exits.
use crate::{parse_args, pin_to_cpu, Rng};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

pub fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let known = [
        ("iters", 20),
        ("threads", 4),
        ("a", 0),
        ("b", 1),
        ("jitter", 10_000),
    ];
    let v = match parse_args(&args, &known) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("exit-race: {e}");
            std::process::exit(2);
        }
    };
    let (iters, threads, cpu_a, cpu_b, jitter) = (v[0], v[1], v[2] as usize, v[3] as usize, v[4]);
    // The spawning thread stays off CPU a: it takes mmap_lock itself
    // (thread stacks), and an owner on CPU a would be stopped along with
    // the exiting thread, so the waker would never come.
    if let Err(e) = pin_to_cpu(cpu_b) {
        eprintln!("exit-race: cannot pin to cpu {cpu_b}: {e}");
        std::process::exit(2);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let (go, parked) = mpsc::channel::<()>();
    let writer = {
        let (stop, writes) = (stop.clone(), writes.clone());
        std::thread::spawn(move || {
            pin_to_cpu(cpu_b).expect("pin writer");
            // mprotect() of a mapping that was never touched: mmap_lock
            // for writing, and no page-table entries to change, so no TLB
            // shootdown. munmap() would IPI CPU a while holding the lock,
            // and with CPU a stopped by the injector the waker then never
            // comes (measured: most stops of the exiting thread timed out).
            // The page toggles between read and read+exec between two
            // read+write neighbours: it is its own VMA and never merges or
            // splits, so each call is cheap (a split or merge costs maple
            // tree work, ~26 ms a call here).
            const PAGE: usize = 4096;
            // SAFETY: anonymous private pages we map and never touch.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    3 * PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert!(p != libc::MAP_FAILED, "writer: mmap failed");
            // SAFETY: the middle page of our own mapping.
            let p = unsafe { p.cast::<u8>().add(PAGE).cast::<libc::c_void>() };
            let mut prot = libc::PROT_READ;
            let _ = parked.recv();
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: our own mapping; only its protection changes.
                unsafe { libc::mprotect(p, PAGE, prot) };
                prot ^= libc::PROT_EXEC;
                writes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // The writer and every exiting thread are spawned and parked before
    // the snapshot point, so a restored run is all exits (a thread spawn
    // costs tens of ms of emulated kernel work here). The writer is parked
    // too: running, it shares CPU b with this thread and delayed a restored
    // run's start by ~200 ms.
    let rounds: Vec<Round> = (0..iters).map(|_| Round::spawn(threads, cpu_a)).collect();
    let mut rng = Rng::new(crate::ready() as u64);
    let _ = go.send(());
    let mut exited = 0;
    for r in rounds {
        exited += r.release(&mut rng, jitter);
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    println!(
        "exit-race: {exited} threads exited on cpu {cpu_a}, {} mmap_lock write cycles on cpu {cpu_b}",
        writes.load(Ordering::Relaxed)
    );
}

/// One round of exiting threads: pinned to CPU a and parked until
/// released. They are released one at a time, each spinning its share of
/// jitter before it exits: two exiting threads on CPU a at once would let
/// one hold mmap_lock for reading while stopped with the other, and the
/// waker would never come.
struct Round {
    threads: Vec<(mpsc::Sender<u64>, std::thread::JoinHandle<()>)>,
}

impl Round {
    fn spawn(threads: u64, cpu: usize) -> Self {
        let threads = (0..threads)
            .map(|_| {
                let (tx, rx) = mpsc::channel::<u64>();
                let h = std::thread::spawn(move || {
                    pin_to_cpu(cpu).expect("pin exiter");
                    let spins = rx.recv().unwrap_or(0);
                    for _ in 0..spins {
                        std::hint::spin_loop();
                    }
                    // Returning ends the thread: exit() → do_exit() → exit_mm().
                });
                (tx, h)
            })
            .collect();
        Self { threads }
    }

    /// Let the threads exit, one after the other. Returns how many exited.
    fn release(self, rng: &mut Rng, jitter: u64) -> u64 {
        let n = self.threads.len() as u64;
        for (tx, h) in self.threads {
            let _ = tx.send(rng.below(jitter));
            h.join().expect("exiting thread");
        }
        n
    }
}
