//! Naming an instruction so that the name survives rebuilds and patches.
//!
//! `func+0x1f` is an offset into one build: a patch above it, another
//! compiler or the next release moves it, and on the fixed kernel it may
//! land inside another instruction. [`Symbols::portable_site`] finds, for
//! an address, the most specific site string in the pattern language that
//! resolves to exactly that address on this build, in this order:
//!
//! 1. the function's entry (`func`), or an inlined copy's (`inl@caller`);
//! 2. a pattern at the instruction (`FUNC/call:SYM`, `FUNC/store:` or
//!    `FUNC/load:STRUCT.MEMBER`, `#N` when several match), with FUNC the
//!    innermost inlined function the instruction belongs to (`inl@caller`),
//!    then the real function, the struct being that of the variable the
//!    DWARF places in the operand's base register; else such a pattern at
//!    the instruction before, with `/next`; in each scope a pattern that
//!    matches once (here or with `/next`) before any `#N`;
//! 3. the same with a struct only guessed: another variable in scope with
//!    a member at that offset (the base may hold a pointer loaded from
//!    memory, which no variable names);
//! 4. its `file:line`, when that line has just this one statement address;
//! 5. `func+off`, marked as not portable.
//!
//! Each candidate is checked by resolving it, so a name is never guessed.

use iced_x86::{InstructionInfoFactory, Mnemonic, OpKind, Register};

use super::dwarf::Dwarf;
use super::site::{Pattern, SiteSpec};
use super::{insn, to_function, Decoded, Error, Symbols};

/// A site string for one address (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Portable {
    pub site: String,
    /// False when only `func+off` names the address on this build.
    pub portable: bool,
}

impl Symbols {
    /// The most specific site string that survives rebuilds and resolves to
    /// exactly `addr` on this build (see the module docs).
    pub fn portable_site(&self, addr: u64) -> Result<Portable, Error> {
        let sym = self
            .image
            .function_at(addr)
            .ok_or_else(|| Error::NoFunction(format!("{addr:#x}")))?;
        let f = to_function(sym);
        let raw = format!("{}+{:#x}", f.name, addr - f.addr);
        let found = |site: String| Portable {
            site,
            portable: true,
        };
        // The name the function goes by: its base name when that finds this
        // very function (a clone's suffix may change with the next build).
        let base = f.name.split('.').next().unwrap_or(&f.name).to_string();
        let fname = match self.function(&base) {
            Ok(g) if g.addr == f.addr => base.clone(),
            _ => f.name.clone(),
        };
        if addr == f.addr {
            return Ok(found(fname));
        }
        let insns = self.decode(&f)?;
        let Some(k) = insns.iter().position(|d| d.insn.addr == addr) else {
            return Err(Error::Site {
                site: raw,
                reason: "not an instruction boundary".into(),
            });
        };
        let exact = |site: &str| matches!(self.resolve(site).as_deref(), Ok([s]) if s.addr == addr);
        // Innermost first: each function inlined at addr, then the function.
        let mut scopes: Vec<String> = Vec::new();
        for name in self.frames(addr).into_iter().filter_map(|(n, _)| n) {
            let s = format!("{name}@{base}");
            if name != base && !scopes.contains(&s) {
                scopes.push(s);
            }
        }
        for s in &scopes {
            if exact(s) {
                return Ok(found(s.clone()));
            }
        }
        scopes.push(fname);
        let here = self.patterns_of(&insns, k);
        let before = k
            .checked_sub(1)
            .map(|j| self.patterns_of(&insns, j))
            .unwrap_or_default();
        // Names the DWARF vouches for (a call's target, the struct of the
        // variable in the base register) before guessed ones, at the
        // instruction or just after the one before.
        // Within a scope, a pattern that matches once (here or with
        // `/next`) before any `#N`: an index counts the other matches
        // before it, which a patch to the function adds or removes.
        for strong in [true, false] {
            for s in &scopes {
                for unique in [true, false] {
                    for (ps, next) in [(&here, false), (&before, true)] {
                        for (p, _) in ps.iter().filter(|(_, st)| *st == strong) {
                            if let Some(site) = self.indexed(s, p, next, addr, unique) {
                                return Ok(found(site));
                            }
                        }
                    }
                }
            }
        }
        if let Some(loc) = self.location(addr) {
            if exact(&loc) {
                return Ok(found(loc));
            }
        }
        Ok(Portable {
            site: raw,
            portable: false,
        })
    }

    /// `scope/pattern[#N][/next]` resolving to exactly `addr`, the plain
    /// form when the pattern matches once; only that form when `unique`.
    fn indexed(
        &self,
        scope: &str,
        p: &Pattern,
        next: bool,
        addr: u64,
        unique: bool,
    ) -> Option<String> {
        let spec = |nth| {
            SiteSpec::Pattern {
                function: scope.to_string(),
                pattern: p.clone(),
                nth,
                next,
            }
            .to_string()
        };
        let hit = |s: &str| match self.resolve(s) {
            Ok(v) => Some(v.len() == 1 && v[0].addr == addr),
            Err(_) => None,
        };
        let plain = spec(None);
        if hit(&plain) == Some(true) {
            return Some(plain);
        }
        if unique {
            return None;
        }
        for n in 1..=64 {
            let s = spec(Some(n));
            match hit(&s) {
                Some(true) => return Some(s),
                Some(false) => {}
                None => break,
            }
        }
        None
    }

