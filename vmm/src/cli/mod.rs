//! The `preemptor` command line. Exit status: 0 success, 1 the guest
//! crashed / hung / failed, 2 usage or setup error (one line on stderr).
pub mod bench;
pub mod boot;
pub mod demo;
pub mod kernel;
pub mod report;
pub mod run;
pub mod suite;
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
    /// Merge the JSON-lines results of a suite's shards: table, JUnit, status.
    Merge(suite::MergeArgs),
    /// Look up a guest-kernel function or site; disassemble it.
    Symbols(symbols::SymbolsArgs),
    /// Classify kernel console logs (crash or not, syzkaller-style title).
    Report(report::ReportArgs),
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
    let res = match cli.cmd {
        Cmd::Boot(a) => boot::run(a),
        Cmd::Run(a) => run::run(a),
        Cmd::Suite(a) => suite::run(a),
        Cmd::Merge(a) => suite::merge(a),
        Cmd::Demo(a) => demo::run(a),
        Cmd::Kernel(a) => kernel::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Symbols(a) => symbols::run(a),
        Cmd::Report(a) => report::run(a),
    };
    match res {
        Ok(code) => code,
        Err(UsageError(msg)) => {
            eprintln!("preemptor: {msg}");
            2
        }
    }
}
