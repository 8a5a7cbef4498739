//! The programs that run inside the guest, as one static multi-call binary
//! (`-C target-feature=+crt-static`): `/init` is the binary itself and each
//! workload is a symlink to it in `/bin`, dispatched on `argv[0]`. One
//! binary instead of several keeps the initramfs small, and the guest
//! kernel unpacks it byte by byte under emulation (~4 s per MB here).

pub mod init;
pub mod workloads {
    pub mod chaos;
    pub mod exit_race;
    pub mod hello;
}

/// Workload names, as the VMM and scenarios know them.
pub const WORKLOADS: &[(&str, fn())] = &[
    ("hello", workloads::hello::main),
    ("exit-race", workloads::exit_race::main),
    ("chaos", workloads::chaos::main),
];

use std::io::Write;

/// Prefix of every line the VMM parses; nothing else in a console starts so.
pub const MARK: &str = "@@preemptor";

/// Print one marker line straight to the console in one write, so lines of
/// several CPUs never interleave mid-marker.
pub fn mark(what: &str) {
    let line = format!("{MARK} {what}\n");
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

/// I/O port the VMM owns. A byte written here is the snapshot point: the
/// VMM stops every vCPU and saves the machine, and each restored run goes
/// on from just after the write. A 32-bit read returns this run's seed.
const SNAPSHOT_PORT: u16 = 0x501;

/// Call once, when the workload is set up and about to do what a scenario
/// studies: with `preemptor.snapshot` on the command line this is where the
/// VMM snapshots the machine (so per-run cost excludes process start and
/// setup). Returns this run's seed, from the VMM, read after the snapshot
/// so each restored run gets its own. The VMM notes the read in its log.
pub fn ready() -> u32 {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    // `preemptor.snapshot=start`: init took the snapshot before starting us.
    let snapshot = cmdline
        .split_whitespace()
        .any(|w| w == "preemptor.snapshot");
    snapshot_point(snapshot)
}

/// Write the snapshot port if `snapshot` (the VMM stops there when it is
/// taking a snapshot, and ignores the write otherwise), then read the
/// run's seed from it.
pub fn snapshot_point(snapshot: bool) -> u32 {
    let mut seed = 0u32;
    // SAFETY: ioperm grants this thread the port, 4 bytes wide for the
    // 32-bit seed read; `out`/`in` touch nothing else.
    unsafe {
        if libc::ioperm(SNAPSHOT_PORT as libc::c_ulong, 4, 1) != 0 {
            eprintln!("ready: ioperm: {}", std::io::Error::last_os_error());
        } else {
            if snapshot {
                std::arch::asm!("out dx, al", in("dx") SNAPSHOT_PORT, in("al") 1u8,
                    options(nomem, nostack));
            }
            std::arch::asm!("in eax, dx", in("dx") SNAPSHOT_PORT, out("eax") seed,
                options(nomem, nostack));
        }
    }
    seed
}

/// A small PRNG for workload jitter (xorshift64*): reproducible per seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        if n == 0 {
            0
        } else {
            x % n
        }
    }
}

/// Pin the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity(0) targets this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Parse `key=value` arguments with defaults; unknown keys are an error so
/// a typo in a scenario never silently runs the default workload.
pub fn parse_args(args: &[String], known: &[(&str, u64)]) -> Result<Vec<u64>, String> {
    let mut vals: Vec<u64> = known.iter().map(|(_, d)| *d).collect();
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or(format!("argument '{a}' is not key=value"))?;
        let i = known
            .iter()
            .position(|(n, _)| *n == k)
            .ok_or(format!("unknown argument '{k}'"))?;
        vals[i] = v
            .parse()
            .map_err(|_| format!("argument '{k}': '{v}' is not a number"))?;
    }
    Ok(vals)
}
