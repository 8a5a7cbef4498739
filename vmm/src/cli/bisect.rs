//! `preemptor bisect`: parse, print (the search is `crate::bisect`).
use super::UsageError;
use crate::bisect::{BisectConfig, Bisection, Class, End, Step};
use crate::scenario::Scenario;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct BisectArgs {
    /// Scenario folder or TOML file: its guest, workload and triggers.
    pub scenario: PathBuf,
    /// The git repository of the kernel source (only read: builds happen
    /// in a work tree of its own in the cache).
    #[arg(long, value_name = "GIT_DIR")]
    pub repo: PathBuf,
    /// A commit with the old behaviour (default: does not crash; with
    /// --fix: crashes). `git bisect`'s "good".
    #[arg(long, visible_alias = "good", value_name = "REV")]
    pub old: String,
    /// A commit with the new behaviour (crashes; with --fix: does not).
    /// `git bisect`'s "bad".
    #[arg(long, visible_alias = "bad", value_name = "REV")]
    pub new: String,
    /// Look for the fix: the first commit where it no longer crashes.
    #[arg(long)]
    pub fix: bool,
    /// The scenario's kernel variant whose patches and config fragments go
    /// on top of each commit (default: none, the commit as it is, with the
    /// project's config fragment and host-compat patch).
    #[arg(long, value_name = "VARIANT")]
    pub kernel: Option<String>,
    /// Injected runs per commit (a first batch; more, in batches, while
    /// the rate is neither clearly high nor 0).
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// At most this many runs per commit; then it is skipped.
    #[arg(long, default_value_t = 30)]
    pub max_runs: usize,
    /// Crash titles that count as the race (regex; default: any crash).
    /// Another crash is an inconclusive run.
    #[arg(long, value_name = "REGEX")]
    pub want: Option<String>,
    /// JSON lines: a header, then one line per step as it finishes; a
    /// second invocation with the same file and question reuses them.
    #[arg(long, value_name = "FILE")]
    pub results: Option<PathBuf>,
    /// Write an HTML page here (`index.html`): the steps and the answer.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// VMs at once (default: one per `vcpus` host cores).
    #[arg(long)]
    pub jobs: Option<u64>,
}

pub fn run(a: BisectArgs) -> Result<i32, UsageError> {
    let scn = Scenario::load(&a.scenario)?;
    if a.runs == 0 || a.max_runs < a.runs {
        return Err(UsageError(format!(
            "--runs {} --max-runs {}: need 0 < runs <= max-runs",
            a.runs, a.max_runs
        )));
    }
    let want = a
        .want
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| UsageError(format!("--want: {e}")))?;
    let jobs = super::run::jobs_or_default(a.jobs, scn.guest.vcpus);
    let b = Bisection::new(BisectConfig {
        scenario: scn,
        variant: a.kernel.clone(),
        repo: a.repo.clone(),
        old: a.old.clone(),
        new: a.new.clone(),
        fix: a.fix,
        runs: a.runs,
        max_runs: a.max_runs,
        want,
        seed: a.seed,
        jobs,
        results: a.results.clone(),
    })?;
    crate::boot::catch_interrupts()?;
    let (old_is, new_is) = if b.fix() {
        ("crashes", "does not crash")
    } else {
        ("does not crash", "crashes")
    };
    let n = b.commits.len();
    eprintln!(
        "preemptor: bisecting {n} commits after {} ({old_is}) up to {} ({new_is}): about {} steps",
        b.old.short(),
        b.new.short(),
        usize::BITS - n.saturating_sub(1).leading_zeros()
    );
    let mut steps: Vec<Step> = Vec::new();
    let end = b.run(|s| {
        eprintln!("preemptor: step {}: {}", steps.len() + 1, line(s));
        steps.push(s.clone());
    })?;
    println!("{}", table(&steps));
    let what = if b.fix() {
        "first commit where it no longer crashes"
    } else {
        "first commit where it crashes"
    };
    let answer = match &end {
        End::First(c) => format!("{what}: {} {} ({})", c.sha, c.subject, c.date),
        End::Among(cs) => {
            let mut t = format!("{what}: one of these (the others between them were skipped):");
            for c in cs {
                t += &format!("\n  {} {} ({})", c.sha, c.subject, c.date);
            }
            t
        }
        End::Stopped(why) => format!("stopped: {why}"),
    };
    if let Some(o) = &a.out {
        write_page(o, &a, &steps, &answer);
    }
    Ok(match end {
        End::First(_) => {
            println!("{answer}");
            0
        }
        End::Among(_) => {
            println!("{answer}");
            1
        }
        End::Stopped(why) => {
            println!(
                "stopped: {why} (finished steps are kept{})",
                match &a.results {
                    Some(r) => format!(" in {}; the same command goes on", r.display()),
                    None => String::new(),
                }
            );
            if crate::boot::interrupted() {
                130
            } else {
                3
            }
        }
    })
}

