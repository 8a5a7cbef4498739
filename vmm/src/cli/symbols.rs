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
}

pub fn run(a: SymbolsArgs) -> Result<i32, UsageError> {
    let k = super::kernel::resolve(&a.kernel, a.scenario.as_deref())?;
    let vmlinux = k
        .vmlinux
        .ok_or(UsageError(format!("no vmlinux for {}", k.path.display())))?;
    let syms = Symbols::load(&vmlinux)?;
    let sites = syms.resolve(&a.site)?;
    for s in &sites {
        println!(
            "{:#x} {}+{:#x} {} {}",
            s.addr,
            s.function,
            s.offset,
            s.text,
            s.location.as_deref().unwrap_or("?")
        );
    }
    if a.disasm {
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
