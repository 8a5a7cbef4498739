//! Picking the guilty function out of a report's RIP line and call traces.
//!
//! The frame that names a crash is rarely the top one: the top frames are
//! usually reporting machinery (`dump_stack`, `__warn`, KASAN hooks), locking
//! or string helpers that the buggy caller merely passed through. Skipping
//! them keeps one bug under one title however it is reached.

use regex::Regex;
use std::sync::LazyLock;

/// Expands the shorthand used in the pattern tables.
///
/// Rust's `regex` reads `\<`/`\>` as word boundaries, so the PC pattern uses
/// bare angle brackets.
pub(super) fn compile(re: &str) -> Regex {
    let re = re
        .replace("{{ADDR}}", "0x[0-9a-f]+")
        .replace("{{PC}}", r"\[<?(?:0x)?[0-9a-f]+>?\]")
        // A frame is `func+0x..`, `func.clone+0x..`, or a function the
        // symbolizer found inlined there: `func file.c:LINE [inline]`.
        .replace(
            "{{FUNC}}",
            r"([a-zA-Z0-9_]+)(?:\.|\+| [a-zA-Z0-9_/.\-]+\.[a-z]+:[0-9]+ \[inline\])",
        )
        .replace("{{SRC}}", r"([a-zA-Z0-9_/.\-]+\.[a-z]+:[0-9]+)");
    Regex::new(&re).unwrap_or_else(|e| panic!("bad report pattern {re:?}: {e}"))
}

/// The faulting instruction line on the architectures we may meet.
pub(super) const RIP_FRAME: &str = r"(?:IP|NIP|pc |PC is at):? (?:(?:[0-9]+:)?(?:{{PC}} +){0,2}{{FUNC}}|(?:[0-9]+:)?0x[0-9a-f]+|(?:[0-9]+:)?{{PC}} +\[< *\(null\)>\] +\(null\)|[0-9]+: +\(null\))";
pub(super) const CALL_TRACE: &str = r"(?:Call (?:T|t)race:)|(?:Backtrace:)";

/// One step of locating the guilty frame.
pub(super) enum Part {
    /// Advance to the first line matching; its captures are frames.
    Line(Regex),
    /// Consume frame lines until the next stack-trace header.
    Trace,
}

pub(super) fn rip() -> Part {
    Part::Line(compile(RIP_FRAME))
}

pub(super) fn call_trace() -> Part {
    Part::Line(compile(CALL_TRACE))
}

pub(super) fn line(re: &str) -> Part {
    Part::Line(compile(re))
}

#[derive(Clone, Copy)]
pub(super) enum Extractor {
    First,
    /// Stalls point at whatever the looping code happened to run; a frame
    /// next to a well-known dispatch point is the stable identity.
    Stall,
    /// Hung tasks sleep in generic primitives; the caller is the identity.
    Hang,
}

pub(super) struct StackFmt {
    parts: Vec<Part>,
    parts2: Vec<Part>,
    skip: Regex,
    extractor: Extractor,
}

impl StackFmt {
    pub(super) fn new(parts: Vec<Part>) -> Self {
        StackFmt {
            parts,
            parts2: Vec::new(),
            skip: skip_regex(&[]),
            extractor: Extractor::First,
        }
    }

    pub(super) fn or_else(mut self, parts2: Vec<Part>) -> Self {
        self.parts2 = parts2;
        self
    }

    pub(super) fn skip(mut self, extra: &[&str]) -> Self {
        self.skip = skip_regex(extra);
        self
    }

    pub(super) fn extractor(mut self, e: Extractor) -> Self {
        self.extractor = e;
        self
    }

    /// One guilty frame per trace section in `parts`; `false` when a section
    /// yielded nothing (its slot then holds `corrupted`).
    pub(super) fn extract(&self, text: &str) -> (Vec<String>, bool) {
        let (frames, ok) = self.extract_with(&self.parts, text);
        if ok || self.parts2.is_empty() {
            return (frames, ok);
        }
        self.extract_with(&self.parts2, text)
    }

    fn pick(&self, raw: &[String]) -> Option<String> {
        if raw.is_empty() {
            return None;
        }
        let stripped: Vec<&str> = raw.iter().map(|f| strip_syscall_prefix(f)).collect();
        match self.extractor {
            Extractor::First => Some(stripped[0].to_string()),
            Extractor::Stall => stall_frame(&stripped),
            Extractor::Hang => hang_frame(&stripped),
        }
    }

