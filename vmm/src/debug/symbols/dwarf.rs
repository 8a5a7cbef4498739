//! DWARF queries: address → file:line (addr2line), file:line → addresses
//! (line programs), struct member offsets (type DIEs).
//!
//! Built on first use: parsing is deferred so that loading a vmlinux only
//! costs its symbol table. Sections are ranges of the one shared file
//! buffer (`EndianArcSlice`), so nothing is copied unless compressed.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gimli::{AttributeValue, EndianArcSlice, Reader, RunTimeEndian, UnitOffset};
use object::{Object, ObjectSection};

mod operand;

type R = EndianArcSlice<RunTimeEndian>;
type Unit = gimli::Unit<R>;

pub(super) struct Dwarf {
    dwarf: Arc<gimli::Dwarf<R>>,
    ctx: addr2line::Context<R>,
    /// The build directory, stripped from locations so they read
    /// `kernel/sched/core.c:3659` whatever directory the kernel was built in.
    comp_dir: Option<String>,
}

/// One inlined copy of a function (`DW_TAG_inlined_subroutine`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlinedInstance {
    /// Code address ranges, `[begin, end)`, sorted.
    pub ranges: Vec<(u64, u64)>,
    /// Where the copy starts executing (`DW_AT_entry_pc`, else the lowest
    /// address).
    pub entry: u64,
    /// `file:line` of the call that was inlined.
    pub call_site: Option<String>,
}

/// Addresses of one line, grouped by the full path that matched.
pub(super) struct LineMatch {
    pub file: String,
    pub addrs: Vec<u64>,
}

impl Dwarf {
    pub fn load(data: &Arc<[u8]>) -> Result<Dwarf, String> {
        let file = object::File::parse(&**data).map_err(|e| e.to_string())?;
        let endian = if file.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        if file.section_by_name(".debug_info").is_none() {
            return Err(
                "the ELF has no .debug_info section (built without CONFIG_DEBUG_INFO?)".into(),
            );
        }
        let section = |id: gimli::SectionId| -> Result<R, String> {
            let Some(s) = file.section_by_name(id.name()) else {
                return Ok(R::new(Arc::from(&[][..]), endian));
            };
            let compressed = s.compressed_file_range().map_err(|e| e.to_string())?;
            if compressed.format == object::CompressionFormat::None {
                let off = compressed.offset as usize;
                let len = compressed.uncompressed_size as usize;
                if off.checked_add(len).is_none_or(|end| end > data.len()) {
                    return Err(format!("{} lies outside the file", id.name()));
                }
                Ok(R::new(data.clone(), endian).range(off..off + len))
            } else {
                let bytes = s
                    .uncompressed_data()
                    .map_err(|e| format!("{}: {e}", id.name()))?;
                Ok(R::new(Arc::from(bytes.into_owned()), endian))
            }
        };
        let dwarf = Arc::new(gimli::Dwarf::load(section)?);
        let comp_dir = match dwarf.units().next() {
            Ok(Some(header)) => dwarf.unit(header).ok().and_then(|u| {
                u.comp_dir
                    .as_ref()
                    .and_then(|d| d.to_string_lossy().ok().map(Cow::into_owned))
            }),
            _ => None,
        };
        let ctx = addr2line::Context::from_arc_dwarf(dwarf.clone()).map_err(|e| e.to_string())?;
        Ok(Dwarf {
            dwarf,
            ctx,
            comp_dir,
        })
    }

