//! What a boot needs from outside: the kernel image (a named variant built
//! by `guest/kernel/build.sh`, or any path) and the initramfs, packed at
//! run time from the static guest programs the binary carries.
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kernel '{0}' does not exist")]
    KernelMissing(PathBuf),
    #[error("'{0}' is not a kernel: neither an ELF vmlinux nor a bzImage")]
    NotAKernel(PathBuf),
    #[error("cannot read '{0}': {1}")]
    Read(PathBuf, std::io::Error),
    #[error("kernel is not built ({0}); `preemptor kernel build SCENARIO` or `preemptor setup` builds it")]
    NotBuilt(String),
    /// A patch that does not apply, a setting that does not stick...
    #[error("{0}")]
    KernelInput(String),
    #[error("kernel build failed: {0}")]
    Build(String),
    #[error("cannot unpack the kernel build files into {0}: {1}")]
    Unpack(PathBuf, std::io::Error),
    #[error(
        "unknown workload '{0}' (built in: {1}); a program of your own is `program = \"repro.c\"`"
    )]
    UnknownWorkload(String, String),
    #[error("cannot pack the initramfs: {0}")]
    Cpio(std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    Elf,
    BzImage,
}

#[derive(Debug, Clone)]
pub struct Kernel {
    pub path: PathBuf,
    pub format: KernelFormat,
    /// The ELF vmlinux with symbols and DWARF, when known (the image itself,
    /// or the vmlinux next to a bzImage).
    pub vmlinux: Option<PathBuf>,
}

/// The `guest/` files the binary carries (kernel build script, config
/// fragments, host-compat patches, `preemptor.h`), unpacked into the cache.
pub fn guest_dir() -> Result<PathBuf, Error> {
    let cache = cache_dir();
    super::embedded::unpack(&cache).map_err(|e| Error::Unpack(cache.join("share"), e))
}

/// Where expensive artefacts live (kernels, build trees, compiled programs):
/// `PREEMPTOR_CACHE`, else `$XDG_CACHE_HOME/preemptor` (an absolute
/// XDG_CACHE_HOME only, as the XDG spec says), else `~/.cache/preemptor`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("PREEMPTOR_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| Path::new(x).is_absolute()) {
        return Path::new(&x).join("preemptor");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    Path::new(&home).join(".cache/preemptor")
}

/// Refuses a directory the tool would write into that exists and belongs
/// to someone else, or that anyone may write to: what another user puts
/// there (a kernel, a snapshot, a compiled program) would run as ours.
/// Missing is fine (it is created, ours).
pub fn check_owned(dir: &Path, what: &str) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(dir) else {
        return Ok(());
    };
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if m.uid() != me {
        return Err(format!(
            "{what} {} belongs to uid {}, not to this user (uid {me}): choose another",
            dir.display(),
            m.uid()
        ));
    }
    if m.mode() & 0o002 != 0 {
        return Err(format!(
            "{what} {} is writable by anyone (mode {:o}): chmod o-w it or choose another",
            dir.display(),
            m.mode() & 0o7777
        ));
    }
    Ok(())
}

/// The base a kernel is built from when nothing says otherwise.
pub const DEFAULT_BASE: &str = "debian:6.1";

/// A kernel to build: a base (`debian:6.1`) plus patches and config
/// fragments, applied in order (`guest/kernel/build.sh`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelSpec {
    pub base: String,
    pub patches: Vec<PathBuf>,
    pub configs: Vec<PathBuf>,
}

impl KernelSpec {
    pub fn base(base: &str) -> Self {
        Self {
            base: base.into(),
            ..Default::default()
        }
    }

