//! The vmlinux image: its bytes, executable sections and symbol table
//! (from the ELF, or from `System.map` when the ELF was stripped).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object::{Object, ObjectSection, ObjectSymbol, SectionFlags, SectionKind, SymbolKind};

use super::Error;

#[derive(Debug, Clone)]
pub(super) struct Sym {
    pub name: String,
    pub addr: u64,
    /// From the ELF; for text symbols without one (asm labels, System.map)
    /// the distance to the next text symbol, so every function has a body.
    pub size: u64,
    /// A function (`STT_FUNC`, or `T`/`t`/`W`/`w` in System.map) rather than
    /// a label or data.
    pub func: bool,
    /// Lies in an executable section.
    pub text: bool,
    pub global: bool,
}

#[derive(Debug, Clone)]
pub(super) struct ExecSection {
    pub addr: u64,
    pub size: u64,
    pub file_offset: usize,
}

pub(super) struct Image {
    pub data: Arc<[u8]>,
    pub exec: Vec<ExecSection>,
    /// Sorted by address, then functions before labels, globals before
    /// locals: the first of a run of aliases is the best name for it.
    pub syms: Vec<Sym>,
    /// Name → indices into `syms`; ordered so `name.` prefixes are a range.
    pub by_name: BTreeMap<String, Vec<usize>>,
    /// Where the symbols came from, for messages.
    pub symbol_source: PathBuf,
}

impl Image {
    pub fn load(path: &Path) -> Result<Image, Error> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let data: Arc<[u8]> = Arc::from(std::fs::read(path).map_err(io)?);
        let file = object::File::parse(&*data).map_err(|e| Error::Elf {
            path: path.to_path_buf(),
            reason: format!("not a usable ELF file: {e}"),
        })?;
        if file.architecture() != object::Architecture::X86_64 {
            return Err(Error::Elf {
                path: path.to_path_buf(),
                reason: format!("{:?} image, expected x86_64", file.architecture()),
            });
        }

        let mut exec = Vec::new();
        for s in file.sections() {
            let executable = match s.flags() {
                SectionFlags::Elf { sh_flags, .. } => sh_flags.contains(object::elf::SHF_EXECINSTR),
                _ => s.kind() == SectionKind::Text,
            };
            if let (true, Some((off, size))) = (executable, s.file_range()) {
                exec.push(ExecSection {
                    addr: s.address(),
                    size,
                    file_offset: off as usize,
                });
            }
        }

        let in_exec = |addr: u64| {
            exec.iter()
                .any(|s| addr >= s.addr && addr < s.addr + s.size)
        };
        let mut syms: Vec<Sym> = file
            .symbols()
            .filter(|s| !s.is_undefined())
            .filter(|s| {
                matches!(
                    s.kind(),
                    SymbolKind::Text | SymbolKind::Data | SymbolKind::Unknown | SymbolKind::Tls
                )
            })
            .filter_map(|s| {
                let name = s.name().ok()?;
                if name.is_empty() {
                    return None;
                }
                let addr = s.address();
                Some(Sym {
                    name: name.to_string(),
                    addr,
                    size: s.size(),
                    func: s.kind() == SymbolKind::Text,
                    text: in_exec(addr),
                    global: s.is_global(),
                })
            })
            .collect();

