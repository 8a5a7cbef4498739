//! What the binary carries so it needs no checkout (built by `vmm/build.rs`):
//! the static guest binary and its list of workloads, and the files of
//! `guest/kernel/` and `guest/include/`, unpacked on demand into
//! `<cache>/share/<hash of the files>/` (a new binary with other files gets
//! a new directory; kernel cache keys hash file contents, not paths, so an
//! unpacked script builds the same kernels as the checkout's).
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The guest's multi-call binary: `/init`, and each workload by name.
pub const GUEST_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/preemptor-guest"));

/// `preemptor-guest --list`, one name per line.
const WORKLOADS: &str = include_str!(concat!(env!("OUT_DIR"), "/workloads"));

/// `(path under guest/, contents)`.
const FILES: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/embedded_files.rs"));

/// The built-in workloads of the guest binary (guest/src/lib.rs), so the
/// VMM knows none of them by name.
pub fn workloads() -> Vec<String> {
    WORKLOADS.split_whitespace().map(str::to_string).collect()
}

/// The embedded files' names, for `doctor`.
pub fn files() -> impl Iterator<Item = &'static str> {
    FILES.iter().map(|(n, _)| *n)
}

/// One embedded file by its path under `guest/`.
pub fn file(name: &str) -> Option<&'static [u8]> {
    FILES.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
}

fn hash() -> String {
    let mut h = Sha256::new();
    for (name, data) in FILES {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The embedded `guest/` files as a directory under `cache`, unpacked if it
/// is not there (again after the cache was deleted). Written to a temporary
/// directory and renamed into place, so a directory that exists is whole,
/// and two processes unpacking at once both end with it.
pub fn unpack(cache: &Path) -> std::io::Result<PathBuf> {
    let share = cache.join("share");
    let key = hash();
    let dir = share.join(&key);
    if dir.is_dir() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&share)?;
    let tmp = share.join(format!(".tmp-{}-{key}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    for (name, data) in FILES {
        let p = tmp.join(name);
        std::fs::create_dir_all(p.parent().unwrap_or(&tmp))?;
        std::fs::write(&p, data)?;
    }
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another process got there first: its copy is the same.
        Err(_) if dir.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carries_the_guest() {
        assert_eq!(&GUEST_BINARY[..4], b"\x7fELF");
        assert!(!workloads().is_empty());
        assert!(files().any(|f| f == "kernel/build.sh"));
        assert!(files().any(|f| f == "include/preemptor.h"));
    }

    #[test]
    fn unpacks_once_and_again_after_deletion() {
        let cache = std::env::temp_dir().join(format!("preemptor-embed-{}", std::process::id()));
        let a = unpack(&cache).unwrap();
        assert_eq!(unpack(&cache).unwrap(), a);
        let script = std::fs::read(a.join("kernel/build.sh")).unwrap();
        assert!(script.starts_with(b"#!"));
        std::fs::remove_dir_all(&cache).unwrap();
        assert_eq!(unpack(&cache).unwrap(), a);
        assert!(a.join("include/preemptor.h").is_file());
        std::fs::remove_dir_all(&cache).unwrap();
    }
}
