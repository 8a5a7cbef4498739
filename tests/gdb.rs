//! `--gdb`: real gdb, in batch mode, against a run frozen at its goal.
use preemptor_e2e::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The reverted seed kernel frozen when the goal is reached: gdb sees two
/// vCPUs, the exiter in do_task_dead and the waker stopped in
/// ttwu_do_wakeup under try_to_wake_up; registers and disassembly work;
/// `continue` lets the run end with its crash verdict.
#[test]
fn gdb_at_the_goal_sees_both_sides_of_the_race() {
    require_kvm();
    assert!(
        Command::new("gdb").arg("--version").output().is_ok(),
        "gdb is not installed (./test.sh installs it)"
    );
    let port = 20000 + (std::process::id() % 20000);
    let addr = format!("127.0.0.1:{port}");
    let mut run = Command::new(bin())
        .args([
            "run",
            "scenarios/do-exit-race",
            "--kernel",
            "reverted",
            "--runs",
            "1",
            "--gdb",
            &addr,
            "--gdb-on",
            "goal",
        ])
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the freeze: stderr says so.
    let mut err = run.stderr.take().unwrap();
    let mut seen = String::new();
    let t0 = Instant::now();
    let mut buf = [0u8; 256];
    while !seen.contains("waiting for gdb") {
        assert!(t0.elapsed() < Duration::from_secs(240), "no freeze: {seen}");
        let n = err.read(&mut buf).unwrap();
        assert!(n > 0, "preemptor ended before the freeze: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // The kernel's vmlinux, as the run names it.
    let vmlinux = seen
        .lines()
        .find_map(|l| l.split(" on kernel reverted (").nth(1))
        .and_then(|r| r.split(')').next())
        .expect("kernel path")
        .to_string();
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = err.read_to_string(&mut rest);
    });
    let g = Command::new("timeout")
        .args(["120", "gdb", "-q", "-batch", "-nx", &vmlinux])
        .args(["-ex", "set pagination off"])
        .args(["-ex", &format!("target remote {addr}")])
        .args(["-ex", "info threads"])
        .args(["-ex", "thread 1", "-ex", "bt 4"])
        .args(["-ex", "thread 2", "-ex", "bt 4"])
        .args(["-ex", "p/x $rip", "-ex", "x/i $pc"])
        .args(["-ex", "continue"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&g.stdout).into_owned() + &String::from_utf8_lossy(&g.stderr);
    eprintln!("--- gdb\n{out}");
    let threads: Vec<&str> = out.lines().filter(|l| l.contains("Thread 1.")).collect();
    assert!(threads.len() >= 2, "two vCPUs: {out}");
    let t2 = out.find("[Switching to thread 2").expect("thread 2");
    let (one, two) = out.split_at(t2);
    assert!(one.contains("#0  do_task_dead"), "exiter: {out}");
    let (w, t) = (two.find("ttwu_do_wakeup"), two.find("try_to_wake_up"));
    assert!(w.is_some() && t > w, "waker: {out}");
    assert!(two.contains("$1 = 0xffffffff81"), "rip: {out}");
    assert!(two.contains("=> 0xffffffff81"), "x/i: {out}");
    assert!(
        out.contains("exited with code 01"),
        "the run ended on a report: {out}"
    );
    let o = run.wait_with_output().unwrap();
    let text = stdout(&o);
    let line = text
        .lines()
        .find(|l| l.starts_with("reverted inject run"))
        .unwrap_or_else(|| panic!("a run line: {text}"));
    assert!(line.contains("crash: kernel BUG in do_task_dead"), "{line}");
    assert!(line.contains("inspected with gdb (goal reached"), "{line}");
    assert_eq!(o.status.code(), Some(0), "the expectation held: {text}");
}
