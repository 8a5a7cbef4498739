//! Dispatch on the name this binary was started as: `init`, or a workload.
fn main() {
    let argv0 = std::env::args().next().unwrap_or_default();
    let name = argv0.rsplit('/').next().unwrap_or("");
    if name == "init" {
        return preemptor_guest::init::main();
    }
    // guest/build.sh runs this static binary on the host once to write the
    // list of workloads the VMM may start.
    if std::env::args().nth(1).as_deref() == Some("--list") {
        for (n, _) in preemptor_guest::WORKLOADS {
            println!("{n}");
        }
        return;
    }
    match preemptor_guest::WORKLOADS.iter().find(|(n, _)| *n == name) {
        Some((_, run)) => run(),
        None => {
            eprintln!("preemptor-guest: unknown program name '{name}'");
            std::process::exit(127);
        }
    }
}
