//! A hostile guest, for the VMM's fault tests: `chaos MODE [key=value...]`.
//! Each mode misbehaves in one way the VMM must survive with a verdict,
//! within its timeout and in bounded memory:
//!
//! - `flood`: prints to the console as fast as it can, for ever, with
//!   init's marker prefix on every other line (the VMM parses those).
//! - `irqoff`: spins on one CPU with interrupts off, for ever. User space
//!   cannot `cli` (6.1 emulates iopl(3) with the I/O bitmap), so this asks
//!   the kernel's LKDTM (`HARDLOCKUP`, needs `CONFIG_LKDTM`).
//! - `pio`: `count` port reads and writes of random width, port and value
//!   (ioperm on all 65536 ports), sparing the console UART and KVM's
//!   in-kernel devices ([`SPARED`]), then exits 0. A fault is reported with
//!   the access that caused it.
//! - `mmio`: `count` random reads and writes in the 32-bit hole below
//!   4 GiB, where nothing is mapped (the VMM sees each as an MMIO exit),
//!   through /dev/mem (`CONFIG_DEVMEM`), then exits 0.
//! - `triple`: reboots the machine; with `reboot=t` on the kernel command
//!   line the kernel restarts by triple fault (an empty IDT, then `int3`).
//!
//! The random choices come from the run's seed, so a run repeats.
use crate::{pin_to_cpu, ready, Rng};
use std::io::Write;

const USAGE: &str = "usage: chaos flood|irqoff|pio|mmio|triple [count=N]";

pub fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((mode, rest)) = args.split_first() else {
        die(USAGE);
    };
    let count = match crate::parse_args(rest, &[("count", 20_000)]) {
        Ok(v) => v[0],
        Err(e) => die(&format!("chaos: {e}")),
    };
    let seed = ready();
    let mut rng = Rng::new(u64::from(seed) ^ 0xc4a0);
    println!("chaos: {mode} (seed {seed}, count {count})");
    match mode.as_str() {
        "flood" => flood(&mut rng),
        "irqoff" => irqoff(),
        "pio" => pio(&mut rng, count),
        "mmio" => mmio(&mut rng, count),
        "triple" => triple(),
        other => die(&format!("chaos: unknown mode '{other}'; {USAGE}")),
    }
}

fn die(msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::exit(2);
}

fn flood(rng: &mut Rng) -> ! {
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut n = 0u64;
    loop {
        let x = rng.below(u64::MAX);
        let _ = if n.is_multiple_of(2) {
            writeln!(out, "{} flood {n} {x:016x}", crate::MARK)
        } else {
            writeln!(out, "chaos flood line {n}: {x:016x}{x:016x}{x:016x}")
        };
        let _ = out.flush();
        n += 1;
    }
}

fn irqoff() {
    if let Err(e) = pin_to_cpu(0) {
        die(&format!("chaos: pin to cpu 0: {e}"));
    }
    let _ = std::fs::create_dir_all("/sys/kernel/debug");
    let (src, dst, fs) = (c"debugfs", c"/sys/kernel/debug", c"debugfs");
    // SAFETY: NUL-terminated strings; no data argument.
    unsafe {
        libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null());
    }
    let path = "/sys/kernel/debug/provoke-crash/DIRECT";
    println!("chaos: HARDLOCKUP on cpu 0 through {path}");
    // The write does not return: CPU 0 spins with interrupts off.
    if let Err(e) = std::fs::write(path, "HARDLOCKUP\n") {
        die(&format!("chaos: {path}: {e} (a kernel with CONFIG_LKDTM?)"));
    }
}

/// Ports `pio` leaves alone: the console UART (so the verdict can still
/// be read) and what KVM emulates in the kernel (PIC, PIT, speaker/PIT
/// gate, ELCR): reprogrammed at random they can stop the guest's timer,
/// which is the guest hurting itself, not a test of the VMM.
const SPARED: &[std::ops::RangeInclusive<u16>] = &[
    0x3f8..=0x3ff,
    0x20..=0x21,
    0xa0..=0xa1,
    0x40..=0x43,
    0x61..=0x61,
    0x4d0..=0x4d1,
];

/// The access in flight, for the fault handler's message.
static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn on_fault(sig: libc::c_int) {
    let last = LAST.load(std::sync::atomic::Ordering::SeqCst);
    let msg = format!(
        "chaos: signal {sig} at access {} (port {:#x}, op {})\n",
        last >> 32,
        (last >> 8) & 0xffff,
        last & 0xff
    );
    // SAFETY: write(2) and _exit(2) are async-signal-safe.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(128 + sig);
    }
}

