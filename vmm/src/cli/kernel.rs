//! `preemptor kernel build`: build a scenario's kernels (or the base) and
//! print where they are, without running anything.
use super::UsageError;
use crate::boot::artifacts::{self, Kernel, KernelSpec};
use crate::scenario::{runner, Scenario};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct KernelArgs {
    #[command(subcommand)]
    pub what: KernelWhat,
}

#[derive(clap::Subcommand)]
pub enum KernelWhat {
    /// Build the kernel variants of a scenario (default: all), or the base
    /// kernel without one; print "VARIANT DIR" per kernel.
    Build {
        /// Scenario folder or TOML file.
        scenario: Option<PathBuf>,
        /// Only this variant (repeatable).
        #[arg(long)]
        variant: Vec<String>,
    },
    /// Can this kernel run scenarios here? Reads its config (beside it) and
    /// symbols; prints what works, what does not, and the option to change.
    /// Exit 0 usable, 1 not, 2 not a kernel.
    Check {
        /// `base`, a path to a vmlinux/bzImage, or with --scenario a variant.
        kernel: String,
        #[arg(long)]
        scenario: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

/// `--kernel` of `boot`/`symbols`: a variant of `scenario` when one is
/// given, else `base` or a path.
pub fn resolve(kernel: &str, scenario: Option<&Path>) -> Result<Kernel, UsageError> {
    match scenario {
        Some(s) => Ok(runner::resolve_kernel(&Scenario::load(s)?, kernel, true)?.0),
        None => Ok(artifacts::resolve_kernel(kernel)?),
    }
}

fn check(kernel: &str, scenario: Option<&Path>, json: bool) -> Result<i32, UsageError> {
    use crate::boot::check::Status;
    let k = resolve(kernel, scenario)?;
    let rep = crate::boot::check::check(&k, &crate::host::HostProfile::probe(), None);
    if json {
        let j = serde_json::json!({"usable": rep.usable(), "report": rep});
        println!("{j}");
    } else {
        println!(
            "kernel {} (config: {})",
            rep.kernel.display(),
            rep.config
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "none found".into())
        );
        for c in &rep.checks {
            let s = match c.status {
                Status::Ok => "ok",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
                Status::Unknown => "?",
            };
            println!("  {s:<5} {:<18} {}", c.what, c.detail);
        }
        println!(
            "{}",
            if rep.usable() {
                "usable here"
            } else {
                "NOT usable here"
            }
        );
    }
    Ok(if rep.usable() { 0 } else { 1 })
}

pub fn run(a: KernelArgs) -> Result<i32, UsageError> {
    let (scenario, variant) = match a.what {
        KernelWhat::Check {
            kernel,
            scenario,
            json,
        } => return check(&kernel, scenario.as_deref(), json),
        KernelWhat::Build { scenario, variant } => (scenario, variant),
    };
    let Some(path) = scenario else {
        let dir = KernelSpec::base(artifacts::DEFAULT_BASE).dir(true)?;
        println!("base {}", dir.display());
        return Ok(0);
    };
    let scn = Scenario::load(&path)?;
    let all = scn.variants();
    for v in &variant {
        if !all.iter().any(|(n, _)| n == v) {
            let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
            return Err(UsageError(format!(
                "{}: no kernel variant '{v}' (it has: {})",
                scn.path.display(),
                names.join(", ")
            )));
        }
    }
    for (name, v) in &all {
        if variant.is_empty() || variant.contains(name) {
            let k = runner::variant_kernel(&scn, name, v, true)?;
            let dir = k.path.parent().unwrap_or(Path::new("."));
            println!("{name} {}", dir.display());
        }
    }
    Ok(0)
}
