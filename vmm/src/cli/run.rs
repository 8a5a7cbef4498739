//! `preemptor run`: a scenario on each of its kernels, N runs each:
//! verdicts, crash rates, titles, whether each expectation held.
use super::UsageError;
use crate::boot::verdict::Verdict;
use crate::scenario::runner::{self, Prepared, RunResult, Summary};
use crate::scenario::suite::mode_name;
use crate::scenario::{Expect, Scenario, SnapshotAt};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct RunArgs {
    /// Scenario folder (scenarios/NAME) or its TOML file.
    pub scenario: PathBuf,
    /// A kernel variant of the scenario ([kernel.NAME]), `base`, or a path
    /// to a vmlinux/bzImage (then --expect says what to expect). Repeatable;
    /// default: every variant of the scenario, in the order it declares them.
    #[arg(long = "kernel", value_name = "VARIANT|PATH")]
    pub kernels: Vec<String>,
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Run i uses seed S + i.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// VMs at once, each restored from the kernel's one snapshot (default:
    /// host cores / the guest's vCPUs, at least 1). Results, seeds and
    /// their order do not depend on it.
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub jobs: Option<u64>,
    /// Same program, no breakpoints: the baseline.
    #[arg(long, conflicts_with = "baseline")]
    pub no_inject: bool,
    /// Each kernel with injection, then each without (the baseline).
    #[arg(long)]
    pub baseline: bool,
    /// What every kernel should do under injection (overrides the scenario).
    #[arg(long)]
    pub expect: Option<Expect>,
    /// Build each --kernel variant over this base instead of its own
    /// (`debian:6.1`, `dir:PATH`, `git:REPO@REV`, e.g. `git:.@HEAD`: the
    /// commit checked out now), with the variant's patches and fragments.
    #[arg(long, value_name = "BASE")]
    pub base: Option<String>,
    /// Exit statuses for `git bisect run`: 0 the expectation held, 1 it did
    /// not, 125 this commit cannot be tested (a build or setup error, a
    /// patch that does not apply, a site that does not resolve, a host
    /// fault, only inconclusive runs).
    #[arg(long)]
    pub git_bisect: bool,
    /// One JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// Keep console log, trace, verdict and diagram of each run here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Boot every run. By default, more than one run boots once to the
    /// guest's snapshot point and restores that per run.
    #[arg(long, conflicts_with = "snapshot")]
    pub no_snapshot: bool,
    /// Restore from the snapshot in FILE, taking it there first if FILE does
    /// not exist (one kernel only). A snapshot taken with another kernel,
    /// initramfs, command line or machine shape is refused.
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// After each restored run, check that copying back the pages it
    /// dirtied restores the snapshot's memory exactly (JSON:
    /// restore.stale_pages; costs a compare of all guest memory per run).
    #[arg(long)]
    pub verify_restore: bool,
    /// Wait for each kernel report's end. By default a run ends at the line
    /// where its crash title can no longer change (the rest of an oops is
    /// most of a crash run's time on an emulating host); console.log then
    /// stops there too. With --gdb reports are always whole.
    #[arg(long)]
    pub full_reports: bool,
    #[command(flatten)]
    pub gdb: super::GdbArgs,
    /// Random vCPU descheduling in every run, with the scenario's triggers
    /// (or alone with --no-inject): a profile (light, overcommit,
    /// smi-storm) or `vcpus=0+1,gap=10ms,hold=1ms..6ms`.
    #[arg(long, value_name = "PROFILE|SPEC")]
    pub preempt: Option<crate::vstate::PreemptConfig>,
}

/// Runs with a progress bar; `label` heads it. `jobs` VMs at once, each
/// restored from the same snapshot; run `i` has seed `seed + i` whatever
/// `jobs` is, and the results come back in run order. A failure stops
/// the runs not yet started and keeps every finished one.
pub fn run_many(
    p: &Prepared,
    runs: usize,
    seed: u64,
    out: Option<&PathBuf>,
    label: &str,
    jobs: usize,
) -> Result<Vec<RunResult>, UsageError> {
    let bar = ProgressBar::new(runs as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    if let Some(o) = out {
        remove_partial_runs(o);
    }
    let mut rs = Vec::new();
    let work = |i: usize| {
        let dir = out.map(|o| o.join(format!("run{i:03}")));
        // A failure after some runs keeps them: it stops the runs instead.
        let r = match p.run_once(i, seed + i as u64, dir.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                crate::boot::stop_runs(format!("run {i}: {e}"));
                return None;
            }
        };
        if let Some(e) = &r.out_error {
            crate::boot::stop_runs(format!("run {i}: --out {e}"));
        }
        Some(r)
    };
    crate::scenario::parallel::in_order(runs, jobs, work, |_, r| {
        bar.set_message(format!(
            "last: {} goal={}",
            r.verdict.name(),
            r.goal_reached
        ));
        bar.inc(1);
        rs.push(r);
    });
    bar.finish_and_clear();
    Ok(rs)
}