fn pio(rng: &mut Rng, count: u64) {
    // SAFETY: installs a handler that only writes and exits.
    unsafe {
        libc::signal(libc::SIGSEGV, on_fault as *const () as libc::sighandler_t);
        libc::signal(libc::SIGBUS, on_fault as *const () as libc::sighandler_t);
    }
    // SAFETY: ioperm only changes this thread's I/O bitmap.
    if unsafe { libc::ioperm(0, 65536, 1) } != 0 {
        die(&format!(
            "chaos: ioperm: {}",
            std::io::Error::last_os_error()
        ));
    }
    let (mut reads, mut writes) = (0u64, 0u64);
    for i in 0..count {
        let op = rng.below(6);
        // An access must end inside the 64 KiB port space (else #GP).
        let width = 1u64 << (op % 3);
        let port = rng.below(65537 - width) as u16;
        if SPARED.iter().any(|r| r.contains(&port)) {
            continue;
        }
        let val = rng.below(u64::from(u32::MAX)) as u32;
        LAST.store(
            i << 32 | u64::from(port) << 8 | op,
            std::sync::atomic::Ordering::SeqCst,
        );
        if op < 3 {
            writes += 1
        } else {
            reads += 1
        }
        // SAFETY: port I/O from user space, granted by ioperm above; it
        // touches no memory of this process.
        unsafe {
            match op {
                0 => std::arch::asm!("out dx, al", in("dx") port, in("al") val as u8),
                1 => std::arch::asm!("out dx, ax", in("dx") port, in("ax") val as u16),
                2 => std::arch::asm!("out dx, eax", in("dx") port, in("eax") val),
                3 => std::arch::asm!("in al, dx", in("dx") port, out("al") _),
                4 => std::arch::asm!("in ax, dx", in("dx") port, out("ax") _),
                _ => std::arch::asm!("in eax, dx", in("dx") port, out("eax") _),
            }
        }
    }
    println!("chaos: pio done: {reads} reads, {writes} writes");
}

/// Start and end of the unmapped 32-bit hole the mmio mode pokes: above
/// any RAM a test guest has, below the IOAPIC and LAPIC (KVM's own).
const HOLE: (u64, u64) = (0xc000_0000, 0xfec0_0000);
const WINDOW: usize = 1 << 20;

fn mmio(rng: &mut Rng, count: u64) {
    let fd = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/mem")
    {
        Ok(f) => f,
        Err(e) => die(&format!(
            "chaos: /dev/mem: {e} (a kernel with CONFIG_DEVMEM?)"
        )),
    };
    use std::os::fd::AsRawFd;
    let mut done = 0u64;
    while done < count {
        let base = HOLE.0 + rng.below((HOLE.1 - HOLE.0) / WINDOW as u64) * WINDOW as u64;
        // SAFETY: a fresh shared mapping of device memory; only this
        // function touches it, through volatile accesses, and unmaps it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                WINDOW,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                base as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            die(&format!(
                "chaos: mmap /dev/mem at {base:#x}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let p = p as *mut u8;
        for _ in 0..256.min(count - done) {
            let off = rng.below(WINDOW as u64 / 8) as usize * 8;
            let val = rng.below(u64::MAX);
            // SAFETY: `off` is 8-aligned and 8 below the window's end.
            unsafe {
                let a = p.add(off);
                match rng.below(8) {
                    0 => std::ptr::write_volatile(a, val as u8),
                    1 => std::ptr::write_volatile(a as *mut u16, val as u16),
                    2 => std::ptr::write_volatile(a as *mut u32, val as u32),
                    3 => std::ptr::write_volatile(a as *mut u64, val),
                    4 => drop(std::ptr::read_volatile(a)),
                    5 => drop(std::ptr::read_volatile(a as *const u16)),
                    6 => drop(std::ptr::read_volatile(a as *const u32)),
                    _ => drop(std::ptr::read_volatile(a as *const u64)),
                }
            }
            done += 1;
        }
        // SAFETY: the mapping made above, not used after this.
        unsafe { libc::munmap(p as *mut libc::c_void, WINDOW) };
    }
    println!("chaos: mmio done: {done} accesses");
}

fn triple() {
    println!("chaos: reboot (a triple fault with reboot=t)");
    // SAFETY: no pointers; the workload runs as root.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    die(&format!(
        "chaos: reboot: {}",
        std::io::Error::last_os_error()
    ));
}
