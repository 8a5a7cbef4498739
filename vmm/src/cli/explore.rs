//! `preemptor explore`: stall random pairs of points in a set of kernel
//! functions on two vCPUs, learn which crash, rank them, and emit a
//! scenario that reproduces the best (see `scenario::explore`).
use super::UsageError;
use crate::boot::verdict::Verdict;
use crate::debug::symbols::{Class, Symbols};
use crate::scenario::explore::{self, Config, Explorer, Header, Point, Strategy};
use crate::scenario::{runner, travel, Goal, Scenario};
use crate::stall::spec::Duration2;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct ExploreArgs {
    /// Scenario folder or TOML file: its guest and workload (its triggers
    /// are not used).
    pub scenario: PathBuf,
    /// The kernel variant to explore (or a path to a vmlinux).
    #[arg(long, value_name = "VARIANT|PATH")]
    pub kernel: String,
    /// Where to stall: functions or globs (`try_to_wake_up`, `rwsem_*`), or
    /// source line ranges (`kernel/sched/core.c:3600-3700`); comma-separated
    /// or repeated. Each becomes its stall points (`symbols --stall-points`).
    /// With --from-report, added to the report's functions.
    #[arg(
        long,
        value_name = "FUNC|GLOB|FILE:A-B",
        value_delimiter = ',',
        required_unless_present = "from_report"
    )]
    pub sites: Vec<String>,
    /// A crash report (a console log, a run's `console.log`, a syzbot
    /// report): the functions of its crash stack (and of its allocation
    /// and free stacks) become the sites, minus entry, locking, printk,
    /// allocator and reporting frames; --want defaults to its title.
    #[arg(long, value_name = "FILE")]
    pub from_report: Option<PathBuf>,
    /// Only stall points of these classes (entry, load, store, atomic, call).
    #[arg(long, value_delimiter = ',')]
    pub class: Vec<String>,
    /// Stall durations, drawn log-uniformly per armed point and run.
    #[arg(long, default_value = "100us..20ms")]
    pub stall: Duration2,
    /// vCPUs to stall (default: all of the guest's; at least two).
    #[arg(long, value_delimiter = ',')]
    pub vcpus: Vec<usize>,
    /// Total runs, counting those already in --results.
    #[arg(long, default_value_t = 300)]
    pub budget: usize,
    /// JSON lines, one per run; a second invocation with the same file
    /// and arguments continues it up to --budget.
    #[arg(long, value_name = "FILE")]
    pub results: Option<PathBuf>,
    /// Write an HTML page here (`index.html`): the ranking, the
    /// confirmations and the emitted scenario.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write a scenario reproducing the best confirmed finding; with none,
    /// nothing is written and the exit status is 1.
    #[arg(long, value_name = "FILE.toml")]
    pub emit: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "adaptive")]
    pub strategy: Strategy,
    /// A primary point stalls at a hit with this probability.
    #[arg(long, default_value_t = 0.5)]
    pub probability: f64,
    /// At most this many stalls per armed point and run.
    #[arg(long, default_value_t = 4)]
    pub max_fires: u64,
    /// Interrupts that came due while a vCPU was stalled are held back this
    /// long after it resumes (or to its next breakpoint hit): `0` delivers
    /// them at once, as a real preemption's backlog would.
    #[arg(long, default_value = "20ms")]
    pub block_irq: String,
    /// Crash titles that count as found (regex; default: any).
    #[arg(long, value_name = "REGEX")]
    pub want: Option<String>,
    /// Stop after this many confirmed findings whose title matches --want.
    #[arg(long, value_name = "N")]
    pub stop_after: Option<usize>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// VMs at once (default: host cores / the guest's vCPUs, at least 1).
    /// With N > 1, N runs are planned at a time from what the runs before
    /// them found (batched Thompson sampling): another sequence of runs
    /// than with 1. Confirmations decide the same whatever N.
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub jobs: Option<u64>,
    /// With --emit: runs of the emitted scenario on every kernel variant
    /// where its sites resolve (with injection), and on the explored kernel
    /// without; 0 skips. The exit status is 1 unless it holds: every site
    /// resolves on each variant of the explored kernel's base, at least 90%
    /// wanted crashes where the variant expects a crash, none elsewhere.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub verify: usize,
    /// Rows of the ranking to print.
    #[arg(long, default_value_t = 12)]
    pub top: usize,
}

