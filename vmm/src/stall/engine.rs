//! The engine that runs triggers at breakpoint hits (see the module doc).
//!
//! Past 800 lines because trigger matching, stalls, captures and the goal
//! share one locked state per run; parsing and the trace are in `spec.rs`
//! and `trace.rs`.
use super::spec::{Duration2, Reg, TriggerSpec, Value};
use super::trace::{EventKind, Trace};
use crate::debug::stack::RawStack;
use crate::debug::symbols::{self, Symbols};
use crate::vstate::preempt::{splitmix, unit};
use crate::vstate::{DebugHandler, Resume, VcpuCtx};
use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("trigger '{0}': site '{1}': {2}")]
    Site(String, String, symbols::Error),
    #[error("trigger '{0}': vCPU {1} does not exist (the guest has {2})")]
    Vcpu(String, usize, usize),
    #[error("trigger '{0}': {1} names no trigger")]
    UnknownTrigger(String, String),
    #[error("trigger '{0}': ${1} is never captured")]
    UnknownVar(String, String),
    #[error("trigger name '{0}' is used twice")]
    DuplicateName(String),
    #[error("vCPU {0} needs {1} hardware breakpoints ({3}); this host has {2} per vCPU: narrow a site (FUNC@CALLER, #N, func+off) or a trigger's vcpus")]
    TooManySites(usize, usize, usize, String),
    #[error("trigger '{0}': {1}")]
    Invalid(String, String),
    #[error("task predicates need DWARF task_struct layout: {0}")]
    TaskLayout(symbols::Error),
}

/// The general-purpose registers a value can be held in.
fn gprs(g: &kvm_bindings::kvm_regs) -> [u64; 14] {
    [
        g.rdi, g.rsi, g.rdx, g.rcx, g.r8, g.r9, g.r10, g.r11, g.rax, g.rbx, g.r12, g.r13, g.r14,
        g.r15,
    ]
}

/// `during = "*"`: while any trigger's stall is in progress (on another
/// vCPU: a stalled vCPU hits nothing).
pub const DURING_ANY: &str = "*";

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub vcpus: usize,
    /// Seeds the generator for probabilities and random durations.
    pub seed: u64,
    /// Hardware breakpoint slots per vCPU (DR0..DR3).
    pub hw_slots: usize,
    /// Triggers whose fires, in this order, mean the race window was
    /// reached (the interleaving goal).
    pub goal: Vec<String>,
    /// Disarm everything once the goal is reached, so the run ends soon.
    pub disarm_on_goal: bool,
    /// Freeze the machine for gdb at this moment (see `vstate::gdb`).
    pub freeze: Option<Freeze>,
}

/// When the engine freezes the machine for gdb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freeze {
    /// When the interleaving goal is reached.
    Goal,
    /// When this trigger stops its vCPU (before its stall).
    Trigger(String),
}

struct Trigger {
    spec: TriggerSpec,
    /// Every address of its site (several for a line or an inlined
    /// function's copies), each with its `func+off` and the register that
    /// `base` means there.
    addrs: Vec<(u64, String, Option<Reg>)>,
    regs: Vec<(Reg, Value)>,
    /// With `watch`: each address's memory operand (base, index, scale, disp).
    operands: HashMap<u64, (Option<Reg>, Option<Reg>, u32, u64)>,
}

impl Trigger {
    fn site_at(&self, addr: u64) -> Option<(&str, Option<Reg>)> {
        self.addrs
            .iter()
            .find(|(a, ..)| *a == addr)
            .map(|(_, s, b)| (s.as_str(), *b))
    }
}

#[derive(Clone, Copy)]
struct TState {
    armed: bool,
    stalling: bool,
    hits: u64,
    fires: u64,
}

struct State {
    t: Vec<TState>,
    vars: HashMap<String, u64>,
    rng: u64,
    fired: Vec<String>,
    /// (trigger, capture) for each `during` fire that had the capture's
    /// value in a register.
    holds: Vec<(String, String)>,
    /// `watch` triggers whose operand changed during their stop.
    changed: Vec<String>,
    goal_reached: bool,
}

