//! Symbol and site resolution against the real guest kernels that
//! `guest/kernel/build.sh` builds (Linux 6.1, tinyconfig-based, DWARF 4).
//!
//! These tests fail, never skip, when the kernels are missing: run
//! `guest/kernel/build.sh` first. Offsets and addresses differ between
//! builds, so assertions go through the resolver's own answers (sites are
//! cross-checked against each other, the disassembly and the source lines)
//! except for source line numbers and a few ABI-stable struct offsets.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use preemptor::debug::symbols::{Error, Site, Symbols};

/// Line of `WRITE_ONCE(p->__state, TASK_RUNNING)` in `ttwu_do_wakeup()`,
/// Debian linux-source-6.1 (`grep -n` of kernel/sched/core.c).
const TTWU_RUNNING_LINE: u64 = 3659;
/// `check_preempt_curr(rq, p, wake_flags)` just above it.
const TTWU_CHECK_PREEMPT_LINE: u64 = 3658;
/// `rq = __task_rq_lock(p, &rf)` in `ttwu_runnable()`.
const TTWU_RUNNABLE_RQ_LOCK_LINE: u64 = 3746;
/// `__schedule(SM_NONE)` in `do_task_dead()`.
const DO_TASK_DEAD_SCHEDULE_LINE: u64 = 6602;
/// kernel/locking/rwsem.c, the reader wait loop of
/// `rwsem_down_read_slowpath()`: `set_current_state(state)` and the
/// `smp_load_acquire(&waiter.task)` that follows it.
const RWSEM_SET_STATE_LINE: u64 = 1081;
const RWSEM_WAITER_TASK_LINE: u64 = 1082;

/// The seed scenario's kernels: `fixed` is the base, `reverted` the base
/// plus the scenario's revert patch (`guest/kernel/build.sh --paths`).
fn kernel_dir(variant: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("guest/kernel/build.sh");
    let mut cmd = Command::new(&script);
    cmd.arg("--paths");
    if variant == "reverted" {
        cmd.arg("--patch")
            .arg(root.join("scenarios/do-exit-race/revert-do-exit-fix.patch"));
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "guest kernel '{variant}' is not built ({} --paths exited {}: {}); run \
         `preemptor kernel build scenarios/do-exit-race` first (./test.sh does)",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn load(variant: &str) -> Symbols {
    let vmlinux = kernel_dir(variant).join("vmlinux");
    let start = Instant::now();
    let syms = Symbols::load(&vmlinux).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("loaded {} in {:?}", vmlinux.display(), start.elapsed());
    syms
}

fn fixed() -> &'static Symbols {
    static S: OnceLock<Symbols> = OnceLock::new();
    S.get_or_init(|| load("fixed"))
}

fn reverted() -> &'static Symbols {
    static S: OnceLock<Symbols> = OnceLock::new();
    S.get_or_init(|| load("reverted"))
}

fn one(syms: &Symbols, site: &str) -> Site {
    let sites = syms.resolve(site).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sites.len(), 1, "{site}: {sites:#?}");
    eprintln!("{site} -> {}", sites[0]);
    sites.into_iter().next().unwrap()
}

/// The reason of a site error, which must be `Error::Site`.
fn site_error(syms: &Symbols, site: &str) -> String {
    match syms.resolve(site) {
        Err(Error::Site { reason, .. }) => {
            eprintln!("{site} -> error: {reason}");
            reason
        }
        other => panic!("{site}: expected a site error, got {other:?}"),
    }
}

fn loc(file: &str, line: u64) -> Option<String> {
    Some(format!("{file}:{line}"))
}

