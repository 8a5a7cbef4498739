//! Installing and checking the tool: `setup` (apt packages, the default
//! kernels, shell completions and man pages), `doctor` (can this host run
//! preemptor, and what to do about each thing that is missing),
//! `completions SHELL` and `man` (both generated from the clap definitions).
use super::UsageError;
use crate::boot::artifacts::{self, KernelSpec};
use crate::boot::embedded;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(clap::Args)]
pub struct SetupArgs {
    /// Install packages without asking.
    #[arg(long, short)]
    pub yes: bool,
    /// Kernel bases to build (comma-separated: debian:6.1, debian:6.12).
    #[arg(long, value_delimiter = ',', default_value = artifacts::DEFAULT_BASE)]
    pub kernels: Vec<String>,
    /// Also what the benchmarks and the gdb workflow use (QEMU, gdb).
    #[arg(long)]
    pub bench: bool,
    /// Where completions and man pages go (default: $XDG_DATA_HOME or
    /// ~/.local/share, which bash-completion, zsh, fish and man search).
    #[arg(long, value_name = "DIR")]
    pub prefix: Option<PathBuf>,
    /// Neither completions nor man pages.
    #[arg(long)]
    pub no_shell_files: bool,
}

#[derive(clap::Args)]
pub struct DoctorArgs {}

#[derive(clap::Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub what: CacheCmd,
}

#[derive(clap::Subcommand)]
pub enum CacheCmd {
    /// The kept snapshots, most recently used first, and their total.
    List,
    /// Remove every kept snapshot (kernels and build trees stay).
    Clear,
}

/// `preemptor cache list|clear` (`boot::snapcache`).
pub fn cache(a: CacheArgs) -> Result<i32, UsageError> {
    use crate::boot::snapcache;
    match a.what {
        CacheCmd::List => {
            let v = snapcache::list();
            let total: u64 = v.iter().map(|e| e.bytes).sum();
            println!(
                "{} snapshots, {:.0} MiB in {} (cap: PREEMPTOR_SNAPSHOT_CACHE_MIB, default 4096)",
                v.len(),
                total as f64 / (1 << 20) as f64,
                snapcache::dir().display()
            );
            for e in v {
                let ago = e.used.elapsed().map(|d| d.as_secs()).unwrap_or(0);
                let (kernel, cmd) = e
                    .key
                    .map(|k| (k.kernel, k.cmdline))
                    .unwrap_or(("(unreadable header)".into(), String::new()));
                println!(
                    "{:>6.1} MiB  used {:>6} s ago  {}  {kernel}  {cmd}",
                    e.bytes as f64 / (1 << 20) as f64,
                    ago,
                    e.path.file_name().unwrap_or_default().to_string_lossy()
                );
            }
        }
        CacheCmd::Clear => {
            let (n, bytes) = snapcache::clear();
            println!(
                "removed {n} snapshots ({:.0} MiB)",
                bytes as f64 / (1 << 20) as f64
            );
        }
    }
    Ok(0)
}

#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

#[derive(clap::Args)]
pub struct ManArgs {
    /// Write one page per subcommand (preemptor.1, preemptor-run.1, ...)
    /// into DIR instead of printing the top page.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Packages for the benchmarks' baselines and the gdb workflow.
const BENCH_PACKAGES: &[&str] = &["qemu-system-x86", "gdb"];

/// The packages the kernel build script installs for `base`: its `deps=(...)`
/// line (the script is the one place that lists them), plus the base's
/// source package.
fn build_packages(script: &str, base: &str) -> Vec<String> {
    let mut pkgs: Vec<String> = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("deps=("))
        .map(|l| {
            l.split_whitespace()
                .map(|w| w.trim_end_matches(')'))
                .filter(|w| {
                    !w.is_empty()
                        && w.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-+.".contains(c))
                })
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if let Some(v) = base.strip_prefix("debian:") {
        pkgs.push(format!("linux-source-{v}"));
    }
    pkgs
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("ok installed"))
}

fn missing_packages(bases: &[String], bench: bool) -> Result<Vec<String>, UsageError> {
    let script = embedded::file("kernel/build.sh")
        .map(String::from_utf8_lossy)
        .ok_or(UsageError("the kernel build script is not embedded".into()))?;
    let mut all: Vec<String> = Vec::new();
    for b in bases {
        all.extend(build_packages(&script, b));
    }
    if bench {
        all.extend(BENCH_PACKAGES.iter().map(|s| s.to_string()));
    }
    let mut missing: Vec<String> = all.into_iter().filter(|p| !installed(p)).collect();
    missing.sort();
    missing.dedup();
    Ok(missing)
}

fn data_home() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
            Path::new(&home).join(".local/share")
        })
}

