//! `preemptor bisect` on a real git history of Debian's 6.1 source
//! (`tests/fixtures/bisect/make-history.sh`: 16 commits per branch; the
//! seed's fix reverted, unrelated commits in other files and in
//! kernel/sched/core.c, the fix re-applied), with the seed scenario's
//! stalls: it names the fix and the cause by commit, within log2(N)+2
//! steps, then `git bisect run` with `run --git-bisect` agrees, and the
//! repository is as it was. One history, one kept build tree: each step
//! after the first is an incremental build, and every kernel is cached by
//! its tree for the next CI run.
use preemptor_e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn cache() -> PathBuf {
    std::env::var_os("PREEMPTOR_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/preemptor"))
}

fn git(repo: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The history, made once per version of its script and inputs.
fn history() -> PathBuf {
    let script = root().join("tests/fixtures/bisect/make-history.sh");
    let key = Command::new("sh")
        .arg("-c")
        .arg("cat \"$1\" scenarios/do-exit-race/revert-do-exit-fix.patch | sha256sum | cut -c1-12")
        .arg("sh")
        .arg(&script)
        .current_dir(root())
        .output()
        .unwrap();
    let key = String::from_utf8_lossy(&key.stdout).trim().to_string();
    let dir = cache().join("test-trees").join(format!("bisect-6.1-{key}"));
    let st = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success(), "make-history.sh");
    dir
}

/// Bisect; returns stdout and the number of steps it took.
fn bisect(repo: &Path, name: &str, args: &[&str]) -> (String, usize) {
    let results = tmp(name).join("steps.jsonl");
    let mut a = vec![
        "bisect",
        "scenarios/do-exit-race",
        "--kernel",
        "fixed",
        "--repo",
        repo.to_str().unwrap(),
        "--runs",
        "6",
        "--results",
        results.to_str().unwrap(),
    ];
    a.extend_from_slice(args);
    let o = preemptor(&a);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let steps = std::fs::read_to_string(&results).unwrap().lines().count() - 1;
    (stdout(&o), steps)
}

#[test]
fn bisect_names_the_fix_and_the_cause() {
    require_kvm();
    let repo = history();
    let head = git(&repo, &["rev-parse", "HEAD"]);

    // Fix: crashes at fix~15 (the fix reverted), not at the tip: the
    // first commit that no longer crashes is the re-applied fix.
    let fix = git(&repo, &["rev-parse", "fix~7"]);
    assert_eq!(
        git(&repo, &["log", "-1", "--format=%s", &fix]),
        "sched: Fix ancient race in do_exit()"
    );
    let (out, steps) = bisect(
        &repo,
        "bisect-fix",
        &["--fix", "--old", "fix~15", "--new", "fix"],
    );
    assert!(
        out.contains(&format!(
            "first commit where it no longer crashes: {fix} sched: Fix ancient race"
        )),
        "{out}"
    );
    // 15 candidates: at most log2(15)+2.
    assert!(steps <= 5, "{steps} steps");

    // Cause: clean at the root, crashes at the tip: the first crashing
    // commit is the one that reopened the race, in the middle.
    let cause = git(&repo, &["rev-parse", "cause~8"]);
    let (out, steps) = bisect(
        &repo,
        "bisect-cause",
        &["--old", "cause~16", "--new", "cause"],
    );
    assert!(
        out.contains(&format!(
            "first commit where it crashes: {cause} sched: reopen the race"
        )),
        "{out}"
    );
    assert!(steps <= 6, "{steps} steps");

    // The same question through `git bisect run`: the commit before and
    // the one after the cause leave it alone to test (its kernel and
    // snapshot are the ones just cached).
    git(&repo, &["bisect", "start", "cause~7", "cause~9"]);
    let o = Command::new("git")
        .current_dir(&repo)
        .args(["bisect", "run"])
        .arg(bin())
        .args([
            "run",
            root().join("scenarios/do-exit-race").to_str().unwrap(),
            "--kernel",
            "fixed",
            "--base",
            "git:.@HEAD",
            "--expect",
            "clean",
            "--runs",
            "4",
            "--git-bisect",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    eprintln!(
        "git bisect run:\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    git(&repo, &["bisect", "reset"]);
    assert!(o.status.success(), "git bisect run failed");
    assert!(
        out.contains(&format!("{cause} is the first bad commit")),
        "{out}"
    );

    // Only read: HEAD, the work tree and the worktree list as they were.
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(
        git(&repo, &["status", "--porcelain", "--ignored=no", "-uno"]),
        ""
    );
    assert_eq!(git(&repo, &["worktree", "list"]).lines().count(), 1);
}

#[test]
fn bad_bisect_input_is_one_line() {
    let norepo = tmp("bisect-norepo");
    let norepo = norepo.to_str().unwrap();
    // (arguments after the scenario, what the one line must say)
    let cases: &[(&[&str], &str)] = &[
        (
            &["--repo", norepo, "--old", "v1", "--new", "v2"],
            "not a git repository",
        ),
        (
            &["--repo", ".", "--old", "no-such-rev", "--new", "HEAD"],
            "--old no-such-rev: no such commit",
        ),
        (
            &["--repo", ".", "--old", "HEAD", "--new", "HEAD~1"],
            "is not an ancestor of",
        ),
        (
            &[
                "--kernel", "nope", "--repo", ".", "--old", "HEAD~1", "--new", "HEAD",
            ],
            "no kernel variant 'nope'",
        ),
    ];
    for (args, want) in cases {
        let mut a = vec!["bisect", "scenarios/do-exit-race"];
        a.extend_from_slice(args);
        let e = usage_error(&preemptor(&a));
        assert!(e.contains(want), "{args:?}: {e}");
    }
}
