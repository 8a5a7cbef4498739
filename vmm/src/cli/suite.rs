//! `preemptor suite`: every scenario × kernel variant × mode, N runs each,
//! one table, JUnit and JSON-lines results; `--shard I/N` runs one block of
//! the job and `preemptor merge` puts shards back together.
use super::UsageError;
use crate::boot::verdict::Verdict;
use crate::scenario::runner::{self, Prepared, RunResult};
use crate::scenario::suite::{self, Job, Record, Shard, Writer};
use crate::scenario::{Expect, Scenario};
use indicatif::{ProgressBar, ProgressStyle};
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args)]
pub struct SuiteArgs {
    /// Scenario folders, their TOML files, or folders of scenario folders
    /// (default: scenarios/).
    pub scenarios: Vec<PathBuf>,
    /// Only these kernel variants (repeatable); a scenario without any of
    /// them is left out.
    #[arg(long = "kernel", value_name = "VARIANT")]
    pub kernels: Vec<String>,
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Run i of every kernel × mode uses seed S + i (as `run` does).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// VMs at once within each kernel × mode, restored from its one
    /// snapshot (default: host cores / the guest's vCPUs, at least 1).
    /// Results, seeds and their order do not depend on it.
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub jobs: Option<u64>,
    /// Only with injection (default: with, then without — the baseline).
    #[arg(long)]
    pub inject_only: bool,
    /// Write JUnit XML here: a testsuite per scenario, a testcase per
    /// kernel × mode.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write the results here as JSON lines, one record per run, appended
    /// as each run ends (input of `preemptor merge`).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Run only shard I of N of the job's runs (1-based).
    #[arg(long, value_name = "I/N", conflicts_with = "shard_from_env")]
    pub shard: Option<Shard>,
    /// Shard of N whose index (0-based) comes from the batch system:
    /// PREEMPTOR_SHARD_INDEX, JOB_COMPLETION_INDEX (Kubernetes Indexed Job)
    /// or SLURM_ARRAY_TASK_ID.
    #[arg(long, value_name = "N")]
    pub shard_from_env: Option<usize>,
    /// Keep each run's console log, trace, verdict and diagram here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Random vCPU descheduling in every run (see `run --preempt`).
    #[arg(long, value_name = "PROFILE|SPEC")]
    pub preempt: Option<crate::vstate::PreemptConfig>,
}

