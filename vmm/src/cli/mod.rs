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
    /// Serve the GDB remote protocol on ADDR: a port (`1234`, on
    /// 127.0.0.1) or HOST:PORT; an address beyond loopback is served with
    /// a warning (whoever reaches it controls the guest). The machine
    /// freezes at --gdb-on and waits for gdb (`target remote ADDR`; one
    /// thread per vCPU). Its time with gdb does not count against the
    /// timeout; `detach` lets the run go on.
    #[arg(long, value_name = "ADDR", value_parser = gdb_addr)]
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

/// Writes `--out`'s page and says where; a failure is told, never fatal:
/// the runs and their files are already written.
fn write_page(page: &crate::view::Page, out: &std::path::Path) {
    match page.write(out) {
        Ok(p) => eprintln!("preemptor: page: {}", p.display()),
        Err(e) => eprintln!("preemptor: --out: {e} (the results already written are kept)"),
    }
}

/// `--gdb`'s address: a bare port listens on loopback only. Warns here,
/// once per invocation, when it listens beyond this machine.
fn gdb_addr(s: &str) -> Result<String, String> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']'), p),
        None => ("127.0.0.1", s),
    };
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    port.parse::<u16>()
        .map_err(|_| format!("{port:?} is not a port (give PORT or HOST:PORT)"))?;
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        eprintln!(
            "preemptor: warning: --gdb {host}:{port} listens beyond this machine: anyone who can reach it controls the guest (memory, registers, breakpoints)"
        );
    }
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// The cache and the `--out` directory, if they exist, must be ours and
/// not writable by anyone.
fn check_dirs(cmd: &Cmd) -> Result<(), String> {
    use crate::boot::artifacts::{cache_dir, check_owned};
    // doctor names the problem with its fix instead.
    if !matches!(cmd, Cmd::Completions(_) | Cmd::Man(_) | Cmd::Doctor(_)) {
        check_owned(&cache_dir(), "the cache directory")?;
    }
    let out = match cmd {
        Cmd::Run(a) => a.out.as_ref(),
        Cmd::Suite(a) => a.out.as_ref(),
        Cmd::Sweep(a) => a.out.as_ref(),
        Cmd::Explore(a) => a.out.as_ref(),
        Cmd::Bisect(a) => a.out.as_ref(),
        Cmd::Demo(a) => a.out.as_ref(),
        _ => None,
    };
    match out {
        Some(o) => check_owned(o, "the --out directory"),
        None => Ok(()),
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
    // Nothing written is writable by others, whatever the caller's umask
    // (build.sh and the compilers inherit it).
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(libc::umask(0o022) | 0o022) };
    if let Err(e) = check_dirs(&cli.cmd) {
        eprintln!("preemptor: {e}");
        return 2;
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

#[cfg(test)]
mod tests {
    #[test]
    fn gdb_listens_on_loopback_unless_told() {
        assert_eq!(super::gdb_addr("1234").unwrap(), "127.0.0.1:1234");
        assert_eq!(super::gdb_addr(":1234").unwrap(), "127.0.0.1:1234");
        assert_eq!(super::gdb_addr("0.0.0.0:9").unwrap(), "0.0.0.0:9");
        assert_eq!(super::gdb_addr("[::1]:9").unwrap(), "[::1]:9");
        assert!(super::gdb_addr("127.0.0.1:x").is_err());
        assert!(super::gdb_addr("99999").is_err());
    }
}
