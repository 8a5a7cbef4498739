//! Guest-kernel symbols and breakpoint sites.
//!
//! [`Symbols`] reads a vmlinux: its ELF symbol table (or the `System.map`
//! beside a stripped one), its code bytes, and, on first need, its DWARF
//! line tables and type information. Loading only reads the file and the
//! symbol table; the DWARF context is built by the first query that needs
//! it, and struct layouts are looked up one type at a time and cached.
//!
//! [`Symbols::resolve`] turns a site string into breakpoint addresses. A
//! raw `func+0x1f` only fits the build it was read from, so besides
//! `func`, `func+OFF` and `path/file.c:LINE` it accepts instruction
//! patterns that survive rebuilds (see [`SiteSpec`] for the grammar):
//!
//! - `FUNC/call:SYM`: a direct `call` of `SYM` or `SYM.<suffix>`;
//! - `FUNC/store:STRUCT.MEMBER`: an instruction writing memory at
//!   `[reg + offsetof(STRUCT, MEMBER)]` (`mov`, `xchg`, `cmpxchg`, `or`, ...);
//! - `FUNC/load:STRUCT.MEMBER`: one reading it;
//!
//! each optionally followed by `#N` (the N-th match, 1-based; without it
//! several matches are an error that lists them) and `/next` (the
//! instruction after the match, e.g. "just after the store").
//!
//! A function the compiler inlined has no symbol; its name still works:
//! `FUNC` and `FUNC/pattern` resolve in each inlined copy (DWARF
//! `DW_TAG_inlined_subroutine`: its ranges, entry and call site), and
//! `FUNC@CALLER` keeps the copies inside one caller. Such a site may yield
//! one address per copy.
//!
//! Locations (`kernel/sched/core.c:3659`) come from the line-table row
//! covering the address, relative to the build directory. For inlined code
//! that is the innermost inlined source line, i.e. the statement the
//! instruction implements, not the call site in the outer function.
//!
//! Past 800 lines because site resolution is one piece: every site form
//! (function, offset, line, pattern, inlined copies) resolves through the
//! same decoded-function cache; the grammar, ELF, DWARF and instruction
//! classes already live in `symbols/`.

mod dwarf;
mod elf;
mod insn;
mod portable;
mod site;

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use iced_x86::{Instruction, InstructionInfoFactory};
use serde::Serialize;

pub use insn::Class;
pub use portable::Portable;
pub use site::{Pattern, SiteSpec};

use dwarf::{Dwarf, MemberError};
use elf::{Image, Sym};
use insn::Access;

