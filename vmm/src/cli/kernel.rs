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
}

/// `--kernel` of `boot`/`symbols`: a variant of `scenario` when one is
/// given, else `base` or a path.
pub fn resolve(kernel: &str, scenario: Option<&Path>) -> Result<Kernel, UsageError> {
    match scenario {
        Some(s) => Ok(runner::resolve_kernel(&Scenario::load(s)?, kernel, true)?.0),
        None => Ok(artifacts::resolve_kernel(kernel)?),
    }
}

pub fn run(a: KernelArgs) -> Result<i32, UsageError> {
    let KernelWhat::Build { scenario, variant } = a.what;
    let Some(path) = scenario else {
        let dir = KernelSpec::base("debian:6.1").dir(true)?;
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
