//! Resuming from a breakpoint hit without single-stepping: the VMM carries
//! out the instruction at the breakpoint itself and moves RIP past it, so
//! the breakpoints stay armed and a hit costs one exit, not two exits and
//! two debug-register reloads. For hosts that ignore `RFLAGS.RF`
//! (`kvm_pvm`), where the only other way past an armed instruction is a
//! step with the breakpoints off.
//!
//! Only forms whose effect is fully known are done here, in 64-bit mode at
//! CPL 0, on supervisor pages, each access naturally aligned (so it is one
//! atomic access, as the CPU's): `nop`, `mov` between registers, register
//! and memory, immediate and register or memory (32 and 64 bits; stores
//! also 8 and 16), and `lea`. None of them changes RFLAGS. Anything else
//! (another instruction, a prefix such as `lock` or `rep`, a page that is
//! not present, writable or supervisor, memory outside guest RAM) is
//! [`Outcome::Unsupported`] and the caller steps.
//!
//! Nothing that writes RSP is done here, `push` included.
//!
//! kvm_pvm's default since 2026-12-07 (`PREEMPTOR_RESUME=step` turns the
//! step back on). Every form equals the CPU's step in
//! `exitbench::check_emulation`. The explore test's hang with it (4 of 4
//! runs, 2026-12-06) was not this file: the vCPU loop left KVM's BLOCKIRQ
//! on after a hit that did not block cut an earlier block short, so no
//! interrupt (a wakeup's IPI) reached that vCPU again (fixed in `vcpu.rs`,
//! where a hit resumes). The explore test's later failures with it were
//! the emitted scenarios' (a coin on the secondary, stalls cut to the
//! draw), and failed the same way with the step.
//! Registers and system registers come in the run structure's synced copy
//! (no ioctl at a hit: 11.3 us a hit against 16.0 us with `KVM_GET_SREGS`).
//! The page walk sets the accessed and dirty bits the CPU would. KVM's
//! dirty log does not see the VMM's own writes, so every page written is
//! returned, for the snapshot restorer to copy back.
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use kvm_bindings::{kvm_regs, kvm_sregs};
use std::sync::atomic::Ordering;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileMemory};

/// What became of the instruction at RIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done: registers and memory are as after the instruction.
    Done,
    /// Not a form done here (why): single-step it.
    Unsupported(&'static str),
}

const PTE_P: u64 = 1;
const PTE_RW: u64 = 1 << 1;
const PTE_US: u64 = 1 << 2;
const PTE_A: u64 = 1 << 5;
const PTE_D: u64 = 1 << 6;
const PTE_PS: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const CR0_PG: u64 = 1 << 31;
const CR0_WP: u64 = 1 << 16;
const CR4_LA57: u64 = 1 << 12;

/// Guest-virtual to guest-physical by the 4-level tables at CR3, as a
/// supervisor access (a write if `write`), setting A (and D) bits.
fn translate(
    mem: &GuestMemoryMmap,
    s: &kvm_sregs,
    va: u64,
    write: bool,
    written: &mut Vec<u64>,
) -> Result<u64, &'static str> {
    if s.cr0 & CR0_PG == 0 || s.cr4 & CR4_LA57 != 0 {
        return Err("paging mode");
    }
    let mut table = s.cr3 & ADDR_MASK;
    for level in (0..4).rev() {
        let shift = 12 + 9 * level;
        let slot = GuestAddress(table + ((va >> shift) & 0x1ff) * 8);
        let e: u64 = mem
            .load(slot, Ordering::Acquire)
            .map_err(|_| "page table")?;
        if e & PTE_P == 0 {
            return Err("page not present");
        }
        if e & PTE_US != 0 && level == 0 {
            return Err("user page");
        }
        if write && e & PTE_RW == 0 && s.cr0 & CR0_WP != 0 {
            return Err("read-only page");
        }
        let leaf = level == 0 || (e & PTE_PS != 0 && level <= 2);
        let bits = PTE_A | if leaf && write { PTE_D } else { 0 };
        if e & bits != bits {
            let entry = mem.get_slice(slot, 8).map_err(|_| "page table")?;
            let a = entry
                .get_atomic_ref::<std::sync::atomic::AtomicU64>(0)
                .map_err(|_| "page table")?;
            a.fetch_or(bits, Ordering::AcqRel);
            written.push(slot.0);
        }
        if leaf {
            if e & PTE_US != 0 {
                return Err("user page");
            }
            let size = 1u64 << shift;
            return Ok((e & ADDR_MASK & !(size - 1)) | (va & (size - 1)));
        }
        table = e & ADDR_MASK;
    }
    unreachable!("level 0 is a leaf")
}