    fn extract_with(&self, parts: &[Part], text: &str) -> (Vec<String>, bool) {
        let lines: Vec<&str> = text.split('\n').collect();
        let mut li = 0;
        let mut raw: Vec<String> = Vec::new();
        let mut results = Vec::new();
        let mut ok = true;
        let mut traces = 0;
        let mut idx = 0;
        loop {
            let flush = idx == parts.len() || (matches!(parts[idx], Part::Trace) && traces > 0);
            if flush {
                match self.pick(&raw) {
                    Some(f) => results.push(f),
                    None => {
                        results.push("corrupted".to_string());
                        ok = false;
                    }
                }
                raw.clear();
            }
            if idx == parts.len() {
                break;
            }
            match &parts[idx] {
                Part::Trace => {
                    traces += 1;
                    while li < lines.len() {
                        let ln = lines[li];
                        li += 1;
                        if CORRUPTED_LINE.is_match(ln) {
                            ok = false;
                            break;
                        }
                        if is_stack_start(ln) {
                            break;
                        }
                        if let Some(Part::Line(next)) = parts.get(idx + 1) {
                            if let Some(c) = next.captures(ln) {
                                self.append(&mut raw, &c);
                                idx += 1;
                                break;
                            }
                        }
                        if let Some(c) = FRAME_RES.iter().find_map(|re| re.captures(ln)) {
                            self.append(&mut raw, &c);
                        }
                    }
                }
                Part::Line(re) => {
                    while li < lines.len() {
                        let ln = lines[li];
                        li += 1;
                        if CORRUPTED_LINE.is_match(ln) {
                            ok = false;
                            break;
                        }
                        if let Some(c) = re.captures(ln) {
                            self.append(&mut raw, &c);
                            break;
                        }
                    }
                }
            }
            idx += 1;
        }
        (results, ok)
    }

    fn append(&self, raw: &mut Vec<String>, caps: &regex::Captures<'_>) {
        for m in caps.iter().skip(1).flatten() {
            if !self.skip.is_match(m.as_str()) {
                raw.push(m.as_str().to_string());
            }
        }
    }
}

pub(super) fn is_stack_start(line: &str) -> bool {
    STACK_START.iter().any(|re| re.is_match(line))
}

pub(super) fn is_frame_line(line: &str) -> bool {
    FRAME_RES.iter().any(|re| re.is_match(line))
}

pub(super) static STACK_START: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"Call (?:T|t)race",
        r"Allocated:",
        r"Allocated by task [0-9]+:",
        r"Freed:",
        r"Freed by task [0-9]+:",
        // `stack backtrace:` is lockdep's header, not a trace of its own.
        r"[^k] backtrace(?: \(crc [[:xdigit:]]*\))?:",
        r"Backtrace:",
        r"Uninit was stored to memory at",
        RISCV_STACK_START,
    ]
    .iter()
    .map(|s| Regex::new(s).unwrap())
    .collect()
});

/// riscv's show_regs() dumps the stack with no header after this line.
pub(super) const RISCV_STACK_START: &str =
    r"status: [0-9a-f]{16} badaddr: [0-9a-f]{16} cause: [0-9a-f]{16}";

static FRAME_RES: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    vec![
        compile(r"^ *(?:{{PC}} ){0,2}{{FUNC}}"),
        // 32-bit arm prints "pc (callee) from pc (caller)"; the callee of the
        // first line is only visible here.
        compile(r"^ *{{PC}} \(([a-zA-Z0-9_.]+)\) from {{PC}} \({{FUNC}}"),
    ]
});

/// Fault-injection stacks interleave with real reports and spoil them.
static CORRUPTED_LINE: LazyLock<Regex> = LazyLock::new(|| {
    compile(r"^( \[<?(?:0x)?[0-9a-f]+>?\])? should_fail(slab)?(\.[a-z0-9.]+)?\+0x")
});

/// Syscall entry points carry per-arch prefixes; without them the same
/// syscall gets the same title on every arch.
const STRIP_PREFIXES: &[&str] = &[
    "SYSC_",
    "SyS_",
    "sys_",
    "__x64_",
    "__ia32_",
    "__arm64_",
    "____sys_",
    "___sys_",
    "__sys_",
    "__se_",
    "__se_sys_",
    "__do_sys_",
    "compat_SYSC_",
    "compat_SyS_",
    "ksys_",
];

fn strip_syscall_prefix(frame: &str) -> &str {
    STRIP_PREFIXES
        .iter()
        .filter_map(|p| frame.strip_prefix(p))
        .min_by_key(|f| f.len())
        .unwrap_or(frame)
}