        let mut symbol_source = path.to_path_buf();
        if !syms.iter().any(|s| s.func && s.text) {
            // A stripped vmlinux: the kernel build leaves System.map beside it.
            let map = path.with_file_name("System.map");
            syms = read_system_map(&map, &in_exec)?;
            symbol_source = map;
        }
        Ok(Image::index(data, exec, syms, symbol_source))
    }

    fn index(
        data: Arc<[u8]>,
        exec: Vec<ExecSection>,
        mut syms: Vec<Sym>,
        symbol_source: PathBuf,
    ) -> Image {
        syms.sort_by(|a, b| {
            a.addr
                .cmp(&b.addr)
                .then(b.func.cmp(&a.func))
                .then(b.global.cmp(&a.global))
                .then(b.size.cmp(&a.size))
                .then(a.name.cmp(&b.name))
        });
        syms.dedup_by(|b, a| a.addr == b.addr && a.name == b.name);

        // Give unsized text symbols a body reaching to the next text symbol
        // (or the end of their section).
        let text_starts: Vec<u64> = {
            let mut v: Vec<u64> = syms.iter().filter(|s| s.text).map(|s| s.addr).collect();
            v.dedup();
            v
        };
        for s in syms.iter_mut().filter(|s| s.text && s.size == 0) {
            let next = text_starts.partition_point(|&a| a <= s.addr);
            let section_end = exec
                .iter()
                .find(|e| s.addr >= e.addr && s.addr < e.addr + e.size)
                .map(|e| e.addr + e.size)
                .unwrap_or(s.addr);
            let end = text_starts
                .get(next)
                .copied()
                .unwrap_or(u64::MAX)
                .min(section_end);
            s.size = end.saturating_sub(s.addr);
        }

        let mut by_name: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, s) in syms.iter().enumerate() {
            by_name.entry(s.name.clone()).or_default().push(i);
        }
        Image {
            data,
            exec,
            syms,
            by_name,
            symbol_source,
        }
    }

    /// The file bytes backing `[addr, addr + len)` of an executable section.
    pub fn code(&self, addr: u64, len: u64) -> Option<&[u8]> {
        let s = self.exec.iter().find(|s| {
            addr >= s.addr
                && addr
                    .checked_add(len)
                    .is_some_and(|end| end <= s.addr + s.size)
        })?;
        let start = s.file_offset + (addr - s.addr) as usize;
        self.data.get(start..start + len as usize)
    }

    /// Indices of the symbols starting exactly at `addr`.
    pub fn at(&self, addr: u64) -> std::ops::Range<usize> {
        let lo = self.syms.partition_point(|s| s.addr < addr);
        let hi = self.syms.partition_point(|s| s.addr <= addr);
        lo..hi
    }

    /// The function containing `addr`: a sized `STT_FUNC` if one covers it
    /// (so asm labels inside a function do not hide it), else the nearest
    /// text symbol before it.
    pub fn function_at(&self, addr: u64) -> Option<&Sym> {
        let end = self.syms.partition_point(|s| s.addr <= addr);
        let covers = |s: &&Sym| s.text && addr < s.addr.saturating_add(s.size.max(1));
        // Kernel functions do not nest, so the covering FUNC is among the
        // last few symbols at or before `addr`; labels and aliases pad that.
        let mut label = None;
        for s in self.syms[..end].iter().rev().take(64) {
            if s.func && covers(&s) {
                return Some(s);
            }
            if label.is_none() && s.text {
                label = Some(s);
            }
        }
        label.filter(covers)
    }

    /// The sized data (or per-cpu) symbol containing `addr`.
    pub fn object_at(&self, addr: u64) -> Option<&Sym> {
        let end = self.syms.partition_point(|s| s.addr <= addr);
        self.syms[..end]
            .iter()
            .rev()
            .take(16)
            .find(|s| !s.text && s.size > 0 && addr < s.addr.saturating_add(s.size))
    }
}

fn read_system_map(map: &Path, in_exec: &dyn Fn(u64) -> bool) -> Result<Vec<Sym>, Error> {
    let text = std::fs::read_to_string(map).map_err(|source| Error::NoSymbols {
        map: map.to_path_buf(),
        reason: source.to_string(),
    })?;
    let mut syms = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut f = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (f.next(), f.next(), f.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(Error::SystemMap {
                path: map.to_path_buf(),
                line: i + 1,
                reason: "expected `ADDRESS TYPE NAME`".into(),
            });
        };
        let addr = u64::from_str_radix(addr, 16).map_err(|_| Error::SystemMap {
            path: map.to_path_buf(),
            line: i + 1,
            reason: format!("bad address `{addr}`"),
        })?;
        let kind = kind.chars().next().unwrap_or('?');
        let func = matches!(kind, 'T' | 't' | 'W' | 'w');
        syms.push(Sym {
            name: name.to_string(),
            addr,
            size: 0,
            func,
            text: func && in_exec(addr),
            global: kind.is_ascii_uppercase(),
        });
    }
    if !syms.iter().any(|s| s.text) {
        return Err(Error::NoSymbols {
            map: map.to_path_buf(),
            reason: "it lists no functions inside the ELF's executable sections".into(),
        });
    }
    // System.map has no sizes; give data symbols the distance to the next
    // symbol of any kind so per-cpu and global variables can be named.
    let mut starts: Vec<u64> = syms.iter().map(|s| s.addr).collect();
    starts.sort_unstable();
    starts.dedup();
    for s in syms.iter_mut().filter(|s| !s.text) {
        let next = starts.partition_point(|&a| a <= s.addr);
        if let Some(&n) = starts.get(next) {
            s.size = n - s.addr;
        }
    }
    Ok(syms)
}
