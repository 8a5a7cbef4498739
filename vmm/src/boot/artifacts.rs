//! What a boot needs from outside: the kernel image (a named variant built
//! by `guest/kernel/build.sh`, or any path) and the initramfs, packed at
//! run time from the static guest programs.
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
    #[error("kernel '{0}' is not built: run guest/kernel/build.sh ({1})")]
    NotBuilt(String, String),
    #[error("guest program '{0}' not found: run guest/build.sh")]
    GuestProgramMissing(PathBuf),
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

/// `guest/` of this source tree; `PREEMPTOR_GUEST_DIR` overrides it for an
/// installed binary.
pub fn guest_dir() -> PathBuf {
    std::env::var_os("PREEMPTOR_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest"))
}

/// Where `guest/build.sh` puts the static guest programs.
pub fn guest_bin_dir() -> PathBuf {
    std::env::var_os("PREEMPTOR_GUEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/guest/x86_64-unknown-linux-gnu/release")
        })
}

/// `fixed` / `reverted` name the variants of `guest/kernel/build.sh`;
/// anything else is a path.
pub fn resolve_kernel(spec: &str) -> Result<Kernel, Error> {
    let path = match spec {
        "fixed" | "reverted" => variant_dir(spec)?.join("vmlinux"),
        p => PathBuf::from(p),
    };
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

fn variant_dir(name: &str) -> Result<PathBuf, Error> {
    let script = guest_dir().join("kernel/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--paths")
        .output()
        .map_err(|e| Error::NotBuilt(name.into(), e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .map(PathBuf::from)
        .ok_or_else(|| {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            Error::NotBuilt(
                name.into(),
                if why.is_empty() {
                    "no paths printed".into()
                } else {
                    why
                },
            )
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

/// Workloads of the guest binary (guest/src/lib.rs), as `/bin/<name>`.
pub const WORKLOADS: &[&str] = &["hello", "exit-race"];

/// The guest's multi-call binary, built by guest/build.sh.
pub const GUEST_BINARY: &str = "preemptor-guest";

/// An uncompressed newc cpio: `/init` (the guest binary), `/bin/<workload>`
/// symlinks to it, and the nodes the kernel needs before init mounts
/// devtmpfs (`/dev/console`).
pub fn build_initramfs(bin_dir: &Path) -> Result<Vec<u8>, Error> {
    use cpio::newc::{Builder, ModeFileType};
    let src = bin_dir.join(GUEST_BINARY);
    let binary = std::fs::read(&src).map_err(|_| Error::GuestProgramMissing(src.clone()))?;
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
    let mut entries: Vec<(Builder, Cursor<Vec<u8>>)> = Vec::new();
    for d in ["dev", "proc", "sys", "bin"] {
        entries.push((node(d, 0o755, ModeFileType::Directory), Cursor::new(vec![])));
    }
    // The console char node (5,1): init's stdio before devtmpfs is mounted.
    let console = node("dev/console", 0o600, ModeFileType::Char)
        .rdev_major(5)
        .rdev_minor(1);
    entries.push((console, Cursor::new(vec![])));
    entries.push((
        node("init", 0o755, ModeFileType::Regular),
        Cursor::new(binary),
    ));
    for w in WORKLOADS {
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
