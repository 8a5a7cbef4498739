//! `preemptor sweep`: one trigger parameter over a range, N runs per point,
//! the crash rate per point with its interval, a table and an SVG plot.
use super::plot::{self, RatePoint};
use super::UsageError;
use crate::scenario::runner;
use crate::scenario::sweep::{self, Point, PointResult, Vary};
use crate::scenario::Scenario;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SweepArgs {
    /// Scenario folder (scenarios/NAME) or its TOML file.
    pub scenario: PathBuf,
    /// The kernel variant to sweep on (or a path to a vmlinux).
    #[arg(long, value_name = "VARIANT|PATH")]
    pub kernel: String,
    /// TRIGGER.PARAM=VALUES: `waker.stall=0ms..20ms` (replaces the stall
    /// with a fixed duration), `waker.stall.after=...`, `.stall.timeout`,
    /// `.stall.duration`, `.block_irq`, `.nth`, `.every`, `.from`,
    /// `.max_fires`, `.probability`, `.vcpu`, `.site=A,B,...` or
    /// `.site=FUNC/each` (every instruction of FUNC). A range needs
    /// --points or --step; a list is `a,b,c`.
    #[arg(long, value_name = "SPEC")]
    pub vary: String,
    /// Points of a range, both ends included.
    #[arg(long, conflicts_with = "step")]
    pub points: Option<usize>,
    /// Step of a range (a duration for durations).
    #[arg(long)]
    pub step: Option<String>,
    /// Runs per point.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Run r of point i uses seed S + i*runs + r.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write an HTML page here (`index.html`, and `plot.svg` unless
    /// --plot says where): the table and the plot.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Draw crash rate against the parameter, with 95% intervals (SVG).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Write one JSON line per finished run (point, seed, verdict).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Boot every run instead of restoring the snapshot.
    #[arg(long)]
    pub no_snapshot: bool,
    /// VMs at once (default: host cores / the guest's vCPUs, at least 1);
    /// the table, JSON lines and plot do not depend on it.
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub jobs: Option<u64>,
}

pub fn run(a: SweepArgs) -> Result<i32, UsageError> {
    let scn = Scenario::load(&a.scenario)?;
    let mut vary = sweep::parse(&a.vary, a.points, a.step.as_deref())?;
    if a.runs == 0 {
        return Err(UsageError("--runs must be at least 1".into()));
    }
    let p = runner::prepare(scn, &a.kernel, true, !a.no_snapshot)?;
    expand_sites(&mut vary, &p)?;
    // Every point's triggers against this kernel, before the first run.
    let specs = (0..vary.points.len())
        .map(|i| vary.apply(&p.scenario.triggers, i))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, s) in specs.iter().enumerate() {
        p.check_triggers(s, &p.scenario.goal)
            .map_err(|e| UsageError(format!("{} = {}: {e}", vary.name, vary.points[i])))?;
    }
    let mut json = match &a.json {
        Some(f) => Some(std::io::BufWriter::new(
            std::fs::File::create(f).map_err(|e| UsageError(format!("{}: {e}", f.display())))?,
        )),
        None => None,
    };
    crate::boot::catch_interrupts()?;
    let total = (vary.points.len() * a.runs) as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} runs, {msg} (ETA {eta}, {elapsed})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(vary.name.clone());
    let mut results: Vec<PointResult> = Vec::new();
    let mut crashes = 0;
    // Point i's run r is item i*runs + r: in order, so a point's runs
    // are contiguous whatever the jobs.
    let jobs = super::run::jobs_or_default(a.jobs, p.scenario.guest.vcpus);
    let work = |k: usize| {
        let (i, seed) = (k / a.runs, a.seed + k as u64);
        if crate::boot::interrupted() {
            return Ok(None);
        }
        p.run_with(k, seed, None, &specs[i], &p.scenario.goal)
            .map(|r| {
                (!matches!(r.verdict, crate::boot::verdict::Verdict::Interrupted)).then_some(r)
            })
    };
    let mut write_err = None;
    let mut pr = PointResult::default();
    let mut at = 0;
    let ran = crate::scenario::parallel::try_in_order(
        specs.len() * a.runs,
        jobs,
        |k| format!("run {k}"),
        work,
        |k, res| {
            let (i, seed) = (k / a.runs, a.seed + k as u64);
            if i != at {
                results.push(std::mem::take(&mut pr));
                at = i;
            }
            let (valid, crash) = res.judged();
            crashes += crash.is_some() as usize;
            pr.add(valid, crash, res.goal_reached, res.seconds);
            if let Some(w) = json.as_mut() {
                let line = serde_json::json!({
                    "param": vary.name, "point": vary.points[i], "seed": seed,
                    "valid": valid, "verdict": res.verdict, "goal_reached": res.goal_reached,
                    "fired": res.fired, "seconds": res.seconds,
                });
                if let Err(e) = writeln!(w, "{line}").and_then(|_| w.flush()) {
                    crate::boot::stop_runs(format!("--json: {e}"));
                    write_err.get_or_insert(e);
                }
            }
            bar.set_message(format!("{crashes} crashes; at {}", vary.points[i]));
            bar.inc(1);
        },
    );
    if pr.runs > 0 {
        results.push(pr);
    }
    if let Some(e) = write_err {
        return Err(UsageError(format!("--json: {e}")));
    }
    ran?;
    bar.finish_and_clear();
    let interrupted = crate::boot::interrupted();
    let table = table_text(&vary, &results, &p.kernel_name);
    print!("{table}");
    if interrupted {
        println!(
            "interrupted: {} of {} points done",
            results.len(),
            vary.points.len()
        );
    }
    // With --out and no --plot, the plot goes beside the page.
    let plot_path = a
        .plot
        .clone()
        .or_else(|| a.out.as_ref().map(|o| o.join("plot.svg")));
    if let Some(o) = &a.out {
        std::fs::create_dir_all(o)
            .map_err(|e| UsageError(format!("--out {}: {e}", o.display())))?;
    }
    if let Some(path) = &plot_path {
        let pts: Vec<RatePoint> = results
            .iter()
            .enumerate()
            .map(|(i, r)| RatePoint {
                x: vary.x(i),
                rate: r.rate(),
                ci: r.ci95(),
            })
            .collect();
        let names: Option<Vec<String>> = matches!(vary.points.first(), Some(Point::Text(_)))
            .then(|| vary.points.iter().map(|p| p.to_string()).collect());
        plot::rate_plot(
            path,
            &format!("{}: {} on {}", p.scenario.name, vary.name, p.kernel_name),
            &vary.axis(),
            &pts,
            names.as_deref(),
        )
        .map_err(UsageError)?;
        println!("plot: {}", path.display());
    }
    if let Some(o) = &a.out {
        // The plot inline (its XML declaration dropped), the table as printed.
        let svg = plot_path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| match t.find("<svg") {
                Some(i) => t[i..].to_string(),
                None => t,
            });
        let page = crate::view::Page {
            title: format!("preemptor sweep: {} on {}", p.scenario.name, p.kernel_name),
            pre: vec![("Crash rate per point".into(), table)],
            images: svg
                .map(|s| vec![(vary.name.clone(), s)])
                .unwrap_or_default(),
            ..Default::default()
        };
        super::write_page(&page, o);
    }
    Ok(if interrupted { 130 } else { 0 })
}

