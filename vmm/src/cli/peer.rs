//! `bench peer`: preemptor against what kernel developers do today, QEMU
//! with its gdb stub driven by a gdb script, on the same kernel, initramfs,
//! command line, workload and site. Cold boots on both sides, alternating.
//!
//! 1. Cost per breakpoint hit: each tool runs the workload with a
//!    breakpoint on the site that only counts and resumes (preemptor: a
//!    trigger that never fires; gdb: `hbreak` and `continue`), and without
//!    it; per hit = (with - without) / hits, for each.
//! 2. The scenario's race: preemptor runs the scenario; the gdb script
//!    breaks at each trigger's site and sleeps for its stall before going
//!    on, the best a gdb script can do. Crashes per hour of each.
use super::UsageError;
use crate::scenario::{runner, Goal, Scenario};
use crate::stall::TriggerSpec;
use crate::vstate::exitbench::median;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct PeerArgs {
    /// Scenario folder or TOML file.
    pub scenario: PathBuf,
    /// A variant of the scenario (default: its first).
    #[arg(long)]
    pub kernel: Option<String>,
    /// The site whose hits are timed (default: the scenario's first
    /// trigger's site).
    #[arg(long)]
    pub site: Option<String>,
    /// Runs of each of the four kinds for the cost per hit.
    #[arg(long, default_value_t = 2)]
    pub runs: usize,
    /// Runs of each tool on the scenario's race (0: skip).
    #[arg(long, default_value_t = 3)]
    pub race_runs: usize,
}

/// One QEMU run: wall seconds from start to exit, the serial text, and the
/// gdb script's hit count when one drove it.
struct QemuRun {
    seconds: f64,
    console: String,
    hits: Option<u64>,
    /// QEMU stopped on a KVM internal error (an instruction this host
    /// cannot emulate, which preemptor's host profile handles): its line.
    failed: Option<String>,
}

/// A guest as QEMU boots it (`bench boot`'s baseline too).
pub(super) struct Guest {
    pub vmlinux: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub vcpus: usize,
    pub mem_mib: u64,
    /// `-cpu`: the host profile's.
    pub cpu: &'static str,
    pub timeout: Duration,
}

