//! Faults around the VMM (README: "What happens when ..."): `--out` that
//! is read-only or fills up, SIGKILL in the middle of the runs, a snapshot
//! file rewritten and deleted under a run, a kernel file deleted under
//! cold boots. Each ends with a clear message, the finished runs' results
//! whole on disk and in the table, nothing half-written left, and a next
//! invocation that works. (SIGINT: tests/scenario.rs; SIGKILL of a suite:
//! tests/suite.rs; a hostile guest: tests/chaos.rs.)
use preemptor_e2e::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SCN: &str = "scenarios/do-exit-race";

/// Polls until `found` gives a value (at most 5 minutes; the child must
/// still be running).
fn wait_for<T>(what: &str, child: &mut std::process::Child, found: impl Fn() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = found() {
            return v;
        }
        assert!(t0.elapsed().as_secs() < 300, "{what} in 5 minutes");
        assert!(child.try_wait().unwrap().is_none(), "ended before {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Until path `p` exists.
fn wait_for_path(p: &Path, what: &str, child: &mut std::process::Child) {
    wait_for(what, child, || p.exists().then_some(()))
}

/// The run folders under `dir`: (finished, unfinished `.partial`).
fn run_dirs(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut done = Vec::new();
    let mut partial = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let n = p.file_name().unwrap().to_string_lossy().to_string();
        if n.ends_with(".partial") {
            partial.push(p);
        } else if n.starts_with("run") {
            done.push(p);
        }
    }
    done.sort();
    (done, partial)
}

/// A finished run's folder is whole: its verdict parses and says `want`,
/// and its console log is there.
fn assert_whole(run: &Path, want: &str) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("verdict.json")).unwrap())
            .unwrap_or_else(|e| panic!("{}: verdict.json: {e}", run.display()));
    assert_eq!(v["verdict"]["verdict"], want, "{}", run.display());
    assert!(run.join("console.log").exists(), "{}", run.display());
}

