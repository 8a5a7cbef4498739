//! `preemptor bench`: figures, not assertions. `bench boot` times this VMM
//! against QEMU's microvm on the same kernel, initramfs and command line,
//! alternating runs, to the init's first line.
use super::UsageError;
use crate::boot::{self, artifacts, verdict, BootConfig};
use crate::devices::ConsoleConfig;
use crate::host::HostProfile;
use crate::vstate::VmConfig;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(clap::Subcommand)]
pub enum BenchWhat {
    /// Median time per scenario run: restored from a snapshot vs cold-booted.
    Runs {
        /// Scenario folder or TOML file.
        scenario: std::path::PathBuf,
        /// A variant of the scenario or a kernel path (default: its first variant).
        #[arg(long)]
        kernel: Option<String>,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Round trip of a breakpoint hit (hit, step over, re-arm) against a
    /// bare port-I/O exit, on a two-instruction guest.
    Exits {
        #[arg(long, default_value_t = 10_000)]
        samples: usize,
    },
    /// Against QEMU + gdb on the same guest and site: cost per breakpoint
    /// hit, workload slowdown, and crashes per hour on the scenario's race.
    Peer(super::peer::PeerArgs),
    /// How much faster directed stalls find a race than random vCPU
    /// preemption (a busy host) and than no injection: crash rates and
    /// runs per crash of each, from the same snapshot.
    Accel {
        /// Scenario folder or TOML file.
        scenario: std::path::PathBuf,
        /// Its variant to use (default: the first that expects a crash).
        #[arg(long)]
        kernel: Option<String>,
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// Random-preemption profiles or specs to try (default: every
        /// profile); the best is compared.
        #[arg(long = "preempt", value_name = "PROFILE|SPEC")]
        preempt: Vec<crate::vstate::PreemptConfig>,
    },
    /// Many restored runs on each kernel: verdict counts, and for the
    /// first and last 10% of runs the median run time, the VMM's RSS, open
    /// fds, threads and the pages each run dirtied (a leak shows as a slope).
    Soak {
        /// Scenario folder or TOML file.
        scenario: std::path::PathBuf,
        /// Variants to soak (default: every variant of the scenario).
        #[arg(long = "kernel")]
        kernels: Vec<String>,
        #[arg(long, default_value_t = 1000)]
        runs: usize,
        /// VMs at once (default: host cores / the guest's vCPUs); the
        /// resource figures are the whole process's.
        #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u64).range(1..=256))]
        jobs: Option<u64>,
    },
    /// Runs per hour with 1, 2, 4, ... VMs at once from one snapshot, the
    /// verdict counts at each, and a model for bigger hosts.
    Jobs(super::benchjobs::JobsArgs),
    /// How reliable explore is: runs to the first wanted crash and to the
    /// first confirmed finding over several seeds, adaptive vs uniform.
    Explore(super::benchexplore::ExploreBenchArgs),
    /// Median time to the init's first line: preemptor vs QEMU microvm.
    Boot {
        #[arg(long, default_value = "base")]
        kernel: String,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, default_value_t = 2)]
        vcpus: usize,
        #[arg(long, default_value_t = 128)]
        memory: u64,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

use crate::vstate::exitbench::median;

fn ensure_qemu() -> Result<(), UsageError> {
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok()
    {
        return Ok(());
    }
    eprintln!("preemptor: installing qemu-system-x86 (the baseline) with apt");
    let ok = Command::new("sh")
        .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err(UsageError(
            "cannot install qemu-system-x86 for the baseline".into(),
        ))
    }
}

/// Seconds from QEMU's start to the init's first marker on its serial.
fn qemu_once(g: &super::peer::Guest) -> Result<f64, UsageError> {
    let start = Instant::now();
    let mut child = g
        .qemu_command()
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| UsageError(format!("qemu-system-x86_64: {e}")))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(crate::devices::console::MARK) {
                let _ = tx.send(start.elapsed().as_secs_f64());
                return;
            }
        }
    });
    let r = rx.recv_timeout(g.timeout);
    let _ = child.kill();
    let _ = child.wait();
    r.map_err(|_| UsageError(format!("QEMU did not reach init within {:?}", g.timeout)))
}

