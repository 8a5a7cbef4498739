//! The programs that run inside the guest, as one static multi-call binary
//! (`-C target-feature=+crt-static`): `/init` is the binary itself and each
//! workload is a symlink to it in `/bin`, dispatched on `argv[0]`. One
//! binary instead of several keeps the initramfs small, and the guest
//! kernel unpacks it byte by byte under emulation (~4 s per MB here).

pub mod init;
pub mod workloads {
    pub mod exit_race;
    pub mod hello;
}

/// Workload names, as the VMM and scenarios know them.
pub const WORKLOADS: &[(&str, fn())] = &[
    ("hello", workloads::hello::main),
    ("exit-race", workloads::exit_race::main),
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