impl Guest {
    /// QEMU's microvm booting this guest with its serial on stdout (piped)
    /// and stderr piped; a reboot is QEMU's exit.
    pub(super) fn qemu_command(&self) -> Command {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-M", "microvm,acpi=off", "-enable-kvm", "-cpu", self.cpu])
            .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
            .args([
                "-smp",
                &self.vcpus.to_string(),
                "-m",
                &format!("{}M", self.mem_mib),
            ])
            .args(["-serial", "stdio", "-kernel"])
            .arg(&self.vmlinux)
            .arg("-initrd")
            .arg(&self.initrd)
            .args(["-append", &self.cmdline])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
}

/// A gdb Python script: hardware breakpoints at `addrs` (each with a sleep
/// in seconds, 0 for none), `continue` until the target is gone, print the
/// number of stops.
fn gdb_script(port: u16, bps: &[(u64, f64)]) -> String {
    let mut s = String::from("import gdb, time\n");
    s += "gdb.execute('set pagination off')\n";
    s += &format!("gdb.execute('target remote 127.0.0.1:{port}')\n");
    s += "sleeps = {}\n";
    for (a, sleep) in bps {
        s += &format!("gdb.execute('hbreak *{a:#x}', to_string=True)\nsleeps[{a:#x}] = {sleep}\n");
    }
    s += "hits = 0\n";
    s += "while True:\n";
    s += "    try:\n";
    s += "        gdb.execute('continue', to_string=True)\n";
    s += "    except gdb.error:\n";
    s += "        break\n";
    s += "    hits += 1\n";
    s += "    try:\n";
    s += "        pc = int(gdb.parse_and_eval('$pc')) & 0xffffffffffffffff\n";
    s += "    except gdb.error:\n";
    s += "        break\n";
    s += "    if sleeps.get(pc, 0) > 0:\n";
    s += "        time.sleep(sleeps[pc])\n";
    s += "print('PEER-HITS', hits)\n";
    s
}

fn qemu(g: &Guest, gdb: Option<&[(u64, f64)]>, port: u16) -> Result<QemuRun, UsageError> {
    let start = Instant::now();
    let mut cmd = g.qemu_command();
    if gdb.is_some() {
        cmd.args(["-S", "-gdb", &format!("tcp:127.0.0.1:{port}")]);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| UsageError(format!("qemu-system-x86_64: {e}")))?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    // QEMU pauses the VM on a KVM internal error and waits: note it.
    let failed = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let f = failed.clone();
    std::thread::spawn(move || {
        let mut seen = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            seen |= line.contains("KVM internal error");
            // The instruction: the byte QEMU marks in its `Code=` dump.
            if let (true, Some(b)) = (seen, line.strip_prefix("Code=")) {
                let insn = b.split('<').nth(1).and_then(|x| x.split('>').next());
                *f.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                    "KVM internal error: emulation failure at instruction byte {}",
                    insn.unwrap_or("?")
                ));
            }
        }
    });
    // The run's end is its verdict's, as preemptor's: init's end marker,
    // or a kernel report whose title has settled. QEMU is killed there:
    // what follows is the guest's restart, and restarting by triple fault
    // (microvm has no i8042) is an `int3` kvm_pvm cannot run.
    let ended = std::sync::Arc::new(std::sync::Mutex::new(None::<f64>));
    let e = ended.clone();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
            let mut end = e.lock().unwrap_or_else(|e| e.into_inner());
            if end.is_none()
                && (line.contains("@@preemptor end") || crate::report::settled(&text).is_some())
            {
                *end = Some(start.elapsed().as_secs_f64());
            }
        }
        text
    });
    let script = std::env::temp_dir().join(format!("preemptor-peer-{}.py", std::process::id()));
    let gdb_child = match gdb {
        Some(bps) => {
            std::fs::write(&script, gdb_script(port, bps))?;
            // QEMU needs a moment to listen.
            std::thread::sleep(Duration::from_millis(300));
            let mut c = Command::new("gdb")
                .args(["-batch", "-nx", "-x"])
                .arg(&script)
                .arg(&g.vmlinux)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| UsageError(format!("gdb: {e}")))?;
            // Read gdb's output as it comes: gdb prints a line or two per
            // stop, and one pipe's worth unread (64 KiB, some 370 hits)
            // would block gdb, and with it the all-stopped guest.
            let out = c.stdout.take().expect("piped");
            let drain = std::thread::spawn(move || {
                let mut s = String::new();
                let _ = std::io::Read::read_to_string(&mut BufReader::new(out), &mut s);
                s
            });
            Some((c, drain))
        }
        None => None,
    };
    // The guest reboots at its end; -no-reboot makes that QEMU's exit.
    let deadline = start + g.timeout;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        let stopped = failed.lock().unwrap_or_else(|e| e.into_inner()).is_some()
            || ended.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        if stopped || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let console = reader.join().unwrap_or_default();
    let ended = *ended.lock().unwrap_or_else(|e| e.into_inner());
    let seconds = ended.unwrap_or_else(|| start.elapsed().as_secs_f64());
    // gdb ends when its connection closes with QEMU.
    let gdb_out = gdb_child.and_then(|(mut c, drain)| {
        let _ = c.wait();
        drain.join().ok()
    });
    let _ = std::fs::remove_file(&script);
    let hits = gdb_out.and_then(|o| {
        o.lines()
            .find_map(|l| l.strip_prefix("PEER-HITS ")?.trim().parse().ok())
    });
    // A failure after the end is the restart's, not the run's.
    let failed = failed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .filter(|_| ended.is_none());
    Ok(QemuRun {
        seconds,
        console,
        hits,
        failed,
    })
}