/// Functions that are never the culprit: report/trap machinery, allocators,
/// locking, string and list helpers, generic device/kobject plumbing.
const SKIP: &[&str] = &[
    "__sanitizer",
    "__asan",
    "kasan",
    "hwasan",
    "__msan",
    "kmsan",
    "kcsan_setup_watchpoint",
    "check_memory_region",
    "check_heap_object",
    "check_object",
    "read_word_at_a_time",
    "(read|write)_once_.*nocheck",
    "print_address_description",
    "panic",
    "invalid_op",
    "report_bug",
    "fixup_bug",
    "print_report",
    "print_usage_bug",
    "do_error",
    "_trap$|do_trap",
    "show_stack",
    "dump_stack",
    "walk_stack",
    "dump_backtrace",
    "warn_slowpath",
    "warn_alloc",
    "warn_bogus",
    "__warn",
    "alloc_page",
    "k?v?(?:m|z|c)alloc",
    "krealloc",
    "kmem_cache",
    "allocate_slab",
    "__alloc_frozen_pages_noprof",
    "folio_(?:alloc|unlock)",
    "filemap_alloc_folio",
    "__filemap_get_folio",
    "find_or_create_page",
    "do_read_cache_folio",
    "read_cache_page",
    "pagecache_get_page",
    "grab_cache_page_write_begin",
    "slab_",
    "debug_object",
    "timer_is_static_object",
    "work_is_static_object",
    "__might_fault",
    "print_unlock",
    "imbalance_bug",
    "lockdep",
    "bh_enable",
    "bh_disable",
    "perf_trace",
    "lock_acquire",
    "lock_release",
    "lock_class",
    "mark_lock",
    "(reacquire|mark)_held_locks",
    "raw_spin_rq",
    "spin_lock",
    "spin_trylock",
    "spin_unlock",
    "read_lock",
    "read_trylock",
    "write_lock",
    "write_trylock",
    "read_unlock",
    "write_unlock",
    "^down$",
    "down_read",
    "down_write",
    "down_read_trylock",
    "down_write_trylock",
    "down_trylock",
    "up_read",
    "up_write",
    "^mutex_",
    "^__mutex_",
    "^rt_mutex_",
    "owner_on_cpu",
    "osq_lock",
    "osq_unlock",
    "atomic(64)?_(dec|inc|read|set|or|xor|and|add|sub|fetch|xchg|cmpxchg|try)",
    "(set|clear|change|test)_bit",
    "__wake_up",
    "^refcount_",
    "^kref_",
    "ref_tracker",
    "seqprop_assert",
    "memcpy",
    "memcmp",
    "memset",
    "memchr",
    "memmove",
    "memdup",
    "strcmp",
    "strncmp",
    "strcpy",
    "strlcpy",
    "strncpy",
    "strscpy",
    "strlen",
    "strstr",
    "strnstr",
    "strnlen",
    "strchr",
    "strdup",
    "strndup",
    "copy_to_user",
    "copy_from_user",
    "copy_to_iter",
    "copy_from_iter",
    "copy_page_to_iter",
    "copy_page_from_iter",
    "copy_folio_to_iter",
    "^copyin$",
    "^copyout$",
    "put_user",
    "get_user",
    "might_fault",
    "might_sleep",
    "list_add",
    "list_del",
    "list_replace",
    "list_move",
    "list_splice",
    "^rb_",
    "^__rb_",
    "_indirect_thunk_",
    "string",
    "pointer",
    "snprintf",
    "scnprintf",
    "kasprintf",
    "kvasprintf",
    "printk",
    "va_format",
    "dev_info",
    "dev_notice",
    "dev_warn",
    "dev_err",
    "dev_alert",
    "dev_crit",
    "dev_emerg",
    "program_check_exception",
    "program_check_common",
    "del_timer",
    "flush_work",
    "__cancel_work_timer",
    "cancel_work_sync",
    "try_to_grab_pending",
    "flush_workqueue",
    "drain_workqueue",
    "destroy_workqueue",
    "queue_work",
    "finish_wait",
    "kthread_stop",
    "kobject_",
    "add_uevent_var",
    "get_device_parent",
    "device_add",
    "device_del",
    "device_unregister",
    "device_destroy",
    "device_release",
    "devres_release_all",
    "hwrng_unregister",
    "i2c_del_adapter",
    "__unregister_client",
    "device_for_each_child",
    "rollback_registered",
    "unregister_netdev",
    "sysfs_remove",
    "device_remove_file",
    "tty_unregister_device",
    "dummy_urb_enqueue",
    "usb_kill_urb",
    "usb_kill_anchored_urbs",
    "usb_control_msg",
    "usb_hcd_submit_urb",
    "usb_submit_urb",
    "^complete$",
    "wait_for_completion",
    "^kv?free$",
    "kfree_skb",
    "readb$",
    "readw$",
    "readl$",
    "readq$",
    "writeb$",
    "writew$",
    "writel$",
    "writeq$",
    "logic_in",
    "logic_out",
    r"^crc\d+",
    "crc_itu_t",
    "__might_resched",
    "assertfail",
    "^iput$",
    "^iput_final$",
    "^ihold$",
    "hex_dump_to_buffer",
    "print_hex_dump",
    "^klist_",
    "(trace|lockdep)_(hard|soft)irq",
    "^(un)?lock_page",
    "stack_trace_consume_entry",
    "arch_stack_walk",
    "stack_trace_save",
    "insert_work",
    "__queue_delayed_work",
    "queue_delayed_work_on",
    "ida_free",
    // arm64 exception entry.
    "do_(kernel|translation)_fault",
    "do_mem_abort",
    "el1_abort",
    "el1h_64_sync(?:_handler)?",
    "print_tainted",
    "xas_(?:start|load|find)",
    "find_lock_entries",
    "truncate_inode_pages_range",
    "__phys_addr",
    "__fortify_report",
    "cleanup_srcu_struct",
    "rhashtable_lookup",
    "extract_(user|iter)_to_sg",
    "drop_nlink",
    "^get_taint$",
    "^put_device$",
    "lock_timer_base",
    "__timer_delete_sync",
    "sk_stop_timer_sync",
    "__mod_timer",
    "fast_dput",
    "dput",
    // Warns about the state of a buffer the caller handed in.
    "^mark_buffer_dirty$",
];

