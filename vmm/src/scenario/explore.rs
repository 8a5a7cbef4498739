//! Exploration: find where a preempted vCPU makes a workload crash, with no
//! hand-written triggers. Pure: the sampler, the run records, the ranking
//! and the emitted scenario; the runs are the CLI's.
//!
//! The search space is *pairs* of stall points on two vCPUs: a race window
//! often needs one thread held in its few instructions while another is
//! held in its own (the seed: the exiting task between its state store and
//! its `waiter.task` load, the waker before its `TASK_RUNNING` store). Each
//! run picks an ordered vCPU pair (a, b), arms up to one hardware slot
//! set of *primary* points on a (each fires with a probability, at most a
//! few times, stalling a until a secondary fires, for at most its own
//! random duration) and one of
//! *secondary* points on b, which fire only while some stall is in progress
//! (`during = "*"`) and then stall b until that stall has ended and their
//! own random duration more (`outlast`): a secondary stop that ended first
//! would only replay the primary's interleaving, later. A crash is credited to the last
//! secondary fire and the primary fire before it.
//!
//! Sampling (`Strategy::Adaptive`) is Thompson sampling per arm (point ×
//! vCPU × role) on a Beta posterior: a crash adds to an arm and, at half
//! weight, to its neighbours (the stall points next to it in its function);
//! a pair where the secondary fired with the stalled primary's task in a
//! register (the other vCPU acted on the stalled thread: woke it, locked
//! for it) gains, and so does a primary whose memory operand another CPU
//! changed while it was stopped (a data conflict at that very point, as
//! DataCollider finds them), and their neighbours a little, before any
//! crash;
//! an arm armed and never fired sinks fast (it cannot make
//! anything happen in this workload). `Strategy::Uniform` draws arms
//! uniformly: the baseline the adaptive one is compared with.
//!
//! A crash is an anecdote until it is confirmed: the host deschedules vCPU
//! threads by itself under load, so a stall that merely coincided with a
//! crash can look like its cause (seen: a lone primary whose emitted
//! scenario then crashed 0 times in 8). Each crashing row becomes a
//! [`Candidate`] with exactly the triggers `--emit` would write, and is
//! re-run as that scenario (`CONFIRM_RUNS`, `CONFIRM_NEED`); only
//! confirmed candidates count as found and only they are emitted.
//!
//! Past 800 lines: about 300 are its unit tests; the rest is the sampler,
//! the confirmation rule and the emitted scenario, which share `Arm`,
//! `Row` and `Candidate`. (The TOML writer could move to a file of its own.)
use super::runner::{count_title, wilson};
use crate::debug::symbols::{Class, StallPoint};
use crate::stall::spec::{Duration2, TriggerSpec};
use crate::stall::StallSpec;
use crate::vstate::preempt::{splitmix, unit};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

/// Record format version; a results file of another is refused.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Adaptive,
    Uniform,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Stalls on its own (with a probability), starting an episode.
    P,
    /// Stalls only while another vCPU is stalled.
    S,
}

/// A candidate stall point: where it is, in which function, its rank
/// among that function's points (for neighbours).
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub site: String,
    pub addr: u64,
    pub class: Class,
    pub location: Option<String>,
    pub func: String,
    pub rank: usize,
}

impl Point {
    pub fn from_stall_points(func: &str, pts: Vec<StallPoint>) -> Vec<Point> {
        pts.into_iter()
            .enumerate()
            .map(|(rank, p)| Point {
                site: p.site,
                addr: p.addr,
                class: p.class,
                location: p.location,
                func: func.to_string(),
                rank,
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub vcpus: Vec<usize>,
    #[serde(with = "micros")]
    pub stall_lo: Duration,
    #[serde(with = "micros")]
    pub stall_hi: Duration,
    /// Interrupts held back after a stall (see `TriggerSpec::block_irq`).
    #[serde(with = "micros")]
    pub block_irq: Duration,
    /// A primary fires at a hit with this probability...
    pub probability: f64,
    /// ...at most this many times a run (and so does a secondary).
    pub max_fires: u64,
    /// Hardware breakpoint slots per vCPU.
    pub slots: usize,
    pub strategy: Strategy,
    pub seed: u64,
}

mod micros {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(d)?))
    }
}

/// First line of a results file: what the runs were of. A second
/// invocation continues only with the same header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub explore: u32,
    pub scenario: String,
    pub kernel: String,
    /// The candidate sites, in order (records refer to them by index).
    pub sites: Vec<String>,
    pub config: Config,
}

/// One armed point in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    pub point: usize,
    pub vcpu: usize,
    pub role: Role,
    pub stall_us: u64,
    /// A secondary that fires only when it holds the stalled primary's
    /// task in a register (`acts_on_stalled`).
    #[serde(default)]
    pub focus: bool,
    #[serde(default)]
    pub fires: u64,
}

