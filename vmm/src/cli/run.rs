//! `preemptor run`: a scenario, N runs, verdicts and rates.
use super::UsageError;
use crate::scenario::runner::{self, Prepared, RunResult, Summary};
use crate::scenario::{Expect, Scenario};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct RunArgs {
    /// Scenario file (scenarios/*.toml).
    pub scenario: PathBuf,
    /// fixed | reverted | path to vmlinux or bzImage
    #[arg(long, default_value = "reverted")]
    pub kernel: String,
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Run i uses seed S + i.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Same workload, no breakpoints: the baseline.
    #[arg(long)]
    pub no_inject: bool,
    /// Override the scenario's expectation for this kernel.
    #[arg(long)]
    pub expect: Option<Expect>,
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
    /// not exist. A snapshot taken with another kernel, initramfs, command
    /// line or machine shape is refused.
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// After each restored run, check that copying back the pages it
    /// dirtied restores the snapshot's memory exactly (JSON:
    /// restore.stale_pages; costs a compare of all guest memory per run).
    #[arg(long)]
    pub verify_restore: bool,
}

/// Runs with a progress bar; `label` heads it.
pub fn run_many(
    p: &Prepared,
    runs: usize,
    seed: u64,
    out: Option<&PathBuf>,
    label: &str,
) -> Result<Vec<RunResult>, UsageError> {
    let bar = ProgressBar::new(runs as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    let mut rs = Vec::new();
    for i in 0..runs {
        let dir = out.map(|o| o.join(format!("{}-run{:03}", p.kernel_name.replace('/', "_"), i)));
        let r = p.run_once(i, seed + i as u64, dir.as_deref())?;
        bar.set_message(format!(
            "last: {} goal={}",
            r.verdict.name(),
            r.goal_reached
        ));
        bar.inc(1);
        rs.push(r);
    }
    bar.finish_and_clear();
    Ok(rs)
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

pub fn run(a: RunArgs) -> Result<i32, UsageError> {
    let scn = Scenario::load(&a.scenario)?;
    let mut p = runner::prepare(scn, &a.kernel, !a.no_inject, a.runs > 1 && !a.no_snapshot)?;
    if let Some(f) = &a.snapshot {
        p = p.with_snapshot_file(f.clone());
    }
    p.verify_restore = a.verify_restore;
    if !a.json {
        eprintln!(
            "preemptor: scenario {} on kernel {} ({}), host profile {}",
            p.scenario.name,
            a.kernel,
            if a.no_inject {
                "no injection"
            } else {
                "injection"
            },
            p.profile.name()
        );
        for (n, site, addr) in p.sites() {
            eprintln!("preemptor:   trigger {n} at {site} ({addr:#x})");
        }
    }
    let label = format!(
        "{} {}{}",
        p.scenario.name,
        a.kernel,
        if a.no_inject { " no-inject" } else { "" }
    );
    let rs = run_many(&p, a.runs, a.seed, a.out.as_ref(), &label)?;
    let s = runner::summarize(&rs);
    let expect = p.expectation(a.expect);
    let ok = expect.is_none_or(|e| runner::meets(&rs, e));
    if a.json {
        let j = serde_json::json!({
            "scenario": p.scenario.name, "kernel": a.kernel, "inject": !a.no_inject,
            "expect": expect, "ok": ok, "summary": s, "runs": rs,
        });
        println!("{j}");
    } else {
        for r in &rs {
            println!(
                "run {:>3} seed {:>4}: {} (goal {}, {:.1} s){}",
                r.index,
                r.seed,
                r.verdict,
                if r.goal_reached {
                    "reached"
                } else {
                    "not reached"
                },
                r.seconds,
                if r.conclusive { "" } else { " inconclusive" }
            );
        }
        print_summary(&label, &s);
        if let Some(r) = rs
            .iter()
            .find(|r| matches!(r.verdict, crate::boot::verdict::Verdict::Crash { .. }))
        {
            println!("\ninterleaving of run {}:\n{}", r.index, r.diagram);
        }
        if let Some(e) = expect {
            println!(
                "expected {e:?}: {}",
                if ok { "holds" } else { "does NOT hold" }
            );
        }
    }
    Ok(if ok { 0 } else { 1 })
}
