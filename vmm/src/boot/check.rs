//! Preflight for any kernel image: can preemptor boot it here and inject
//! into it? Reads the kernel's config (beside the image) and its symbols,
//! and says, per capability, what works, what does not, and the option to
//! change — before a long boot that would only time out. (What the VMM's
//! command line settles, such as `oops=panic` and `nokaslr`, is not asked
//! of the config.)
use super::artifacts::{Kernel, KernelFormat};
use crate::debug::symbols::Symbols;
use crate::host::{HostKind, HostProfile};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works in part, or costs something (e.g. no DWARF: no file:line sites).
    Warn,
    /// Cannot work: runs on this kernel would fail.
    Fail,
    /// Not known (no config beside the image).
    Unknown,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: &'static str,
    pub status: Status,
    /// What was found, or what to change.
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub kernel: PathBuf,
    /// The config file read, if any.
    pub config: Option<PathBuf>,
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether scenarios can run on this kernel here (no check failed).
    pub fn usable(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// The failed checks, one line (for `run`/`boot` to refuse with).
    pub fn failures(&self) -> String {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| format!("{}: {}", c.what, c.detail))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The config of the kernel at `image`: `config` or `.config` beside it
/// (our builds, a build tree), or `config-X` beside `vmlinuz-X` (/boot).
pub fn find_config(image: &Path) -> Option<PathBuf> {
    let dir = image.parent().unwrap_or(Path::new("."));
    let mut cands = vec![dir.join("config"), dir.join(".config")];
    if let Some(name) = image.file_name().and_then(|n| n.to_str()) {
        for prefix in ["vmlinuz-", "vmlinux-"] {
            if let Some(v) = name.strip_prefix(prefix) {
                cands.push(dir.join(format!("config-{v}")));
            }
        }
    }
    cands.into_iter().find(|p| p.is_file())
}

/// `CONFIG_X=v` lines; `# CONFIG_X is not set` is absent.
pub fn parse_config(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("CONFIG_"))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// What the symbols tell, found by [`symbol_facts`].
#[derive(Debug, Clone, Default)]
pub struct SymbolFacts {
    /// ELF symbols or a real System.map.
    pub symbols: bool,
    /// DWARF with struct layouts (task_struct) and line tables.
    pub dwarf: bool,
    /// The host-compat patch (`hostcompat_kvm_pvm`) is in the kernel.
    pub host_compat: Option<bool>,
}

/// `syms`: the kernel's symbols if the caller has them loaded already
/// (else they are read from the vmlinux beside the image, if any).
pub fn symbol_facts(k: &Kernel, syms: Option<&Symbols>) -> SymbolFacts {
    let loaded;
    let syms = match syms {
        Some(s) => Some(s),
        None => {
            loaded = k.vmlinux.as_ref().and_then(|v| Symbols::load(v).ok());
            loaded.as_ref()
        }
    };
    if let Some(s) = syms {
        return SymbolFacts {
            symbols: true,
            dwarf: s.member_offset("task_struct", "pid").is_ok(),
            host_compat: Some(s.symbol_addr("hostcompat_kvm_pvm").is_some()),
        };
    }
    // A bzImage: a System.map beside it may still name the symbols (not
    // Debian's placeholder, which points at the -dbg package).
    let dir = k.path.parent().unwrap_or(Path::new("."));
    let name = k.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let map = [
        dir.join("System.map"),
        dir.join(format!(
            "System.map-{}",
            name.trim_start_matches("vmlinuz-")
        )),
    ]
    .into_iter()
    .find(|p| p.is_file());
    let text = map
        .and_then(|m| std::fs::read_to_string(m).ok())
        .unwrap_or_default();
    let real = text.lines().count() > 100;
    SymbolFacts {
        symbols: false,
        dwarf: false,
        host_compat: real.then(|| text.contains(" hostcompat_kvm_pvm\n")),
    }
}

/// Every check, for `kernel` on a host of `host` kind; `syms` as in
/// [`symbol_facts`].
pub fn check(k: &Kernel, host: &HostProfile, syms: Option<&Symbols>) -> Report {
    let config = find_config(&k.path);
    let cfg = config
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| parse_config(&t));
    let facts = symbol_facts(k, syms);
    Report {
        kernel: k.path.clone(),
        checks: evaluate(cfg.as_ref(), &facts, k.format, host.kind),
        config,
    }
}