/// What QEMU's gdb stub says to non-stop mode (gdb's way of stopping one
/// thread, here one vCPU, while the others run): asked, not assumed.
fn nonstop_answer(g: &Guest, port: u16) -> Result<String, UsageError> {
    let mut q = g.qemu_command();
    q.args(["-S", "-gdb", &format!("tcp:127.0.0.1:{port}")]);
    let mut child = q
        .spawn()
        .map_err(|e| UsageError(format!("qemu-system-x86_64: {e}")))?;
    std::thread::sleep(Duration::from_millis(300));
    let o = Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "set non-stop on", "-ex"])
        .arg(format!("target remote 127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .output();
    let _ = child.kill();
    let _ = child.wait();
    let o = o.map_err(|e| UsageError(format!("gdb: {e}")))?;
    let text =
        String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    Ok(match text.lines().find(|l| l.contains("non-stop")) {
        Some(l) => format!("asked for non-stop mode, gdb said \"{}\"", l.trim()),
        None => "non-stop mode was accepted (this script still uses all-stop)".into(),
    })
}

fn need(cmd: &str, pkg: &str) -> Result<(), UsageError> {
    if Command::new(cmd).arg("--version").output().is_ok() {
        Ok(())
    } else {
        Err(UsageError(format!(
            "{cmd} not found: `preemptor setup --bench` installs {pkg}"
        )))
    }
}

pub fn run(a: PeerArgs) -> Result<i32, UsageError> {
    need("qemu-system-x86_64", "qemu-system-x86")?;
    need("gdb", "gdb")?;
    let scn = Scenario::load(&a.scenario)?;
    let kernel = a
        .kernel
        .clone()
        .unwrap_or_else(|| scn.variants().remove(0).0);
    let site = match &a.site {
        Some(s) => s.clone(),
        None => scn
            .triggers
            .first()
            .map(|t| t.site.clone())
            .ok_or(UsageError(
                "the scenario has no trigger: give --site".into(),
            ))?,
    };
    let p = runner::prepare(scn.clone(), &kernel, true, false)?;
    let syms = p
        .symbols()
        .ok_or(UsageError("the kernel has no vmlinux symbols".into()))?;
    let addrs: Vec<u64> = syms.resolve(&site)?.iter().map(|s| s.addr).collect();
    if addrs.is_empty() || addrs.len() > 4 {
        return Err(UsageError(format!(
            "site {site}: {} addresses (1 to 4 hardware breakpoints)",
            addrs.len()
        )));
    }
    let cfg = p.boot_config();
    let initrd = std::env::temp_dir().join(format!("preemptor-peer-{}.cpio", std::process::id()));
    std::fs::File::create(&initrd)?.write_all(&cfg.initramfs)?;
    let g = Guest {
        vmlinux: p.kernel().path.clone(),
        initrd: initrd.clone(),
        cmdline: cfg.cmdline.clone(),
        vcpus: cfg.vm.vcpus,
        mem_mib: cfg.vm.mem_mib,
        cpu: p.profile.qemu_cpu,
        timeout: cfg.timeout,
    };
    let port = 47000 + (std::process::id() % 1000) as u16;
    println!(
        "bench peer: {} on {kernel}, site {site} ({} address{}), host profile {}; \
         cold boots, alternating, {} runs of each",
        p.scenario.name,
        addrs.len(),
        if addrs.len() == 1 { "" } else { "es" },
        p.profile.name(),
        a.runs
    );
    let count = TriggerSpec {
        probability: Some(0.0),
        ..TriggerSpec::new("count", &site)
    };
    let none = Goal::default();
    let (mut pw, mut pwo, mut qw, mut qwo) = (vec![], vec![], vec![], vec![]);
    let (mut p_hits, mut q_hits) = (vec![], vec![]);
    for i in 0..a.runs {
        let r = p.run_with(i, 1 + i as u64, None, std::slice::from_ref(&count), &none)?;
        let hits = r
            .events
            .iter()
            .filter(|e| e.kind == crate::stall::EventKind::Hit)
            .count() as u64;
        println!(
            "  preemptor, breakpoint: {:.2} s, {hits} hits ({})",
            r.seconds, r.verdict
        );
        pw.push(r.seconds);
        p_hits.push(hits);
        let r = p.run_with(i, 1 + i as u64, None, &[], &none)?;
        println!(
            "  preemptor, none:       {:.2} s ({})",
            r.seconds, r.verdict
        );
        pwo.push(r.seconds);
        let bps: Vec<(u64, f64)> = addrs.iter().map(|a| (*a, 0.0)).collect();
        let q = qemu(&g, Some(&bps), port)?;
        let hits = q.hits.unwrap_or(0);
        println!(
            "  QEMU + gdb, hbreak:    {:.2} s, {hits} hits{}",
            q.seconds,
            workload_note(&q)
        );
        qw.push(q.seconds);
        q_hits.push(hits);
        let q = qemu(&g, None, port)?;
        println!(
            "  QEMU, none:            {:.2} s{}",
            q.seconds,
            workload_note(&q)
        );
        if let Some(f) = &q.failed {
            println!(
                "QEMU cannot run this workload on this host ({f}); preemptor's host profile \
                 completes that instruction itself. No QEMU figures."
            );
            let _ = std::fs::remove_file(&initrd);
            return Ok(0);
        }
        qwo.push(q.seconds);
    }
    let per_hit = |with: &mut Vec<f64>, without: &mut Vec<f64>, hits: &mut Vec<u64>| {
        let (w, wo, h) = (median(with), median(without), median(hits));
        (w, wo, h, (w - wo).max(0.0) / h.max(1) as f64)
    };
    let (a1, b1, h1, c1) = per_hit(&mut pw, &mut pwo, &mut p_hits);
    let (a2, b2, h2, c2) = per_hit(&mut qw, &mut qwo, &mut q_hits);
    println!(
        "cost per hit (medians): preemptor {:.1} us ({h1} hits, {a1:.2} s against {b1:.2} s: \
         slowdown {:.2}x); QEMU + gdb {:.1} us ({h2} hits, {a2:.2} s against {b2:.2} s: \
         slowdown {:.2}x); ratio {:.1}x",
        c1 * 1e6,
        a1 / b1,
        c2 * 1e6,
        a2 / b2,
        c2 / c1.max(1e-9)
    );
    // Cold boots vary by seconds on a loaded host: the spread says how far
    // a difference of medians can be trusted.
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{lo:.1}..{hi:.1} s")
    };
    println!(
        "spread of the runs: preemptor {} with, {} without; QEMU {} with, {} without",
        spread(&pw),
        spread(&pwo),
        spread(&qw),
        spread(&qwo)
    );
    if a.race_runs > 0 {
        let prep = runner::prepare(scn, &kernel, true, a.race_runs > 1)?;
        race(&prep, &g, port, a.race_runs)?;
    }
    let _ = std::fs::remove_file(&initrd);
    Ok(0)
}

