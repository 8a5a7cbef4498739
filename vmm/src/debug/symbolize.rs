//! Symbolized kernel reports, as syzbot shows them: every `func+0xOFF/0xSIZE`
//! frame of the console gets its source line, preceded by one line per
//! function the compiler inlined at that address:
//!
//! ```text
//! RIP: 0010:exit_mm kernel/exit.c:548 [inline]
//! RIP: 0010:do_exit+0x1c4/0x6d0 kernel/exit.c:812
//!  exit_mm kernel/exit.c:548 [inline]
//!  do_exit+0x1c4/0x6d0 kernel/exit.c:812
//! ```
//!
//! so that a crash title can name the function the bug is in rather than
//! the caller it was folded into. Text in, text out; the classifier reads
//! the result like any report.
use super::symbols::Symbols;
use regex::Regex;
use std::sync::LazyLock;

/// A frame: what precedes it on the line (printk prefix, `RIP: 0010:`,
/// indentation, `? `), the symbol, offset and size, and the rest.
static FRAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?P<pre>.*?(?:RIP: [0-9a-f]{4}:|\] |^| )(?:\? )?)(?P<func>[A-Za-z_][A-Za-z0-9_.]*)\+0x(?P<off>[0-9a-f]+)/0x[0-9a-f]+(?P<rest>.*)$",
    )
    .expect("frame pattern")
});

/// `text` with every frame the vmlinux knows symbolized (see the module
/// docs); lines without frames, and frames of unknown symbols, unchanged.
pub fn symbolize_report(text: &str, syms: &Symbols) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        match symbolize_line(body, syms) {
            Some(s) => {
                out.push_str(&s);
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    out
}

fn symbolize_line(line: &str, syms: &Symbols) -> Option<String> {
    let c = FRAME.captures(line)?;
    // Already symbolized (a file:line follows), or not a kernel frame.
    if c["rest"]
        .trim_start()
        .starts_with(|ch: char| ch.is_ascii_alphabetic())
    {
        return None;
    }
    let func = &c["func"];
    let off = u64::from_str_radix(&c["off"], 16).ok()?;
    let base = syms.symbol_addr(func)?;
    let pre = &c["pre"];
    let is_rip = pre.contains("RIP:");
    // A return address points after its call: look up the call itself.
    let addr = base + off - u64::from(!is_rip && off > 0);
    let frames = syms.frames(addr);
    let (outer, inner) = frames.split_last()?;
    let mut s = String::new();
    for (name, loc) in inner {
        let (Some(name), Some(loc)) = (name, loc) else {
            continue;
        };
        s.push_str(&format!("{pre}{name} {loc} [inline]\n"));
    }
    let head = &line[..c.name("rest").map(|m| m.start()).unwrap_or(line.len())];
    match &outer.1 {
        Some(loc) => s.push_str(&format!("{head} {loc}{}", &c["rest"])),
        None => s.push_str(line),
    }
    Some(s)
}
