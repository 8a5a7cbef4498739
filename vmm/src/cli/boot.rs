//! `preemptor boot`: one guest, one workload, one verdict.
use super::UsageError;
use crate::boot::{self, artifacts, verdict, BootConfig};
use crate::debug::symbols::Symbols;
use crate::devices::ConsoleConfig;
use crate::host::HostProfile;
use crate::stall::trace::diagram;
use crate::stall::{Engine, EngineConfig, EventKind, TriggerSpec};
use crate::vstate::VmConfig;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Clone)]
pub struct BootArgs {
    /// `base` (built if missing), a path to a vmlinux or bzImage, or with
    /// --scenario one of its kernel variants.
    #[arg(long, default_value = "base")]
    pub kernel: String,
    /// Resolve --kernel as a kernel variant of this scenario.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Built-in workload of the guest binary and its key=value arguments.
    #[arg(long, num_args = 1.., value_name = "NAME [ARGS]", default_values = ["hello"])]
    pub workload: Vec<String>,
    /// Run this program instead: C source (compiled static) or a static
    /// x86_64 ELF, and its arguments (the rest of the command line).
    #[arg(long, num_args = 1.., value_name = "FILE [ARGS]", allow_hyphen_values = true, conflicts_with = "workload")]
    pub program: Vec<String>,
    #[arg(long, default_value_t = 2)]
    pub vcpus: usize,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 128)]
    pub memory: u64,
    /// Extra guest kernel command line.
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Wall-clock limit in seconds (verdict: hang).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Copy the guest console to stdout.
    #[arg(long)]
    pub console: bool,
    /// Console log file (host timestamp on every line).
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Print the verdict as JSON.
    #[arg(long)]
    pub json: bool,
    /// Breakpoint trigger (repeatable):
    /// SITE[,vcpu=N][,nth=K|every=K|from=K][,prob=P][,stall=DUR|until=NAME,timeout=DUR[,after=DUR]]
    /// [,name=X][,comm=S][,pid=N][,REG=VALUE|$VAR][,capture=VAR:REG][,blockirq][,announce]
    #[arg(long = "break", value_name = "SITE[,OPTS]")]
    pub breaks: Vec<String>,
    /// Write the injection trace (JSON lines) here.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Seed for probabilities, random stall durations and the workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub gdb: super::GdbArgs,
    /// Random vCPU descheduling: a profile (light, overcommit, smi-storm)
    /// or `vcpus=0+1,gap=10ms,hold=1ms..6ms`.
    #[arg(long, value_name = "PROFILE|SPEC")]
    pub preempt: Option<crate::vstate::PreemptConfig>,
}

impl BootArgs {
    pub fn config(&self, profile: &HostProfile) -> Result<BootConfig, UsageError> {
        let kernel = super::kernel::resolve(&self.kernel, self.scenario.as_deref())?;
        let payload = match self.program.split_first() {
            Some((file, args)) => artifacts::Payload::program(
                crate::boot::program::Program::load(std::path::Path::new(file))?,
                args,
            ),
            None => {
                let (name, args) = self
                    .workload
                    .split_first()
                    .ok_or(UsageError("--workload needs a name".into()))?;
                artifacts::Payload::workload(name, args)?
            }
        };
        let initramfs = artifacts::build_initramfs(&payload)?;
        Ok(BootConfig {
            kernel,
            initramfs: Arc::new(initramfs),
            cmdline: boot::cmdline(profile, &self.cmdline),
            vm: VmConfig {
                vcpus: self.vcpus,
                mem_mib: self.memory,
            },
            timeout: Duration::from_secs(self.timeout),
            console: ConsoleConfig {
                log: self.log.clone(),
                echo: self.console,
                ..Default::default()
            },
            guest_seed: self.seed as u32,
            gdb: self.gdb.split().map(|g| g.0),
            preempt: self.preempt.clone().map(|mut p| {
                p.seed = self.seed;
                p
            }),
            // A one-off boot shows the whole console.
            end_when_settled: false,
        })
    }
}

