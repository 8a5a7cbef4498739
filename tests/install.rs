//! The installed binary needs no checkout: `cargo install --root` into a
//! temporary root, then the seed scenario, copied elsewhere, run from a
//! temporary directory while the checkout is out of reach (an empty tmpfs
//! mounted over it in a private mount namespace, `unshare -m`). The kernel
//! cache stays: kernels are keyed by their inputs' contents, so the copied
//! scenario's kernels are the ones already built.
use preemptor_e2e::*;
use std::path::Path;
use std::process::Command;

/// Runs `script` with the checkout hidden behind an empty tmpfs.
fn without_checkout(script: &str, cwd: &Path) -> std::process::Output {
    let root = root().canonicalize().unwrap();
    in_mount_ns(
        &format!("mount -t tmpfs none '{}' && {script}", root.display()),
        cwd,
    )
}

#[test]
fn installed_binary_runs_the_seed_from_anywhere() {
    require_kvm();
    let t = tmp("install");
    let inst = t.join("root");
    // The workspace's target directory: the release build test.sh made is
    // reused, so installing costs a link, not a build.
    let st = Command::new(env!("CARGO"))
        .args(["install", "--locked", "--offline", "--quiet", "--path"])
        .arg(root().join("vmm"))
        .arg("--root")
        .arg(&inst)
        .arg("--target-dir")
        .arg(root().join("target"))
        .status()
        .expect("run cargo install");
    assert!(st.success(), "cargo install failed");
    let bin = inst.join("bin/preemptor");
    assert!(bin.is_file());

    let work = t.join("elsewhere");
    std::fs::create_dir_all(work.join("do-exit-race")).unwrap();
    for e in std::fs::read_dir(root().join("scenarios/do-exit-race")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, work.join("do-exit-race").join(p.file_name().unwrap())).unwrap();
    }
    // The unpacked build files go too: the installed binary brings its own.
    let cache = std::env::var_os("PREEMPTOR_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cache/preemptor"));
    let _ = std::fs::remove_dir_all(cache.join("share"));

    let b = bin.display();
    let o = without_checkout(
        &format!(
            "test ! -e '{}/Cargo.toml' && {b} run do-exit-race --kernel reverted --runs 1 --json",
            root().canonicalize().unwrap().display()
        ),
        &work,
    );
    let j = json(&o);
    let r = &runs(&j)[0];
    assert_eq!(r["verdict"]["verdict"], "crash", "{r}");
    assert_eq!(r["verdict"]["title"], "kernel BUG in do_task_dead");
    assert!(
        cache.join("share").is_dir(),
        "the build files were unpacked"
    );

    // doctor: this host's profile, every check passes.
    let profile = if Path::new("/sys/module/kvm_pvm").exists() {
        "profile kvm_pvm"
    } else {
        "profile standard"
    };
    let o = without_checkout(&format!("{b} doctor"), &work);
    assert_eq!(o.status.code(), Some(0));
    let s = stdout(&o);
    assert!(
        s.lines()
            .any(|l| l.starts_with("ok") && l.contains(profile)),
        "{profile}: {s}"
    );
    assert!(!s.lines().any(|l| l.starts_with("FAIL")), "{s}");

    // Completions and man pages come from the same definitions.
    let o = without_checkout(&format!("{b} completions bash"), &work);
    assert!(
        stdout(&o).contains("preemptor__subcmd__doctor"),
        "bash completion"
    );
    let o = without_checkout(&format!("{b} man --dir man && ls man"), &work);
    for page in ["preemptor.1", "preemptor-run.1", "preemptor-setup.1"] {
        assert!(stdout(&o).contains(page), "{page}");
    }
    let _ = std::fs::remove_dir_all(&t);
}
