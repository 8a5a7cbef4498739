//! PID 1 of the preemptor guest (`/init`). Mounts proc/sys/devtmpfs, runs
//! the program whose argv the VMM packed into the initramfs
//! (`/preemptor/argv`, NUL-separated: `/bin/<workload>` or `/prog/<name>`,
//! then its arguments), brackets it with markers the VMM parses, then
//! restarts the machine: with `reboot=k` that is an i8042 reset the VMM
//! sees as a clean end.
//!
//! Markers (one line each, prefix `@@preemptor`):
//!   ready cpus=N          - booted, N CPUs online, workload about to start
//!   start workload=NAME args=A,B
//!   end workload=NAME status=S   (S: exit code, or 128+signal)
//!
//! The snapshot point is the program's: it calls [`crate::ready`] (C:
//! `preemptor_ready()`) once set up, which also hands it the run's seed.
//! For a program that does not (`preemptor.snapshot=start` on the command
//! line), init takes that place just before it starts the program. Either
//! way the program finds the run's seed in `PREEMPTOR_SEED`.
use crate::mark;
use std::ffi::CString;
use std::os::unix::process::ExitStatusExt;

fn mount(src: &str, target: &str, fstype: &str) {
    let _ = std::fs::create_dir_all(target);
    let (s, t, f) = (
        CString::new(src).unwrap(),
        CString::new(target).unwrap(),
        CString::new(fstype).unwrap(),
    );
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        eprintln!(
            "init: mount {fstype} on {target}: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn cmdline_param(cmdline: &str, key: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .map(str::to_string)
}

fn restart() -> ! {
    // SAFETY: sync and reboot take no pointers; as PID 1 we may reboot.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    // reboot(2) does not return on success; if it failed there is nothing
    // left to do but wait for the VMM's timeout.
    loop {
        std::thread::park();
    }
}

pub fn main() {
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("devtmpfs", "/dev", "devtmpfs");

    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let argv: Vec<String> = std::fs::read("/preemptor/argv")
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let (path, args) = match argv.split_first() {
        Some((p, a)) => (p.clone(), a.to_vec()),
        None => ("/bin/hello".to_string(), vec![]),
    };
    let workload = path.rsplit('/').next().unwrap_or(&path).to_string();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);

    mark(&format!("ready cpus={cpus}"));
    mark(&format!(
        "start workload={workload} args={}",
        args.join(",")
    ));
    let at_start = cmdline_param(&cmdline, "preemptor.snapshot").as_deref() == Some("start");
    let seed = crate::snapshot_point(at_start);
    let status = match std::process::Command::new(&path)
        .args(&args)
        .env("PREEMPTOR_SEED", seed.to_string())
        .status()
    {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(e) => {
            eprintln!("init: cannot run {path}: {e}");
            127
        }
    };
    mark(&format!("end workload={workload} status={status}"));
    restart();
}