fn workload_note(q: &QemuRun) -> String {
    match &q.failed {
        Some(f) => format!(" (QEMU stopped: {f})"),
        None if q.console.contains("@@preemptor end") => String::new(),
        None => " (the workload did not end)".into(),
    }
}

/// The scenario's race both ways: crashes per hour (preemptor's time
/// includes taking its snapshot).
fn race(p: &runner::Prepared, g: &Guest, port: u16, runs: usize) -> Result<(), UsageError> {
    let syms = p.symbols().expect("checked");
    // The gdb script: each trigger's site, sleeping for its stall (the
    // longest it could be: a fixed duration, else its timeout).
    let mut bps: Vec<(u64, f64)> = Vec::new();
    let mut dropped: Vec<String> = Vec::new();
    for t in &p.scenario.triggers {
        let st = &t.stall;
        let sleep = st
            .duration
            .or(st.timeout)
            .map_or(0.0, |d| d.hi.as_secs_f64());
        if st.until.is_some() || st.outlast.is_some() {
            dropped.push(format!("{}: stall until/outlast another trigger", t.name));
        }
        if t.during.is_some() || t.acts_on_stalled || !t.regs.is_empty() || t.task_flags.is_some() {
            dropped.push(format!("{}: conditions (during, registers, task)", t.name));
        }
        for s in syms.resolve(&t.site)? {
            bps.push((s.addr, sleep));
        }
    }
    bps.truncate(4);
    let t = Instant::now();
    let mut crashes = 0;
    for i in 0..runs {
        let r = p.run_once(i, 1 + i as u64, None)?;
        crashes += usize::from(matches!(
            r.verdict,
            crate::boot::verdict::Verdict::Crash { .. }
        ));
    }
    let p_secs = t.elapsed().as_secs_f64();
    let (mut q_crashes, mut q_secs) = (0, 0.0);
    for _ in 0..runs {
        let q = qemu(g, Some(&bps), port)?;
        q_secs += q.seconds;
        let crash = crate::report::classify(&q.console);
        println!(
            "  QEMU + gdb, race:      {:.2} s, {}{}",
            q.seconds,
            crash.as_ref().map_or("no crash", |r| r.title.as_str()),
            workload_note(&q)
        );
        q_crashes += usize::from(crash.is_some());
    }
    let per_hour = |c: usize, s: f64| c as f64 * 3600.0 / s.max(1e-9);
    let (p_rate, q_rate) = (per_hour(crashes, p_secs), per_hour(q_crashes, q_secs));
    // No crash on one side gives a bound, not a ratio: the rate it would
    // have had with one crash in the same time.
    let ratio = match (crashes, q_crashes) {
        (0, 0) => "none: neither reached the BUG".to_string(),
        (_, 0) => format!(
            "over {:.0}x (QEMU + gdb reached it in none of {runs}; one would be {:.0}/hour)",
            p_rate / per_hour(1, q_secs),
            per_hour(1, q_secs)
        ),
        (0, _) => format!("under {:.3}x", per_hour(1, p_secs) / q_rate),
        _ => format!("{:.1}x", p_rate / q_rate),
    };
    println!(
        "race ({runs} runs each): preemptor {crashes}/{runs} crashes in {p_secs:.1} s = {p_rate:.0}/hour \
         (restored runs); QEMU + gdb {q_crashes}/{runs} in {q_secs:.1} s = {q_rate:.0}/hour (cold \
         boots); ratio {ratio}"
    );
    println!(
        "what the gdb script could not express: gdb's all-stop mode stops every vCPU at a \
         breakpoint, so its sleep stalls the whole machine, not one vCPU ({}); {}",
        nonstop_answer(g, port)?,
        if dropped.is_empty() {
            "nothing else".to_string()
        } else {
            dropped.join("; ")
        }
    );
    Ok(())
}