impl Arm {
    fn key(&self) -> (usize, usize, Role) {
        (self.point, self.vcpu, self.role)
    }
    fn name(&self, i: usize) -> String {
        match self.role {
            Role::P => format!("p{i}"),
            Role::S => format!("s{i}"),
        }
    }
}

/// One run's record (a line of the results file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub run: usize,
    pub seed: u64,
    pub arms: Vec<Arm>,
    /// The workload started and the host did not fail.
    pub valid: bool,
    pub verdict: String,
    pub title: Option<String>,
    /// The crash's stalls: (primary arm, secondary arm), indices into `arms`.
    pub credit: Option<(usize, Option<usize>)>,
    /// Each secondary fire with the primary fire before it (indices).
    pub met: Vec<(usize, usize)>,
    /// Secondary fires that had a stalled primary's task in a register
    /// (primary, secondary): the other vCPU acted on the stalled thread.
    #[serde(default)]
    pub touched: Vec<(usize, usize)>,
    /// Primaries whose memory operand another CPU changed during their
    /// stop: a data conflict at this very point (DataCollider's signal).
    #[serde(default)]
    pub changed: Vec<usize>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Default)]
struct Stats {
    armed: u64,
    fired: u64,
    crashes: f64,
    touched: u64,
    changed: u64,
}

pub struct Explorer {
    pub points: Vec<Point>,
    pub cfg: Config,
    stats: HashMap<(usize, usize, Role), Stats>,
    pub runs: Vec<Run>,
    pub confirmations: Vec<Confirmation>,
}

impl Explorer {
    pub fn new(points: Vec<Point>, cfg: Config) -> Self {
        Self {
            points,
            cfg,
            stats: HashMap::new(),
            runs: vec![],
            confirmations: vec![],
        }
    }

    pub fn header(&self, scenario: &str, kernel: &str) -> Header {
        Header {
            explore: VERSION,
            scenario: scenario.into(),
            kernel: kernel.into(),
            sites: self.points.iter().map(|p| p.site.clone()).collect(),
            config: self.cfg.clone(),
        }
    }

