//! The seed scenario end to end: one injected run per kernel, one baseline.
use preemptor_e2e::*;

const SCN: &str = "scenarios/do-exit-race";

/// One run; its saved console must give its title under `report`.
fn run1(kernel: &str, extra: &[&str]) -> serde_json::Value {
    run1_out(kernel, extra).0
}

/// The same, with the run's --out folder.
fn run1_out(kernel: &str, extra: &[&str]) -> (serde_json::Value, std::path::PathBuf) {
    let out = tmp(&format!("run1-{kernel}-{}", extra.len()).replace('.', "_"));
    let mut args = vec!["run", SCN, "--kernel", kernel, "--runs", "1", "--json"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--out", out.to_str().unwrap()]);
    let j = retry_on_host_flake(kernel, || {
        let _ = std::fs::remove_dir_all(&out);
        let o = preemptor(&args);
        assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
        let j = json(&o);
        let flaked = run_flaked(&j);
        (j, flaked)
    });
    assert_eq!(reports_match_runs(&out), 1);
    (j, out)
}

#[test]
fn full_reports_wait_for_the_end_of_the_oops() {
    require_kvm();
    let (j, out) = run1_out("reverted", &["--full-reports"]);
    let r = &runs(&j)[0];
    assert_eq!(r["verdict"]["title"], "kernel BUG in do_task_dead");
    assert_eq!(r["verdict"]["corrupted"], false);
    let console = std::fs::read_to_string(out.join("reverted-inject/run000/console.log")).unwrap();
    assert!(console.contains("Call Trace:"), "{console}");
    assert!(
        console.contains("run ended: kernel report ended: "),
        "{console}"
    );
}

/// The stacks.txt sections (header line, frames) taken for `why`.
fn stacks_for<'a>(text: &'a str, why: &str) -> Vec<(&'a str, &'a str)> {
    text.split("\n\n")
        .filter_map(|sec| sec.split_once('\n'))
        .filter(|(head, _)| head.contains(why))
        .collect()
}

#[test]
fn reverted_kernel_crashes_in_do_task_dead() {
    require_kvm();
    let (j, out) = run1_out("reverted", &[]);
    let r = &runs(&j)[0];
    assert_eq!(r["goal_reached"], true, "the race window was reached");
    assert_eq!(r["verdict"]["verdict"], "crash");
    assert_eq!(r["verdict"]["title"], "kernel BUG in do_task_dead");
    assert_eq!(r["verdict"]["corrupted"], false);
    assert_eq!(j["ok"], true);
    // The run ended where the title settled, before the call trace.
    let console = std::fs::read_to_string(out.join("reverted-inject/run000/console.log")).unwrap();
    assert!(
        console.contains("run ended: kernel report's title settled at"),
        "{console}"
    );
    assert!(!console.contains("Call Trace:"), "{console}");

    // Both vCPUs' stacks at the goal: the exiter in do_task_dead, the
    // waker stopped in ttwu_do_wakeup called from try_to_wake_up.
    let stacks =
        std::fs::read_to_string(out.join("reverted-inject/run000/stacks.txt")).expect("stacks.txt");
    let goal = stacks_for(&stacks, "goal reached");
    let on = |v: &str| {
        goal.iter()
            .find(|(h, _)| h.contains(&format!("vCPU {v} ")))
            .unwrap_or_else(|| panic!("vCPU {v} at the goal: {stacks}"))
            .1
    };
    assert!(
        on("0").contains("#0  do_task_dead+0x0 (kernel/sched/core.c:"),
        "{stacks}"
    );
    let waker = on("1");
    let (wake, ttwu) = (waker.find("ttwu_do_wakeup"), waker.find("try_to_wake_up+"));
    assert!(wake.is_some() && ttwu > wake, "{stacks}");
    // The trace carries them too.
    let trace = std::fs::read_to_string(out.join("reverted-inject/run000/trace.jsonl")).unwrap();
    assert!(trace.contains("\"kind\":\"stack\""), "{trace}");
    page_renders_in_chromium(&out);
}

