//! Console-report classifier: finds the first kernel crash in a guest's
//! console log and names it the way syzkaller's `pkg/report` does.
//!
//! The log is scanned line by line for a known crash header (`BUG:`,
//! `WARNING:`, `general protection fault`, ...). The report is then the
//! header plus the following lines printed by the same task or CPU: with
//! `CONFIG_PRINTK_CALLER` each line carries a `[ T123]`/`[ C1]` caller tag
//! and output of other CPUs interleaved into the report is left out. The
//! title is `<kind> in <guilty function>`, the function taken from the RIP
//! line or call trace after skipping reporting and helper frames, with
//! addresses and numbers normalised so that one bug always gets one title.
//! A report that lost its stack trace or was cut short is flagged
//! `corrupted`.

mod frames;
mod oops;
mod stack;

pub use frames::{frames, Frames, Stack, GENERIC_FRAMES};
use oops::{Format, Oops, OOPSES};
use regex::Regex;
use serde::Serialize;
use std::sync::LazyLock;

/// Lines that close a kernel report (oops, BUG, WARN, panic): once one is
/// printed the report is complete, and a run may stop there.
pub const REPORT_END: &[&str] = &["---[ end trace ", "---[ end Kernel panic"];

/// A crash found in a console log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// E.g. `WARNING in tcp_close`, `INFO: task hung in synchronize_rcu`.
    pub title: String,
    /// syzkaller's crash class: `BUG`, `WARNING`, `HANG`, `LOCKDEP`,
    /// `KASAN-READ`, ..., `UNKNOWN` when the title has no class.
    pub crash_type: String,
    /// The report is damaged (cut off, interleaved or without a stack), so
    /// the title may name the wrong function or end in `corrupted`.
    pub corrupted: bool,
    /// The guilty function named in the title.
    pub frame: Option<String>,
    /// Byte offset in the log of the line that starts the report.
    pub start: usize,
    /// The report's lines without console prefixes, preceded by a few
    /// lines of the same context that led up to it.
    pub text: String,
}

/// Whether a console line starts a kernel report (its header).
pub fn starts_report(line: &str) -> bool {
    OOPSES.iter().any(|o| o.matches(line))
}

/// Classifies a raw guest console log; `None` when it shows no crash.
pub fn classify(log: &str) -> Option<Report> {
    classify_log(log, true)
}

/// The crash in a log that may stop in the middle of its report, once
/// the report's title, crash type and guilty frame can no longer change:
/// the title names a function, the report line that names it is complete,
/// and another line of the report follows it (`None` until then). A run
/// may end there instead of waiting for the rest of the oops (registers,
/// the call trace, the panic), which an emulating host prints slowly.
/// `corrupted` then counts only damage in what was printed: a call trace
/// that was not printed yet is not missing.
///
/// Checked on every prefix of every log of the crash corpus
/// (`vmm/tests/crash_corpus.rs`): the settled title and type equal those
/// of the whole log.
pub fn settled(log: &str) -> Option<Report> {
    let r = classify_log(log, false)?;
    // "corrupted" stands in for a frame the stack did not give (yet).
    let frame = r.frame.as_deref().filter(|f| *f != "corrupted")?;
    let mut lines = log[r.start..].lines().filter(|l| !l.trim().is_empty());
    lines.position(|l| names_function(l, frame))?;
    lines.next()?;
    Some(r)
}

/// Classifies a log whose report may be cut short on purpose (see
/// [`settled`]): a call trace not printed yet is not a defect.
pub fn classify_partial(log: &str) -> Option<Report> {
    classify_log(log, false)
}

/// Whether `line` names `func` as a whole symbol (not a prefix of another).
fn names_function(line: &str, func: &str) -> bool {
    line.match_indices(func).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + func.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        !ident(before) && !ident(after) && after != Some('.')
    })
}