fn reg64(r: &kvm_regs, reg: Register) -> Option<u64> {
    let full = reg.full_register();
    Some(match full {
        Register::RAX => r.rax,
        Register::RBX => r.rbx,
        Register::RCX => r.rcx,
        Register::RDX => r.rdx,
        Register::RSI => r.rsi,
        Register::RDI => r.rdi,
        Register::RSP => r.rsp,
        Register::RBP => r.rbp,
        Register::R8 => r.r8,
        Register::R9 => r.r9,
        Register::R10 => r.r10,
        Register::R11 => r.r11,
        Register::R12 => r.r12,
        Register::R13 => r.r13,
        Register::R14 => r.r14,
        Register::R15 => r.r15,
        Register::RIP => r.rip,
        _ => return None,
    })
}

fn reg64_mut(r: &mut kvm_regs, reg: Register) -> Option<&mut u64> {
    Some(match reg.full_register() {
        Register::RAX => &mut r.rax,
        Register::RBX => &mut r.rbx,
        Register::RCX => &mut r.rcx,
        Register::RDX => &mut r.rdx,
        Register::RSI => &mut r.rsi,
        Register::RDI => &mut r.rdi,
        Register::RSP => &mut r.rsp,
        Register::RBP => &mut r.rbp,
        Register::R8 => &mut r.r8,
        Register::R9 => &mut r.r9,
        Register::R10 => &mut r.r10,
        Register::R11 => &mut r.r11,
        Register::R12 => &mut r.r12,
        Register::R13 => &mut r.r13,
        Register::R14 => &mut r.r14,
        Register::R15 => &mut r.r15,
        _ => return None,
    })
}

/// The value of a general-purpose register of 32 or 64 bits.
fn read_gpr(r: &kvm_regs, reg: Register) -> Option<u64> {
    let v = reg64(r, reg)?;
    match reg.size() {
        8 => Some(v),
        4 => Some(v & 0xffff_ffff),
        _ => None,
    }
}

/// Writes a 64- or 32-bit register (a 32-bit write clears the upper half);
/// never RSP (see the module's note).
fn write_gpr(r: &mut kvm_regs, reg: Register, v: u64) -> Result<(), &'static str> {
    if reg.full_register() == Register::RSP {
        return Err("writes RSP");
    }
    let size = reg.size();
    let dst = reg64_mut(r, reg).ok_or("register")?;
    match size {
        8 => *dst = v,
        4 => *dst = v & 0xffff_ffff,
        _ => return Err("register size"),
    }
    Ok(())
}

fn load(mem: &GuestMemoryMmap, gpa: u64, size: usize) -> Result<u64, &'static str> {
    let a = GuestAddress(gpa);
    let e = |_| "memory outside RAM";
    Ok(match size {
        8 => mem.load::<u64>(a, Ordering::Relaxed).map_err(e)?,
        4 => mem.load::<u32>(a, Ordering::Relaxed).map_err(e)? as u64,
        _ => return Err("access size"),
    })
}

fn store(mem: &GuestMemoryMmap, gpa: u64, size: usize, v: u64) -> Result<(), &'static str> {
    let a = GuestAddress(gpa);
    let e = |_| "memory outside RAM";
    match size {
        8 => mem.store(v, a, Ordering::Relaxed).map_err(e),
        4 => mem.store(v as u32, a, Ordering::Relaxed).map_err(e),
        2 => mem.store(v as u16, a, Ordering::Relaxed).map_err(e),
        1 => mem.store(v as u8, a, Ordering::Relaxed).map_err(e),
        _ => Err("access size"),
    }
}

/// Reads the instruction bytes at `rip`: up to 15, from the next page too
/// when the instruction may cross into it (a function entry at a page's
/// last bytes is common), if that page is mapped.
fn fetch(
    mem: &GuestMemoryMmap,
    s: &kvm_sregs,
    rip: u64,
    written: &mut Vec<u64>,
) -> Result<Vec<u8>, &'static str> {
    let gpa = translate(mem, s, rip, false, written)?;
    let n = (0x1000 - (rip & 0xfff)).min(15) as usize;
    let mut b = vec![0u8; n];
    mem.read_slice(&mut b, GuestAddress(gpa))
        .map_err(|_| "code outside RAM")?;
    if n < 15 {
        if let Ok(next) = translate(mem, s, rip + n as u64, false, written) {
            let mut rest = vec![0u8; 15 - n];
            if mem.read_slice(&mut rest, GuestAddress(next)).is_ok() {
                b.extend(rest);
            }
        }
    }
    Ok(b)
}

