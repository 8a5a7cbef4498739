//! x86-64 decoding, gas-syntax text, and the instruction tests behind
//! pattern sites.

use iced_x86::{
    Decoder, DecoderOptions, Formatter, GasFormatter, Instruction, InstructionInfoFactory,
    Mnemonic, OpAccess, OpKind, Register,
};

use super::elf::{Image, Sym};

/// Decodes `bytes` as if loaded at `ip`. Undecodable bytes come back as
/// invalid instructions rather than an error, so a listing still shows
/// where decoding went wrong.
pub(super) fn decode(bytes: &[u8], ip: u64) -> Vec<Instruction> {
    let mut decoder = Decoder::with_ip(64, bytes, ip, DecoderOptions::NONE);
    let mut out = Vec::new();
    while decoder.can_decode() {
        out.push(decoder.decode());
    }
    out
}

pub(super) struct Text {
    formatter: GasFormatter,
}

impl Text {
    pub fn new() -> Text {
        let mut formatter = GasFormatter::new();
        // Match objdump's spelling so listings can be compared by eye.
        formatter.options_mut().set_uppercase_hex(false);
        Text { formatter }
    }

    /// Gas syntax, with objdump-style `<symbol+off>` after branch targets
    /// and `# symbol` after absolute and per-cpu (`%gs:`) memory operands.
    pub fn format(&mut self, instr: &Instruction, image: &Image) -> String {
        let mut out = String::new();
        if instr.is_invalid() {
            out.push_str("(bad)");
            return out;
        }
        self.formatter.format(instr, &mut out);
        if matches!(instr.op0_kind(), OpKind::NearBranch64) {
            let target = instr.near_branch_target();
            if let Some(s) = image.function_at(target) {
                out.push_str(&format!(" <{}>", with_offset(s, target)));
            }
            return out;
        }
        if let Some(addr) = absolute_memory(instr) {
            let kernel_half = addr >= 0xffff_8000_0000_0000;
            let per_cpu = instr.memory_segment() == Register::GS;
            let sym = if kernel_half {
                image.object_at(addr).or_else(|| image.function_at(addr))
            } else if per_cpu {
                image.object_at(addr)
            } else {
                None
            };
            if let Some(s) = sym {
                out.push_str(&format!("  # {}", with_offset(s, addr)));
            }
        }
        out
    }
}

fn with_offset(s: &Sym, addr: u64) -> String {
    match addr - s.addr {
        0 => s.name.clone(),
        off => format!("{}+{off:#x}", s.name),
    }
}

/// The address of a memory operand that needs no register to compute.
fn absolute_memory(instr: &Instruction) -> Option<u64> {
    (0..instr.op_count()).find(|&i| instr.op_kind(i) == OpKind::Memory)?;
    if instr.is_ip_rel_memory_operand() {
        Some(instr.ip_rel_memory_address())
    } else if instr.memory_base() == Register::None && instr.memory_index() == Register::None {
        Some(instr.memory_displacement64())
    } else {
        None
    }
}

/// Target of a direct near call.
pub(super) fn call_target(instr: &Instruction) -> Option<u64> {
    (instr.mnemonic() == Mnemonic::Call && instr.op0_kind() == OpKind::NearBranch64)
        .then(|| instr.near_branch_target())
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Read,
    Write,
}

/// One struct member access of an instruction: `[base + disp]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MemberAccess {
    pub disp: u64,
    pub read: bool,
    pub write: bool,
    /// The base register in DWARF numbering (see `dwarf::ScopeVar`).
    pub dwarf_reg: Option<u16>,
}

/// The memory operands of `instr` at `[reg + disp]` where `reg` could hold
/// a struct pointer. Stack (`%rsp`, and `%rbp`, the frame pointer in this
/// kernel) and `%rip` bases, indexed operands and `%fs:`/`%gs:` (per-cpu)
/// operands are not struct member accesses.
pub(super) fn member_accesses(
    factory: &mut InstructionInfoFactory,
    instr: &Instruction,
) -> Vec<MemberAccess> {
    if instr.is_invalid() {
        return Vec::new();
    }
    factory
        .info(instr)
        .used_memory()
        .iter()
        .filter(|m| {
            !matches!(
                m.base(),
                Register::None
                    | Register::RSP
                    | Register::RBP
                    | Register::RIP
                    | Register::ESP
                    | Register::EBP
                    | Register::EIP
            ) && m.index() == Register::None
                && !matches!(m.segment(), Register::FS | Register::GS)
        })
        .map(|m| MemberAccess {
            disp: m.displacement(),
            read: matches!(
                m.access(),
                OpAccess::Read | OpAccess::CondRead | OpAccess::ReadWrite | OpAccess::ReadCondWrite
            ),
            write: matches!(
                m.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            ),
            dwarf_reg: dwarf_register(m.base()),
        })
        .collect()
}