pub fn run(a: BenchArgs) -> Result<i32, UsageError> {
    match a.what {
        BenchWhat::Boot {
            kernel,
            runs,
            vcpus,
            memory,
            timeout,
        } => boot(&kernel, runs, vcpus, memory, timeout),
        BenchWhat::Exits { samples } => exits(samples),
        BenchWhat::Peer(a) => super::peer::run(a),
        BenchWhat::Jobs(a) => super::benchjobs::run(a),
        BenchWhat::Explore(a) => super::benchexplore::run(a),
        BenchWhat::Soak {
            scenario,
            kernels,
            runs,
            jobs,
        } => soak(&scenario, kernels, runs, jobs),
        BenchWhat::Accel {
            scenario,
            kernel,
            runs,
            preempt,
        } => accel(&scenario, kernel.as_deref(), runs, preempt),
        BenchWhat::Runs {
            scenario,
            kernel,
            runs,
        } => scenario_runs(&scenario, kernel.as_deref(), runs),
    }
}

/// (RSS KiB, open fds, threads) of this process now.
fn resources() -> (u64, usize, usize) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let count = |d: &str| std::fs::read_dir(d).map(|d| d.count()).unwrap_or(0);
    (rss, count("/proc/self/fd"), count("/proc/self/task"))
}

