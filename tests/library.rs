//! The scenario library beyond the seed: each race's reverted kernel
//! crashes with its title under injection, its fixed kernel does not.
use preemptor_e2e::*;

fn run1(scn: &str, kernel: &str) -> serde_json::Value {
    retry_on_host_flake(kernel, || {
        let o = preemptor(&["run", scn, "--kernel", kernel, "--runs", "1", "--json"]);
        assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
        let j = json(&o);
        let flaked = run_flaked(&j);
        (j, flaked)
    })
}

/// One run on each kernel: the reverted one crashes with one of `titles`,
/// the fixed one stays clean, both having reached the window.
fn reverted_crashes_fixed_survives(scn: &str, titles: &[&str]) {
    for (kernel, want) in [("reverted", "crash"), ("fixed", "clean")] {
        let j = run1(scn, kernel);
        let r = &runs(&j)[0];
        assert_eq!(r["goal_reached"], true, "{kernel}: window reached");
        assert_eq!(r["verdict"]["verdict"], want, "{kernel}: {r}");
        if want == "crash" {
            let title = r["verdict"]["title"].as_str().unwrap_or_default();
            assert!(titles.contains(&title), "{kernel}: title {title:?}");
        }
        assert_eq!(j["ok"], true, "{kernel}");
    }
}

/// 153fbd1226fb: O's last put_pi_state() stopped after the decrement, W's
/// exit takes the pi_state at refcount 0.
#[test]
fn futex_pi_exit() {
    require_kvm();
    reverted_crashes_fixed_survives("scenarios/futex-pi-exit", &["WARNING in get_pi_state"]);
}

/// 54ffccbf053b: TIOCSPGRP through the master and through the slave lock
/// different locks (reverted) and put the same pid twice.
#[test]
fn tty_tiocspgrp() {
    require_kvm();
    reverted_crashes_fixed_survives(
        "scenarios/tty-tiocspgrp",
        &["WARNING: refcount bug in put_pid"],
    );
}

/// a11ddb37bf36: expunge_all() reloads msr->r_tsk after publishing the
/// wakeup; the receiver has returned and its next system call has written
/// over the slot (NULL nearly always; rarely some other word, taken for a
/// task: 1 run in 10 ended in its refcount, measured 2026-12-06).
#[test]
fn ipc_msg_expunge() {
    require_kvm();
    reverted_crashes_fixed_survives(
        "scenarios/ipc-msg-expunge",
        &[
            "BUG: unable to handle kernel NULL pointer dereference in __wake_q_add",
            "BUG: unable to handle kernel paging request in __wake_q_add",
            "WARNING: refcount bug in put_task_struct",
        ],
    );
}

/// a11ddb37bf36, sem part: a V completing a sleeper's P reloads
/// q->sleeper after publishing the status; the sleeper has timed out,
/// returned, and zeroed the slot with its next system call.
#[test]
fn ipc_sem_wake() {
    require_kvm();
    reverted_crashes_fixed_survives(
        "scenarios/ipc-sem-wake",
        &[
            "BUG: unable to handle kernel NULL pointer dereference in __wake_q_add",
            "BUG: unable to handle kernel paging request in __wake_q_add",
        ],
    );
}