pub fn setup(a: SetupArgs) -> Result<i32, UsageError> {
    for b in &a.kernels {
        if !matches!(b.as_str(), "debian:6.1" | "debian:6.12") && !b.starts_with("dir:") {
            return Err(UsageError(format!(
                "--kernels: unknown base '{b}' (known: debian:6.1, debian:6.12, dir:PATH)"
            )));
        }
    }
    let missing = missing_packages(&a.kernels, a.bench)?;
    if missing.is_empty() {
        println!("packages    all present");
    } else {
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if !a.yes && root {
            if !std::io::stdin().is_terminal() {
                return Err(UsageError(format!(
                    "packages to install: {}; not asking without a terminal: run `preemptor setup --yes`",
                    missing.join(" ")
                )));
            }
            eprint!("Install with apt-get: {}? [y/N] ", missing.join(" "));
            let _ = std::io::stderr().flush();
            let mut answer = String::new();
            std::io::stdin().lock().read_line(&mut answer)?;
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                return Err(UsageError("nothing installed (answered no)".into()));
            }
        }
        apt_install(&missing)?;
        println!("packages    installed {}", missing.join(" "));
    }
    for b in &a.kernels {
        let t = Instant::now();
        let cached = KernelSpec::base(b).dir(false).is_ok();
        let dir = KernelSpec::base(b).dir(true)?;
        let how = if cached {
            "cached".to_string()
        } else {
            format!("built in {:.0} s", t.elapsed().as_secs_f64())
        };
        println!("kernel      {b}: {} ({how})", dir.display());
    }
    if !a.no_shell_files {
        let prefix = a.prefix.clone().unwrap_or_else(data_home);
        for (path, what) in write_shell_files(&prefix)? {
            println!("{what:<11} {}", path.display());
        }
    }
    println!("preemptor doctor checks the rest of this host.");
    Ok(0)
}

fn apt_install(pkgs: &[String]) -> Result<(), UsageError> {
    // Packages are the one thing that needs root: a user gets the command
    // to give to whoever has it, and everything else works without.
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(UsageError(format!(
            "installing packages needs root: run `sudo apt-get install -y --no-install-recommends {}`, then `preemptor setup` again",
            pkgs.join(" ")
        )));
    }
    let apt = |args: &[&str]| -> Result<(), UsageError> {
        let st = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| UsageError(format!("cannot run apt-get: {e}")))?;
        if st.success() {
            Ok(())
        } else {
            Err(UsageError(format!("apt-get {} failed ({st})", args[0])))
        }
    };
    apt(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(pkgs.iter().map(String::as_str));
    apt(&args)
}

/// Completions for bash, zsh and fish and one man page per subcommand,
/// where each looks for them under `prefix` (XDG data directories).
fn write_shell_files(prefix: &Path) -> Result<Vec<(PathBuf, &'static str)>, UsageError> {
    use clap_complete::Shell;
    let mut done = Vec::new();
    for (shell, dir, file) in [
        (Shell::Bash, "bash-completion/completions", "preemptor"),
        (Shell::Zsh, "zsh/site-functions", "_preemptor"),
        (Shell::Fish, "fish/vendor_completions.d", "preemptor.fish"),
    ] {
        let path = prefix.join(dir).join(file);
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut super::command(), "preemptor", &mut buf);
        write_file(&path, &buf)?;
        done.push((path, "completions"));
    }
    let man = prefix.join("man/man1");
    std::fs::create_dir_all(&man).map_err(|e| UsageError(format!("{}: {e}", man.display())))?;
    clap_mangen::generate_to(super::command(), &man)
        .map_err(|e| UsageError(format!("{}: {e}", man.display())))?;
    done.push((man.join("preemptor.1"), "man pages"));
    Ok(done)
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), UsageError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| UsageError(format!("{}: {e}", dir.display())))?;
    std::fs::write(path, data).map_err(|e| UsageError(format!("{}: {e}", path.display())))
}

pub fn completions(a: CompletionsArgs) -> Result<i32, UsageError> {
    clap_complete::generate(
        a.shell,
        &mut super::command(),
        "preemptor",
        &mut std::io::stdout(),
    );
    Ok(0)
}

