//! A scenario's own guest program: C source compiled on the host (static,
//! cached by a hash of its inputs) or a static x86_64 ELF as it is.
use super::artifacts::{cache_dir, guest_dir};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// `preemptor.h` could not be unpacked.
    #[error(transparent)]
    Share(#[from] Box<super::artifacts::Error>),
    /// The compiler's first error, as it printed it (file:line:col: error: ...).
    #[error("{0}")]
    Compile(String),
    #[error("cannot run gcc to compile {0}: {1}")]
    Gcc(PathBuf, std::io::Error),
    #[error("{0}: not an ELF executable (give C source as a .c file, or a static x86_64 ELF)")]
    NotElf(PathBuf),
    #[error("{0}: not an x86_64 ELF")]
    WrongArch(PathBuf),
    #[error("{0}: dynamically linked; the guest has no libraries: link it statically (gcc -static), or give the .c file")]
    Dynamic(PathBuf),
}

/// gcc's flags for a program (part of the cache key).
pub const CFLAGS: &[&str] = &["-static", "-O2", "-pthread", "-s"];

/// What `preemptor_ready()` leaves in a binary (guest/include/preemptor.h):
/// the program has its own snapshot point.
const READY_MARK: &[u8] = b"preemptor-ready-abi-1";

#[derive(Debug, Clone)]
pub struct Program {
    /// File name in the guest (`/prog/<name>`).
    pub name: String,
    pub bytes: Vec<u8>,
    /// It calls `preemptor_ready()`, its own snapshot point.
    pub calls_ready: bool,
}

impl Program {
    /// Compile `path` if it is C source (`.c`), then check it is a static
    /// x86_64 executable.
    pub fn load(path: &Path) -> Result<Program, Error> {
        let bin = if path.extension().is_some_and(|e| e == "c") {
            compile(path)?
        } else {
            path.to_path_buf()
        };
        let bytes = std::fs::read(&bin).map_err(|e| Error::Read(path.into(), e))?;
        check_static_x86_64(path, &bytes)?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "program".into());
        Ok(Program {
            name,
            calls_ready: bytes.windows(READY_MARK.len()).any(|w| w == READY_MARK),
            bytes,
        })
    }

    pub fn guest_path(&self) -> String {
        format!("/prog/{}", self.name)
    }
}

fn check_static_x86_64(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use object::read::elf::{ElfFile64, ProgramHeader};
    use object::Endianness;
    let elf = ElfFile64::<Endianness>::parse(bytes).map_err(|_| Error::NotElf(path.into()))?;
    let e = elf.endian();
    if elf.elf_header().e_machine.get(e) != object::elf::EM_X86_64 {
        return Err(Error::WrongArch(path.into()));
    }
    if elf
        .elf_program_headers()
        .iter()
        .any(|p| p.p_type(e) == object::elf::PT_INTERP)
    {
        return Err(Error::Dynamic(path.into()));
    }
    Ok(())
}

/// `gcc -static -O2 -pthread` with `guest/include` (preemptor.h) on the
/// include path; cached under `<cache>/programs/<hash>/` by the source,
/// the headers beside it, preemptor.h, the flags and the compiler version.
fn compile(src: &Path) -> Result<PathBuf, Error> {
    let source = std::fs::read(src).map_err(|e| Error::Read(src.into(), e))?;
    let include = guest_dir().map_err(Box::new)?.join("include");
    let gcc_version = Command::new("gcc")
        .arg("--version")
        .output()
        .map_err(|e| Error::Gcc(src.into(), e))?
        .stdout;
    let mut h = Sha256::new();
    h.update(&source);
    h.update(CFLAGS.join(" "));
    h.update(&gcc_version);
    let mut headers: Vec<PathBuf> = Vec::new();
    for dir in [src.parent().unwrap_or(Path::new(".")), include.as_path()] {
        if let Ok(rd) = std::fs::read_dir(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        }) {
            headers.extend(
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "h")),
            );
        }
    }
    headers.sort();
    for p in &headers {
        h.update(p.file_name().map(|n| n.as_encoded_bytes()).unwrap_or(b""));
        h.update(std::fs::read(p).unwrap_or_default());
    }
    let key: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let stem = src
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "program".into());
    let dir = cache_dir().join("programs").join(key);
    let out = dir.join(&stem);
    if out.exists() {
        return Ok(out);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::Read(dir.clone(), e))?;
    let tmp = dir.join(format!(".{stem}.{}", std::process::id()));
    let res = Command::new("gcc")
        .env("LC_ALL", "C") // plain quotes in messages, whatever the locale
        .args(CFLAGS)
        .arg("-I")
        .arg(&include)
        .arg("-o")
        .arg(&tmp)
        .arg(src)
        .output()
        .map_err(|e| Error::Gcc(src.into(), e))?;
    if !res.status.success() {
        let _ = std::fs::remove_file(&tmp);
        let text = String::from_utf8_lossy(&res.stderr);
        // The first error as gcc printed it (file:line:col: error: ...),
        // else its last line (a linker error, say).
        let first = text
            .lines()
            .find(|l| l.contains(" error: ") || l.contains(" fatal error: "))
            .or_else(|| text.lines().rev().find(|l| !l.trim().is_empty()))
            .unwrap_or("gcc failed without a message");
        return Err(Error::Compile(first.trim().to_string()));
    }
    std::fs::rename(&tmp, &out).map_err(|e| Error::Read(out.clone(), e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_elf_and_dynamic() {
        let d = std::env::temp_dir().join(format!("preemptor-prog-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("x.bin");
        std::fs::write(&f, b"#!/bin/sh\necho hi\n").unwrap();
        assert!(matches!(Program::load(&f), Err(Error::NotElf(_))));
        // The test binary itself is dynamically linked.
        let me = std::env::current_exe().unwrap();
        if let Err(e) = Program::load(&me) {
            assert!(matches!(e, Error::Dynamic(_)), "{e}");
        }
    }
}