/// `FUNC/each` in a site list: every instruction of FUNC as `FUNC+off`.
fn expand_sites(vary: &mut Vary, p: &runner::Prepared) -> Result<(), UsageError> {
    let mut out = Vec::new();
    for pt in &vary.points {
        match pt {
            Point::Text(s) if s.ends_with("/each") => {
                let func = &s[..s.len() - "/each".len()];
                let syms = p
                    .symbols()
                    .ok_or_else(|| UsageError(format!("{s}: the kernel has no vmlinux")))?;
                let f = syms.function(func)?;
                for i in syms.disasm(&f)? {
                    out.push(Point::Text(format!("{}+{:#x}", f.name, i.offset)));
                }
            }
            _ => out.push(pt.clone()),
        }
    }
    vary.points = out;
    Ok(())
}

fn table_text(vary: &Vary, results: &[PointResult], kernel: &str) -> String {
    let mut s = format!(
        "{:<28} {:>5} {:>6} {:>8} {:>6} {:>12} {:>6} {:>6}  titles",
        format!("{} ({kernel})", vary.name),
        "runs",
        "valid",
        "crashes",
        "rate",
        "95% CI",
        "goal",
        "s/run"
    );
    s.push('\n');
    for (i, r) in results.iter().enumerate() {
        let (rate, ci) = match (r.rate(), r.ci95()) {
            (Some(x), Some((lo, hi))) => (
                format!("{:.0}%", x * 100.0),
                format!("{:.0}-{:.0}%", lo * 100.0, hi * 100.0),
            ),
            _ => ("-".into(), "-".into()),
        };
        let titles: Vec<String> = r.titles.iter().map(|(t, n)| format!("{n}x {t}")).collect();
        s += &format!(
            "{:<28} {:>5} {:>6} {:>8} {:>6} {:>12} {:>6} {:>6.2}  {}",
            vary.points[i].to_string(),
            r.runs,
            r.valid,
            r.crashes,
            rate,
            ci,
            r.goal,
            r.seconds / r.runs.max(1) as f64,
            titles.join("; ")
        );
        s.push('\n');
    }
    s
}
