//! Throughput: snapshots kept in the cache across invocations, and many
//! VMs at once from one snapshot (`--jobs`).
use preemptor_e2e::*;

const SCN: &str = "scenarios/do-exit-race";

/// The cache file the last command used: `cache list` puts the most
/// recently used first.
fn last_used_snapshot() -> std::path::PathBuf {
    let o = preemptor(&["cache", "list"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    let name = out
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().find(|w| w.ends_with(".snap")))
        .unwrap_or_else(|| panic!("a kept snapshot in: {out}"))
        .to_string();
    let dir = out
        .lines()
        .next()
        .and_then(|l| l.split(" in ").nth(1))
        .and_then(|r| r.split(" (cap").next())
        .unwrap_or_else(|| panic!("the cache folder in: {out}"));
    std::path::Path::new(dir).join(name)
}

fn verdicts(o: &std::process::Output) -> Vec<(u64, String)> {
    let j = json(o);
    runs(&j)
        .iter()
        .map(|r| {
            (
                r["seed"].as_u64().unwrap(),
                r["verdict"]["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// One invocation keeps its snapshot, the next restores it instead of
/// booting; a damaged one is discarded in one line and retaken; with two
/// VMs at once the runs have the seeds, order and verdicts of one at a
/// time.
#[test]
fn snapshots_persist_and_jobs_keep_the_results() {
    require_kvm();
    let one = |extra: &[&str]| {
        let mut args = vec!["run", SCN, "--kernel", "reverted", "--json"];
        args.extend_from_slice(extra);
        preemptor(&args)
    };
    // Taken or restored: either way it is in the cache afterwards.
    let o = one(&["--runs", "1"]);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
    let snap = last_used_snapshot();
    assert!(snap.exists(), "{}", snap.display());

    // Cut short: the next invocation says so, boots, and keeps a new one.
    let len = std::fs::metadata(&snap).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&snap).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let o = one(&["--runs", "1"]);
    let e = stderr(&o);
    assert!(e.contains("discarding the cached snapshot"), "{e}");
    assert!(e.contains("snapshot kept in the cache"), "{e}");
    // Retaken whole (its size follows the boot: not compared).
    assert!(std::fs::metadata(&snap).unwrap().len() > len / 2);

    // Restored, not booted.
    let o = one(&["--runs", "1"]);
    let e = stderr(&o);
    assert!(e.contains("snapshot restored from the cache"), "{e}");
    assert!(!e.contains("of boot"), "{e}");

    // Two VMs at once: same seeds, same order, same verdicts (the
    // reverted kernel crashes every run with its scenario's triggers).
    let o = one(&["--runs", "4", "--jobs", "2"]);
    let par = verdicts(&o);
    let o = one(&["--runs", "4", "--jobs", "1"]);
    let ser = verdicts(&o);
    assert_eq!(
        par.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4],
        "seeds in run order"
    );
    for rs in [&par, &ser] {
        for (seed, v) in rs.iter() {
            assert!(
                v == "crash" || v == "inconclusive",
                "seed {seed}: {v} ({rs:?})"
            );
        }
    }
    let crashes = |rs: &Vec<(u64, String)>| rs.iter().filter(|r| r.1 == "crash").count();
    assert!(crashes(&par) >= 3 && crashes(&ser) >= 3, "{par:?} {ser:?}");
}
