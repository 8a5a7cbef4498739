//! `preemptor bench explore`: how reliable `explore` is, as a figure, not
//! an anecdote: for several seeds and each sampling strategy, the runs to
//! the first wanted crash (the first candidate) and to the first confirmed
//! finding, with the median and the worst. Each exploration is this
//! binary's own `explore`, one process per strategy and seed, with its
//! results file kept in `--dir`: a rerun with the same directory continues
//! them instead of starting over.
use super::UsageError;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(clap::Args)]
pub struct ExploreBenchArgs {
    /// Scenario folder or TOML file.
    pub scenario: PathBuf,
    /// The kernel variant to explore.
    #[arg(long)]
    pub kernel: String,
    /// Sites, as `explore --sites` takes them.
    #[arg(long, value_delimiter = ',')]
    pub sites: Vec<String>,
    /// A crash report, as `explore --from-report` takes it.
    #[arg(long, value_name = "FILE")]
    pub from_report: Option<PathBuf>,
    /// Wanted titles (regex), as `explore --want`.
    #[arg(long)]
    pub want: Option<String>,
    /// Stall durations, as `explore --stall` takes them (default: explore's).
    #[arg(long, value_name = "RANGE")]
    pub stall: Option<String>,
    /// Seeds 1..=N for each strategy.
    #[arg(long, default_value_t = 5)]
    pub seeds: u64,
    /// Runs per exploration at most.
    #[arg(long, default_value_t = 300)]
    pub budget: usize,
    #[arg(long, value_delimiter = ',', default_value = "adaptive,uniform")]
    pub strategies: Vec<String>,
    /// Where each exploration's results and output are kept (default: a
    /// new temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// One exploration's outcome, read back from its results file.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Outcome {
    runs: usize,
    /// 1-based run of the first crash with a wanted title.
    first_wanted: Option<usize>,
    /// 1-based run after which the first finding was confirmed.
    first_confirmed: Option<usize>,
}

fn read_outcome(path: &Path) -> Result<Outcome, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut o = Outcome::default();
    for (i, line) in text.lines().enumerate().skip(1) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        if v.get("confirm").is_some() {
            // A candidate is made at the run that crashed with a wanted
            // title; `after_run` is that run's index.
            let at = v["after_run"].as_u64().unwrap_or(0) as usize + 1;
            o.first_wanted = Some(o.first_wanted.map_or(at, |w| w.min(at)));
            if v["confirmed"].as_bool() == Some(true) {
                o.first_confirmed = Some(o.first_confirmed.map_or(at, |w| w.min(at)));
            }
        } else if v.get("run").is_some() {
            o.runs += 1;
        }
    }
    Ok(o)
}

/// `median` and `worst` of runs-to-event, a miss counted as past the
/// budget (`>N`).
fn figure(xs: &[Option<usize>], budget: usize) -> (String, String) {
    let mut v: Vec<usize> = xs.iter().map(|x| x.unwrap_or(usize::MAX)).collect();
    v.sort_unstable();
    let show = |x: usize| {
        if x == usize::MAX {
            format!(">{budget}")
        } else {
            x.to_string()
        }
    };
    if v.is_empty() {
        return ("-".into(), "-".into());
    }
    // The lower median of an even count: no half runs.
    (show(v[(v.len() - 1) / 2]), show(v[v.len() - 1]))
}

