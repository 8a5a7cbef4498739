//! Runs of a scenario: boot the guest with the scenario's triggers (or none,
//! for the baseline), take the verdict, and decide whether the run counts.
//!
//! Past 800 lines because kernel resolution, boot configuration, the
//! snapshot (kept, cached, shared) and the per-run judgement all hang off
//! `Prepared`; many runs at once are in `parallel.rs`.
use super::{Error as ScnError, Expect, Goal, Scenario, SnapshotAt, Variant};
use crate::boot::artifacts::{KernelSpec, Payload};
use crate::boot::program::{self, Program};
use crate::boot::snapcache;
use crate::boot::{self, artifacts, verdict, verdict::Verdict, BootConfig, Kernel, RunOutput};
use crate::debug::stack::{self, Frame, RawStack};
use crate::debug::symbols::Symbols;
use crate::devices::ConsoleConfig;
use crate::host::HostProfile;
use crate::stall::{trace, Engine, EngineConfig, Event, EventKind, Freeze, TriggerSpec};
use crate::vstate::snapshot::{file, Restorer, Snapshot};
use crate::vstate::{DebugHandler, GdbConfig, PreemptConfig, VmConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Scenario(#[from] ScnError),
    #[error(transparent)]
    Artifacts(#[from] artifacts::Error),
    #[error(transparent)]
    Boot(#[from] boot::Error),
    #[error(transparent)]
    Program(#[from] program::Error),
    #[error("--out {0}: {1}")]
    Out(PathBuf, std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// Where a run's files are written before they are whole: `DIR.partial`.
pub fn partial_dir(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    dir.with_file_name(name)
}

/// Write a run's files into `tmp` beside its console log, check that the
/// log was written whole, and rename `tmp` to `dir` (replacing an older
/// run's folder of that name).
fn keep_run_files(
    console: &crate::devices::console::Console,
    tmp: &Path,
    dir: &Path,
    files: &[(&str, Option<String>)],
) -> std::io::Result<()> {
    if let Some(e) = console.log_error() {
        return Err(std::io::Error::new(e.kind(), format!("console.log: {e}")));
    }
    for (name, data) in files {
        if let Some(d) = data {
            let mut f = std::fs::File::create(tmp.join(name))?;
            std::io::Write::write_all(&mut f, d.as_bytes())?;
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::rename(tmp, dir)
}

/// Everything fixed across the runs of one (scenario, kernel, mode).
pub struct Prepared {
    pub scenario: Scenario,
    pub kernel_name: String,
    /// The scenario's expectation for this kernel variant, if any.
    pub variant_expect: Option<Expect>,
    pub inject: bool,
    /// Where the snapshot is taken (the program's ready point, or before it starts).
    pub snapshot_at: SnapshotAt,
    pub profile: HostProfile,
    boot: BootConfig,
    symbols: Option<Symbols>,
    /// Boot once to the workload's snapshot point, restore that per run.
    pub use_snapshot: bool,
    /// Keep the snapshot in this file, or reuse the one there.
    snapshot_file: Option<PathBuf>,
    /// After each restored run, check that copying back its dirty pages
    /// gives the snapshot's memory exactly.
    pub verify_restore: bool,
    snapshot: Arc<std::sync::OnceLock<Result<Restorer, String>>>,
    /// The engine's part of a gdb request (the VMM's is in `boot`).
    freeze: Option<Freeze>,
    /// Random preemption in every run (seeded with the run's seed).
    pub preempt: Option<PreemptConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub index: usize,
    pub seed: u64,
    pub verdict: Verdict,
    /// The interleaving goal was reached (always true without injection).
    pub goal_reached: bool,
    /// Counts for the kernel: the workload started, and then a crash or hang,
    /// or a clean run that reached the goal. Host errors, clean runs short of
    /// the goal and guests that died before the workload do not.
    pub conclusive: bool,
    /// The guest's init started the workload.
    pub workload_started: bool,
    pub seconds: f64,
    pub fired: Vec<String>,
    /// (trigger, capture): a `during` trigger fired with a captured value
    /// in a register (e.g. waking the stalled task).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<(String, String)>,
    /// `watch` triggers whose operand another CPU changed during a stop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// For a restored run: what the restore copied and cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreInfo>,
    /// gdb was given the machine in this run, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspected: Option<String>,
    /// For a crash: the kernel report (first lines), for CI logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// The run's `--out` folder could not be written (the run itself is
    /// whole; its files are not there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_error: Option<String>,
    #[serde(skip)]
    pub events: Vec<Event>,
    #[serde(skip)]
    pub diagram: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreInfo {
    /// 4 KiB pages copied back from the snapshot before the run.
    pub pages: usize,
    /// All of guest memory was copied (the first run).
    pub full: bool,
    pub copy_ms: f64,
    /// From nothing to a runnable VM.
    pub restore_ms: f64,
    /// With `verify_restore`: after the run, pages that still differ from
    /// the snapshot once its dirty pages are copied back (0 = the dirty log
    /// missed nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_pages: Option<usize>,
}

/// A kernel of the scenario: one of its variants by name (built if
/// missing: the base once, then the variant incrementally), `base`, or a
/// path to a vmlinux/bzImage. Returns the kernel and the variant's
/// expectation.
pub fn resolve_kernel(
    scn: &Scenario,
    name: &str,
    build: bool,
) -> Result<(Kernel, Option<Expect>), Error> {
    if let Some((_, v)) = scn.variants().into_iter().find(|(n, _)| n == name) {
        let k = variant_kernel(scn, name, &v, build)?;
        return Ok((k, v.expect));
    }
    if name == super::BASE_VARIANT || name.contains('/') || Path::new(name).exists() {
        return Ok((artifacts::resolve_kernel(name)?, None));
    }
    let names: Vec<String> = scn.variants().into_iter().map(|(n, _)| n).collect();
    Err(Error::Other(format!(
        "{}: no kernel variant '{name}' (it has: {}); or give a path to a vmlinux or bzImage",
        scn.path.display(),
        names.join(", ")
    )))
}

/// Build (or find) the kernel of variant `name`; bad inputs are errors at
/// the variant's line in the scenario file.
pub fn variant_kernel(
    scn: &Scenario,
    name: &str,
    v: &Variant,
    build: bool,
) -> Result<Kernel, Error> {
    // A tree base (`dir:PATH`, `git:REPO@REV`) is relative to the
    // scenario file too.
    let base = if let Some(p) = v.base.strip_prefix("dir:") {
        format!("dir:{}", scn.resolve(Path::new(p)).display())
    } else if let Some((p, rev)) = v.base.strip_prefix("git:").and_then(|s| s.rsplit_once('@')) {
        format!("git:{}@{rev}", scn.resolve(Path::new(p)).display())
    } else {
        v.base.clone()
    };
    let spec = KernelSpec {
        base,
        patches: v.patches.iter().map(|p| scn.resolve(p)).collect(),
        configs: v.config.iter().map(|p| scn.resolve(p)).collect(),
    };
    spec.kernel(build).map_err(|e| match e {
        artifacts::Error::KernelInput(mut msg) => {
            // Name inputs as the scenario file does, not by absolute path.
            for (given, resolved) in v
                .patches
                .iter()
                .chain(&v.config)
                .map(|p| (p, scn.resolve(p)))
            {
                if let Ok(abs) = resolved.canonicalize() {
                    msg = msg.replace(&abs.display().to_string(), &given.display().to_string());
                }
            }
            let key = if msg.starts_with("patch") {
                "patches"
            } else if msg.starts_with("config") {
                "config"
            } else if msg.contains("base") {
                "base"
            } else {
                "["
            };
            scn.error_at_variant(name, key, format!("kernel.{name}: {msg}"))
                .into()
        }
        e => e.into(),
    })
}

/// Refuse, in one line, a kernel that cannot work here (`kernel check`).
/// `syms`: its symbols, if already loaded.
pub fn preflight(k: &Kernel, profile: &HostProfile, syms: Option<&Symbols>) -> Result<(), Error> {
    let rep = boot::check::check(k, profile, syms);
    if rep.usable() {
        return Ok(());
    }
    Err(Error::Other(format!(
        "kernel {} cannot run here: {} (see `preemptor kernel check`)",
        k.path.display(),
        rep.failures()
    )))
}

/// What init runs for this scenario: its program (compiled if C) or
/// built-in workload, its arguments and files.
pub fn payload(scn: &Scenario) -> Result<Payload, Error> {
    let g = &scn.guest;
    let mut p = match (&g.program, &g.workload) {
        (Some(prog), _) => Payload::program(Program::load(&scn.resolve(prog))?, &g.args),
        (None, Some(w)) => Payload::workload(w, &g.args)
            .map_err(|e| Error::Scenario(scn.error_at_key("workload", e.to_string())))?,
        (None, None) => unreachable!("Scenario::load checks [guest]"),
    };
    for f in &g.files {
        let src = scn.resolve(&f.src);
        let data = std::fs::read(&src).map_err(|e| {
            Error::Scenario(scn.error_at_key("files", format!("files: {}: {e}", src.display())))
        })?;
        p.files.push((f.dst.clone(), data));
    }
    Ok(p)
}

pub fn prepare(
    scenario: Scenario,
    kernel: &str,
    inject: bool,
    use_snapshot: bool,
) -> Result<Prepared, Error> {
    let profile = HostProfile::probe();
    let (k, variant_expect) = resolve_kernel(&scenario, kernel, true)?;
    // Symbols place the triggers, title crashes from the symbolized
    // report and feed the preflight; without a vmlinux only triggers
    // cannot do.
    let symbols = match &k.vmlinux {
        Some(v) => Some(Symbols::load(v).map_err(|e| Error::Other(e.to_string()))?),
        None if inject && !scenario.triggers.is_empty() => {
            return Err(Error::Other(format!(
                "no vmlinux next to {}: triggers need its symbols",
                k.path.display()
            )))
        }
        None => None,
    };
    preflight(&k, &profile, symbols.as_ref())?;
    let payload = payload(&scenario)?;
    let snapshot_at = scenario.guest.snapshot.unwrap_or(if payload.calls_ready() {
        SnapshotAt::Ready
    } else {
        SnapshotAt::Start
    });
    let g = &scenario.guest;
    let boot = BootConfig {
        kernel: k,
        initramfs: Arc::new(artifacts::build_initramfs(&payload)?),
        // Every scenario guest stops at the snapshot point when asked, so a
        // cold run and a restored run execute the same guest code.
        cmdline: boot::cmdline(
            &profile,
            &format!(
                "{} {}",
                g.cmdline,
                match snapshot_at {
                    SnapshotAt::Ready => "preemptor.snapshot",
                    SnapshotAt::Start => "preemptor.snapshot=start",
                }
            ),
        ),
        vm: VmConfig {
            vcpus: g.vcpus,
            mem_mib: g.memory,
        },
        timeout: Duration::from_secs(g.timeout),
        // A run ends with the first complete kernel report: what follows
        // (the panic, a second register dump) is ~0.2 s of emulated printk.
        console: ConsoleConfig {
            end_on: crate::report::REPORT_END
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ..Default::default()
        },
        guest_seed: 0,
        gdb: None,
        preempt: None,
        end_when_settled: true,
    };
    let p = Prepared {
        scenario,
        kernel_name: kernel.to_string(),
        variant_expect,
        inject,
        snapshot_at,
        profile,
        boot,
        symbols,
        use_snapshot,
        snapshot_file: None,
        verify_restore: false,
        snapshot: Default::default(),
        freeze: None,
        preempt: None,
    };
    p.engine(0)?; // validate triggers against this kernel before any boot
    Ok(p)
}

impl Prepared {
    /// The kernel's symbols (None without a vmlinux).
    /// What each run boots (kernel, initramfs, command line, machine): for
    /// benchmarks that boot the same guest elsewhere.
    pub fn boot_config(&self) -> &BootConfig {
        &self.boot
    }

    pub fn symbols(&self) -> Option<&Symbols> {
        self.symbols.as_ref()
    }

    /// The kernel image this runs on.
    pub fn kernel(&self) -> &Kernel {
        &self.boot.kernel
    }

    /// The run's engine: the scenario's triggers with injection; with
    /// random preemption alone, an engine without triggers that records it.
    fn engine(&self, seed: u64) -> Result<Option<Arc<Engine>>, Error> {
        self.engine_with(seed, &self.scenario.triggers, &self.scenario.goal)
    }

    /// The engine for these triggers and goal (the scenario's, or a
    /// variation of them: sweep, explore).
    fn engine_with(
        &self,
        seed: u64,
        specs: &[TriggerSpec],
        goal: &Goal,
    ) -> Result<Option<Arc<Engine>>, Error> {
        let triggers = self.inject && !specs.is_empty();
        let wanted = triggers || self.preempt.is_some();
        let Some(syms) = self.symbols.as_ref().filter(|_| wanted) else {
            return Ok(None);
        };
        let s = &self.scenario;
        let cfg = EngineConfig {
            vcpus: s.guest.vcpus,
            seed,
            hw_slots: 4,
            goal: if triggers {
                goal.sequence.clone()
            } else {
                vec![]
            },
            disarm_on_goal: goal.disarm_on_goal,
            freeze: self.freeze.clone(),
        };
        let specs = if triggers { specs.to_vec() } else { vec![] };
        Engine::new(specs, syms, cfg)
            .map(|e| Some(Arc::new(e)))
            .map_err(|e| {
                let name = match &e {
                    crate::stall::engine::Error::Site(n, ..)
                    | crate::stall::engine::Error::Vcpu(n, ..)
                    | crate::stall::engine::Error::UnknownTrigger(n, ..)
                    | crate::stall::engine::Error::UnknownVar(n, ..)
                    | crate::stall::engine::Error::Invalid(n, ..)
                    | crate::stall::engine::Error::DuplicateName(n) => Some(n.clone()),
                    _ => None,
                };
                match name {
                    Some(n) => s.error_at_trigger(&n, e.to_string()).into(),
                    None => s.error_at_key("[[trigger]]", e.to_string()).into(),
                }
            })
    }

    /// The snapshot of this guest, taken by the first call (one boot).
    pub fn snapshot(&self) -> Result<&Snapshot, Error> {
        self.restorer().map(|r| &*r.snapshot)
    }

    /// Use the snapshot in `path` if there is one (refused unless taken
    /// with this kernel, initramfs, command line and machine), else take
    /// one and keep it there. Implies snapshot mode.
    /// Serve gdb in each run (see `vstate::gdb`); `freeze`: when the engine
    /// freezes the machine for it. Checks a trigger name now.
    pub fn with_gdb(mut self, cfg: GdbConfig, freeze: Option<Freeze>) -> Result<Self, Error> {
        if freeze.is_some() && !self.inject {
            return Err(Error::Other(
                "--gdb-on goal or TRIGGER needs injection (not --no-inject)".into(),
            ));
        }
        self.boot.gdb = Some(cfg);
        // Whoever debugs a crash wants all of its report.
        self.boot.end_when_settled = false;
        self.freeze = freeze;
        self.engine(0)?;
        Ok(self)
    }

    /// Wait for each kernel report's end instead of ending a run where its
    /// title settles.
    pub fn wait_for_full_reports(&mut self) {
        self.boot.end_when_settled = false;
    }

    /// Restore even a single run from the snapshot when it is taken at
    /// the program's ready point: the run then starts where every run of
    /// a series does, with the triggers armed from that point on, while a
    /// cold run has them armed from power-on (set-up code that passes a
    /// site stops there too) and reaches the race with other timing.
    /// Measured 2026-12-06 on kvm_pvm, reverted kernels, cold single runs:
    /// the window was reached in 2 of 4 (futex-pi-exit), 2 of 4
    /// (ipc-msg-expunge), 3 of 4 (ipc-sem-wake), 1 of 3 (tty-tiocspgrp),
    /// against 12 of 12 restored. A program without a ready point gains
    /// nothing (its snapshot is before it starts). (`run --gdb` stays cold:
    /// its user may want the machine from power-on.)
    pub fn snapshot_single_run(&mut self) {
        if self.snapshot_at == SnapshotAt::Ready {
            self.use_snapshot = true;
        }
    }

    pub fn with_snapshot_file(mut self, path: PathBuf) -> Self {
        self.use_snapshot = true;
        self.snapshot_file = Some(path);
        self
    }

    /// Restore from `other`'s snapshot (taken at most once for both): the
    /// same guest with and without injection boots to the same machine.
    /// Breakpoints are set after the restore, so the snapshot has none.
    pub fn share_snapshot(&mut self, other: &Prepared) {
        if self.use_snapshot && other.use_snapshot && self.boot.cmdline == other.boot.cmdline {
            self.snapshot = other.snapshot.clone();
        }
    }

    fn restorer(&self) -> Result<&Restorer, Error> {
        self.snapshot
            .get_or_init(|| {
                self.load_or_take()
                    .map(|s| Restorer::new(Arc::new(s)))
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| Error::Other(e.clone()))
    }

    fn load_or_take(&self) -> Result<Snapshot, Error> {
        let kept = match &self.snapshot_file {
            Some(path) => Some((path, boot::snapshot_key(&self.boot)?)),
            None => None,
        };
        if let Some((path, key)) = &kept {
            if path.exists() {
                let s = file::load(path, key).map_err(|e| Error::Other(e.to_string()))?;
                eprintln!("preemptor: snapshot loaded from {}", path.display());
                return Ok(s);
            }
        }
        // Without a file of the user's: the cache's (`boot::snapcache`).
        // (A key that cannot be made, e.g. the kernel gone, skips the
        // cache: the boot below then says what is wrong.)
        let cached = match kept.is_none() && snapcache::enabled() {
            true => boot::snapshot_key(&self.boot).ok(),
            false => None,
        };
        if let Some(key) = &cached {
            let t = std::time::Instant::now();
            if let Some((s, path)) = snapcache::load(key) {
                eprintln!(
                    "preemptor: snapshot restored from the cache in {:.2} s ({})",
                    t.elapsed().as_secs_f64(),
                    path.display()
                );
                return Ok(s);
            }
        }
        let t = std::time::Instant::now();
        let s = match boot::take_snapshot(&self.boot, &self.profile) {
            Ok(s) => s,
            // The guest died before its snapshot point: on kvm_pvm that is
            // most often the process-start flake (see verdict.rs); once more.
            Err(e) => {
                eprintln!("preemptor: snapshot boot failed ({e}); retrying once");
                boot::take_snapshot(&self.boot, &self.profile)?
            }
        };
        eprintln!(
            "preemptor: snapshot taken {} after {:.1} s of boot",
            match self.snapshot_at {
                SnapshotAt::Ready => "at the program's ready point",
                SnapshotAt::Start => "just before the program started",
            },
            t.elapsed().as_secs_f64()
        );
        if let Some((path, key)) = &kept {
            file::save(path, &s, key).map_err(|e| Error::Other(e.to_string()))?;
            eprintln!("preemptor: snapshot saved to {}", path.display());
        }
        if let Some(key) = &cached {
            if let Some(path) = snapcache::store(key, &s) {
                eprintln!("preemptor: snapshot kept in the cache ({})", path.display());
            }
        }
        Ok(s)
    }

    /// Resolved trigger sites: (name, func+off, address).
    pub fn sites(&self) -> Vec<(String, String, u64)> {
        self.engine(0)
            .ok()
            .flatten()
            .map(|e| e.sites())
            .unwrap_or_default()
    }

    /// What this kernel should do: `--expect`, else the scenario's
    /// expectation for this variant; without injection always clean.
    pub fn expectation(&self, over: Option<Expect>) -> Option<Expect> {
        over.or(if self.inject {
            self.variant_expect
        } else {
            Some(Expect::Clean)
        })
    }

    /// The run's stacks (the engine's, then each vCPU's at a crash's end),
    /// symbolized with the kernel's vmlinux.
    /// With `dwarf` (the run keeps its output: stacks.txt), frames get
    /// file:line and inlined functions; else `func+off` only.
    fn stacks(&self, engine: Option<&Engine>, o: &RunOutput, dwarf: bool) -> Vec<StackDump> {
        let sym = |raw: &RawStack| {
            self.symbols
                .as_ref()
                .map(|s| stack::symbolize(raw, s, dwarf))
                .unwrap_or_default()
        };
        let mut out: Vec<StackDump> = engine
            .map(|e| e.stacks())
            .unwrap_or_default()
            .into_iter()
            .map(|r| StackDump {
                t: r.t,
                vcpu: r.vcpu,
                why: r.why,
                task: r.task,
                user: r.raw.user,
                rip: r.raw.rip,
                frames: sym(&r.raw),
                cost: Some(r.cost),
            })
            .collect();
        for (v, raw) in &o.final_stacks {
            out.push(StackDump {
                t: o.elapsed,
                vcpu: *v,
                why: "the run ended on a kernel report".into(),
                task: None,
                user: raw.user,
                rip: raw.rip,
                frames: sym(raw),
                cost: None,
            });
        }
        out
    }

    /// One run. With `out`, keeps its console log, trace, verdict and diagram there.
    pub fn run_once(
        &self,
        index: usize,
        seed: u64,
        out: Option<&Path>,
    ) -> Result<RunResult, Error> {
        self.run_with(
            index,
            seed,
            out,
            &self.scenario.triggers,
            &self.scenario.goal,
        )
    }

    /// Check triggers (a variation of the scenario's) against this kernel.
    pub fn check_triggers(&self, specs: &[TriggerSpec], goal: &Goal) -> Result<(), Error> {
        self.engine_with(0, specs, goal).map(|_| ())
    }

    /// One run with these triggers and goal instead of the scenario's.
    pub fn run_with(
        &self,
        index: usize,
        seed: u64,
        out: Option<&Path>,
        specs: &[TriggerSpec],
        goal: &Goal,
    ) -> Result<RunResult, Error> {
        let engine = self.engine_with(seed, specs, goal)?;
        let mut cfg = self.boot.clone();
        cfg.guest_seed = seed as u32;
        cfg.preempt = self.preempt.clone().map(|mut p| {
            p.seed = seed;
            p
        });
        // The run's files go to DIR.partial, renamed to DIR once whole: a
        // folder without the suffix is always a finished run's.
        let partial = out.map(partial_dir);
        if let Some(tmp) = &partial {
            let _ = std::fs::remove_dir_all(tmp);
            std::fs::create_dir_all(tmp).map_err(|e| Error::Out(tmp.clone(), e))?;
            cfg.console.log = Some(tmp.join("console.log"));
        }
        let handler = engine.clone().map(|e| e as Arc<dyn DebugHandler>);
        let o = if self.use_snapshot {
            boot::run_from_snapshot(self.restorer()?, &cfg, &self.profile, handler)?
        } else {
            boot::run(&cfg, &self.profile, handler)?
        };
        let v = verdict::verdict(&o, self.symbols.as_ref());
        let restore = match o.restore {
            Some(st) => Some(RestoreInfo {
                pages: st.pages,
                full: st.full,
                copy_ms: st.memory.as_secs_f64() * 1e3,
                restore_ms: st.total.as_secs_f64() * 1e3,
                stale_pages: if self.verify_restore {
                    self.restorer()?
                        .stale_pages()
                        .map_err(|e| Error::Other(e.to_string()))?
                } else {
                    None
                },
            }),
            None => None,
        };
        let goal_reached = engine.as_ref().is_none_or(|e| e.goal_reached());
        // A run whose workload never started (the guest died while booting)
        // says nothing about the scenario's race: inconclusive, whatever the
        // verdict. Seen once in 80 boots on kvm_pvm: init segfaulting on its
        // first TLS access (FS base 0), with or without injection.
        let started = verdict::markers(&o).started;
        let conclusive = started
            && match &v {
                Verdict::Crash { .. } | Verdict::Hang | Verdict::WorkloadFailed { .. } => true,
                Verdict::Clean => goal_reached,
                Verdict::HostError { .. } | Verdict::Interrupted => false,
            };
        let stacks = self.stacks(engine.as_deref(), &o, out.is_some());
        if let Some(e) = &engine {
            for st in &stacks {
                e.trace.insert(Event {
                    t_us: st.t.as_micros() as u64,
                    vcpu: st.vcpu,
                    kind: EventKind::Stack,
                    trigger: st.why.clone(),
                    detail: st.summary(),
                    dur_us: None,
                });
            }
        }
        let events = engine
            .as_ref()
            .map(|e| e.trace.events())
            .unwrap_or_default();
        let diagram = trace::diagram(&events, cfg.vm.vcpus);
        let report = match v {
            Verdict::Crash { .. } => {
                crate::report::classify(&o.console.text()).map(|r| excerpt(&r.text))
            }
            _ => None,
        };
        let mut r = RunResult {
            index,
            seed,
            verdict: v,
            goal_reached,
            conclusive,
            workload_started: started,
            seconds: o.elapsed.as_secs_f64(),
            fired: engine.as_ref().map(|e| e.fired()).unwrap_or_default(),
            holds: engine.as_ref().map(|e| e.holds()).unwrap_or_default(),
            changed: engine.as_ref().map(|e| e.changed()).unwrap_or_default(),
            restore,
            inspected: o.inspected.clone(),
            report,
            out_error: None,
            events,
            diagram,
        };
        if let (Some(dir), Some(tmp)) = (out, &partial) {
            let files = [
                (
                    "trace.jsonl",
                    engine.as_ref().map(|e| e.trace.to_json_lines()),
                ),
                // The same story for Perfetto and chrome://tracing.
                (
                    "trace.json",
                    engine.as_ref().map(|_| {
                        let end = crate::stall::chrome::End {
                            t_us: (r.seconds * 1e6) as u64,
                            crash: match &r.verdict {
                                Verdict::Crash { title, .. } => Some(title.clone()),
                                _ => None,
                            },
                        };
                        let name = format!("{} on {}", self.scenario.name, self.kernel_name);
                        crate::stall::chrome::chrome_trace(
                            &r.events,
                            self.scenario.guest.vcpus,
                            &name,
                            &end,
                        )
                        .to_string()
                    }),
                ),
                (
                    "verdict.json",
                    Some(serde_json::to_string_pretty(&r).unwrap_or_default()),
                ),
                ("diagram.txt", Some(r.diagram.clone())),
                (
                    "stacks.txt",
                    (!stacks.is_empty()).then(|| stacks.iter().map(|s| s.to_string()).collect()),
                ),
            ];
            if let Err(e) = keep_run_files(&o.console, tmp, dir, &files) {
                // Nothing half-written stays behind; the run's result does.
                let _ = std::fs::remove_dir_all(tmp);
                r.out_error = Some(format!("{}: {e}", dir.display()));
            }
        }
        Ok(r)
    }
}

/// A symbolized stack of one vCPU at a moment of the run.
pub struct StackDump {
    pub t: Duration,
    pub vcpu: usize,
    pub why: String,
    pub task: Option<String>,
    pub user: bool,
    pub rip: u64,
    pub frames: Vec<Frame>,
    /// What taking it cost the vCPU (None: taken after the run).
    pub cost: Option<Duration>,
}

impl StackDump {
    /// The frames as `f1 < f2 < ...` (innermost first), for the trace.
    fn summary(&self) -> String {
        if self.user {
            return format!("user mode at {:#x}", self.rip);
        }
        if self.frames.is_empty() {
            return format!("{:#x} (no symbols)", self.rip);
        }
        self.frames
            .iter()
            .map(|f| f.func.clone())
            .collect::<Vec<_>>()
            .join(" < ")
    }
}

impl std::fmt::Display for StackDump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:.3} ms  vCPU {}  {}  ({}{})",
            self.t.as_secs_f64() * 1e3,
            self.vcpu,
            self.task.as_deref().unwrap_or("?"),
            self.why,
            match self.cost {
                Some(c) => format!("; walk {} us", c.as_micros()),
                None => String::new(),
            }
        )?;
        if self.user {
            writeln!(f, "  user mode at {:#x}", self.rip)?;
        } else if self.frames.is_empty() {
            writeln!(f, "  {:#x} (no symbols)", self.rip)?;
        }
        for (i, fr) in self.frames.iter().enumerate() {
            writeln!(f, "  #{i:<2} {fr}")?;
        }
        writeln!(f)
    }
}

/// The first lines of a kernel report: enough to recognise it in a CI log.
fn excerpt(report: &str) -> String {
    const LINES: usize = 40;
    let mut s: String = report.lines().take(LINES).collect::<Vec<_>>().join("\n");
    if report.lines().count() > LINES {
        s.push_str("\n...");
    }
    s
}

/// Summary of several runs.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub runs: usize,
    pub conclusive: usize,
    pub crashes: usize,
    pub clean: usize,
    pub hangs: usize,
    pub host_errors: usize,
    pub inconclusive: usize,
    /// Crash rate over conclusive runs, with a Wilson 95% interval.
    pub crash_rate: Option<f64>,
    pub crash_rate_ci95: Option<(f64, f64)>,
    pub titles: Vec<(String, usize)>,
    pub mean_seconds: f64,
}

pub fn wilson(k: usize, n: usize) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let (k, n, z) = (k as f64, n as f64, 1.96f64);
    let p = k / n;
    let d = 1.0 + z * z / n;
    let c = (p + z * z / (2.0 * n)) / d;
    let h = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / d;
    Some(((c - h).max(0.0), (c + h).min(1.0)))
}

/// Count one more of `title` in a (title, count) list.
pub fn count_title(titles: &mut Vec<(String, usize)>, title: &str) {
    match titles.iter_mut().find(|(t, _)| t == title) {
        Some((_, n)) => *n += 1,
        None => titles.push((title.to_string(), 1)),
    }
}

impl RunResult {
    /// Whether the run says something about the kernel whatever the goal
    /// (the workload started, the host did not fail: sweeps and
    /// explorations count these), and its crash title if it crashed.
    pub fn judged(&self) -> (bool, Option<&str>) {
        let valid = self.workload_started
            && !matches!(
                self.verdict,
                Verdict::HostError { .. } | Verdict::Interrupted
            );
        let crash = match &self.verdict {
            Verdict::Crash { title, .. } if valid => Some(title.as_str()),
            _ => None,
        };
        (valid, crash)
    }
}

pub fn summarize(rs: &[RunResult]) -> Summary {
    let conclusive: Vec<&RunResult> = rs.iter().filter(|r| r.conclusive).collect();
    let crashes = conclusive
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Crash { .. }))
        .count();
    let mut titles: Vec<(String, usize)> = Vec::new();
    for r in rs {
        if let Verdict::Crash { title, .. } = &r.verdict {
            count_title(&mut titles, title);
        }
    }
    titles.sort_by_key(|t| std::cmp::Reverse(t.1));
    let n = conclusive.len();
    Summary {
        runs: rs.len(),
        conclusive: n,
        crashes,
        clean: rs.iter().filter(|r| r.verdict == Verdict::Clean).count(),
        hangs: rs.iter().filter(|r| r.verdict == Verdict::Hang).count(),
        host_errors: rs
            .iter()
            .filter(|r| matches!(r.verdict, Verdict::HostError { .. }))
            .count(),
        inconclusive: rs.len() - n,
        crash_rate: (n > 0).then(|| crashes as f64 / n as f64),
        crash_rate_ci95: wilson(crashes, n),
        titles,
        mean_seconds: if rs.is_empty() {
            0.0
        } else {
            rs.iter().map(|r| r.seconds).sum::<f64>() / rs.len() as f64
        },
    }
}

/// Whether the runs are as they should be: they meet the expectation if
/// there is one; without one, every run was clean.
pub fn holds(rs: &[RunResult], expect: Option<Expect>) -> bool {
    match expect {
        Some(e) => meets(rs, e),
        None => rs.iter().all(|r| verdict_matches(r, None)),
    }
}

/// Whether one run's verdict is the expected one (nothing expected: clean).
pub fn verdict_matches(r: &RunResult, expect: Option<Expect>) -> bool {
    match expect {
        Some(Expect::Crash) => matches!(r.verdict, Verdict::Crash { .. }),
        Some(Expect::Clean) | None => r.verdict == Verdict::Clean,
    }
}

/// Whether the runs meet the expectation: every conclusive run matches it
/// and at least 90% of runs were conclusive.
pub fn meets(rs: &[RunResult], expect: Expect) -> bool {
    let s = summarize(rs);
    let all_match = rs
        .iter()
        .filter(|r| r.conclusive)
        .all(|r| verdict_matches(r, Some(expect)));
    s.runs > 0 && all_match && s.conclusive * 10 >= s.runs * 9
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(v: Verdict, conclusive: bool) -> RunResult {
        RunResult {
            index: 0,
            seed: 1,
            verdict: v,
            goal_reached: conclusive,
            conclusive,
            workload_started: true,
            seconds: 1.0,
            fired: vec![],
            holds: vec![],
            changed: vec![],
            restore: None,
            inspected: None,
            report: None,
            out_error: None,
            events: vec![],
            diagram: String::new(),
        }
    }

    /// The README's exit status, per expectation (a variant's, `--expect`'s,
    /// or none, as with a kernel path) and outcome: 0 iff this holds.
    #[test]
    fn exit_status_table() {
        let crash = || Verdict::Crash {
            title: "t".into(),
            crash_type: "BUG".into(),
            corrupted: false,
            raw_title: None,
        };
        let clean = || Verdict::Clean;
        let failed = || Verdict::WorkloadFailed { status: 1 };
        use Expect::*;
        let table: Vec<(Option<Expect>, Vec<RunResult>, bool)> = vec![
            (Some(Crash), vec![result(crash(), true)], true),
            (Some(Crash), vec![result(clean(), true)], false),
            (Some(Clean), vec![result(clean(), true)], true),
            (Some(Clean), vec![result(crash(), true)], false),
            // Inconclusive runs (goal not reached) never count as a pass.
            (Some(Clean), vec![result(clean(), false)], false),
            (
                Some(Crash),
                vec![result(crash(), true), result(clean(), false)],
                false,
            ),
            // No expectation (a kernel path without --expect): clean only.
            (None, vec![result(clean(), true)], true),
            (None, vec![result(crash(), true)], false),
            (None, vec![result(failed(), true)], false),
            (None, vec![result(Verdict::Hang, true)], false),
            (None, vec![], true),
            (Some(Crash), vec![], false),
        ];
        for (i, (expect, rs, ok)) in table.iter().enumerate() {
            assert_eq!(holds(rs, *expect), *ok, "row {i}: {expect:?}");
        }
    }

    #[test]
    fn wilson_interval() {
        let (lo, hi) = wilson(20, 20).unwrap();
        assert!(lo > 0.83 && lo < 0.85 && hi == 1.0, "{lo} {hi}");
        let (lo, hi) = wilson(0, 20).unwrap();
        assert!(lo == 0.0 && hi > 0.16 && hi < 0.17, "{lo} {hi}");
        assert!(wilson(0, 0).is_none());
    }
}
