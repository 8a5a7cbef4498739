//! As an ordinary user: someone who can open `/dev/kvm` (the `kvm` group)
//! and nothing more, with a fresh cache under `XDG_CACHE_HOME`, builds the
//! kernels and the C program, boots to snapshots and gets the same
//! verdicts as root; `doctor` names the missing permission with its fix
//! before; a cache or `--out` directory of someone else's is refused in
//! one line; nothing written is writable by others.
//!
//! Costs a base kernel build and four snapshot boots (the cache is fresh on
//! purpose: that is what a new user has). Needs root to make the user.
use preemptor_e2e::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const USER: &str = "preemptor-ci";

/// `preemptor ARGS` as the user, in `work`, with only a minimal
/// environment (no root's HOME or cache leaks in).
fn as_user(work: &Path, xdg: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new("runuser");
    c.args(["-u", USER, "--", "env", "-i"])
        .arg(format!("HOME=/home/{USER}"))
        .arg("PATH=/usr/local/bin:/usr/bin:/bin")
        .arg(format!("XDG_CACHE_HOME={}", xdg.display()));
    for (k, v) in env {
        c.arg(format!("{k}={v}"));
    }
    c.arg(work.join("preemptor")).args(args).current_dir(work);
    sh(&mut c)
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

/// Per kernel: (kernel, ok, sorted verdicts, titles, kernel key).
fn verdicts(j: &serde_json::Value) -> Vec<(String, bool, Vec<String>, String, String)> {
    j["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            let mut v: Vec<String> = r["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["verdict"].to_string())
                .collect();
            v.sort();
            let key = Path::new(r["kernel_path"].as_str().unwrap())
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (
                r["kernel"].as_str().unwrap().to_string(),
                r["ok"] == true,
                v,
                r["summary"]["titles"].to_string(),
                key,
            )
        })
        .collect()
}

/// Files and directories under `dir` that others may write (symlinks
/// aside: their mode means nothing).
fn writable_by_others(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.file_type().is_symlink() {
                continue;
            }
            if m.mode() & 0o002 != 0 {
                out.push(e.path());
            }
            if m.is_dir() {
                todo.push(e.path());
            }
        }
    }
    out
}

#[test]
fn an_ordinary_user_gets_the_same_verdicts_as_root() {
    require_kvm();
    let id = sh(Command::new("id").arg("-u"));
    assert_eq!(
        String::from_utf8_lossy(&id.stdout).trim(),
        "0",
        "this test makes a user: run it as root (CI does)"
    );
    if !sh(Command::new("id").arg(USER)).status.success() {
        assert!(
            sh(Command::new("useradd").args(["--create-home", "--user-group", USER]))
                .status
                .success()
        );
    }
    // No access to /dev/kvm yet (a leftover membership from a killed run).
    let _ = sh(Command::new("gpasswd").args(["-d", USER, "kvm"]));

    let work = std::env::temp_dir().join(format!("preemptor-user-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    assert!(
        sh(Command::new("cp").arg(bin()).arg(work.join("preemptor")))
            .status
            .success()
    );
    assert!(sh(Command::new("cp")
        .arg("-r")
        .arg(root().join("scenarios"))
        .arg(&work))
    .status
    .success());
    assert!(sh(Command::new("chmod").args(["-R", "go+rX"]).arg(&work))
        .status
        .success());
    // A fresh cache, as a new user has.
    let xdg = PathBuf::from(format!("/home/{USER}/xdg-cache"));
    let _ = std::fs::remove_dir_all(&xdg);

    // Without the group: doctor names the permission and the fixes.
    use std::os::unix::fs::MetadataExt;
    let kvm_mode = std::fs::metadata("/dev/kvm").unwrap().mode();
    if kvm_mode & 0o006 != 0o006 {
        let o = as_user(&work, &xdg, &[], &["doctor"]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert_ne!(o.status.code(), Some(0), "{text}");
        assert!(text.contains("may not open"), "{text}");
        assert!(text.contains(&format!("usermod -aG kvm {USER}")), "{text}");
        assert!(
            text.contains(&format!("setfacl -m u:{USER}:rw /dev/kvm")),
            "{text}"
        );
    } else {
        eprintln!("*** /dev/kvm is open to everyone here: the doctor check is not exercised");
    }
    assert!(sh(Command::new("usermod").args(["-aG", "kvm", USER]))
        .status
        .success());

    // Someone else's cache and --out directories are refused in one line.
    let theirs = work.join("root-owned");
    std::fs::create_dir_all(&theirs).unwrap();
    let scn = "scenarios/do-exit-race";
    for (env, args) in [
        (
            vec![("PREEMPTOR_CACHE", theirs.to_str().unwrap())],
            vec!["run", scn, "--runs", "1"],
        ),
        (
            vec![],
            vec!["run", scn, "--runs", "1", "--out", theirs.to_str().unwrap()],
        ),
    ] {
        let o = as_user(&work, &xdg, &env, &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("belongs to uid 0"), "{err}");
    }

    // The seed and a C-program scenario, as the user and as root.
    let out = format!("/home/{USER}/out-{}", std::process::id());
    for s in ["do-exit-race", "do-exit-race-c"] {
        let tail = [
            "--kernel", "reverted", "--kernel", "fixed", "--runs", "2", "--json",
        ];
        let scn = format!("scenarios/{s}");
        let mut args = vec!["run", &scn];
        args.extend(tail);
        if s == "do-exit-race" {
            args.extend(["--out", &out]);
        }
        let u = as_user(&work, &xdg, &[], &args);
        assert_eq!(u.status.code(), Some(0), "as {USER}: {s}");
        let r = preemptor(&[&["run", &scn][..], &tail[..]].concat());
        assert_eq!(r.status.code(), Some(0), "as root: {s}");
        let (uv, rv) = (verdicts(&json(&u)), verdicts(&json(&r)));
        assert_eq!(
            uv, rv,
            "{s}: the user's verdicts and kernels differ from root's"
        );
        for k in json(&u)["results"].as_array().unwrap() {
            let p = k["kernel_path"].as_str().unwrap();
            assert!(
                p.starts_with(xdg.join("preemptor").to_str().unwrap()),
                "{s}: the user's kernel {p} is not in its XDG cache"
            );
        }
    }
    assert!(
        Path::new(&out).join("index.html").exists(),
        "the user's --out page"
    );
    for d in [xdg.clone(), PathBuf::from(&out)] {
        let w = writable_by_others(&d);
        assert!(w.is_empty(), "writable by others: {w:?}");
    }
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&out);
    // A kernel tree and two kernels: gigabytes.
    let _ = std::fs::remove_dir_all(&xdg);
}
