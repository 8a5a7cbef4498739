//! The seed race's workload (b5740f4b2cb3): threads pinned to CPU `a` exit
//! while a sibling pinned to CPU `b` takes `mmap_lock` for writing in a
//! loop. An exiting thread's `do_exit()` → `exit_mm()` → `mmap_read_lock()`
//! then queues on the rwsem behind the writer, and the writer's `up_write()`
//! wakes it through `rwsem_wake()` → `wake_up_q()` → `try_to_wake_up()`:
//! the waker on CPU b, the exiting task on CPU a.
//!
//! Arguments (key=value): iters (rounds), threads (exiting threads per
//! round), a, b (CPU numbers).
use crate::{parse_args, pin_to_cpu};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let v = match parse_args(&args, &[("iters", 20), ("threads", 4), ("a", 0), ("b", 1)]) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("exit-race: {e}");
            std::process::exit(2);
        }
    };
    let (iters, threads, cpu_a, cpu_b) = (v[0], v[1], v[2] as usize, v[3] as usize);
    if let Err(e) = pin_to_cpu(cpu_a) {
        eprintln!("exit-race: cannot pin to cpu {cpu_a}: {e}");
        std::process::exit(2);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, writes) = (stop.clone(), writes.clone());
        std::thread::spawn(move || {
            pin_to_cpu(cpu_b).expect("pin writer");
            const LEN: usize = 4096;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: an anonymous private page we map, touch and unmap
                // ourselves; each call takes mmap_lock for writing.
                unsafe {
                    let p = libc::mmap(
                        std::ptr::null_mut(),
                        LEN,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    );
                    if p == libc::MAP_FAILED {
                        continue;
                    }
                    libc::mprotect(p, LEN, libc::PROT_READ);
                    libc::munmap(p, LEN);
                }
                writes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let mut exited = 0u64;
    for _ in 0..iters {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                std::thread::spawn(move || {
                    pin_to_cpu(cpu_a).expect("pin exiter");
                    // Returning ends the thread: exit() → do_exit() → exit_mm().
                })
            })
            .collect();
        for h in hs {
            h.join().expect("exiting thread");
            exited += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    println!(
        "exit-race: {exited} threads exited on cpu {cpu_a}, {} mmap_lock write cycles on cpu {cpu_b}",
        writes.load(Ordering::Relaxed)
    );
}