/// The run's `index.html` in headless Chromium (Debian's package): it
/// loads nothing from outside, logs no console message, and the rendered
/// page has the verdict table, one timeline lane per vCPU, the stalls and
/// the crash marker; its screenshot is kept beside it (`shot.png`).
fn page_renders_in_chromium(out: &std::path::Path) {
    let page = out.join("index.html");
    let html = std::fs::read_to_string(&page).expect("index.html");
    assert!(!html.contains("<script"), "no script");
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "nothing remote"
    );
    let chromium = |extra: &[&str]| {
        let o = std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .args([
                "--enable-logging=stderr",
                "--v=0",
                "--window-size=1100,1400",
            ])
            .args(extra)
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("chromium (apt install chromium; ./test.sh does)");
        assert!(
            o.status.success(),
            "chromium: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o
    };
    let shot = out.join("shot.png");
    let o = chromium(&[&format!("--screenshot={}", shot.display())]);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(!log.contains("CONSOLE"), "console messages: {log}");
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    let dom = String::from_utf8_lossy(&chromium(&["--dump-dom"]).stdout).to_string();
    assert!(
        dom.contains("kernel BUG in do_task_dead"),
        "the verdict table"
    );
    let first = dom.split(r#"class="run""#).nth(1).expect("a run section");
    let svg = first.split("</svg>").next().unwrap();
    assert!(
        svg.contains(r#"data-vcpu="0""#) && svg.contains(r#"data-vcpu="1""#),
        "{svg}"
    );
    assert!(!svg.contains(r#"data-vcpu="2""#), "one lane per vCPU");
    assert!(svg.contains(r#"class="stall""#), "{svg}");
    assert!(svg.contains(r#"class="crash""#), "{svg}");
}

#[test]
fn fixed_kernel_survives_the_same_interleaving() {
    require_kvm();
    let j = run1("fixed", &[]);
    let r = &runs(&j)[0];
    assert_eq!(r["goal_reached"], true, "the race window was reached");
    assert_eq!(r["verdict"]["verdict"], "clean");
    assert_eq!(j["ok"], true);
}

#[test]
fn reverted_kernel_without_injection_is_clean() {
    require_kvm();
    let j = run1("reverted", &["--no-inject"]);
    assert_eq!(runs(&j)[0]["verdict"]["verdict"], "clean");
    assert_eq!(j["ok"], true);
}

#[test]
fn scenario_errors_name_file_line_and_key() {
    let d = tmp("badscn");
    let f = d.join("bad.toml");
    std::fs::write(&f, "name = \"x\"\n[guest]\nworkload = \"hello\"\n\n[[trigger]]\nname = \"a\"\nsite = \"try_to_wake_up\"\nvcpu = [1]\n").unwrap();
    let o = preemptor(&["run", f.to_str().unwrap(), "--kernel", "base"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("bad.toml:8:") && e.contains("vcpu"), "{e}");
    std::fs::write(&f, "name = \"x\"\n[guest]\nworkload = \"hello\"\n\n[[trigger]]\nname = \"a\"\nsite = \"try_to_wake_up\"\nvcpus = [7]\n").unwrap();
    let o = preemptor(&["run", f.to_str().unwrap(), "--kernel", "base"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("bad.toml:6:") && e.contains("vCPU 7"), "{e}");
}

/// Boot once, restore per run: restored runs give the cold runs' verdicts
/// (the cold ones are the tests above), on both kernels. Each snapshot is
/// kept in a file: a second invocation reuses it without booting, and the
/// other kernel's snapshot is refused. Every dirty-page restore is checked
/// against the snapshot's memory.
#[test]
fn restored_runs_match_cold_verdicts() {
    require_kvm();
    let dir = tmp("snapshots");
    for (kernel, want) in [("reverted", "crash"), ("fixed", "clean")] {
        let file = dir.join(format!("{kernel}.snap"));
        let f = file.to_str().unwrap();
        let mut all = Vec::new();
        for (i, n) in ["3", "1"].into_iter().enumerate() {
            let o = preemptor(&[
                "run",
                SCN,
                "--kernel",
                kernel,
                "--runs",
                n,
                "--snapshot",
                f,
                "--json",
                "--verify-restore",
            ]);
            assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
            let j = json(&o);
            all.extend(runs(&j).clone());
            assert!(file.exists(), "{kernel}: snapshot file kept");
            let loaded = stderr(&o).contains("snapshot loaded from");
            assert_eq!(
                loaded,
                i == 1,
                "{kernel}: only the second invocation reuses the file"
            );
        }
        let started: Vec<_> = all.iter().filter(|r| !result_flaked(r)).collect();
        assert!(
            started.len() >= 2,
            "{kernel}: restored runs hit the host flake: {all:?}"
        );
        for r in &all {
            let st = &r["restore"];
            assert!(
                st.is_object(),
                "{kernel}: restored run without restore info"
            );
            if st["full"] == false {
                assert!(st["pages"].as_u64().unwrap() < 32768 / 4, "{kernel}: {st}");
            }
            if let Some(stale) = st.get("stale_pages") {
                assert_eq!(stale, 0, "{kernel}: a dirty-page restore missed pages");
            }
        }
        for r in started {
            assert_eq!(r["goal_reached"], true, "{kernel}");
            assert_eq!(r["verdict"]["verdict"], want, "{kernel}: restored run");
            if want == "crash" {
                assert_eq!(r["verdict"]["title"], "kernel BUG in do_task_dead");
            }
        }
    }
    // A snapshot taken with another kernel is refused, before any boot.
    let wrong = dir.join("reverted.snap");
    let o = preemptor(&[
        "run",
        SCN,
        "--kernel",
        "fixed",
        "--snapshot",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("another kernel") && e.contains("refusing"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same scenario, same triggers, on Debian's 6.12 (`ttwu_do_wakeup` is
/// inlined there: the waker's site arms each copy, `base` finds the task in
/// each): the reverted kernel crashes, the fixed one survives.
#[test]
fn same_triggers_give_the_seed_verdicts_on_6_12() {
    require_kvm();
    for (kernel, want) in [("reverted-6.12", "crash"), ("fixed-6.12", "clean")] {
        let j = run1(kernel, &[]);
        let r = &runs(&j)[0];
        assert_eq!(
            r["goal_reached"], true,
            "{kernel}: the race window was reached"
        );
        assert_eq!(r["verdict"]["verdict"], want, "{kernel}");
        if want == "crash" {
            assert_eq!(r["verdict"]["title"], "kernel BUG in do_task_dead");
        }
        assert_eq!(j["ok"], true, "{kernel}");
    }
}

/// Ctrl-C during a multi-run `run`: the run in progress ends, no further
/// run starts, the table and the JSON have the finished runs, status 130.
#[test]
fn interrupt_keeps_the_finished_runs() {
    require_kvm();
    let out = tmp("sigint");
    let child = std::process::Command::new(bin())
        .args([
            "run", SCN, "--kernel", "reverted", "--runs", "40", "--json", "--out",
        ])
        .arg(&out)
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !out.join("reverted-inject/run003").exists() {
        assert!(t0.elapsed().as_secs() < 300, "four runs in 5 minutes");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let st = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130));
    let j = json(&o);
    assert_eq!(j["interrupted"], true, "{j}");
    let rs = runs(&j);
    assert!((3..40).contains(&rs.len()), "{}", rs.len());
    assert!(
        rs[..3].iter().all(|r| r["verdict"]["verdict"] == "crash"),
        "{j}"
    );
}
