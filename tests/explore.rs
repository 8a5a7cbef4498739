//! `preemptor sweep` and `explore` on the seed race: a sweep's rates and
//! its SVG, an exploration that finds the window from a handful of source
//! lines and emits a scenario that reproduces it, and a results file that
//! a second invocation continues.
use preemptor_e2e::*;

const SCN: &str = "scenarios/do-exit-race";

#[test]
fn sweep_rates_and_plot() {
    require_kvm();
    let dir = tmp("sweep");
    let svg = dir.join("window.svg");
    let jl = dir.join("runs.jsonl");
    let o = preemptor(&[
        "sweep",
        SCN,
        "--kernel",
        "reverted",
        "--vary",
        "waker.stall=0ms,3ms",
        "--runs",
        "2",
        "--plot",
        svg.to_str().unwrap(),
        "--json",
        jl.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0));
    // Rows: point runs valid crashes rate ...: a 3 ms stall of the waker
    // is past the window (about 1 ms on this host): it crashes.
    let rows: Vec<Vec<String>> = stdout(&o)
        .lines()
        .filter(|l| l.starts_with("0ms") || l.starts_with("3ms"))
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    assert_eq!(rows.len(), 2, "{}", stdout(&o));
    let crashes = |r: &Vec<String>| r[3].parse::<usize>().unwrap();
    let valid = |r: &Vec<String>| r[2].parse::<usize>().unwrap();
    // Not `0ms` crashes == 0: a loaded host deschedules vCPU threads by
    // itself (seen: 2/2 at 0 ms with another guest running beside it).
    assert!(valid(&rows[1]) >= 1, "{:?}", rows[1]);
    assert!(crashes(&rows[1]) >= 1, "{:?}", rows[1]);
    assert!(crashes(&rows[1]) >= crashes(&rows[0]), "{rows:?}");
    let lines = std::fs::read_to_string(&jl).unwrap();
    assert_eq!(lines.lines().count(), 4);
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let circles = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "circle")
        .count();
    assert_eq!(circles, 2, "a marker per point");
    assert!(text.contains("waker.stall (ms)"), "the axis is labelled");
}

#[test]
fn explore_finds_the_window_and_emits_a_scenario() {
    require_kvm();
    let dir = tmp("explore");
    let res = dir.join("results.jsonl");
    let toml = dir.join("explored.toml");
    // The exiting task's set_current_state() and waiter.task load, the
    // waker's check_preempt_curr() and TASK_RUNNING store: a few points,
    // so a pair is found in a few runs; no triggers written.
    let sites = "kernel/locking/rwsem.c:1081-1082,kernel/sched/core.c:3658-3659";
    let o = preemptor(&[
        "explore",
        SCN,
        "--kernel",
        "reverted",
        "--sites",
        sites,
        "--budget",
        "60",
        "--want",
        "do_task_dead",
        "--stop-after",
        "1",
        "--results",
        res.to_str().unwrap(),
        "--emit",
        toml.to_str().unwrap(),
        "--verify",
        "16",
    ]);
    // What explore promises: either a confirmed finding, emitted with
    // portable sites, checked on every variant and verified there (exit 0,
    // or 1 when the verification does not hold), or (exit 1) nothing
    // emitted. Never a lone lucky crash.
    let out = stdout(&o);
    match o.status.code() {
        Some(1) if !toml.exists() => {
            assert!(
                out.contains("nothing emitted: no confirmed finding"),
                "{out}"
            );
            eprintln!("NOTE: explore confirmed no finding in its budget:\n{out}");
        }
        Some(0 | 1) => check_emitted(&out, &toml),
        c => panic!("explore exited {c:?}: {out}\n{}", stderr(&o)),
    }

    // A second invocation continues the results file up to its budget;
    // one with other options is refused.
    // Runs only: confirmation lines (`"confirm"`) do not count in the budget.
    let run_lines = || {
        std::fs::read_to_string(&res)
            .unwrap()
            .lines()
            .skip(1)
            .filter(|l| !l.starts_with("{\"confirm\""))
            .count()
    };
    let n = run_lines();
    let more = (n + 2).to_string();
    let o = preemptor(&[
        "explore",
        SCN,
        "--kernel",
        "reverted",
        "--sites",
        sites,
        "--budget",
        &more,
        "--results",
        res.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(run_lines(), n + 2);
    let o = preemptor(&[
        "explore",
        SCN,
        "--kernel",
        "reverted",
        "--sites",
        sites,
        "--budget",
        &more,
        "--stall",
        "1ms..2ms",
        "--results",
        res.to_str().unwrap(),
    ]);
    assert!(usage_error(&o).contains("another exploration"));
}

/// The emitted scenario names its sites in the language that survives
/// rebuilds, every site resolves on both 6.1 variants (the explored
/// kernel's base), and `--verify`'s runs bear the finding out: never a
/// crash on the fixed kernel or without injection, and on the reverted
/// kernel a crash rate its confirmation promised. The rate check fails
/// only when so few runs crash that this would happen with a chance under
/// 1 in 1,000 at the lower end of the confirmation's 95% interval (a
/// binomial tail): the product's own 90% bar is printed, not asserted.
fn check_emitted(out: &str, toml: &std::path::Path) {
    assert!(out.contains("kernel BUG in do_task_dead"), "{out}");
    let text = std::fs::read_to_string(toml).expect("an emitted scenario");
    assert!(text.contains("name = \"primary\""), "{text}");
    if text.contains("name = \"secondary\"") {
        assert!(text.contains("outlast = \"primary\""), "{text}");
    }
    let sites: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("site = \""))
        .map(|l| l.trim_end_matches('"'))
        .collect();
    assert!(!sites.is_empty(), "{text}");
    for s in &sites {
        if s.contains('+') {
            assert!(
                text.contains("no portable name"),
                "an offset site must say why: {text}"
            );
        }
    }
    eprintln!("emitted sites: {sites:?}");
    // Every site on both 6.1 variants: one line each, resolved.
    for k in ["reverted", "fixed"] {
        for t in ["primary", "secondary"].iter().take(sites.len()) {
            let line = out
                .lines()
                .find(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    w.len() > 2 && w[0] == k && w[1] == *t
                })
                .unwrap_or_else(|| panic!("no check of {t} on {k}: {out}"));
            assert!(line.contains(" -> "), "{line}");
        }
    }
    check_verification(out);
}

