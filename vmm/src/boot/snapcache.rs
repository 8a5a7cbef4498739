//! Snapshots that outlive one invocation: kept in the cache
//! (`<cache>/snapshots/`), named by a hash of exactly what a snapshot file
//! is checked against (kernel, initramfs, command line, host CPU, machine:
//! `SnapshotKey`) plus the snapshot format and this VMM's own sources (a
//! VMM that sets the machine up differently must not restore another's
//! machine). The next `run`, `suite`, `sweep`, `explore` or test that
//! boots the same guest restores it instead of booting: on kvm_pvm a boot
//! to a workload's ready point is 31-43 s, a load well under a second.
//!
//! A file that does not load (cut short, another version, a key that does
//! not match its name) is discarded with a one-line note and retaken. The
//! total size is capped (`PREEMPTOR_SNAPSHOT_CACHE_MIB`, default 4096)
//! by evicting the least recently used (a load touches the file's mtime).
//! Writers go through a unique temporary name and a rename, so parallel
//! invocations never see half a file (the last to finish wins; both are
//! the same guest).
use super::artifacts::cache_dir;
use crate::vstate::snapshot::file::{self, SnapshotKey};
use crate::vstate::snapshot::Snapshot;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The VMM sources the binary was built from (see build.rs).
const VMM_SOURCES: &str = env!("PREEMPTOR_VMM_SOURCES");

const DEFAULT_CAP_MIB: u64 = 4096;

static DISABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--no-snapshot-cache` (or `PREEMPTOR_NO_SNAPSHOT_CACHE=1`): every
/// invocation boots to its own snapshot and keeps nothing.
pub fn disable() {
    DISABLED.store(true, std::sync::atomic::Ordering::Relaxed);
}

pub fn enabled() -> bool {
    !DISABLED.load(std::sync::atomic::Ordering::Relaxed)
        && std::env::var_os("PREEMPTOR_NO_SNAPSHOT_CACHE").is_none_or(|v| v.is_empty() || v == "0")
}

pub fn dir() -> PathBuf {
    cache_dir().join("snapshots")
}

/// The cache file for `key`.
pub fn path_for(key: &SnapshotKey) -> PathBuf {
    let json = serde_json::to_string(key).unwrap_or_default();
    let h = SnapshotKey::sha256(format!("{json}\n{VMM_SOURCES}\n{}", file::FORMAT).as_bytes());
    dir().join(format!("{}.snap", &h[..24]))
}

/// The cached snapshot for `key`, if there is a usable one.
pub fn load(key: &SnapshotKey) -> Option<(Snapshot, PathBuf)> {
    let path = path_for(key);
    if !path.exists() {
        return None;
    }
    match file::load(&path, key) {
        Ok(s) => {
            // Recently used: kept longest by the eviction.
            if let Ok(f) = std::fs::File::options().append(true).open(&path) {
                let _ = f.set_modified(SystemTime::now());
            }
            Some((s, path))
        }
        Err(e) => {
            eprintln!("preemptor: discarding the cached snapshot ({e}); taking a new one");
            let _ = std::fs::remove_file(&path);
            None
        }
    }
}

/// Keep `snap` for `key`, then evict beyond the cap. A failure to keep it
/// is a note, not an error: the run has its snapshot in memory.
pub fn store(key: &SnapshotKey, snap: &Snapshot) -> Option<PathBuf> {
    let path = path_for(key);
    let res = std::fs::create_dir_all(dir())
        .map_err(|e| e.to_string())
        .and_then(|_| {
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = dir().join(format!(".{}-{n}.snap", std::process::id()));
            file::save(&tmp, snap, key).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, &path).map_err(|e| e.to_string())
        });
    match res {
        Ok(()) => {
            evict(cap_bytes(), Some(&path));
            Some(path)
        }
        Err(e) => {
            eprintln!("preemptor: snapshot not kept in the cache: {e}");
            None
        }
    }
}

fn cap_bytes() -> u64 {
    std::env::var("PREEMPTOR_SNAPSHOT_CACHE_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(DEFAULT_CAP_MIB)
        << 20
}

/// One cached snapshot.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: PathBuf,
    pub bytes: u64,
    pub used: SystemTime,
    /// The kernel and command line it was taken with (from its header).
    pub key: Option<SnapshotKey>,
}

/// The cached snapshots, most recently used first.
pub fn list() -> Vec<Entry> {
    list_in(&dir())
}

fn list_in(dir: &Path) -> Vec<Entry> {
    let mut v: Vec<Entry> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .filter_map(|p| {
            let m = std::fs::metadata(&p).ok()?;
            Some(Entry {
                key: file::key(&p).ok(),
                bytes: m.len(),
                used: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                path: p,
            })
        })
        .collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.used));
    v
}

/// Remove least recently used snapshots until the total is within `cap`
/// (never `keep`, the one just stored). Returns what was removed.
pub fn evict(cap: u64, keep: Option<&Path>) -> Vec<PathBuf> {
    evict_in(&dir(), cap, keep)
}

fn evict_in(dir: &Path, cap: u64, keep: Option<&Path>) -> Vec<PathBuf> {
    // Temporary files of a writer killed mid-save, an hour on.
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|a| a.as_secs() > 3600);
        if old && e.file_name().to_string_lossy().starts_with('.') {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let entries = list_in(dir);
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    let mut gone = vec![];
    for e in entries.iter().rev() {
        if total <= cap {
            break;
        }
        if Some(e.path.as_path()) == keep {
            continue;
        }
        if std::fs::remove_file(&e.path).is_ok() {
            total -= e.bytes;
            gone.push(e.path.clone());
        }
    }
    gone
}

/// Remove every cached snapshot; returns (files, bytes).
pub fn clear() -> (usize, u64) {
    let mut n = (0, 0);
    for e in list() {
        if std::fs::remove_file(&e.path).is_ok() {
            n.0 += 1;
            n.1 += e.bytes;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn eviction_removes_the_least_recently_used_first_and_never_the_new_one() {
        let d = std::env::temp_dir().join(format!("preemptor-snapcache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let now = SystemTime::now();
        // a: oldest, b, c: newest; each 1000 bytes; a temporary file and
        // another kind of file are not entries.
        for (name, age) in [("a.snap", 30), ("b.snap", 20), ("c.snap", 10)] {
            let p = d.join(name);
            std::fs::write(&p, vec![1u8; 1000]).unwrap();
            let f = std::fs::File::options().append(true).open(&p).unwrap();
            f.set_modified(now - Duration::from_secs(age)).unwrap();
        }
        std::fs::write(d.join(".123-0.snap"), b"partial").unwrap();
        std::fs::write(d.join("notes.txt"), b"x").unwrap();
        let names = |v: Vec<Entry>| -> Vec<String> {
            v.iter()
                .map(|e| e.path.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names(list_in(&d)), ["c.snap", "b.snap", "a.snap"]);
        // Within the cap: nothing goes.
        assert!(evict_in(&d, 3000, None).is_empty());
        // Room for two, but `a` (the oldest) was just stored: `b` goes.
        let gone = evict_in(&d, 2000, Some(&d.join("a.snap")));
        assert_eq!(gone, vec![d.join("b.snap")]);
        assert_eq!(names(list_in(&d)), ["c.snap", "a.snap"]);
        let gone = evict_in(&d, 0, None);
        assert_eq!(gone.len(), 2);
        assert!(
            d.join(".123-0.snap").exists(),
            "temporary files are not evicted"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