/// The memory operand's address (segment base included), if aligned to
/// `size` and inside a page.
fn address(
    insn: &Instruction,
    op: u32,
    r: &kvm_regs,
    s: &kvm_sregs,
    size: usize,
) -> Result<u64, &'static str> {
    let va = insn
        .virtual_address(op, 0, |reg, _, _| match reg {
            Register::FS => Some(s.fs.base),
            Register::GS => Some(s.gs.base),
            Register::ES | Register::CS | Register::SS | Register::DS => Some(0),
            _ => reg64(r, reg).map(|v| match reg.size() {
                8 => v,
                4 => v & 0xffff_ffff,
                _ => v,
            }),
        })
        .ok_or("address")?;
    if size == 0 || va % size as u64 != 0 {
        return Err("unaligned access");
    }
    Ok(va)
}

/// Carries out `insn` on `r` and `mem` (RIP is the caller's to advance).
fn execute(
    insn: &Instruction,
    r: &mut kvm_regs,
    s: &kvm_sregs,
    mem: &GuestMemoryMmap,
    w: &mut Vec<u64>,
) -> Result<(), &'static str> {
    if insn.has_lock_prefix() || insn.has_rep_prefix() || insn.has_repne_prefix() {
        return Err("prefix");
    }
    match insn.mnemonic() {
        Mnemonic::Nop => Ok(()),
        Mnemonic::Lea if insn.op1_kind() == OpKind::Memory => {
            let va = address(insn, 1, r, s, 1)?;
            write_gpr(r, insn.op0_register(), va)
        }
        Mnemonic::Mov => match (insn.op0_kind(), insn.op1_kind()) {
            (OpKind::Register, OpKind::Register) => {
                let v = read_gpr(r, insn.op1_register()).ok_or("register")?;
                write_gpr(r, insn.op0_register(), v)
            }
            (OpKind::Register, OpKind::Memory) => {
                let size = insn.op0_register().size();
                let va = address(insn, 1, r, s, size)?;
                let v = load(mem, translate(mem, s, va, false, w)?, size)?;
                write_gpr(r, insn.op0_register(), v)
            }
            (
                OpKind::Register,
                OpKind::Immediate32 | OpKind::Immediate64 | OpKind::Immediate32to64,
            ) => write_gpr(r, insn.op0_register(), insn.immediate(1)),
            (OpKind::Memory, k) => {
                let size = insn.memory_size().size();
                let v = match k {
                    // 32 and 64 bits only (no partial registers).
                    OpKind::Register => read_gpr(r, insn.op1_register()).ok_or("register")?,
                    OpKind::Immediate8
                    | OpKind::Immediate16
                    | OpKind::Immediate32
                    | OpKind::Immediate32to64 => insn.immediate(1),
                    _ => return Err("operand"),
                };
                let va = address(insn, 0, r, s, size)?;
                let gpa = translate(mem, s, va, true, w)?;
                store(mem, gpa, size, v)?;
                w.push(gpa);
                Ok(())
            }
            _ => Err("operands"),
        },
        _ => Err("instruction"),
    }
}

/// Does the instruction at `r.rip` of a vCPU stopped at a breakpoint
/// (registers `r`, system registers `s`): on [`Outcome::Done`] `r` is as
/// after it (RIP past it) and memory written; otherwise `r` is unchanged.
/// The guest-physical addresses written (data, page-table A/D bits) are
/// added to `written`. No ioctl: the caller passes registers it has (the
/// run structure's synced copy) and hands `r` back to KVM.
pub fn step_over(
    r: &mut kvm_regs,
    s: &kvm_sregs,
    mem: &GuestMemoryMmap,
    written: &mut Vec<u64>,
) -> Outcome {
    // 64-bit code segment, CPL 0.
    if s.cs.l != 1 || s.cs.selector & 3 != 0 {
        return Outcome::Unsupported("not 64-bit kernel code");
    }
    let bytes = match fetch(mem, s, r.rip, written) {
        Ok(b) => b,
        Err(why) => return Outcome::Unsupported(why),
    };
    let mut dec = Decoder::with_ip(64, &bytes, r.rip, DecoderOptions::NONE);
    let insn = dec.decode();
    if insn.is_invalid() {
        return Outcome::Unsupported("undecodable");
    }
    let mut after = *r;
    match execute(&insn, &mut after, s, mem, written) {
        Ok(()) => {
            after.rip = insn.next_ip();
            *r = after;
            Outcome::Done
        }
        Err(why) => Outcome::Unsupported(why),
    }
}