/// A call outside a thread's seccomp filter ends the run as host-error
/// naming the call, never silently (`PREEMPTOR_SECCOMP_PROBE` makes vCPU 0
/// open a socket after installing its filter); and `--gdb` beyond loopback
/// is served with a warning.
#[test]
fn seccomp_violation_is_a_named_host_error() {
    require_kvm();
    // The snapshot first (a probed boot would fail before it).
    let o = preemptor(&["run", SCN, "--kernel", "reverted", "--runs", "1"]);
    assert_eq!(o.status.code(), Some(0));
    let o = Command::new(bin())
        .args(["run", SCN, "--kernel", "reverted", "--runs", "1", "--json"])
        .env("PREEMPTOR_SECCOMP_PROBE", "1")
        .current_dir(root())
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let run = &runs(&j)[0];
    assert_eq!(run["verdict"]["verdict"], "host-error", "{run}");
    let why = run["verdict"].to_string();
    assert!(
        why.contains("seccomp: vCPU 0 made system call socket (41)"),
        "{why}"
    );
    assert_ne!(o.status.code(), Some(0));
    // The warning comes before anything runs; the missing scenario stops
    // it there.
    let o = preemptor(&["run", "no-such-scenario", "--gdb", "0.0.0.0:1"]);
    assert!(
        stderr(&o).contains("listens beyond this machine"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn read_only_out_is_refused_before_any_boot() {
    require_kvm();
    let d = tmp("ro-out");
    let t0 = Instant::now();
    let o = in_mount_ns(
        &format!(
        "mount -t tmpfs -o ro none '{d}' && exec \"$P\" run {SCN} --kernel reverted --runs 2 --out '{d}/out'",
        d = d.display()
        ),
        &root(),
    );
    let e = usage_error(&o);
    assert!(
        e.contains("--out") && e.contains("Read-only file system"),
        "{e}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "refused before booting"
    );
}

#[test]
fn full_out_stops_the_runs_and_keeps_the_finished_ones() {
    require_kvm();
    let d = tmp("full-out");
    let keep = d.join("keep");
    // A 4 MiB tmpfs for --out; once run001 is there, fill it up.
    let o = in_mount_ns(
        &format!(
            r#"set -u; m='{d}/mnt'; mkdir -p "$m" '{k}' && mount -t tmpfs -o size=4m none "$m" || exit 99
"$P" run {SCN} --kernel reverted --runs 30 --json --out "$m/out" > '{k}/stdout' 2> '{k}/stderr' &
pid=$!
while [ ! -d "$m/out/reverted-inject/run001" ]; do kill -0 $pid || exit 98; sleep 0.05; done
dd if=/dev/zero of="$m/fill" bs=64k 2>/dev/null
wait $pid; echo $? > '{k}/status'
cp -r "$m/out" '{k}/out'"#,
            d = d.display(),
            k = keep.display()
        ),
        &root(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let status = std::fs::read_to_string(keep.join("status")).unwrap();
    let err = std::fs::read_to_string(keep.join("stderr")).unwrap();
    assert_eq!(status.trim(), "3", "{err}");
    assert!(
        err.contains("stopped:") && err.contains("No space left on device"),
        "{err}"
    );
    let j: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(keep.join("stdout"))
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert!(
        j["stopped"].as_str().unwrap().contains("No space left"),
        "{j}"
    );
    let rs = runs(&j);
    assert!((2..30).contains(&rs.len()), "{}", rs.len());
    assert!(rs.iter().all(|r| r["verdict"]["verdict"] == "crash"), "{j}");
    // The run whose files did not fit says so; the ones before are whole.
    let last = rs.last().unwrap();
    assert!(last["out_error"].as_str().is_some(), "{last}");
    let (done, partial) = run_dirs(&keep.join("out/reverted-inject"));
    assert!(partial.is_empty(), "nothing half-written: {partial:?}");
    assert!(done.len() >= 2 && done.len() < rs.len() + 1, "{done:?}");
    for r in &done {
        assert_whole(r, "crash");
    }
}

#[test]
fn killed_run_keeps_finished_runs_and_the_next_run_works() {
    require_kvm();
    let d = tmp("kill-run");
    let out = d.join("out");
    let mut child = Command::new(bin())
        .args(["run", SCN, "--kernel", "reverted", "--runs", "40", "--out"])
        .arg(&out)
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let runs = out.join("reverted-inject");
    wait_for_path(&runs.join("run002"), "three runs", &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let (done, partial) = run_dirs(&runs);
    assert!(done.len() >= 3, "{done:?}");
    for r in &done {
        assert_whole(r, "crash");
    }
    assert!(partial.len() <= 1, "at most the killed run's: {partial:?}");
    // No process of ours is left.
    let ps = Command::new("pgrep")
        .args(["-f", &out.display().to_string()])
        .output()
        .unwrap();
    assert!(ps.stdout.is_empty(), "{}", stdout(&ps));
    // The next invocation into the same folder works and tidies it.
    let o = preemptor(&[
        "run",
        SCN,
        "--kernel",
        "reverted",
        "--runs",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (done, partial) = run_dirs(&runs);
    assert!(partial.is_empty(), "{partial:?}");
    for r in &done[..2] {
        assert_whole(r, "crash");
    }
}

#[test]
fn snapshot_file_rewritten_then_deleted_under_a_run() {
    require_kvm();
    let d = tmp("snap-vanish");
    let (snap, out) = (d.join("seed.snap"), d.join("out"));
    let mut child = Command::new(bin())
        .args(["run", SCN, "--kernel", "reverted", "--runs", "6", "--json"])
        .arg("--snapshot")
        .arg(&snap)
        .arg("--out")
        .arg(&out)
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let runs_dir = out.join("reverted-inject");
    wait_for_path(&runs_dir.join("run001"), "two runs", &mut child);
    std::fs::write(&snap, b"not a snapshot any more").unwrap();
    wait_for_path(&runs_dir.join("run003"), "four runs", &mut child);
    std::fs::remove_file(&snap).unwrap();
    let o = child.wait_with_output().unwrap();
    // The snapshot was read whole at the start: the runs never notice.
    assert_eq!(o.status.code(), Some(0));
    let j = json(&o);
    let rs = runs(&j);
    assert_eq!(rs.len(), 6);
    assert!(rs.iter().all(|r| r["verdict"]["verdict"] == "crash"), "{j}");
    // A file that is not a snapshot is refused in one line; none is taken anew.
    std::fs::write(&snap, b"garbage").unwrap();
    let args = [
        "run",
        SCN,
        "--kernel",
        "reverted",
        "--runs",
        "2",
        "--json",
        "--snapshot",
        snap.to_str().unwrap(),
    ];
    let e = usage_error(&preemptor(&args));
    assert!(e.contains("not a preemptor snapshot"), "{e}");
    std::fs::remove_file(&snap).unwrap();
    let o = preemptor(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(snap.exists());
}

#[test]
fn kernel_deleted_under_cold_boots_stops_with_the_finished_runs() {
    require_kvm();
    let d = tmp("kernel-vanish");
    let o = preemptor(&["kernel", "build", SCN, "--variant", "reverted"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let built = stdout(&o);
    let dir = built.split_whitespace().nth(1).expect("VARIANT DIR");
    let vmlinux = d.join("vmlinux");
    std::fs::copy(Path::new(dir).join("vmlinux"), &vmlinux).unwrap();
    let out = d.join("out");
    let mut child = Command::new(bin())
        .args([
            "run",
            SCN,
            "--expect",
            "crash",
            "--no-snapshot",
            "--runs",
            "4",
        ])
        .args(["--json", "--kernel"])
        .arg(&vmlinux)
        .arg("--out")
        .arg(&out)
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = wait_for("a first run", &mut child, || {
        std::fs::read_dir(&out)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("run000"))
            .find(|p| p.exists())
    });
    std::fs::remove_file(&vmlinux).unwrap();
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("stopped:") && err.contains(&vmlinux.display().to_string()),
        "{err}"
    );
    let j = json(&o);
    let rs = runs(&j);
    assert!((1..4).contains(&rs.len()), "{}", rs.len());
    assert_whole(&first, "crash");
}