/// Symbols, code and debug info of one guest kernel image.
pub struct Symbols {
    path: PathBuf,
    image: Image,
    /// Built on first use; the error is kept so that every later query
    /// reports it instead of retrying a slow failure. The mutex is there
    /// because the addr2line context caches lazily and is not `Sync`.
    dwarf: OnceLock<Result<Mutex<Dwarf>, String>>,
    members: Mutex<HashMap<(String, String), u64>>,
    inlined: Mutex<HashMap<String, Vec<Inlined>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Elf { path: PathBuf, reason: String },
    #[error("the ELF has no symbol table, and {map} cannot stand in for it: {reason}")]
    NoSymbols { map: PathBuf, reason: String },
    #[error("{path}:{line}: {reason}")]
    SystemMap {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("no function named `{0}`")]
    NoFunction(String),
    #[error("`{name}` is ambiguous: {}", .candidates.join(", "))]
    Ambiguous {
        name: String,
        candidates: Vec<String>,
    },
    #[error("no code bytes for {name} at {addr:#x} in the ELF's executable sections")]
    NoCode { name: String, addr: u64 },
    #[error("no usable DWARF in the vmlinux: {0}")]
    NoDwarf(String),
    #[error("DWARF: {0}")]
    Dwarf(String),
    #[error("no struct or union named `{0}` in the DWARF")]
    NoType(String),
    #[error("`{ty}` has no member `{member}`")]
    NoMember { ty: String, member: String },
    #[error("cannot resolve site `{site}`: {reason}")]
    Site { site: String, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Function {
    pub name: String,
    pub addr: u64,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Site {
    pub addr: u64,
    pub function: String,
    pub offset: u64,
    /// `kernel/sched/core.c:3659`, when the DWARF covers the address.
    pub location: Option<String>,
    /// The instruction at `addr`, gas syntax.
    pub text: String,
    /// For a site in an inlined copy of a function: which copy
    /// (`ttwu_runnable inlined into try_to_wake_up at kernel/sched/core.c:4153`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inlined: Option<String>,
}

/// One inlined copy of a function inside the function it was inlined into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inlined {
    pub name: String,
    pub caller: Function,
    /// Code ranges of the copy, `[begin, end)`.
    pub ranges: Vec<(u64, u64)>,
    /// Its first instruction.
    pub entry: u64,
    /// `file:line` of the inlined call.
    pub call_site: Option<String>,
}

impl Inlined {
    pub fn contains(&self, addr: u64) -> bool {
        self.ranges.iter().any(|&(b, e)| addr >= b && addr < e)
    }

    /// `ttwu_runnable inlined into try_to_wake_up at kernel/sched/core.c:4153`
    pub fn describe(&self) -> String {
        match &self.call_site {
            Some(at) => format!("{} inlined into {} at {at}", self.name, self.caller.name),
            None => format!("{} inlined into {}", self.name, self.caller.name),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Insn {
    pub addr: u64,
    /// From the start of the function.
    pub offset: u64,
    pub len: usize,
    pub text: String,
    pub location: Option<String>,
}

/// A place where stalling a thread is a distinct point of its
/// interleaving (see [`Class`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StallPoint {
    pub addr: u64,
    /// `func+0x1f`, a site string that resolves back to `addr`.
    pub site: String,
    pub class: Class,
    pub location: Option<String>,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#x} {}+{:#x} ({}) {}",
            self.addr,
            self.function,
            self.offset,
            self.text,
            self.location.as_deref().unwrap_or("?")
        )
    }
}

impl fmt::Debug for Symbols {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Symbols")
            .field("path", &self.path)
            .field("symbols", &self.image.syms.len())
            .field("symbol_source", &self.image.symbol_source)
            .finish_non_exhaustive()
    }
}

/// A decoded instruction with what the pattern tests need.
struct Decoded {
    instr: Instruction,
    insn: Insn,
}

impl Symbols {
    /// Reads `vmlinux` and its symbol table; DWARF is left for later.
    pub fn load(vmlinux: &Path) -> Result<Self, Error> {
        Ok(Symbols {
            path: vmlinux.to_path_buf(),
            image: Image::load(vmlinux)?,
            dwarf: OnceLock::new(),
            members: Mutex::new(HashMap::new()),
            inlined: Mutex::new(HashMap::new()),
        })
    }

    /// The vmlinux this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The function `name`, or the unique compiler clone `name.<suffix>`
    /// (`ttwu_do_wakeup` → `ttwu_do_wakeup.constprop.0`). `.cold` parts are
    /// never picked by the short name: they are not entry points.
    pub fn function(&self, name: &str) -> Result<Function, Error> {
        let text = |i: &usize| self.image.syms[*i].text;
        let mut exact: Vec<&Sym> = self
            .image
            .by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter(|i| text(i))
            .map(|&i| &self.image.syms[i])
            .collect();
        exact.dedup_by_key(|s| s.addr);
        match exact.as_slice() {
            [s] => return Ok(to_function(s)),
            [] => {}
            many => {
                return Err(Error::Ambiguous {
                    name: name.to_string(),
                    candidates: many.iter().map(|s| self.describe(s)).collect(),
                })
            }
        }
        let prefix = format!("{name}.");
        let clones: Vec<&Sym> = self
            .image
            .by_name
            .range(prefix.clone()..)
            .take_while(|(n, _)| n.starts_with(&prefix))
            .filter(|(n, _)| !n[prefix.len()..].split('.').any(|part| part == "cold"))
            .flat_map(|(_, idx)| idx.iter().filter(|i| text(i)).map(|&i| &self.image.syms[i]))
            .collect();
        match clones.as_slice() {
            [s] => Ok(to_function(s)),
            [] => Err(Error::NoFunction(name.to_string())),
            many => Err(Error::Ambiguous {
                name: name.to_string(),
                candidates: many.iter().map(|s| self.describe(s)).collect(),
            }),
        }
    }

    fn describe(&self, s: &Sym) -> String {
        match self.location(s.addr) {
            Some(loc) => format!("{}@{:#x} ({loc})", s.name, s.addr),
            None => format!("{}@{:#x}", s.name, s.addr),
        }
    }