fn verdict(s: &Step) -> &'static str {
    match s.new {
        Some(true) => "new",
        Some(false) => "old",
        None => "skip",
    }
}

fn rate(s: &Step) -> String {
    match s.ci95 {
        Some((lo, hi)) => format!(
            "{}/{} ({:.0}-{:.0}%)",
            s.crashes,
            s.conclusive,
            lo * 100.0,
            hi * 100.0
        ),
        None => "-".into(),
    }
}

/// One step, for the progress lines.
fn line(s: &Step) -> String {
    let class = match s.class {
        Class::Crash => "crash",
        Class::Clean => "clean",
        Class::Skip => "skip",
    };
    let mut l = format!(
        "{} {}: {class} ({} crashed), {}{}",
        s.commit.short(),
        s.commit.subject,
        rate(s),
        verdict(s),
        if s.reused { ", from --results" } else { "" }
    );
    if let Some(r) = &s.reason {
        l += &format!(": {r}");
    }
    if !s.reused {
        l += &format!(
            " [build {:.0} s, boot {:.0} s, {} runs {:.0} s]",
            s.build_s, s.boot_s, s.runs, s.runs_s
        );
    }
    l
}

fn table(steps: &[Step]) -> String {
    let mut t = format!(
        "{:<4} {:<12} {:>7} {:>6} {:>5} {:>6} {:<18} {:<5} subject\n",
        "step", "commit", "build s", "boot s", "runs", "runs s", "crashed (95% CI)", "is"
    );
    for (i, s) in steps.iter().enumerate() {
        t += &format!(
            "{:<4} {:<12} {:>7.0} {:>6.0} {:>5} {:>6.0} {:<18} {:<5} {}{}\n",
            i + 1,
            s.commit.short(),
            s.build_s,
            s.boot_s,
            s.runs,
            s.runs_s,
            rate(s),
            verdict(s),
            s.commit.subject,
            s.reason
                .as_ref()
                .map(|r| format!(" — {r}"))
                .unwrap_or_default()
        );
    }
    t
}

/// `--out DIR/index.html`: the answer and the steps.
fn write_page(out: &std::path::Path, a: &BisectArgs, steps: &[Step], answer: &str) {
    use crate::view::{Page, Table};
    let rows = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            vec![
                (i + 1).to_string().into(),
                s.commit.short().to_string().into(),
                s.commit.subject.clone().into(),
                s.commit.date.clone().into(),
                format!("{:.0}", s.build_s).into(),
                format!("{:.0}", s.boot_s).into(),
                format!("{} ({:.0} s)", s.runs, s.runs_s).into(),
                rate(s).into(),
                verdict(s).into(),
                s.reason.clone().unwrap_or_default().into(),
            ]
        })
        .collect();
    let page = Page {
        title: format!("preemptor bisect: {}", a.scenario.display()),
        summary: answer.lines().map(String::from).collect(),
        tables: vec![Table {
            caption: "Steps".into(),
            head: [
                "step",
                "commit",
                "subject",
                "date",
                "build s",
                "boot s",
                "runs",
                "crashed (95% CI)",
                "is",
                "why skipped",
            ]
            .map(String::from)
            .to_vec(),
            rows,
        }],
        ..Default::default()
    };
    super::write_page(&page, out);
}
