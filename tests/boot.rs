//! `preemptor boot`: the seed scenario's two kernels come up on 2 vCPUs and run init; bad
//! kernels are refused with one line and status 2.
use preemptor_e2e::*;

#[test]
fn both_kernels_boot_two_cpus_and_run_init() {
    require_kvm();
    for kernel in ["fixed", "reverted"] {
        let log = tmp(kernel).join("console.log");
        let o = retry_on_host_flake(kernel, || {
            let o = preemptor(&[
                "boot",
                "--scenario",
                "scenarios/do-exit-race",
                "--kernel",
                kernel,
                "--workload",
                "hello",
                "--vcpus",
                "2",
                "--json",
                "--log",
                log.to_str().unwrap(),
            ]);
            let flaked = boot_flaked(&json(&o));
            (o, flaked)
        });
        assert_eq!(o.status.code(), Some(0), "{kernel}: {}", stderr(&o));
        let j = json(&o);
        assert_eq!(j["verdict"]["verdict"], "clean", "{kernel}");
        assert_eq!(j["markers"]["cpus"], 2, "{kernel}: both CPUs online");
        assert_eq!(j["markers"]["started"], true);
        assert_eq!(j["markers"]["status"], 0);
        let text = std::fs::read_to_string(&log).unwrap();
        for m in [
            "@@preemptor ready cpus=2",
            "@@preemptor start workload=hello",
            "hello from the preemptor guest",
            "@@preemptor end workload=hello status=0",
        ] {
            assert!(text.contains(m), "{kernel}: console lacks '{m}'");
        }
        assert!(
            stderr(&o).contains("host profile"),
            "boot names its host profile"
        );
    }
}

#[test]
fn missing_kernel_is_a_one_line_error() {
    let o = preemptor(&["boot", "--kernel", "/nonexistent/vmlinux"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(
        e.contains("/nonexistent/vmlinux") && e.contains("does not exist"),
        "{e}"
    );
}

#[test]
fn non_kernel_file_is_a_one_line_error() {
    let f = tmp("notakernel").join("README");
    std::fs::write(&f, "this is not a kernel\n").unwrap();
    let o = preemptor(&["boot", "--kernel", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("is not a kernel"), "{e}");
}

#[test]
fn bad_break_site_is_a_one_line_error() {
    let o = preemptor(&[
        "boot",
        "--kernel",
        "base",
        "--break",
        "no_such_function_xyz,stall=1ms",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("no_such_function_xyz"), "{e}");
}

/// `kernel check` on our kernels passes; on a kernel whose config lacks
/// the serial console it fails naming the option, and `boot` refuses that
/// kernel in one line instead of booting it to a timeout.
#[test]
fn kernel_check_names_what_is_missing() {
    let o = preemptor(&["kernel", "check", "base"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("usable here"));
    let o = preemptor(&[
        "kernel",
        "check",
        "--scenario",
        "scenarios/do-exit-race",
        "fixed-6.12",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));

    // Our vmlinux, with a config beside it that has no serial console.
    let base = json(&preemptor(&["kernel", "check", "base", "--json"]));
    let vmlinux = std::path::PathBuf::from(base["report"]["kernel"].as_str().unwrap());
    let d = tmp("noconsole");
    std::os::unix::fs::symlink(&vmlinux, d.join("vmlinux")).unwrap();
    let config = std::fs::read_to_string(vmlinux.with_file_name("config")).unwrap();
    let config: String = config
        .lines()
        .filter(|l| !l.starts_with("CONFIG_SERIAL_8250_CONSOLE="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(d.join("config"), config).unwrap();
    let k = d.join("vmlinux");
    let o = preemptor(&["kernel", "check", k.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("FAIL  serial console     set CONFIG_SERIAL_8250_CONSOLE=y"),
        "{}",
        stdout(&o)
    );
    let e = usage_error(&preemptor(&["boot", "--kernel", k.to_str().unwrap()]));
    assert!(
        e.contains("cannot run here") && e.contains("CONFIG_SERIAL_8250_CONSOLE=y"),
        "{e}"
    );
}

/// Debian's own VM kernel (linux-image-cloud-amd64, installed by test.sh
/// for this check only: it is never booted): ACPI-only, which the VMM's
/// ACPI tables serve, but without frame pointers or DWARF, and without the
/// host-compat patch this kvm_pvm host needs.
#[test]
fn kernel_check_on_debians_cloud_kernel() {
    let image = std::fs::read_dir("/boot")
        .expect("/boot")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-") && n.ends_with("-cloud-amd64"))
        })
        .expect("no /boot/vmlinuz-*-cloud-amd64: test.sh installs linux-image-cloud-amd64");
    let o = preemptor(&["kernel", "check", image.to_str().unwrap()]);
    let out = stdout(&o);
    assert!(out.contains("CPUs from the ACPI MADT"), "{out}");
    assert!(out.contains("set CONFIG_FRAME_POINTER=y"), "{out}");
    assert!(out.contains("set CONFIG_DEBUG_INFO_DWARF4=y"), "{out}");
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        assert_eq!(o.status.code(), Some(1), "{out}");
        assert!(out.contains("FAIL  host-compat patch"), "{out}");
        assert!(out.contains("NOT usable here"), "{out}");
    }
}