    /// Address of any symbol, data and per-cpu ones included (a per-cpu
    /// variable's address is its offset in the per-cpu area). A global wins
    /// over same-named locals; else a unique `name.<suffix>` clone.
    pub fn symbol_addr(&self, name: &str) -> Option<u64> {
        if let Some(idx) = self.image.by_name.get(name) {
            let syms = idx.iter().map(|&i| &self.image.syms[i]);
            return syms
                .clone()
                .find(|s| s.global)
                .or_else(|| syms.clone().next())
                .map(|s| s.addr);
        }
        let prefix = format!("{name}.");
        let mut clones = self
            .image
            .by_name
            .range(prefix.clone()..)
            .take_while(|(n, _)| n.starts_with(&prefix))
            .flat_map(|(_, idx)| idx.iter().map(|&i| self.image.syms[i].addr))
            .collect::<BTreeSet<u64>>()
            .into_iter();
        match (clones.next(), clones.next()) {
            (Some(addr), None) => Some(addr),
            _ => None,
        }
    }

    /// The function containing `addr` and the offset into it.
    pub fn symbolize(&self, addr: u64) -> Option<(String, u64)> {
        self.image
            .function_at(addr)
            .map(|s| (s.name.clone(), addr - s.addr))
    }

    /// Text functions whose name matches `glob` (`*`, `?`), sorted by name;
    /// compiler clones (`name.constprop.0`) match their base name too.
    /// `.cold` parts are left out: they are not entry points.
    pub fn functions_matching(&self, glob: &str) -> Vec<Function> {
        let re = format!(
            "^(?:{})(?:\\..*)?$",
            regex::escape(glob).replace("\\*", ".*").replace("\\?", ".")
        );
        let Ok(re) = regex::Regex::new(&re) else {
            return vec![];
        };
        let mut out: Vec<Function> = self
            .image
            .syms
            .iter()
            .filter(|s| s.text && s.func && !s.name.contains(".cold") && re.is_match(&s.name))
            .map(to_function)
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.addr.cmp(&b.addr)));
        out.dedup_by_key(|f| f.addr);
        out
    }

    /// The function's stall points: its entry, then every instruction
    /// another CPU could observe (see [`Class`]).
    pub fn stall_points(&self, f: &Function) -> Result<Vec<StallPoint>, Error> {
        let mut factory = InstructionInfoFactory::new();
        Ok(self
            .decode(f)?
            .into_iter()
            .filter_map(|d| {
                let class = if d.insn.offset == 0 {
                    Class::Entry
                } else {
                    insn::class(&mut factory, &d.instr)?
                };
                Some(StallPoint {
                    addr: d.insn.addr,
                    site: format!("{}+{:#x}", f.name, d.insn.offset),
                    class,
                    location: d.insn.location,
                })
            })
            .collect())
    }

    /// The function's instructions, each with its source line when the
    /// DWARF has one (innermost inlined location; see the module docs).
    pub fn disasm(&self, f: &Function) -> Result<Vec<Insn>, Error> {
        Ok(self.decode(f)?.into_iter().map(|d| d.insn).collect())
    }

    fn decode(&self, f: &Function) -> Result<Vec<Decoded>, Error> {
        let bytes = self
            .image
            .code(f.addr, f.size)
            .ok_or_else(|| Error::NoCode {
                name: f.name.clone(),
                addr: f.addr,
            })?;
        let dwarf = self.dwarf().ok();
        let mut text = insn::Text::new();
        Ok(insn::decode(bytes, f.addr)
            .into_iter()
            .map(|instr| Decoded {
                insn: Insn {
                    addr: instr.ip(),
                    offset: instr.ip() - f.addr,
                    len: instr.len(),
                    text: text.format(&instr, &self.image),
                    location: dwarf.as_ref().and_then(|d| d.location(instr.ip())),
                },
                instr,
            })
            .collect())
    }

    /// The base register (`rsi`, `r13`, ...) of the struct memory operand of
    /// the instruction at `addr`: not a stack, frame, RIP-relative or
    /// per-cpu operand. `None` if it has none.
    pub fn mem_base(&self, addr: u64) -> Option<String> {
        insn::struct_base(&self.insn_at(addr)?)
    }

    /// The instruction at `addr` (up to 15 bytes, fewer at the image's end).
    fn insn_at(&self, addr: u64) -> Option<Instruction> {
        let bytes = self
            .image
            .code(addr, 15)
            .or_else(|| self.image.code(addr, 1))?;
        insn::decode(bytes, addr).into_iter().next()
    }

    /// The explicit memory operand of the instruction at `addr`: base and
    /// index register names, scale, displacement (see `insn::mem_operand`).
    pub fn mem_operand(&self, addr: u64) -> Option<(Option<String>, Option<String>, u32, u64)> {
        insn::mem_operand(&self.insn_at(addr)?)
    }

    /// The source frames at `addr`, innermost first: (function, file:line)
    /// of each function inlined there, then of the real function. Empty
    /// without DWARF for it.
    pub fn frames(&self, addr: u64) -> Vec<(Option<String>, Option<String>)> {
        self.dwarf().map(|d| d.frames(addr)).unwrap_or_default()
    }

    /// Every inlined copy of function `name`, in the functions it was
    /// inlined into (from DWARF; cached per name).
    pub fn inlined(&self, name: &str) -> Result<Vec<Inlined>, Error> {
        if let Some(v) = self
            .inlined
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(v.clone());
        }
        let found = self
            .dwarf()?
            .inlined_instances(name)
            .map_err(Error::Dwarf)?;
        let v: Vec<Inlined> = found
            .into_iter()
            .filter_map(|i| {
                let caller = self.image.function_at(i.entry)?;
                Some(Inlined {
                    name: name.to_string(),
                    caller: to_function(caller),
                    ranges: i.ranges,
                    entry: i.entry,
                    call_site: i.call_site,
                })
            })
            .collect();
        self.inlined
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), v.clone());
        Ok(v)
    }

    /// Where a site's function part points: the function itself, or, for
    /// a function the compiler inlined (`func`, or `func@caller` for the
    /// copies in one caller), each inlined copy within its caller.
    fn scopes(&self, name: &str) -> Result<Vec<Scope>, Error> {
        let copies = |inl: &str, caller: Option<&str>| -> Result<Vec<Scope>, Error> {
            let all = self.inlined(inl)?;
            let clone = caller.map(|c| format!("{c}."));
            let chosen: Vec<Scope> = all
                .iter()
                .filter(|i| {
                    caller.is_none_or(|c| {
                        i.caller.name == c
                            || clone.as_ref().is_some_and(|p| i.caller.name.starts_with(p))
                    })
                })
                .map(|i| Scope {
                    func: i.caller.clone(),
                    inlined: Some(i.clone()),
                })
                .collect();
            if chosen.is_empty() {
                let callers: BTreeSet<&str> = all.iter().map(|i| i.caller.name.as_str()).collect();
                return Err(match (caller, callers.is_empty()) {
                    (_, true) => Error::NoFunction(inl.to_string()),
                    (Some(c), false) => Error::NoFunction(format!(
                        "{inl}@{c}` (`{inl}` is inlined into: {})",
                        callers.into_iter().collect::<Vec<_>>().join(", ")
                    )),
                    (None, false) => unreachable!(),
                });
            }
            Ok(chosen)
        };
        if let Some((inl, caller)) = name.split_once('@') {
            return copies(inl, Some(caller));
        }
        match self.function(name) {
            Ok(f) => Ok(vec![Scope {
                func: f,
                inlined: None,
            }]),
            Err(Error::NoFunction(_)) => copies(name, None),
            Err(e) => Err(e),
        }
    }

    /// Breakpoint addresses for a site string (see the module docs). A
    /// `file:line` site can yield several, and so can a site in a function
    /// the compiler inlined (one per inlined copy); the others yield one.
    pub fn resolve(&self, site: &str) -> Result<Vec<Site>, Error> {
        let fail = |reason: String| Error::Site {
            site: site.trim().to_string(),
            reason,
        };
        match SiteSpec::parse(site).map_err(fail)? {
            SiteSpec::Function { name, offset } => {
                let mut out = Vec::new();
                for sc in self.scopes(&name)? {
                    let f = &sc.func;
                    let insns = self.decode(f)?;
                    if let Some(i) = &sc.inlined {
                        if offset.is_some() {
                            return Err(fail(format!(
                                "`{}` is inlined ({}); an offset into it means nothing: \
                                 use a pattern ({}/store:...) or file:line",
                                i.name,
                                i.describe(),
                                i.name
                            )));
                        }
                        let d = insns
                            .iter()
                            .find(|d| d.insn.addr >= i.entry)
                            .ok_or_else(|| {
                                fail(format!("nothing decodes at the entry of {}", i.describe()))
                            })?;
                        out.push(to_site(f, &d.insn, Some(i)));
                        continue;
                    }
                    let off = offset.unwrap_or(0);
                    if off >= f.size {
                        return Err(fail(format!(
                            "{}+{off:#x} is outside the function (size {:#x})",
                            f.name, f.size
                        )));
                    }
                    let at = insns
                        .iter()
                        .find(|d| off < d.insn.offset + d.insn.len as u64);
                    match at {
                        Some(d) if d.insn.offset == off => out.push(to_site(f, &d.insn, None)),
                        Some(d) => {
                            return Err(fail(format!(
                                "{}+{off:#x} is inside the instruction at +{:#x} ({})",
                                f.name, d.insn.offset, d.insn.text
                            )))
                        }
                        None => {
                            return Err(fail(format!("nothing decodes at {}+{off:#x}", f.name)))
                        }
                    }
                }
                Ok(out)
            }
            SiteSpec::Line { file, line } => self.resolve_line(&file, line).map_err(fail),
            SiteSpec::Pattern {
                function,
                pattern,
                nth,
                next,
            } => {
                let scopes = self.scopes(&function)?;
                let mut out = Vec::new();
                let mut empty = Vec::new();
                for sc in &scopes {
                    let f = &sc.func;
                    let what = match &sc.inlined {
                        Some(i) => i.describe(),
                        None => f.name.clone(),
                    };
                    let insns = self.decode(f)?;
                    let matching: Vec<usize> = self
                        .matches(&insns, &pattern)?
                        .into_iter()
                        .filter(|&k| {
                            sc.inlined
                                .as_ref()
                                .is_none_or(|i| i.contains(insns[k].insn.addr))
                        })
                        .collect();
                    let list = |idx: &[usize]| {
                        idx.iter()
                            .enumerate()
                            .map(|(k, &i)| {
                                format!(
                                    "#{} +{:#x} ({})",
                                    k + 1,
                                    insns[i].insn.offset,
                                    insns[i].insn.text
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    let chosen = match (nth, matching.len()) {
                        (_, 0) => {
                            empty.push(what);
                            continue;
                        }
                        (None, 1) => matching[0],
                        (None, n) => {
                            return Err(fail(format!(
                                "{n} instructions match in {what}, pick one with #N: {}",
                                list(&matching)
                            )))
                        }
                        (Some(k), n) if k > n => {
                            return Err(fail(format!(
                                "#{k} asked for, but only {n} match in {what}: {}",
                                list(&matching)
                            )))
                        }
                        (Some(k), _) => matching[k - 1],
                    };
                    let i = if next { chosen + 1 } else { chosen };
                    let d = insns.get(i).ok_or_else(|| {
                        fail(format!(
                            "the match at +{:#x} is the last instruction of {}; there is no /next",
                            insns[chosen].insn.offset, f.name
                        ))
                    })?;
                    out.push(to_site(f, &d.insn, sc.inlined.as_ref()));
                }
                if out.is_empty() {
                    return Err(fail(match &pattern {
                        Pattern::Call { target } => {
                            format!("{} has no direct call of {target}", empty.join(", "))
                        }
                        Pattern::Store { ty, member } | Pattern::Load { ty, member } => format!(
                            "no instruction in {} {} memory at [reg+{:#x}] (offsetof({ty}, {member}))",
                            empty.join(", "),
                            if matches!(pattern, Pattern::Store { .. }) { "writes" } else { "reads" },
                            self.member_offset(ty, member)?
                        ),
                    }));
                }
                Ok(out)
            }
        }
    }

    fn matches(&self, insns: &[Decoded], pattern: &Pattern) -> Result<Vec<usize>, Error> {
        let hits = |pred: &mut dyn FnMut(&Instruction) -> bool| {
            insns
                .iter()
                .enumerate()
                .filter(|(_, d)| pred(&d.instr))
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        };
        Ok(match pattern {
            Pattern::Call { target } => {
                let clone = format!("{target}.");
                hits(&mut |instr| {
                    insn::call_target(instr).is_some_and(|to| {
                        self.image.syms[self.image.at(to)]
                            .iter()
                            .any(|s| s.name == *target || s.name.starts_with(&clone))
                    })
                })
            }
            Pattern::Store { ty, member } | Pattern::Load { ty, member } => {
                let off = self.member_offset(ty, member)?;
                let access = if matches!(pattern, Pattern::Store { .. }) {
                    Access::Write
                } else {
                    Access::Read
                };
                let mut factory = InstructionInfoFactory::new();
                hits(&mut |instr| insn::accesses_member(&mut factory, instr, off, access))
            }
        })
    }

    fn resolve_line(&self, file: &str, line: u64) -> Result<Vec<Site>, String> {
        let dwarf = self.dwarf().map_err(|e| e.to_string())?;
        let Some(found) = dwarf.line_addresses(file, line)? else {
            return Err(format!(
                "no file matching `{file}` in the DWARF line tables"
            ));
        };
        drop(dwarf);
        // A short path like `core.c` may match several files; only those
        // with code at this line count, so it resolves when just one does.
        let found: Vec<_> = found
            .into_iter()
            .map(|m| {
                let addrs: Vec<u64> = m
                    .addrs
                    .into_iter()
                    .filter(|&a| self.symbolize(a).is_some())
                    .collect();
                (m.file, addrs)
            })
            .filter(|(_, addrs)| !addrs.is_empty())
            .collect();
        let (path, addrs) = match found.as_slice() {
            [] => {
                return Err(format!(
                    "no statement of {file}:{line} in the line tables (no code there, or optimized away)"
                ))
            }
            [one] => one,
            many => {
                let files: Vec<&str> = many.iter().map(|(f, _)| f.as_str()).collect();
                return Err(format!(
                    "`{file}` matches several files with code at line {line}: {}",
                    files.join(", ")
                ));
            }
        };
        let mut decoded: HashMap<u64, (Function, Vec<Insn>)> = HashMap::new();
        let mut sites = Vec::new();
        for &addr in addrs {
            let sym = self
                .image
                .function_at(addr)
                .ok_or_else(|| format!("{addr:#x} is in no function"))?;
            let (f, insns) = match decoded.entry(sym.addr) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let f = to_function(sym);
                    let insns = self.disasm(&f).map_err(|e| e.to_string())?;
                    e.insert((f, insns))
                }
            };
            let insn = insns.iter().find(|i| i.addr == addr).ok_or_else(|| {
                format!(
                    "{path}:{line} starts at {addr:#x} ({}+{:#x}), which is not an instruction boundary",
                    f.name,
                    addr - f.addr
                )
            })?;
            sites.push(to_site(f, insn, None));
        }
        Ok(sites)
    }

    /// Byte offset of `member` in struct/union `type_name`, from DWARF.
    /// `member` may be a path (`se.on_rq`); members of anonymous structs
    /// and unions are found as if they were direct members.
    pub fn member_offset(&self, type_name: &str, member: &str) -> Result<u64, Error> {
        let ty = type_name
            .strip_prefix("struct ")
            .unwrap_or(type_name)
            .trim();
        let key = (ty.to_string(), member.to_string());
        if let Some(&off) = self
            .members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(off);
        }
        let off = self
            .dwarf()?
            .member_offset(ty, member)
            .map_err(|e| match e {
                MemberError::NoType(t) => Error::NoType(t),
                MemberError::NoMember { ty, member } => Error::NoMember { ty, member },
                MemberError::Dwarf(e) => Error::Dwarf(e),
            })?;
        self.members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, off);
        Ok(off)
    }

    fn dwarf(&self) -> Result<MutexGuard<'_, Dwarf>, Error> {
        match self
            .dwarf
            .get_or_init(|| Dwarf::load(&self.image.data).map(Mutex::new))
        {
            Ok(d) => Ok(d.lock().unwrap_or_else(|e| e.into_inner())),
            Err(e) => Err(Error::NoDwarf(e.clone())),
        }
    }

    fn location(&self, addr: u64) -> Option<String> {
        self.dwarf().ok()?.location(addr)
    }
}

fn to_function(s: &Sym) -> Function {
    Function {
        name: s.name.clone(),
        addr: s.addr,
        size: s.size,
    }
}

fn to_site(f: &Function, insn: &Insn, inlined: Option<&Inlined>) -> Site {
    Site {
        addr: insn.addr,
        function: f.name.clone(),
        offset: insn.offset,
        location: insn.location.clone(),
        text: insn.text.clone(),
        inlined: inlined.map(|i| i.describe()),
    }
}

/// A function body a site is looked for in: a whole function, or the
/// ranges of one inlined copy inside its caller.
struct Scope {
    func: Function,
    inlined: Option<Inlined>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Symbols>();
        check::<Error>();
    }
}