pub fn run(a: ExploreBenchArgs) -> Result<i32, UsageError> {
    if a.sites.is_empty() && a.from_report.is_none() {
        return Err(UsageError("give --sites or --from-report".into()));
    }
    if a.seeds == 0 {
        return Err(UsageError("--seeds must be at least 1".into()));
    }
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            std::env::temp_dir().join(format!("preemptor-bench-explore-{}", std::process::id()))
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| UsageError(format!("{}: {e}", dir.display())))?;
    let exe = std::env::current_exe().map_err(|e| UsageError(format!("this binary: {e}")))?;
    crate::boot::catch_interrupts()?;
    println!(
        "explore {} on {}: {} seeds per strategy, budget {} runs; results in {}",
        a.scenario.display(),
        a.kernel,
        a.seeds,
        a.budget,
        dir.display()
    );
    let mut rows = Vec::new();
    for strategy in &a.strategies {
        let mut outs = Vec::new();
        let t0 = Instant::now();
        for seed in 1..=a.seeds {
            if crate::boot::interrupted() {
                break;
            }
            let res = dir.join(format!("{strategy}-{seed}.jsonl"));
            let mut cmd = Command::new(&exe);
            cmd.arg("explore")
                .arg(&a.scenario)
                .args(["--kernel", &a.kernel, "--strategy", strategy])
                .args(["--seed", &seed.to_string()])
                .args(["--budget", &a.budget.to_string()])
                .args(["--stop-after", "1", "--top", "0"])
                .arg("--results")
                .arg(&res);
            if !a.sites.is_empty() {
                cmd.arg("--sites").arg(a.sites.join(","));
            }
            if let Some(f) = &a.from_report {
                cmd.arg("--from-report").arg(f);
            }
            if let Some(w) = &a.want {
                cmd.args(["--want", w]);
            }
            if let Some(s) = &a.stall {
                cmd.args(["--stall", s]);
            }
            let t = Instant::now();
            let out = cmd
                .output()
                .map_err(|e| UsageError(format!("{}: {e}", exe.display())))?;
            let log = dir.join(format!("{strategy}-{seed}.out"));
            let _ = std::fs::write(&log, [&out.stdout[..], &out.stderr[..]].concat());
            if !out.status.success() && out.status.code() != Some(1) {
                return Err(UsageError(format!(
                    "explore --strategy {strategy} --seed {seed} exited {}: see {}",
                    out.status,
                    log.display()
                )));
            }
            let o = read_outcome(&res).map_err(UsageError)?;
            println!(
                "  {strategy:<8} seed {seed}: {} runs, first wanted crash at {}, first confirmed at {} ({:.0} s)",
                o.runs,
                o.first_wanted.map_or("-".into(), |r| format!("run {r}")),
                o.first_confirmed.map_or("-".into(), |r| format!("run {r}")),
                t.elapsed().as_secs_f64()
            );
            outs.push(o);
        }
        rows.push((strategy.clone(), outs, t0.elapsed().as_secs_f64()));
    }
    println!(
        "\n{:<9} {:>6} {:>9}  {:>22}  {:>22}  {:>8}",
        "strategy", "seeds", "confirmed", "to first wanted crash", "to first confirmed", "wall s"
    );
    println!(
        "{:<9} {:>6} {:>9}  {:>10} {:>11}  {:>10} {:>11}",
        "", "", "", "median", "worst", "median", "worst"
    );
    for (s, outs, secs) in &rows {
        let w: Vec<Option<usize>> = outs.iter().map(|o| o.first_wanted).collect();
        let c: Vec<Option<usize>> = outs.iter().map(|o| o.first_confirmed).collect();
        let (wm, ww) = figure(&w, a.budget);
        let (cm, cw) = figure(&c, a.budget);
        println!(
            "{:<9} {:>6} {:>9}  {:>10} {:>11}  {:>10} {:>11}  {:>8.0}",
            s,
            outs.len(),
            format!("{}/{}", c.iter().flatten().count(), outs.len()),
            wm,
            ww,
            cm,
            cw,
            secs
        );
    }
    Ok(if crate::boot::interrupted() { 130 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_worst_count_misses_past_the_budget() {
        assert_eq!(
            figure(&[Some(3), Some(9), Some(5)], 100),
            ("5".into(), "9".into())
        );
        assert_eq!(figure(&[Some(3), None], 100), ("3".into(), ">100".into()));
        assert_eq!(
            figure(&[None, None, Some(1)], 50),
            (">50".into(), ">50".into())
        );
    }

    #[test]
    fn outcome_from_a_results_file() {
        let d = std::env::temp_dir().join(format!("pe-bench-explore-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("r.jsonl");
        std::fs::write(
            &f,
            "{\"explore\":1}\n{\"run\":0}\n{\"run\":1}\n{\"confirm\":{},\"after_run\":1,\"confirmed\":false}\n{\"run\":2}\n{\"run\":3}\n{\"confirm\":{},\"after_run\":3,\"confirmed\":true}\n",
        )
        .unwrap();
        let o = read_outcome(&f).unwrap();
        assert_eq!(
            o,
            Outcome {
                runs: 4,
                first_wanted: Some(2),
                first_confirmed: Some(4)
            }
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