/// x86-64 DWARF register numbers of the general-purpose registers.
pub(super) fn dwarf_register(r: Register) -> Option<u16> {
    use Register::*;
    let order = [
        RAX, RDX, RCX, RBX, RSI, RDI, RBP, RSP, R8, R9, R10, R11, R12, R13, R14, R15,
    ];
    let full = r.full_register();
    order.iter().position(|&x| x == full).map(|i| i as u16)
}

/// Whether `instr` reads or writes memory at `[reg + disp]` where `reg`
/// could hold a struct pointer (see [`member_accesses`]).
pub(super) fn accesses_member(
    factory: &mut InstructionInfoFactory,
    instr: &Instruction,
    disp: u64,
    access: Access,
) -> bool {
    member_accesses(factory, instr).iter().any(|m| {
        m.disp == disp
            && match access {
                Access::Write => m.write,
                Access::Read => m.read,
            }
    })
}

/// The 64-bit base register of `instr`'s struct memory operand, lowercase
/// (see [`accesses_member`] for what is not a struct operand).
pub(super) fn struct_base(instr: &Instruction) -> Option<String> {
    if instr.is_invalid() {
        return None;
    }
    let mut factory = InstructionInfoFactory::new();
    factory.info(instr).used_memory().iter().find_map(|m| {
        let b = m.base();
        let ok = b.is_gpr64()
            && !matches!(b, Register::RSP | Register::RBP | Register::RIP)
            && !matches!(m.segment(), Register::FS | Register::GS);
        ok.then(|| format!("{b:?}").to_lowercase())
    })
}

/// What an instruction does that another CPU could observe or be affected
/// by. Between two such instructions a stall changes only time, so a stall
/// just before each one is a distinct point of a thread's interleaving
/// (DataCollider's and SKI's reduction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// The function's first instruction.
    Entry,
    Load,
    Store,
    /// A locked read-modify-write or `xchg` with memory.
    Atomic,
    /// A call: the callee's accesses (locks, wakeups) follow.
    Call,
}

impl Class {
    pub const ALL: &[(&str, Class)] = &[
        ("entry", Class::Entry),
        ("load", Class::Load),
        ("store", Class::Store),
        ("atomic", Class::Atomic),
        ("call", Class::Call),
    ];
}

/// The class of `instr` as a stall point, or `None` for one that touches
/// nothing shared: register-only work, branches, `lea`, `push`/`pop` and
/// other implicit stack traffic, per-cpu (`%gs:`) data.
pub(super) fn class(factory: &mut InstructionInfoFactory, instr: &Instruction) -> Option<Class> {
    if instr.is_invalid() {
        return None;
    }
    if matches!(instr.mnemonic(), Mnemonic::Call) {
        return Some(Class::Call);
    }
    let explicit = (0..instr.op_count()).any(|i| instr.op_kind(i) == OpKind::Memory);
    if !explicit
        || matches!(
            instr.mnemonic(),
            Mnemonic::Lea | Mnemonic::Nop | Mnemonic::Prefetcht0 | Mnemonic::Prefetchw
        )
    {
        return None;
    }
    if matches!(instr.memory_segment(), Register::GS | Register::FS) {
        return None;
    }
    if instr.has_lock_prefix() || matches!(instr.mnemonic(), Mnemonic::Xchg | Mnemonic::Cmpxchg) {
        return Some(Class::Atomic);
    }
    let writes = factory.info(instr).used_memory().iter().any(|m| {
        matches!(
            m.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        )
    });
    Some(if writes { Class::Store } else { Class::Load })
}

/// The explicit memory operand of `instr` as (base, index, scale,
/// displacement), registers lowercase; a RIP-relative or absolute operand
/// has neither register and its address as displacement. `None` for no
/// operand, `lea`, and per-cpu (`%gs:`) or `%fs:` operands.
pub(super) fn mem_operand(
    instr: &Instruction,
) -> Option<(Option<String>, Option<String>, u32, u64)> {
    if instr.is_invalid()
        || matches!(instr.mnemonic(), Mnemonic::Lea | Mnemonic::Nop)
        || !(0..instr.op_count()).any(|i| instr.op_kind(i) == OpKind::Memory)
        || matches!(instr.memory_segment(), Register::GS | Register::FS)
    {
        return None;
    }
    if instr.is_ip_rel_memory_operand() {
        return Some((None, None, 1, instr.ip_rel_memory_address()));
    }
    let name = |r: Register| {
        (r != Register::None && r.is_gpr64()).then(|| format!("{r:?}").to_lowercase())
    };
    let (b, x) = (instr.memory_base(), instr.memory_index());
    if (b != Register::None && !b.is_gpr64()) || (x != Register::None && !x.is_gpr64()) {
        return None;
    }
    Some((
        name(b),
        name(x),
        instr.memory_index_scale(),
        instr.memory_displacement64(),
    ))
}
