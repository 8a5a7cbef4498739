//! `preemptor suite` and `merge`: the table, JUnit and JSON-lines results,
//! shards that merge into what one host produces, and a killed suite that
//! keeps every finished run.
use preemptor_e2e::*;
use std::path::Path;

const SCN: &str = "scenarios/do-exit-race";

fn suite(extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "suite",
        SCN,
        "--kernel",
        "reverted",
        "--kernel",
        "fixed",
        "--runs",
        "2",
        "--inject-only",
    ];
    args.extend_from_slice(extra);
    preemptor(&args)
}

fn lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", p.display())))
        .collect()
}

/// (kernel, seed, verdict) of every run record, sorted by run number.
fn seeds(recs: &[serde_json::Value]) -> Vec<(String, u64, String)> {
    let mut runs: Vec<&serde_json::Value> = recs.iter().filter(|r| r["type"] == "run").collect();
    runs.sort_by_key(|r| r["number"].as_u64());
    runs.iter()
        .map(|r| {
            (
                r["kernel"].as_str().unwrap().to_string(),
                r["run"]["seed"].as_u64().unwrap(),
                r["run"]["verdict"]["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The table's rows without the timing column.
fn table(o: &std::process::Output) -> Vec<String> {
    stdout(o)
        .lines()
        .filter(|l| l.starts_with("do-exit-race "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // scenario kernel mode crashes/conclusive s/run expected titles...
            let mut keep: Vec<&str> = f[..f.len().min(4)].to_vec();
            keep.extend(f.iter().skip(5));
            keep.join(" ")
        })
        .collect()
}

#[test]
fn suite_table_junit_json_and_shards_that_merge() {
    require_kvm();
    let d = tmp("suite");
    let (json, junit) = (d.join("all.jsonl"), d.join("all.xml"));
    let o = suite(&[
        "--json",
        json.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = table(&o);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0].contains("reverted injection 2/2 holds"), "{rows:?}");
    assert!(rows[1].contains("fixed injection 0/2 holds"), "{rows:?}");

    // JSON lines: the job, then one record per run, seeds as `run` gives them.
    let recs = lines(&json);
    assert_eq!(recs[0]["type"], "job");
    let all = seeds(&recs);
    assert_eq!(
        all.iter()
            .map(|(k, s, _)| (k.as_str(), *s))
            .collect::<Vec<_>>(),
        [("reverted", 1), ("reverted", 2), ("fixed", 1), ("fixed", 2)]
    );

    // JUnit, read back with an XML parser: a suite per scenario, a case per
    // kernel × mode, both passing.
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("JUnit is XML");
    let suites: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    assert_eq!(suites.len(), 1);
    assert_eq!(suites[0].attribute("name"), Some("do-exit-race"));
    let cases: Vec<_> = suites[0]
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    let names: Vec<_> = cases.iter().filter_map(|c| c.attribute("name")).collect();
    assert_eq!(names, ["reverted / injection", "fixed / injection"]);
    assert!(!xml.contains("<failure"), "{xml}");

    // Three shards, one after the other, merged: the same runs and table.
    let mut files = Vec::new();
    for i in 1..=3 {
        let f = d.join(format!("shard{i}.jsonl"));
        let o = suite(&["--shard", &format!("{i}/3"), "--json", f.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        files.push(f.to_str().unwrap().to_string());
    }
    let mjunit = d.join("merged.xml");
    let mut args = vec!["merge"];
    args.extend(files.iter().map(|s| s.as_str()));
    args.extend(["--junit", mjunit.to_str().unwrap()]);
    let m = preemptor(&args);
    assert_eq!(m.status.code(), Some(0), "{}", stderr(&m));
    assert_eq!(table(&m), rows);
    let merged: Vec<serde_json::Value> = files.iter().flat_map(|f| lines(Path::new(f))).collect();
    assert_eq!(seeds(&merged), all);
    let mxml = std::fs::read_to_string(&mjunit).unwrap();
    roxmltree::Document::parse(&mxml).expect("merged JUnit is XML");
    assert_eq!(mxml.matches("<testcase").count(), 2);

    // Two of three shards: the merge says what is missing, and fails.
    let m = preemptor(&["merge", &files[0], &files[2]]);
    assert_eq!(m.status.code(), Some(1));
    assert!(
        stderr(&m).contains("incomplete: 1 of the job's 4 runs"),
        "{}",
        stderr(&m)
    );

    // A shard of another job (other runs) is refused in one line.
    let other = d.join("other.jsonl");
    let o = preemptor(&[
        "suite",
        SCN,
        "--kernel",
        "reverted",
        "--runs",
        "1",
        "--inject-only",
        "--json",
        other.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m = preemptor(&["merge", &files[0], other.to_str().unwrap()]);
    assert!(
        usage_error(&m).contains("a shard of another job"),
        "{}",
        stderr(&m)
    );
}

/// A scenario whose expectation is wrong fails its testcase, and the
/// failure carries the mismatch and the first crash's report.
#[test]
fn junit_failure_says_why() {
    require_kvm();
    let d = tmp("suite-fail");
    let scn = d.join("wrong-expectation");
    std::fs::create_dir_all(&scn).unwrap();
    let src = root().join(SCN);
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, scn.join(f.file_name().unwrap())).unwrap();
    }
    let toml = std::fs::read_to_string(scn.join("scenario.toml")).unwrap();
    let toml = toml
        .replacen("name = \"do-exit-race\"", "name = \"wrong-expectation\"", 1)
        .replacen("expect = \"crash\"", "expect = \"clean\"", 1);
    std::fs::write(scn.join("scenario.toml"), toml).unwrap();
    let junit = d.join("j.xml");
    let o = preemptor(&[
        "suite",
        scn.to_str().unwrap(),
        "--kernel",
        "reverted",
        "--runs",
        "1",
        "--inject-only",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("JUnit is XML");
    let f = doc
        .descendants()
        .find(|n| n.has_tag_name("failure"))
        .unwrap_or_else(|| panic!("a failure: {xml}"));
    let msg = f.attribute("message").unwrap_or_default();
    assert!(msg.contains("expected no crash: 1 of 1"), "{msg}");
    let text = f.text().unwrap_or_default();
    assert!(text.contains("kernel BUG in do_task_dead"), "{text}");
    assert!(text.contains("kernel BUG at kernel/sched/core.c"), "{text}");
}

/// SIGKILL after the second run: the JSON lines hold both runs whole.
#[test]
fn killed_suite_keeps_finished_runs() {
    require_kvm();
    let d = tmp("suite-kill");
    let json = d.join("r.jsonl");
    let mut child = std::process::Command::new(bin())
        .args([
            "suite",
            SCN,
            "--kernel",
            "reverted",
            "--runs",
            "20",
            "--inject-only",
            "--json",
        ])
        .arg(&json)
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let runs_done = || {
        std::fs::read_to_string(&json)
            .map(|s| s.matches("\"type\":\"run\"").count())
            .unwrap_or(0)
    };
    while runs_done() < 2 {
        assert!(t0.elapsed().as_secs() < 300, "two runs in 5 minutes");
        assert!(child.try_wait().unwrap().is_none(), "the suite ended early");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(text.ends_with('\n'), "no torn line");
    let recs = lines(&json);
    let runs: Vec<_> = recs.iter().filter(|r| r["type"] == "run").collect();
    assert!(runs.len() >= 2, "{}", runs.len());
    assert_eq!(runs[0]["run"]["seed"], 1);
    assert_eq!(runs[1]["run"]["seed"], 2);
    // merge reads it, and says the rest is missing.
    let m = preemptor(&["merge", json.to_str().unwrap()]);
    assert_eq!(m.status.code(), Some(1));
    assert!(stderr(&m).contains("are in no file"), "{}", stderr(&m));
}

/// docs/scale-out.md's manifests are valid YAML and agree with themselves:
/// the shard count in the command is the Job's completions / the matrix's
/// size, and the merge reads what the shards write.
#[test]
fn scale_out_yaml_is_valid() {
    use yaml_rust2::YamlLoader;
    let md = std::fs::read_to_string(root().join("docs/scale-out.md")).unwrap();
    let blocks: Vec<&str> = md
        .split("```yaml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 2, "a Kubernetes Job and a GitHub workflow");

    let job = &YamlLoader::load_from_str(blocks[0]).expect("Job YAML")[0];
    assert_eq!(job["kind"].as_str(), Some("Job"));
    assert_eq!(job["apiVersion"].as_str(), Some("batch/v1"));
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    let n = spec["completions"].as_i64().expect("completions");
    let c = &spec["template"]["spec"]["containers"][0];
    let cmd = c["args"][0].as_str().expect("args");
    assert!(cmd.contains(&format!("--shard-from-env {n}")), "{cmd}");
    assert!(cmd.contains("--json /results/"), "{cmd}");
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert!(
        mounts.contains(&"/results") && mounts.contains(&"/cache"),
        "{mounts:?}"
    );
    assert_eq!(
        spec["template"]["spec"]["restartPolicy"].as_str(),
        Some("Never")
    );

    let wf = &YamlLoader::load_from_str(blocks[1]).expect("workflow YAML")[0];
    let shards = wf["jobs"]["shard"]["strategy"]["matrix"]["shard"]
        .as_vec()
        .expect("matrix")
        .len();
    let steps = wf["jobs"]["shard"]["steps"].as_vec().unwrap();
    let run = steps
        .iter()
        .filter_map(|s| s["run"].as_str())
        .find(|r| r.contains("suite"))
        .expect("a suite step");
    assert!(
        run.contains(&format!("--shard ${{{{ matrix.shard }}}}/{shards}")),
        "{run}"
    );
    assert_eq!(wf["jobs"]["merge"]["needs"].as_str(), Some("shard"));
    let merge = wf["jobs"]["merge"]["steps"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|s| s["run"].as_str())
        .find(|r| r.contains("merge"))
        .expect("a merge step");
    assert!(merge.contains("--junit"), "{merge}");
}