fn classify_log(log: &str, complete: bool) -> Option<Report> {
    let lines = split_lines(log);
    let (first, oops) = lines
        .iter()
        .enumerate()
        .find_map(|(i, l)| OOPSES.iter().find(|o| o.matches(l.raw)).map(|o| (i, o)))?;
    let found = collect(&lines, first);
    let mut desc = describe(&found.text[..found.end], oops);
    let mut prefix = found.prefix;
    let mut text = found.text;
    if desc.is_none() {
        // The header line itself was dropped from the context-filtered
        // text; fall back to the raw span of the report.
        prefix.clear();
        let end = found.last_oops_end.max(lines[first].end);
        text = log[lines[first].start..end].to_string();
        desc = describe(&text, oops);
    }
    let desc = desc?;
    let title = sanitize_title(&normalize_title(&desc.title));
    // GCE's serial console drops right after a panic; the tail is lost.
    let corrupted = desc.corrupted
        || is_corrupted(&desc.title, &text, desc.format, complete)
        || log.contains("serialport: VM disconnected.");
    let frame = FRAME_IN_TITLE.captures(&title).map(|c| c[1].to_string());
    let crash_type = title_to_type(&title).to_string();
    let mut full = String::new();
    for p in &prefix {
        full.push_str(p);
        full.push('\n');
    }
    full.push_str(&text);
    Some(Report {
        title,
        crash_type,
        corrupted,
        frame,
        start: lines[first].start,
        text: full,
    })
}

struct Line<'a> {
    raw: &'a str,
    start: usize,
    end: usize,
}

fn split_lines(log: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    for piece in log.split_inclusive('\n') {
        let end = start + piece.trim_end_matches('\n').len();
        let raw = log[start..end].trim_end_matches('\r');
        out.push(Line { raw, start, end });
        start += piece.len();
    }
    out
}

static CONSOLE_PREFIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:\*\* [0-9]+ printk messages dropped \*\* )?(?:.* login: )?(?:<[0-9]+>)?\[ *[0-9]+\.[0-9]+\](\[ *(?:C|T)[0-9]+\])? ",
    )
    .unwrap()
});
static CPU_CONTEXT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\[ *C[0-9]+\]").unwrap());
static TASK_CONTEXT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\[ *T[0-9]+\]").unwrap());
static QUESTIONABLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\[<[0-9a-f]+>\])? \? ").unwrap());

/// Who printed a line, as far as the console tells.
#[derive(Clone, PartialEq, Eq)]
enum Context<'a> {
    /// No timestamp at all (not kernel output, or a continuation line).
    None,
    /// Timestamped, but printk caller ids are not enabled.
    Console,
    /// The `[ T123]`/`[ C1]` printk caller id.
    Caller(&'a str),
}

fn context(line: &str) -> Context<'_> {
    match CONSOLE_PREFIX.captures(line) {
        None => Context::None,
        Some(c) => match c.get(1) {
            None => Context::Console,
            Some(m) => Context::Caller(m.as_str()),
        },
    }
}

/// Strips the timestamp; also says whether the line is a `?` frame that the
/// unwinder only guessed at, which must not be mistaken for the culprit.
fn strip_prefix<'a>(line: &'a str, ctx: &Context<'_>) -> (&'a str, bool) {
    if *ctx == Context::None {
        return (line, false);
    }
    let body = line.find("] ").map_or(line, |p| &line[p + 2..]);
    if !body.contains("<EOI>") {
        if QUESTIONABLE.is_match(body) {
            let p = body.find(" ? ").unwrap_or(0);
            return (&body[p + 2..], true);
        }
        if let Some(b) = body.strip_suffix(" (unreliable)") {
            return (b, true);
        }
    }
    (body, false)
}

struct Collected {
    prefix: Vec<String>,
    text: String,
    /// Length of `text` that belongs to the first report; a second report
    /// on an untagged console may follow it.
    end: usize,
    last_oops_end: usize,
}

/// Headers that can legitimately appear inside a report (the panic that a
/// BUG triggers, a double fault while handling a page fault).
static NOT_A_NEW_REPORT: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        "invalid opcode: 0000",
        "Kernel panic - not syncing",
        "unregister_netdevice: waiting for",
        "PANIC: double fault",
        "Internal error:",
        // die() prints this right after the header that started the report.
        "Oops:",
    ]
    .iter()
    .map(|s| Regex::new(s).unwrap())
    .collect()
});