/// The stall engine for `--break` triggers, if any. `syms`: the kernel's
/// symbols as loaded (or why they could not be).
pub fn engine(
    cfg: &BootConfig,
    breaks: &[String],
    freeze: Option<crate::stall::Freeze>,
    seed: u64,
    syms: Option<&Result<Symbols, crate::debug::symbols::Error>>,
) -> Result<Option<Arc<Engine>>, UsageError> {
    if breaks.is_empty() && freeze.is_some() {
        return Err(UsageError(
            "--gdb-on goal or TRIGGER needs --break triggers (or a scenario: `run`)".into(),
        ));
    }
    // Random preemption alone: an engine without triggers records it.
    if breaks.is_empty() && cfg.preempt.is_none() {
        return Ok(None);
    }
    let specs = breaks
        .iter()
        .enumerate()
        .map(|(i, b)| TriggerSpec::parse_break(b, i))
        .collect::<Result<Vec<_>, _>>()?;
    let syms = match syms {
        Some(Ok(s)) => s,
        // Preemption runs without symbols too, just unrecorded.
        _ if specs.is_empty() => return Ok(None),
        Some(Err(e)) => return Err(UsageError(e.to_string())),
        None => {
            return Err(UsageError(format!(
                "--break needs the kernel's vmlinux for symbols; none next to {}",
                cfg.kernel.path.display()
            )))
        }
    };
    let ecfg = EngineConfig {
        vcpus: cfg.vm.vcpus,
        seed,
        hw_slots: 4,
        goal: vec![],
        disarm_on_goal: false,
        freeze,
    };
    Ok(Some(Arc::new(Engine::new(specs, syms, ecfg)?)))
}

pub fn run(a: BootArgs) -> Result<i32, UsageError> {
    let profile = HostProfile::probe();
    let cfg = a.config(&profile)?;
    // Loaded once: for the preflight, the breakpoints and the verdict.
    let syms = cfg.kernel.vmlinux.as_ref().map(|v| Symbols::load(v));
    let loaded = syms.as_ref().and_then(|s| s.as_ref().ok());
    crate::scenario::runner::preflight(&cfg.kernel, &profile, loaded)?;
    let freeze = a.gdb.split().and_then(|g| g.1);
    let engine = engine(&cfg, &a.breaks, freeze, a.seed, syms.as_ref())?;
    eprintln!(
        "preemptor: host profile {}; kernel {}",
        profile.name(),
        cfg.kernel.path.display()
    );
    if let Some(e) = &engine {
        for (name, site, addr) in e.sites() {
            eprintln!("preemptor: trigger {name} at {site} ({addr:#x})");
        }
    }
    let handler = engine
        .clone()
        .map(|e| e as Arc<dyn crate::vstate::DebugHandler>);
    let out = boot::run(&cfg, &profile, handler)?;
    let v = verdict::verdict(&out, loaded);
    let m = verdict::markers(&out);
    if let Some(e) = &engine {
        if let Some(p) = &a.trace {
            std::fs::write(p, e.trace.to_json_lines())
                .map_err(|err| UsageError(format!("{}: {err}", p.display())))?;
        }
        let events = e.trace.events();
        if events.iter().any(|e| e.kind != EventKind::Hit) {
            eprint!("{}", diagram(&events, cfg.vm.vcpus));
        }
    }
    if a.json {
        let j = serde_json::json!({"verdict": v, "markers": m, "end": out.end.to_string(), "seconds": out.elapsed.as_secs_f64()});
        println!("{j}");
    } else {
        println!(
            "verdict: {v} (cpus {}, {:.1} s, {}){}",
            m.cpus.map(|c| c.to_string()).unwrap_or("?".into()),
            out.elapsed.as_secs_f64(),
            out.end,
            match &out.inspected {
                Some(w) => format!("; inspected with gdb ({w})"),
                None => String::new(),
            }
        );
    }
    Ok(if v == verdict::Verdict::Clean { 0 } else { 1 })
}