/// Offsets to read the current task at a hit.
#[derive(Debug, Clone, Copy)]
struct TaskLayout {
    current_task: u64,
    comm: u64,
    pid: u64,
    flags: u64,
}

/// A vCPU's stack taken at a moment worth seeing: a stop, the goal.
#[derive(Debug, Clone)]
pub struct StackRecord {
    pub t: Duration,
    pub vcpu: usize,
    /// Why it was taken: `stop at TRIGGER on vCPU N`, `goal`.
    pub why: String,
    /// `comm[pid]` of the vCPU's current task.
    pub task: Option<String>,
    pub raw: RawStack,
    /// What the walk took (the vCPU is out of the guest meanwhile).
    pub cost: Duration,
}

/// At most this many stacks per run: stops repeat in loops.
const MAX_STACKS: usize = 256;

pub struct Engine {
    cfg: EngineConfig,
    triggers: Vec<Trigger>,
    bps: Vec<[Option<u64>; 4]>,
    task: Option<TaskLayout>,
    state: Mutex<State>,
    cv: Condvar,
    pub trace: Trace,
    stacks: Mutex<Vec<StackRecord>>,
    /// Why each vCPU was asked for its stack (its next `on_inspect`).
    asked: Mutex<Vec<Option<String>>>,
}

impl Engine {
    pub fn new(specs: Vec<TriggerSpec>, syms: &Symbols, cfg: EngineConfig) -> Result<Self, Error> {
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(Error::DuplicateName(n.to_string()));
            }
        }
        if let Some(Freeze::Trigger(t)) = &cfg.freeze {
            if !names.contains(&t.as_str()) {
                return Err(Error::UnknownTrigger("--gdb-on".into(), t.clone()));
            }
        }
        let captured: Vec<&str> = specs
            .iter()
            .flat_map(|s| s.capture.keys().map(String::as_str))
            .collect();
        let mut triggers = Vec::new();
        let mut needs_task = false;
        for s in &specs {
            let invalid = |m: &str| Error::Invalid(s.name.clone(), m.to_string());
            if let Some(&v) = s.vcpus.iter().find(|&&v| v >= cfg.vcpus) {
                return Err(Error::Vcpu(s.name.clone(), v, cfg.vcpus));
            }
            for other in s
                .arm
                .iter()
                .chain(&s.disarm)
                .chain(s.stall.until.iter().filter(|u| *u != DURING_ANY))
                .chain(s.during.iter().filter(|d| *d != DURING_ANY))
                .chain(cfg.goal.iter())
            {
                if !names.contains(&other.as_str()) {
                    return Err(Error::UnknownTrigger(s.name.clone(), other.clone()));
                }
            }
            let forms = [
                s.stall.duration.is_some(),
                s.stall.until.is_some(),
                s.stall.outlast.is_some(),
            ];
            if forms.iter().filter(|x| **x).count() > 1 {
                return Err(invalid(
                    "stall has more than one of `duration`, `until`, `outlast`",
                ));
            }
            if (s.stall.until.is_some() || s.stall.outlast.is_some()) && s.stall.timeout.is_none() {
                return Err(invalid(
                    "`until` and `outlast` need a `timeout` (a stop must always end)",
                ));
            }
            if let Some(o) = s.stall.outlast.as_ref().filter(|o| *o != DURING_ANY) {
                if !names.contains(&o.as_str()) {
                    return Err(Error::UnknownTrigger(s.name.clone(), o.clone()));
                }
            }
            if matches!(s.probability, Some(p) if !(0.0..=1.0).contains(&p)) {
                return Err(invalid("probability must be in 0..=1"));
            }
            if s.nth == Some(0) || s.every == Some(0) || s.from == Some(0) {
                return Err(invalid("nth/every/from count from 1"));
            }
            let mut regs = Vec::new();
            for (r, v) in &s.regs {
                let reg: Reg = r.parse().map_err(|e: String| invalid(&e))?;
                if let Value::Var(name) = v {
                    if !captured.contains(&name.as_str()) {
                        return Err(Error::UnknownVar(s.name.clone(), name.clone()));
                    }
                }
                needs_task |= reg == Reg::Current;
                regs.push((reg, v.clone()));
            }
            needs_task |= s.comm.is_some() || s.pid.is_some() || s.task_flags.is_some();
            needs_task |= s.capture.values().any(|r| *r == Reg::Current);
            let sites = syms
                .resolve(&s.site)
                .map_err(|e| Error::Site(s.name.clone(), s.site.clone(), e))?;
            let uses_base = regs.iter().any(|(r, _)| *r == Reg::Base)
                || s.capture.values().any(|r| *r == Reg::Base);
            let mut addrs = Vec::new();
            for x in &sites {
                let here = format!("{}+{:#x}", x.function, x.offset);
                let base = match syms.mem_base(x.addr) {
                    Some(name) => name.parse::<Reg>().ok(),
                    None => None,
                };
                if uses_base && base.is_none() {
                    return Err(Error::Invalid(
                        s.name.clone(),
                        format!(
                            "`base`: the instruction at {here} ({}) has no struct memory operand",
                            x.text
                        ),
                    ));
                }
                addrs.push((x.addr, here, base));
            }
            let operands = if s.watch {
                sites
                    .iter()
                    .filter_map(|x| {
                        let (b, i, sc, d) = syms.mem_operand(x.addr)?;
                        let reg = |r: Option<String>| r.and_then(|n| n.parse::<Reg>().ok());
                        Some((x.addr, (reg(b), reg(i), sc, d)))
                    })
                    .collect()
            } else {
                HashMap::new()
            };
            triggers.push(Trigger {
                spec: s.clone(),
                addrs,
                regs,
                operands,
            });
        }
        let mut bps = vec![[None; 4]; cfg.vcpus];
        for (v, slots) in bps.iter_mut().enumerate() {
            let mut addrs: Vec<(u64, String)> = triggers
                .iter()
                .filter(|t| t.spec.vcpus.is_empty() || t.spec.vcpus.contains(&v))
                .flat_map(|t| {
                    t.addrs
                        .iter()
                        .map(|(a, s, _)| (*a, format!("{}: {s}", t.spec.name)))
                })
                .collect();
            addrs.sort_unstable_by_key(|a| a.0);
            addrs.dedup_by_key(|a| a.0);
            if addrs.len() > cfg.hw_slots.min(4) {
                let list: Vec<String> = addrs.into_iter().map(|a| a.1).collect();
                return Err(Error::TooManySites(
                    v,
                    list.len(),
                    cfg.hw_slots.min(4),
                    list.join(", "),
                ));
            }
            let addrs: Vec<u64> = addrs.into_iter().map(|a| a.0).collect();
            for (i, a) in addrs.into_iter().enumerate() {
                slots[i] = Some(a);
            }
        }
        // Reading the task is also what makes fire records say who it was,
        // so the layout is looked up whenever DWARF has it.
        let task = match task_layout(syms) {
            Ok(l) => Some(l),
            Err(e) if needs_task => return Err(Error::TaskLayout(e)),
            Err(_) => None,
        };
        let state = State {
            t: triggers
                .iter()
                .map(|t| TState {
                    armed: !t.spec.disarmed,
                    stalling: false,
                    hits: 0,
                    fires: 0,
                })
                .collect(),
            vars: HashMap::new(),
            rng: cfg.seed ^ 0x5eed,
            fired: Vec::new(),
            holds: Vec::new(),
            changed: Vec::new(),
            goal_reached: cfg.goal.is_empty(),
        };
        Ok(Self {
            triggers,
            bps,
            task,
            state: Mutex::new(state),
            cv: Condvar::new(),
            trace: Trace::default(),
            stacks: Mutex::new(Vec::new()),
            asked: Mutex::new(vec![None; cfg.vcpus]),
            cfg,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn index(&self, name: &str) -> usize {
        self.triggers
            .iter()
            .position(|t| t.spec.name == name)
            .expect("trigger names are validated")
    }

    /// Whether the interleaving goal was reached in this run.
    pub fn goal_reached(&self) -> bool {
        self.lock().goal_reached
    }

    /// The stacks taken in this run, in the order taken.
    pub fn stacks(&self) -> Vec<StackRecord> {
        self.stacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn keep_stack(&self, ctx: &VcpuCtx<'_>, why: String) {
        let t0 = Instant::now();
        let raw = ctx.stack();
        let cost = t0.elapsed();
        let task = self
            .task_info(ctx)
            .map(|(comm, pid, _)| format!("{comm}[{pid}]"));
        let mut s = self.stacks.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() < MAX_STACKS {
            s.push(StackRecord {
                t: ctx.elapsed(),
                vcpu: ctx.index,
                why,
                task,
                raw,
                cost,
            });
        }
    }

    /// This vCPU's stack now, and every other vCPU's as soon as it is out
    /// of the guest (a kick: microseconds, see `RunShared::request_inspect`).
    fn stacks_everywhere(&self, ctx: &VcpuCtx<'_>, why: String) {
        if self.stacks.lock().unwrap_or_else(|e| e.into_inner()).len() >= MAX_STACKS {
            return;
        }
        {
            let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
            for (v, a) in asked.iter_mut().enumerate() {
                if v != ctx.index {
                    *a = Some(why.clone());
                }
            }
        }
        for v in (0..self.cfg.vcpus).filter(|v| *v != ctx.index) {
            ctx.request_inspect(v);
        }
        self.keep_stack(ctx, why);
    }

    /// (trigger, capture): fires inside another's stall with a captured
    /// value in a register, in order.
    pub fn holds(&self) -> Vec<(String, String)> {
        self.lock().holds.clone()
    }

    /// `watch` triggers whose operand another CPU changed during a stop.
    pub fn changed(&self) -> Vec<String> {
        self.lock().changed.clone()
    }

    /// Trigger names in the order they fired.
    pub fn fired(&self) -> Vec<String> {
        self.lock().fired.clone()
    }

    /// Resolved sites, for reports: (trigger, func+off, address).
    pub fn sites(&self) -> Vec<(String, String, u64)> {
        self.triggers
            .iter()
            .flat_map(|t| {
                t.addrs
                    .iter()
                    .map(|(a, site, _)| (t.spec.name.clone(), site.clone(), *a))
            })
            .collect()
    }

    fn draw(&self, st: &mut State, d: Duration2) -> Duration {
        if d.lo == d.hi {
            return d.lo;
        }
        let span = (d.hi - d.lo).as_nanos() as u64;
        d.lo + Duration::from_nanos(splitmix(&mut st.rng) % (span + 1))
    }

    fn reg_value(
        &self,
        ctx: &VcpuCtx<'_>,
        regs: &Option<kvm_bindings::kvm_regs>,
        r: Reg,
        base: Option<Reg>,
    ) -> Option<u64> {
        let g = regs.as_ref()?;
        Some(match r {
            Reg::Base => return self.reg_value(ctx, regs, base.filter(|b| *b != Reg::Base)?, None),
            Reg::Rdi => g.rdi,
            Reg::Rsi => g.rsi,
            Reg::Rdx => g.rdx,
            Reg::Rcx => g.rcx,
            Reg::R8 => g.r8,
            Reg::R9 => g.r9,
            Reg::R10 => g.r10,
            Reg::R11 => g.r11,
            Reg::Rax => g.rax,
            Reg::Rbx => g.rbx,
            Reg::R12 => g.r12,
            Reg::R13 => g.r13,
            Reg::R14 => g.r14,
            Reg::R15 => g.r15,
            Reg::Rsp => g.rsp,
            Reg::Rbp => g.rbp,
            Reg::Rip => g.rip,
            Reg::Current => return self.current(ctx),
        })
    }

    fn current(&self, ctx: &VcpuCtx<'_>) -> Option<u64> {
        let l = self.task?;
        let gs = ctx.sregs()?.gs.base;
        ctx.read_u64(gs.wrapping_add(l.current_task))
    }

    /// (comm, pid, flags) of the current task.
    fn task_info(&self, ctx: &VcpuCtx<'_>) -> Option<(String, u32, u64)> {
        let l = self.task?;
        let task = self.current(ctx)?;
        let mut comm = [0u8; 16];
        ctx.read_virt(task + l.comm, &mut comm)?;
        let end = comm.iter().position(|&b| b == 0).unwrap_or(16);
        let mut pid = [0u8; 4];
        ctx.read_virt(task + l.pid, &mut pid)?;
        let flags = ctx.read_u64(task + l.flags)? & 0xffff_ffff;
        Some((
            String::from_utf8_lossy(&comm[..end]).into_owned(),
            u32::from_le_bytes(pid),
            flags,
        ))
    }

    fn goal_check(&self, st: &mut State) {
        if st.goal_reached {
            return;
        }
        let mut it = st.fired.iter();
        st.goal_reached = self.cfg.goal.iter().all(|g| it.any(|f| f == g));
        if st.goal_reached && self.cfg.disarm_on_goal {
            // No new stop starts; a stop in progress runs to its end, so
            // the trigger its `until` waits for stays armed (a stop that
            // ends on the other vCPU's progress, not on a wall-clock
            // guess, whatever the host's load).
            let awaited: Vec<usize> = (0..st.t.len())
                .filter(|&i| st.t[i].stalling)
                .filter_map(|i| self.triggers[i].spec.stall.until.as_deref())
                .filter(|u| *u != DURING_ANY)
                .map(|u| self.index(u))
                .collect();
            for (j, t) in st.t.iter_mut().enumerate() {
                if !awaited.contains(&j) {
                    t.armed = false;
                }
            }
        }
    }

    /// Wait until `done(state)` or the deadline or the VM stops; true if done.
    /// A stalled vCPU serves gdb while the machine is frozen for it, and
    /// its stall does not count that time.
    /// A stop that waits for `done` (at most `timeout` from `start`), then
    /// `after` more if it came; traced as `(waiting, came, missed)`.
    #[allow(clippy::too_many_arguments)]
    fn hold(
        &self,
        ctx: &VcpuCtx<'_>,
        name: &str,
        start: Instant,
        timeout: Duration,
        after: Option<Duration>,
        (waiting, came, missed): (String, String, String),
        done: impl Fn(&State) -> bool,
    ) {
        let v = ctx.index;
        self.trace.record(
            ctx.elapsed(),
            v,
            EventKind::StallStart,
            name,
            format!("{waiting}, timeout {timeout:?}"),
        );
        let met = self.wait(ctx, start + timeout, done);
        let mut why = if met {
            format!("{came} after {:?}", start.elapsed())
        } else if ctx.stopping() {
            "VM stopping".into()
        } else {
            format!("timeout {timeout:?}, {missed}")
        };
        if let (true, Some(a)) = (met, after) {
            self.wait(ctx, Instant::now() + a, |_| false);
            why.push_str(&format!(", then {a:?}"));
        }
        self.trace
            .record(ctx.elapsed(), v, EventKind::StallEnd, name, why);
    }

    fn wait(&self, ctx: &VcpuCtx<'_>, deadline: Instant, done: impl Fn(&State) -> bool) -> bool {
        let mut deadline = deadline;
        let mut st = self.lock();
        loop {
            drop(st);
            let held = ctx.serve_gdb();
            if held > Duration::from_millis(1) {
                deadline += held;
            }
            st = self.lock();
            if done(&st) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || ctx.stopping() {
                return false;
            }
            // Short slices: the VM's stop flag has no link to this condvar.
            let slice = (deadline - now).min(Duration::from_millis(5));
            st = self
                .cv
                .wait_timeout(st, slice)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Where `current` lives: the per-cpu `current_task` (to 6.1), or its
/// member of the per-cpu `struct pcpu_hot` (6.2 on).
fn current_task_offset(syms: &Symbols) -> Result<u64, symbols::Error> {
    if let Some(a) = syms.symbol_addr("current_task") {
        return Ok(a);
    }
    match syms.symbol_addr("pcpu_hot") {
        Some(hot) => Ok(hot + syms.member_offset("pcpu_hot", "current_task")?),
        None => Err(symbols::Error::NoFunction(
            "current_task` (nor `pcpu_hot".into(),
        )),
    }
}

fn task_layout(syms: &Symbols) -> Result<TaskLayout, symbols::Error> {
    Ok(TaskLayout {
        current_task: current_task_offset(syms)?,
        comm: syms.member_offset("task_struct", "comm")?,
        pid: syms.member_offset("task_struct", "pid")?,
        flags: syms.member_offset("task_struct", "flags")?,
    })
}

impl DebugHandler for Engine {
    fn breakpoints(&self, vcpu: usize) -> [Option<u64>; 4] {
        self.bps.get(vcpu).copied().unwrap_or([None; 4])
    }

    fn on_hit(&self, ctx: &mut VcpuCtx<'_>, slot: usize) -> Resume {
        let Some(addr) = self.bps.get(ctx.index).and_then(|b| b[slot]) else {
            return Resume::default();
        };
        let v = ctx.index;
        let regs = ctx.regs();
        let mut task: Option<Option<(String, u32, u64)>> = None;
        let mut action: Option<usize> = None;
        let mut block_irq: Option<Duration2> = None;
        let mut st = self.lock();
        for (i, t) in self.triggers.iter().enumerate() {
            let s = &t.spec;
            let Some((site, base)) = t.site_at(addr) else {
                continue;
            };
            if !(s.vcpus.is_empty() || s.vcpus.contains(&v)) {
                continue;
            }
            self.trace
                .record(ctx.elapsed(), v, EventKind::Hit, &s.name, String::new());
            if !st.t[i].armed {
                continue;
            }
            if let Some(d) = &s.during {
                let stalling = if d == DURING_ANY {
                    st.t.iter().any(|t| t.stalling)
                } else {
                    st.t[self.index(d)].stalling
                };
                if !stalling {
                    continue;
                }
            }
            if s.acts_on_stalled {
                let Some(g) = regs.as_ref() else { continue };
                let gprs = gprs(g);
                let held = self.triggers.iter().enumerate().any(|(j, o)| {
                    st.t[j].stalling
                        && o.spec.capture.keys().any(|var| {
                            st.vars
                                .get(var)
                                .is_some_and(|val| *val != 0 && gprs.contains(val))
                        })
                });
                if !held {
                    continue;
                }
            }
            if s.comm.is_some() || s.pid.is_some() || s.task_flags.is_some() {
                let info = task.get_or_insert_with(|| self.task_info(ctx));
                let Some((comm, pid, flags)) = info else {
                    continue;
                };
                if s.comm.as_ref().is_some_and(|c| c != comm)
                    || s.pid.is_some_and(|p| p != *pid)
                    || s.task_flags.is_some_and(|m| *flags & m == 0)
                {
                    continue;
                }
            }
            let regs_ok = t.regs.iter().all(|(r, want)| {
                let want = match want {
                    Value::Num(n) => Some(*n),
                    Value::Var(name) => st.vars.get(name).copied(),
                };
                want.is_some() && self.reg_value(ctx, &regs, *r, base) == want
            });
            if !regs_ok {
                continue;
            }
            st.t[i].hits += 1;
            let n = st.t[i].hits;
            let count_ok = s.nth.is_none_or(|k| n == k)
                && s.every.is_none_or(|k| n.is_multiple_of(k))
                && s.from.is_none_or(|k| n >= k);
            if !count_ok {
                continue;
            }
            if let Some(p) = s.probability {
                let x = unit(&mut st.rng);
                if x >= p {
                    continue;
                }
            }
            st.t[i].fires += 1;
            if s.max_fires.is_some_and(|m| st.t[i].fires >= m) {
                st.t[i].armed = false;
            }
            let mut detail = format!("at {site} (hit {n})");
            if let Some((comm, pid, _)) = task.get_or_insert_with(|| self.task_info(ctx)) {
                detail.push_str(&format!(" {comm}[{pid}]"));
            }
            for (var, r) in &s.capture {
                if let Some(val) = self.reg_value(ctx, &regs, *r, base) {
                    st.vars.insert(var.clone(), val);
                    detail.push_str(&format!(" ${var}={val:#x}"));
                }
            }
            // Fired inside another vCPU's stall with a captured value (the
            // stalled task, ...) in a register: this vCPU is acting on what
            // the stalled one holds (a wakeup of it, say). Explore learns
            // from it; the trace shows it.
            if let (Some(_), Some(g)) = (&s.during, regs.as_ref()) {
                let gprs = gprs(g);
                let mut held: Vec<String> = st
                    .vars
                    .iter()
                    .filter(|(_, val)| **val != 0 && gprs.contains(val))
                    .map(|(var, _)| var.clone())
                    .collect();
                held.sort();
                for var in held {
                    detail.push_str(&format!(" holds ${var}"));
                    st.holds.push((s.name.clone(), var));
                }
            }
            for (j, o) in self.triggers.iter().enumerate() {
                if s.arm.contains(&o.spec.name) {
                    st.t[j].armed = true;
                }
                if s.disarm.contains(&o.spec.name) {
                    st.t[j].armed = false;
                }
            }
            st.fired.push(s.name.clone());
            self.trace
                .record(ctx.elapsed(), v, EventKind::Fire, &s.name, detail);
            block_irq = block_irq.or(s.block_irq);
            if action.is_none()
                && (s.stall.duration.is_some()
                    || s.stall.until.is_some()
                    || s.stall.outlast.is_some())
            {
                action = Some(i);
            }
        }
        let goal_before = st.goal_reached;
        self.goal_check(&mut st);
        let goal_now = st.goal_reached && !goal_before;
        self.cv.notify_all();
        let block_irq = block_irq.map(|d| self.draw(&mut st, d));
        // Backtraces where they tell something: every vCPU at a stop and at
        // the goal. Plain hits pay nothing.
        // Stalling from now on: `during` triggers on other vCPUs see it at
        // once, not only after the stacks below are taken (a vCPU released
        // by this fire may race to its own site meanwhile).
        if let Some(i) = action {
            st.t[i].stalling = true;
        }
        let why = match (action, goal_now) {
            (Some(i), _) => Some(format!("{} stops vCPU {v}", self.triggers[i].spec.name)),
            (None, true) => Some(format!("goal reached on vCPU {v}")),
            (None, false) => None,
        };
        if let Some(why) = why {
            drop(st);
            self.stacks_everywhere(ctx, why);
            st = self.lock();
        }
        let freeze = match (&self.cfg.freeze, action) {
            (Some(Freeze::Goal), _) if goal_now => Some(format!("goal reached on vCPU {v}")),
            (Some(Freeze::Trigger(t)), Some(i)) if *t == self.triggers[i].spec.name => {
                Some(format!("trigger {t} stopped vCPU {v}"))
            }
            _ => None,
        };
        if let Some(why) = freeze {
            ctx.request_freeze(&why);
        }
        let Some(i) = action else {
            return Resume { block_irq };
        };
        let s = &self.triggers[i].spec;
        let stall = &s.stall;
        let start = Instant::now();
        st.t[i].stalling = true;
        // `watch`: the operand's address and value as the stop begins.
        let watched = self.triggers[i]
            .operands
            .get(&addr)
            .and_then(|&(b, x, sc, d)| {
                let r = |r: Option<Reg>| match r {
                    Some(r) => self.reg_value(ctx, &regs, r, None),
                    None => Some(0),
                };
                let gva = r(b)?
                    .wrapping_add(r(x)?.wrapping_mul(sc as u64))
                    .wrapping_add(d);
                Some((gva, ctx.read_u64(gva)?))
            });
        if let Some(d) = stall.duration {
            let d = self.draw(&mut st, d);
            drop(st);
            self.trace.record(
                ctx.elapsed(),
                v,
                EventKind::StallStart,
                &s.name,
                format!("{d:?}"),
            );
            let done = !self.wait(ctx, start + d, |_| false);
            let why = if done {
                format!("{d:?} elapsed")
            } else {
                "VM stopping".into()
            };
            self.trace
                .record(ctx.elapsed(), v, EventKind::StallEnd, &s.name, why);
        } else if let (Some(o), Some(timeout)) = (&stall.outlast, stall.timeout) {
            let timeout = self.draw(&mut st, timeout);
            let after = stall.after.map(|a| self.draw(&mut st, a));
            let others: Vec<usize> = if o == DURING_ANY {
                (0..self.triggers.len()).filter(|&j| j != i).collect()
            } else {
                vec![self.index(o)]
            };
            drop(st);
            let labels = (
                format!("outlast {o}"),
                format!("{o} ended"),
                format!("{o} still stalled"),
            );
            self.hold(ctx, &s.name, start, timeout, after, labels, |st| {
                others.iter().all(|&j| !st.t[j].stalling)
            });
        } else if let (Some(until), Some(timeout)) = (&stall.until, stall.timeout) {
            // `*`: any trigger's fire (the count of all fires grows).
            let j = (until != DURING_ANY).then(|| self.index(until));
            let count = move |st: &State| match j {
                Some(j) => st.t[j].fires,
                None => st.fired.len() as u64,
            };
            let before = count(&st);
            let timeout = self.draw(&mut st, timeout);
            let after = stall.after.map(|a| self.draw(&mut st, a));
            drop(st);
            let labels = (
                format!("until {until}"),
                format!("{until} fired"),
                format!("{until} did not fire"),
            );
            self.hold(ctx, &s.name, start, timeout, after, labels, |st| {
                count(st) > before
            });
        }
        if let Some((gva, before)) = watched {
            let now = ctx.read_u64(gva);
            if now.is_some_and(|n| n != before) {
                self.trace.record(
                    ctx.elapsed(),
                    v,
                    EventKind::Changed,
                    &s.name,
                    format!(
                        "operand {gva:#x} changed during the stop: {before:#x} -> {:#x}",
                        now.unwrap_or(0)
                    ),
                );
                self.lock().changed.push(s.name.clone());
            }
        }
        self.lock().t[i].stalling = false;
        // Stops that outlast this one are waiting for it.
        self.cv.notify_all();
        if s.announce {
            ctx.announce_pause();
        }
        self.trace
            .record(ctx.elapsed(), v, EventKind::Resume, &s.name, String::new());
        Resume { block_irq }
    }

    fn on_preempt(&self, ctx: &mut VcpuCtx<'_>, d: Duration) {
        self.trace.record_span(
            ctx.elapsed(),
            ctx.index,
            EventKind::Preempt,
            "preempt",
            format!("{d:?}"),
            Some(d),
        );
        self.wait(ctx, Instant::now() + d, |_| false);
    }

    fn on_inspect(&self, ctx: &mut VcpuCtx<'_>) {
        let why = self.asked.lock().unwrap_or_else(|e| e.into_inner())[ctx.index].take();
        if let Some(why) = why {
            self.keep_stack(ctx, why);
        }
    }
}
