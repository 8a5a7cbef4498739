//! `preemptor bisect`: which commit of a kernel's git history introduced a
//! race (the first that crashes under the scenario's stalls), or fixed it
//! (`fix`: the first that no longer does).
//!
//! Each step builds one commit as a kernel base (`git:REPO@SHA`: one work
//! tree per repository kept in the cache and moved by `git checkout`, so
//! make rebuilds only what the commits change), with the chosen variant's
//! patches and config fragments on top, boots it to the scenario's
//! snapshot and runs the scenario injected. Because the stalls make the
//! race happen every time, a few runs decide (see [`decide`]); a commit
//! that cannot say (it does not build, a patch does not apply, a site does
//! not resolve, only inconclusive runs, a rate neither high nor 0) is
//! skipped, with its reason, as `git bisect skip` would.
//!
//! Steps are appended to a JSON-lines file as they finish (`results`), and
//! a second invocation with the same file and question reuses them: a
//! Ctrl-C loses at most the step under way.

pub mod git;
pub mod search;

use crate::scenario::runner::{self, RunResult};
use crate::scenario::{Scenario, Variant};
use git::Commit;
use search::{Answer, Outcome, Search};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: repository, revisions, scenario, results file.
    #[error("{0}")]
    Input(String),
    /// The host failed a run (not the commit's fault): the bisection
    /// stops, its finished steps kept.
    #[error("{0}")]
    Host(String),
}

pub struct BisectConfig {
    pub scenario: Scenario,
    /// The variant whose patches and config fragments go on each commit
    /// (None: the commit with the project's fragment alone).
    pub variant: Option<String>,
    pub repo: PathBuf,
    pub old: String,
    pub new: String,
    /// Looking for the fix: new = no longer crashes.
    pub fix: bool,
    /// Runs per batch, and at most this many per commit.
    pub runs: usize,
    pub max_runs: usize,
    /// Crash titles that count (None: any crash).
    pub want: Option<regex::Regex>,
    pub seed: u64,
    /// VMs at once.
    pub jobs: usize,
    pub results: Option<PathBuf>,
}

/// What the runs on one commit say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Crash,
    Clean,
    Skip,
}

/// One tested commit, as printed and kept in the results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    #[serde(flatten)]
    pub commit: Commit,
    pub class: Class,
    /// Old or new in the question's terms (None: skipped).
    pub new: Option<bool>,
    pub runs: usize,
    pub conclusive: usize,
    pub crashes: usize,
    pub ci95: Option<(f64, f64)>,
    pub titles: Vec<(String, usize)>,
    pub build_s: f64,
    pub boot_s: f64,
    pub runs_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Read from the results file, not run by this invocation.
    #[serde(skip)]
    pub reused: bool,
}

/// The question a results file answers: a second invocation must ask
/// the same one to reuse its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub scenario: String,
    pub variant: Option<String>,
    pub old: String,
    pub new: String,
    pub fix: bool,
    pub want: Option<String>,
}

impl std::fmt::Display for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |s: &str| s[..s.len().min(12)].to_string();
        write!(f, "{}", self.scenario)?;
        if let Some(v) = &self.variant {
            write!(f, " --kernel {v}")?;
        }
        if self.fix {
            write!(f, " --fix")?;
        }
        write!(f, " --old {} --new {}", short(&self.old), short(&self.new))?;
        if let Some(w) = &self.want {
            write!(f, " --want '{w}'")?;
        }
        Ok(())
    }
}

/// The decision after some runs: a class, or more runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Is(Class, Option<String>),
    More,
}

/// Decide from `crashes` of `conclusive` runs (of `runs` so far; batches
/// of `batch`, at most `cap`): clean when none crashed (and at least half
/// were conclusive), crash when the Wilson 95% interval's lower end is at
/// least 0.5 (9 of 10, 5 of 5); otherwise more runs, and at the cap a
/// skip: a rate that is neither clearly high nor 0 says the window is not
/// the scenario's on this commit, and guessing would mislead the search.
pub fn decide(
    crashes: usize,
    conclusive: usize,
    runs: usize,
    batch: usize,
    cap: usize,
) -> Decision {
    if conclusive == 0 {
        return Decision::Is(
            Class::Skip,
            Some(format!(
                "no conclusive run in {runs} (the scenario's goal was never reached)"
            )),
        );
    }
    if crashes == 0 && conclusive * 2 >= batch.min(runs) {
        return Decision::Is(Class::Clean, None);
    }
    let lo = runner::wilson(crashes, conclusive).map_or(0.0, |w| w.0);
    if crashes > 0 && lo >= 0.5 {
        return Decision::Is(Class::Crash, None);
    }
    if runs >= cap {
        return Decision::Is(
            Class::Skip,
            Some(format!(
                "{crashes} of {conclusive} conclusive runs crashed: neither clearly high nor 0 after {runs} runs"
            )),
        );
    }
    Decision::More
}

/// The end of a bisection.
#[derive(Debug)]
pub enum End {
    First(Commit),
    Among(Vec<Commit>),
    /// Interrupted, or a host fault: the steps so far.
    Stopped(String),
}

