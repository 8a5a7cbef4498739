use super::*;

const SEED_BUG: &str = "\
[   10.500000][    T1] Run /init as init process
[   10.600001][    T1] ------------[ cut here ]------------
[   10.600002][    T1] kernel BUG at kernel/sched/core.c:6760!
[   10.600003][    T1] invalid opcode: 0000 [#1] PREEMPT SMP KASAN NOPTI
[   10.600004][    T1] CPU: 0 PID: 1 Comm: init Not tainted 6.8.0 #1
[   10.600005][    T1] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996)
[   10.600006][    T1] RIP: 0010:do_task_dead+0x8c/0x90
[   10.600007][    T1] Code: 0f 0b 90 48 8b 05 e1 12 c4 0d 65 48 8b 1d 41 f8
[   10.600008][    T1] RSP: 0018:ffffc90000017d58 EFLAGS: 00010046
[   10.600009][    T1] Call Trace:
[   10.600010][    T1]  <TASK>
[   10.600011][    T1]  do_exit+0x1a2b/0x2a40
[   10.600012][    T1]  do_group_exit+0xd3/0x2a0
[   10.600013][    T1]  __x64_sys_exit_group+0x3e/0x50
[   10.600014][    T1]  do_syscall_64+0xd2/0x260
[   10.600015][    T1]  entry_SYSCALL_64_after_hwframe+0x77/0x7f
[   10.600016][    T1]  </TASK>
[   10.600017][    T1] ---[ end trace 0000000000000000 ]---
[   10.600018][    T1] Kernel panic - not syncing: Fatal exception
";

/// The title settles one line after the RIP line that names the function,
/// not before; a report cut there is not called corrupted.
#[test]
fn settles_after_the_line_naming_the_frame() {
    let upto =
        |n: usize| -> String { SEED_BUG.lines().take(n).map(|l| format!("{l}\n")).collect() };
    // Lines: 1 init, 2 cut here, 3 BUG, 4 opcode, 5 CPU, 6 hw, 7 RIP, 8 Code.
    for n in 3..=7 {
        assert!(settled(&upto(n)).is_none(), "settled after {n} lines");
    }
    let r = settled(&upto(8)).expect("settled after the line after RIP");
    assert_eq!(r.title, "kernel BUG in do_task_dead");
    assert_eq!(r.crash_type, "BUG");
    assert!(!r.corrupted);
    // The same cut, classified as a whole log, misses its call trace.
    assert!(classify(&upto(8)).unwrap().corrupted);
    assert!(!classify_partial(&upto(8)).unwrap().corrupted);
}

#[test]
fn kernel_bug_names_the_function_not_the_line() {
    let log = SEED_BUG;
    let rep = classify(log).expect("crash");
    assert_eq!(rep.title, "kernel BUG in do_task_dead");
    assert_eq!(rep.crash_type, "BUG");
    assert_eq!(rep.frame.as_deref(), Some("do_task_dead"));
    assert!(!rep.corrupted);
    assert_eq!(
        &log[rep.start..rep.start + 36],
        "[   10.600002][    T1] kernel BUG at"
    );
    assert!(rep
        .text
        .contains("kernel BUG at kernel/sched/core.c:6760!\n"));
}

#[test]
fn interleaved_cpus_do_not_lend_their_frames() {
    // The other CPU prints its own RIP and trace in the middle of the
    // report; without grouping by caller id its frames would win.
    let log = "\
[   20.000001][ T4242] general protection fault, probably for non-canonical address 0xdffffc0000000001: 0000 [#1] SMP KASAN
[   20.000002][   C1] NMI backtrace for cpu 1
[   20.000003][   C1] RIP: 0010:native_safe_halt+0xe/0x10
[   20.000004][ T4242] KASAN: null-ptr-deref in range [0x0000000000000008-0x000000000000000f]
[   20.000005][ T4242] CPU: 0 PID: 4242 Comm: syz-executor.3 Not tainted 6.1.0 #1
[   20.000006][   C1] Call Trace:
[   20.000007][   C1]  <IRQ>
[   20.000008][   C1]  default_idle+0x1c/0x30
[   20.000009][ T4242] RIP: 0010:tcp_close+0x41/0x120 net/ipv4/tcp.c:2900
[   20.000010][ T4242] Code: 48 c1 e8 03 80 3c 02 00 0f 85
[   20.000011][   C1]  do_idle+0x2a4/0x3a0
[   20.000012][ T4242] Call Trace:
[   20.000013][ T4242]  <TASK>
[   20.000014][ T4242]  inet_release+0x12e/0x270
[   20.000015][   C1]  cpu_startup_entry+0x14/0x20
[   20.000016][ T4242]  __sock_release+0xcd/0x290
[   20.000017][ T4242]  sock_close+0x18/0x20
[   20.000018][ T4242]  __fput+0x27c/0xa90
[   20.000019][ T4242]  </TASK>
";
    let rep = classify(log).expect("crash");
    assert_eq!(rep.title, "general protection fault in tcp_close");
    assert_eq!(rep.crash_type, "DoS");
    assert!(!rep.corrupted, "{}", rep.text);
    assert!(!rep.text.contains("default_idle"));
}