    /// The arms and stall durations of run `run` (seeded by it, and by
    /// what the runs before it found).
    pub fn plan(&self, run: usize) -> Vec<Arm> {
        let mut rng = self.cfg.seed ^ (run as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        splitmix(&mut rng);
        let vs = &self.cfg.vcpus;
        if vs.len() < 2 || self.points.is_empty() {
            return vec![];
        }
        let a = vs[(splitmix(&mut rng) % vs.len() as u64) as usize];
        let others: Vec<usize> = vs.iter().copied().filter(|v| *v != a).collect();
        let b = others[(splitmix(&mut rng) % others.len() as u64) as usize];
        let mut arms = Vec::new();
        for (v, role) in [(a, Role::P), (b, Role::S)] {
            let mut scored: Vec<(f64, usize)> = (0..self.points.len())
                .map(|p| (self.score(&mut rng, p, v, role), p))
                .collect();
            scored.sort_by(|x, y| y.0.total_cmp(&x.0));
            for (_, p) in scored.into_iter().take(self.cfg.slots) {
                arms.push(Arm {
                    point: p,
                    vcpu: v,
                    role,
                    stall_us: self.duration(&mut rng).as_micros() as u64,
                    // Half the secondaries wait for the other vCPU to act
                    // on the stalled thread (wake it, lock for it): the
                    // shape of most wakeup and exit races; the other half
                    // take any hit.
                    focus: role == Role::S && unit(&mut rng) < 0.5,
                    fires: 0,
                });
            }
        }
        arms
    }

    /// Half the draws are the range's top: a long hold is the single most
    /// telling value (a primary waits as long as a secondary may take to
    /// come; a secondary lets the primary's thread run as far as it gets).
    /// The other half are log-uniform in the range, for windows that need a
    /// short hold: their widths differ by orders of magnitude.
    fn duration(&self, rng: &mut u64) -> Duration {
        let lo = self.cfg.stall_lo.as_secs_f64().max(1e-6);
        let hi = self.cfg.stall_hi.as_secs_f64().max(lo);
        if unit(rng) < 0.5 {
            return Duration::from_secs_f64(hi);
        }
        Duration::from_secs_f64(lo * (hi / lo).powf(unit(rng)))
    }

    fn score(&self, rng: &mut u64, p: usize, v: usize, role: Role) -> f64 {
        if self.cfg.strategy == Strategy::Uniform {
            return unit(rng);
        }
        let s = self.stats.get(&(p, v, role)).cloned().unwrap_or_default();
        let pt = &self.points[p];
        // Crashes credited to the points next to this one in its function.
        let near: f64 = self
            .points
            .iter()
            .enumerate()
            .filter(|(q, o)| *q != p && o.func == pt.func && o.rank.abs_diff(pt.rank) <= 2)
            .filter_map(|(q, _)| self.stats.get(&(q, v, role)))
            .map(|o| 2.0 * o.crashes + 0.5 * ((o.touched + o.changed).min(3) as f64))
            .sum();
        let alpha = 1.0
            + 4.0 * s.crashes
            + near
            + 1.5 * (s.touched.min(3) as f64)
            + 2.0 * (s.changed.min(3) as f64);
        let beta =
            1.0 + 0.25 * (s.fired as f64 - s.crashes).max(0.0) + 2.0 * (s.armed - s.fired) as f64;
        beta_sample(rng, alpha, beta)
    }

    /// The run's triggers.
    pub fn triggers(&self, arms: &[Arm]) -> Vec<TriggerSpec> {
        arms.iter()
            .enumerate()
            .map(|(i, a)| self.trigger(a, &a.name(i), None))
            .collect()
    }

    /// `other`: the trigger a primary waits for, or a secondary stalls
    /// during and outlasts (default `*`: any).
    fn trigger(&self, a: &Arm, name: &str, during: Option<&str>) -> TriggerSpec {
        let mut t = TriggerSpec::new(name, &self.points[a.point].site);
        t.vcpus = vec![a.vcpu];
        t.max_fires = Some(self.cfg.max_fires);
        // Secondaries fire with the probability too: the first armed point
        // on the other vCPU's path would otherwise always win, and those
        // after it (often the window) would never be tried.
        // A focused secondary is rare enough to take every hit.
        t.probability = (!a.focus).then_some(self.cfg.probability);
        t.acts_on_stalled = a.focus;
        match a.role {
            // The stalled task, to see whether the other vCPU acts on it.
            Role::P => {
                t.capture
                    .insert(name.to_string(), crate::stall::Reg::Current);
                t.watch = true;
            }
            Role::S => {
                t.during = Some(during.unwrap_or(crate::stall::engine::DURING_ANY).into());
            }
        }
        let d = Duration2::fixed(Duration::from_micros(a.stall_us));
        let any = || crate::stall::engine::DURING_ANY.to_string();
        t.stall = match a.role {
            // Held until the other vCPU reaches one of its points (or for
            // its draw at most), then let run while that one is held: the
            // pairwise interleaving "a stops at x, b runs to y, a runs on
            // while b waits" without a duration to guess for a.
            Role::P => StallSpec {
                until: Some(during.map(String::from).unwrap_or_else(any)),
                timeout: Some(d),
                ..Default::default()
            },
            // A secondary stop that ended inside the primary's would give
            // the interleaving of the primary alone (only later): it
            // outlasts the primary by its draw instead.
            Role::S => StallSpec {
                outlast: Some(during.map(String::from).unwrap_or_else(any)),
                after: Some(d),
                timeout: Some(Duration2::fixed(
                    self.cfg.stall_hi * 2 + Duration::from_millis(100),
                )),
                ..Default::default()
            },
        };
        if !self.cfg.block_irq.is_zero() {
            t.block_irq = Some(Duration2::fixed(self.cfg.block_irq));
        }
        t
    }

    /// Make the record of a finished run from the trigger names in the
    /// order they fired, and learn from it.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        run: usize,
        seed: u64,
        mut arms: Vec<Arm>,
        fired: &[String],
        holds: &[(String, String)],
        changed: &[String],
        valid: bool,
        verdict: &str,
        title: Option<&str>,
        seconds: f64,
    ) -> Run {
        let names: Vec<String> = arms.iter().enumerate().map(|(i, a)| a.name(i)).collect();
        let idx: Vec<usize> = fired
            .iter()
            .filter_map(|f| names.iter().position(|n| n == f))
            .collect();
        for &i in &idx {
            arms[i].fires += 1;
        }
        let mut met = Vec::new();
        let mut last_p = None;
        for &i in &idx {
            match arms[i].role {
                Role::P => last_p = Some(i),
                Role::S => {
                    if let Some(p) = last_p {
                        if !met.contains(&(p, i)) {
                            met.push((p, i));
                        }
                    }
                }
            }
        }
        let mut touched = Vec::new();
        for (t, var) in holds {
            let at = |n: &str| names.iter().position(|x| x == n);
            if let (Some(s), Some(p)) = (at(t), at(var)) {
                if !touched.contains(&(p, s)) {
                    touched.push((p, s));
                }
            }
        }
        let mut changed_arms: Vec<usize> = changed
            .iter()
            .filter_map(|c| names.iter().position(|n| n == c))
            .collect();
        changed_arms.dedup();
        let credit = title.and_then(|_| {
            let last_s = idx.iter().rposition(|&i| arms[i].role == Role::S);
            match last_s {
                Some(k) => idx[..k]
                    .iter()
                    .rev()
                    .find(|&&i| arms[i].role == Role::P)
                    .map(|&p| (p, Some(idx[k]))),
                None => idx
                    .iter()
                    .rev()
                    .find(|&&i| arms[i].role == Role::P)
                    .map(|&p| (p, None)),
            }
        });
        let r = Run {
            run,
            seed,
            arms,
            valid,
            verdict: verdict.into(),
            title: title.map(String::from),
            credit,
            met,
            touched,
            changed: changed_arms,
            seconds,
        };
        self.learn(&r);
        self.runs.push(r.clone());
        r
    }