    /// The patterns an instruction matches, most telling first: a direct
    /// call's target; each struct member it writes, then reads, named by
    /// the variables in scope. `true` marks a name the DWARF vouches for:
    /// a call, or the struct of the variable held in the base register
    /// (the others only share the offset).
    fn patterns_of(&self, insns: &[Decoded], k: usize) -> Vec<(Pattern, bool)> {
        let d = &insns[k];
        let mut out = Vec::new();
        if let Some(to) = insn::call_target(&d.instr) {
            if let Some(s) = self.image.function_at(to).filter(|s| s.addr == to) {
                let target = s.name.split('.').next().unwrap_or(&s.name).to_string();
                out.push((Pattern::Call { target }, true));
            }
            return out;
        }
        let accesses = insn::member_accesses(&mut InstructionInfoFactory::new(), &d.instr);
        if accesses.is_empty() {
            return out;
        }
        let Ok(dwarf) = self.dwarf() else {
            return out;
        };
        let vars = dwarf.scope_struct_types(d.insn.addr);
        for write in [true, false] {
            for a in accesses
                .iter()
                .filter(|a| if write { a.write } else { a.read })
            {
                let make = |ty: String, member: String| {
                    if write {
                        Pattern::Store { ty, member }
                    } else {
                        Pattern::Load { ty, member }
                    }
                };
                // The struct the base register points to, when the DWARF
                // or the loads before say; then any other struct in scope
                // with a member at that offset (a guess).
                let known = a
                    .dwarf_reg
                    .and_then(|r| self.reg_struct(&dwarf, insns, k, r, 0));
                let guesses = vars.iter().map(|v| v.ty.clone());
                for (ty, strong) in known
                    .into_iter()
                    .map(|t| (t, true))
                    .chain(guesses.map(|t| (t, false)))
                {
                    if let Ok(Some(member)) = dwarf.member_at(&ty, a.disp) {
                        let p = make(ty, member);
                        if !out.iter().any(|(q, _)| *q == p) {
                            out.push((p, strong));
                        }
                    }
                }
            }
        }
        out
    }

    /// The struct that register `reg` (DWARF number) points to as
    /// instruction `k` runs: the variable the DWARF places in it there,
    /// else what the last `mov` into it loaded, a global or per-cpu
    /// pointer (`current_task`) or a pointer member of a struct known the
    /// same way (`p->sched_class`). Straight-line only: a call that may
    /// clobber the register, or any other write to it, ends the search.
    fn reg_struct(
        &self,
        dwarf: &Dwarf,
        insns: &[Decoded],
        k: usize,
        reg: u16,
        depth: usize,
    ) -> Option<String> {
        let pc = insns[k].insn.addr;
        if let Some(v) = dwarf
            .scope_struct_types(pc)
            .into_iter()
            .find(|v| v.reg == Some(reg))
        {
            return Some(v.ty);
        }
        if depth >= 3 {
            return None;
        }
        // rax, rdx, rcx, rsi, rdi, r8-r11: clobbered by calls.
        let caller_saved = matches!(reg, 0 | 1 | 2 | 4 | 5 | 8..=11);
        for j in (k.saturating_sub(32)..k).rev() {
            let ins = &insns[j].instr;
            if ins.mnemonic() == Mnemonic::Call && caller_saved {
                return None;
            }
            let writes = ins.op_count() >= 1
                && ins.op0_kind() == OpKind::Register
                && insn::dwarf_register(ins.op0_register()) == Some(reg);
            if !writes {
                continue;
            }
            if ins.mnemonic() != Mnemonic::Mov
                || ins.op1_kind() != OpKind::Memory
                || ins.memory_index() != Register::None
            {
                return None;
            }
            let disp = ins.memory_displacement64();
            let global = match ins.memory_base() {
                Register::None if ins.memory_segment() == Register::GS => true,
                Register::RIP => true,
                _ => false,
            };
            if global {
                let sym = self.image.object_at(disp)?;
                return dwarf.global_pointee(&sym.name, disp - sym.addr).ok()?;
            }
            if matches!(ins.memory_base(), Register::RSP | Register::RBP) {
                // A spilled value reloaded: follow the register stored there.
                return self.spilled(dwarf, insns, j, ins.memory_base(), disp, depth);
            }
            let base = insn::dwarf_register(ins.memory_base())?;
            let s = self.reg_struct(dwarf, insns, j, base, depth + 1)?;
            return dwarf.member_pointee(&s, disp).ok()?;
        }
        None
    }

    /// What the register last stored to stack slot `[base + disp]` before
    /// instruction `k` pointed to (see `reg_struct`).
    fn spilled(
        &self,
        dwarf: &Dwarf,
        insns: &[Decoded],
        k: usize,
        base: Register,
        disp: u64,
        depth: usize,
    ) -> Option<String> {
        for j in (k.saturating_sub(64)..k).rev() {
            let ins = &insns[j].instr;
            let to_slot = ins.op_count() == 2
                && ins.op0_kind() == OpKind::Memory
                && ins.memory_base() == base
                && ins.memory_index() == Register::None
                && ins.memory_displacement64() == disp;
            if !to_slot {
                continue;
            }
            if ins.mnemonic() != Mnemonic::Mov || ins.op1_kind() != OpKind::Register {
                return None;
            }
            let reg = insn::dwarf_register(ins.op1_register())?;
            return self.reg_struct(dwarf, insns, j, reg, depth + 1);
        }
        None
    }
}
