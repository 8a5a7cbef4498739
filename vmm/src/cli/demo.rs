//! `preemptor demo SCENARIO`: the main job. The scenario on each of its
//! kernel variants with injection, then each without, as one table, plus
//! the interleaving of one crash. `run --baseline` with demo defaults.
use super::run::{check_out_dir, execute, print_table, stopped, stopped_exit, Plan};
use super::UsageError;
use crate::scenario::Scenario;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Scenario folder (scenarios/NAME) or its TOML file.
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
    let plan = Plan {
        kernels: scn.variants().into_iter().map(|(n, _)| n).collect(),
        scenario: scn,
        modes: vec![true, false],
        runs: a.runs,
        seed: a.seed,
        expect: None,
        out: a.out,
        snapshot: !a.no_snapshot,
        snapshot_file: None,
        verify_restore: false,
        full_reports: false,
        quiet: false,
        gdb: Default::default(),
        preempt: None,
        jobs: None,
    };
    if let Some(o) = &plan.out {
        check_out_dir(o)?;
    }
    crate::boot::catch_interrupts()?;
    let results = execute(&plan)?;
    let finished: usize = results.iter().map(|r| r.runs.len()).sum();
    let stopped = stopped(finished)?;
    print_table(&results);
    if let Some(o) = &plan.out {
        super::run::write_page(o, &plan.scenario, &results);
    }
    if crate::boot::interrupted() {
        return Ok(130);
    }
    if let Some(r) = &stopped {
        return Ok(stopped_exit(r, finished));
    }
    Ok(if results.iter().all(|r| r.ok) { 0 } else { 1 })
}