/// Informational messages with a stack trace of their own; inside a report
/// they mean the stack that follows may not be the report's.
const INFO_WITH_STACK: &[&str] = &[
    "vmalloc: allocation failure:",
    "FAULT_INJECTION: forcing a failure",
    "FAULT_FLAG_ALLOW_RETRY missing",
];

fn collect(lines: &[Line<'_>], first: usize) -> Collected {
    let ctx = context(lines[first].raw);
    let tagged = matches!(ctx, Context::Caller(_));
    // A task-tagged report can use more of what the same task printed just
    // before (the lines that explain what it was doing).
    let max_prefix = if matches!(ctx, Context::Caller(c) if TASK_CONTEXT.is_match(c)) {
        50
    } else {
        5
    };
    let oops_line = lines[first].raw;
    // KMSAN reports have fewer lines before the panic they trigger.
    let min_lines = if oops_line.contains("BUG: KMSAN:") {
        16
    } else {
        22
    };
    let mut prefix: Vec<String> = Vec::new();
    for l in &lines[..first] {
        let c = context(l.raw);
        let (s, questionable) = strip_prefix(l.raw, &c);
        if c == ctx && !s.is_empty() && !questionable {
            prefix.push(s.to_string());
            if prefix.len() > max_prefix {
                prefix.remove(0);
            }
        }
    }
    let mut text = String::new();
    let mut end = 0;
    let mut last_oops_end = 0;
    let mut second_report = false;
    let mut text_lines = 0;
    let (mut skip_text, mut cpu_traceback) = (false, false);
    for (i, l) in lines.iter().enumerate().skip(first) {
        let is_oops = i == first;
        let c = context(l.raw);
        let (stripped, questionable) = strip_prefix(l.raw, &c);
        if OOPSES.iter().any(|o| o.matches(l.raw)) {
            last_oops_end = l.end;
            if !is_oops && !NOT_A_NEW_REPORT.iter().any(|r| r.is_match(l.raw)) {
                second_report = true;
            }
        } else if !is_oops && INFO_WITH_STACK.iter().any(|p| l.raw.contains(p)) {
            second_report = true;
        }
        let same = c == ctx
            || (cpu_traceback && matches!(c, Context::Caller(t) if CPU_CONTEXT.is_match(t)));
        if !is_oops && (questionable || !same) {
            continue;
        }
        text_lines += 1;
        let mut skip_line = skip_text;
        if l.raw
            .contains("Disabling lock debugging due to kernel taint")
        {
            skip_line = true;
        } else if l.raw.contains("Sending NMI from CPU") {
            // An all-CPU backtrace follows; the other CPUs' lines are part
            // of this report even though their caller ids differ.
            cpu_traceback = true;
        } else if (l.raw.contains("Kernel panic - not syncing")
            || l.raw
                .contains("WARNING: possible circular locking dependency detected"))
            && text_lines > min_lines
        {
            // The panic_on_warn panic repeats the stack we already have, and
            // printing an oops often provokes a lockdep splat: both only
            // lengthen a report that is already complete.
            skip_text = true;
            skip_line = true;
        }
        if !is_oops && skip_line {
            continue;
        }
        text.push_str(stripped);
        text.push('\n');
        if !second_report || tagged {
            end = text.len();
        }
    }
    Collected {
        prefix,
        text,
        end,
        last_oops_end,
    }
}

struct Description<'a> {
    title: String,
    corrupted: bool,
    format: Option<&'a Format>,
}

