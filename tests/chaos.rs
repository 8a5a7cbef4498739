//! A hostile guest: the built-in `chaos` workload, one misbehaviour per
//! mode, on tests/fixtures/chaos's kernel (LKDTM, /dev/mem). Each ends in
//! a verdict within its timeout, and the VMM's memory stays bounded (peak
//! RSS of the VMM process, from wait4).
use preemptor_e2e::*;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FIXTURE: &str = "tests/fixtures/chaos";

/// Peak RSS the VMM may reach: its 128 MiB guest plus what it keeps
/// (console text is held to 8 MiB) and the kernel's symbols.
const MAX_RSS_MIB: u64 = 640;

struct Outcome {
    json: serde_json::Value,
    status: i32,
    wall: Duration,
    rss_mib: u64,
    log: String,
}

fn chaos(mode: &[&str], timeout: u64, cmdline: &str, extra: &[&str]) -> Outcome {
    require_kvm();
    let d = tmp(&format!("chaos-{}", mode[0]));
    let log = d.join("console.log");
    let mut args = vec![
        "boot",
        "--scenario",
        FIXTURE,
        "--kernel",
        "chaos",
        "--json",
        "--cmdline",
        cmdline,
        "--log",
        log.to_str().unwrap(),
    ];
    let t = timeout.to_string();
    args.extend(extra);
    args.extend(["--timeout", &t, "--workload", "chaos"]);
    args.extend(mode);
    let t0 = Instant::now();
    // Reaped below by wait4 (for its rusage), not by Child::wait.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(bin())
        .args(&args)
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    // Read the pipes while it runs, then reap it with wait4 for its rusage.
    let (mut so, mut se) = (child.stdout.unwrap(), child.stderr.unwrap());
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut se, &mut s).unwrap();
        s
    });
    let mut out = String::new();
    std::io::Read::read_to_string(&mut so, &mut out).unwrap();
    let err = err.join().unwrap();
    let mut status = 0;
    // SAFETY: plain out-parameters; pid is our child, not yet reaped.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4");
    let wall = t0.elapsed();
    let st = std::process::ExitStatus::from_raw(status);
    eprintln!(
        "$ preemptor {}\n--- stdout\n{out}--- stderr\n{err}--- status {st:?}, {:.1} s, peak RSS {} MiB",
        args.join(" "),
        wall.as_secs_f64(),
        ru.ru_maxrss / 1024
    );
    assert!(
        !err.contains("panicked"),
        "the VMM must not panic on guest behaviour: {err}"
    );
    let json = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .unwrap_or_else(|| panic!("no verdict: {err}"));
    let o = Outcome {
        json,
        status: st.code().unwrap_or(-1),
        wall,
        rss_mib: ru.ru_maxrss as u64 / 1024,
        log: std::fs::read_to_string(&log).unwrap_or_default(),
    };
    assert!(
        // Set-up (initramfs, symbols) comes before the VM's clock starts.
        o.wall < Duration::from_secs(timeout + 60),
        "a verdict within the timeout ({timeout} s): {:?}",
        o.wall
    );
    assert!(
        o.rss_mib < MAX_RSS_MIB,
        "VMM peak RSS {} MiB (bound {MAX_RSS_MIB})",
        o.rss_mib
    );
    o
}

fn verdict(o: &Outcome) -> &str {
    o.json["verdict"]["verdict"].as_str().unwrap_or("?")
}

/// Flooding the console for the whole timeout: a hang verdict, the marker
/// lines it forges harmless. 60 s: the timeout counts from power-on, and a
/// loaded host took all of 30 s to boot (the flood never started). (An emulated UART gives ~8 KB/s here, far
/// below the console's caps; `devices/console.rs`'s tests check those.)
#[test]
fn console_flood() {
    let o = chaos(&["flood"], 60, "", &[]);
    assert_eq!(verdict(&o), "hang", "{}", o.json);
    assert!(
        o.log.contains("chaos flood line"),
        "the flood reached the log"
    );
    // Forged marker lines do not make an end of the workload.
    assert_eq!(o.json["markers"]["status"], serde_json::Value::Null);
    assert_eq!(o.status, 1);
}

/// One CPU spinning with interrupts off for good (LKDTM HARDLOCKUP).
#[test]
fn interrupts_off_for_good() {
    let d = tmp("chaos-irqoff-trace");
    let trace = d.join("trace.jsonl");
    // A breakpoint that only counts: evidence the guest got to the spin.
    // The timeout counts from power-on: 60 s leaves the spin room after a
    // boot that a loaded host stretches to 35 s (measured).
    let o = chaos(
        &["irqoff"],
        60,
        "",
        &[
            "--break",
            "lkdtm_HARDLOCKUP,stall=1us",
            "--trace",
            trace.to_str().unwrap(),
        ],
    );
    let t = std::fs::read_to_string(&trace).unwrap_or_default();
    assert!(
        t.contains("lkdtm_HARDLOCKUP") || t.contains("\"fire\""),
        "LKDTM was reached: {t}"
    );
    let v = verdict(&o);
    let title = o.json["verdict"]["title"].as_str().unwrap_or("");
    assert!(
        v == "hang" || (v == "crash" && (title.contains("stall") || title.contains("lockup"))),
        "{}",
        o.json
    );
}

/// Random port I/O over all 65536 ports (the console's and KVM's
/// in-kernel devices' spared): the VMM ignores what it does not emulate,
/// an i8042 reset would be a reset, the guest goes on.
#[test]
fn random_port_io() {
    let o = chaos(&["pio", "count=20000"], 120, "", &[]);
    assert_eq!(verdict(&o), "clean", "{}", o.json);
    assert!(o.log.contains("chaos: pio done"), "all accesses made");
}

/// Random MMIO where nothing is mapped: reads give all ones, writes
/// vanish, the guest goes on.
#[test]
fn random_mmio() {
    let o = chaos(&["mmio", "count=5000"], 120, "", &[]);
    assert_eq!(verdict(&o), "clean", "{}", o.json);
    assert!(o.log.contains("chaos: mmio done"), "all accesses made");
}

/// A triple fault (reboot=t: an empty IDT, then int3) is a crash verdict
/// of its own.
#[test]
fn triple_fault() {
    let o = chaos(&["triple"], 60, "reboot=t", &[]);
    assert_eq!(verdict(&o), "crash", "{}", o.json);
    assert_eq!(o.json["verdict"]["title"], "triple fault", "{}", o.json);
}