/// The checks from what is known: pure, for tests.
pub fn evaluate(
    cfg: Option<&HashMap<String, String>>,
    facts: &SymbolFacts,
    format: KernelFormat,
    host: HostKind,
) -> Vec<Check> {
    let on = |o: &str| cfg.map(|c| c.get(o).is_some_and(|v| v == "y"));
    let mut out = Vec::new();
    let mut add = |what: &'static str, status: Status, detail: String| {
        out.push(Check {
            what,
            status,
            detail,
        })
    };
    // (what, options that must all be y, status when not, why)
    let need: &[(&str, &[&str], Status, &str)] = &[
        (
            "64-bit x86",
            &["CONFIG_X86_64"],
            Status::Fail,
            "the VMM boots x86_64 kernels",
        ),
        (
            "serial console",
            &["CONFIG_SERIAL_8250", "CONFIG_SERIAL_8250_CONSOLE"],
            Status::Fail,
            "verdicts are read from ttyS0",
        ),
        (
            "initramfs",
            &["CONFIG_BLK_DEV_INITRD"],
            Status::Fail,
            "init and the program come in an initramfs",
        ),
        (
            "ELF programs",
            &["CONFIG_BINFMT_ELF"],
            Status::Fail,
            "init is a static ELF",
        ),
        (
            "/proc and devtmpfs",
            &["CONFIG_PROC_FS", "CONFIG_DEVTMPFS"],
            Status::Warn,
            "init mounts them",
        ),
        (
            "snapshot port",
            &["CONFIG_X86_IOPL_IOPERM"],
            Status::Warn,
            "without ioperm() programs cannot reach the snapshot point: every run boots",
        ),
        (
            "threads",
            &["CONFIG_FUTEX"],
            Status::Warn,
            "threaded programs park on futexes",
        ),
        (
            "kvm-clock",
            &["CONFIG_KVM_GUEST"],
            Status::Warn,
            "a stable clock without TSC calibration under emulation",
        ),
        (
            "frame pointers",
            &["CONFIG_FRAME_POINTER"],
            Status::Warn,
            "call traces (crash titles) are guesses without them",
        ),
        (
            "symbolic oopses",
            &["CONFIG_KALLSYMS"],
            Status::Warn,
            "crash titles need function names in the report",
        ),
    ];
    for (what, opts, bad, why) in need {
        let missing: Vec<&str> = opts
            .iter()
            .copied()
            .filter(|o| on(o) == Some(false))
            .collect();
        match on(opts[0]) {
            None => add(what, Status::Unknown, "no config beside the kernel".into()),
            Some(_) if missing.is_empty() => add(what, Status::Ok, opts.join(", ")),
            Some(_) => add(
                what,
                *bad,
                format!(
                    "set {} ({why})",
                    missing
                        .iter()
                        .map(|o| format!("{o}=y"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            ),
        }
    }
    match (
        on("CONFIG_SMP"),
        on("CONFIG_X86_MPPARSE"),
        on("CONFIG_ACPI"),
    ) {
        (None, ..) => add("SMP", Status::Unknown, "no config beside the kernel".into()),
        (Some(false), ..) => add(
            "SMP",
            Status::Fail,
            "set CONFIG_SMP=y (races need 2+ CPUs)".into(),
        ),
        (Some(true), _, Some(true)) => add(
            "SMP",
            Status::Ok,
            "CPUs from the ACPI MADT (CONFIG_ACPI)".into(),
        ),
        (Some(true), Some(true), _) => add(
            "SMP",
            Status::Ok,
            "CPUs from the MP table (CONFIG_X86_MPPARSE)".into(),
        ),
        (Some(true), ..) => add(
            "SMP",
            Status::Fail,
            "set CONFIG_X86_MPPARSE=y or CONFIG_ACPI=y (no way to find the other CPUs)".into(),
        ),
    }
    // The VMM's ACPI platform is hardware-reduced: no legacy PIC, so the
    // 8250 gets IRQ 4 only through the DSDT's COM1, via PNP.
    // That needs the DSDT loaded, which 6.1's ACPICA fails to do without
    // PCI (no default PCI config space handler: AE_BAD_PARAMETER).
    if on("CONFIG_ACPI") == Some(true) {
        let missing: Vec<&str> = ["CONFIG_PNP", "CONFIG_PCI"]
            .into_iter()
            .filter(|o| on(o) == Some(false))
            .collect();
        if !missing.is_empty() {
            add(
                "console IRQ",
                Status::Fail,
                format!(
                    "set {} (with ACPI the serial port's interrupt comes from the DSDT, through PNP; ACPICA loads the DSDT only with PCI)",
                    missing.iter().map(|o| format!("{o}=y")).collect::<Vec<_>>().join(" ")
                ),
            );
        }
    }
    if on("CONFIG_PARAVIRT_SPINLOCKS") == Some(true) {
        add(
            "plain spinlocks",
            Status::Warn,
            "unset CONFIG_PARAVIRT_SPINLOCKS: a waiter on a lock held by a stopped vCPU halts instead of spinning".into(),
        );
    }
    add(
        "symbols",
        if facts.symbols {
            Status::Ok
        } else {
            Status::Warn
        },
        match (facts.symbols, format) {
            (true, _) => "ELF symbol table (sites by name)".into(),
            (false, KernelFormat::BzImage) => {
                "a bzImage: give its vmlinux (beside it) for breakpoints and symbolized titles"
                    .into()
            }
            (false, KernelFormat::Elf) => {
                "no symbol table: set CONFIG_KALLSYMS and keep vmlinux unstripped".into()
            }
        },
    );
    add(
        "DWARF",
        if facts.dwarf {
            Status::Ok
        } else {
            Status::Warn
        },
        if facts.dwarf {
            "lines and struct layouts (file:line and store:STRUCT.MEMBER sites, captures, inlined functions)".into()
        } else {
            "none: set CONFIG_DEBUG_INFO_DWARF4=y (no file:line or STRUCT.MEMBER sites, no task predicates)".into()
        },
    );
    match (host, facts.host_compat) {
        (HostKind::KvmPvm, Some(true)) => add("host-compat patch", Status::Ok, "present (kvm_pvm host)".into()),
        (HostKind::KvmPvm, Some(false)) => add(
            "host-compat patch",
            Status::Fail,
            "missing: on this kvm_pvm host user space cannot make system calls without guest/kernel/linux-<V.P>/host-compat-kvm-pvm.patch".into(),
        ),
        // Only our builds carry it: without symbols to prove it, refuse
        // rather than boot to a user space that cannot make system calls.
        (HostKind::KvmPvm, None) => add(
            "host-compat patch",
            Status::Fail,
            "cannot tell (no symbols); this kvm_pvm host needs guest/kernel/linux-<V.P>/host-compat-kvm-pvm.patch in the kernel".into(),
        ),
        (HostKind::Standard, _) => add("host-compat patch", Status::Ok, "not needed on ordinary KVM".into()),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(lines: &[&str]) -> HashMap<String, String> {
        parse_config(&lines.join("\n"))
    }

    const GOOD: &[&str] = &[
        "CONFIG_X86_64=y",
        "CONFIG_SMP=y",
        "CONFIG_X86_MPPARSE=y",
        "CONFIG_SERIAL_8250=y",
        "CONFIG_SERIAL_8250_CONSOLE=y",
        "CONFIG_BLK_DEV_INITRD=y",
        "CONFIG_BINFMT_ELF=y",
        "CONFIG_PROC_FS=y",
        "CONFIG_DEVTMPFS=y",
        "CONFIG_X86_IOPL_IOPERM=y",
        "CONFIG_FUTEX=y",
        "CONFIG_KVM_GUEST=y",
        "CONFIG_FRAME_POINTER=y",
        "CONFIG_KALLSYMS=y",
    ];

    fn facts() -> SymbolFacts {
        SymbolFacts {
            symbols: true,
            dwarf: true,
            host_compat: Some(true),
        }
    }

    fn status(c: &[Check], what: &str) -> Status {
        c.iter().find(|c| c.what == what).unwrap().status
    }

    #[test]
    fn our_kind_of_kernel_passes() {
        let c = evaluate(
            Some(&cfg(GOOD)),
            &facts(),
            KernelFormat::Elf,
            HostKind::KvmPvm,
        );
        assert!(c.iter().all(|c| c.status == Status::Ok), "{c:#?}");
    }

    #[test]
    fn missing_console_and_acpi_only_fail_with_the_option() {
        let mut lines: Vec<&str> = GOOD
            .iter()
            .copied()
            .filter(|l| !l.contains("8250_CONSOLE") && !l.contains("MPPARSE"))
            .collect();
        let c = evaluate(
            Some(&cfg(&lines)),
            &facts(),
            KernelFormat::Elf,
            HostKind::Standard,
        );
        assert_eq!(status(&c, "serial console"), Status::Fail);
        let d = &c
            .iter()
            .find(|c| c.what == "serial console")
            .unwrap()
            .detail;
        assert!(d.contains("CONFIG_SERIAL_8250_CONSOLE=y"), "{d}");
        assert_eq!(status(&c, "SMP"), Status::Fail);
        assert_eq!(status(&c, "64-bit x86"), Status::Ok);
        // ACPI finds the CPUs, and needs PNP for the console's IRQ.
        lines.push("CONFIG_ACPI=y");
        let c = evaluate(
            Some(&cfg(&lines)),
            &facts(),
            KernelFormat::Elf,
            HostKind::Standard,
        );
        assert_eq!(status(&c, "SMP"), Status::Ok);
        assert_eq!(status(&c, "console IRQ"), Status::Fail);
        lines.push("CONFIG_PNP=y");
        lines.push("CONFIG_PCI=y");
        let c = evaluate(
            Some(&cfg(&lines)),
            &facts(),
            KernelFormat::Elf,
            HostKind::Standard,
        );
        assert!(!c.iter().any(|c| c.what == "console IRQ"));
    }

    #[test]
    fn no_config_is_unknown_not_failed() {
        let c = evaluate(None, &facts(), KernelFormat::Elf, HostKind::Standard);
        assert!(!c.iter().any(|c| c.what == "console IRQ"));
        assert!(c.iter().all(|c| c.status != Status::Fail), "{c:#?}");
        assert_eq!(status(&c, "serial console"), Status::Unknown);
    }

    #[test]
    fn kvm_pvm_needs_the_host_compat_patch() {
        let f = SymbolFacts {
            host_compat: Some(false),
            ..facts()
        };
        let c = evaluate(Some(&cfg(GOOD)), &f, KernelFormat::Elf, HostKind::KvmPvm);
        assert_eq!(status(&c, "host-compat patch"), Status::Fail);
        let c = evaluate(Some(&cfg(GOOD)), &f, KernelFormat::Elf, HostKind::Standard);
        assert_eq!(status(&c, "host-compat patch"), Status::Ok);
    }
}
