//! `preemptor demo`: the main job. The seed scenario on both kernels, with
//! and without injection, as a table, plus the interleaving of one crash.
use super::run::{print_summary, run_many};
use super::UsageError;
use crate::boot::verdict::Verdict;
use crate::scenario::runner::{self, RunResult};
use crate::scenario::Scenario;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DemoArgs {
    #[arg(long, default_value = "scenarios/do-exit-race.toml")]
    pub scenario: PathBuf,
    /// Runs per kernel and mode.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keep every run's console, trace, verdict and diagram here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Boot every run instead of restoring a snapshot.
    #[arg(long)]
    pub no_snapshot: bool,
}

pub fn run(a: DemoArgs) -> Result<i32, UsageError> {
    let scn = Scenario::load(&a.scenario)?;
    println!("{}: {}\n", scn.name, scn.description);
    let mut rows: Vec<(String, String, Vec<RunResult>, bool)> = Vec::new();
    // One snapshot per kernel, shared by its injected and baseline runs.
    let mut first: Vec<(&str, runner::Prepared)> = Vec::new();
    for (kernel, inject) in [
        ("reverted", true),
        ("fixed", true),
        ("reverted", false),
        ("fixed", false),
    ] {
        let mut p = runner::prepare(scn.clone(), kernel, inject, a.runs > 1 && !a.no_snapshot)?;
        if let Some((_, q)) = first.iter().find(|(k, _)| *k == kernel) {
            p.share_snapshot(q);
        }
        let mode = if inject { "injection" } else { "no injection" };
        let out = a.out.as_ref().map(|o| {
            o.join(format!(
                "{kernel}-{}",
                if inject { "inject" } else { "baseline" }
            ))
        });
        let rs = run_many(
            &p,
            a.runs,
            a.seed,
            out.as_ref(),
            &format!("{kernel} {mode}"),
        )?;
        let ok = p.expectation(None).is_none_or(|e| runner::meets(&rs, e));
        print_summary(&format!("{kernel} / {mode}"), &runner::summarize(&rs));
        rows.push((kernel.into(), mode.into(), rs, ok));
        if !first.iter().any(|(k, _)| *k == kernel) {
            first.push((kernel, p));
        }
    }
    println!(
        "\n{:<9} {:<13} {:>20} {:>8}  {:<8} titles",
        "kernel", "mode", "crashes/conclusive", "s/run", "expected"
    );
    for (k, m, rs, ok) in &rows {
        let s = runner::summarize(rs);
        let titles: Vec<String> = s.titles.iter().map(|(t, n)| format!("{n}x {t}")).collect();
        println!(
            "{k:<9} {m:<13} {:>20} {:>8.1}  {:<8} {}",
            format!("{}/{}", s.crashes, s.conclusive),
            s.mean_seconds,
            if *ok { "holds" } else { "FAILS" },
            if titles.is_empty() {
                "-".into()
            } else {
                titles.join(", ")
            }
        );
    }
    let crash = rows
        .iter()
        .flat_map(|r| r.2.iter())
        .find(|r| matches!(r.verdict, Verdict::Crash { .. }) && r.goal_reached);
    if let Some(r) = crash {
        println!(
            "\nInterleaving of a crashing run (seed {}):\n{}",
            r.seed, r.diagram
        );
    }
    Ok(if rows.iter().all(|r| r.3) { 0 } else { 1 })
}