fn soak(
    path: &std::path::Path,
    kernels: Vec<String>,
    runs: usize,
    jobs: Option<u64>,
) -> Result<i32, UsageError> {
    use crate::scenario::{runner, Scenario};
    let scn = Scenario::load(path)?;
    let kernels = if kernels.is_empty() {
        scn.variants().into_iter().map(|(n, _)| n).collect()
    } else {
        kernels
    };
    if runs < 10 {
        return Err(UsageError("--runs: a soak needs at least 10 runs".into()));
    }
    crate::boot::catch_interrupts()?;
    let mut ok = true;
    for k in &kernels {
        let p = runner::prepare(scn.clone(), k, true, true)?;
        let expect = p.expectation(None);
        let mut rows: Vec<(f64, u64, usize, usize, usize)> = Vec::new();
        let mut rs = Vec::new();
        let jobs = super::run::jobs_or_default(jobs, scn.guest.vcpus);
        let work = |i: usize| {
            if crate::boot::interrupted() {
                return Ok(None);
            }
            p.run_once(i, 1 + i as u64, None).map(|mut r| {
                // Keep only what the summary needs: the soak's own
                // bookkeeping must not look like the VMM's growth.
                r.events = Vec::new();
                r.diagram = String::new();
                r.report = None;
                Some(r)
            })
        };
        crate::scenario::parallel::try_in_order(
            runs,
            jobs,
            |i| format!("run {i}"),
            work,
            |_, r| {
                let (rss, fds, threads) = resources();
                let pages = r.restore.as_ref().map(|x| x.pages).unwrap_or(0);
                rows.push((r.seconds, rss, fds, threads, pages));
                rs.push(r);
            },
        )?;
        let n = rows.len();
        if n < 10 {
            break;
        }
        let tenth = (n / 10).max(1);
        // The first run restores all memory: the dirty-page figures start
        // at the second.
        let (first, last) = (&rows[1..=tenth], &rows[n - tenth..]);
        let med = |mut v: Vec<f64>| median(&mut v);
        let col = |rows: &[(f64, u64, usize, usize, usize)],
                   f: fn(&(f64, u64, usize, usize, usize)) -> f64| {
            med(rows.iter().map(f).collect())
        };
        let s = runner::summarize(&rs);
        println!(
            "bench soak: {} on {k}, {n} restored runs; verdicts: {} crash, {} clean, {} hang, {} host-error, {} inconclusive; expectation {}",
            scn.name,
            s.crashes,
            s.clean,
            s.hangs,
            s.host_errors,
            s.inconclusive,
            if runner::holds(&rs, expect) { "holds" } else { "FAILS" }
        );
        for (t, _) in &s.titles {
            println!("  title: {t}");
        }
        // Each run that does not count for the expectation, with what its
        // triggers did: the explanation a soak owes (first 20).
        let odd: Vec<_> = rs
            .iter()
            .filter(|r| !r.conclusive || !runner::verdict_matches(r, expect))
            .collect();
        for r in odd.iter().take(20) {
            println!(
                "  run {}: {}{}, goal {}; fired: {} ({:.2} s)",
                r.index + 1,
                r.verdict,
                if r.conclusive { "" } else { " (inconclusive)" },
                if r.goal_reached { "reached" } else { "missed" },
                fired_list(&r.fired),
                r.seconds
            );
        }
        if odd.len() > 20 {
            println!("  ... and {} more such runs", odd.len() - 20);
        }
        println!(
            "  {:<26} {:>12} {:>12} {:>10}",
            "median of", "first 10%", "last 10%", "change"
        );
        let line = |name: &str, a: f64, b: f64| {
            println!(
                "  {name:<26} {a:>12.2} {b:>12.2} {:>9.1}%",
                if a > 0.0 { (b - a) / a * 100.0 } else { 0.0 }
            )
        };
        line("run time (s)", col(first, |r| r.0), col(last, |r| r.0));
        line(
            "VMM RSS (MiB)",
            col(first, |r| r.1 as f64) / 1024.0,
            col(last, |r| r.1 as f64) / 1024.0,
        );
        line(
            "open fds",
            col(first, |r| r.2 as f64),
            col(last, |r| r.2 as f64),
        );
        line(
            "threads",
            col(first, |r| r.3 as f64),
            col(last, |r| r.3 as f64),
        );
        line(
            "dirty pages per run",
            col(first, |r| r.4 as f64),
            col(last, |r| r.4 as f64),
        );
        // Least-squares slope of RSS over the run index, per 1000 runs,
        // from the second run (the first maps all of the snapshot's memory).
        let xs: Vec<f64> = (1..n).map(|i| i as f64).collect();
        let ys: Vec<f64> = rows[1..].iter().map(|r| r.1 as f64).collect();
        let m = xs.len() as f64;
        let (mx, my) = (xs.iter().sum::<f64>() / m, ys.iter().sum::<f64>() / m);
        let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
        let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
        println!(
            "  RSS slope: {:+.1} KiB per 1000 runs; fds {} -> {}, threads {} -> {}",
            if sxx > 0.0 { sxy / sxx * 1000.0 } else { 0.0 },
            rows[0].2,
            rows[n - 1].2,
            rows[0].3,
            rows[n - 1].3
        );
        ok &= runner::holds(&rs, expect);
    }
    Ok(if crate::boot::interrupted() {
        130
    } else if ok {
        0
    } else {
        1
    })
}

/// A run's fires, in order, the first 12.
fn fired_list(f: &[String]) -> String {
    match f.len() {
        0 => "-".into(),
        n if n <= 12 => f.join(" "),
        n => format!("{} ... ({n} in all)", f[..12].join(" ")),
    }
}

/// Crash rate text: `k/n = x% (95% CI lo-hi%)`, and runs per crash.
fn rate(rs: &[crate::scenario::runner::RunResult]) -> (String, Option<f64>, (f64, f64)) {
    let s = crate::scenario::runner::summarize(rs);
    let (lo, hi) = s.crash_rate_ci95.unwrap_or((0.0, 1.0));
    let r = s.crash_rate.unwrap_or(0.0);
    let per = if s.crashes > 0 {
        format!("{:.1}", s.conclusive as f64 / s.crashes as f64)
    } else {
        format!("> {}", s.conclusive)
    };
    (
        format!(
            "{:>3}/{:<3} = {:>5.1}% (95% CI {:.1}-{:.1}%), runs per crash {per}",
            s.crashes,
            s.conclusive,
            r * 100.0,
            lo * 100.0,
            hi * 100.0
        ),
        s.crash_rate,
        (lo, hi),
    )
}