pub fn man(a: ManArgs) -> Result<i32, UsageError> {
    match a.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| UsageError(format!("{}: {e}", dir.display())))?;
            clap_mangen::generate_to(super::command(), &dir)
                .map_err(|e| UsageError(format!("{}: {e}", dir.display())))?;
        }
        None => clap_mangen::Man::new(super::command()).render(&mut std::io::stdout())?,
    }
    Ok(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Pass,
    /// Something optional is missing, or will be built on first use.
    Warn,
    /// preemptor cannot run here until it is fixed.
    Fail,
}

struct Check {
    level: Level,
    name: &'static str,
    detail: String,
    fix: Option<String>,
}

fn check(level: Level, name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        level,
        name,
        detail: detail.into(),
        fix: None,
    }
}

impl Check {
    fn fix(mut self, f: impl Into<String>) -> Self {
        self.fix = Some(f.into());
        self
    }
}

/// Free bytes on the file system holding `p` (or its nearest parent).
fn free_bytes(p: &Path) -> Option<u64> {
    let mut p = p.to_path_buf();
    while !p.exists() {
        p = p.parent()?.to_path_buf();
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: `c` is a NUL-terminated path; `st` is written by statvfs.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0)
        .then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// A base kernel's build tree and kernels take about this much.
const DISK_PER_BASE: u64 = 3 << 30;

fn version_line(cmd: &str) -> Option<String> {
    let o = Command::new(cmd).arg("--version").output().ok()?;
    o.status.success().then(|| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    })
}

/// This user's login name (from the password database: `USER` may be
/// unset or stale under `sudo`/`runuser`).
fn user_name() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; read
    // at once, on this thread.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() || (*pw).pw_name.is_null() {
            return "$USER".into();
        }
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