    fn script_args(&self) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = vec!["--base".into(), self.base.clone().into()];
        for p in &self.patches {
            a.push("--patch".into());
            a.push(p.into());
        }
        for c in &self.configs {
            a.push("--config".into());
            a.push(c.into());
        }
        a
    }

    /// The built kernel's directory, building it first if `build` (the
    /// base once, then the variant incrementally; progress on stderr).
    pub fn dir(&self, build: bool) -> Result<PathBuf, Error> {
        let script = guest_dir()?.join("kernel/build.sh");
        let mut cmd = Command::new("bash");
        // The script's own default is ~/.cache: give it ours (XDG).
        cmd.env("PREEMPTOR_CACHE", cache_dir());
        cmd.arg(&script).args(self.script_args());
        if !build {
            cmd.arg("--paths");
        }
        let out = cmd
            .stderr(if build {
                std::process::Stdio::inherit()
            } else {
                std::process::Stdio::piped()
            })
            .output()
            .map_err(|e| Error::Build(format!("{}: {e}", script.display())))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if let Some(e) = stdout.lines().find_map(|l| l.strip_prefix("error: ")) {
            return Err(if out.status.code() == Some(2) {
                Error::KernelInput(e.to_string())
            } else {
                Error::Build(e.to_string())
            });
        }
        match (out.status.code(), stdout.lines().last()) {
            (Some(0), Some(dir)) => Ok(PathBuf::from(dir.trim())),
            (Some(3), _) => Err(Error::NotBuilt(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            )),
            (code, _) => Err(Error::Build(format!(
                "{} exited with {code:?}",
                script.display()
            ))),
        }
    }

    /// The built kernel (see [`KernelSpec::dir`]).
    pub fn kernel(&self, build: bool) -> Result<Kernel, Error> {
        resolve_kernel(&self.dir(build)?.join("vmlinux").display().to_string())
    }
}

/// A path to a vmlinux or bzImage, or `base` (the base kernel, built if
/// missing).
pub fn resolve_kernel(spec: &str) -> Result<Kernel, Error> {
    if spec == "base" {
        return KernelSpec::base(DEFAULT_BASE).kernel(true);
    }
    let path = PathBuf::from(spec);
    if !path.exists() {
        return Err(Error::KernelMissing(path));
    }
    let format = sniff(&path)?;
    let vmlinux = match format {
        KernelFormat::Elf => Some(path.clone()),
        KernelFormat::BzImage => Some(path.with_file_name("vmlinux")).filter(|p| p.exists()),
    };
    Ok(Kernel {
        path,
        format,
        vmlinux,
    })
}

fn sniff(path: &Path) -> Result<KernelFormat, Error> {
    use std::io::Read;
    let mut head = [0u8; 0x210];
    let mut f = std::fs::File::open(path).map_err(|e| Error::Read(path.into(), e))?;
    let n = f.read(&mut head).map_err(|e| Error::Read(path.into(), e))?;
    if n >= 20
        && &head[..4] == b"\x7fELF"
        && head[4] == 2
        && u16::from_le_bytes([head[18], head[19]]) == 62
    {
        return Ok(KernelFormat::Elf);
    }
    if n >= 0x206 && &head[0x202..0x206] == b"HdrS" {
        return Ok(KernelFormat::BzImage);
    }
    Err(Error::NotAKernel(path.into()))
}

/// The built-in workloads of the guest binary (guest/src/lib.rs), each
/// `/bin/<name>` in the guest.
pub fn workloads() -> Vec<String> {
    super::embedded::workloads()
}

/// What init runs, and what else the initramfs carries.
#[derive(Debug, Clone, Default)]
pub struct Payload {
    /// The scenario's own program, at [`crate::boot::program::Program::guest_path`];
    /// none for a built-in workload.
    pub program: Option<super::program::Program>,
    /// argv of what init runs: argv[0] is `/bin/<workload>` or the program's path.
    pub argv: Vec<String>,
    /// Extra files: (absolute guest path, contents).
    pub files: Vec<(String, Vec<u8>)>,
}