pub struct Bisection {
    cfg: BisectConfig,
    pub old: Commit,
    pub new: Commit,
    /// The candidates, oldest first; the last is `new`.
    pub commits: Vec<Commit>,
    known: Vec<Step>,
}

/// The kernel name a commit's builds and runs go by.
fn kernel_name(c: &Commit) -> String {
    c.short().to_string()
}

impl Bisection {
    /// Read the history and the results file; no build yet.
    pub fn new(cfg: BisectConfig) -> Result<Self, Error> {
        if let Some(v) = &cfg.variant {
            if !cfg.scenario.kernel.contains_key(v) {
                let names: Vec<&String> = cfg.scenario.kernel.keys().collect();
                return Err(Error::Input(format!(
                    "{}: no kernel variant '{v}' (it has: {})",
                    cfg.scenario.path.display(),
                    names
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let repo = cfg
            .repo
            .canonicalize()
            .map_err(|e| Error::Input(format!("--repo {}: {e}", cfg.repo.display())))?;
        let old = git::resolve(&repo, &cfg.old, "--old")?;
        let new = git::resolve(&repo, &cfg.new, "--new")?;
        let commits = git::between(&repo, &old, &new)?;
        let mut b = Bisection {
            cfg: BisectConfig { repo, ..cfg },
            old,
            new,
            commits,
            known: Vec::new(),
        };
        b.known = b.load()?;
        Ok(b)
    }

    pub fn header(&self) -> Header {
        Header {
            scenario: self.cfg.scenario.name.clone(),
            variant: self.cfg.variant.clone(),
            old: self.old.sha.clone(),
            new: self.new.sha.clone(),
            fix: self.cfg.fix,
            want: self.cfg.want.as_ref().map(|r| r.to_string()),
        }
    }

    /// Steps of an earlier invocation with the same question.
    fn load(&self) -> Result<Vec<Step>, Error> {
        let Some(path) = &self.cfg.results else {
            return Ok(vec![]);
        };
        let bad = |m: String| Error::Input(format!("--results {}: {m}", path.display()));
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(bad(e.to_string())),
        };
        let mut steps = Vec::new();
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| bad(e.to_string()))?;
            if i == 0 {
                #[derive(Deserialize)]
                struct H {
                    bisect: Header,
                }
                let h: H = serde_json::from_str(&line)
                    .map_err(|e| bad(format!("line 1: not a bisect header ({e})")))?;
                if h.bisect != self.header() {
                    return Err(bad(format!(
                        "line 1: it records another bisection ({}); give another file",
                        h.bisect
                    )));
                }
                continue;
            }
            // A line cut by a kill is the step under way: dropped.
            if let Ok(mut s) = serde_json::from_str::<Step>(&line) {
                s.reused = true;
                steps.push(s);
            }
        }
        Ok(steps)
    }

    fn append(&self, step: &Step) -> Result<(), Error> {
        let Some(path) = &self.cfg.results else {
            return Ok(());
        };
        let bad = |e: std::io::Error| Error::Input(format!("--results {}: {e}", path.display()));
        let fresh = std::fs::metadata(path).map_or(true, |m| m.len() == 0);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(bad)?;
        let mut s = String::new();
        if fresh {
            s += &serde_json::json!({ "bisect": self.header() }).to_string();
            s.push('\n');
        }
        s += &serde_json::to_string(step).unwrap_or_default();
        s.push('\n');
        f.write_all(s.as_bytes()).map_err(bad)
    }

    /// The scenario with one kernel variant: the commit, with the chosen
    /// variant's patches and fragments.
    fn scenario_at(&self, c: &Commit) -> (Scenario, Variant) {
        let mut v = self
            .cfg
            .variant
            .as_ref()
            .and_then(|n| self.cfg.scenario.kernel.get(n).cloned())
            .unwrap_or_default();
        v.base = format!("git:{}@{}", self.cfg.repo.display(), c.sha);
        v.expect = None;
        let mut scn = self.cfg.scenario.clone();
        scn.kernel = indexmap::IndexMap::from([(kernel_name(c), v.clone())]);
        (scn, v)
    }

    /// Build, boot and run one commit. `Err` only for a host fault.
    pub fn test(&self, c: &Commit) -> Result<Step, Error> {
        let mut step = Step {
            commit: c.clone(),
            class: Class::Skip,
            new: None,
            runs: 0,
            conclusive: 0,
            crashes: 0,
            ci95: None,
            titles: vec![],
            build_s: 0.0,
            boot_s: 0.0,
            runs_s: 0.0,
            reason: None,
            reused: false,
        };
        let skip = |mut s: Step, why: String| {
            s.reason = Some(why);
            Ok(s)
        };
        let (scn, v) = self.scenario_at(c);
        let name = kernel_name(c);
        let t = Instant::now();
        let built = runner::variant_kernel(&scn, &name, &v, true);
        step.build_s = t.elapsed().as_secs_f64();
        if let Err(e) = built {
            return skip(step, format!("build: {e}"));
        }
        let t = Instant::now();
        let p = match runner::prepare(scn, &name, true, true) {
            Ok(p) => p,
            Err(e) => return skip(step, e.to_string()),
        };
        if let Err(e) = p.snapshot() {
            step.boot_s = t.elapsed().as_secs_f64();
            return skip(step, format!("boot: {e}"));
        }
        step.boot_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut rs: Vec<RunResult> = Vec::new();
        loop {
            let base = rs.len();
            let failed = std::sync::Mutex::new(None);
            crate::scenario::parallel::in_order(
                self.cfg.runs,
                self.cfg.jobs,
                |i| match p.run_once(base + i, self.cfg.seed + (base + i) as u64, None) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        failed.lock().unwrap().get_or_insert(e.to_string());
                        crate::boot::stop_runs(format!("run {}: {e}", base + i));
                        None
                    }
                },
                |_, r| rs.push(r),
            );
            step.runs_s = t.elapsed().as_secs_f64();
            if let Some(e) = failed.into_inner().unwrap() {
                return Err(Error::Host(format!("{}: {e}", c.short())));
            }
            if crate::boot::interrupted() {
                return Err(Error::Host("interrupted".into()));
            }
            self.tally(&mut step, &rs);
            match decide(
                step.crashes,
                step.conclusive,
                rs.len(),
                self.cfg.runs,
                self.cfg.max_runs,
            ) {
                Decision::More => continue,
                Decision::Is(class, reason) => {
                    step.class = class;
                    step.reason = reason;
                    step.new = match class {
                        Class::Skip => None,
                        Class::Crash => Some(!self.cfg.fix),
                        Class::Clean => Some(self.cfg.fix),
                    };
                    return Ok(step);
                }
            }
        }
    }