fn accel(
    path: &std::path::Path,
    kernel: Option<&str>,
    runs: usize,
    mut profiles: Vec<crate::vstate::PreemptConfig>,
) -> Result<i32, UsageError> {
    use crate::scenario::{runner, Expect, Scenario};
    let scn = Scenario::load(path)?;
    let kernel = match kernel {
        Some(k) => k.to_string(),
        None => scn
            .variants()
            .into_iter()
            .find(|(_, v)| v.expect == Some(Expect::Crash))
            .map(|(n, _)| n)
            .ok_or(UsageError(format!(
                "{}: no kernel variant expects a crash: give --kernel",
                scn.path.display()
            )))?,
    };
    if profiles.is_empty() {
        for (name, ..) in crate::vstate::preempt::PROFILES {
            profiles.push(name.parse().map_err(UsageError)?);
        }
    }
    // One snapshot for all: the directed runs take it, the rest restore it.
    let directed = runner::prepare(scn.clone(), &kernel, true, true)?;
    let mut none = runner::prepare(scn.clone(), &kernel, false, true)?;
    none.share_snapshot(&directed);
    println!(
        "bench accel: {} on kernel {kernel}, {runs} runs each, one snapshot; host profile {}",
        scn.name,
        directed.profile.name()
    );
    let go = |p: &runner::Prepared, label: &str| -> Result<_, UsageError> {
        let mut rs = Vec::new();
        for i in 0..runs {
            rs.push(p.run_once(i, 1 + i as u64, None)?);
        }
        let (text, r, ci) = rate(&rs);
        println!("  {label:<28} {text}");
        Ok((r, ci))
    };
    let (a, a_ci) = go(&directed, "(a) directed stalls")?;
    let mut best: Option<(String, Option<f64>, (f64, f64))> = None;
    for p in &profiles {
        let mut q = runner::prepare(scn.clone(), &kernel, false, true)?;
        q.share_snapshot(&directed);
        q.preempt = Some(p.clone());
        let (r, ci) = go(&q, &format!("(b) random: {}", p.name))?;
        if best
            .as_ref()
            .is_none_or(|b| r.unwrap_or(0.0) > b.1.unwrap_or(0.0))
        {
            best = Some((p.name.clone(), r, ci));
        }
    }
    let (c, c_ci) = go(&none, "(c) no injection")?;
    let (bname, b, b_ci) = best.expect("at least one profile");
    // A ratio against a rate of 0 is bounded by the other side's interval.
    let ratio = |x: Option<f64>, x_ci: (f64, f64), y: Option<f64>, y_ci: (f64, f64)| match (
        x.unwrap_or(0.0),
        y.unwrap_or(0.0),
    ) {
        (x, y) if y > 0.0 => format!("{:.1}x", x / y),
        (x, _) if x > 0.0 => format!(
            "at least {:.0}x (0 crashes: rate below {:.1}%)",
            x_ci.0 / y_ci.1,
            y_ci.1 * 100.0
        ),
        _ => "n/a (neither crashed)".into(),
    };
    println!(
        "  (a)/(b) directed vs best random ({bname}): {}",
        ratio(a, a_ci, b, b_ci)
    );
    println!(
        "  (b)/(c) best random vs no injection: {}",
        ratio(b, b_ci, c, c_ci)
    );
    Ok(0)
}

