//! Kernel bases beyond Debian's packages: a `dir:` tree of the user's,
//! built from a copy (the tree itself is never touched).
use preemptor_e2e::*;
use std::path::PathBuf;

fn cache() -> PathBuf {
    std::env::var_os("PREEMPTOR_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/preemptor"))
}

/// A scenario folder whose one variant is the tree at `base`.
fn scenario(name: &str, base: &str) -> PathBuf {
    let d = tmp(name);
    std::fs::write(
        d.join("scenario.toml"),
        format!(
            "name = \"{name}\"\n[guest]\nworkload = \"hello\"\n\n[kernel.tree]\nbase = \"dir:{base}\"\n"
        ),
    )
    .unwrap();
    d
}

/// Debian's 6.1 source unpacked at another path (kept in the cache, so
/// its copy and build are reused by later runs) serves as a `dir:` base:
/// it builds, boots on both vCPUs, and the tree is left as it was.
#[test]
fn dir_base_builds_a_copy_of_a_kernel_tree() {
    require_kvm();
    let root = cache().join("test-trees");
    let tree = root.join("linux-source-6.1");
    if !tree.join("Makefile").exists() {
        std::fs::create_dir_all(&root).unwrap();
        let st = std::process::Command::new("tar")
            .args(["-xf", "/usr/src/linux-source-6.1.tar.xz", "-C"])
            .arg(&root)
            .status()
            .unwrap();
        assert!(st.success(), "unpack linux-source-6.1");
    }
    let core_c = tree.join("kernel/sched/core.c");
    let before = std::fs::metadata(&core_c).unwrap().modified().unwrap();
    let scn = scenario("dirbase", tree.to_str().unwrap());
    let o = preemptor(&["kernel", "build", scn.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("tree /"), "{}", stdout(&o));
    let o = retry_on_host_flake("dir base boot", || {
        let o = preemptor(&[
            "boot",
            "--scenario",
            scn.to_str().unwrap(),
            "--kernel",
            "tree",
            "--json",
        ]);
        let flaked = boot_flaked(&json(&o));
        (o, flaked)
    });
    let j = json(&o);
    assert_eq!(j["verdict"]["verdict"], "clean", "{j}");
    assert_eq!(j["markers"]["cpus"], 2);
    // Built from a copy: nothing was configured, built or patched in place.
    assert!(
        !tree.join(".config").exists(),
        "the tree was configured in place"
    );
    assert!(
        !tree.join("vmlinux").exists(),
        "the tree was built in place"
    );
    assert_eq!(
        std::fs::metadata(&core_c).unwrap().modified().unwrap(),
        before
    );
}

#[test]
fn bad_dir_bases_are_one_line() {
    let scn = scenario("nodir", "/nonexistent/linux");
    let e = usage_error(&preemptor(&["kernel", "build", scn.to_str().unwrap()]));
    assert!(
        e.contains("scenario.toml:6:") && e.contains("no such directory"),
        "{e}"
    );
    let scn = scenario("notkernel", "/tmp");
    let e = usage_error(&preemptor(&["kernel", "build", scn.to_str().unwrap()]));
    assert!(e.contains("not a Linux source tree"), "{e}");
}

/// The seed's kernels built ACPI-only (no MP table parser: CPUs from the
/// VMM's MADT) bring up both vCPUs and give the seed scenario's verdicts,
/// run by path with the seed's own triggers.
#[test]
fn acpi_only_kernels_give_the_seed_verdicts() {
    require_kvm();
    let o = preemptor(&["kernel", "build", "tests/fixtures/acpi"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let path = |variant: &str| {
        let dir = out
            .lines()
            .find_map(|l| l.strip_prefix(variant)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {variant} in {out}"));
        format!("{dir}/vmlinux")
    };
    let o = retry_on_host_flake("acpi boot", || {
        let o = preemptor(&["boot", "--kernel", &path("fixed-acpi"), "--json"]);
        let flaked = boot_flaked(&json(&o));
        (o, flaked)
    });
    let j = json(&o);
    assert_eq!(j["verdict"]["verdict"], "clean", "{j}");
    assert_eq!(j["markers"]["cpus"], 2, "both CPUs from the MADT");
    for (variant, want) in [("reverted-acpi", "crash"), ("fixed-acpi", "clean")] {
        let k = path(variant);
        let j = retry_on_host_flake(variant, || {
            let o = preemptor(&[
                "run",
                "scenarios/do-exit-race",
                "--kernel",
                &k,
                "--expect",
                want,
                "--json",
            ]);
            assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
            let j = json(&o);
            let flaked = run_flaked(&j);
            (j, flaked)
        });
        let r = &runs(&j)[0];
        assert_eq!(r["goal_reached"], true, "{variant}");
        assert_eq!(r["verdict"]["verdict"], want, "{variant}: {r}");
        assert_eq!(j["ok"], true, "{variant}");
    }
}