#[derive(clap::Args)]
pub struct MergeArgs {
    /// JSON-lines results of `suite --json`, one per shard.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write the merged results (all shards' records) here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// The scenarios named on the command line, in order; a folder without a
/// scenario.toml contributes the scenario folders inside it, sorted.
fn find(paths: &[PathBuf]) -> Result<Vec<Scenario>, UsageError> {
    let default = [PathBuf::from("scenarios")];
    let paths = if paths.is_empty() {
        &default[..]
    } else {
        paths
    };
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() && !p.join("scenario.toml").exists() {
            let mut subs: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| UsageError(format!("{}: {e}", p.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|d| d.join("scenario.toml").is_file())
                .collect();
            subs.sort();
            if subs.is_empty() {
                return Err(UsageError(format!(
                    "{}: no scenario.toml in it or in its folders",
                    p.display()
                )));
            }
            for s in subs {
                out.push(Scenario::load(&s)?);
            }
        } else {
            out.push(Scenario::load(p)?);
        }
    }
    let mut seen = std::collections::HashSet::new();
    for s in &out {
        if !seen.insert(s.name.clone()) {
            return Err(UsageError(format!(
                "{}: scenario name '{}' is used twice in this suite",
                s.path.display(),
                s.name
            )));
        }
    }
    Ok(out)
}

/// The kernel's build: its cache key, the folder its image sits in.
fn build_id(p: &Prepared) -> String {
    p.kernel()
        .path
        .parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn run(a: SuiteArgs) -> Result<i32, UsageError> {
    let scns = find(&a.scenarios)?;
    let mut chosen: Vec<(&Scenario, Vec<String>)> = Vec::new();
    for s in &scns {
        let ks: Vec<String> = s
            .variants()
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| a.kernels.is_empty() || a.kernels.contains(n))
            .collect();
        if !ks.is_empty() {
            chosen.push((s, ks));
        }
    }
    for k in &a.kernels {
        if !chosen.iter().any(|(_, ks)| ks.contains(k)) {
            return Err(UsageError(format!(
                "--kernel {k}: no scenario of the suite has a variant of that name"
            )));
        }
    }
    if a.runs == 0 {
        return Err(UsageError("--runs 0: nothing to run".into()));
    }
    let shard = match a.shard_from_env {
        Some(n) => Shard::from_env(n, |v| std::env::var(v).ok())?,
        None => a.shard.unwrap_or(Shard::ALL),
    };
    let modes: &[bool] = if a.inject_only {
        &[true]
    } else {
        &[true, false]
    };
    let options = a
        .preempt
        .as_ref()
        .map(|p| format!("preempt={p:?}"))
        .unwrap_or_default();
    let job = Job::new(
        env!("CARGO_PKG_VERSION"),
        a.seed,
        a.runs,
        &chosen,
        modes,
        &options,
    );
    let mine = job.share(shard);
    if let Some(o) = &a.out {
        super::run::check_out_dir(o)?;
    }
    crate::boot::catch_interrupts()?;
    let mut writer = match &a.json {
        Some(f) => {
            let mut w =
                Writer::create(f).map_err(|e| UsageError(format!("{}: {e}", f.display())))?;
            w.write(&Record::Job {
                job: job.clone(),
                shard,
            })
            .map_err(|e| UsageError(format!("{}: {e}", f.display())))?;
            Some(w)
        }
        None => None,
    };
    eprintln!(
        "preemptor: suite job {}: {} scenario(s), {} kernel × mode cells, {} runs; shard {}/{}: {} runs",
        job.id,
        chosen.len(),
        job.cells.len(),
        job.total,
        shard.index,
        shard.count,
        mine.len()
    );
    let bar = ProgressBar::new(mine.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut results: Vec<Vec<RunResult>> = vec![Vec::new(); job.cells.len()];
    // Per scenario and kernel, the first prepared run set: later modes
    // share its snapshot.
    let mut first: Vec<Prepared> = Vec::new();
    for (c, cell) in job.cells.iter().enumerate() {
        if crate::boot::stopped() {
            break;
        }
        let idx: Vec<usize> = mine.iter().filter(|(k, _)| *k == c).map(|x| x.1).collect();
        if idx.is_empty() {
            continue;
        }
        let scn = chosen
            .iter()
            .find(|(s, _)| s.name == cell.scenario)
            .map(|(s, _)| (*s).clone())
            .expect("cells come from the chosen scenarios");
        let shared = first
            .iter()
            .position(|q| q.scenario.name == cell.scenario && q.kernel_name == cell.kernel);
        let p = runner::prepare(
            scn,
            &cell.kernel,
            cell.inject,
            idx.len() > 1 || shared.is_some(),
        );
        let mut p = match p {
            Ok(p) => p,
            Err(e) if results.iter().any(|r| !r.is_empty()) => {
                crate::boot::stop_runs(format!("{} on {}: {e}", cell.scenario, cell.kernel));
                break;
            }
            Err(e) => return Err(e.into()),
        };
        p.snapshot_single_run();
        if let Some(q) = shared {
            p.share_snapshot(&first[q]);
        }
        p.preempt = a.preempt.clone();
        let build = build_id(&p);
        bar.set_prefix(format!("{} {} {}", cell.scenario, cell.kernel, cell.mode()));
        if let Some(o) = &a.out {
            super::run::remove_partial_runs(&o.join(&cell.scenario).join(cell_dir(cell)));
        }
        let jobs = super::run::jobs_or_default(a.jobs, p.scenario.guest.vcpus);
        let pr = &p;
        let work = |k: usize| {
            let i = idx[k];
            let out = a.out.as_ref().map(|o| {
                o.join(&cell.scenario)
                    .join(cell_dir(cell))
                    .join(format!("run{i:03}"))
            });
            // A failure after some runs keeps them: it stops the suite.
            match pr.run_once(i, job.seed + i as u64, out.as_deref()) {
                Ok(r) => Some(r),
                Err(e) => {
                    crate::boot::stop_runs(format!(
                        "{} on {} run {i}: {e}",
                        cell.scenario, cell.kernel
                    ));
                    None
                }
            }
        };
        // Written and kept in run order, whatever the jobs.
        crate::scenario::parallel::in_order(idx.len(), jobs, work, |k, r| {
            let i = idx[k];
            if let Some(e) = &r.out_error {
                crate::boot::stop_runs(format!("--out {e}"));
            }
            if let Some(w) = writer.as_mut() {
                let written = w.write(&Record::Run {
                    job: job.id.clone(),
                    cell: c,
                    scenario: cell.scenario.clone(),
                    kernel: cell.kernel.clone(),
                    kernel_build: build.clone(),
                    inject: cell.inject,
                    number: cell.first + i,
                    run: Box::new(r.clone()),
                });
                if let Err(e) = written {
                    crate::boot::stop_runs(format!("results file: {e}"));
                }
            }
            bar.set_message(format!("last: {}", r.verdict.name()));
            bar.inc(1);
            // The table and JUnit need no trace: a long suite keeps ~1 KiB
            // per run, not the run's events.
            let mut r = r;
            r.events = Vec::new();
            r.diagram = String::new();
            results[c].push(r);
        });
        if shared.is_none() {
            first.push(p);
        }
    }
    bar.finish_and_clear();
    let finished = results.iter().map(Vec::len).sum::<usize>();
    let stopped = super::run::stopped(finished)?;
    let ok = report(&job, &results, a.junit.as_deref())?;
    if let Some(o) = &a.out {
        write_page(o, &job, &results);
    }
    if crate::boot::interrupted() {
        eprintln!(
            "preemptor: interrupted: the table, JUnit and JSON lines have the {finished} finished run(s); exit status 130"
        );
        return Ok(130);
    }
    if let Some(r) = &stopped {
        return Ok(super::run::stopped_exit(r, finished));
    }
    Ok(if ok { 0 } else { 1 })
}

/// `--out DIR/index.html`: the scenario × kernel × mode table, each cell
/// linking to its runs; per cell the timelines of its first crash and its
/// first run, read back from their folders (the suite keeps no trace in
/// memory), the others as links.
fn write_page(out: &Path, job: &Job, runs: &[Vec<RunResult>]) {
    use crate::view::{Cell, Page, RunView, Table};
    let mut table = Table {
        caption: "Suite".into(),
        head: [
            "scenario",
            "kernel",
            "mode",
            "crashes/conclusive",
            "s/run",
            "expected",
            "titles",
            "runs",
        ]
        .map(String::from)
        .to_vec(),
        rows: vec![],
    };
    let mut views = Vec::new();
    for (i, (cell, rs)) in job.cells.iter().zip(runs).enumerate() {
        if rs.is_empty() {
            continue;
        }
        let s = runner::summarize(rs);
        let held = holds(rs, cell.expect);
        let dir = format!("{}/{}", cell.scenario, cell_dir(cell));
        let titles: Vec<String> = s.titles.iter().map(|(t, n)| format!("{n}x {t}")).collect();
        table.rows.push(vec![
            Cell {
                text: cell.scenario.clone(),
                link: Some(format!("#cell{i}")),
                class: None,
            },
            cell.kernel.clone().into(),
            cell.mode().into(),
            format!("{}/{}", s.crashes, s.conclusive).into(),
            format!("{:.1}", s.mean_seconds).into(),
            {
                let (text, class) = super::run::expectation(true, held);
                Cell {
                    text: text.into(),
                    link: None,
                    class: class.map(Into::into),
                }
            },
            if titles.is_empty() {
                "-".into()
            } else {
                titles.join(", ")
            }
            .into(),
            Cell {
                text: format!("{} runs", rs.len()),
                link: Some(dir.clone()),
                class: None,
            },
        ]);
        let crash = rs
            .iter()
            .find(|r| matches!(r.verdict, crate::boot::verdict::Verdict::Crash { .. }));
        let mut shown: Vec<&RunResult> = crash.into_iter().collect();
        if let Some(r) = rs
            .first()
            .filter(|r| Some(r.index) != crash.map(|c| c.index))
        {
            shown.push(r);
        }
        for (k, r) in shown.into_iter().enumerate() {
            let link = format!("{dir}/run{:03}", r.index);
            let heading = format!(
                "{} on {} / {}: run {} (seed {}): {}",
                cell.scenario,
                cell.kernel,
                cell.mode(),
                r.index,
                r.seed,
                r.verdict
            );
            let id = if k == 0 {
                format!("cell{i}")
            } else {
                format!("cell{i}-{k}")
            };
            if let Some(v) = RunView::from_dir(&out.join(&link), &link, heading, id) {
                views.push(v);
            }
        }
    }
    let page = Page {
        title: format!(
            "preemptor suite ({} runs)",
            runs.iter().map(Vec::len).sum::<usize>()
        ),
        tables: vec![table],
        runs: views,
        ..Default::default()
    };
    super::write_page(&page, out);
}

/// A cell's folder under the scenario's in `--out`.
fn cell_dir(cell: &suite::Cell) -> String {
    format!(
        "{}-{}",
        cell.kernel.replace('/', "_"),
        if cell.inject { "inject" } else { "baseline" }
    )
}

pub fn merge(a: MergeArgs) -> Result<i32, UsageError> {
    let mut files = Vec::new();
    for f in &a.files {
        let (recs, torn) = suite::read(f)?;
        if torn > 0 {
            eprintln!(
                "preemptor: {}: last line cut short (the suite was killed mid-write): left out",
                f.display()
            );
        }
        files.push((f.display().to_string(), recs));
    }
    let m = suite::merge(&files)?;
    if let Some(out) = &a.json {
        let mut w =
            Writer::create(out).map_err(|e| UsageError(format!("{}: {e}", out.display())))?;
        let mut header = false;
        for (_, recs) in &files {
            for r in recs {
                let keep = match r {
                    Record::Job { .. } => !std::mem::replace(&mut header, true),
                    Record::Run { .. } => true,
                };
                if keep {
                    w.write(r)
                        .map_err(|e| UsageError(format!("{}: {e}", out.display())))?;
                }
            }
        }
    }
    let ok = report(&m.job, &m.runs, a.junit.as_deref())?;
    if !m.missing.is_empty() {
        let shards: Vec<String> = m
            .missing_shards()
            .iter()
            .map(|(s, r, n)| {
                format!(
                    "shard {}/{} ({n} of its runs {}-{})",
                    s.index,
                    s.count,
                    r.start,
                    r.end - 1
                )
            })
            .collect();
        eprintln!(
            "preemptor: incomplete: {} of the job's {} runs are in no file (first missing: run {}); missing from {}: run those shards again (`suite ... --shard I/N`) and merge all files",
            m.missing.len(),
            m.job.total,
            m.missing[0],
            shards.join(", ")
        );
        return Ok(1);
    }
    Ok(if ok { 0 } else { 1 })
}

/// Whether a cell's runs are as expected (none run: nothing to judge).
fn holds(rs: &[RunResult], expect: Option<Expect>) -> bool {
    rs.is_empty() || runner::holds(rs, expect)
}

/// Prints the table and writes the JUnit file; true if every cell holds.
fn report(job: &Job, runs: &[Vec<RunResult>], junit: Option<&Path>) -> Result<bool, UsageError> {
    let ws = job
        .cells
        .iter()
        .map(|c| c.scenario.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let wk = job
        .cells
        .iter()
        .map(|c| c.kernel.len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "\n{:<ws$} {:<wk$} {:<13} {:>20} {:>8}  {:<8} titles",
        "scenario", "kernel", "mode", "crashes/conclusive", "s/run", "expected"
    );
    let mut ok = true;
    for (cell, rs) in job.cells.iter().zip(runs) {
        if rs.is_empty() {
            continue;
        }
        let s = runner::summarize(rs);
        let held = holds(rs, cell.expect);
        ok &= held;
        let titles: Vec<String> = s.titles.iter().map(|(t, n)| format!("{n}x {t}")).collect();
        println!(
            "{:<ws$} {:<wk$} {:<13} {:>20} {:>8.1}  {:<8} {}",
            cell.scenario,
            cell.kernel,
            cell.mode(),
            format!("{}/{}", s.crashes, s.conclusive),
            s.mean_seconds,
            super::run::expectation(true, held).0,
            if titles.is_empty() {
                "-".into()
            } else {
                titles.join(", ")
            }
        );
    }
    if let Some(path) = junit {
        let xml = junit_report(job, runs)
            .to_string()
            .map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
        std::fs::write(path, xml).map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
    }
    Ok(ok)
}

/// One testsuite per scenario, one testcase per kernel × mode; a failure
/// says what was expected, what happened, and shows the first crash.
fn junit_report(job: &Job, runs: &[Vec<RunResult>]) -> Report {
    let mut report = Report::new(format!("preemptor suite {}", job.id));
    let mut suites: Vec<TestSuite> = Vec::new();
    for (cell, rs) in job.cells.iter().zip(runs) {
        if rs.is_empty() {
            continue;
        }
        if suites
            .last()
            .is_none_or(|t| t.name.as_str() != cell.scenario)
        {
            suites.push(TestSuite::new(cell.scenario.clone()));
        }
        let s = runner::summarize(rs);
        let status = if holds(rs, cell.expect) {
            TestCaseStatus::success()
        } else {
            let want = match cell.expect {
                Some(Expect::Crash) => "a crash on every conclusive run",
                Some(Expect::Clean) | None => "no crash",
            };
            let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
            st.set_message(format!(
                "expected {want}: {} of {} conclusive runs crashed ({} runs, {} inconclusive)",
                s.crashes, s.conclusive, s.runs, s.inconclusive
            ));
            let crash = rs
                .iter()
                .find(|r| matches!(r.verdict, Verdict::Crash { .. }));
            let mut text = String::new();
            if let Some(r) = crash {
                if let Verdict::Crash { title, .. } = &r.verdict {
                    text.push_str(&format!(
                        "first crash (run {}, seed {}): {title}\n",
                        r.index, r.seed
                    ));
                }
                if let Some(rep) = &r.report {
                    text.push_str(rep);
                    text.push('\n');
                }
            }
            for r in rs.iter().filter(|r| !r.conclusive) {
                text.push_str(&format!(
                    "run {} seed {}: {} (inconclusive)\n",
                    r.index, r.seed, r.verdict
                ));
            }
            st.set_description(text);
            st
        };
        let mut tc = TestCase::new(format!("{} / {}", cell.kernel, cell.mode()), status);
        tc.set_classname(cell.scenario.clone());
        tc.set_time(Duration::from_secs_f64(rs.iter().map(|r| r.seconds).sum()));
        if let Some(t) = suites.last_mut() {
            t.add_test_case(tc);
        }
    }
    report.add_test_suites(suites);
    report
}
