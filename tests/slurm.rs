//! Slurm job arrays, run for real: `docs/slurm/local-cluster.sh` brings up
//! a one-node cluster from Debian's packages, `docs/slurm/suite.sbatch`
//! runs a 3-task array of a suite (the seed and the tty race),
//! `docs/slurm/merge.sbatch` merges after it (`--dependency=afterok`), and
//! the merged JSON, JUnit and table equal an unsharded run's. Then one task
//! is cancelled mid-run (`scancel JOB_1`): every finished run is kept, the
//! merge names the shard that is missing, and a rerun of that task alone
//! completes the set. Needs root (slurmd) and the packages (test.sh
//! installs them).
use preemptor_e2e::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SCENARIOS: [&str; 2] = ["scenarios/do-exit-race", "scenarios/tty-tiocspgrp"];
const SUITE: [&str; 3] = ["--runs", "2", "--inject-only"];

struct Cluster(PathBuf);

impl Cluster {
    fn up(dir: &Path) -> Cluster {
        let o = sh(Command::new(root().join("docs/slurm/local-cluster.sh"))
            .arg("up")
            .arg(dir));
        assert!(o.status.success(), "the one-node cluster did not come up");
        Cluster(dir.to_path_buf())
    }
    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        let bin_dir = bin().parent().unwrap().to_path_buf();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.env("SLURM_CONF", self.0.join("slurm.conf"))
            .env("PATH", path)
            .current_dir(root());
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(root().join("docs/slurm/local-cluster.sh"))
            .arg("down")
            .arg(&self.0)
            .status();
    }
}

/// `sbatch --parsable ...`: the job id. Job output goes to `out`
/// (`JOB.out`, `JOB_TASK.out`), not the checkout.
fn sbatch(c: &Cluster, out: &Path, args: &[&str]) -> String {
    let pattern = if args.iter().any(|a| a.starts_with("--array")) {
        "%A_%a.out"
    } else {
        "%j.out"
    };
    let o = sh(c
        .cmd("sbatch")
        .arg("--parsable")
        .arg(format!("--output={}/{pattern}", out.display()))
        .args(args));
    assert!(o.status.success(), "sbatch {args:?}");
    stdout(&o).trim().split(';').next().unwrap().to_string()
}

/// Run records by number: (seed, verdict, title).
fn runs_of(file: &Path) -> BTreeMap<u64, (u64, String, String)> {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["type"] == "run")
        .filter_map(|r| {
            let n = r["number"].as_u64()?;
            let run = &r["run"];
            Some((
                n,
                (
                    run["seed"].as_u64().unwrap_or(0),
                    run["verdict"]["verdict"].to_string(),
                    run["verdict"]["title"].to_string(),
                ),
            ))
        })
        .collect()
}

/// The table's rows without the time column.
fn table(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("scenario "))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            // scenario kernel mode crashes/conclusive s/run expected titles...
            let mut keep = w.clone();
            if let Some(i) = w.iter().position(|x| x.contains('/')) {
                keep.remove(i + 1);
            }
            keep.join(" ")
        })
        .collect()
}

/// JUnit test cases: (suite name, case name, failed).
fn junit(file: &Path) -> Vec<(String, String, bool)> {
    let text = std::fs::read_to_string(file).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let mut v: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|n| {
            (
                n.attribute("classname").unwrap_or("").to_string(),
                n.attribute("name").unwrap_or("").to_string(),
                n.children().any(|c| c.has_tag_name("failure")),
            )
        })
        .collect();
    v.sort();
    v
}

