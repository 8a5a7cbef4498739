//! The functions a crash report names: where to look for the race.
//!
//! `explore --from-report` starts from a report's frames instead of a
//! hand-given function list. The frames are those of the crash stack (the
//! RIP line and the call trace, interrupt stacks included) and, for
//! KASAN-style reports, of the allocation and free stacks. Frames the
//! unwinder only guessed (`? func+...`) are left out unless they come
//! before a trace's first reliable frame (a warning's true caller often
//! shows so), and so are the generic ones in [`GENERIC_FRAMES`]: they say
//! how the kernel got somewhere, not where a race lives.

use regex::Regex;
use serde::Serialize;
use std::sync::LazyLock;

/// Frames left out of a report's site set, as anchored regexes: entry and
/// exit paths, syscall wrappers (`__x64_sys_X`; `__do_sys_X` and what it
/// calls stay), interrupt, exception and softirq plumbing, the reporting
/// machinery (`dump_stack`, KASAN, `__warn`, `report_bug`), locking
/// primitives (spinlocks, mutexes, rwsem entry points; their slow paths
/// stay), printk, refcount helpers (`refcount_warn_saturate`; the
/// function dropping the reference stays), and the allocator's internals
/// and stack-depot helpers.
pub const GENERIC_FRAMES: &[&str] = &[
    // Entry, exit, kernel threads.
    "entry_SYSCALL_64.*",
    "do_syscall_(64|x64|32_irqs_on)",
    "x64_sys_call",
    "__(x64|ia32)_sys_.*",
    "__se_sys_.*",
    "syscall_exit_.*",
    "exit_to_user_mode.*",
    "ret_from_fork.*",
    "kthread",
    "worker_thread",
    "process_one_work",
    "smpboot_thread_fn",
    // Interrupts, exceptions, softirqs.
    "asm_.*",
    "exc_.*",
    "handle_bug",
    "report_bug",
    "do_error_trap",
    "do_trap",
    "die",
    "__die.*",
    "oops_.*",
    "panic",
    "__warn",
    "warn_slowpath.*",
    "_*refcount_.*",
    "irq_exit.*",
    "__irq_exit_rcu",
    "(__)?sysvec_.*",
    "common_interrupt",
    "__do_softirq",
    "handle_softirqs",
    "run_ksoftirqd",
    // Reporting.
    "dump_stack.*",
    "show_stack",
    "print_address_description.*",
    "print_report",
    "_*kasan_.*",
    "check_memory_region.*",
    "__asan_.*",
    "kmsan_.*",
    "stack_trace_save.*",
    "save_stack.*",
    "set_track.*",
    // Locking primitives.
    "_raw_(spin|read|write)_.*",
    "__raw_(spin|read|write)_.*",
    "do_raw_(spin|read|write)_.*",
    "(native_)?queued_(spin|read|write)_lock_slowpath",
    "_*lock_(acquire|release)",
    "_*mutex_(lock|unlock).*",
    "(down|up)_(read|write).*",
    "rcu_read_(un)?lock.*",
    // printk.
    "_?printk",
    "vprintk.*",
    "console_.*",
    // Allocator internals.
    "kmem_cache_(alloc|free).*",
    "_*kmalloc.*",
    "k(z|v|vz)?alloc.*",
    "k(v)?free.*",
    "_*slab_.*",
    "_*do_kmalloc.*",
];

static GENERIC: LazyLock<Regex> = LazyLock::new(|| {
    let alts: Vec<String> = GENERIC_FRAMES.iter().map(|p| format!("(?:{p})")).collect();
    Regex::new(&format!("^(?:{})$", alts.join("|"))).expect("GENERIC_FRAMES are valid regexes")
});

/// `func+0x1f/0x80`, `func.constprop.0+0x1f/0x80`, optionally after a
/// `[<addr>]`, a `RIP: 0010:` or the `?` of a guessed frame; or a
/// symbolizer's inlined frame, `func file.c:LINE [inline]`.
static FRAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?x)
        (?:^|\s|\]|:)
        (?P<guess>\?\s+)?
        (?P<func>[A-Za-z_][A-Za-z0-9_]*)(?:\.[A-Za-z0-9_.]+)?
        (?:
            \+0x[0-9a-f]+/0x[0-9a-f]+
          | \s+[A-Za-z0-9_/.\-]+\.[ch]:[0-9]+\s+\[inline\]
        )",
    )
    .expect("frame regex")
});