    /// Count the runs: a crash whose title `want` does not match is not
    /// this race (inconclusive), nor is any inconclusive run.
    fn tally(&self, step: &mut Step, rs: &[RunResult]) {
        let (mut n, mut k) = (0, 0);
        let mut titles = Vec::new();
        for r in rs {
            let title = match &r.verdict {
                crate::boot::verdict::Verdict::Crash { title, .. } => Some(title.as_str()),
                _ => None,
            };
            if let Some(t) = title {
                runner::count_title(&mut titles, t);
            }
            if !r.conclusive {
                continue;
            }
            match (title, &self.cfg.want) {
                (Some(t), Some(w)) if !w.is_match(t) => {}
                (Some(_), _) => {
                    n += 1;
                    k += 1;
                }
                (None, _) => n += 1,
            }
        }
        step.runs = rs.len();
        step.conclusive = n;
        step.crashes = k;
        step.ci95 = runner::wilson(k, n);
        step.titles = titles;
    }

    /// Search: `on_step` sees each step as it is decided (and the ones
    /// reused from the results file).
    pub fn run(&self, mut on_step: impl FnMut(&Step)) -> Result<End, Error> {
        let mut s = Search::new(self.commits.len());
        while let Some(i) = s.next() {
            let c = &self.commits[i];
            let step = match self.known.iter().find(|k| k.commit.sha == c.sha) {
                Some(k) => k.clone(),
                None => {
                    let st = match self.test(c) {
                        Ok(st) => st,
                        Err(Error::Host(m)) => return Ok(End::Stopped(m)),
                        Err(e) => return Err(e),
                    };
                    // A Ctrl-C reaches the build too: what it cut short is
                    // no skip, and is not recorded.
                    if crate::boot::interrupted() {
                        return Ok(End::Stopped("interrupted".into()));
                    }
                    self.append(&st)?;
                    st
                }
            };
            on_step(&step);
            s.record(
                i,
                match step.new {
                    Some(true) => Outcome::New,
                    Some(false) => Outcome::Old,
                    None => Outcome::Skip,
                },
            );
        }
        Ok(match s.answer() {
            Answer::First(i) => End::First(self.commits[i].clone()),
            Answer::Among(v) => {
                End::Among(v.into_iter().map(|i| self.commits[i].clone()).collect())
            }
        })
    }

    pub fn repo(&self) -> &Path {
        &self.cfg.repo
    }

    pub fn fix(&self) -> bool {
        self.cfg.fix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        use Class::*;
        assert_eq!(decide(10, 10, 10, 10, 30), Decision::Is(Crash, None));
        assert_eq!(decide(9, 10, 10, 10, 30), Decision::Is(Crash, None));
        assert_eq!(decide(5, 5, 5, 5, 15), Decision::Is(Crash, None));
        assert_eq!(decide(0, 10, 10, 10, 30), Decision::Is(Clean, None));
        assert_eq!(decide(8, 10, 10, 10, 30), Decision::More);
        assert_eq!(decide(1, 10, 10, 10, 30), Decision::More);
        assert!(matches!(
            decide(1, 30, 30, 10, 30),
            Decision::Is(Skip, Some(_))
        ));
        assert!(matches!(
            decide(0, 0, 10, 10, 30),
            Decision::Is(Skip, Some(_))
        ));
        // Too few conclusive runs to call it clean: more first.
        assert_eq!(decide(0, 3, 10, 10, 30), Decision::More);
        // 16 of 20 after a second batch is clearly high.
        assert_eq!(decide(16, 20, 20, 10, 30), Decision::Is(Crash, None));
    }
}
