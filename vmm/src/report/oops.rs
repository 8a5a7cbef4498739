//! The catalogue of kernel crash messages and how each one is titled.
//!
//! Patterns and title formats follow syzkaller's `pkg/report` so that the
//! titles we produce can be compared with (and deduplicated against) the
//! titles syzbot gives the same crashes.

use super::stack::{call_trace, compile, line, rip, Extractor, Part, StackFmt, RIP_FRAME};
use regex::Regex;
use std::sync::LazyLock;

/// A family of messages sharing a literal header such as `BUG:`.
pub(super) struct Oops {
    pub header: &'static str,
    pub formats: Vec<Format>,
    /// Lines that contain the header but are not crashes.
    pub suppressions: Vec<Regex>,
    /// For headers too common in ordinary text: the line must match this.
    pub shape: Option<Regex>,
}

impl Oops {
    pub fn matches(&self, line: &str) -> bool {
        line.contains(self.header)
            && self.shape.as_ref().is_none_or(|r| r.is_match(line))
            && !self.suppressions.iter().any(|s| s.is_match(line))
    }
}

pub(super) struct Format {
    pub title: Regex,
    /// Must also match for the format to apply; its captures feed the title.
    pub report: Option<Regex>,
    /// Go-style `%[N]v` template: captures first, then one frame per trace.
    pub fmt: &'static str,
    pub stack: Option<StackFmt>,
    /// The message legitimately comes without a call trace.
    pub no_stack_trace: bool,
    /// The message is itself a sign that the real report was lost.
    pub corrupted: bool,
}

fn f(title: &str, fmt: &'static str) -> Format {
    Format {
        title: compile(title),
        report: None,
        fmt,
        stack: None,
        no_stack_trace: false,
        corrupted: false,
    }
}

impl Format {
    fn report(mut self, re: &str) -> Self {
        self.report = Some(compile(re));
        self
    }
    fn stack(mut self, s: StackFmt) -> Self {
        self.stack = Some(s);
        self
    }
    fn no_trace(mut self) -> Self {
        self.no_stack_trace = true;
        self
    }
    fn corrupted(mut self) -> Self {
        self.corrupted = true;
        self
    }
}

fn oops(header: &'static str, formats: Vec<Format>, suppressions: &[&str]) -> Oops {
    Oops {
        header,
        formats,
        suppressions: suppressions.iter().map(|s| compile(s)).collect(),
        shape: None,
    }
}

fn trace() -> StackFmt {
    StackFmt::new(vec![call_trace(), Part::Trace])
}

fn rip_trace() -> StackFmt {
    StackFmt::new(vec![rip(), call_trace(), Part::Trace])
}

fn rip_only() -> StackFmt {
    StackFmt::new(vec![rip()])
}

/// WARNINGs on x86 trap through `ud2`, so the RIP line names the warning
/// site; older kernels and other arches only print the call trace.
fn warning(skip: &[&str]) -> StackFmt {
    let first = format!("(?:{RIP_FRAME}|--- interrupt: [0-9]+ at {{{{FUNC}}}})");
    StackFmt::new(vec![line(&first), Part::Trace])
        .or_else(vec![call_trace(), Part::Trace])
        .skip(skip)
}

fn lockdep_at(head: &str, middle: &str) -> String {
    format!(r"{head}(?:.*\n)+?.*{middle}(?:.*\n)+?.*at: (?:{{{{PC}}}} +)?{{{{FUNC}}}}")
}

pub(super) static OOPSES: LazyLock<Vec<Oops>> = LazyLock::new(build);