fn scenario_runs(
    path: &std::path::Path,
    kernel: Option<&str>,
    runs: usize,
) -> Result<i32, UsageError> {
    use crate::scenario::{runner, Scenario};
    let scn = Scenario::load(path)?;
    let first = scn.variants().remove(0).0;
    let kernel = kernel.unwrap_or(&first);
    let mut snap = runner::prepare(scn.clone(), kernel, true, true)?;
    snap.verify_restore = true;
    // The same restored runs waiting for each report's end: what ending
    // where the title settles saves.
    let mut whole = runner::prepare(scn.clone(), kernel, true, true)?;
    whole.wait_for_full_reports();
    let cold = runner::prepare(scn, kernel, true, false)?;
    let t = Instant::now();
    let mib = snap.snapshot()?.mem_mib;
    whole.share_snapshot(&snap);
    let take = t.elapsed().as_secs_f64();
    println!(
        "bench runs: {} on {kernel}, {runs} runs each way, alternating; \
         snapshot taken in {take:.1} s ({mib} MiB guest)",
        snap.scenario.name
    );
    let (mut a, mut b, mut w) = (Vec::new(), Vec::new(), Vec::new());
    let (mut fixed_ms, mut dirty_mib, mut copy_ms, mut full) = (Vec::new(), 0.0, 0.0, None);
    let mut stale = 0;
    for i in 0..runs {
        let r = snap.run_once(i, 1 + i as u64, None)?;
        let st = r
            .restore
            .clone()
            .ok_or(UsageError("restored run without restore".into()))?;
        let m = st.pages as f64 / 256.0;
        println!(
            "  run {i}: restored {:.2} s ({}); restore {:.1} ms, {} pages = {m:.2} MiB copied in {:.2} ms{}",
            r.seconds,
            r.verdict,
            st.restore_ms,
            st.pages,
            st.copy_ms,
            if st.full { " (first run: all memory)" } else { "" }
        );
        if st.full {
            full = Some((st.restore_ms, st.copy_ms));
        } else {
            fixed_ms.push(st.restore_ms - st.copy_ms);
            dirty_mib += m;
            copy_ms += st.copy_ms;
        }
        stale += st.stale_pages.unwrap_or(0);
        a.push(r.seconds);
        let r = whole.run_once(i, 1 + i as u64, None)?;
        println!(
            "  run {i}: restored, whole reports {:.2} s ({})",
            r.seconds, r.verdict
        );
        w.push(r.seconds);
        let r = cold.run_once(i, 1 + i as u64, None)?;
        println!("  run {i}: cold     {:.2} s ({})", r.seconds, r.verdict);
        b.push(r.seconds);
    }
    let (ma, mb, mw) = (median(&mut a), median(&mut b), median(&mut w));
    println!(
        "median per run: restored {ma:.2} s, cold boot {mb:.2} s, ratio {:.3} (1/{:.0}); \
         restored waiting for whole reports {mw:.2} s (1/{:.0} of cold)",
        ma / mb,
        mb / ma,
        mb / mw
    );
    if let Some((total, copy)) = full {
        println!(
            "full restore (first run): {total:.1} ms, of which copying {mib} MiB {copy:.1} ms ({:.3} ms/MiB)",
            copy / mib as f64
        );
    }
    if dirty_mib > 0.0 {
        println!(
            "dirty-page restores: {:.2} ms fixed (fresh VM, vCPU and device state, median) \
             + {:.3} ms per MiB of dirty memory ({dirty_mib:.1} MiB over {} runs); \
             pages still differing from the snapshot after restore: {stale}",
            median(&mut fixed_ms),
            copy_ms / dirty_mib,
            fixed_ms.len()
        );
    }
    Ok(0)
}