    fn relative<'a>(&self, path: &'a str) -> &'a str {
        self.comp_dir
            .as_deref()
            .and_then(|d| path.strip_prefix(d))
            .and_then(|p| p.strip_prefix('/'))
            .unwrap_or(path)
    }

    /// `file:line` of the line-table row covering `addr`. For inlined code
    /// that row names the innermost inlined source line, which is the
    /// statement the instruction actually implements.
    pub fn location(&self, addr: u64) -> Option<String> {
        let loc = self.ctx.find_location(addr).ok()??;
        let file = normalize(loc.file?);
        Some(format!("{}:{}", self.relative(&file), loc.line?))
    }

    /// Every address where a statement of `line` begins (see below), in
    /// files whose path ends with `file` (on a `/` boundary), by file. `None` if no
    /// file in any line table matches the path at all.
    pub fn line_addresses(&self, file: &str, line: u64) -> Result<Option<Vec<LineMatch>>, String> {
        let want = normalize(file.trim_start_matches("./"));
        let suffix = format!("/{want}");
        let matches_path = |full: &str| full == want || full.ends_with(&suffix);
        let mut any_file = false;
        let mut found: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        let mut loose: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        let mut units = self.dwarf.units();
        while let Some(header) = units.next().map_err(|e| e.to_string())? {
            let unit = self.dwarf.unit(header).map_err(|e| e.to_string())?;
            let Some(program) = unit.line_program.clone() else {
                continue;
            };
            let comp_dir = unit
                .comp_dir
                .as_ref()
                .and_then(|d| d.to_string_lossy().ok().map(Cow::into_owned));
            // Index → matching path, from the header alone; most units
            // do not mention the file and are skipped without running rows.
            let header = program.header();
            let first = if header.version() >= 5 { 0 } else { 1 };
            let mut wanted: BTreeMap<u64, String> = BTreeMap::new();
            for (i, entry) in header.file_names().iter().enumerate() {
                let name = self.attr_string(&unit, entry.path_name());
                let dir = entry.directory(header).map(|d| self.attr_string(&unit, d));
                let full = join(comp_dir.as_deref(), dir.as_deref(), &name);
                if matches_path(&full) {
                    wanted.insert(i as u64 + first, self.relative(&full).to_string());
                }
            }
            if wanted.is_empty() {
                continue;
            }
            any_file = true;
            // GCC emits runs of rows at one address (location views); only
            // the last of a run describes the instruction there. An address
            // counts if the run holds an is_stmt row for the line and ends
            // on that line: this drops the zero-length statement rows that
            // inlining leaves at function entries and after the real code.
            let mut run_addr = None;
            let mut stmt_in_run: Option<&String> = None;
            let mut last_in_run: Option<&String> = None;
            let mut rows = program.rows();
            while let Some((_, row)) = rows.next_row().map_err(|e| e.to_string())? {
                if run_addr != Some(row.address()) || row.end_sequence() {
                    if let (Some(addr), Some(a), Some(b)) = (run_addr, stmt_in_run, last_in_run) {
                        if a == b && row.address() > addr {
                            found.entry(a.clone()).or_default().insert(addr);
                        }
                    }
                    // What addr2line (and `symbols`) says of the address:
                    // the run's last row, statement or not.
                    if let (Some(addr), Some(b)) = (run_addr, last_in_run) {
                        if row.address() > addr {
                            loose.entry(b.clone()).or_default().insert(addr);
                        }
                    }
                    (run_addr, stmt_in_run, last_in_run) = (Some(row.address()), None, None);
                }
                if row.end_sequence() {
                    run_addr = None;
                    continue;
                }
                let here = match row.line() {
                    Some(l) if l.get() == line => wanted.get(&row.file_index()),
                    _ => None,
                };
                if row.is_stmt() && here.is_some() {
                    stmt_in_run = here;
                }
                last_in_run = here;
            }
        }
        if !any_file {
            return Ok(None);
        }
        // A line with no statement row of its own (a call's line inside a
        // statement GCC placed elsewhere) still names the instructions
        // attributed to it: every file:line `symbols` prints resolves.
        if found.is_empty() {
            found = loose;
        }
        Ok(Some(
            found
                .into_iter()
                .map(|(file, addrs)| LineMatch {
                    file,
                    addrs: addrs.into_iter().collect(),
                })
                .collect(),
        ))
    }

    /// The source frames at `addr`, innermost first: each function inlined
    /// there with the line it is at, then the real function. Empty when
    /// the DWARF does not cover `addr`.
    pub fn frames(&self, addr: u64) -> Vec<(Option<String>, Option<String>)> {
        let mut out = Vec::new();
        let Ok(mut it) = self.ctx.find_frames(addr).skip_all_loads() else {
            return out;
        };
        while let Ok(Some(f)) = it.next() {
            let name = f
                .function
                .as_ref()
                .and_then(|n| n.raw_name().ok().map(|s| s.into_owned()));
            let loc = f.location.as_ref().and_then(|l| {
                let file = normalize(l.file?);
                Some(format!("{}:{}", self.relative(&file), l.line?))
            });
            out.push((name, loc));
        }
        out
    }

    /// Every inlined copy of the function `name`: the inlined-subroutine
    /// entries whose abstract origin is a subprogram of that name in the
    /// same unit. Only units that declare such a subprogram are walked
    /// twice; the others cost one pass over their subprogram names.
    pub fn inlined_instances(&self, name: &str) -> Result<Vec<InlinedInstance>, String> {
        let err = |e: gimli::Error| e.to_string();
        let mut out = Vec::new();
        let mut units = self.dwarf.units();
        while let Some(header) = units.next().map_err(err)? {
            let unit = self.dwarf.unit(header).map_err(err)?;
            let mut origins = BTreeSet::new();
            let mut cursor = unit.entries();
            while let Some(e) = cursor.next_dfs().map_err(err)? {
                if e.tag() == gimli::DW_TAG_subprogram {
                    if let Some(a) = e.attr(gimli::DW_AT_name) {
                        if self.name_is(&unit, a.value(), name) {
                            origins.insert(e.offset());
                        }
                    }
                }
            }
            if origins.is_empty() {
                continue;
            }
            let mut cursor = unit.entries();
            while let Some(e) = cursor.next_dfs().map_err(err)? {
                if e.tag() != gimli::DW_TAG_inlined_subroutine {
                    continue;
                }
                let Some(AttributeValue::UnitRef(origin)) =
                    e.attr_value(gimli::DW_AT_abstract_origin)
                else {
                    continue;
                };
                if !origins.contains(&origin) {
                    continue;
                }
                let mut ranges = Vec::new();
                let mut it = self.dwarf.die_ranges(&unit, e).map_err(err)?;
                while let Some(r) = it.next().map_err(err)? {
                    if r.end > r.begin {
                        ranges.push((r.begin, r.end));
                    }
                }
                if ranges.is_empty() {
                    continue;
                }
                ranges.sort_unstable();
                let entry = match e.attr_value(gimli::DW_AT_entry_pc) {
                    Some(AttributeValue::Addr(a)) => a,
                    _ => ranges[0].0,
                };
                let call_site = self.call_site(&unit, e);
                out.push(InlinedInstance {
                    ranges,
                    entry,
                    call_site,
                });
            }
        }
        out.sort_by_key(|i| i.entry);
        Ok(out)
    }

    /// `file:line` of an inlined subroutine's call (DW_AT_call_file/line).
    fn call_site(&self, unit: &Unit, e: &gimli::DebuggingInformationEntry<R>) -> Option<String> {
        let line = match e.attr_value(gimli::DW_AT_call_line)? {
            AttributeValue::Udata(l) => l,
            v => v.udata_value()?,
        };
        let index = match e.attr_value(gimli::DW_AT_call_file)? {
            AttributeValue::FileIndex(i) => i,
            v => v.udata_value()?,
        };
        let program = unit.line_program.as_ref()?;
        let header = program.header();
        let file = header.file(index)?;
        let name = self.attr_string(unit, file.path_name());
        let dir = file.directory(header).map(|d| self.attr_string(unit, d));
        let comp_dir = unit
            .comp_dir
            .as_ref()
            .and_then(|d| d.to_string_lossy().ok().map(Cow::into_owned));
        let full = join(comp_dir.as_deref(), dir.as_deref(), &name);
        Some(format!("{}:{line}", self.relative(&full)))
    }

    fn attr_string(&self, unit: &Unit, attr: AttributeValue<R>) -> String {
        self.dwarf
            .attr_string(unit, attr)
            .ok()
            .and_then(|r| r.to_string_lossy().ok().map(Cow::into_owned))
            .unwrap_or_default()
    }

    /// Byte offset of `path` (`member` or `member.sub...`) in the struct or
    /// union (or typedef of one) named `ty`, looking through anonymous
    /// struct and union members.
    pub fn member_offset(&self, ty: &str, path: &str) -> Result<u64, MemberError> {
        let (unit, off) = self
            .find_type(ty)?
            .ok_or_else(|| MemberError::NoType(ty.to_string()))?;
        let parts: Vec<&str> = path.split('.').collect();
        self.walk(&unit, off, ty, &parts)
    }

    fn walk(
        &self,
        unit: &Unit,
        mut off: UnitOffset,
        ty: &str,
        parts: &[&str],
    ) -> Result<u64, MemberError> {
        let mut total = 0;
        for (i, part) in parts.iter().enumerate() {
            let Some((member_off, member_ty)) = self.find_member(unit, off, part)? else {
                return Err(MemberError::NoMember {
                    ty: ty.to_string(),
                    member: parts[..=i].join("."),
                });
            };
            total += member_off;
            if i + 1 == parts.len() {
                break;
            }
            let not_struct = || MemberError::NoMember {
                ty: ty.to_string(),
                member: parts[..=i + 1].join("."),
            };
            let next = member_ty
                .and_then(|t| self.strip_type(unit, t).ok())
                .ok_or_else(not_struct)?;
            let entry = unit.entry(next).map_err(dwarf_err)?;
            if !matches!(
                entry.tag(),
                gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type
            ) {
                return Err(not_struct());
            }
            if entry.attr(gimli::DW_AT_declaration).is_some() {
                // Only declared in this unit: continue from the definition.
                let name = entry
                    .attr(gimli::DW_AT_name)
                    .map(|a| self.attr_string(unit, a.value()))
                    .ok_or_else(not_struct)?;
                let (unit, off) = self
                    .find_type(&name)?
                    .ok_or_else(|| MemberError::NoType(name.clone()))?;
                return Ok(total + self.walk(&unit, off, ty, &parts[i + 1..])?);
            }
            off = next;
        }
        Ok(total)
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn strip_type(&self, unit: &Unit, mut off: UnitOffset) -> Result<UnitOffset, MemberError> {
        for _ in 0..32 {
            let entry = unit.entry(off).map_err(dwarf_err)?;
            match entry.tag() {
                gimli::DW_TAG_typedef
                | gimli::DW_TAG_const_type
                | gimli::DW_TAG_volatile_type
                | gimli::DW_TAG_atomic_type
                | gimli::DW_TAG_restrict_type => match entry.attr_value(gimli::DW_AT_type) {
                    Some(AttributeValue::UnitRef(t)) => off = t,
                    _ => return Err(MemberError::Dwarf("typedef without a type".into())),
                },
                _ => return Ok(off),
            }
        }
        Err(MemberError::Dwarf("typedef chain too long".into()))
    }

    /// The member named `name` directly in `off`, or inside one of its
    /// anonymous struct/union members: (offset, type).
    fn find_member(
        &self,
        unit: &Unit,
        off: UnitOffset,
        name: &str,
    ) -> Result<Option<(u64, Option<UnitOffset>)>, MemberError> {
        let mut tree = unit.entries_tree(Some(off)).map_err(dwarf_err)?;
        let root = tree.root().map_err(dwarf_err)?;
        let mut children = root.children();
        let mut anonymous = Vec::new();
        while let Some(child) = children.next().map_err(dwarf_err)? {
            let e = child.entry();
            if e.tag() != gimli::DW_TAG_member {
                continue;
            }
            let ty = match e.attr_value(gimli::DW_AT_type) {
                Some(AttributeValue::UnitRef(t)) => Some(t),
                _ => None,
            };
            let loc = member_location(e);
            match e.attr(gimli::DW_AT_name) {
                Some(a) if self.attr_string(unit, a.value()) == name => return Ok(Some((loc, ty))),
                Some(_) => {}
                None => anonymous.extend(ty.map(|t| (loc, t))),
            }
        }
        for (loc, ty) in anonymous {
            let inner = self.strip_type(unit, ty)?;
            let tag = unit.entry(inner).map_err(dwarf_err)?.tag();
            if matches!(tag, gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type) {
                if let Some((o, t)) = self.find_member(unit, inner, name)? {
                    return Ok(Some((loc + o, t)));
                }
            }
        }
        Ok(None)
    }

    /// The first unit defining a struct/union `name` (or a typedef of one)
    /// at its top level. Every unit including the header has the same
    /// layout, so the first definition will do.
    fn find_type(&self, name: &str) -> Result<Option<(Unit, UnitOffset)>, MemberError> {
        let mut units = self.dwarf.units();
        while let Some(header) = units.next().map_err(dwarf_err)? {
            let unit = self.dwarf.unit(header).map_err(dwarf_err)?;
            let found = self.top_level(&unit, |e| {
                let tag = e.tag();
                let kind = matches!(
                    tag,
                    gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type | gimli::DW_TAG_typedef
                ) && e.attr(gimli::DW_AT_declaration).is_none();
                let named = e
                    .attr(gimli::DW_AT_name)
                    .is_some_and(|a| self.name_is(&unit, a.value(), name));
                (kind && named).then(|| (e.offset(), tag))
            })?;
            let Some((off, tag)) = found else { continue };
            if tag != gimli::DW_TAG_typedef {
                return Ok(Some((unit, off)));
            }
            let target = self.strip_type(&unit, off)?;
            let e = unit.entry(target).map_err(dwarf_err)?;
            if matches!(
                e.tag(),
                gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type
            ) && e.attr(gimli::DW_AT_declaration).is_none()
            {
                return Ok(Some((unit, target)));
            }
            if let Some(a) = e.attr(gimli::DW_AT_name) {
                let tag_name = self.attr_string(&unit, a.value());
                if tag_name != name {
                    return self.find_type(&tag_name);
                }
            }
        }
        Ok(None)
    }

    /// The first entry at the top level of `unit` (depth 1: not inside a
    /// function or a type) that `pick` turns into something.
    fn top_level<T>(
        &self,
        unit: &Unit,
        mut pick: impl FnMut(&gimli::DebuggingInformationEntry<R>) -> Option<T>,
    ) -> Result<Option<T>, MemberError> {
        let mut cursor = unit.entries();
        if cursor.next_dfs().map_err(dwarf_err)?.is_none() {
            return Ok(None);
        }
        let mut entry = cursor.next_dfs().map_err(dwarf_err)?;
        while let Some(e) = entry {
            if e.depth() != 1 {
                break;
            }
            if let Some(t) = pick(e) {
                return Ok(Some(t));
            }
            entry = cursor.next_sibling().map_err(dwarf_err)?;
        }
        Ok(None)
    }

    fn name_is(&self, unit: &Unit, attr: AttributeValue<R>, name: &str) -> bool {
        self.dwarf
            .attr_string(unit, attr)
            .ok()
            .and_then(|r| r.to_slice().ok().map(|s| s.as_ref() == name.as_bytes()))
            .unwrap_or(false)
    }
}