#[test]
fn cut_off_report_is_corrupted() {
    let log = "\
[   31.000000] random: crng init done
[   31.100000] BUG: unable to handle page fault for address: ffffffffffffffd8
[   31.100001] #PF: supervisor read access in kernel mode
[   31.100002] #PF: error_code(0x0000) - not-present page
";
    let rep = classify(log).expect("crash");
    assert_eq!(
        rep.title,
        "BUG: unable to handle kernel paging request in corrupted"
    );
    assert_eq!(rep.crash_type, "MEMORY_SAFETY_BUG");
    assert!(rep.corrupted);
    assert_eq!(rep.frame.as_deref(), Some("corrupted"));
}

#[test]
fn warning_skips_reporting_frames_and_normalises() {
    let log = "\
------------[ cut here ]------------
WARNING: CPU: 1 PID: 3187 at net/core/stream.c:205 sk_stream_kill_queues+0x3ee/0x480
Modules linked in:
CPU: 1 PID: 3187 Comm: syz-executor.0 Not tainted 6.1.0 #1
RIP: 0010:sk_stream_kill_queues+0x3ee/0x480 net/core/stream.c:205
Call Trace:
 <TASK>
 inet_csk_destroy_sock+0x1a3/0x440
 tcp_close+0x99/0xc0
 </TASK>
";
    let rep = classify(log).expect("crash");
    assert_eq!(rep.title, "WARNING in sk_stream_kill_queues");
    assert_eq!(rep.crash_type, "WARNING");
    assert!(!rep.corrupted);
}

#[test]
fn hung_task_groups_rcu_waiters() {
    let log = "\
[  300.000000][   T29] INFO: task kworker/u4:3:812 blocked for more than 143 seconds.
[  300.000001][   T29]       Not tainted 6.1.0 #1
[  300.000002][   T29] task:kworker/u4:3    state:D stack:24360 pid:812
[  300.000003][   T29] Call Trace:
[  300.000004][   T29]  <TASK>
[  300.000005][   T29]  __schedule+0xae3/0x2cf0
[  300.000006][   T29]  schedule+0xde/0x1b0
[  300.000007][   T29]  synchronize_rcu_expedited+0x592/0x6f0
[  300.000008][   T29]  ops_exit_list+0xb0/0x170
[  300.000009][   T29]  </TASK>
";
    let rep = classify(log).expect("crash");
    assert_eq!(rep.title, "INFO: task hung in synchronize_rcu");
    assert_eq!(rep.crash_type, "HANG");
}

#[test]
fn normal_boot_is_not_a_crash() {
    let log = "\
[    0.000000] Linux version 6.8.0 (builder@host) (gcc 13.2.0) #1 SMP PREEMPT_DYNAMIC
[    0.000000] Command line: console=ttyS0 panic=-1
[    0.010000] rcu: Preemptible hierarchical RCU implementation.
[    0.010001] rcu: \tRCU event tracing is enabled.
[    0.020000] ODEBUG: selftest passed
[    0.120000] Run /init as init process
[    0.130000] random: crng init done
preemptor-guest login: 
";
    assert_eq!(classify(log), None);
    assert_eq!(classify(""), None);
}

#[test]
fn title_normalisation() {
    assert_eq!(
        normalize_title("KASAN: slab-out-of-bounds Read in foo+0x12/0x40 at ffff88801234abcd"),
        "KASAN: slab-out-of-bounds Read in foo at ADDR"
    );
    assert_eq!(
        normalize_title("kernel BUG at fs/ext4/inode.c:1234!"),
        "kernel BUG at fs/ext4/inode.c:LINE!"
    );
    assert_eq!(
        normalize_title("task syz-executor.4:12345 on CPU#1"),
        "task syz-executor on CPU"
    );
    assert_eq!(
        normalize_title("in cfg80211_netdev_notifier_call"),
        "in cfg80211_netdev_notifier_call"
    );
    let long = "x".repeat(300);
    assert_eq!(sanitize_title(&long).len(), 120);
}

#[test]
fn bare_oops_header() {
    let log = "\
[    5.000000] Oops: 0002 [#1] PREEMPT SMP NOPTI
[    5.000001] CPU: 1 PID: 77 Comm: modprobe Not tainted 6.8.0 #1
[    5.000002] RIP: 0010:my_driver_probe+0x2a/0x80
[    5.000003] Call Trace:
[    5.000004]  <TASK>
[    5.000005]  really_probe+0x1b0/0x3a0
[    5.000006]  </TASK>
";
    let rep = classify(log).expect("crash");
    assert_eq!(rep.title, "Oops in my_driver_probe");
    assert_eq!(rep.crash_type, "DoS");
    assert!(classify("[    1.0] Oops: something odd in user space\n").is_none());
}