/// Picks the format whose title pattern matches earliest in the report and
/// renders its title.
fn describe<'a>(text: &str, oops: &'a Oops) -> Option<Description<'a>> {
    let mut best_pos = text.len();
    let mut desc: Option<Description<'a>> = None;
    let mut matched_title = false;
    for f in &oops.formats {
        let Some(m) = f.title.captures(text) else {
            continue;
        };
        let pos = m.get(0).unwrap().start();
        if pos > best_pos || (pos == best_pos && desc.is_some()) {
            continue;
        }
        if pos < best_pos {
            desc = None;
            best_pos = pos;
        }
        matched_title = true;
        let caps = match &f.report {
            Some(r) => match r.captures(text) {
                Some(c) => c,
                None => continue,
            },
            None => m,
        };
        let mut args: Vec<String> = caps
            .iter()
            .skip(1)
            .map(|g| g.map_or(String::new(), |g| g.as_str().to_string()))
            .collect();
        let mut corrupted = f.corrupted;
        if let Some(st) = &f.stack {
            let from = caps.get(0).unwrap().start();
            let (frames, ok) = st.extract(&text[from..]);
            corrupted |= !ok;
            args.extend(frames);
        }
        desc = Some(Description {
            title: render(f.fmt, &args),
            corrupted,
            format: Some(f),
        });
    }
    if desc.is_some() {
        return desc;
    }
    // No format fits: the header line is the best title we have.
    let pos = text.find(oops.header)?;
    let line_end = text[pos..].find('\n').map_or(text.len(), |e| pos + e);
    Some(Description {
        title: text[pos..line_end].to_string(),
        corrupted: matched_title,
        format: None,
    })
}

/// Expands Go-style `%[N]v` placeholders.
fn render(fmt: &str, args: &[String]) -> String {
    let mut out = String::new();
    let mut rest = fmt;
    while let Some(p) = rest.find("%[") {
        out.push_str(&rest[..p]);
        let after = &rest[p + 2..];
        let close = after.find(']').expect("placeholder");
        let n: usize = after[..close].parse().expect("placeholder index");
        out.push_str(args.get(n - 1).map_or("", String::as_str));
        // Skip the verb letter after `]`.
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

static TITLE_TIMESTAMP: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\[ *[0-9]+\.[0-9]+\]").unwrap());

/// A report is only trustworthy if each trace header in it is followed by
/// at least one frame. In an incomplete report (`complete` false) a trace
/// that has not started, or has not reached its first frame, is not yet
/// a defect.
fn is_corrupted(title: &str, report: &str, format: Option<&Format>, complete: bool) -> bool {
    // A timestamp inside the title means two lines were merged.
    if TITLE_TIMESTAMP.is_match(title) {
        return true;
    }
    let Some(format) = format else {
        return false;
    };
    if format.no_stack_trace {
        return false;
    }
    let mut has_trace = false;
    for key in stack::STACK_START.iter() {
        let Some(m) = key.find(report) else {
            continue;
        };
        let lines: Vec<&str> = report[m.start()..].split('\n').collect();
        if lines.len() < 4 {
            return complete;
        }
        let mut found = false;
        for l in lines[1..].iter().take(15) {
            if stack::is_stack_start(l) {
                break;
            }
            if l.contains("(stack is not available)") || stack::is_frame_line(l) {
                found = true;
                has_trace = true;
                break;
            }
        }
        if !found && key.as_str() != stack::RISCV_STACK_START {
            return complete;
        }
    }
    !has_trace && complete
}

static TITLE_REPLACEMENTS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        // Executor and repro process names carry pids.
        (r"syz-executor\.?[0-9]+((/|:)[0-9]+)?", "syz-executor"),
        (r"syzkaller[0-9]+((/|:)[0-9]+)?", "syzkaller"),
        (r"([^a-zA-Z0-9])(?:0x)?[0-9a-f]{6,}", "${1}ADDR"),
        (r"([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})", "IP"),
        (r"(\.[0-9A-Za-z_]+)(:[0-9]+)+", "${1}:LINE"),
        (r"([a-zA-Z][a-zA-Z0-9_.]+)\+0x[0-9a-z]+/0x[0-9a-z]+", "${1}"),
        (r"CPU#[0-9]+", "CPU"),
        (r"([^0-9A-Za-z_])([0-9]+)([^0-9A-Za-z_]|$)", "${1}NUM${3}"),
        // Digits inside identifiers (cfg80211) stay, unless too long to be a name.
        (r"[0-9]{7,}", "NUM"),
    ]
    .iter()
    .map(|(r, s)| (Regex::new(r).unwrap(), *s))
    .collect()
});

