use std::path::PathBuf;
use std::time::Instant;
use preemptor::debug::symbols::*;

fn kernel(variant: &str) -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guest/kernel/build.sh");
    let out = std::process::Command::new(&script).arg("--paths").output().unwrap();
    let s = String::from_utf8(out.stdout).unwrap();
    let dir = s.lines().find_map(|l| l.strip_prefix(&format!("{variant} "))).unwrap();
    PathBuf::from(dir).join("vmlinux")
}

#[test]
fn explore() {
    let t = Instant::now();
    let s = Symbols::load(&kernel("fixed")).unwrap();
    eprintln!("load {:?}", t.elapsed());
    for site in ["try_to_wake_up", "try_to_wake_up+0x1b", "try_to_wake_up+0x1c", "try_to_wake_up+0x1ce", "kernel/sched/core.c:3659", "core.c:3659",
        "ttwu_do_wakeup/store:task_struct.__state", "ttwu_do_wakeup/call:check_preempt_curr", "try_to_wake_up/call:__task_rq_lock",
        "rwsem_down_read_slowpath/store:task_struct.__state", "rwsem_down_read_slowpath/store:task_struct.__state#1/next", "do_task_dead/call:__schedule",
        "try_to_wake_up/load:task_struct.on_rq", "include/linux/sched.h:229", "sched/core.c:6597", "kernel/sched/core.c:1", "try_to_wake_up/load:task_struct.se.on_rq"] {
        let t = Instant::now();
        match s.resolve(site) {
            Ok(v) => for x in v { eprintln!("{site}: {x} [{:?}]", t.elapsed()) },
            Err(e) => eprintln!("{site}: ERR {e} [{:?}]", t.elapsed()),
        }
    }
    for (t, m) in [("task_struct","__state"),("task_struct","on_rq"),("task_struct","pid"),("task_struct","comm"),("task_struct","pi_lock"),("task_struct","on_cpu"),("task_struct","se.on_rq"),("rw_semaphore","wait_list"), ("spinlock_t","rlock"), ("task_struct","nope")] {
        let t0 = Instant::now();
        eprintln!("{t}.{m} = {:x?} [{:?}]", s.member_offset(t, m).map_err(|e| e.to_string()), t0.elapsed());
    }
    eprintln!("current_task {:x?}", s.symbol_addr("current_task"));
    eprintln!("{:x?}", s.symbolize(0xffffffff8104beb0 + 0x26));
    let f = s.function("do_task_dead").unwrap();
    for i in s.disasm(&f).unwrap() { eprintln!("{:x} +{:x} {} {:?}", i.addr, i.offset, i.text, i.location); }
}