/// Waits until `f` holds, for at most `secs`.
fn wait_until(secs: u64, what: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(secs), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_slurm_array_merges_into_the_unsharded_suite() {
    require_kvm();
    let d = tmp("slurm");
    let cluster = Cluster::up(&d.join("cluster"));

    // The unsharded suite, for reference.
    let full = d.join("full");
    std::fs::create_dir_all(&full).unwrap();
    let (fj, fx) = (full.join("suite.jsonl"), full.join("suite.xml"));
    let mut args = vec!["suite"];
    args.extend(SCENARIOS);
    args.extend(SUITE);
    args.extend([
        "--json",
        fj.to_str().unwrap(),
        "--junit",
        fx.to_str().unwrap(),
    ]);
    let o = preemptor(&args);
    assert!(o.status.code().unwrap_or(9) <= 1, "the unsharded suite");
    let full_table = table(&stdout(&o));
    let full_runs = runs_of(&fj);
    assert!(
        !full_table.is_empty() && full_runs.len() >= 8,
        "{full_runs:?}"
    );

    // Three tasks, then the merge after them.
    let res = d.join("array");
    let res_s = res.to_str().unwrap().to_string();
    let mut a = vec![
        "--array=0-2",
        "--wait",
        "docs/slurm/suite.sbatch",
        "3",
        &res_s,
    ];
    a.extend(SCENARIOS);
    a.extend(SUITE);
    let job = sbatch(&cluster, &d, &a);
    let dep = format!("--dependency=afterok:{job}");
    let merge = sbatch(
        &cluster,
        &d,
        &[&dep, "--wait", "docs/slurm/merge.sbatch", &res_s],
    );
    let out = std::fs::read_to_string(d.join(format!("{merge}.out"))).unwrap_or_default();
    eprintln!("merge job output:\n{out}");
    assert_eq!(table(&out), full_table, "the merged table");
    assert_eq!(runs_of(&res.join("merged.jsonl")), full_runs, "merged runs");
    assert_eq!(junit(&res.join("suite.xml")), junit(&fx), "merged JUnit");

    // Task 1 cancelled once it has finished a run: the rest is kept, the
    // merge names shard 2/3, a rerun of task 1 alone completes the set.
    let res2 = d.join("cancelled");
    let res2_s = res2.to_str().unwrap().to_string();
    let mut a = vec!["--array=0-2", "docs/slurm/suite.sbatch", "3", &res2_s];
    a.extend(SCENARIOS);
    a.extend(SUITE);
    let job = sbatch(&cluster, &d, &a);
    let shard1 = res2.join("shard-1.jsonl");
    wait_until(600, "task 1 finishing a run", || {
        std::fs::read_to_string(&shard1).is_ok_and(|t| t.lines().count() >= 2)
    });
    let kept = runs_of(&shard1);
    assert!(sh(cluster.cmd("scancel").arg(format!("{job}_1")))
        .status
        .success());
    wait_until(900, "the array to end", || {
        let o = cluster
            .cmd("squeue")
            .args(["-h", "-j", &job])
            .output()
            .unwrap();
        o.stdout.is_empty()
    });
    // Nothing finished is lost: the cancelled task's runs are still there
    // and whole, and the other shards are complete.
    let after = runs_of(&shard1);
    assert!(
        kept.iter().all(|(n, r)| after.get(n) == Some(r)),
        "lost runs"
    );
    let files = |dir: &Path| -> Vec<String> {
        (0..3)
            .map(|i| {
                dir.join(format!("shard-{i}.jsonl"))
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    let mut m = vec!["merge".to_string()];
    m.extend(files(&res2));
    let margs: Vec<&str> = m.iter().map(String::as_str).collect();
    let o = preemptor(&margs);
    assert_eq!(o.status.code(), Some(1), "an incomplete set");
    let err = stderr(&o);
    assert!(err.contains("missing from shard 2/3"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let mut a = vec![
        "--array=1",
        "--wait",
        "docs/slurm/suite.sbatch",
        "3",
        &res2_s,
    ];
    a.extend(SCENARIOS);
    a.extend(SUITE);
    sbatch(&cluster, &d, &a);
    let xml = res2.join("merged.xml");
    let mut m2 = margs.clone();
    m2.extend(["--junit", xml.to_str().unwrap()]);
    let o = preemptor(&m2);
    assert!(o.status.code().unwrap_or(9) <= 1, "{}", stderr(&o));
    assert!(!stderr(&o).contains("incomplete"), "{}", stderr(&o));
    assert_eq!(table(&stdout(&o)), full_table, "the completed table");
    assert_eq!(junit(&xml), junit(&fx), "the completed JUnit");
    drop(cluster);
}
