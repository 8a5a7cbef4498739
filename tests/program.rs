//! Scenario folders that bring their own programs and kernels: C programs
//! (with and without preemptor.h), the seed's C port, and the one-line
//! errors for inputs that cannot work (exit status 2 each).
use preemptor_e2e::*;
use std::path::Path;

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// A scenario folder with `scenario.toml` = `toml`.
fn folder(name: &str, toml: &str) -> std::path::PathBuf {
    let d = tmp(name);
    write(&d, "scenario.toml", toml);
    d
}

fn run_json(scn: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["run", scn, "--json"];
    args.extend_from_slice(extra);
    retry_on_host_flake(scn, || {
        let o = preemptor(&args);
        assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
        let j = json(&o);
        let flaked = j["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["runs"].as_array().unwrap().iter().any(result_flaked));
        (j, flaked)
    })
}

/// The C port of the seed's workload (preemptor.h: pin, ready) gives the
/// seed's verdicts on both of the folder's kernel variants.
#[test]
fn c_port_of_the_seed_gives_its_verdicts() {
    require_kvm();
    let j = run_json("scenarios/do-exit-race-c", &["--runs", "2"]);
    let results = j["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "both variants, in the file's order");
    assert_eq!(results[0]["kernel"], "reverted");
    assert_eq!(results[1]["kernel"], "fixed");
    for k in results {
        assert_eq!(k["snapshot_at"], "ready", "preemptor_ready() found");
        for r in k["runs"].as_array().unwrap() {
            assert_eq!(r["goal_reached"], true, "{}", k["kernel"]);
        }
        assert_eq!(k["ok"], true, "{}: {}", k["kernel"], k["summary"]);
    }
    let r = &results[0]["runs"][0]["verdict"];
    assert_eq!(r["title"], "kernel BUG in do_task_dead");
    assert_eq!(j["ok"], true);
}

/// A syzkaller-style reproducer (plain main, raw syscalls, no preemptor.h)
/// runs as it is: the snapshot is taken before it starts, and it gets a
/// verdict on each restored run.
#[test]
fn unmodified_syzkaller_style_repro_gets_a_verdict() {
    require_kvm();
    let o = preemptor(&[
        "run",
        "scenarios/do-exit-race-syz",
        "--kernel",
        "reverted",
        "--runs",
        "2",
        "--json",
    ]);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
    let j = json(&o);
    let k = &j["results"][0];
    assert_eq!(k["snapshot_at"], "start", "no preemptor_ready() in it");
    let rs = runs(&j);
    assert_eq!(rs.len(), 2);
    let started: Vec<_> = rs.iter().filter(|r| !result_flaked(r)).collect();
    assert!(!started.is_empty(), "host flake on every run: {rs:?}");
    for r in started {
        assert!(r["restore"].is_object(), "restored from the snapshot");
        assert_eq!(r["verdict"]["verdict"], "crash", "{r}");
        assert_eq!(r["verdict"]["title"], "kernel BUG in do_task_dead");
    }
}

/// `boot --program` compiles a C file and runs it with its arguments.
#[test]
fn boot_runs_a_c_program_with_arguments() {
    require_kvm();
    let d = tmp("bootprog");
    write(
        &d,
        "args.c",
        "#include <stdio.h>\n#include \"preemptor.h\"\nint main(int argc, char **argv)\n\
         {\n\tprintf(\"argc=%d last=%s seed=%u\\n\", argc, argv[argc - 1], preemptor_seed());\n\treturn 3;\n}\n",
    );
    let prog = d.join("args.c");
    let log = d.join("console.log");
    let o = retry_on_host_flake("boot --program", || {
        let o = preemptor(&[
            "boot",
            "--seed",
            "7",
            "--log",
            log.to_str().unwrap(),
            "--json",
            "--program",
            prog.to_str().unwrap(),
            "a b",
            "--last",
        ]);
        let flaked = boot_flaked(&json(&o));
        (o, flaked)
    });
    let j = json(&o);
    assert_eq!(j["verdict"]["verdict"], "workload-failed", "exit 3: {j}");
    assert_eq!(j["verdict"]["status"], 3);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("argc=3 last=--last seed=7"), "{text}");
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn patch_that_does_not_apply_is_one_line() {
    let d = folder(
        "badpatch",
        "name = \"badpatch\"\n[guest]\nworkload = \"hello\"\n\n[kernel.broken]\npatches = [\"bad.patch\"]\nexpect = \"crash\"\n",
    );
    write(
        &d,
        "bad.patch",
        "--- a/kernel/sched/core.c\n+++ b/kernel/sched/core.c\n@@ -6594,7 +6594,7 @@\n \
         void __noreturn do_task_dead(void)\n {\n \t/* not in the source */\n-\tset_special_state(TASK_DEAD);\n\
         +\tWRITE_ONCE(current->__state, TASK_DEAD);\n \n \t/* Tell freezer to ignore us: */\n \tcurrent->flags |= PF_NOFREEZE;\n",
    );
    let o = preemptor(&["run", d.to_str().unwrap()]);
    let e = usage_error(&o);
    assert_eq!(
        e,
        format!(
            "preemptor: {}/scenario.toml:6: kernel.broken: patch bad.patch does not apply to \
             debian:6.1: hunk #1 FAILED at 6594 (kernel/sched/core.c)",
            d.display()
        )
    );
}

#[test]
fn config_setting_that_does_not_stick_is_one_line() {
    let d = folder(
        "badcfg",
        "name = \"badcfg\"\n[guest]\nworkload = \"hello\"\n\n[kernel.x]\nconfig = [\"extra.fragment\"]\n",
    );
    write(&d, "extra.fragment", "CONFIG_NOT_A_REAL_OPTION=y\n");
    let e = usage_error(&preemptor(&["kernel", "build", d.to_str().unwrap()]));
    assert_eq!(
        e,
        format!(
            "preemptor: {}/scenario.toml:6: kernel.x: config fragment extra.fragment: \
             CONFIG_NOT_A_REAL_OPTION=y did not stick (now: unset)",
            d.display()
        )
    );
}

#[test]
fn c_file_that_does_not_compile_is_one_line() {
    let d = folder("badc", "name = \"badc\"\n[guest]\nprogram = \"repro.c\"\n");
    write(&d, "repro.c", "int main(void)\n{\n\treturn 0\n}\n");
    let e = usage_error(&preemptor(&["run", d.to_str().unwrap()]));
    assert_eq!(
        e,
        format!(
            "preemptor: {}/repro.c:3:17: error: expected ';' before '}}' token",
            d.display()
        )
    );
}

#[test]
fn dynamic_binary_is_refused_in_one_line() {
    let d = folder("dyn", "name = \"dyn\"\n[guest]\nprogram = \"repro\"\n");
    write(&d, "d.c", "int main(void) { return 0; }\n");
    let cc = std::process::Command::new("gcc")
        .arg("-o")
        .arg(d.join("repro"))
        .arg(d.join("d.c"))
        .status()
        .unwrap();
    assert!(cc.success());
    let e = usage_error(&preemptor(&["run", d.to_str().unwrap()]));
    assert_eq!(
        e,
        format!(
            "preemptor: {}/repro: dynamically linked; the guest has no libraries: link it \
             statically (gcc -static), or give the .c file",
            d.display()
        )
    );
}

#[test]
fn unknown_variant_is_one_line() {
    let e = usage_error(&preemptor(&[
        "run",
        "scenarios/do-exit-race",
        "--kernel",
        "nope",
    ]));
    assert!(
        e.contains("no kernel variant 'nope'") && e.contains("reverted, fixed"),
        "{e}"
    );
}

/// A BUG in a function the compiler inlined (the fixture's exit_mm(), in
/// do_exit()): the title comes from the symbolized report and names the
/// inlined function; the raw title is kept; `report` on the saved console
/// gives the same title.
#[test]
fn bug_in_an_inlined_function_is_titled_by_it() {
    require_kvm();
    let out = tmp("inline-bug");
    let j = run_json(
        "tests/fixtures/inline-bug",
        &["--out", out.to_str().unwrap()],
    );
    let v = &runs(&j)[0]["verdict"];
    assert_eq!(v["title"], "kernel BUG in exit_mm", "{v}");
    assert_eq!(v["raw_title"], "kernel BUG in do_exit", "{v}");
    assert_eq!(j["ok"], true);
    assert_eq!(reports_match_runs(&out), 1);
}

/// Exit status with a kernel path: no expectation means every run must be
/// clean (a crash exits 1); `--expect` supplies one.
#[test]
fn exit_status_with_a_kernel_path_follows_the_readme() {
    require_kvm();
    let o = preemptor(&["kernel", "build", "tests/fixtures/inline-bug"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let dir = stdout(&o).trim().strip_prefix("bug ").unwrap().to_string();
    let vmlinux = format!("{dir}/vmlinux");
    for (extra, want) in [(None, 1), (Some("crash"), 0), (Some("clean"), 1)] {
        let mut args = vec!["run", "tests/fixtures/inline-bug", "--kernel", &vmlinux];
        if let Some(e) = extra {
            args.extend(["--expect", e]);
        }
        let o = preemptor(&args);
        assert_eq!(o.status.code(), Some(want), "--expect {extra:?}");
    }
}