impl Payload {
    /// A built-in workload of the guest binary with its arguments.
    pub fn workload(name: &str, args: &[String]) -> Result<Self, Error> {
        let known = workloads();
        if !known.iter().any(|w| w == name) {
            return Err(Error::UnknownWorkload(name.into(), known.join(", ")));
        }
        let mut argv = vec![format!("/bin/{name}")];
        argv.extend(args.iter().cloned());
        Ok(Self {
            argv,
            ..Default::default()
        })
    }

    /// A program of the user's with its arguments.
    pub fn program(p: super::program::Program, args: &[String]) -> Self {
        let mut argv = vec![p.guest_path()];
        argv.extend(args.iter().cloned());
        Self {
            program: Some(p),
            argv,
            files: vec![],
        }
    }

    /// Whether what init runs has its own snapshot point.
    pub fn calls_ready(&self) -> bool {
        self.program.as_ref().is_none_or(|p| p.calls_ready)
    }
}

/// Where init finds its argv (NUL-separated) in the initramfs.
pub const ARGV_FILE: &str = "preemptor/argv";

/// An uncompressed newc cpio: `/init` (the guest binary), `/bin/<workload>`
/// symlinks to it, the nodes the kernel needs before init mounts devtmpfs
/// (`/dev/console`), init's argv, and the payload's program and files.
pub fn build_initramfs(payload: &Payload) -> Result<Vec<u8>, Error> {
    use cpio::newc::{Builder, ModeFileType};
    let binary = super::embedded::GUEST_BINARY.to_vec();
    // write_cpio numbers the inodes itself.
    let node = |name: &str, mode: u32, kind: ModeFileType| {
        let nlink = if matches!(kind, ModeFileType::Directory) {
            2
        } else {
            1
        };
        Builder::new(name)
            .uid(0)
            .gid(0)
            .mode(mode)
            .set_mode_file_type(kind)
            .nlink(nlink)
    };
    let mut files: Vec<(String, u32, Vec<u8>)> = vec![("init".into(), 0o755, binary)];
    let argv: Vec<u8> = payload
        .argv
        .iter()
        .flat_map(|a| a.bytes().chain([0]))
        .collect();
    files.push((ARGV_FILE.into(), 0o644, argv));
    if let Some(p) = &payload.program {
        files.push((p.guest_path()[1..].to_string(), 0o755, p.bytes.clone()));
    }
    for (dst, data) in &payload.files {
        files.push((dst.trim_start_matches('/').to_string(), 0o644, data.clone()));
    }
    // Every parent directory, once, before its files.
    let mut dirs: Vec<String> = ["dev", "proc", "sys", "bin"].map(String::from).to_vec();
    for (f, ..) in &files {
        let mut d = Path::new(f).parent();
        let mut chain = vec![];
        while let Some(p) = d.filter(|p| !p.as_os_str().is_empty()) {
            chain.push(p.display().to_string());
            d = p.parent();
        }
        for c in chain.into_iter().rev() {
            if !dirs.contains(&c) {
                dirs.push(c);
            }
        }
    }
    let mut entries: Vec<(Builder, Cursor<Vec<u8>>)> = Vec::new();
    for d in &dirs {
        entries.push((node(d, 0o755, ModeFileType::Directory), Cursor::new(vec![])));
    }
    // The console char node (5,1): init's stdio before devtmpfs is mounted.
    let console = node("dev/console", 0o600, ModeFileType::Char)
        .rdev_major(5)
        .rdev_minor(1);
    entries.push((console, Cursor::new(vec![])));
    for (name, mode, data) in files {
        entries.push((node(&name, mode, ModeFileType::Regular), Cursor::new(data)));
    }
    for w in workloads() {
        entries.push((
            node(&format!("bin/{w}"), 0o777, ModeFileType::Symlink),
            Cursor::new(b"/init".to_vec()),
        ));
    }
    let out = cpio::write_cpio(entries.into_iter(), Cursor::new(Vec::new()))
        .map_err(Error::Cpio)?
        .into_inner();
    Ok(out)
}
