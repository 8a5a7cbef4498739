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