/// Which stack of the report a frame is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stack {
    Crash,
    Alloc,
    Free,
}

/// The functions a report names, in the order it names them, each once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Frames {
    /// (function, stack), clone suffixes (`.constprop.0`) removed.
    pub frames: Vec<(String, Stack)>,
    /// Frames left out as generic (see [`GENERIC_FRAMES`]).
    pub generic: Vec<String>,
}

impl Frames {
    pub fn on(&self, stack: Stack) -> Vec<&str> {
        self.frames
            .iter()
            .filter(|(_, s)| *s == stack)
            .map(|(f, _)| f.as_str())
            .collect()
    }
}

/// The frames of a report's text (a classified report's `text`, or any
/// console text): the crash stack, and the allocation and free stacks
/// when there are some.
pub fn frames(text: &str) -> Frames {
    let mut out = Frames::default();
    let mut stack = Stack::Crash;
    // Guessed frames count only at the top of a trace, before its first
    // reliable one: a function that warned from inlined code often shows
    // its true caller as `? caller+0x..` there.
    let mut top = true;
    for line in text.lines() {
        if line.contains("Allocated by task") {
            stack = Stack::Alloc;
            top = true;
        } else if line.contains("Freed by task") {
            stack = Stack::Free;
            top = true;
        } else if line.contains("Call Trace:") {
            top = true;
        } else if line.contains("The buggy address belongs to")
            || line.contains("Last potentially related work creation")
            || line.contains("Second to last potentially related")
        {
            // What follows describes memory or other work, not this race.
            break;
        }
        for c in FRAME.captures_iter(line) {
            if c.name("guess").is_some() && !top {
                continue;
            }
            if c.name("guess").is_none() && !line.contains("RIP:") {
                top = false;
            }
            let func = c["func"].to_string();
            if GENERIC.is_match(&func) {
                if !out.generic.contains(&func) {
                    out.generic.push(func);
                }
                continue;
            }
            if !out.frames.iter().any(|(f, s)| *f == func && *s == stack) {
                out.frames.push((func, stack));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_stack_without_guesses_and_generic_frames() {
        let text = "\
kernel BUG at kernel/sched/core.c:6603!
invalid opcode: 0000 [#1] PREEMPT SMP
RIP: 0010:do_task_dead+0x43/0x50
Call Trace:
 <TASK>
 ? die+0x2f/0x80
 do_exit+0x6c8/0x9a0
 ? sigprocmask+0x5b/0x5f
 do_group_exit+0x2d/0x80
 __x64_sys_exit_group+0x13/0x20
 do_syscall_64+0x3a/0x90
 entry_SYSCALL_64_after_hwframe+0x63/0xcd
 </TASK>";
        let f = frames(text);
        assert_eq!(
            f.on(Stack::Crash),
            ["do_task_dead", "do_exit", "do_group_exit"]
        );
        assert!(f.generic.contains(&"__x64_sys_exit_group".to_string()));
        assert!(f.generic.contains(&"do_syscall_64".to_string()));
        assert!(
            f.generic.contains(&"die".to_string()),
            "a guess at the top of the trace counts"
        );
    }

    #[test]
    fn kasan_stacks_and_inlined_frames() {
        let text = "\
BUG: KASAN: use-after-free in put_pid+0x1c/0x90
Call Trace:
 dump_stack_lvl+0x4c/0x63
 kasan_report+0xb5/0xe0
 put_pid+0x1c/0x90
 __tty_check_change.part.0 drivers/tty/tty_jobctrl.c:40 [inline]
 tiocspgrp.constprop.0+0x10a/0x170
Allocated by task 31:
 kmem_cache_alloc+0x11b/0x2b0
 alloc_pid+0x5a/0x3f0
Freed by task 32:
 kmem_cache_free+0xe8/0x2f0
 put_pid+0x6e/0x90
 tiocspgrp+0x12a/0x170
The buggy address belongs to the object at ffff888003c4e600
 which belongs to the cache pid of size 112
 some_other+0x1/0x2";
        let f = frames(text);
        assert_eq!(
            f.on(Stack::Crash),
            ["put_pid", "__tty_check_change", "tiocspgrp"]
        );
        assert_eq!(f.on(Stack::Alloc), ["alloc_pid"]);
        assert_eq!(f.on(Stack::Free), ["put_pid", "tiocspgrp"]);
        assert!(!f.frames.iter().any(|(n, _)| n == "some_other"));
    }
}