fn skip_regex(extra: &[&str]) -> Regex {
    let all: Vec<&str> = SKIP.iter().chain(extra.iter()).copied().collect();
    Regex::new(&all.join("|")).expect("skip patterns")
}

/// Dispatch points: the frame just above one of these is what the stalled
/// code was asked to do.
static STALL_ANCHORS: LazyLock<Regex> = LazyLock::new(|| {
    let anchors = [
        "process_one_work",
        "do_syscall_",
        "do_fast_syscall_",
        "sysenter_dispatch",
        "tracesys_phase2",
        "el0_svc_handler",
        "invoke_syscall",
        "ret_fast_syscall",
        "netif_receive_skb",
        "do_softirq",
        "call_timer_fn",
        "_run_timers",
        "run_timer_softirq",
        "hrtimer_run",
        "run_ksoftirqd",
        "smpboot_thread_fn",
        "^kthread$",
        "start_secondary",
        "cpu_startup_entry",
        "ret_from_fork",
        "vfs_write",
        "vfs_read",
        "vfs_iter_read",
        "vfs_iter_write",
        "do_iter_read",
        "do_iter_write",
        "call_read_iter",
        "call_write_iter",
        "new_sync_read",
        "new_sync_write",
        "vfs_ioctl",
        "ksys_ioctl",
        "compat_ioctl",
        "compat_sys_ioctl",
        "blkdev_driver_ioctl",
        "blkdev_ioctl",
        "do_iter_readv_writev",
        "^call_mmap",
        "mmap_region",
        "do_mmap",
        "do_dentry_open",
        "vfs_open",
        "^sock_sendmsg",
        "^sock_recvmsg",
        "^sock_release",
        "^__sock_release",
        "^setsockopt$",
        "kernel_setsockopt",
        "sock_common_setsockopt",
        "^listen$",
        "kernel_listen",
        "sk_common_release",
        "^sock_mmap",
        "^accept$",
        "kernel_accept",
        "^sock_do_ioctl",
        "^sock_ioctl",
        "^compat_sock_ioctl",
        "^nfnetlink_rcv_msg",
        "^rtnetlink_rcv_msg",
        "^netlink_dump",
        "^(sys_)?(socketpair|connect|ioctl)",
        "__do_fault",
        "do_page_fault",
        "^page_fault$",
        "__fput",
        "task_work_run",
        "exit_to_usermode",
        "smp_call_function",
        "tasklet_action",
        "tasklet_hi_action",
    ];
    Regex::new(&anchors.join("|")).unwrap()
});

fn stall_frame(frames: &[&str]) -> Option<String> {
    let mut prev = frames[0];
    for &frame in frames {
        if STALL_ANCHORS.is_match(frame) {
            // The callee varies here, the cross-call itself is the identity.
            if frame.contains("smp_call_function") {
                prev = "smp_call_function";
            }
            return Some(prev.to_string());
        }
        prev = frame;
    }
    None
}

fn hang_frame(frames: &[&str]) -> Option<String> {
    // Hangs behind RCU or RTNL are symptoms of one stuck holder; bucket them.
    for &frame in frames {
        if frame.contains("rtnl_lock") {
            return Some(frame.to_string());
        }
        if [
            "synchronize_rcu",
            "synchronize_srcu",
            "synchronize_net",
            "synchronize_sched",
        ]
        .iter()
        .any(|a| frame.contains(a))
        {
            return Some("synchronize_rcu".to_string());
        }
    }
    const GENERIC: &[&str] = &[
        "sched",
        "_lock",
        "_slowlock",
        "down",
        "rwsem",
        "completion",
        "kthread",
        "wait",
        "synchronize",
        "context_switch",
        "__switch_to",
        "cancel_delayed_work",
        "rcu_barrier",
    ];
    frames
        .iter()
        .find(|f| !GENERIC.iter().any(|g| f.contains(g)))
        .map(|f| f.to_string())
}