/// `--verify`'s runs bear the finding out: never a crash on the fixed
/// kernel or without injection, and on the reverted kernel a crash rate
/// its confirmation promised (see [`check_emitted`]: a binomial tail, the
/// product's 90% bar is printed, not asserted).
fn check_verification(out: &str) {
    // "emitted: FILE (confirmed K/N; ..."
    let conf = out
        .split("(confirmed ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|r| r.split_once('/'))
        .map(|(k, n)| (k.parse::<u64>().unwrap(), n.parse::<u64>().unwrap()))
        .unwrap_or_else(|| panic!("the confirmation in: {out}"));
    assert!(conf.0 * 10 >= conf.1 * 9, "kept below 9 of 10: {conf:?}");
    // The verification table: "KERNEL MODE... K/N s/run expected titles".
    let row = |kernel: &str, mode: &str| -> (u64, u64) {
        let line = out
            .lines()
            .skip_while(|l| !l.starts_with("verification ("))
            .find(|l| {
                l.starts_with(&format!("{kernel} "))
                    && l.contains(mode)
                    && (mode == "no injection" || !l.contains("no injection"))
            })
            .unwrap_or_else(|| panic!("no verification row {kernel} {mode}: {out}"));
        line.split_whitespace()
            .find_map(|w| w.split_once('/'))
            .map(|(k, n)| (k.parse().unwrap(), n.parse().unwrap()))
            .unwrap_or_else(|| panic!("{line}"))
    };
    let (fixed, _) = row("fixed", "injection");
    assert_eq!(
        fixed, 0,
        "the fixed kernel crashed under the finding: {out}"
    );
    let (base, _) = row("reverted", "no injection");
    assert_eq!(base, 0, "crashes without injection: {out}");
    let (crashes, n) = row("reverted", "injection");
    let lo = wilson_lo(conf.0, conf.1);
    let tail = binomial_cdf(crashes, n, lo);
    eprintln!(
        "emitted scenario: {crashes}/{n} crashed; confirmed {}/{} (95% lower bound {:.0}%); P(<= {crashes} | {:.2}) = {tail:.2e}",
        conf.0, conf.1, lo * 100.0, lo
    );
    assert!(
        tail >= 1e-3,
        "the emitted scenario crashed {crashes}/{n}, below its confirmed {}/{}: {out}",
        conf.0,
        conf.1
    );
}

fn wilson_lo(k: u64, n: u64) -> f64 {
    let (k, n, z) = (k as f64, n as f64, 1.96f64);
    let p = k / n;
    let d = 1.0 + z * z / n;
    let c = (p + z * z / (2.0 * n)) / d;
    c - z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / d
}

/// P(X <= k) for X ~ Binomial(n, p).
fn binomial_cdf(k: u64, n: u64, p: f64) -> f64 {
    let mut c = 1.0f64; // C(n, i)
    let mut sum = 0.0;
    for i in 0..=k.min(n) {
        if i > 0 {
            c = c * (n - i + 1) as f64 / i as f64;
        }
        sum += c * p.powi(i as i32) * (1.0 - p).powi((n - i) as i32);
    }
    sum
}

/// `explore --from-report` on a library race of another subsystem (tty):
/// a crashing run's saved `console.log` gives the sites (the report's
/// frames, tiocspgrp inlined into tty_jobctrl_ioctl) and the title to
/// want; the finding is confirmed, emitted with a portable site that
/// resolves on the fixed kernel too (there at another offset), and
/// verified: it crashes the reverted kernel, never the fixed one or the
/// reverted one without injection.
#[test]
fn explore_from_a_crash_report() {
    require_kvm();
    let scn = "scenarios/tty-tiocspgrp";
    let dir = tmp("from-report");
    let out = dir.join("out");
    let o = preemptor(&[
        "run",
        scn,
        "--kernel",
        "reverted",
        "--runs",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let console = out.join("reverted-inject/run000/console.log");
    assert!(console.exists(), "{}", console.display());
    check_chrome_trace(&out.join("reverted-inject/run000"));
    let toml = dir.join("explored.toml");
    let page_dir = dir.join("page");
    let o = preemptor(&[
        "explore",
        scn,
        "--kernel",
        "reverted",
        "--from-report",
        console.to_str().unwrap(),
        "--budget",
        "300",
        "--stop-after",
        "1",
        "--emit",
        toml.to_str().unwrap(),
        "--out",
        page_dir.to_str().unwrap(),
    ]);
    let text = stdout(&o);
    // The page: the ranking, the emitted scenario and its verification.
    let page = std::fs::read_to_string(page_dir.join("index.html")).expect("explore's page");
    for part in [
        "Ranking",
        "Emitted: ",
        "Verification of the emitted scenario",
        "<td>fixed</td><td>injection</td>",
        "<td>reverted</td><td>no injection</td>",
    ] {
        assert!(page.contains(part), "{part}: {page}");
    }
    assert!(
        text.contains("from the report: WARNING: refcount bug in put_pid"),
        "{text}"
    );
    let sites = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("sites: "))
        .unwrap_or_else(|| panic!("no sites line: {text}"));
    assert!(sites.contains("tty_jobctrl_ioctl"), "{sites}");
    assert!(text.contains("inlined in this kernel"), "{text}");
    // A window another thread's timing must meet (a lone stop) can
    // crash 8 of 10 after 9 of 9 in its confirmation (seen 2026-12-07 on
    // a loaded host): explore then exits 1 with "verification FAILS".
    // What must hold is what the finding promises: no crash on the fixed
    // kernel or without injection, and a crash rate the confirmation
    // makes likely.
    assert!(
        matches!(o.status.code(), Some(0 | 1)),
        "{text}\n{}",
        stderr(&o)
    );
    check_verification(&text);
    if o.status.code() == Some(1) {
        assert!(text.contains("verification FAILS"), "{text}");
        eprintln!("NOTE: below the 90% bar this time:\n{text}");
    }
    let emitted = std::fs::read_to_string(&toml).unwrap();
    for site in emitted.lines().filter_map(|l| l.strip_prefix("site = \"")) {
        assert!(!site.contains('+'), "not portable: {site}");
    }
    for k in ["reverted", "fixed"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{k} ")) && l.contains(" -> ")),
            "{k}: {text}"
        );
    }
}

/// A kept run's `trace.json` (Chrome trace event format, for Perfetto)
/// keeps the format's rules and tells what `trace.jsonl` tells: every stall
/// a slice named by its trigger at the same time, every fire an instant,
/// one named thread track per vCPU, the crash as a global instant. The
/// rules are read here again rather than through `stall::chrome::
/// check_format`: a test should not trust the code it checks.
fn check_chrome_trace(run: &std::path::Path) {
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("trace.json")).unwrap()).unwrap();
    let evs = t["traceEvents"].as_array().expect("traceEvents");
    let mut last = std::collections::HashMap::new();
    for e in evs {
        let ph = e["ph"].as_str().expect("ph");
        assert!(
            e["name"].is_string() && e["pid"].is_u64() && e["tid"].is_u64(),
            "{e}"
        );
        if ph == "M" {
            assert!(e["args"]["name"].is_string(), "{e}");
            continue;
        }
        let ts = e["ts"].as_u64().expect("ts");
        match ph {
            "X" => assert!(e["dur"].is_u64(), "{e}"),
            "i" => assert!(matches!(e["s"].as_str(), Some("t" | "p" | "g")), "{e}"),
            _ => panic!("phase {ph}: {e}"),
        }
        let prev = last.insert(e["tid"].as_u64(), ts).unwrap_or(0);
        assert!(ts >= prev, "time goes back on a track: {e}");
    }
    let threads: Vec<&str> = evs
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .filter_map(|e| e["args"]["name"].as_str())
        .collect();
    assert_eq!(threads, ["vCPU 0", "vCPU 1"]);
    let jsonl = std::fs::read_to_string(run.join("trace.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |ph: &str, ts: &serde_json::Value, vcpu: &serde_json::Value, name: &str| {
        evs.iter().any(|e| {
            e["ph"] == ph && e["ts"] == *ts && e["tid"] == *vcpu && e["name"].as_str() == Some(name)
        })
    };
    let mut stalls = 0;
    for l in &lines {
        let trig = l["trigger"].as_str().unwrap();
        match l["kind"].as_str().unwrap() {
            "stall-start" => {
                stalls += 1;
                assert!(has("X", &l["t_us"], &l["vcpu"], trig), "no slice for {l}");
            }
            "fire" => assert!(
                has("i", &l["t_us"], &l["vcpu"], &format!("fire {trig}")),
                "{l}"
            ),
            _ => {}
        }
    }
    assert!(stalls > 0, "the run stalls: {jsonl}");
    assert!(
        evs.iter().any(|e| e["cat"] == "crash" && e["s"] == "g"),
        "the crash is on the timeline"
    );
}
