//! Shared by the guest programs: the console markers the VMM parses and
//! small libc wrappers. Everything here runs inside the guest as static
//! binaries (`-C target-feature=+crt-static`), with PID 1 = `init`.

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
        let (k, v) = a.split_once('=').ok_or(format!("argument '{a}' is not key=value"))?;
        let i = known
            .iter()
            .position(|(n, _)| *n == k)
            .ok_or(format!("unknown argument '{k}'"))?;
        vals[i] = v.parse().map_err(|_| format!("argument '{k}': '{v}' is not a number"))?;
    }
    Ok(vals)
}