#[test]
fn missing_vmlinux_is_an_error() {
    let err = Symbols::load(Path::new("/nonexistent/vmlinux")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn load_is_fast() {
    let vmlinux = kernel_dir("fixed").join("vmlinux");
    let start = Instant::now();
    let syms = Symbols::load(&vmlinux).unwrap();
    let took = start.elapsed();
    eprintln!("load: {took:?}");
    assert!(took < Duration::from_secs(2), "loading took {took:?}");
    assert!(syms.function("try_to_wake_up").is_ok());
}

#[test]
fn functions_and_symbols() {
    let s = fixed();
    let f = s.function("try_to_wake_up").unwrap();
    assert_eq!(f.name, "try_to_wake_up");
    assert!(f.size > 0x40, "{f:?}");
    assert_eq!(s.symbol_addr("try_to_wake_up"), Some(f.addr));
    assert_eq!(s.symbolize(f.addr), Some(("try_to_wake_up".into(), 0)));
    assert_eq!(s.symbolize(f.addr + 5), Some(("try_to_wake_up".into(), 5)));
    assert_eq!(s.symbolize(0x1000), None);

    // Real or a `.constprop.N` clone depending on the build.
    let w = s.function("ttwu_do_wakeup").unwrap();
    assert!(
        w.name == "ttwu_do_wakeup" || w.name.starts_with("ttwu_do_wakeup."),
        "{w:?}"
    );

    // In this build only the clone exists.
    let slow = s.function("__alloc_pages_slowpath").unwrap();
    assert_eq!(slow.name, "__alloc_pages_slowpath.constprop.0");

    // Two statics of the same name (from two headers' inline copies).
    match s.function("IS_ERR_OR_NULL") {
        Err(e @ Error::Ambiguous { .. }) => {
            let msg = e.to_string();
            assert_eq!(msg.matches("IS_ERR_OR_NULL@0x").count(), 2, "{msg}");
        }
        other => panic!("expected ambiguity, got {other:?}"),
    }
    assert!(matches!(
        s.function("no_such_function_xyz"),
        Err(Error::NoFunction(_))
    ));

    // Per-cpu: the address is the offset in the per-cpu area, as the
    // kernel's `%gs:` accesses use it.
    let current = s.symbol_addr("current_task").expect("current_task");
    assert!(current < 0x10_0000, "{current:#x}");
    let uses = s
        .disasm(&f)
        .unwrap()
        .into_iter()
        .filter(|i| i.text.contains(&format!("%gs:{current:#x},")))
        .inspect(|i| assert!(i.text.ends_with("# current_task"), "{}", i.text))
        .count();
    assert!(uses > 0, "try_to_wake_up never reads current_task");
    assert_eq!(s.symbol_addr("no_such_symbol_xyz"), None);
}

#[test]
fn disassembly() {
    let s = fixed();
    let f = s.function("try_to_wake_up").unwrap();
    let insns = s.disasm(&f).unwrap();
    assert_eq!(insns[0].text, "push %rbp");
    assert_eq!(insns[0].offset, 0);
    let mut next = 0;
    for i in &insns {
        assert_eq!(i.offset, next, "gap before {i:?}");
        assert_eq!(i.addr, f.addr + i.offset);
        next += i.len as u64;
    }
    assert_eq!(next, f.size);
    assert!(insns.iter().any(|i| i.text == "ret"));
    assert!(
        insns.iter().all(|i| i.location.is_some()),
        "instructions without a line: {:?}",
        insns
            .iter()
            .filter(|i| i.location.is_none())
            .collect::<Vec<_>>()
    );
    assert!(insns.iter().any(|i| i
        .location
        .as_deref()
        .is_some_and(|l| l.starts_with("kernel/sched/core.c:"))));
    let call = insns.iter().find(|i| i.text.starts_with("call ")).unwrap();
    assert!(
        call.text.contains(" <") && call.text.ends_with('>'),
        "{}",
        call.text
    );
}

#[test]
fn function_and_offset_sites() {
    let s = fixed();
    let f = s.function("try_to_wake_up").unwrap();
    let insns = s.disasm(&f).unwrap();

    let entry = one(s, "try_to_wake_up");
    assert_eq!((entry.addr, entry.offset), (f.addr, 0));
    assert_eq!(entry.function, "try_to_wake_up");
    assert_eq!(entry.text, "push %rbp");

    let target = &insns[7];
    let hex = one(s, &format!("try_to_wake_up+{:#x}", target.offset));
    assert_eq!(
        (hex.addr, hex.offset, &hex.text),
        (target.addr, target.offset, &target.text)
    );
    assert_eq!(hex.location, target.location);
    let dec = one(s, &format!("try_to_wake_up+{}", target.offset));
    assert_eq!(dec, hex);

    let long = insns.iter().find(|i| i.len > 2).unwrap();
    let reason = site_error(s, &format!("try_to_wake_up+{:#x}", long.offset + 1));
    assert_eq!(
        reason,
        format!(
            "try_to_wake_up+{:#x} is inside the instruction at +{:#x} ({})",
            long.offset + 1,
            long.offset,
            long.text
        )
    );
    let reason = site_error(s, &format!("try_to_wake_up+{:#x}", f.size));
    assert!(reason.contains("outside the function"), "{reason}");
    let reason = site_error(s, "try_to_wake_up+0x100000");
    assert!(reason.contains("outside the function"), "{reason}");

    let reason = site_error(s, "try_to_wake_up+zz");
    assert!(reason.contains("bad offset"), "{reason}");
    assert!(matches!(
        s.resolve("no_such_function_xyz+4"),
        Err(Error::NoFunction(_))
    ));
}

#[test]
fn line_sites() {
    let s = fixed();
    let site = format!("kernel/sched/core.c:{TTWU_RUNNING_LINE}");
    let sites = s.resolve(&site).unwrap();
    for x in &sites {
        eprintln!("{site} -> {x}");
    }
    assert!(!sites.is_empty());
    let wakeup = s.function("ttwu_do_wakeup").unwrap();
    let store = one(s, "ttwu_do_wakeup/store:task_struct.__state");
    for x in &sites {
        assert_eq!(x.function, wakeup.name);
        assert_eq!(x.location, loc("kernel/sched/core.c", TTWU_RUNNING_LINE));
    }
    // The statement starts at or before its store.
    assert!(sites[0].addr <= store.addr, "{sites:?} vs {store:?}");

    // Any unambiguous tail of the path works.
    assert_eq!(
        s.resolve(&format!("sched/core.c:{TTWU_RUNNING_LINE}"))
            .unwrap(),
        sites
    );
    assert_eq!(
        s.resolve(&format!("./kernel/sched/core.c:{TTWU_RUNNING_LINE}"))
            .unwrap(),
        sites
    );
    // `core.c` alone is ambiguous here: kernel/events/core.c has code at
    // that line too. Either way it must not pick a wrong file silently.
    match s.resolve(&format!("core.c:{TTWU_RUNNING_LINE}")) {
        Ok(v) => assert_eq!(v, sites),
        Err(Error::Site { reason, .. }) => {
            eprintln!("core.c:{TTWU_RUNNING_LINE} -> error: {reason}");
            assert!(reason.contains("kernel/sched/core.c"), "{reason}");
        }
        Err(e) => panic!("{e}"),
    }

    // A header line expands wherever it is inlined: `current` is read
    // through arch/x86/include/asm/current.h in many functions.
    let current = s.resolve("arch/x86/include/asm/current.h:15").unwrap();
    let functions: std::collections::BTreeSet<_> = current.iter().map(|x| &x.function).collect();
    eprintln!(
        "current.h:15 -> {} sites in {} functions",
        current.len(),
        functions.len()
    );
    assert!(functions.len() > 10, "{current:?}");

    let reason = site_error(s, "kernel/sched/core.c:1");
    assert!(reason.contains("no statement"), "{reason}");
    let reason = site_error(s, "no/such/file.c:10");
    assert!(reason.contains("no file matching"), "{reason}");
}

#[test]
fn pattern_sites() {
    let s = fixed();
    let core = "kernel/sched/core.c";

    let store = one(s, "ttwu_do_wakeup/store:task_struct.__state");
    assert!(store.function.starts_with("ttwu_do_wakeup"));
    assert!(
        store.text.starts_with("mov") && store.text.ends_with(&format!("{:#x}(%rsi)", 0x18)),
        "{}",
        store.text
    );
    assert_eq!(store.location, loc(core, TTWU_RUNNING_LINE));

    let check = one(s, "ttwu_do_wakeup/call:check_preempt_curr");
    assert!(
        check.text.starts_with("call ") && check.text.ends_with("<check_preempt_curr>"),
        "{}",
        check.text
    );
    assert_eq!(check.location, loc(core, TTWU_CHECK_PREEMPT_LINE));
    assert!(check.function == store.function && check.addr < store.addr);
    // `/next` is the instruction right after the call.
    let after = one(s, "ttwu_do_wakeup/call:check_preempt_curr/next");
    assert_eq!(after.addr, check.addr + 5);

    let rq_lock = one(s, "try_to_wake_up/call:__task_rq_lock");
    assert_eq!(rq_lock.function, "try_to_wake_up");
    assert!(
        rq_lock.text.ends_with("<__task_rq_lock>"),
        "{}",
        rq_lock.text
    );
    assert_eq!(rq_lock.location, loc(core, TTWU_RUNNABLE_RQ_LOCK_LINE));

    // rwsem_down_read_slowpath stores to ->__state three times: the
    // loop's set_current_state() (an xchg: smp_store_mb), the TASK_RUNNING
    // on the signal path and the one after the loop. #1 is the xchg, and
    // `/next` is the `smp_load_acquire(&waiter.task)` load after it.
    let reason = site_error(s, "rwsem_down_read_slowpath/store:task_struct.__state");
    assert!(
        reason.starts_with("3 instructions match") && reason.contains("#1 +0x"),
        "{reason}"
    );
    let set_state = one(s, "rwsem_down_read_slowpath/store:task_struct.__state#1");
    assert!(
        set_state.text.starts_with("xchg ") && set_state.text.ends_with("0x18(%r15)"),
        "{}",
        set_state.text
    );
    assert_eq!(
        set_state.location,
        loc("kernel/locking/rwsem.c", RWSEM_SET_STATE_LINE)
    );
    let load = one(
        s,
        "rwsem_down_read_slowpath/store:task_struct.__state#1/next",
    );
    assert!(
        load.addr > set_state.addr && load.text.starts_with("mov "),
        "{}",
        load.text
    );
    assert_eq!(
        load.location,
        loc("kernel/locking/rwsem.c", RWSEM_WAITER_TASK_LINE)
    );
    let reason = site_error(s, "rwsem_down_read_slowpath/store:task_struct.__state#4");
    assert!(reason.contains("only 3 match"), "{reason}");

    let sched = one(s, "do_task_dead/call:__schedule");
    assert!(sched.text.ends_with("<__schedule>"), "{}", sched.text);
    assert_eq!(sched.location, loc(core, DO_TASK_DEAD_SCHEDULE_LINE));
    // What follows __schedule() is BUG().
    assert_eq!(one(s, "do_task_dead/call:__schedule/next").text, "ud2");

    // Loads: ttwu reads p->on_rq (twice: `READ_ONCE(p->on_rq)` and
    // `task_on_rq_queued()` under the rq lock).
    let reason = site_error(s, "try_to_wake_up/load:task_struct.on_rq");
    assert!(
        reason.contains("#1 +0x") && reason.contains("0x68(%r"),
        "{reason}"
    );
    let on_rq = one(s, "try_to_wake_up/load:task_struct.on_rq#1");
    assert!(on_rq.addr < rq_lock.addr, "{on_rq} vs {rq_lock}");

    let reason = site_error(s, "do_task_dead/call:no_such_function_xyz");
    assert!(reason.contains("no direct call"), "{reason}");
    let reason = site_error(s, "do_task_dead/load:task_struct.comm");
    assert!(reason.contains("reads memory at [reg+0x"), "{reason}");
    assert!(matches!(
        s.resolve("do_task_dead/store:task_struct.no_such_member"),
        Err(Error::NoMember { .. })
    ));
    let reason = site_error(s, "do_task_dead/jmp:__schedule");
    assert!(reason.contains("unknown pattern kind"), "{reason}");
}

#[test]
fn reverted_kernel_patterns() {
    // The same pattern strings hold on the other build, at other offsets.
    let s = reverted();
    let dead = one(s, "do_task_dead/store:task_struct.__state");
    assert!(dead.text.starts_with("movl $0x80,0x18(%r"), "{}", dead.text);
    let sched = one(s, "do_task_dead/call:__schedule");
    assert!(sched.addr > dead.addr);
    assert_eq!(
        sched.location,
        loc("kernel/sched/core.c", DO_TASK_DEAD_SCHEDULE_LINE)
    );
    for site in [
        "ttwu_do_wakeup/store:task_struct.__state",
        "ttwu_do_wakeup/call:check_preempt_curr",
        "try_to_wake_up/call:__task_rq_lock",
        "rwsem_down_read_slowpath/store:task_struct.__state#1/next",
    ] {
        one(s, site);
    }
}

#[test]
fn member_offsets() {
    let s = fixed();
    let off = |t: &str, m: &str| s.member_offset(t, m).unwrap_or_else(|e| panic!("{e}"));
    let state = off("task_struct", "__state");
    let on_rq = off("task_struct", "on_rq");
    let pid = off("task_struct", "pid");
    let comm = off("task_struct", "comm");
    let pi_lock = off("task_struct", "pi_lock");
    eprintln!("task_struct: __state {state:#x} on_rq {on_rq:#x} pid {pid:#x} comm {comm:#x} pi_lock {pi_lock:#x}");
    assert_eq!(state, 0x18);
    assert_eq!(on_rq, 0x68);
    assert!(on_rq < pid && pid < comm, "pid {pid:#x} comm {comm:#x}");
    assert_eq!(off("struct task_struct", "pid"), pid);

    // Cross-check with the code: try_to_wake_up computes &p->pi_lock for
    // raw_spin_lock_irqsave().
    let f = s.function("try_to_wake_up").unwrap();
    let lea = format!("lea {pi_lock:#x}(%r");
    assert!(
        s.disasm(&f)
            .unwrap()
            .iter()
            .any(|i| i.text.starts_with(&lea)),
        "no `{lea}..` in try_to_wake_up"
    );

    // Members of anonymous structs/unions: page.lru sits in
    // `union { struct { struct list_head lru; ...` right after flags.
    assert_eq!(off("page", "flags"), 0);
    assert_eq!(off("page", "lru"), 8);
    // Member paths, and typedef'd struct names.
    assert_eq!(
        off("task_struct", "se.on_rq"),
        off("task_struct", "se") + off("sched_entity", "on_rq")
    );
    assert_eq!(off("spinlock_t", "rlock"), 0);

    assert!(matches!(
        s.member_offset("no_such_struct_xyz", "x"),
        Err(Error::NoType(_))
    ));
    assert!(matches!(
        s.member_offset("task_struct", "no_such_member"),
        Err(Error::NoMember { .. })
    ));
    assert!(matches!(
        s.member_offset("task_struct", "pid.x"),
        Err(Error::NoMember { .. })
    ));
}

/// A vmlinux without `.symtab` (and so without DWARF either, as
/// `strip --strip-all` drops both) falls back to the System.map beside it.
#[test]
fn stripped_vmlinux_uses_system_map() {
    let dir = kernel_dir("fixed");
    let tmp = std::env::temp_dir().join(format!("preemptor-symbols-test-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let stripped = tmp.join("vmlinux");
    let status = Command::new("objcopy")
        .arg("--strip-all")
        .arg(dir.join("vmlinux"))
        .arg(&stripped)
        .status()
        .expect("objcopy (binutils) is needed to make a stripped vmlinux");
    assert!(status.success());

    let no_map = Symbols::load(&stripped).unwrap_err();
    assert!(matches!(no_map, Error::NoSymbols { .. }), "{no_map}");

    std::fs::copy(dir.join("System.map"), tmp.join("System.map")).unwrap();
    let s = Symbols::load(&stripped);
    let _ = std::fs::remove_dir_all(&tmp);
    let s = s.unwrap();

    let full = fixed();
    let f = s.function("try_to_wake_up").unwrap();
    let g = full.function("try_to_wake_up").unwrap();
    assert_eq!(f.addr, g.addr);
    // System.map has no sizes: the body runs to the next symbol.
    assert!(f.size >= g.size, "{f:?} vs {g:?}");
    assert_eq!(
        s.symbol_addr("current_task"),
        full.symbol_addr("current_task")
    );
    assert_eq!(s.symbolize(g.addr + 3), Some(("try_to_wake_up".into(), 3)));

    let site = one(&s, "try_to_wake_up/call:__task_rq_lock");
    let with_dwarf = one(full, "try_to_wake_up/call:__task_rq_lock");
    assert_eq!((site.addr, &site.text), (with_dwarf.addr, &with_dwarf.text));
    assert_eq!(site.location, None);
    assert!(matches!(
        s.member_offset("task_struct", "pid"),
        Err(Error::NoDwarf(_))
    ));
}

/// Functions the compiler inlined (`-Os`) are named by their own name:
/// each inlined copy, in its caller, with the call's file:line; patterns
/// are scoped to the copy's ranges, so one site fits both builds.
#[test]
fn inlined_functions_resolve_to_their_copies() {
    for s in [fixed(), reverted()] {
        let copies = s.inlined("ttwu_runnable").unwrap();
        assert_eq!(copies.len(), 1, "{copies:?}");
        let c = &copies[0];
        assert!(c.caller.name.starts_with("try_to_wake_up"), "{c:?}");
        assert!(
            c.call_site
                .as_deref()
                .is_some_and(|l| l.starts_with("kernel/sched/core.c:")),
            "{c:?}"
        );
        assert!(c.contains(c.entry));

        // The rq lock taken inside the copy: the call at its source line.
        let site = one(s, "ttwu_runnable/call:__task_rq_lock");
        assert_eq!(
            site.location,
            loc("kernel/sched/core.c", TTWU_RUNNABLE_RQ_LOCK_LINE)
        );
        assert!(c.contains(site.addr));
        assert_eq!(site.function, c.caller.name);
        assert!(site
            .inlined
            .as_deref()
            .unwrap()
            .contains("inlined into try_to_wake_up"));
        // Named by caller too; the same address.
        assert_eq!(
            one(s, "ttwu_runnable@try_to_wake_up/call:__task_rq_lock").addr,
            site.addr
        );
        // The bare name is the copy's first instruction.
        assert_eq!(one(s, "ttwu_runnable").addr, c.entry);
        // An offset into a copy means nothing.
        let reason = site_error(s, "ttwu_runnable+0x4");
        assert!(reason.contains("inlined"), "{reason}");
        assert!(matches!(
            s.resolve("ttwu_runnable@do_exit"),
            Err(Error::NoFunction(m)) if m.contains("inlined into: try_to_wake_up")
        ));
    }
}

/// `portable_site` names an instruction in the pattern language, with the
/// struct the DWARF and the loads before it give the base register: the
/// seed's hand-written sites come back as themselves (the task's state
/// store through `current`, a per-cpu pointer; the waker's through its
/// parameter `p`), and a member of a pointer loaded from a member
/// (`p->sched_class->task_woken`) is named so, unless a name that
/// matches once names it too. Every stall point of the
/// functions explore searches for the seed gets a name that resolves back
/// to exactly its address, and most get a portable one.
#[test]
fn portable_names() {
    let syms = reverted();
    let round_trip = |site: &str| {
        let s = one(syms, site);
        let p = syms.portable_site(s.addr).unwrap();
        assert!(p.portable, "{site}: {p:?}");
        assert_eq!(p.site, site, "the name of {site} at {:#x}", s.addr);
    };
    round_trip("rwsem_down_read_slowpath/store:task_struct.__state#1");
    round_trip("rwsem_down_read_slowpath/store:task_struct.__state#1/next");
    round_trip("ttwu_do_wakeup/store:task_struct.__state");
    round_trip("ttwu_do_wakeup/call:check_preempt_curr");
    round_trip("ttwu_do_wakeup/load:sched_class.task_woken#2");
    // The first load of p->sched_class->task_woken is also the
    // instruction after the state store; the name that matches once wins
    // over the indexed one (a patch adding a load before it shifts `#N`).
    round_trip("ttwu_do_wakeup/store:task_struct.__state/next");
    assert_eq!(
        one(syms, "ttwu_do_wakeup/load:sched_class.task_woken#1").addr,
        one(syms, "ttwu_do_wakeup/store:task_struct.__state/next").addr
    );
    // A function's entry is its name; a clone's base name finds it.
    let f = syms.function("ttwu_do_wakeup").unwrap();
    assert_eq!(syms.portable_site(f.addr).unwrap().site, "ttwu_do_wakeup");
    let (mut all, mut portable) = (0, 0);
    for name in [
        "rwsem_down_read_slowpath",
        "ttwu_do_wakeup",
        "try_to_wake_up",
    ] {
        let f = syms.function(name).unwrap();
        for pt in syms.stall_points(&f).unwrap() {
            let p = syms.portable_site(pt.addr).unwrap();
            let back = syms.resolve(&p.site).unwrap();
            assert_eq!(back.len(), 1, "{} ({}) -> {back:?}", p.site, pt.site);
            assert_eq!(back[0].addr, pt.addr, "{} ({})", p.site, pt.site);
            all += 1;
            portable += p.portable as usize;
        }
    }
    eprintln!("{portable} of {all} stall points have a portable name");
    assert!(portable * 10 >= all * 8, "{portable} of {all}");
}
