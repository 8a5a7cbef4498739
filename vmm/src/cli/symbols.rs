//! `preemptor symbols`: find a site to break at.
use super::UsageError;
use crate::debug::symbols::Symbols;

#[derive(clap::Args)]
pub struct SymbolsArgs {
    /// `base`, a path to a vmlinux, or with --scenario one of its variants.
    #[arg(long, default_value = "base")]
    pub kernel: String,
    /// Resolve --kernel as a kernel variant of this scenario (built if missing).
    #[arg(long)]
    pub scenario: Option<std::path::PathBuf>,
    /// Function, func+off, file:line, or a pattern (func/call:SYM, func/store:STRUCT.MEMBER, ...)
    pub site: String,
    /// Disassemble the whole function, with source file:line per instruction.
    #[arg(long)]
    pub disasm: bool,
    /// List the stall points (what `explore` arms) of the functions whose
    /// names match SITE as a glob (`rwsem_*`).
    #[arg(long, conflicts_with = "disasm")]
    pub stall_points: bool,
    /// Also name each address in the site language that survives rebuilds
    /// (`FUNC/store:STRUCT.MEMBER#N`, `FUNC/call:SYM`, ...), as
    /// `explore --emit` writes it.
    #[arg(long)]
    pub portable: bool,
}

pub fn run(a: SymbolsArgs) -> Result<i32, UsageError> {
    let k = super::kernel::resolve(&a.kernel, a.scenario.as_deref())?;
    let vmlinux = k
        .vmlinux
        .ok_or(UsageError(format!("no vmlinux for {}", k.path.display())))?;
    let syms = Symbols::load(&vmlinux)?;
    if a.stall_points {
        let fs = syms.functions_matching(&a.site);
        if fs.is_empty() {
            return Err(UsageError(format!("no function matches '{}'", a.site)));
        }
        for f in &fs {
            let pts = syms.stall_points(f)?;
            println!("{} ({} bytes): {} stall points", f.name, f.size, pts.len());
            for p in pts {
                println!(
                    "  {:#x} {:<40} {:<7} {}{}",
                    p.addr,
                    p.site,
                    format!("{:?}", p.class).to_lowercase(),
                    p.location.as_deref().unwrap_or("?"),
                    portable(&syms, p.addr, a.portable)
                );
            }
        }
        return Ok(0);
    }
    let sites = syms.resolve(&a.site)?;
    // A name the compiler inlined: say where its copies went.
    let base = a.site.split(['/', '+', ':']).next().unwrap_or("");
    let (inl, caller) = match base.split_once('@') {
        Some((f, c)) => (f, Some(c)),
        None => (base, None),
    };
    let copies: Vec<_> = if sites.iter().any(|s| s.inlined.is_some()) {
        syms.inlined(inl)?
            .into_iter()
            .filter(|i| caller.is_none_or(|c| i.caller.name == c))
            .collect()
    } else {
        vec![]
    };
    if !copies.is_empty() {
        let n = copies.len();
        println!(
            "{inl} is inlined ({n} {}):",
            if n == 1 { "copy" } else { "copies" }
        );
        for i in &copies {
            println!(
                "  into {} at {} ({} bytes in {} range{})",
                i.caller.name,
                i.call_site.as_deref().unwrap_or("?"),
                i.ranges.iter().map(|(b, e)| e - b).sum::<u64>(),
                i.ranges.len(),
                if i.ranges.len() == 1 { "" } else { "s" }
            );
        }
    }
    for s in &sites {
        println!(
            "{:#x} {}+{:#x} {} {}{}{}",
            s.addr,
            s.function,
            s.offset,
            s.text,
            s.location.as_deref().unwrap_or("?"),
            s.inlined
                .as_ref()
                .map(|i| format!(" [{i}]"))
                .unwrap_or_default(),
            portable(&syms, s.addr, a.portable)
        );
    }
    if a.disasm {
        if !copies.is_empty() {
            for i in &copies {
                println!("\n{}:", i.describe());
                for ins in syms
                    .disasm(&i.caller)?
                    .into_iter()
                    .filter(|x| i.contains(x.addr))
                {
                    let mark = if sites.iter().any(|s| s.addr == ins.addr) {
                        "=>"
                    } else {
                        "  "
                    };
                    println!(
                        "{mark} {:<24} {:<48} {}",
                        format!("{}+{:#x}", i.caller.name, ins.offset),
                        ins.text,
                        ins.location.as_deref().unwrap_or("")
                    );
                }
            }
            return Ok(0);
        }
        let mut seen = Vec::new();
        for s in &sites {
            if seen.contains(&s.function) {
                continue;
            }
            seen.push(s.function.clone());
            let f = syms.function(&s.function)?;
            println!("\n{} at {:#x}, size {:#x}:", f.name, f.addr, f.size);
            for i in syms.disasm(&f)? {
                let mark = if sites.iter().any(|s| s.addr == i.addr) {
                    "=>"
                } else {
                    "  "
                };
                println!(
                    "{mark} +{:<5x} {:<48} {}",
                    i.offset,
                    i.text,
                    i.location.as_deref().unwrap_or("")
                );
            }
        }
    }
    Ok(0)
}

/// ` = SITE`, the portable name of `addr`, when asked for.
fn portable(syms: &Symbols, addr: u64, asked: bool) -> String {
    if !asked {
        return String::new();
    }
    match syms.portable_site(addr) {
        Ok(p) if p.portable => format!("  = {}", p.site),
        Ok(_) => "  = (no portable name on this build)".into(),
        Err(e) => format!("  = ({e})"),
    }
}