fn checks() -> Vec<Check> {
    use Level::*;
    let mut out = Vec::new();
    let kvm = match kvm_ioctls::Kvm::new() {
        Ok(k) => check(
            Pass,
            "kvm",
            format!(
                "/dev/kvm opens read-write, API version {}",
                k.get_api_version()
            ),
        ),
        Err(e) if e.errno() == libc::EACCES || e.errno() == libc::EPERM => {
            use std::os::unix::fs::MetadataExt;
            let who = user_name();
            let m = std::fs::metadata("/dev/kvm").ok();
            let group = m
                .as_ref()
                .map(|m| format!(" (group id {}, mode {:o})", m.gid(), m.mode() & 0o777))
                .unwrap_or_default();
            check(
                Fail,
                "kvm",
                format!("/dev/kvm{group}: this user may not open it: {e}"),
            )
            .fix(format!(
                "sudo usermod -aG kvm {who} (then log in again), or for this user alone: \
                 sudo setfacl -m u:{who}:rw /dev/kvm"
            ))
        }
        Err(e) => check(Fail, "kvm", format!("/dev/kvm: {e}")).fix(
            "load kvm_intel or kvm_amd (virtualization on in the firmware); \
             then give this user access: sudo usermod -aG kvm $USER",
        ),
    };
    let kvm_ok = kvm.level == Pass;
    out.push(kvm);
    let profile = crate::host::HostProfile::probe();
    let what = match profile.kind {
        crate::host::HostKind::KvmPvm => {
            "software KVM: guest-kernel code is emulated, the host-compat patch's guest \
             shims are on, the guest command line gets the profile's flags"
        }
        crate::host::HostKind::Standard => "hardware-assisted KVM: nothing to work around",
    };
    out.push(check(
        Pass,
        "host",
        format!("profile {} ({what})", profile.name()),
    ));
    if kvm_ok {
        out.push(match crate::vstate::exitbench::breakpoint_slots() {
            Ok(4) => check(
                Pass,
                "breakpoints",
                "4 hardware breakpoint slots stop a guest",
            ),
            Ok(n) => check(
                if n == 0 { Fail } else { Warn },
                "breakpoints",
                format!("{n} of 4 hardware breakpoint slots stop a guest"),
            )
            .fix("this KVM does not support KVM_SET_GUEST_DEBUG hardware breakpoints fully"),
            Err(e) => check(Fail, "breakpoints", format!("cannot probe: {e}"))
                .fix("this KVM does not support KVM_SET_GUEST_DEBUG"),
        });
    }
    let cache = artifacts::cache_dir();
    let probe = cache.join(format!(".doctor-{}", std::process::id()));
    let writable = artifacts::check_owned(&cache, "the cache directory")
        .map_err(std::io::Error::other)
        .and_then(|_| std::fs::create_dir_all(&cache))
        .and_then(|_| std::fs::write(&probe, b""))
        .and_then(|_| std::fs::remove_file(&probe));
    out.push(match writable {
        Ok(()) => check(Pass, "cache", format!("{} is writable", cache.display())),
        Err(e) => check(Fail, "cache", format!("{}: {e}", cache.display()))
            .fix("set PREEMPTOR_CACHE or XDG_CACHE_HOME to a directory of this user's"),
    });
    out.push(match free_bytes(&cache) {
        Some(b) if b >= 2 * DISK_PER_BASE => check(
            Pass,
            "disk",
            format!("{:.1} GiB free for kernels", b as f64 / (1u64 << 30) as f64),
        ),
        Some(b) => check(
            Warn,
            "disk",
            format!(
                "{:.1} GiB free; a kernel base takes about {} GiB",
                b as f64 / (1u64 << 30) as f64,
                DISK_PER_BASE >> 30
            ),
        )
        .fix("free space, or set PREEMPTOR_CACHE to a larger file system"),
        None => check(Warn, "disk", "cannot tell the free space"),
    });
    out.push(match artifacts::guest_dir() {
        Ok(d) => check(
            Pass,
            "guest",
            format!(
                "guest binary {} KiB with {} workloads; {} build files in {}",
                embedded::GUEST_BINARY.len() >> 10,
                embedded::workloads().len(),
                embedded::files().count(),
                d.display()
            ),
        ),
        Err(e) => check(Fail, "guest", e.to_string()),
    });
    match missing_packages(&[artifacts::DEFAULT_BASE.to_string()], false) {
        Ok(m) if m.is_empty() => out.push(check(
            Pass,
            "packages",
            "kernel build tools and linux-source-6.1 are installed",
        )),
        Ok(m) => out.push(
            check(Warn, "packages", format!("missing: {}", m.join(" ")))
                .fix("preemptor setup (or kernels are built on first use, installing them)"),
        ),
        Err(e) => out.push(check(Warn, "packages", e.0)),
    }
    out.push(match KernelSpec::base(artifacts::DEFAULT_BASE).dir(false) {
        Ok(d) => check(
            Pass,
            "kernel",
            format!("{} is built: {}", artifacts::DEFAULT_BASE, d.display()),
        ),
        Err(_) => check(
            Warn,
            "kernel",
            format!("{} is not built yet", artifacts::DEFAULT_BASE),
        )
        .fix("preemptor setup (about 2.5 min; or on first use)"),
    });
    out.push(match version_line("gcc") {
        Some(v) => check(Pass, "gcc", format!("{v} (compiles C reproducers)")),
        None => {
            check(Warn, "gcc", "not found: C reproducers cannot be compiled").fix("preemptor setup")
        }
    });
    for (name, cmd, pkg, what) in [
        (
            "qemu",
            "qemu-system-x86_64",
            "qemu-system-x86",
            "baseline of `bench boot`",
        ),
        ("gdb", "gdb", "gdb", "`--gdb`"),
    ] {
        out.push(match version_line(cmd) {
            Some(v) => check(Pass, name, format!("{v} ({what})")),
            None => check(Warn, name, format!("not found (only for {what})"))
                .fix(format!("preemptor setup --bench (apt install {pkg})")),
        });
    }
    out
}

/// One line per check; exit 0 when nothing failed (warnings allowed), 1
/// otherwise.
pub fn doctor(_a: DoctorArgs) -> Result<i32, UsageError> {
    let mut failed = false;
    for c in checks() {
        let tag = match c.level {
            Level::Pass => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        failed |= c.level == Level::Fail;
        match &c.fix {
            Some(f) if c.level != Level::Pass => {
                println!("{tag}  {:<12} {} (fix: {f})", c.name, c.detail)
            }
            _ => println!("{tag}  {:<12} {}", c.name, c.detail),
        }
    }
    Ok(if failed { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_come_from_the_build_script() {
        let script = "x=1\ndeps=(gcc make bc ${pkg:+\"$pkg\"})\n";
        assert_eq!(
            build_packages(script, "debian:6.12"),
            ["gcc", "make", "bc", "linux-source-6.12"]
        );
        assert_eq!(build_packages(script, "dir:/src"), ["gcc", "make", "bc"]);
    }

    #[test]
    fn the_embedded_script_lists_its_packages() {
        let script =
            std::str::from_utf8(embedded::file("kernel/build.sh").expect("build.sh is embedded"))
                .unwrap();
        let p = build_packages(script, "debian:6.1");
        for want in [
            "gcc",
            "make",
            "flex",
            "bison",
            "libelf-dev",
            "linux-source-6.1",
        ] {
            assert!(p.iter().any(|x| x == want), "{want} missing from {p:?}");
        }
    }
}
