//! What a `[reg+disp]` operand points to, for naming it
//! (`symbols/portable.rs`): the struct types of the variables in scope at
//! an address and the registers the location lists put them in, the
//! member of a struct at an offset, and the struct a member, a global or
//! a per-cpu pointer points to. Apart from `dwarf.rs` because it answers
//! another question (which struct an access is to) than lines, inlined
//! copies and member offsets (where a site is).

use gimli::{AttributeValue, UnitOffset};

use super::{dwarf_err, member_location, Dwarf, MemberError, Unit, R};

/// A variable in scope at an address: the struct type it is or points to,
/// and the register holding it there, if one does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeVar {
    pub ty: String,
    /// DWARF register number (x86-64: 0 rax, 1 rdx, 2 rcx, 3 rbx, 4 rsi,
    /// 5 rdi, 6 rbp, 7 rsp, 8-15 r8-r15).
    pub reg: Option<u16>,
}

impl Dwarf {
    /// Names of the struct and union types that the variables and
    /// parameters in scope at `pc` are or point to, innermost scope first
    /// (an inlined copy's own parameters before its caller's): the types a
    /// `[reg+disp]` operand at `pc` most likely belongs to. Globals are
    /// left out; so are anonymous types.
    pub fn scope_struct_types(&self, pc: u64) -> Vec<ScopeVar> {
        let Some(u) = self.ctx.find_dwarf_and_unit(pc).skip_all_loads() else {
            return Vec::new();
        };
        let unit = u.unit;
        let mut levels = Vec::new();
        if let Ok(mut tree) = unit.entries_tree(None) {
            if let Ok(root) = tree.root() {
                // The unit's own children are globals: only its scopes count.
                let _ = self.scope_levels(unit, root, pc, false, &mut levels);
            }
        }
        let mut out: Vec<ScopeVar> = Vec::new();
        for v in levels.into_iter().rev().flatten() {
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }

    /// Pushes, outermost first, the struct types of each scope under `node`
    /// that covers `pc` (see `scope_struct_types`).
    fn scope_levels(
        &self,
        unit: &Unit,
        node: gimli::EntriesTreeNode<'_, '_, R>,
        pc: u64,
        is_scope: bool,
        levels: &mut Vec<Vec<ScopeVar>>,
    ) -> gimli::Result<()> {
        let mut here = Vec::new();
        let mut inner = Vec::new();
        let mut children = node.children();
        while let Some(child) = children.next()? {
            let e = child.entry();
            match e.tag() {
                gimli::DW_TAG_formal_parameter | gimli::DW_TAG_variable if is_scope => {
                    if let Some(ty) = self.var_struct_type(unit, e) {
                        let reg = self.register_at(unit, e, pc);
                        here.push(ScopeVar { ty, reg });
                    }
                }
                gimli::DW_TAG_subprogram
                | gimli::DW_TAG_inlined_subroutine
                | gimli::DW_TAG_lexical_block
                    if inner.is_empty() && self.covers(unit, e, pc) =>
                {
                    self.scope_levels(unit, child, pc, true, &mut inner)?;
                }
                _ => {}
            }
        }
        if is_scope {
            levels.push(here);
        }
        levels.extend(inner);
        Ok(())
    }

    fn covers(&self, unit: &Unit, e: &gimli::DebuggingInformationEntry<R>, pc: u64) -> bool {
        let Ok(mut it) = self.dwarf.die_ranges(unit, e) else {
            return false;
        };
        while let Ok(Some(r)) = it.next() {
            if r.begin <= pc && pc < r.end {
                return true;
            }
        }
        false
    }

    /// The DWARF register (x86-64 numbering) holding a variable at `pc`,
    /// when its location there is exactly a register.
    fn register_at(
        &self,
        unit: &Unit,
        e: &gimli::DebuggingInformationEntry<R>,
        pc: u64,
    ) -> Option<u16> {
        let attr = e.attr_value(gimli::DW_AT_location)?;
        let only_register = |expr: gimli::Expression<R>| {
            let mut ops = expr.operations(unit.encoding());
            match (ops.next(), ops.next()) {
                (Ok(Some(gimli::Operation::Register { register })), Ok(None)) => Some(register.0),
                _ => None,
            }
        };
        if let AttributeValue::Exprloc(expr) = attr {
            return only_register(expr);
        }
        let mut it = self.dwarf.attr_locations(unit, attr).ok()??;
        while let Ok(Some(l)) = it.next() {
            if l.range.begin <= pc && pc < l.range.end {
                return only_register(l.data);
            }
        }
        None
    }

    /// The struct a variable is or points to (through typedefs, qualifiers
    /// and one pointer), its type taken from its abstract origin for the
    /// copies of inlined functions.
    fn var_struct_type(
        &self,
        unit: &Unit,
        e: &gimli::DebuggingInformationEntry<R>,
    ) -> Option<String> {
        let ty = match e.attr_value(gimli::DW_AT_type) {
            Some(AttributeValue::UnitRef(t)) => t,
            _ => match e.attr_value(gimli::DW_AT_abstract_origin) {
                Some(AttributeValue::UnitRef(o)) => {
                    match unit.entry(o).ok()?.attr_value(gimli::DW_AT_type) {
                        Some(AttributeValue::UnitRef(t)) => t,
                        _ => return None,
                    }
                }
                _ => return None,
            },
        };
        let mut off = self.strip_type(unit, ty).ok()?;
        let entry = unit.entry(off).ok()?;
        if entry.tag() == gimli::DW_TAG_pointer_type {
            let Some(AttributeValue::UnitRef(t)) = entry.attr_value(gimli::DW_AT_type) else {
                return None;
            };
            off = self.strip_type(unit, t).ok()?;
        }
        let entry = unit.entry(off).ok()?;
        if !matches!(
            entry.tag(),
            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type
        ) {
            return None;
        }
        let name = self.attr_string(unit, entry.attr(gimli::DW_AT_name)?.value());
        (!name.is_empty()).then_some(name)
    }

    /// The member path (`__state`, `se.on_rq`) of struct or union `ty`
    /// that starts exactly at byte `disp` and is not itself a struct: the
    /// most specific name for an access at `[reg+disp]`. Anonymous members
    /// are looked through, as `member_offset` does, so that the path
    /// resolves back to `disp`. `None` when `disp` falls inside an array or
    /// a scalar, or past the type.
    pub fn member_at(&self, ty: &str, disp: u64) -> Result<Option<String>, MemberError> {
        Ok(self.member_leaf(ty, disp)?.map(|(path, _)| path))
    }

    /// The struct that the member of `ty` at byte `disp` points to
    /// (`task_struct` at 0x...: `sched_class` → `sched_class`).
    pub fn member_pointee(&self, ty: &str, disp: u64) -> Result<Option<String>, MemberError> {
        Ok(self.member_leaf(ty, disp)?.and_then(|(_, p)| p))
    }

    fn member_leaf(
        &self,
        ty: &str,
        disp: u64,
    ) -> Result<Option<(String, Option<String>)>, MemberError> {
        let Some((unit, off)) = self.find_type(ty)? else {
            return Ok(None);
        };
        self.member_path(&unit, off, disp, 0)
    }

    /// The struct that byte `off` of the global (or per-cpu) variable
    /// `name` points to: the variable's own type if it is a pointer to a
    /// struct (`current_task`), else that of its member at `off`
    /// (`pcpu_hot.current_task`).
    pub fn global_pointee(&self, name: &str, off: u64) -> Result<Option<String>, MemberError> {
        let mut units = self.dwarf.units();
        while let Some(header) = units.next().map_err(dwarf_err)? {
            let unit = self.dwarf.unit(header).map_err(dwarf_err)?;
            let ty = self.top_level(&unit, |e| {
                if e.tag() != gimli::DW_TAG_variable {
                    return None;
                }
                match (e.attr(gimli::DW_AT_name), e.attr_value(gimli::DW_AT_type)) {
                    (Some(a), Some(AttributeValue::UnitRef(t)))
                        if self.name_is(&unit, a.value(), name) =>
                    {
                        Some(t)
                    }
                    _ => None,
                }
            })?;
            let Some(t) = ty else { continue };
            if off == 0 {
                if let Some(p) = self.pointee_struct(&unit, t) {
                    return Ok(Some(p));
                }
            }
            let inner = self.strip_type(&unit, t)?;
            let e = unit.entry(inner).map_err(dwarf_err)?;
            if !matches!(
                e.tag(),
                gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type
            ) {
                return Ok(None);
            }
            return Ok(self.member_path(&unit, inner, off, 0)?.and_then(|(_, p)| p));
        }
        Ok(None)
    }

    /// The name of the struct or union a pointer type points to.
    fn pointee_struct(&self, unit: &Unit, ty: UnitOffset) -> Option<String> {
        let off = self.strip_type(unit, ty).ok()?;
        let e = unit.entry(off).ok()?;
        if e.tag() != gimli::DW_TAG_pointer_type {
            return None;
        }
        let Some(AttributeValue::UnitRef(t)) = e.attr_value(gimli::DW_AT_type) else {
            return None;
        };
        let s = self.strip_type(unit, t).ok()?;
        let e = unit.entry(s).ok()?;
        if !matches!(
            e.tag(),
            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type
        ) {
            return None;
        }
        let name = self.attr_string(unit, e.attr(gimli::DW_AT_name)?.value());
        (!name.is_empty()).then_some(name)
    }

    fn member_path(
        &self,
        unit: &Unit,
        off: UnitOffset,
        disp: u64,
        depth: usize,
    ) -> Result<Option<(String, Option<String>)>, MemberError> {
        if depth > 16 {
            return Ok(None);
        }
        let mut members: Vec<(Option<String>, u64, Option<UnitOffset>)> = Vec::new();
        {
            let mut tree = unit.entries_tree(Some(off)).map_err(dwarf_err)?;
            let root = tree.root().map_err(dwarf_err)?;
            let mut children = root.children();
            while let Some(child) = children.next().map_err(dwarf_err)? {
                let e = child.entry();
                if e.tag() != gimli::DW_TAG_member {
                    continue;
                }
                let name = e
                    .attr(gimli::DW_AT_name)
                    .map(|a| self.attr_string(unit, a.value()));
                let ty = match e.attr_value(gimli::DW_AT_type) {
                    Some(AttributeValue::UnitRef(t)) => Some(t),
                    _ => None,
                };
                members.push((name, member_location(e), ty));
            }
        }
        // The members that can hold `disp`: those starting at the greatest
        // offset not past it (several in a union, or bit-fields).
        let Some(start) = members.iter().map(|m| m.1).filter(|&o| o <= disp).max() else {
            return Ok(None);
        };
        for (name, loc, ty) in members.into_iter().filter(|m| m.1 == start) {
            let Some(ty) = ty else { continue };
            let inner = self.strip_type(unit, ty)?;
            let e = unit.entry(inner).map_err(dwarf_err)?;
            let sub = if matches!(
                e.tag(),
                gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type
            ) {
                if e.attr(gimli::DW_AT_declaration).is_some() {
                    let Some(a) = e.attr(gimli::DW_AT_name) else {
                        continue;
                    };
                    let n = self.attr_string(unit, a.value());
                    match self.find_type(&n)? {
                        Some((u2, o2)) => self.member_path(&u2, o2, disp - loc, depth + 1)?,
                        None => None,
                    }
                } else {
                    self.member_path(unit, inner, disp - loc, depth + 1)?
                }
            } else if loc == disp {
                Some((String::new(), self.pointee_struct(unit, ty)))
            } else {
                None
            };
            let Some((sub, pointee)) = sub else { continue };
            let path = match (name, sub.is_empty()) {
                (Some(n), true) => n,
                (Some(n), false) => format!("{n}.{sub}"),
                (None, false) => sub,
                (None, true) => continue,
            };
            return Ok(Some((path, pointee)));
        }
        Ok(None)
    }
}
