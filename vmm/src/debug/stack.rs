//! Kernel backtraces of a vCPU: a frame-pointer walk while the vCPU is out
//! of `KVM_RUN` (cheap: a few guest reads per frame, no symbols), and its
//! symbolization afterwards with the kernel's vmlinux (function+offset,
//! file:line, inlined frames from DWARF).
//!
//! The guest kernels are built with frame pointers: each frame holds the
//! caller's `rbp` at `[rbp]` and the return address at `[rbp+8]`. At a
//! function's first instruction (where breakpoints usually sit) `rbp` is
//! still the caller's, so the caller is the word at `[rsp]`; after `push
//! rbp`, at `[rsp+8]`. Both words are kept raw and the symbolizer, which
//! knows the offset into the function, picks the right one.
use super::symbols::Symbols;
use serde::Serialize;

/// At most this many frames per walk: deep enough for syscall → fs → mm
/// chains, bounded cost (each frame is two guest reads).
pub const MAX_FRAMES: usize = 24;

/// A stack as read from the guest, unsymbolized.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RawStack {
    /// The vCPU was running user code (no kernel stack to walk).
    pub user: bool,
    pub rip: u64,
    pub rsp: u64,
    /// `[rsp]` and `[rsp+8]`: the return address at a function's entry
    /// (and one instruction later).
    pub at_rsp: [Option<u64>; 2],
    /// Return addresses along the `rbp` chain, innermost first.
    pub chain: Vec<u64>,
}

fn is_kernel(a: u64) -> bool {
    a >= 0xffff_8000_0000_0000
}

/// Walks the frame-pointer chain from `rbp` with `read` (a guest-virtual
/// 8-byte read). Stops at a frame pointer that is not a kernel address,
/// not aligned, or not above the previous one (the stack grows down, so a
/// caller's frame is always higher), at an unreadable word, or at
/// [`MAX_FRAMES`].
pub fn walk(
    rip: u64,
    rsp: u64,
    rbp: u64,
    user: bool,
    read: impl Fn(u64) -> Option<u64>,
) -> RawStack {
    let mut s = RawStack {
        user,
        rip,
        rsp,
        ..Default::default()
    };
    if user {
        return s;
    }
    s.at_rsp = [read(rsp), read(rsp.wrapping_add(8))];
    let mut fp = rbp;
    let mut floor = rsp;
    while s.chain.len() < MAX_FRAMES && is_kernel(fp) && fp.is_multiple_of(8) && fp >= floor {
        let Some(ret) = read(fp + 8) else { break };
        if !is_kernel(ret) {
            break;
        }
        s.chain.push(ret);
        let Some(next) = read(fp) else { break };
        floor = fp + 16;
        fp = next;
    }
    s
}

/// One symbolized frame.
#[derive(Debug, Clone, Serialize)]
pub struct Frame {
    pub addr: u64,
    /// `func+0xoff`, or the address when no symbol covers it.
    pub func: String,
    /// `file:line`, when DWARF has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// A function inlined at this address (it has no frame of its own).
    pub inlined: bool,
}

impl std::fmt::Display for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.func)?;
        if let Some(l) = &self.line {
            write!(f, " ({l})")?;
        }
        if self.inlined {
            write!(f, " [inline]")?;
        }
        Ok(())
    }
}

/// The stack's frames, innermost first. With `dwarf`, each gets its
/// file:line and the functions inlined there; without, `func+off` from the
/// ELF symbols only (cheap, and it leaves no DWARF parsed behind: a long
/// run set that symbolizes every stack with DWARF grows by the units it
/// touches).
pub fn symbolize(s: &RawStack, syms: &Symbols, dwarf: bool) -> Vec<Frame> {
    if s.user {
        return Vec::new();
    }
    let mut addrs = vec![(s.rip, true)];
    // At offset 0 of a function the caller is [rsp]; at offset 1 (after
    // `push rbp`, before `mov rbp, rsp`), [rsp+8]. Later on, the rbp chain
    // has it already.
    if let Some((_, off)) = syms.symbolize(s.rip) {
        let caller = match off {
            0 => s.at_rsp[0],
            1 => s.at_rsp[1],
            _ => None,
        };
        if let Some(c) = caller.filter(|c| is_kernel(*c)) {
            addrs.push((c, false));
        }
    }
    addrs.extend(s.chain.iter().map(|a| (*a, false)));
    let mut out = Vec::new();
    for (addr, exact) in addrs {
        // A return address points after its call: look up the call (after
        // a call to a noreturn function it is already the next function).
        let at = if exact { addr } else { addr - 1 };
        let sym = syms.symbolize(at);
        let func = match &sym {
            Some((name, off)) => format!("{name}+{:#x}", off + (addr - at)),
            None => format!("{addr:#x}"),
        };
        let frames = if dwarf { syms.frames(at) } else { Vec::new() };
        match frames.split_last() {
            Some((outer, inner)) => {
                for (name, loc) in inner {
                    if let Some(name) = name {
                        out.push(Frame {
                            addr,
                            func: name.clone(),
                            line: loc.clone(),
                            inlined: true,
                        });
                    }
                }
                out.push(Frame {
                    addr,
                    func,
                    line: outer.1.clone(),
                    inlined: false,
                });
            }
            None => out.push(Frame {
                addr,
                func,
                line: None,
                inlined: false,
            }),
        }
        // Below the entry from user mode or a new task's first frame the
        // words are the entry code's, not frames: stop.
        if sym.is_some_and(|(name, _)| ENTRY.contains(&name.as_str())) {
            break;
        }
    }
    out
}

/// Functions the kernel's entry code calls first: a stack ends there.
const ENTRY: &[&str] = &[
    "do_syscall_64",
    "do_int80_syscall_32",
    "do_fast_syscall_32",
    "ret_from_fork",
    "ret_from_fork_asm",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const K: u64 = 0xffff_c900_0000_0000;

    #[test]
    fn walks_the_chain_and_stops_where_it_breaks() {
        // Three frames, then a user-space "frame pointer" that ends it.
        let mut m = HashMap::new();
        m.insert(K + 0x100, K + 0x200); // [rbp] -> next
        m.insert(K + 0x108, 0xffff_ffff_8100_0010); // ret 1
        m.insert(K + 0x200, K + 0x300);
        m.insert(K + 0x208, 0xffff_ffff_8100_0020);
        m.insert(K + 0x300, 0x7fff_0000);
        m.insert(K + 0x308, 0xffff_ffff_8100_0030);
        m.insert(K + 0x80, 0xffff_ffff_8100_0001); // [rsp]
        let s = walk(0xffff_ffff_8100_0000, K + 0x80, K + 0x100, false, |a| {
            m.get(&a).copied()
        });
        assert_eq!(
            s.chain,
            [
                0xffff_ffff_8100_0010,
                0xffff_ffff_8100_0020,
                0xffff_ffff_8100_0030
            ]
        );
        assert_eq!(s.at_rsp, [Some(0xffff_ffff_8100_0001), None]);
    }

    #[test]
    fn a_loop_in_the_chain_ends() {
        let mut m = HashMap::new();
        m.insert(K + 0x100, K + 0x100);
        m.insert(K + 0x108, 0xffff_ffff_8100_0010);
        let s = walk(0, K, K + 0x100, false, |a| m.get(&a).copied());
        assert_eq!(s.chain.len(), 1);
    }

    #[test]
    fn user_mode_has_no_kernel_frames() {
        let s = walk(0x401000, 0x7ffe_0000, 0x7ffe_0100, true, |_| {
            panic!("no reads")
        });
        assert!(s.user && s.chain.is_empty());
    }
}