/// VMs at once when `--jobs` is not given: one per `vcpus` host cores
/// (each vCPU of a VM keeps a host core busy while it runs; a stalled one
/// sleeps), at least one: never more vCPU threads than cores. On a 2-core
/// host with 2-vCPU guests: 1. Overcommitting is worse than slow: measured
/// on kvm_pvm, 2 cores, the seed's reverted kernel (`bench jobs`), 2 VMs
/// took 3.7x the host CPU per run (guest vCPUs spinning on locks held by
/// a descheduled sibling) for 0.30x the runs per hour, and at 4 VMs the
/// crash rate fell from 12/12 to 4/12: the stalls' timing is host time.
pub fn default_jobs(vcpus: usize) -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (cores / vcpus.max(1)).max(1)
}

/// `--jobs` as given, else [`default_jobs`] for a guest of `vcpus`.
pub fn jobs_or_default(given: Option<u64>, vcpus: usize) -> usize {
    given.map_or_else(|| default_jobs(vcpus), |j| j as usize)
}

/// Folders of runs a killed invocation left unfinished (`runNNN.partial`).
pub fn remove_partial_runs(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().ends_with(".partial") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Fail before the first boot if `--out` cannot take files.
pub fn check_out_dir(dir: &Path) -> Result<(), UsageError> {
    let probe = dir.join(format!(".preemptor-probe-{}", std::process::id()));
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&probe, b"probe"))
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| UsageError(format!("--out {}: {e}", dir.display())))
}

/// After the runs, before their table: a host fault that stopped them
/// before any finished is an error (exit 2); after some, its reason, for
/// [`stopped_exit`] once the results are out.
pub fn stopped(finished: usize) -> Result<Option<String>, UsageError> {
    match crate::boot::stop_reason() {
        Some(r) if finished == 0 => Err(UsageError(r)),
        r => Ok(r),
    }
}

/// The last line of a command whose runs a host fault stopped: exit status 3.
pub fn stopped_exit(reason: &str, finished: usize) -> i32 {
    eprintln!(
        "preemptor: stopped: {reason}; the results have the {finished} finished run(s); exit status 3"
    );
    3
}

pub fn print_summary(label: &str, s: &Summary) {
    let rate = match (s.crash_rate, s.crash_rate_ci95) {
        (Some(r), Some((lo, hi))) => format!(
            "{:.0}% (95% CI {:.0}-{:.0}%)",
            r * 100.0,
            lo * 100.0,
            hi * 100.0
        ),
        _ => "n/a".into(),
    };
    println!(
        "{label}: {} runs, {} conclusive ({} inconclusive), crashes {}/{} = {rate}; clean {}, hang {}, host-error {}; {:.1} s/run",
        s.runs, s.conclusive, s.inconclusive, s.crashes, s.conclusive, s.clean, s.hangs, s.host_errors, s.mean_seconds
    );
    for (t, n) in &s.titles {
        println!("  {n} x {t}");
    }
}

/// One kernel in one mode: its runs and whether they are as expected.
#[derive(Serialize)]
pub struct KernelResult {
    pub kernel: String,
    pub kernel_path: PathBuf,
    pub inject: bool,
    pub expect: Option<Expect>,
    pub ok: bool,
    pub snapshot_at: Option<SnapshotAt>,
    pub summary: Summary,
    pub runs: Vec<RunResult>,
}

/// How `run` and `demo` print and judge.
pub struct Plan {
    pub scenario: Scenario,
    pub kernels: Vec<String>,
    /// Injection modes, in order (true = with the scenario's triggers).
    pub modes: Vec<bool>,
    pub runs: usize,
    pub seed: u64,
    pub expect: Option<Expect>,
    pub out: Option<PathBuf>,
    pub snapshot: bool,
    pub snapshot_file: Option<PathBuf>,
    pub verify_restore: bool,
    pub full_reports: bool,
    pub quiet: bool,
    pub gdb: super::GdbArgs,
    pub preempt: Option<crate::vstate::PreemptConfig>,
    /// VMs at once (None: `default_jobs`).
    pub jobs: Option<usize>,
}