#[allow(clippy::vec_init_then_push)]
fn build() -> Vec<Oops> {
    let kmsan_stack = |skip: &[&str]| {
        StackFmt::new(vec![
            Part::Trace,
            line("(Local variable .* created at:|Uninit was created at:)"),
            Part::Trace,
        ])
        .skip(skip)
    };
    let kfence_stack = || {
        StackFmt::new(vec![
            line(r"BUG: KFENCE: (?:[a-z\- ]+) in {{FUNC}}"),
            Part::Trace,
        ])
    };
    let mut v = Vec::new();
    v.push(oops(
        "BUG:",
        vec![
            f("BUG: KASAN:", "KASAN: %[1]v %[3]v in %[4]v")
                .report(r"BUG: KASAN: ([a-z\-]+) in {{FUNC}}(?:.*\n)+?.*(Read|Write) (?:of size|at addr) (?:[0-9a-f]+)")
                .stack(
                    StackFmt::new(vec![
                        line(r"BUG: KASAN: (?:[a-z\-]+) in {{FUNC}}"),
                        call_trace(),
                        Part::Trace,
                    ])
                    .skip(&["kernel_fault", "tag_check", "mem_abort", "^el1_", "^el1h_"]),
                ),
            f("BUG: KASAN:", "KASAN: invalid-free in %[2]v")
                .report(r"BUG: KASAN: (?:double-free or invalid-free|double-free|invalid-free) in {{FUNC}}")
                .stack(
                    StackFmt::new(vec![
                        line(r"BUG: KASAN: (?:double-free or invalid-free|double-free|invalid-free) in {{FUNC}}"),
                        call_trace(),
                        Part::Trace,
                    ])
                    .skip(&["slab_", "kfree", "vunmap", "vfree"]),
                ),
            f(r"BUG: KASAN: ([a-z\-]+) on address(?:.*\n)+?.*(Read|Write) of size ([0-9]+)", "KASAN: %[1]v %[2]v"),
            f(r"BUG: KASAN: (.*)", "KASAN: %[1]v").corrupted(),
            f("BUG: KMSAN: kernel-usb-infoleak", "KMSAN: kernel-usb-infoleak in %[2]v")
                .report("BUG: KMSAN: kernel-usb-infoleak in {{FUNC}}")
                .stack(kmsan_stack(&[
                    "alloc_skb",
                    "usb_submit_urb",
                    "usb_start_wait_urb",
                    "usb_bulk_msg",
                    "usb_interrupt_msg",
                    "usb_control_msg",
                ]))
                .no_trace(),
            f("BUG: KMSAN:", "KMSAN: %[1]v in %[3]v")
                .report(r"BUG: KMSAN: ([a-z\-]+) in {{FUNC}}")
                .stack(kmsan_stack(&[
                    "alloc_skb",
                    "netlink_ack",
                    "netlink_rcv_skb",
                    "_encrypt$",
                    "^(?:crypto|cipher|drbg|rng)_",
                ]))
                .no_trace(),
            f("BUG: KCSAN: data-race", "KCSAN: %[1]v").report("BUG: KCSAN: (.*)").no_trace(),
            f("BUG: KCSAN:", "KCSAN: %[1]v").report("BUG: KCSAN: (.*)").no_trace(),
            f(
                "BUG: KFENCE: (use-after-free|out-of-bounds) (read|write) in {{FUNC}}",
                "KFENCE: %[1]v %[2]v in %[4]v",
            )
            .stack(kfence_stack()),
            f("BUG: KFENCE: invalid free in {{FUNC}}", "KFENCE: invalid free in %[2]v")
                .stack(kfence_stack())
                .no_trace(),
            f("BUG: KFENCE: invalid (read|write) in {{FUNC}}", "KFENCE: invalid %[1]v in %[3]v")
                .stack(kfence_stack()),
            f("BUG: KFENCE: memory corruption in {{FUNC}}", "KFENCE: memory corruption in %[2]v")
                .stack(kfence_stack())
                .no_trace(),
            f(
                "BUG: (?:unable to handle kernel paging request|unable to handle page fault for address|Unable to handle kernel data access)",
                "BUG: unable to handle kernel paging request in %[1]v",
            )
            .stack(rip_trace()),
            f(
                "BUG: (?:unable to handle kernel NULL pointer dereference|kernel NULL pointer dereference|Kernel NULL pointer dereference)",
                "BUG: unable to handle kernel NULL pointer dereference in %[1]v",
            )
            .stack(rip_trace()),
            // The second half of this header is a separate printk and may be lost.
            f("BUG: (?:unable to handle kernel|Unable to handle kernel)", "BUG: unable to handle kernel").corrupted(),
            f(
                "BUG: (spinlock|rwlock) (lockup suspected|already unlocked|recursion|cpu recursion|bad magic|wrong owner|wrong CPU|trylock failure on UP)",
                "BUG: %[1]v %[2]v in %[3]v",
            )
            .stack(trace().skip(&["spin_", "_lock", "_unlock"])),
            f("BUG: soft lockup", "BUG: soft lockup in %[1]v").stack(rip_trace().extractor(Extractor::Stall)),
            f(r"BUG: .*still has locks held!", "BUG: still has locks held in %[1]v")
                .report(r"BUG: .*still has locks held!(?:.*\n)+?.*{{PC}} +{{FUNC}}"),
            f("BUG: scheduling while atomic", "BUG: scheduling while atomic in %[1]v")
                .stack(trace().skip(&["schedule"])),
            f("BUG: lock held when returning to user space", "BUG: lock held when returning to user space in %[1]v")
                .report(&lockdep_at("BUG: lock held when returning to user space", "leaving the kernel with locks still held"))
                .no_trace(),
            f("BUG: bad unlock balance detected!", "BUG: bad unlock balance in %[1]v")
                .stack(StackFmt::new(vec![line("{{PC}} +{{FUNC}}"), call_trace(), Part::Trace])),
            f("BUG: held lock freed!", "BUG: held lock freed in %[1]v")
                .report(r"BUG: held lock freed!(?:.*\n)+?.*{{PC}} +{{FUNC}}"),
            f("BUG: Bad rss-counter state", "BUG: Bad rss-counter state").no_trace(),
            f("BUG: non-zero nr_ptes on freeing mm", "BUG: non-zero nr_ptes on freeing mm").no_trace(),
            f("BUG: non-zero nr_pmds on freeing mm", "BUG: non-zero nr_pmds on freeing mm").no_trace(),
            // Block device and fs type in the message would split one bug.
            f("BUG: Dentry .* still in use", "BUG: Dentry still in use in %[1]v")
                .report(r"BUG: Dentry .* still in use \([0-9]+\) \[(unmount) of ([^\]]+)\]"),
            f("BUG: Bad page (state|cache)", "BUG: Bad page %[1]v in %[2]v").stack(
                StackFmt::new(vec![line("page last allocated"), Part::Trace]).skip(&[
                    "(free|put|get|update|release)_page",
                    "free_unref",
                    "^_*folio",
                    "truncate_inode_pages",
                    "page_frag_free",
                    "alloc",
                    "vmap",
                    "page_owner",
                ]),
            ),
            f("BUG: Bad page map", "BUG: Bad page map"),
            f("BUG: workqueue lockup", "BUG: workqueue lockup").no_trace(),
            f(
                "BUG: sleeping function called from invalid context at (.*)",
                "BUG: sleeping function called from invalid context in %[2]v",
            )
            .stack(trace()),
            f(r"BUG: using ([a-z_]+)\(\) in preemptible", "BUG: using %[1]v() in preemptible code in %[2]v")
                .stack(trace().skip(&["dump_stack", "preemption", "preempt", "debug_", "processor_id", "this_cpu"])),
            f("BUG: workqueue leaked lock or atomic", "BUG: workqueue leaked lock or atomic in %[1]v")
                .report(r"BUG: workqueue leaked lock or atomic(?:.*\n)+?.*last function: ([a-zA-Z0-9_]+)\n")
                .no_trace(),
            f("BUG: memory leak", "memory leak in %[1]v").stack(
                StackFmt::new(vec![line(r"backtrace(?: \(crc [[:xdigit:]]*\))?:"), Part::Trace]).skip(&[
                    "kmemleak",
                    "mmap",
                    "kmem",
                    "slab",
                    "alloc",
                    "create_object",
                    "idr_get",
                    "list_lru_init",
                    "kasprintf",
                    "kvasprintf",
                    "pcpu_create",
                    "strdup",
                    "strndup",
                    "memdup",
                ]),
            ),
            f("BUG: .*stack guard page was hit at", "BUG: stack guard page was hit in %[1]v")
                .stack(rip_trace().extractor(Extractor::Stall)),
            // arm's spelling of what x86 reports as a lockdep WARNING.
            f("BUG: Invalid wait context", "WARNING: locking bug in %[1]v")
                .stack(trace().skip(&["lock_sock", "release_sock"])),
            f(r"BUG:[[:space:]]*(?:\n|$)", "BUG: corrupted").corrupted(),
        ],
        &["ODEBUG:", "Boot_DEBUG:", "xlog_status:", "DEBUG:", "BUG: no syscalls can create resource"],
    ));
    v.push(oops(
        "WARNING:",
        vec![
            f(r"WARNING: .*lib/debugobjects\.c.* (?:debug_print|debug_check|at)", "WARNING: ODEBUG bug in %[1]v").stack(
                warning(&[
                    "debug_",
                    "rcu",
                    "hrtimer_",
                    "timer_",
                    "work_",
                    "percpu_",
                    "vunmap",
                    "vfree",
                    "__free_",
                    "debug_check",
                    "kobject_",
                ]),
            ),
            f(r"WARNING: .*mm/usercopy\.c.* (?:usercopy_warn|at)", "WARNING: bad usercopy in %[1]v")
                .stack(warning(&["usercopy", "__check"])),
            f(r"WARNING: .*lib/kobject\.c.* (?:kobject_|at)", "WARNING: kobject bug in %[1]v")
                .stack(warning(&["kobject_"])),
            f(r"WARNING: .*fs/proc/generic\.c.* (?:proc_register|at)", "WARNING: proc registration bug in %[1]v")
                .stack(warning(&["proc_"])),
            f(r"WARNING: .*lib/refcount\.c.* (?:refcount_|at)", "WARNING: refcount bug in %[1]v")
                .stack(warning(&["refcount", "kobject_"])),
            f(r"WARNING: .*kernel/locking/lockdep\.c.*lock_", "WARNING: locking bug in %[1]v")
                .stack(warning(&["lock_sock", "release_sock"])),
            f(r"WARNING: .*still has locks held!", "WARNING: still has locks held in %[1]v")
                .report(r"WARNING: .*still has locks held!(?:.*\n)+?.*at: {{FUNC}}"),
            f("WARNING: Nested lock was not taken", "WARNING: nested lock was not taken in %[1]v").stack(warning(&[])),
            f(
                "WARNING: lock held when returning to user space",
                "WARNING: lock held when returning to user space in %[1]v",
            )
            .report(&lockdep_at("WARNING: lock held when returning to user space", "leaving the kernel with locks still held"))
            .no_trace(),
            f(r"WARNING: .*mm/.*\.c.* k?.?malloc", "WARNING: kmalloc bug in %[1]v")
                .stack(warning(&["kmalloc", "krealloc", "slab", "kmem"])),
            f(r"WARNING: .*mm/vmalloc.c.*__vmalloc_node", "WARNING: zero-size vmalloc in %[1]v").stack(warning(&[])),
            f("WARNING: .* usb_submit_urb", "WARNING in %[1]v/usb_submit_urb").stack(warning(&[
                "usb_submit_urb",
                "usb_start_wait_urb",
                "usb_bulk_msg",
                "usb_interrupt_msg",
                "usb_control_msg",
            ])),
            // Header layout of kernels from late 2025 on.
            f(r"WARNING: {{SRC}} at 0x\d+, CPU#\d+", "WARNING in %[2]v").stack(warning(&[])),
            f("WARNING: .* at {{SRC}} {{FUNC}}", "WARNING in %[3]v").stack(warning(&[])),
            f("WARNING: {{SRC}} at {{FUNC}}", "WARNING in %[3]v").stack(warning(&[])),
            f(r"WARNING: \[.*\] {{SRC}} at {{FUNC}}.*", "WARNING in %[3]v").stack(warning(&[])),
            f("WARNING: possible circular locking dependency detected", "possible deadlock in %[1]v")
                .report(r"WARNING: possible circular locking dependency detected(?:.*\n)+?.*is trying to acquire lock")
                .stack(
                    StackFmt::new(vec![
                        line("at: (?:{{PC}} +)?{{FUNC}}"),
                        line("at: (?:{{PC}} +)?{{FUNC}}"),
                        Part::Trace,
                    ])
                    // Work items take their own pseudo-locks; those deadlocks
                    // belong to the work, not to the workqueue core.
                    .skip(&["process_one_work", "flush_workqueue", "drain_workqueue", "destroy_workqueue"]),
                ),
            f("WARNING: possible irq lock inversion dependency detected", "possible deadlock in %[1]v").report(
                &lockdep_at("WARNING: possible irq lock inversion dependency detected", "just changed the state of lock"),
            ),
            f("WARNING: .*-safe -> .*-unsafe lock order detected", "possible deadlock in %[1]v")
                .stack(StackFmt::new(vec![line("which became (?:.*) at:"), Part::Trace])),
            f("WARNING: possible recursive locking detected", "possible deadlock in %[1]v")
                .report(&lockdep_at("WARNING: possible recursive locking detected", "is trying to acquire lock")),
            f("WARNING: inconsistent lock state", "inconsistent lock state in %[2]v")
                .report(&lockdep_at("WARNING: inconsistent lock state", "takes"))
                .stack(trace()),
            f("WARNING: suspicious RCU usage", "WARNING: suspicious RCU usage in %[2]v")
                .report(r"WARNING: suspicious RCU usage(?:.*\n)+?.*?{{SRC}}")
                .stack(trace().skip(&["rcu", "kmem", "slab"])),
            f(
                "WARNING: kernel stack regs at [0-9a-f]+ in [^ ]* has bad '([^']+)' value",
                "WARNING: kernel stack regs has bad '%[1]v' value",
            )
            .no_trace(),
            f(
                "WARNING: kernel stack frame pointer at [0-9a-f]+ in [^ ]* has bad value",
                "WARNING: kernel stack frame pointer has bad value",
            )
            .no_trace(),
            f("WARNING: bad unlock balance detected!", "WARNING: bad unlock balance in %[1]v")
                .stack(StackFmt::new(vec![line("{{PC}} +{{FUNC}}"), call_trace(), Part::Trace])),
            f("WARNING: held lock freed!", "WARNING: held lock freed in %[1]v")
                .report(r"WARNING: held lock freed!(?:.*\n)+?.*at:(?: {{PC}})? +{{FUNC}}"),
            f("WARNING: kernel stack regs .* has bad 'bp' value", "WARNING: kernel stack regs has bad value").no_trace(),
            f("WARNING: kernel stack frame pointer .* has bad value", "WARNING: kernel stack regs has bad value")
                .no_trace(),
            f(r"WARNING:[[:space:]]*(?:\n|$)", "WARNING: corrupted").corrupted(),
        ],
        &[
            "WARNING: /etc/ssh/moduli does not exist, using fixed modulus",
            "WARNING: workqueue cpumask: online intersect > possible intersect",
            "WARNING: [Tt]he mand mount option",
            r"WARNING: Unsupported flag value\(s\) of 0x%x in DT_FLAGS_1",
            "WARNING: Unprivileged eBPF is enabled with eIBRS",
            r"WARNING: fbcon: Driver '(.*)' missed to adjust virtual screen size",
            "WARNING: See https.* for mitigation options.",
            "WARNING: kernel not compiled with CPU_SRSO",
            r"EXT4-[Ff][Ss](?: \(.*\))?:",
            "(?i)warning: .* uses (deprecated v2 capabilities|wireless extensions)",
            r"XFS \(\w+\): WARNING",
        ],
    ));
    let info_lockdep = |head: &str, middle: &str| {
        format!(r"INFO: {head} \](?:.*\n)+?.*{middle}(?:.*\n)+?.*at: {{{{PC}}}} +{{{{FUNC}}}}")
    };
    v.push(oops(
        "INFO:",
        vec![
            f("INFO: possible circular locking dependency detected", "possible deadlock in %[1]v").report(
                &info_lockdep("possible circular locking dependency detected", "is trying to acquire lock"),
            ),
            f("INFO: possible irq lock inversion dependency detected", "possible deadlock in %[1]v").report(
                &info_lockdep("possible irq lock inversion dependency detected", "just changed the state of lock"),
            ),
            f("INFO: SOFTIRQ-safe -> SOFTIRQ-unsafe lock order detected", "possible deadlock in %[1]v").report(
                &info_lockdep("SOFTIRQ-safe -> SOFTIRQ-unsafe lock order detected", "is trying to acquire"),
            ),
            f("INFO: possible recursive locking detected", "possible deadlock in %[1]v")
                .report(&info_lockdep("possible recursive locking detected", "is trying to acquire lock")),
            f("INFO: inconsistent lock state", "inconsistent lock state in %[1]v")
                .report(&info_lockdep("inconsistent lock state", "takes")),
            f(
                // rcu_tasks* flavours report stalled tasks, not CPUs, but
                // it is the same class of bug.
                "INFO: rcu_(?:preempt|sched|bh|tasks[a-z_]*) (?:self-)?detected(?: expedited)? stalls?",
                "INFO: rcu detected stall in %[1]v",
            )
            .stack(
                StackFmt::new(vec![line("apic_timer_interrupt"), rip(), Part::Trace])
                    .or_else(vec![line("(?:apic_timer_interrupt|Exception stack|el1h_64_irq)"), Part::Trace])
                    .skip(&["apic_timer_interrupt", "rcu"])
                    .extractor(Extractor::Stall),
            ),
            f("INFO: trying to register non-static key", "INFO: trying to register non-static key in %[1]v")
                .stack(trace().skip(&["stack", "lock", "IRQ"])),
            f("INFO: suspicious RCU usage", "INFO: suspicious RCU usage in %[2]v")
                .report(r"INFO: suspicious RCU usage(?:.*\n)+?.*?{{SRC}}")
                .stack(trace().skip(&["rcu", "kmem", "slab"])),
            // Since 6.16 tasks in D state waiting for I/O are told apart.
            f("INFO: task .* blocked (?:in I/O wait )?for more than [0-9]+ seconds", "INFO: task hung in %[1]v")
                .stack(trace().extractor(Extractor::Hang)),
            f("INFO: task .* can't die for more than .* seconds", "INFO: task can't die in %[1]v")
                .stack(trace().skip(&["schedule"])),
            // Old-style KASAN reports whose header got lost.
            f("INFO: (Freed|Allocated) in (.*)", "INFO: %[1]v in %[2]v").corrupted(),
            f(r"INFO:[[:space:]]*(?:\n|$)", "INFO: corrupted").corrupted(),
        ],
        &[
            "INFO: lockdep is turned off",
            "INFO: Stall ended before state dump start",
            "INFO: NMI handler",
            "INFO: recovery required on readonly filesystem",
            "(handler|interrupt).*took too long",
            "INFO: sys_.* is not present in /proc/kallsyms",
            "INFO: no syscalls can create resource",
            "rmt_storage:INFO:",
            "_INFO:",
        ],
    ));
    v.push(oops(
        "Unable to handle kernel",
        vec![f(
            "Unable to handle kernel (paging request|NULL pointer dereference|access to user memory)",
            "BUG: unable to handle kernel %[1]v in %[2]v",
        )
        .stack(rip_trace())],
        &[],
    ));
    v.push(oops(
        "general protection fault",
        vec![f(
            "general protection fault.*:",
            "general protection fault in %[1]v",
        )
        .stack(rip_trace())],
        // User-space segfault notices.
        &[r"general protection fault .* error:\d+ in "],
    ));
    v.push(oops(
        "stack segment: ",
        vec![f("stack segment: ", "stack segment fault in %[1]v").stack(rip_trace())],
        &[],
    ));
    v.push(oops(
        "Kernel panic",
        vec![
            f("Kernel panic - not syncing: stack-protector:", "kernel panic: stack is corrupted in %[1]v")
                .report("Kernel panic - not syncing: stack-protector: Kernel stack is corrupted in: {{FUNC}}")
                .no_trace(),
            f("Kernel panic - not syncing: stack-protector:", "kernel panic: stack is corrupted in %[1]v")
                .report("Kernel panic - not syncing: stack-protector: Kernel stack is corrupted in: [a-f0-9]+")
                .stack(trace().skip(&["stack_chk"])),
            f("Kernel panic - not syncing: corrupted stack end", "kernel panic: corrupted stack end in %[1]v")
                .report("Kernel panic - not syncing: corrupted stack end detected inside scheduler")
                .stack(trace().skip(&["schedule", "retint_kernel"]).extractor(Extractor::Stall)),
            f("Kernel panic - not syncing: kernel stack overflow", "kernel stack overflow in %[1]v")
                .stack(trace().skip(&["bad_stack"]).extractor(Extractor::Stall)),
            f("Kernel panic - not syncing: Attempted to kill init!", "kernel panic: Attempted to kill init!"),
            f(
                "Kernel panic - not syncing: Couldn't open N_TTY ldisc for [^ ]+ --- error -[0-9]+",
                "kernel panic: Couldn't open N_TTY ldisc",
            ),
            // These follow a BUG/WARNING/hang report; seeing them first means
            // the real header was lost.
            f("Kernel panic - not syncing: Fatal exception", "kernel panic: Fatal exception").corrupted(),
            f("Kernel panic - not syncing: panic_on_warn set", "kernel panic: panic_on_warn set").corrupted(),
            f("Kernel panic - not syncing: hung_task: blocked tasks", "kernel panic: hung_task: blocked tasks")
                .corrupted(),
            f("Kernel panic - not syncing: (.*)", "kernel panic: %[1]v"),
        ],
        &[],
    ));
    v.push(oops(
        "PANIC: double fault",
        vec![f("PANIC: double fault", "PANIC: double fault in %[1]v").stack(rip_only())],
        &[],
    ));
    v.push(oops(
        "rust_kernel: panicked",
        vec![f("rust_kernel: panicked", "%[1]v in %[2]v")
            .report(r"rust_kernel: panicked at [^\n]*?\n(.+?)\n")
            .stack(trace().skip(&[r"__rustc::rust_begin_unwind"]))],
        &[],
    ));
    v.push(oops(
        "kernel BUG",
        vec![
            f("kernel BUG at mm/usercopy.c", "BUG: bad usercopy in %[1]v")
                .stack(trace().skip(&["usercopy", "__check"])),
            f(
                "kernel BUG at lib/list_debug.c",
                "BUG: corrupted list in %[1]v",
            )
            .stack(trace()),
            // skb helpers BUG_ON bad arguments; the caller passed them.
            f("kernel BUG at (.*)", "kernel BUG in %[2]v").stack(rip_trace().skip(&["^skb_"])),
        ],
        &[],
    ));
    v.push(oops(
        "Kernel BUG",
        vec![f("Kernel BUG (.*)", "kernel BUG %[1]v")],
        &[],
    ));
    v.push(oops(
        "BUG kmalloc-",
        vec![f(
            "BUG kmalloc-.*: Object already free",
            "BUG: Object already free",
        )],
        &[],
    ));
    v.push(oops(
        "divide error:",
        vec![f("divide error: ", "divide error in %[1]v").stack(rip_only())],
        &[],
    ));
    // Misspelt by the IDTENTRY conversion of the divide error handler.
    v.push(oops(
        "divide_error:",
        vec![f("divide_error: ", "divide error in %[1]v").stack(rip_only())],
        &[],
    ));
    v.push(oops(
        "invalid opcode:",
        vec![f("invalid opcode: ", "invalid opcode in %[1]v").stack(rip_only())],
        &[],
    ));
    v.push(oops(
        "UBSAN:",
        vec![
            f("UBSAN:", "UBSAN: undefined-behaviour in %[1]v")
                .report("UBSAN: Undefined behaviour in")
                .stack(trace().skip(&["ubsan", "overflow"])),
            f(
                "UBSAN: array-index-out-of-bounds in",
                "UBSAN: array-index-out-of-bounds in %[1]v",
            )
            .stack(trace().skip(&["ubsan", "overflow"])),
            f("UBSAN:", "UBSAN: %[1]v in %[2]v")
                .report("UBSAN: (.*?) in")
                .stack(trace().skip(&["ubsan", "overflow"])),
        ],
        &[],
    ));
    v.push(oops(
        "Booting the kernel.",
        vec![f("^Booting the kernel", "unexpected kernel reboot").no_trace()],
        // Boot messages echoed back by a fuzzed mount option.
        &["Parsing ELF|Decompressing Linux|Unknown parameter '"],
    ));
    v.push(oops(
        "unregister_netdevice: waiting for",
        vec![f(
            "unregister_netdevice: waiting for (?:.*) to become free",
            "unregister_netdevice: waiting for DEV to become free",
        )
        .no_trace()],
        &[],
    ));
    v.push(oops(
        "VFS: Close: file count is 0",
        vec![f(
            "VFS: Close: file count is 0",
            "VFS: Close: file count is zero (use-after-free)",
        )
        .no_trace()],
        &[],
    ));
    v.push(oops(
        "VFS: Busy inodes after unmount",
        vec![f(
            "VFS: Busy inodes after unmount",
            "VFS: Busy inodes after unmount (use-after-free)",
        )
        .no_trace()],
        &[],
    ));
    v.push(oops(
        "Internal error:",
        vec![f("Internal error:", "Internal error in %[1]v").stack(rip_trace())],
        &[],
    ));
    v.push(oops(
        "Unhandled fault:",
        vec![f("Unhandled fault:", "Unhandled fault in %[1]v").stack(rip_trace())],
        &[],
    ));
    v.push(oops(
        "Alignment trap:",
        vec![f("Alignment trap:", "Alignment trap in %[1]v").stack(rip_trace())],
        &[],
    ));
    v.push(oops(
        "trusty: panic",
        vec![
            f(
                "trusty: panic.* ASSERT FAILED",
                "trusty: ASSERT FAILED: %[1]v",
            )
            .report(r"trusty: panic \(.*?\):(?: DEBUG)? ASSERT FAILED at \(.*?\): (.+)")
            .no_trace(),
            f(
                "trusty: panic.* ASSERT FAILED.*: *(.*)",
                "trusty: ASSERT FAILED: %[1]v",
            )
            .corrupted(),
            f("trusty: panic", "trusty: panic: %[1]v")
                .report(r"trusty: panic \(.*?\): (.+)")
                .no_trace(),
        ],
        &[],
    ));
    v.push(oops(
        "fatal error:",
        vec![f("fatal error:", "go runtime error").no_trace()],
        &["ALSA", "fatal error: cannot create timer"],
    ));
    // A bare die() header whose more specific first line was lost or is
    // unknown; matched last so any specific header on the line wins.
    // die() always numbers the oops ("[#1]"), user-space "Oops:" does not.
    let mut bare = oops(
        "Oops:",
        vec![f("Oops: ", "Oops in %[1]v").stack(rip_trace())],
        &[],
    );
    bare.shape = Some(compile(r"Oops: .*\[#[0-9]+\]"));
    v.push(bare);
    // Messages of the fuzzer's own user-space parts.
    v.push(oops(
        "SYZFAIL:",
        vec![f("SYZFAIL:(.*)", "SYZFAIL:%[1]v").no_trace()],
        &[],
    ));
    v.push(oops(
        "SYZFATAL:",
        vec![f("SYZFATAL:(.*)", "SYZFATAL:%[1]v").no_trace()],
        &[],
    ));
    v.push(oops(
        "panic:",
        vec![f("panic:(.*)", "panic:%[1]v").no_trace()],
        // skb_panic() and friends, and boot chatter of some boards.
        &[
            "_panic:",
            "xlog_status:",
            r"ddb\.onpanic:",
            "evtlog_status:",
        ],
    ));
    v
}