fn member_location(e: &gimli::DebuggingInformationEntry<R>) -> u64 {
    if let Some(a) = e.attr(gimli::DW_AT_data_member_location) {
        if let Some(v) = a.udata_value() {
            return v;
        }
        // DWARF 2 style: a location expression `DW_OP_plus_uconst N`.
        if let Some(expr) = a.exprloc_value() {
            let mut r = expr.0;
            if r.read_u8().ok() == Some(gimli::DW_OP_plus_uconst.0) {
                if let Ok(v) = r.read_uleb128() {
                    return v;
                }
            }
        }
        return 0;
    }
    // Bit-fields placed with DW_AT_data_bit_offset: the byte holding bit 0.
    e.attr(gimli::DW_AT_data_bit_offset)
        .and_then(|a| a.udata_value())
        .map_or(0, |bits| bits / 8)
}

#[derive(Debug)]
pub(super) enum MemberError {
    NoType(String),
    NoMember { ty: String, member: String },
    Dwarf(String),
}

fn dwarf_err(e: gimli::Error) -> MemberError {
    MemberError::Dwarf(e.to_string())
}

/// `comp_dir/dir/name`, each level skipped when the next is absolute.
fn join(comp_dir: Option<&str>, dir: Option<&str>, name: &str) -> String {
    let mut path = String::new();
    for part in [comp_dir, dir, Some(name)].into_iter().flatten() {
        if part.starts_with('/') {
            path.clear();
        } else if !path.is_empty() && !path.ends_with('/') {
            path.push('/');
        }
        path.push_str(part);
    }
    normalize(&path)
}

/// Removes `.` components and folds `dir/..`, as the compiler's include
/// paths (`./include/linux/../..`) would otherwise defeat suffix matching.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." if parts.last().is_some_and(|l| *l != "..") => {
                parts.pop();
            }
            _ => parts.push(p),
        }
    }
    let joined = parts.join("/");
    if path.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(normalize("./include/linux/../asm/x.h"), "include/asm/x.h");
        assert_eq!(normalize("/a//b/./c"), "/a/b/c");
        assert_eq!(
            join(Some("/src"), Some("kernel/sched"), "core.c"),
            "/src/kernel/sched/core.c"
        );
        assert_eq!(
            join(Some("/src"), Some("/usr/include"), "x.h"),
            "/usr/include/x.h"
        );
        assert_eq!(
            join(Some("/src"), None, "kernel/exit.c"),
            "/src/kernel/exit.c"
        );
        assert_eq!(join(None, Some("./kernel"), "exit.c"), "kernel/exit.c");
    }
}