/// Every kernel × mode of the plan. Each kernel's snapshot is shared by its
/// injected and baseline runs.
pub fn execute(plan: &Plan) -> Result<Vec<KernelResult>, UsageError> {
    let mut results = Vec::new();
    let mut first: Vec<Prepared> = Vec::new();
    for &inject in &plan.modes {
        for kernel in &plan.kernels {
            let p = runner::prepare(
                plan.scenario.clone(),
                kernel,
                inject,
                plan.snapshot && plan.runs > 1,
            );
            let mut p = match p {
                Ok(p) => p,
                Err(e) if !results.is_empty() => {
                    crate::boot::stop_runs(format!("kernel {kernel}: {e}"));
                    return Ok(results);
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(f) = &plan.snapshot_file {
                p = p.with_snapshot_file(f.clone());
            }
            if let Some((g, freeze)) = plan.gdb.split() {
                p = p.with_gdb(g, freeze)?;
            } else if plan.snapshot {
                p.snapshot_single_run();
            }
            p.preempt = plan.preempt.clone();
            p.verify_restore = plan.verify_restore;
            if plan.full_reports {
                p.wait_for_full_reports();
            }
            if let Some(q) = first.iter().find(|q| q.kernel_name == *kernel) {
                p.share_snapshot(q);
            }
            let mode = if inject { "injection" } else { "no injection" };
            if !plan.quiet {
                eprintln!(
                    "preemptor: scenario {} on kernel {kernel} ({}), {mode}, host profile {}",
                    p.scenario.name,
                    p.kernel().path.display(),
                    p.profile.name()
                );
                if inject {
                    for (n, site, addr) in p.sites() {
                        eprintln!("preemptor:   trigger {n} at {site} ({addr:#x})");
                    }
                }
                if p.use_snapshot && p.snapshot_at == SnapshotAt::Start {
                    eprintln!(
                        "preemptor:   snapshot point: just before the program starts \
                         (it does not call preemptor_ready()): every run pays for its start"
                    );
                }
            }
            let label = format!("{kernel} {mode}");
            let out = plan.out.as_ref().map(|o| o.join(mode_dir(kernel, inject)));
            // One gdb server, one machine: gdb runs one at a time.
            let jobs = match plan.gdb.gdb {
                Some(_) => 1,
                None => plan
                    .jobs
                    .unwrap_or_else(|| default_jobs(p.scenario.guest.vcpus)),
            };
            let rs = run_many(&p, plan.runs, plan.seed, out.as_ref(), &label, jobs)?;
            let expect = p.expectation(if inject { plan.expect } else { None });
            let summary = runner::summarize(&rs);
            if !plan.quiet {
                print_summary(&format!("{kernel} / {mode}"), &summary);
            }
            results.push(KernelResult {
                kernel: kernel.clone(),
                kernel_path: p.kernel().path.clone(),
                inject,
                expect,
                ok: runner::holds(&rs, expect),
                snapshot_at: p.use_snapshot.then_some(p.snapshot_at),
                summary,
                runs: rs,
            });
            if !first.iter().any(|q| q.kernel_name == *kernel) {
                first.push(p);
            }
            if crate::boot::stopped() {
                return Ok(results);
            }
        }
    }
    Ok(results)
}

/// A kernel × mode's folder under `--out`.
pub fn mode_dir(kernel: &str, inject: bool) -> String {
    format!(
        "{}-{}",
        kernel.replace('/', "_"),
        if inject { "inject" } else { "baseline" }
    )
}

/// `--out DIR/index.html` for `run` and `demo`: the table the terminal
/// prints, then each kept run's timeline. A failure to write it is said
/// on stderr; the runs and their files stay.
pub fn write_page(out: &Path, scenario: &Scenario, results: &[KernelResult]) {
    use crate::view::{Page, RunView};
    let table = verdict_table("Verdicts", results, true);
    let mut runs = Vec::new();
    for k in results {
        let dir = mode_dir(&k.kernel, k.inject);
        let mode = mode_name(k.inject);
        for r in &k.runs {
            let run_dir = format!("{dir}/run{:03}", r.index);
            let files = out.join(&run_dir).is_dir().then_some(run_dir.as_str());
            runs.push(RunView::of(
                r,
                scenario.guest.vcpus,
                format!(
                    "{} / {mode}: run {} (seed {}): {}{}",
                    k.kernel,
                    r.index,
                    r.seed,
                    r.verdict,
                    if r.conclusive { "" } else { " (inconclusive)" }
                ),
                format!("{dir}-run{:03}", r.index),
                files,
            ));
        }
    }
    let page = Page {
        title: format!("preemptor: {}", scenario.name),
        summary: vec![scenario.description.clone()],
        tables: vec![table],
        runs,
        ..Default::default()
    };
    super::write_page(&page, out);
}

/// The verdict table as the terminal prints it, for a page; `link_runs`
/// links each kernel to its first run's timeline on the same page.
pub(super) fn verdict_table(
    caption: &str,
    results: &[KernelResult],
    link_runs: bool,
) -> crate::view::Table {
    use crate::view::{Cell, Table};
    let mut table = Table {
        caption: caption.into(),
        head: [
            "kernel",
            "mode",
            "crashes/conclusive",
            "rate (95% CI)",
            "s/run",
            "expected",
            "titles",
        ]
        .map(String::from)
        .to_vec(),
        rows: vec![],
    };
    for k in results {
        let mode = mode_name(k.inject);
        let dir = mode_dir(&k.kernel, k.inject);
        let s = &k.summary;
        let (text, class) = expectation(k.expect.is_some(), k.ok);
        let titles: Vec<String> = s.titles.iter().map(|(t, n)| format!("{n}x {t}")).collect();
        table.rows.push(vec![
            Cell {
                text: k.kernel.clone(),
                link: (link_runs && !k.runs.is_empty())
                    .then(|| format!("#{dir}-run{:03}", k.runs[0].index)),
                class: None,
            },
            mode.into(),
            format!("{}/{}", s.crashes, s.conclusive).into(),
            match (s.crash_rate, s.crash_rate_ci95) {
                (Some(r), Some((lo, hi))) => {
                    format!("{:.0}% ({:.0}-{:.0}%)", r * 100.0, lo * 100.0, hi * 100.0)
                }
                _ => "-".into(),
            }
            .into(),
            format!("{:.1}", s.mean_seconds).into(),
            Cell {
                text: text.into(),
                link: None,
                class: class.map(String::from),
            },
            if titles.is_empty() {
                "-".to_string()
            } else {
                titles.join(", ")
            }
            .into(),
        ]);
    }
    table
}

/// The "expected" cell, as the terminal and the page show it: its text
/// and the page's class. Without an expectation a row only fails when a
/// run was not clean.
pub(super) fn expectation(expected: bool, ok: bool) -> (&'static str, Option<&'static str>) {
    match (expected, ok) {
        (true, true) => ("holds", Some("holds")),
        (true, false) => ("FAILS", Some("fails")),
        (false, true) => ("-", None),
        (false, false) => ("not clean", Some("fails")),
    }
}

/// The table of every kernel × mode, then the interleaving of one crash.
pub fn print_table(results: &[KernelResult]) {
    let w = results
        .iter()
        .map(|r| r.kernel.len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "\n{:<w$} {:<13} {:>20} {:>8}  {:<8} titles",
        "kernel", "mode", "crashes/conclusive", "s/run", "expected"
    );
    for r in results {
        let s = &r.summary;
        let titles: Vec<String> = s.titles.iter().map(|(t, n)| format!("{n}x {t}")).collect();
        println!(
            "{:<w$} {:<13} {:>20} {:>8.1}  {:<8} {}",
            r.kernel,
            mode_name(r.inject),
            format!("{}/{}", s.crashes, s.conclusive),
            s.mean_seconds,
            expectation(r.expect.is_some(), r.ok).0,
            if titles.is_empty() {
                "-".into()
            } else {
                titles.join(", ")
            }
        );
    }
    // A diagram only where there was injection to draw.
    let crash = results
        .iter()
        .filter(|r| r.inject)
        .flat_map(|r| r.runs.iter())
        .find(|r| matches!(r.verdict, Verdict::Crash { .. }) && !r.diagram.trim().is_empty());
    if let Some(r) = crash {
        println!(
            "\nInterleaving of a crashing run (seed {}):\n{}",
            r.seed, r.diagram
        );
    }
}

pub fn run(a: RunArgs) -> Result<i32, UsageError> {
    if !a.git_bisect {
        return run_as_given(a);
    }
    // `git bisect run` takes 125 as "skip", any other status from 1 to
    // 127 as "new": a commit that cannot be tested must say 125.
    match run_as_given(a) {
        Err(UsageError(m)) => {
            eprintln!("preemptor: {m}");
            eprintln!("preemptor: cannot test this commit: exit status 125 (git bisect skip)");
            Ok(125)
        }
        Ok(2 | 3) => Ok(125),
        r => r,
    }
}

/// `--base BASE` on the command line: paths relative to the current
/// directory, made absolute (a scenario's own are relative to its file).
fn absolute_base(base: &str) -> Result<String, UsageError> {
    let abs = |p: &str| {
        std::path::Path::new(p)
            .canonicalize()
            .map(|p| p.display().to_string())
            .map_err(|e| UsageError(format!("--base {base}: {p}: {e}")))
    };
    if let Some(p) = base.strip_prefix("dir:") {
        return Ok(format!("dir:{}", abs(p)?));
    }
    if let Some((p, rev)) = base.strip_prefix("git:").and_then(|s| s.rsplit_once('@')) {
        return Ok(format!("git:{}@{rev}", abs(p)?));
    }
    Ok(base.to_string())
}

fn run_as_given(a: RunArgs) -> Result<i32, UsageError> {
    let mut scn = Scenario::load(&a.scenario)?;
    let kernels: Vec<String> = if a.kernels.is_empty() {
        scn.variants().into_iter().map(|(n, _)| n).collect()
    } else {
        a.kernels.clone()
    };
    if let Some(base) = &a.base {
        let base = absolute_base(base)?;
        let variants = scn.variants();
        for k in &kernels {
            let Some((_, mut v)) = variants.iter().find(|(n, _)| n == k).cloned() else {
                return Err(UsageError(format!(
                    "--base applies to the scenario's kernel variants; '{k}' is not one"
                )));
            };
            v.base = base.clone();
            scn.kernel.insert(k.clone(), v);
        }
    }
    if a.gdb.gdb.is_some() && (a.runs != 1 || kernels.len() != 1 || a.baseline) {
        return Err(UsageError(
            "--gdb serves one run: give one --kernel and --runs 1, without --baseline".into(),
        ));
    }
    if a.snapshot.is_some() && (kernels.len() > 1 || a.baseline) {
        return Err(UsageError(
            "--snapshot FILE keeps one kernel's snapshot: give one --kernel, without --baseline"
                .into(),
        ));
    }
    let plan = Plan {
        scenario: scn,
        kernels,
        modes: match (a.no_inject, a.baseline) {
            (true, _) => vec![false],
            (false, true) => vec![true, false],
            (false, false) => vec![true],
        },
        runs: a.runs,
        seed: a.seed,
        expect: a.expect,
        out: a.out.clone(),
        snapshot: !a.no_snapshot || a.snapshot.is_some(),
        snapshot_file: a.snapshot.clone(),
        verify_restore: a.verify_restore,
        full_reports: a.full_reports,
        quiet: a.json,
        gdb: a.gdb.clone(),
        preempt: a.preempt.clone(),
        jobs: a.jobs.map(|j| j as usize),
    };
    if let Some(o) = &plan.out {
        check_out_dir(o)?;
    }
    crate::boot::catch_interrupts()?;
    let results = execute(&plan)?;
    let finished: usize = results.iter().map(|r| r.runs.len()).sum();
    let stopped = stopped(finished)?;
    let interrupted = crate::boot::interrupted();
    let ok = results.iter().all(|r| r.ok) && !interrupted && stopped.is_none();
    let untestable = a.git_bisect && results.iter().all(|r| r.summary.conclusive == 0);
    if let Some(o) = &plan.out {
        write_page(o, &plan.scenario, &results);
    }
    if a.json {
        let j = serde_json::json!({
            "scenario": plan.scenario.name, "ok": ok, "interrupted": interrupted,
            "stopped": stopped, "results": results,
        });
        println!("{j}");
    } else {
        for k in &results {
            for r in &k.runs {
                println!(
                    "{} {} run {:>3} seed {:>4}: {} (goal {}, {:.1} s){}{}",
                    k.kernel,
                    if k.inject { "inject" } else { "baseline" },
                    r.index,
                    r.seed,
                    r.verdict,
                    if r.goal_reached {
                        "reached"
                    } else {
                        "not reached"
                    },
                    r.seconds,
                    if r.conclusive { "" } else { " inconclusive" },
                    match &r.inspected {
                        Some(w) => format!("; inspected with gdb ({w})"),
                        None => String::new(),
                    }
                );
            }
        }
        print_table(&results);
    }
    if interrupted {
        eprintln!(
            "preemptor: interrupted: the table has the {finished} finished run(s); exit status 130"
        );
        return Ok(130);
    }
    if let Some(r) = &stopped {
        return Ok(stopped_exit(r, finished));
    }
    if untestable && !interrupted {
        eprintln!("preemptor: no conclusive run: this commit cannot be tested (exit status 125)");
        return Ok(125);
    }
    Ok(if ok { 0 } else { 1 })
}