    /// Take a run (from this session or a results file) into the stats.
    pub fn learn(&mut self, r: &Run) {
        if !r.valid {
            return;
        }
        for a in &r.arms {
            let s = self.stats.entry(a.key()).or_default();
            s.armed += 1;
            s.fired += (a.fires > 0) as u64;
        }
        for &(p, s) in &r.touched {
            self.stats.entry(r.arms[p].key()).or_default().touched += 1;
            self.stats.entry(r.arms[s].key()).or_default().touched += 1;
        }
        for &p in &r.changed {
            self.stats.entry(r.arms[p].key()).or_default().changed += 1;
        }
        if let Some((p, s)) = r.credit {
            self.stats.entry(r.arms[p].key()).or_default().crashes += 1.0;
            if let Some(s) = s {
                self.stats.entry(r.arms[s].key()).or_default().crashes += 1.0;
            }
        }
    }

    pub fn replay(&mut self, r: Run) {
        self.learn(&r);
        self.runs.push(r);
    }

    /// Pairs (and lone primaries) that crashed or met, best first: by
    /// crashes, then by the lower end of the rate's interval.
    pub fn ranking(&self) -> Vec<Row> {
        let mut rows: HashMap<RowKey, Row> = HashMap::new();
        for r in self.runs.iter().filter(|r| r.valid) {
            let key = |p: usize, s: Option<usize>| RowKey {
                p: (r.arms[p].point, r.arms[p].vcpu),
                s: s.map(|s| (r.arms[s].point, r.arms[s].vcpu)),
                focus: s.is_some_and(|s| r.arms[s].focus),
            };
            let mut keys: Vec<RowKey> = r.met.iter().map(|&(p, s)| key(p, Some(s))).collect();
            if let Some((p, s)) = r.credit {
                let k = key(p, s);
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            for k in keys {
                let row = rows.entry(k.clone()).or_insert_with(|| Row {
                    key: k.clone(),
                    ..Default::default()
                });
                row.runs += 1;
                if let Some((p, s)) = r.credit.filter(|&(p, s)| key(p, s) == k) {
                    row.crashes += 1;
                    row.stalls
                        .push((r.arms[p].stall_us, s.map(|s| r.arms[s].stall_us)));
                    let t = r.title.clone().unwrap_or_default();
                    count_title(&mut row.titles, &t);
                }
            }
        }
        let mut v: Vec<Row> = rows.into_values().collect();
        v.sort_by(|a, b| {
            b.crashes
                .cmp(&a.crashes)
                .then(b.low().total_cmp(&a.low()))
                .then(a.key.p.cmp(&b.key.p))
                .then(a.key.s.cmp(&b.key.s))
                .then(a.key.focus.cmp(&b.key.focus))
        });
        v
    }

    /// Confirmed findings whose titles match `want`, and the exploration
    /// run that first made one of them a candidate.
    pub fn found(&self, want: &regex::Regex) -> (usize, Option<usize>) {
        let hits: Vec<&Confirmation> = self
            .confirmations
            .iter()
            .filter(|c| c.confirmed && c.titles.iter().any(|(t, _)| want.is_match(t)))
            .collect();
        (hits.len(), hits.iter().map(|c| c.after_run).min())
    }

    /// The next candidate to confirm: the best row with a wanted crash
    /// whose triggers (points and durations) were not confirmed or
    /// refuted yet.
    pub fn candidate(&self, want: &regex::Regex) -> Option<Candidate> {
        self.ranking()
            .into_iter()
            .filter(|r| r.crashes > 0 && r.titles.iter().any(|(t, _)| want.is_match(t)))
            .map(|r| Candidate::of(&r))
            .find(|c| !self.confirmations.iter().any(|x| x.confirm == *c))
    }

    /// The confirmed finding to emit: the highest confirmed rate, then
    /// the fewest runs to decide (a tie broken by the earliest).
    pub fn best_confirmed(&self, want: &regex::Regex) -> Option<&Confirmation> {
        let mut v: Vec<&Confirmation> = self
            .confirmations
            .iter()
            .filter(|c| c.confirmed && c.titles.iter().any(|(t, _)| want.is_match(t)))
            .collect();
        v.sort_by(|a, b| b.ci95().0.total_cmp(&a.ci95().0));
        v.first().copied()
    }

    /// A candidate's stalls as scenario triggers, made to reproduce rather
    /// than to sample: each duration the candidate's (the longest of its
    /// crashing runs' draws: every one of them crashed once), the primary
    /// stopping at every hit (up to 4x `max_fires`) instead of by chance:
    /// each stop is another try at the window in the same run.
    pub fn emit_triggers(&self, c: &Candidate) -> Vec<TriggerSpec> {
        let p = Arm {
            point: c.p.0,
            vcpu: c.p.1,
            role: Role::P,
            stall_us: c.p_us,
            focus: false,
            fires: 0,
        };
        let other = c.s.map(|_| "secondary");
        let mut out = vec![self.trigger(&p, "primary", other)];
        out[0].probability = None;
        out[0].max_fires = Some(self.cfg.max_fires * 4);
        if let Some((point, vcpu)) = c.s {
            let s = Arm {
                point,
                vcpu,
                role: Role::S,
                stall_us: c.s_us.unwrap_or(0),
                focus: c.focus,
                fires: 0,
            };
            out.push(self.trigger(&s, "secondary", Some("primary")));
            // Exploration's coin lets points after the first on b's path be
            // tried; the emitted pair has one secondary, and a coin there
            // only makes half the runs miss the window (seen in CI: 6 of
            // 10 verification runs inconclusive, goal never reached).
            out[1].probability = None;
            out[1].max_fires = Some(self.cfg.max_fires * 4);
        }
        out
    }

    /// The goal of an emitted scenario: its triggers in order; every stop
    /// is a try, so reaching it does not end the tries.
    pub fn emit_goal(triggers: &[TriggerSpec]) -> crate::scenario::Goal {
        crate::scenario::Goal {
            sequence: triggers.iter().map(|t| t.name.clone()).collect(),
            disarm_on_goal: false,
        }
    }

    pub fn site(&self, (p, v): (usize, usize)) -> String {
        format!("{} @vCPU{v}", self.points[p].site)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RowKey {
    pub p: (usize, usize),
    pub s: Option<(usize, usize)>,
    /// The secondary was focused (`acts_on_stalled`).
    pub focus: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Row {
    pub key: RowKey,
    /// Runs in which the pair met (the secondary fired in the primary's
    /// stall) or that crashed on the lone primary.
    pub runs: usize,
    pub crashes: usize,
    pub titles: Vec<(String, usize)>,
    /// (primary, secondary) stall in µs of each crash.
    pub stalls: Vec<(u64, Option<u64>)>,
}

impl Row {
    pub fn rate(&self) -> f64 {
        self.crashes as f64 / self.runs.max(1) as f64
    }
    pub fn ci95(&self) -> (f64, f64) {
        wilson(self.crashes, self.runs).unwrap_or((0.0, 1.0))
    }
    fn low(&self) -> f64 {
        self.ci95().0
    }
}

/// Confirmation runs per candidate, and the crashes (with a wanted title)
/// among them that keep it: the bar `--verify` then holds the emitted
/// scenario to (at least 90% of 10), so what explore confirms is what it
/// can promise. A crash that was luck (the host descheduling a vCPU thread
/// by itself; the seed's uninjected rate is a few percent at most under
/// load) passes with a chance of 10·r⁹ ≈ 10⁻⁸ at r = 10%; a window
/// reproduced at 95% passes 91% of the time, at 90% 74%, at 75% 24%. It
/// was 6 of 8 (a 41% lower bound) until tty windows of 75-80% were
/// confirmed and then failed verification (2026-12-07). A candidate is
/// refuted as soon as 2 runs missed: a lucky one costs two clean runs, a
/// real one nine short crash runs.
pub const CONFIRM_RUNS: usize = 10;
pub const CONFIRM_NEED: usize = 9;

/// Whether `crashes` of `runs` confirmation runs decide: `Some(true)`
/// confirmed, `Some(false)` refuted, `None`: run another.
pub fn confirm_decided(crashes: usize, runs: usize) -> Option<bool> {
    if crashes >= CONFIRM_NEED {
        Some(true)
    } else if runs - crashes > CONFIRM_RUNS - CONFIRM_NEED || runs >= CONFIRM_RUNS {
        Some(false)
    } else {
        None
    }
}

/// A row made concrete: its stall points and the durations the emitted
/// scenario would use (the longest of its crashing runs' draws).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub p: (usize, usize),
    pub s: Option<(usize, usize)>,
    pub focus: bool,
    pub p_us: u64,
    pub s_us: Option<u64>,
}

impl Candidate {
    /// Durations: twice the longest of the row's crashing draws. The draw
    /// that crashed may have been just long enough: the tty race's lone
    /// 20 ms stop in `put_pid` crashed 18 of 20 runs, 40 ms 20 of 20, and
    /// the fixed kernel 0 of 10 (2026-12-07). A primary's stall ends when
    /// its secondary comes, and nothing ends a lone one sooner: the margin
    /// only helps the other side arrive.
    pub fn of(row: &Row) -> Self {
        let max = |v: Vec<u64>| 2 * v.into_iter().max().unwrap_or(0);
        Candidate {
            p: row.key.p,
            s: row.key.s,
            focus: row.key.focus,
            p_us: max(row.stalls.iter().map(|s| s.0).collect()),
            s_us: row
                .key
                .s
                .map(|_| max(row.stalls.iter().filter_map(|s| s.1).collect())),
        }
    }
    pub fn key(&self) -> RowKey {
        RowKey {
            p: self.p,
            s: self.s,
            focus: self.focus,
        }
    }
}

/// A candidate's confirmation runs (a line of the results file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confirmation {
    pub confirm: Candidate,
    /// The exploration run whose crash made it a candidate.
    pub after_run: usize,
    pub runs: usize,
    /// Runs that crashed with a wanted title.
    pub crashes: usize,
    pub titles: Vec<(String, usize)>,
    pub confirmed: bool,
    pub seconds: f64,
}

impl Confirmation {
    pub fn ci95(&self) -> (f64, f64) {
        wilson(self.crashes, self.runs).unwrap_or((0.0, 1.0))
    }
    pub fn rate(&self) -> f64 {
        self.crashes as f64 / self.runs.max(1) as f64
    }
}

/// A line of the results file after the header.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Record {
    Confirm(Confirmation),
    Run(Run),
}

/// Beta(a, b) as X/(X+Y) with X ~ Gamma(a), Y ~ Gamma(b).
fn beta_sample(rng: &mut u64, a: f64, b: f64) -> f64 {
    let x = gamma(rng, a);
    let y = gamma(rng, b);
    if x + y > 0.0 {
        x / (x + y)
    } else {
        0.5
    }
}

/// Marsaglia and Tsang's method (shape >= 1; smaller shapes boosted).
fn gamma(rng: &mut u64, shape: f64) -> f64 {
    if shape < 1.0 {
        return gamma(rng, shape + 1.0) * unit(rng).max(1e-12).powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        // Box-Muller.
        let (u1, u2) = (unit(rng).max(1e-12), unit(rng));
        let x = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = unit(rng).max(1e-12);
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// A scenario file that reproduces `triggers`: the explored scenario's
/// text without its triggers and goal, relative paths made absolute (it
/// is written elsewhere), then the found triggers.
pub fn emit_scenario(
    scenario_text: &str,
    scenario_dir: &std::path::Path,
    triggers: &[TriggerSpec],
    comment: &str,
) -> Result<String, String> {
    let mut t: toml::Table = scenario_text.parse().map_err(|e| format!("{e}"))?;
    t.remove("trigger");
    t.remove("goal");
    let abs = |v: &mut toml::Value| {
        if let toml::Value::String(s) = v {
            let p = std::path::Path::new(s.as_str());
            if p.is_relative() {
                *s = scenario_dir.join(p).display().to_string();
            }
        }
    };
    if let Some(toml::Value::Table(g)) = t.get_mut("guest") {
        if let Some(p) = g.get_mut("program") {
            abs(p);
        }
        if let Some(toml::Value::Array(fs)) = g.get_mut("files") {
            for f in fs {
                if let Some(s) = f.get_mut("src") {
                    abs(s);
                }
            }
        }
    }
    if let Some(toml::Value::Table(ks)) = t.get_mut("kernel") {
        for (_, k) in ks.iter_mut() {
            for key in ["patches", "config"] {
                if let Some(toml::Value::Array(ps)) = k.get_mut(key) {
                    ps.iter_mut().for_each(abs);
                }
            }
        }
    }
    if let Some(toml::Value::String(n)) = t.get_mut("name") {
        n.push_str("-explored");
    }
    // The goal the confirmation runs had (`Explorer::emit_goal`).
    let g = Explorer::emit_goal(triggers);
    let mut goal = toml::Table::new();
    goal.insert(
        "sequence".into(),
        toml::Value::Array(g.sequence.into_iter().map(toml::Value::String).collect()),
    );
    goal.insert(
        "disarm_on_goal".into(),
        toml::Value::Boolean(g.disarm_on_goal),
    );
    t.insert("goal".into(), toml::Value::Table(goal));
    let trig: Vec<toml::Value> = triggers.iter().map(trigger_table).collect();
    t.insert("trigger".into(), toml::Value::Array(trig));
    let body = toml::to_string(&t).map_err(|e| e.to_string())?;
    let head: String = comment.lines().map(|l| format!("# {l}\n")).collect();
    Ok(format!("{head}\n{body}"))
}

fn trigger_table(x: &TriggerSpec) -> toml::Value {
    use super::sweep::fmt_duration;
    let mut m = toml::Table::new();
    let s = |v: &str| toml::Value::String(v.into());
    m.insert("name".into(), s(&x.name));
    m.insert("site".into(), s(&x.site));
    m.insert(
        "vcpus".into(),
        toml::Value::Array(
            x.vcpus
                .iter()
                .map(|v| toml::Value::Integer(*v as i64))
                .collect(),
        ),
    );
    if let Some(p) = x.probability {
        m.insert("probability".into(), toml::Value::Float(p));
    }
    if let Some(n) = x.max_fires {
        m.insert("max_fires".into(), toml::Value::Integer(n as i64));
    }
    if let Some(d) = &x.during {
        m.insert("during".into(), s(d));
    }
    if x.acts_on_stalled {
        m.insert("acts_on_stalled".into(), toml::Value::Boolean(true));
    }
    if !x.capture.is_empty() {
        let c: toml::Table = x
            .capture
            .iter()
            .map(|(k, r)| (k.clone(), toml::Value::try_from(r).unwrap_or(s("current"))))
            .collect();
        m.insert("capture".into(), toml::Value::Table(c));
    }
    if x.watch {
        m.insert("watch".into(), toml::Value::Boolean(true));
    }
    let mut st = toml::Table::new();
    let st_d = [
        ("duration", x.stall.duration),
        ("timeout", x.stall.timeout),
        ("after", x.stall.after),
    ];
    for (k, d) in st_d {
        if let Some(d) = d {
            st.insert(k.into(), s(&fmt_duration(d.lo)));
        }
    }
    for (k, v) in [("until", &x.stall.until), ("outlast", &x.stall.outlast)] {
        if let Some(v) = v {
            st.insert(k.into(), s(v));
        }
    }
    if !st.is_empty() {
        m.insert("stall".into(), toml::Value::Table(st));
    }
    if let Some(b) = x.block_irq {
        m.insert("block_irq".into(), s(&fmt_duration(b.lo)));
    }
    toml::Value::Table(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(n: usize) -> Vec<Point> {
        (0..n)
            .map(|i| Point {
                site: format!("f+{i:#x}"),
                addr: i as u64,
                class: Class::Load,
                location: None,
                func: "f".into(),
                rank: i,
            })
            .collect()
    }

    fn cfg(strategy: Strategy) -> Config {
        Config {
            vcpus: vec![0, 1],
            stall_lo: Duration::from_micros(100),
            stall_hi: Duration::from_millis(20),
            block_irq: Duration::from_millis(20),
            probability: 0.5,
            max_fires: 4,
            slots: 4,
            strategy,
            seed: 7,
        }
    }

    #[test]
    fn plans_are_seeded_and_fit_the_slots() {
        let e = Explorer::new(pts(30), cfg(Strategy::Adaptive));
        let a = e.plan(3);
        assert_eq!(a, e.plan(3));
        assert_eq!(a.len(), 8);
        assert_eq!(a.iter().filter(|x| x.role == Role::P).count(), 4);
        let pv = a[0].vcpu;
        assert!(a.iter().all(|x| (x.role == Role::P) == (x.vcpu == pv)));
        for x in &a {
            assert!((100..=20_000).contains(&x.stall_us), "{}", x.stall_us);
        }
        let t = e.triggers(&a);
        assert_eq!(t[4].during.as_deref(), Some("*"));
    }

    #[test]
    fn credit_goes_to_the_last_secondary_and_its_primary() {
        let mut e = Explorer::new(pts(30), cfg(Strategy::Adaptive));
        let arms = e.plan(0);
        let fired: Vec<String> = ["p1", "s5", "p2", "s4"].map(String::from).to_vec();
        let r = e.record(
            0,
            1,
            arms,
            &fired,
            &[],
            &[],
            true,
            "crash",
            Some("BUG"),
            0.5,
        );
        assert_eq!(r.credit, Some((2, Some(4))));
        assert_eq!(r.met, vec![(1, 5), (2, 4)]);
        let rows = e.ranking();
        assert_eq!(rows[0].crashes, 1);
        assert_eq!(rows.len(), 2);
    }

    #[test]
    fn adaptive_sampling_returns_to_a_crashing_arm() {
        let mut e = Explorer::new(pts(60), cfg(Strategy::Adaptive));
        // A crash credited to point 17 on vCPU 0 as primary.
        let arms = vec![
            Arm {
                point: 17,
                vcpu: 0,
                role: Role::P,
                stall_us: 1000,
                focus: false,
                fires: 0,
            },
            Arm {
                point: 3,
                vcpu: 1,
                role: Role::S,
                stall_us: 1000,
                focus: false,
                fires: 0,
            },
        ];
        e.record(
            0,
            1,
            arms,
            &["p0".into(), "s1".into()],
            &[],
            &[],
            true,
            "crash",
            Some("BUG"),
            0.5,
        );
        let with = (1..200)
            .filter(|&r| {
                e.plan(r)
                    .iter()
                    .any(|a| a.point == 17 && a.role == Role::P && a.vcpu == 0)
            })
            .count();
        let u = Explorer::new(pts(60), cfg(Strategy::Uniform));
        let without = (1..200)
            .filter(|&r| {
                u.plan(r)
                    .iter()
                    .any(|a| a.point == 17 && a.role == Role::P && a.vcpu == 0)
            })
            .count();
        assert!(with > 2 * without, "{with} vs {without}");
    }

    #[test]
    fn beta_samples_have_the_right_mean() {
        let mut rng = 1;
        let n = 20_000;
        let m: f64 = (0..n).map(|_| beta_sample(&mut rng, 2.0, 6.0)).sum::<f64>() / n as f64;
        assert!((m - 0.25).abs() < 0.01, "{m}");
    }

    #[test]
    fn emitted_scenario_parses_back() {
        let text = "name = \"x\"\n[guest]\nvcpus = 2\nprogram = \"r.c\"\n[kernel.a]\npatches = [\"p.patch\"]\n[[trigger]]\nname = \"old\"\nsite = \"f\"\n";
        let e = Explorer::new(pts(5), cfg(Strategy::Adaptive));
        let row = Row {
            key: RowKey {
                p: (1, 0),
                s: Some((2, 1)),
                focus: false,
            },
            runs: 2,
            crashes: 2,
            titles: vec![],
            stalls: vec![(500, Some(3000)), (700, Some(5000)), (600, Some(4000))],
        };
        let out = emit_scenario(
            text,
            std::path::Path::new("/s"),
            &e.emit_triggers(&Candidate::of(&row)),
            "found",
        )
        .unwrap();
        let t: toml::Table = out.parse().unwrap();
        assert_eq!(t["guest"]["program"].as_str(), Some("/s/r.c"));
        let tr = t["trigger"].as_array().unwrap();
        assert_eq!(tr.len(), 2);
        assert_eq!(tr[1]["during"].as_str(), Some("primary"));
        assert_eq!(tr[1]["stall"]["after"].as_str(), Some("10ms"));
        assert_eq!(tr[1]["stall"]["outlast"].as_str(), Some("primary"));
        assert_eq!(tr[0]["stall"]["timeout"].as_str(), Some("1.4ms"));
        assert!(tr[0].get("probability").is_none());
        assert!(
            tr[1].get("probability").is_none(),
            "a coin on the one secondary"
        );
        assert_eq!(tr[0]["stall"]["until"].as_str(), Some("secondary"));
        assert_eq!(tr[0]["capture"]["primary"].as_str(), Some("current"));
    }

    #[test]
    fn confirmation_keeps_nine_of_ten_and_stops_early() {
        // Decided as soon as the outcome is known either way.
        assert_eq!(confirm_decided(9, 9), Some(true));
        assert_eq!(confirm_decided(8, 9), None);
        assert_eq!(confirm_decided(0, 2), Some(false));
        assert_eq!(confirm_decided(9, 10), Some(true));
        assert_eq!(confirm_decided(8, 10), Some(false));
        assert_eq!(confirm_decided(7, 9), Some(false));
        // Every path ends by CONFIRM_RUNS.
        for bits in 0u32..1024 {
            let (mut k, mut n) = (0, 0);
            while confirm_decided(k, n).is_none() {
                k += (bits >> n & 1) as usize;
                n += 1;
            }
            assert!(n <= CONFIRM_RUNS);
            assert_eq!(confirm_decided(k, n), Some(k >= CONFIRM_NEED));
        }
    }

    #[test]
    fn a_candidate_is_confirmed_once_and_only_confirmed_ones_count() {
        let mut e = Explorer::new(pts(10), cfg(Strategy::Adaptive));
        let arms = e.plan(0);
        e.record(
            0,
            1,
            arms,
            &["p1".into(), "s5".into()],
            &[],
            &[],
            true,
            "crash",
            Some("BUG"),
            0.5,
        );
        let any = regex::Regex::new("").unwrap();
        let c = e.candidate(&any).expect("a crash makes a candidate");
        assert_eq!(e.found(&any).0, 0, "not found before it is confirmed");
        let conf = Confirmation {
            confirm: c.clone(),
            after_run: 0,
            runs: 3,
            crashes: 0,
            titles: vec![],
            confirmed: false,
            seconds: 1.0,
        };
        // Results lines of both kinds read back as what they are.
        let line = serde_json::to_string(&conf).unwrap();
        assert!(matches!(
            serde_json::from_str(&line),
            Ok(Record::Confirm(_))
        ));
        let run = serde_json::to_string(&e.runs[0]).unwrap();
        assert!(matches!(serde_json::from_str(&run), Ok(Record::Run(_))));
        e.confirmations.push(conf);
        assert_eq!(e.candidate(&any), None, "refuted: not tried again");
        assert!(e.best_confirmed(&any).is_none());
        e.confirmations[0].crashes = 6;
        e.confirmations[0].runs = 6;
        e.confirmations[0].titles = vec![("BUG".into(), 6)];
        e.confirmations[0].confirmed = true;
        assert_eq!(e.found(&any), (1, Some(0)));
        assert_eq!(e.best_confirmed(&any).unwrap().confirm, c);
    }
}