/// Replaces everything that differs between two hits of the same bug.
fn normalize_title(title: &str) -> String {
    let mut t = title.to_string();
    for (re, with) in TITLE_REPLACEMENTS.iter() {
        // Matches can overlap ("0,1,2"), so repeat until nothing changes.
        loop {
            let next = re.replace_all(&t, *with).into_owned();
            if next == t {
                break;
            }
            t = next;
        }
    }
    t
}

/// Drops control characters and runs of spaces and bounds the length:
/// intermixed lines can make arbitrarily long garbage titles.
fn sanitize_title(title: &str) -> String {
    let mut out = String::new();
    let mut prev = ' ';
    for &b in title.as_bytes().iter().take(120) {
        let ch = match b {
            b'\t' => ' ',
            0..=0x1f | 0x7f..=0xff => continue,
            _ => b as char,
        };
        if ch == ' ' && prev == ' ' {
            continue;
        }
        out.push(ch);
        prev = ch;
    }
    out.trim().to_string()
}

static FRAME_IN_TITLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r".* in ((?:<[a-zA-Z0-9_: ]+>)?[a-zA-Z0-9_:]+)").unwrap());

/// syzkaller's crash classes, first matching title prefix wins.
const TYPES: &[(&[&str], &str)] = &[
    (
        &["KFENCE: use-after-free write"],
        "KFENCE-USE-AFTER-FREE-WRITE",
    ),
    (
        &["KFENCE: use-after-free read", "KFENCE: use-after-free"],
        "KFENCE-USE-AFTER-FREE-READ",
    ),
    (
        &["KFENCE: invalid write", "KFENCE: out-of-bounds write"],
        "KFENCE-WRITE",
    ),
    (
        &[
            "KFENCE: invalid read",
            "KFENCE: out-of-bounds read",
            "KFENCE: out-of-bounds",
        ],
        "KFENCE-READ",
    ),
    (&["KFENCE: memory corruption"], "KFENCE-MEMORY-CORRUPTION"),
    (&["KFENCE: invalid free"], "KFENCE-INVALID-FREE"),
    (&["KMSAN: uninit-value"], "KMSAN-UNINIT-VALUE"),
    (
        &[
            "KMSAN: kernel-infoleak-after-free",
            "KMSAN: kernel-usb-infoleak-after-free",
            "KMSAN: use-after-free",
        ],
        "KMSAN-USE-AFTER-FREE-READ",
    ),
    (
        &["KMSAN: kernel-infoleak", "KMSAN: kernel-usb-infoleak"],
        "KMSAN-INFO-LEAK",
    ),
    (
        &["KASAN: null-ptr-deref Write"],
        "KASAN-NULL-POINTER-DEREFERENCE-WRITE",
    ),
    (
        &["KASAN: null-ptr-deref Read"],
        "KASAN-NULL-POINTER-DEREFERENCE-READ",
    ),
    (
        &["BUG: unable to handle kernel NULL pointer dereference in"],
        "NULL-POINTER-DEREFERENCE",
    ),
    (
        &[
            "KASAN: global-out-of-bounds Write",
            "KASAN: out-of-bounds Write",
            "KASAN: slab-out-of-bounds Write",
            "KASAN: stack-out-of-bounds Write",
            "KASAN: user-memory-access Write",
            "KASAN: vmalloc-out-of-bounds Write",
            "KASAN: wild-memory-access Write",
        ],
        "KASAN-WRITE",
    ),
    (
        &[
            "KASAN: global-out-of-bounds Read",
            "KASAN: invalid-access Read",
            "KASAN: out-of-bounds Read",
            "KASAN: slab-out-of-bounds Read",
            "KASAN: slab-out-of-bounds",
            "KASAN: stack-out-of-bounds Read",
            "KASAN: stack-out-of-bounds",
            "KASAN: unknown-crash Read",
            "KASAN: user-memory-access Read",
            "KASAN: vmalloc-out-of-bounds Read",
            "KASAN: wild-memory-access Read",
            "KASAN: wild-memory-access",
        ],
        "KASAN-READ",
    ),
    (
        &["KASAN: double-free or invalid-free", "KASAN: invalid-free"],
        "KASAN-INVALID-FREE",
    ),
    (
        &[
            "KASAN: slab-use-after-free Write",
            "KASAN: use-after-free Write",
        ],
        "KASAN-USE-AFTER-FREE-WRITE",
    ),
    (
        &[
            "KASAN: slab-use-after-free Read",
            "KASAN: use-after-free Read",
            "KASAN: use-after-free",
        ],
        "KASAN-USE-AFTER-FREE-READ",
    ),
    (
        &[
            "BUG: corrupted list",
            "BUG: unable to handle kernel paging request",
        ],
        "MEMORY_SAFETY_BUG",
    ),
    (&["WARNING: refcount bug"], "REFCOUNT_WARNING"),
    (&["UBSAN: array-index-out-of-bounds"], "MEMORY_SAFETY_UBSAN"),
    (&["KCSAN: data-race"], "KCSAN-DATARACE"),
    (&["KCSAN: assert: race in"], "KCSAN-ASSERT"),
    (
        &[
            "BUG: bad unlock balance in",
            "BUG: held lock freed in",
            "BUG: rwlock",
            "BUG: spinlock",
            "BUG: still has locks held in",
            "BUG: using",
            "WARNING: bad unlock balance in",
            "WARNING: held lock freed in",
            "WARNING: lock held",
            "WARNING: locking bug in",
            "WARNING: nested lock was not taken in",
            "WARNING: still has locks held in",
            "WARNING: suspicious RCU usage in",
            "inconsistent lock state in",
            "possible deadlock in",
        ],
        "LOCKDEP",
    ),
    (
        &[
            "BUG: scheduling while atomic in",
            "BUG: sleeping function called from invalid context in",
        ],
        "ATOMIC_SLEEP",
    ),
    (&["memory leak in"], "LEAK"),
    (&["BUG: bad usercopy in", "kernel BUG"], "BUG"),
    (&["WARNING in"], "WARNING"),
    (
        &[
            "BUG: stack guard page was hit in",
            "WARNING: corrupted",
            "WARNING: kernel stack frame pointer has bad value",
            "WARNING: kernel stack regs has bad",
        ],
        "UNKNOWN",
    ),
    (
        &[
            "BUG: soft lockup in",
            "INFO: rcu detected stall in",
            "INFO: task can't die in",
            "INFO: task hung in",
        ],
        "HANG",
    ),
    (
        &[
            "Alignment trap in",
            "BUG: Object already free",
            "Internal error in",
            "Oops in",
            "PANIC: double fault",
            "Unhandled fault in",
            "VFS: Busy inodes after unmount (use-after-free)",
            "VFS: Close: file count is zero (use-after-free)",
            "divide error in",
            "general protection fault in",
            "go runtime error",
            "invalid opcode in",
            "kernel panic:",
            "kernel stack overflow",
            "panic:",
            "rust_kernel panicked",
            "stack segment fault in",
            "trusty:",
            "unregister_netdevice: waiting for DEV to become free",
        ],
        "DoS",
    ),
    (&["unexpected kernel reboot"], "REBOOT"),
    (&["SYZFAIL", "SYZFATAL:"], "SYZ_FAILURE"),
    (&["WARNING:"], "WARNING"),
    (&["KASAN:"], "KASAN-UNKNOWN"),
    (&["KFENCE:"], "KFENCE-UNKNOWN"),
    (&["KMSAN:"], "KMSAN-UNKNOWN"),
    (&["UBSAN:"], "UBSAN"),
    (&["KCSAN:"], "KCSAN-UNKNOWN"),
];

fn title_to_type(title: &str) -> &'static str {
    TYPES
        .iter()
        .find(|(prefixes, _)| prefixes.iter().any(|p| title.starts_with(p)))
        .map_or("UNKNOWN", |(_, t)| t)
}

#[cfg(test)]
mod tests;
