//! The stall engine on a real guest: vCPU 1 stopped 200 ms at its 50th
//! `try_to_wake_up` while vCPU 0 runs on (its timer ticks go on), and the
//! guest still finishes its workload.
use preemptor_e2e::*;
use std::path::Path;
use std::process::Output;

fn boot_with_stall(trace: &Path) -> Output {
    preemptor(&[
        "boot",
        "--kernel",
        "base",
        "--workload",
        "hello",
        "--json",
        "--trace",
        trace.to_str().unwrap(),
        // An idle CPU stops its tick (NO_HZ_IDLE): vCPU 0 may have nothing
        // to do for the whole stall and so show no tick at all. With the
        // periodic tick it ticks at HZ whether busy or idle, so no tick
        // means vCPU 0 was not running.
        "--cmdline",
        "nohz=off",
        "--break",
        "try_to_wake_up,vcpu=1,nth=50,stall=200ms,name=stall1",
        // vCPU 0's timer ticks, no action: its hits show vCPU 0 executing
        // guest-kernel code while vCPU 1 is held.
        "--break",
        "update_process_times,vcpu=0,name=watch0",
    ])
}

#[test]
fn vcpu1_stalls_200ms_at_try_to_wake_up_while_vcpu0_runs() {
    require_kvm();
    let trace = tmp("stall").join("trace.jsonl");
    let o = retry_on_host_flake("stall", || {
        let o = boot_with_stall(&trace);
        let flaked = boot_flaked(&json(&o));
        (o, flaked)
    });
    assert_eq!(
        o.status.code(),
        Some(0),
        "guest finished its workload cleanly"
    );
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |kind: &str| {
        events
            .iter()
            .find(|e| e["kind"] == kind && e["trigger"] == "stall1")
            .unwrap_or_else(|| panic!("no {kind} event"))
    };
    let (fire, start, end, resume) = (
        find("fire"),
        find("stall-start"),
        find("stall-end"),
        find("resume"),
    );
    assert_eq!(fire["vcpu"], 1);
    assert!(fire["detail"].as_str().unwrap().contains("hit 50"));
    let t = |e: &serde_json::Value| e["t_us"].as_u64().unwrap();
    assert!(t(fire) <= t(start) && t(start) < t(end) && t(end) <= t(resume));
    assert!(
        t(end) - t(start) >= 200_000,
        "stall lasted {} us",
        t(end) - t(start)
    );
    let hits0 = events
        .iter()
        .filter(|e| e["trigger"] == "watch0" && e["vcpu"] == 0 && t(e) > t(start) && t(e) < t(end))
        .count();
    assert!(
        hits0 >= 5,
        "vCPU 0 ticked {hits0} times during vCPU 1's 200 ms stall; it should keep running"
    );
    // The diagram on stderr shows the stall in vCPU 1's column.
    assert!(stderr(&o).contains("stalled (200ms)"));
}

/// A site in a function the compiler inlined (`exit_mm`, folded into
/// `do_exit`), named by its own name, is armed in its caller and hit: the
/// workload's exit takes mmap_lock there.
#[test]
fn site_in_an_inlined_function_is_hit() {
    require_kvm();
    let trace = tmp("inlined").join("trace.jsonl");
    let o = retry_on_host_flake("inlined site", || {
        let o = preemptor(&[
            "boot",
            "--json",
            "--trace",
            trace.to_str().unwrap(),
            "--break",
            "exit_mm/call:down_read,name=exitmm",
        ]);
        let flaked = boot_flaked(&json(&o));
        (o, flaked)
    });
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("trigger exitmm at do_exit+0x"),
        "{}",
        stderr(&o)
    );
    let hits = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"exitmm\""))
        .count();
    assert!(hits > 0, "the inlined copy was never hit");
}

/// Random preemption: the chosen vCPU (only) is held at random moments,
/// each hold recorded in the trace, and the guest still completes.
#[test]
fn random_preemption_holds_only_the_chosen_vcpu() {
    require_kvm();
    let d = tmp("preempt");
    let trace = d.join("trace.jsonl");
    let o = preemptor(&[
        "boot",
        "--workload",
        "hello",
        "--preempt",
        "vcpus=1,gap=20ms,hold=500us..2ms",
        "--trace",
        trace.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json(&o)["verdict"]["verdict"], "clean");
    let text = std::fs::read_to_string(&trace).unwrap();
    let holds: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["kind"] == "preempt")
        .collect();
    assert!(
        holds.len() >= 50,
        "a hold every ~20 ms of a boot: {}",
        holds.len()
    );
    assert!(holds.iter().all(|e| e["vcpu"] == 1), "vCPU 1 only");
}