fn exits(samples: usize) -> Result<i32, UsageError> {
    use crate::vstate::exitbench::{self, ResumeMethod};
    let c = exitbench::measure(samples).map_err(UsageError)?;
    let profile = HostProfile::probe();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "bench exits ({} samples each, medians, host profile {}, which resumes by {:?}): \
         port-I/O exit {:.1} us",
        c.samples,
        profile.name(),
        profile.resume,
        us(c.io_exit),
    );
    for (how, d) in &c.breakpoint {
        let what = match how {
            ResumeMethod::Step => "breakpoints off, single-step, breakpoints on",
            ResumeMethod::ResumeFlag => "RFLAGS.RF",
            ResumeMethod::Emulate => "the VMM does the instruction (mov %eax,(%rsi))",
        };
        println!(
            "  breakpoint hit + resume, {what}: {:.1} us = {:.2}x the port-I/O exit",
            us(*d),
            us(*d) / us(c.io_exit)
        );
    }
    if !c.rf_works {
        println!(
            "  RFLAGS.RF is ignored on this host: a resume with it hits the same breakpoint again"
        );
    }
    println!(
        "  port-I/O exit with registers and system registers synced into the run structure: {:.1} us",
        us(c.io_exit_synced)
    );
    println!(
        "  breakpoint exit alone (hit again at once, no resume work): {:.1} us = {:.2}x",
        us(c.bare_breakpoint),
        us(c.bare_breakpoint) / us(c.io_exit)
    );
    match c.confined {
        Some((io, hit)) => {
            let emulated = c
                .breakpoint
                .iter()
                .find(|(m, _)| *m == ResumeMethod::Emulate)
                .map_or(f64::NAN, |(_, d)| us(*d));
            println!(
                "  under the vCPU threads' seccomp filter: port-I/O exit (synced) {:.1} us against {:.1} us, emulated hit {:.1} us against {:.1} us",
                us(io),
                us(c.io_exit_synced),
                us(hit),
                emulated
            );
        }
        None => println!(
            "  seccomp filters are off (PREEMPTOR_SECCOMP=off): their cost is not measured"
        ),
    }
    let ioctls: Vec<String> = c
        .ioctls
        .iter()
        .map(|(n, d)| format!("{n} {:.1} us", us(*d)))
        .collect();
    println!("  single ioctls: {}", ioctls.join(", "));
    let checks = exitbench::check_emulation(20).map_err(UsageError)?;
    let bad: Vec<String> = checks
        .iter()
        .filter_map(|c| c.result.as_ref().err().map(|e| format!("{}: {e}", c.name)))
        .collect();
    println!(
        "  emulated forms equal to the CPU's step: {}/{} (20 register states each){}",
        checks.len() - bad.len(),
        checks.len(),
        if bad.is_empty() {
            String::new()
        } else {
            format!("; differ: {}", bad.join("; "))
        }
    );
    Ok(0)
}

fn boot(
    kernel: &str,
    runs: usize,
    vcpus: usize,
    memory: u64,
    timeout: u64,
) -> Result<i32, UsageError> {
    ensure_qemu()?;
    let profile = HostProfile::probe();
    let k = artifacts::resolve_kernel(kernel)?;
    let initramfs = artifacts::build_initramfs(&artifacts::Payload::workload("hello", &[])?)?;
    let initrd = std::env::temp_dir().join(format!("preemptor-bench-{}.cpio", std::process::id()));
    std::fs::write(&initrd, &initramfs)
        .map_err(|e| UsageError(format!("{}: {e}", initrd.display())))?;
    let cmdline = boot::cmdline(&profile, "");
    let cfg = BootConfig {
        kernel: k.clone(),
        initramfs: Arc::new(initramfs),
        cmdline: cmdline.clone(),
        vm: VmConfig {
            vcpus,
            mem_mib: memory,
        },
        timeout: Duration::from_secs(timeout),
        console: ConsoleConfig::default(),
        guest_seed: 0,
        gdb: None,
        preempt: None,
        end_when_settled: false,
    };
    println!(
        "bench boot: {} ({} vCPUs, {memory} MiB, host profile {}), {runs} runs each, alternating",
        k.path.display(),
        vcpus,
        profile.name()
    );
    let guest = super::peer::Guest {
        vmlinux: k.path.clone(),
        initrd: initrd.clone(),
        cmdline: cmdline.clone(),
        vcpus,
        mem_mib: memory,
        cpu: profile.qemu_cpu,
        timeout: Duration::from_secs(timeout),
    };
    let (mut ours, mut qemu) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let o = boot::run(&cfg, &profile, None)?;
        let m = verdict::markers(&o);
        let t = m.ready_at.ok_or(UsageError(format!(
            "preemptor run {i}: init never started ({})",
            o.end
        )))?;
        println!("  run {i}: preemptor {t:.2} s");
        ours.push(t);
        let q = qemu_once(&guest)?;
        println!("  run {i}: qemu      {q:.2} s");
        qemu.push(q);
    }
    let _ = std::fs::remove_file(&initrd);
    let (mo, mq) = (median(&mut ours), median(&mut qemu));
    println!("median time to init's first line: preemptor {mo:.2} s, qemu microvm {mq:.2} s, ratio {:.2}", mo / mq);
    Ok(0)
}
