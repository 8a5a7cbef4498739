//! `preemptor bench jobs`: runs per hour with 1, 2, ... VMs at once, all
//! restored from one snapshot, with the verdict counts at each level (the
//! rates must not move with the jobs), and the host CPU time a run costs,
//! from which it models a bigger host.
use super::UsageError;
use crate::scenario::{parallel, runner, Scenario};
use std::time::Instant;

#[derive(clap::Args)]
pub struct JobsArgs {
    /// Scenario folder or TOML file.
    pub scenario: std::path::PathBuf,
    /// Its variant (default: its first).
    #[arg(long)]
    pub kernel: Option<String>,
    /// Runs per level and mode (injected, then the baseline).
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Levels to measure (default: 1, 2, 4, ... up to twice the host's cores).
    #[arg(long, value_delimiter = ',')]
    pub jobs: Vec<usize>,
}

/// Host CPU seconds this process used (user + system: on kvm_pvm the
/// emulated guest kernel runs as the vCPU threads' system time).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

pub fn run(a: JobsArgs) -> Result<i32, UsageError> {
    let scn = Scenario::load(&a.scenario)?;
    let kernel = a
        .kernel
        .clone()
        .unwrap_or_else(|| scn.variants().remove(0).0);
    if a.runs == 0 {
        return Err(UsageError("--runs must be at least 1".into()));
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let levels = if a.jobs.is_empty() {
        std::iter::successors(Some(1usize), |j| Some(j * 2))
            .take_while(|j| *j <= 2 * cores)
            .collect()
    } else {
        a.jobs.clone()
    };
    if levels.contains(&0) {
        return Err(UsageError("--jobs: a level must be at least 1".into()));
    }
    crate::boot::catch_interrupts()?;
    let inject = runner::prepare(scn.clone(), &kernel, true, true)?;
    let mut base = runner::prepare(scn.clone(), &kernel, false, true)?;
    let t = Instant::now();
    inject.snapshot()?;
    base.share_snapshot(&inject);
    println!(
        "bench jobs: {} on {kernel}, {} runs per level and mode; host: {cores} cores, profile {}; guest: {} vCPUs; snapshot ready in {:.1} s",
        scn.name,
        a.runs,
        inject.profile.name(),
        scn.guest.vcpus,
        t.elapsed().as_secs_f64()
    );
    println!(
        "{:>4}  {:<9} {:>5} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8} {:>10}",
        "jobs",
        "mode",
        "runs",
        "crash",
        "clean",
        "other",
        "wall s",
        "runs/h",
        "speedup",
        "cpu s/run"
    );
    // Per mode: (runs/h at the first level, cpu s/run, wall s/run at 1 job).
    let mut first: [Option<(f64, f64, f64)>; 2] = [None, None];
    for &jobs in &levels {
        for (m, p) in [&inject, &base].into_iter().enumerate() {
            if crate::boot::interrupted() {
                return Ok(130);
            }
            let (c0, t0) = (cpu_seconds(), Instant::now());
            let mut rs = Vec::new();
            parallel::in_order(
                a.runs,
                jobs,
                |i| p.run_once(i, 1 + i as u64, None).ok(),
                |_, r| rs.push(r),
            );
            let wall = t0.elapsed().as_secs_f64();
            let cpu = (cpu_seconds() - c0) / rs.len().max(1) as f64;
            let s = runner::summarize(&rs);
            let per_hour = rs.len() as f64 * 3600.0 / wall.max(1e-9);
            let f = first[m].get_or_insert((per_hour, cpu, wall / rs.len().max(1) as f64));
            println!(
                "{:>4}  {:<9} {:>5} {:>6} {:>6} {:>6} {:>8.1} {:>8.0} {:>7.2}x {:>10.2}",
                jobs,
                if m == 0 { "injection" } else { "baseline" },
                rs.len(),
                s.crashes,
                s.clean,
                rs.len() - s.crashes - s.clean,
                wall,
                per_hour,
                per_hour / f.0,
                cpu
            );
        }
    }
    // A run needs `cpu` host seconds and, alone, `w` wall seconds: N jobs
    // give at most N/w runs a second and the cores at most cores/cpu.
    for (m, f) in first.iter().enumerate() {
        let Some((_, cpu, w)) = f else { continue };
        let model = |cores: usize| {
            let jobs = (cores / scn.guest.vcpus.max(1)).max(1) as f64;
            3600.0 * (jobs / w).min(cores as f64 / cpu.max(1e-9))
        };
        println!(
            "model ({}): a run is {w:.2} s alone and {cpu:.2} host CPU s; runs/h ≈ 3600·min(jobs/{w:.2}, cores/{cpu:.2}): {cores} cores {:.0}, 32 cores {:.0} (jobs = cores / {} vCPUs)",
            if m == 0 { "injection" } else { "baseline" },
            model(cores),
            model(32),
            scn.guest.vcpus
        );
    }
    Ok(0)
}