pub fn run(a: ExploreArgs) -> Result<i32, UsageError> {
    let scn = Scenario::load(&a.scenario)?;
    if let Some(f) = &a.from_report {
        std::fs::metadata(f).map_err(|e| UsageError(format!("{}: {e}", f.display())))?;
    }
    if let Some(w) = &a.want {
        regex::Regex::new(w).map_err(|e| UsageError(format!("--want: {e}")))?;
    }
    if !(0.0..=1.0).contains(&a.probability) {
        return Err(UsageError("--probability must be in 0..=1".into()));
    }
    let block_irq = crate::stall::spec::parse_duration(&a.block_irq)?;
    let vcpus: Vec<usize> = if a.vcpus.is_empty() {
        (0..scn.guest.vcpus).collect()
    } else {
        a.vcpus.clone()
    };
    if vcpus.len() < 2 {
        return Err(UsageError(
            "explore stalls pairs of vCPUs: it needs at least two (--vcpus)".into(),
        ));
    }
    if let Some(v) = vcpus.iter().find(|v| **v >= scn.guest.vcpus) {
        return Err(UsageError(format!(
            "--vcpus: vCPU {v} does not exist (the guest has {})",
            scn.guest.vcpus
        )));
    }
    let classes = a
        .class
        .iter()
        .map(|c| {
            Class::ALL
                .iter()
                .find(|(n, _)| n == c)
                .map(|(_, k)| *k)
                .ok_or_else(|| {
                    UsageError(format!(
                        "--class: unknown '{c}' (entry, load, store, atomic, call)"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let scenario_text = std::fs::read_to_string(&scn.path)
        .map_err(|e| UsageError(format!("{}: {e}", scn.path.display())))?;
    // Absolute: the emitted scenario lives elsewhere.
    let scenario_dir = scn.dir().canonicalize().unwrap_or_else(|_| scn.dir());
    let scn_copy = scn.clone();
    let p = runner::prepare(scn, &a.kernel, true, true)?;
    let syms = p
        .symbols()
        .ok_or_else(|| UsageError("explore needs the kernel's vmlinux".into()))?;
    // The report is read with the explored kernel's symbols: its frames
    // then include the functions inlined there.
    let report = match &a.from_report {
        Some(f) => {
            let raw = std::fs::read_to_string(f)
                .map_err(|e| UsageError(format!("{}: {e}", f.display())))?
                .replace('\r', "");
            let (text, r) = super::report::classify_text(&raw, Some(syms));
            let r = r.ok_or_else(|| {
                UsageError(format!("{}: no kernel crash report in it", f.display()))
            })?;
            // The frames from the report's own lines up to its end, `?`
            // frames included (the classifier's excerpt drops those).
            let body = &text[r.start.min(text.len())..];
            let end = crate::report::REPORT_END
                .iter()
                .filter_map(|m| body.find(m))
                .min()
                .and_then(|i| body[i..].find('\n').map(|n| i + n))
                .unwrap_or(body.len());
            Some((r.title.clone(), crate::report::frames(&body[..end])))
        }
        None => None,
    };
    let want_default = report
        .as_ref()
        .map(|(title, _)| format!("^{}$", regex::escape(title)))
        .unwrap_or_default();
    let want = regex::Regex::new(a.want.as_deref().unwrap_or(&want_default))
        .map_err(|e| UsageError(format!("--want: {e}")))?;
    let mut sites = a.sites.clone();
    if let Some((title, frames)) = &report {
        let mut from = report_sites(syms, title, frames, &want);
        from.retain(|f| !sites.contains(f));
        sites.splice(0..0, from);
    }
    let mut points = candidate_points(syms, &sites)?;
    if !classes.is_empty() {
        points.retain(|p| classes.contains(&p.class));
    }
    if points.is_empty() {
        return Err(UsageError(
            "no stall points in --sites (and --class)".into(),
        ));
    }
    let cfg = Config {
        vcpus,
        stall_lo: a.stall.lo,
        stall_hi: a.stall.hi,
        block_irq,
        probability: a.probability,
        max_fires: a.max_fires,
        slots: 4,
        strategy: a.strategy,
        seed: a.seed,
    };
    let mut ex = Explorer::new(points, cfg);
    let header = ex.header(&p.scenario.name, &p.kernel_name);
    // Every point must resolve on this kernel before the first run.
    let all: Vec<_> = (0..ex.points.len())
        .map(|i| explore::Arm {
            point: i,
            vcpu: 0,
            role: explore::Role::P,
            stall_us: 0,
            focus: false,
            fires: 0,
        })
        .collect();
    for t in ex.triggers(&all) {
        p.check_triggers(std::slice::from_ref(&t), &Goal::default())?;
    }
    let mut out = match &a.results {
        Some(f) => Some(open_results(f, &header, &mut ex)?),
        None => None,
    };
    let done = ex.runs.len();
    let funcs: std::collections::BTreeSet<&str> =
        ex.points.iter().map(|p| p.func.as_str()).collect();
    let jobs = super::run::jobs_or_default(a.jobs, p.scenario.guest.vcpus);
    eprintln!(
        "preemptor: {} stall points in {} functions, vCPUs {:?}, {} armed per vCPU and run{}{}",
        ex.points.len(),
        funcs.len(),
        ex.cfg.vcpus,
        ex.cfg.slots,
        if jobs > 1 {
            format!(
                "; {jobs} VMs at once: {jobs} runs planned at a time (batched Thompson sampling)"
            )
        } else {
            String::new()
        },
        if done > 0 {
            format!("; {done} runs already in the results file")
        } else {
            String::new()
        }
    );
    crate::boot::catch_interrupts()?;
    let bar = ProgressBar::new(a.budget as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "explore [{bar:30}] {pos}/{len} runs, {msg} (ETA {eta}, {elapsed})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_position(done as u64);
    let t0 = Instant::now();
    let no_goal = Goal {
        sequence: vec![],
        disarm_on_goal: false,
    };
    // Sampling runs, each crash with a wanted title followed by its
    // confirmation (also a candidate left by an interrupted invocation,
    // and those of the budget's last run).
    let mut run = done;
    loop {
        if crate::boot::interrupted() {
            break;
        }
        if let Some(c) = ex.candidate(&want) {
            bar.set_message(format!(
                "confirming {}{}",
                ex.site(c.p),
                c.s.map(|s| format!(" + {}", ex.site(s)))
                    .unwrap_or_default()
            ));
            let after = ex.runs.last().map(|r| r.run).unwrap_or(0);
            let Some(conf) = confirm(&p, &ex, c, after, &want, a.seed, jobs, &bar)? else {
                break;
            };
            if let Some(w) = out.as_mut() {
                write_line(w, &conf)?;
            }
            ex.confirmations.push(conf);
            continue;
        }
        let (found, _) = ex.found(&want);
        if run >= a.budget || a.stop_after.is_some_and(|n| found >= n) {
            break;
        }
        // A batch of `jobs` runs planned from what is known now (batched
        // Thompson sampling), run at once, recorded in run order.
        let batch = jobs.min(a.budget - run);
        let plans: Vec<_> = (run..run + batch)
            .map(|r| {
                let arms = ex.plan(r);
                let triggers = ex.triggers(&arms);
                (arms, triggers)
            })
            .collect();
        let work = |k: usize| {
            let r = run + k;
            p.run_with(r, a.seed + r as u64, None, &plans[k].1, &no_goal)
                .map(|res| (!matches!(res.verdict, Verdict::Interrupted)).then_some(res))
        };
        let mut got = Vec::new();
        let ran = crate::scenario::parallel::try_in_order(
            batch,
            jobs,
            |k| format!("run {}", run + k),
            work,
            |k, res| got.push((k, res)),
        );
        // Only the batch's first runs without a gap are kept (a run after
        // an interrupted one is redone next time, with its own seed).
        let mut recorded = 0;
        for ((k, res), (arms, _)) in got.into_iter().zip(plans) {
            if k != recorded {
                break;
            }
            recorded += 1;
            let r = run + k;
            let (valid, title) = res.judged();
            let rec = ex.record(
                r,
                a.seed + r as u64,
                arms,
                &res.fired,
                &res.holds,
                &res.changed,
                valid,
                res.verdict.name(),
                title,
                res.seconds,
            );
            if let Some(w) = out.as_mut() {
                write_line(w, &rec)?;
            }
            bar.inc(1);
        }
        ran?;
        if recorded < batch {
            break;
        }
        run += batch;
        let crashes = ex.runs.iter().filter(|r| r.title.is_some()).count();
        bar.set_message(format!(
            "{crashes} crashes, {} confirmed",
            ex.found(&want).0
        ));
    }
    bar.finish_and_clear();
    let interrupted = crate::boot::interrupted();
    let text = report_text(&ex, &a, &want, t0.elapsed(), done);
    print!("{text}");
    let mut status = if interrupted { 130 } else { 0 };
    let mut verified_runs = Vec::new();
    if let Some(path) = &a.emit {
        match ex.best_confirmed(&want) {
            Some(c) => {
                let (held, verification) = emit(
                    &a,
                    path,
                    &p,
                    &ex,
                    c,
                    &scn_copy,
                    &scenario_text,
                    &scenario_dir,
                    &want,
                )?;
                if !held && !crate::boot::interrupted() {
                    status = 1;
                }
                verified_runs = verification;
            }
            None => {
                let refuted = ex.confirmations.iter().filter(|c| !c.confirmed).count();
                println!(
                    "nothing emitted: no confirmed finding{} ({} candidate{} refuted)",
                    if a.want.is_some() {
                        " with a wanted title"
                    } else {
                        ""
                    },
                    refuted,
                    if refuted == 1 { "" } else { "s" }
                );
                if !interrupted {
                    status = 1;
                }
            }
        }
    }
    if let Some(o) = &a.out {
        write_page(o, &scn_copy.name, &text, a.emit.as_deref(), &verified_runs);
    }
    Ok(status)
}

/// `--out DIR/index.html`: the ranking and confirmations as the terminal
/// prints them, the emitted scenario and its verification.
fn write_page(
    out: &Path,
    scenario: &str,
    text: &str,
    emitted: Option<&Path>,
    verification: &[super::run::KernelResult],
) {
    let mut pre = vec![("Ranking".to_string(), text.to_string())];
    if let Some(t) = emitted.and_then(|p| std::fs::read_to_string(p).ok()) {
        pre.push((format!("Emitted: {}", emitted.unwrap().display()), t));
    }
    let tables = if verification.is_empty() {
        vec![]
    } else {
        vec![super::run::verdict_table(
            "Verification of the emitted scenario",
            verification,
            false,
        )]
    };
    let page = crate::view::Page {
        title: format!("preemptor explore: {scenario}"),
        pre,
        tables,
        ..Default::default()
    };
    super::write_page(&page, out);
}

/// Writes the confirmed finding as a scenario whose sites survive rebuilds,
/// checks each site on every kernel variant, and with `--verify N` runs it
/// there. Whether the verification holds (true without one), and its runs.
#[allow(clippy::too_many_arguments)]
fn emit(
    a: &ExploreArgs,
    path: &Path,
    p: &runner::Prepared,
    ex: &Explorer,
    c: &explore::Confirmation,
    scn: &Scenario,
    scenario_text: &str,
    scenario_dir: &Path,
    want: &regex::Regex,
) -> Result<(bool, Vec<super::run::KernelResult>), UsageError> {
    let syms = p
        .symbols()
        .ok_or_else(|| UsageError("explore needs the kernel's vmlinux".into()))?;
    let mut triggers = ex.emit_triggers(&c.confirm);
    let addrs: Vec<u64> = std::iter::once(c.confirm.p.0)
        .chain(c.confirm.s.map(|s| s.0))
        .map(|i| ex.points[i].addr)
        .collect();
    let names = travel::portable(syms, &mut triggers, &addrs);
    let checks = travel::check_variants(scn, &names);
    let (lo, hi) = c.ci95();
    let mut comment = format!(
        "Found by `preemptor explore` on kernel {} ({} runs, seed {}), confirmed:\n{} of {} runs of exactly this scenario crashed ({:.0}%, 95% CI {:.0}-{:.0}%); titles: {}\nDurations: twice the longest of the crashing exploration runs' draws.\nSites (named to survive rebuilds; as explored on {}):\n",
        p.kernel_name,
        ex.runs.len(),
        a.seed,
        c.crashes,
        c.runs,
        c.rate() * 100.0,
        lo * 100.0,
        hi * 100.0,
        c.titles.iter().map(|(t, n)| format!("{n}x {t}")).collect::<Vec<_>>().join("; "),
        p.kernel_name,
    );
    for n in &names {
        comment.push_str(&format!(
            "  {}: {} = {} ({}{})\n",
            n.trigger,
            n.site,
            n.raw,
            n.location.as_deref().unwrap_or("?"),
            if n.portable {
                String::new()
            } else {
                "; no portable name: an offset into this build only".into()
            }
        ));
    }
    comment.push_str("Checked on every kernel variant:\n");
    for k in &checks {
        comment.push_str(&format!(
            "  {} {}: {}\n",
            k.kernel,
            k.trigger,
            match &k.outcome {
                Ok(r) => format!("{} ({})", r.at, r.location.as_deref().unwrap_or("?")),
                Err(e) => format!("DOES NOT RESOLVE: {e}"),
            }
        ));
    }
    let text = explore::emit_scenario(scenario_text, scenario_dir, &triggers, &comment)
        .map_err(UsageError)?;
    std::fs::write(path, text).map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
    println!(
        "emitted: {} (confirmed {}/{}; try: preemptor run {} --kernel {} --runs 20)",
        path.display(),
        c.crashes,
        c.runs,
        path.display(),
        p.kernel_name
    );
    println!("\nits sites on every kernel variant:");
    let w = checks.iter().map(|k| k.kernel.len()).max().unwrap_or(6);
    for k in &checks {
        let site = names
            .iter()
            .find(|n| n.trigger == k.trigger)
            .map(|n| n.site.as_str())
            .unwrap_or("?");
        match &k.outcome {
            Ok(r) => println!(
                "  {:<w$}  {:<9} {site} -> {} ({})",
                k.kernel,
                k.trigger,
                r.at,
                r.location.as_deref().unwrap_or("?")
            ),
            Err(e) => println!(
                "  {:<w$}  {:<9} {site} DOES NOT RESOLVE: {e}",
                k.kernel, k.trigger
            ),
        }
    }
    if a.verify == 0 {
        return Ok((true, vec![]));
    }
    // Only where every site resolves: elsewhere the scenario cannot run.
    let mut kernels: Vec<String> = Vec::new();
    for k in &checks {
        if !kernels.contains(&k.kernel) {
            kernels.push(k.kernel.clone());
        }
    }
    kernels.retain(|v| {
        checks
            .iter()
            .filter(|k| k.kernel == *v)
            .all(|k| k.outcome.is_ok())
    });
    let emitted = Scenario::load(path)?;
    let plan = |kernels: Vec<String>, inject: bool| super::run::Plan {
        scenario: emitted.clone(),
        kernels,
        modes: vec![inject],
        runs: a.verify,
        seed: a.seed,
        expect: None,
        out: None,
        snapshot: true,
        snapshot_file: None,
        verify_restore: false,
        full_reports: false,
        quiet: true,
        gdb: Default::default(),
        preempt: None,
        jobs: a.jobs.map(|j| j as usize),
    };
    eprintln!(
        "preemptor: verifying the emitted scenario: {} runs injected on {} and without injection on {}",
        a.verify,
        kernels.join(", "),
        p.kernel_name
    );
    let mut results = super::run::execute(&plan(kernels, true))?;
    if !crate::boot::stopped() {
        results.extend(super::run::execute(&plan(
            vec![p.kernel_name.clone()],
            false,
        ))?);
    }
    let variants = emitted.variants();
    // A site must resolve on every variant of the explored kernel's base
    // (the fixed kernel above all); another base (the next release) may
    // have lost the function or the statement: that is said, not failed.
    let base_of = |k: &str| {
        variants
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.base.clone())
    };
    let home = base_of(&p.kernel_name);
    let mut unresolved: Vec<String> = Vec::new();
    let mut elsewhere: Vec<String> = Vec::new();
    for k in checks.iter().filter(|k| k.outcome.is_err()) {
        let list = if home.is_none() || base_of(&k.kernel) == home {
            &mut unresolved
        } else {
            &mut elsewhere
        };
        if !list.contains(&k.kernel) {
            list.push(k.kernel.clone());
        }
    }
    let mut held = unresolved.is_empty();
    for r in &mut results {
        let expect = variants
            .iter()
            .find(|(n, _)| *n == r.kernel)
            .and_then(|(_, v)| v.expect)
            .filter(|_| r.inject);
        r.expect = Some(expect.unwrap_or(crate::scenario::Expect::Clean));
        r.ok = verified(&r.summary, expect, want);
        held &= r.ok;
    }
    println!("\nverification (crash expected: at least 90% of conclusive runs with a wanted title; clean: none):");
    super::run::print_table(&results);
    if !elsewhere.is_empty() {
        println!(
            "does not travel to {} (another kernel base: a site does not resolve there, see above)",
            elsewhere.join(", ")
        );
    }
    if !unresolved.is_empty() {
        println!(
            "verification FAILS: a site does not resolve on {} (same kernel base as {})",
            unresolved.join(", "),
            p.kernel_name
        );
    } else {
        println!(
            "verification {}",
            if held {
                "holds"
            } else {
                "FAILS (see the table)"
            }
        );
    }
    Ok((held, results))
}

/// The emitted scenario's bar on one kernel and mode: where a crash is
/// expected, at least 90% of its runs crash with a wanted title (and 90%
/// are conclusive); elsewhere none crashes.
fn verified(
    s: &runner::Summary,
    expect: Option<crate::scenario::Expect>,
    want: &regex::Regex,
) -> bool {
    match expect {
        Some(crate::scenario::Expect::Crash) => {
            let wanted: usize = s
                .titles
                .iter()
                .filter(|(t, _)| want.is_match(t))
                .map(|(_, n)| n)
                .sum();
            s.conclusive * 10 >= s.runs * 9 && wanted * 10 >= s.conclusive * 9 && s.conclusive > 0
        }
        _ => s.crashes == 0 && s.conclusive > 0,
    }
}

fn write_line<T: serde::Serialize>(w: &mut std::fs::File, rec: &T) -> Result<(), UsageError> {
    let line = serde_json::to_string(rec).map_err(|e| UsageError(e.to_string()))?;
    writeln!(w, "{line}")
        .and_then(|_| w.flush())
        .map_err(|e| UsageError(format!("--results: {e}")))
}

/// Re-run a candidate as its emitted scenario would run it (the same
/// triggers and goal) until `confirm_decided` says; `None` when
/// interrupted (the candidate is redone by the next invocation).
#[allow(clippy::too_many_arguments)]
fn confirm(
    p: &runner::Prepared,
    ex: &Explorer,
    c: explore::Candidate,
    after_run: usize,
    want: &regex::Regex,
    seed: u64,
    jobs: usize,
    bar: &ProgressBar,
) -> Result<Option<explore::Confirmation>, UsageError> {
    let triggers = ex.emit_triggers(&c);
    let goal = Explorer::emit_goal(&triggers);
    // Seeds apart from the sampling runs' (seed + run), one block per
    // confirmation.
    let base = seed + 1_000_000 * (1 + ex.confirmations.len() as u64);
    let t0 = Instant::now();
    let (mut runs, mut crashes, mut titles) = (0, 0, Vec::new());
    // With jobs, a batch of runs at once; they are counted in order up to
    // where the rule decides, so the outcome is the same whatever the jobs.
    let confirmed = 'outer: loop {
        if let Some(d) = explore::confirm_decided(crashes, runs) {
            break d;
        }
        let batch = jobs.min(explore::CONFIRM_RUNS - runs);
        let first = runs;
        let work = |k: usize| {
            let i = first + k;
            p.run_with(i, base + i as u64, None, &triggers, &goal)
                .map(|r| (!matches!(r.verdict, Verdict::Interrupted)).then_some(r))
        };
        let mut got = Vec::new();
        crate::scenario::parallel::try_in_order(
            batch,
            jobs,
            |k| format!("confirmation run {}", first + k),
            work,
            |k, r| got.push((k, r)),
        )?;
        if got.len() < batch || got.iter().enumerate().any(|(j, (k, _))| j != *k) {
            return Ok(None);
        }
        for (_, res) in got {
            if let Some(d) = explore::confirm_decided(crashes, runs) {
                break 'outer d;
            }
            runs += 1;
            if let Some(t) = res.judged().1 {
                runner::count_title(&mut titles, t);
                crashes += want.is_match(t) as usize;
            }
            bar.tick();
        }
    };
    Ok(Some(explore::Confirmation {
        confirm: c,
        after_run,
        runs,
        crashes,
        titles,
        confirmed,
        seconds: t0.elapsed().as_secs_f64(),
    }))
}

/// The functions of a crash report that are functions of this kernel, in
/// the report's order; prints what was taken and what was left out.
fn report_sites(
    syms: &Symbols,
    title: &str,
    f: &crate::report::Frames,
    want: &regex::Regex,
) -> Vec<String> {
    use crate::report::Stack;
    println!("from the report: {title} (--want {})", want.as_str());
    let mut out: Vec<String> = Vec::new();
    let mut inlined: Vec<String> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for (stack, what) in [
        (Stack::Crash, "crash stack"),
        (Stack::Alloc, "allocated"),
        (Stack::Free, "freed"),
    ] {
        let names = f.on(stack);
        if names.is_empty() {
            continue;
        }
        println!("  {what}: {}", names.join(", "));
        for n in names {
            let n = n.to_string();
            if out.contains(&n) || inlined.contains(&n) || missing.contains(&n) {
                continue;
            }
            if syms.function(&n).is_ok() {
                out.push(n);
            } else if syms.inlined(&n).is_ok_and(|v| !v.is_empty()) {
                inlined.push(n);
            } else {
                missing.push(n);
            }
        }
    }
    if !f.generic.is_empty() {
        println!("  left out as generic: {}", f.generic.join(", "));
    }
    if !inlined.is_empty() {
        println!(
            "  inlined in this kernel (the points of the functions they are inlined into cover them): {}",
            inlined.join(", ")
        );
    }
    if !missing.is_empty() {
        println!("  not functions of this kernel: {}", missing.join(", "));
    }
    let counted: Vec<String> = out
        .iter()
        .map(|n| {
            let k = syms
                .function(n)
                .and_then(|f| syms.stall_points(&f))
                .map_or(0, |p| p.len());
            format!("{n} ({k} stall points)")
        })
        .collect();
    println!("  sites: {}", counted.join(", "));
    out
}

/// Stall points of the functions, globs and line ranges given.
fn candidate_points(syms: &Symbols, sites: &[String]) -> Result<Vec<Point>, UsageError> {
    let mut out: Vec<Point> = Vec::new();
    let mut push = |func: &str, pts: Vec<Point>| {
        for p in pts {
            if !out.iter().any(|o| o.addr == p.addr) {
                out.push(p);
            }
        }
        let _ = func;
    };
    for s in sites.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        if let Some((file, range)) = s.rsplit_once(':') {
            let (lo, hi) = range
                .split_once('-')
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
                .filter(|(a, b)| a <= b)
                .ok_or_else(|| UsageError(format!("--sites '{s}': expected FILE:A-B")))?;
            let mut funcs = std::collections::BTreeSet::new();
            for line in lo..=hi {
                if let Ok(found) = syms.resolve(&format!("{file}:{line}")) {
                    funcs.extend(found.into_iter().map(|x| x.function));
                }
            }
            if funcs.is_empty() {
                return Err(UsageError(format!("--sites '{s}': no code at those lines")));
            }
            for f in funcs {
                let f = syms.function(&f)?;
                let pts = syms.stall_points(&f)?;
                let inside = pts
                    .into_iter()
                    .filter(|p| {
                        p.location
                            .as_deref()
                            .and_then(|l| l.rsplit_once(':'))
                            .is_some_and(|(lf, ll)| {
                                lf.ends_with(file)
                                    && ll.parse::<u64>().is_ok_and(|l| (lo..=hi).contains(&l))
                            })
                    })
                    .collect();
                push(&f.name, Point::from_stall_points(&f.name, inside));
            }
            continue;
        }
        let fs = syms.functions_matching(s);
        if fs.is_empty() {
            return Err(UsageError(format!(
                "--sites '{s}': no function matches (an inlined function has no code of its own: name its caller)"
            )));
        }
        for f in fs {
            let pts = syms.stall_points(&f)?;
            push(&f.name, Point::from_stall_points(&f.name, pts));
        }
    }
    Ok(out)
}

/// Open (or create) the results file; a file of this same exploration is
/// continued: its runs are learnt again.
fn open_results(
    path: &Path,
    header: &Header,
    ex: &mut Explorer,
) -> Result<std::fs::File, UsageError> {
    let e = |m: String| UsageError(format!("{}: {m}", path.display()));
    if path.exists() && std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) > 0 {
        let f = std::fs::File::open(path).map_err(|x| e(x.to_string()))?;
        let lines: Vec<String> = std::io::BufReader::new(f)
            .lines()
            .collect::<Result<_, _>>()
            .map_err(|x| e(x.to_string()))?;
        let head: Header = serde_json::from_str(&lines[0])
            .map_err(|x| e(format!("line 1: not an explore results header ({x})")))?;
        if head != *header {
            return Err(e(format!(
                "results of another exploration (scenario {}, kernel {}, {} sites, or other options): use another file",
                head.scenario,
                head.kernel,
                head.sites.len()
            )));
        }
        let n = lines.len();
        for (i, l) in lines.iter().enumerate().skip(1) {
            match serde_json::from_str::<explore::Record>(l) {
                Ok(explore::Record::Run(r)) => ex.replay(r),
                Ok(explore::Record::Confirm(c)) => ex.confirmations.push(c),
                // A last line cut short by a kill: drop it, the run is redone.
                Err(_) if i == n - 1 => {
                    let keep: String = lines[..i].iter().map(|l| format!("{l}\n")).collect();
                    std::fs::write(path, keep).map_err(|x| e(x.to_string()))?;
                }
                Err(x) => return Err(e(format!("line {}: {x}", i + 1))),
            }
        }
        return std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|x| e(x.to_string()));
    }
    let mut f = std::fs::File::create(path).map_err(|x| e(x.to_string()))?;
    let line = serde_json::to_string(header).map_err(|x| e(x.to_string()))?;
    writeln!(f, "{line}").map_err(|x| e(x.to_string()))?;
    Ok(f)
}

fn report_text(
    ex: &Explorer,
    a: &ExploreArgs,
    want: &regex::Regex,
    wall: Duration,
    before: usize,
) -> String {
    let mut s = String::new();
    macro_rules! line {
        ($($t:tt)*) => {{
            s.push_str(&format!($($t)*));
            s.push('\n');
        }};
    }
    let valid = ex.runs.iter().filter(|r| r.valid).count();
    let crashes = ex.runs.iter().filter(|r| r.title.is_some()).count();
    let wanted = ex
        .runs
        .iter()
        .filter(|r| r.title.as_deref().is_some_and(|t| want.is_match(t)))
        .count();
    let (found, first) = ex.found(want);
    line!(
        "{} runs ({} valid; {} this invocation in {:.0} s), {} crashes, {} wanted; {} confirmed of {} candidates{}",
        ex.runs.len(),
        valid,
        ex.runs.len() - before,
        wall.as_secs_f64(),
        crashes,
        wanted,
        found,
        ex.confirmations.len(),
        first
            .map(|r| format!(" (first a candidate at run {r})"))
            .unwrap_or_default()
    );
    if !ex.confirmations.is_empty() {
        line!(
            "confirmed rates (each candidate re-run as its emitted scenario, up to {} runs, kept at {} crashes):",
            explore::CONFIRM_RUNS,
            explore::CONFIRM_NEED
        );
        line!(
            "{:<44} {:<44} {:>7} {:>5} {:>9} {:>13}  {:<9} titles",
            "primary",
            "secondary",
            "crashes",
            "rate",
            "95% CI",
            "stalls (ms)",
            "verdict"
        );
        for c in &ex.confirmations {
            let (lo, hi) = c.ci95();
            line!(
                "{:<44} {:<44} {:>7} {:>4.0}% {:>4.0}-{:<3.0}% {:>13}  {:<9} {}",
                ex.site(c.confirm.p),
                c.confirm
                    .s
                    .map(|s| format!(
                        "{}{}",
                        ex.site(s),
                        if c.confirm.focus { " (on it)" } else { "" }
                    ))
                    .unwrap_or("-".into()),
                format!("{}/{}", c.crashes, c.runs),
                c.rate() * 100.0,
                lo * 100.0,
                hi * 100.0,
                format!(
                    "{:.1}/{}",
                    c.confirm.p_us as f64 / 1e3,
                    c.confirm
                        .s_us
                        .map(|x| format!("{:.1}", x as f64 / 1e3))
                        .unwrap_or("-".into())
                ),
                if c.confirmed { "confirmed" } else { "refuted" },
                c.titles
                    .iter()
                    .map(|(t, n)| format!("{n}x {t}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        line!("sampled rates (exploration runs):");
    }
    let rows = ex.ranking();
    line!(
        "{:<4} {:<44} {:<44} {:>4} {:>7} {:>5} {:>9} {:>13}  titles",
        "rank",
        "primary (stalls on its own)",
        "secondary (while it stalls)",
        "met",
        "crashes",
        "rate",
        "95% CI",
        "stalls (ms)"
    );
    for (i, r) in rows.iter().take(a.top).enumerate() {
        let (lo, hi) = r.ci95();
        let med = |v: Vec<u64>| -> String {
            let mut v = v;
            v.sort();
            v.get(v.len() / 2)
                .map(|x| format!("{:.1}", *x as f64 / 1e3))
                .unwrap_or("-".into())
        };
        let stalls = if r.stalls.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{}/{}",
                med(r.stalls.iter().map(|s| s.0).collect()),
                med(r.stalls.iter().filter_map(|s| s.1).collect())
            )
        };
        line!(
            "{:<4} {:<44} {:<44} {:>4} {:>7} {:>4.0}% {:>4.0}-{:<3.0}% {:>13}  {}",
            i + 1,
            ex.site(r.key.p),
            r.key
                .s
                .map(|s| format!(
                    "{}{}",
                    ex.site(s),
                    if r.key.focus { " (on it)" } else { "" }
                ))
                .unwrap_or("-".into()),
            r.runs,
            r.crashes,
            r.rate() * 100.0,
            lo * 100.0,
            hi * 100.0,
            stalls,
            r.titles
                .iter()
                .map(|(t, n)| format!("{n}x {t}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    s
}
