//! The `preemptor` command line. Exit status: 0 success, 1 the guest
//! crashed / hung / failed, 2 usage or setup error (one line on stderr).
pub mod bench;
pub mod benchexplore;
pub mod benchjobs;
pub mod bisect;
pub mod boot;
pub mod demo;
pub mod explore;
pub mod install;
pub mod kernel;
pub mod peer;
pub mod plot;
pub mod report;
pub mod run;
pub mod suite;
pub mod sweep;
pub mod symbols;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "preemptor",
    version,
    about = "Stall guest vCPUs at kernel sites to expose races; classify the console"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Boot to a fresh snapshot instead of restoring the one kept in the
    /// cache by an earlier invocation, and keep none
    /// (`PREEMPTOR_NO_SNAPSHOT_CACHE=1` does the same).
    #[arg(long, global = true)]
    no_snapshot_cache: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot a guest kernel and run one workload.
    Boot(boot::BootArgs),
    /// The main job: a scenario on each of its kernels, with and without injection.
    Demo(demo::DemoArgs),
    /// Build guest kernels (a scenario's variants, or the base) and print their paths.
    Kernel(kernel::KernelArgs),
    /// Benchmarks that print figures (boot time against QEMU).
    Bench(bench::BenchArgs),
    /// Run a scenario N times on each of its kernels: verdicts, crash rates, titles.
    Run(run::RunArgs),
    /// Every scenario × kernel × mode: one table, JUnit, JSON lines; shards.
    Suite(suite::SuiteArgs),
    /// Find where stalls make a workload crash: random stall pairs in kernel
    /// functions, adaptive sampling, a ranking, an emitted scenario.
    Explore(explore::ExploreArgs),
    /// Which commit of a kernel's git history made the scenario crash (or,
    /// with --fix, stopped it): a binary search, each commit built
    /// incrementally and run with the scenario's stalls.
    Bisect(bisect::BisectArgs),
    /// Vary one trigger parameter over a range: crash rate per point, plot.
    Sweep(sweep::SweepArgs),
    /// Merge the JSON-lines results of a suite's shards: table, JUnit, status.
    Merge(suite::MergeArgs),
    /// Look up a guest-kernel function or site; disassemble it.
    Symbols(symbols::SymbolsArgs),
    /// Classify kernel console logs (crash or not, syzkaller-style title).
    Report(report::ReportArgs),
    /// Install what preemptor needs on this host (apt packages, asking
    /// first), build the default kernels, install completions and man pages.
    Setup(install::SetupArgs),
    /// Check this host: /dev/kvm, host profile, breakpoints, cache, disk,
    /// packages, kernels, QEMU; one line per check with its fix. Exit 1 if
    /// one fails.
    Doctor(install::DoctorArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(install::CompletionsArgs),
    /// Print the man page (roff), or write one per subcommand with --dir.
    Man(install::ManArgs),
    /// The snapshot cache: list what is kept (kernel, size, last use), or clear it.
    Cache(install::CacheArgs),
}

/// The clap definition, for completions and man pages.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// `--gdb ADDR --gdb-on WHEN`, shared by `boot` and `run`.
#[derive(clap::Args, Clone, Default)]
pub struct GdbArgs {
    /// Serve the GDB remote protocol on ADDR (e.g. 127.0.0.1:1234): the
    /// machine freezes at --gdb-on and waits for gdb (`target remote ADDR`;
    /// one thread per vCPU). Its time with gdb does not count against the
    /// timeout; `detach` lets the run go on.
    #[arg(long, value_name = "ADDR")]
    pub gdb: Option<String>,
    /// When to freeze for gdb: `start` (before the first instruction),
    /// `crash` (a kernel report's first line), `goal` (the interleaving
    /// goal), or a trigger's name (when it stops its vCPU).
    #[arg(long, value_name = "WHEN", default_value = "crash", requires = "gdb")]
    pub gdb_on: String,
}

impl GdbArgs {
    /// The VMM's part and the engine's part of the request.
    pub fn split(&self) -> Option<(crate::vstate::GdbConfig, Option<crate::stall::Freeze>)> {
        let addr = self.gdb.clone()?;
        let mut cfg = crate::vstate::GdbConfig {
            addr,
            ..Default::default()
        };
        let freeze = match self.gdb_on.as_str() {
            "start" => {
                cfg.on_start = true;
                None
            }
            "crash" => {
                cfg.on_crash = true;
                None
            }
            "goal" => Some(crate::stall::Freeze::Goal),
            t => Some(crate::stall::Freeze::Trigger(t.to_string())),
        };
        Some((cfg, freeze))
    }
}

/// A failure that is the user's or the setup's, not the guest's: exit 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl<E: std::fmt::Display> From<E> for UsageError {
    fn from(e: E) -> Self {
        UsageError(e.to_string())
    }
}

pub fn main() -> i32 {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("PREEMPTOR_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    if cli.no_snapshot_cache {
        crate::boot::snapcache::disable();
    }
    let res = match cli.cmd {
        Cmd::Boot(a) => boot::run(a),
        Cmd::Run(a) => run::run(a),
        Cmd::Cache(a) => install::cache(a),
        Cmd::Suite(a) => suite::run(a),
        Cmd::Merge(a) => suite::merge(a),
        Cmd::Sweep(a) => sweep::run(a),
        Cmd::Explore(a) => explore::run(a),
        Cmd::Bisect(a) => bisect::run(a),
        Cmd::Demo(a) => demo::run(a),
        Cmd::Kernel(a) => kernel::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Symbols(a) => symbols::run(a),
        Cmd::Report(a) => report::run(a),
        Cmd::Setup(a) => install::setup(a),
        Cmd::Doctor(a) => install::doctor(a),
        Cmd::Completions(a) => install::completions(a),
        Cmd::Man(a) => install::man(a),
    };
    match res {
        Ok(code) => code,
        Err(UsageError(msg)) => {
            eprintln!("preemptor: {msg}");
            2
        }
    }
}
