//! A snapshot on disk (`--snapshot FILE`), reusable across invocations.
//!
//! Layout: a magic line; a little-endian u64 length and that many bytes of
//! JSON header (the key, the machine state, the UART, the list of non-zero
//! pages); then those pages, 4 KiB each. Zero pages are left out (most of a
//! small guest's RAM). The key says what the snapshot was taken with; a
//! snapshot whose key differs from the run's is refused, never used.
use super::{Machine, Snapshot, PAGE};
use serde::{Deserialize, Serialize};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use vm_superio::serial::SerialState;

const MAGIC: &[u8] = b"preemptor-snapshot v3\n";

/// The format, for names that must change with it (the snapshot cache).
pub const FORMAT: &str = "preemptor-snapshot v3";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("snapshot file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("snapshot file {0} is not a preemptor snapshot of this version ({1})")]
    Format(PathBuf, String),
    #[error("snapshot file {0} was taken with {1}; refusing it (delete it or name another file)")]
    Mismatch(PathBuf, String),
}

/// What a snapshot depends on. Hashes, not paths or dates: a rebuilt
/// kernel at the same path is a different kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotKey {
    /// Where the kernel was (for messages only).
    pub kernel: String,
    pub kernel_sha256: String,
    pub initramfs_sha256: String,
    pub cmdline: String,
    /// The host CPU model (guest CPUID follows the host's).
    pub host_cpu: String,
    pub vcpus: usize,
    pub mem_mib: u64,
}

impl SnapshotKey {
    pub fn sha256(bytes: &[u8]) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// How `self` (the file's) differs from `want` (the run's), in words.
    pub fn mismatch(&self, want: &SnapshotKey) -> Option<String> {
        let short = |h: &str| h.chars().take(12).collect::<String>();
        if self.kernel_sha256 != want.kernel_sha256 {
            Some(format!(
                "another kernel ({} sha256 {}…; this run: {} sha256 {}…)",
                self.kernel,
                short(&self.kernel_sha256),
                want.kernel,
                short(&want.kernel_sha256)
            ))
        } else if self.initramfs_sha256 != want.initramfs_sha256 {
            Some(format!(
                "another initramfs (sha256 {}…; this run: {}…)",
                short(&self.initramfs_sha256),
                short(&want.initramfs_sha256)
            ))
        } else if self.cmdline != want.cmdline {
            Some(format!(
                "another command line ('{}'; this run: '{}')",
                self.cmdline, want.cmdline
            ))
        } else if self.host_cpu != want.host_cpu {
            Some(format!(
                "another host CPU ('{}'; this host: '{}')",
                self.host_cpu, want.host_cpu
            ))
        } else if (self.vcpus, self.mem_mib) != (want.vcpus, want.mem_mib) {
            Some(format!(
                "another machine ({} vCPUs, {} MiB; this run: {} vCPUs, {} MiB)",
                self.vcpus, self.mem_mib, want.vcpus, want.mem_mib
            ))
        } else {
            None
        }
    }
}

#[derive(Serialize)]
struct Header<'a> {
    key: &'a SnapshotKey,
    mem_mib: u64,
    machine: &'a Machine,
    #[serde(with = "serial")]
    serial: &'a SerialState,
    /// Indices of the non-zero 4 KiB pages that follow, in order.
    pages: Vec<u32>,
}

/// [`Header`], as read back.
#[derive(Deserialize)]
struct OwnedHeader {
    key: SnapshotKey,
    mem_mib: u64,
    machine: Machine,
    #[serde(with = "serial")]
    serial: SerialState,
    pages: Vec<u32>,
}

/// Write `snap` to `path` (through a temporary file and a rename, so a
/// reader never sees half a snapshot).
pub fn save(path: &Path, snap: &Snapshot, key: &SnapshotKey) -> Result<(), Error> {
    let io = |e| Error::Io(path.to_path_buf(), e);
    let pages: Vec<u32> = snap
        .memory
        .chunks(PAGE)
        .enumerate()
        .filter(|(_, p)| p.iter().any(|&b| b != 0))
        .map(|(i, _)| i as u32)
        .collect();
    let header = Header {
        key,
        mem_mib: snap.mem_mib,
        machine: &snap.machine,
        serial: &snap.serial,
        pages,
    };
    let json = serde_json::to_vec(&header).map_err(|e| io(e.into()))?;
    let tmp = path.with_extension("partial");
    let mut w = BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
    w.write_all(MAGIC).map_err(io)?;
    w.write_all(&(json.len() as u64).to_le_bytes())
        .map_err(io)?;
    w.write_all(&json).map_err(io)?;
    for &i in &header.pages {
        let off = i as usize * PAGE;
        w.write_all(&snap.memory[off..off + PAGE]).map_err(io)?;
    }
    w.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The file at `path` checked for the magic line, and its JSON header;
/// the reader is left at the first page.
fn open_header(path: &Path) -> Result<(BufReader<std::fs::File>, Vec<u8>), Error> {
    let io = |e| Error::Io(path.to_path_buf(), e);
    let bad = |what: &str| Error::Format(path.to_path_buf(), what.to_string());
    let mut r = BufReader::new(std::fs::File::open(path).map_err(io)?);
    let mut magic = vec![0u8; MAGIC.len()];
    r.read_exact(&mut magic).map_err(|_| bad("no magic line"))?;
    if magic != MAGIC {
        return Err(bad("wrong magic line"));
    }
    let mut len = [0u8; 8];
    r.read_exact(&mut len)
        .map_err(|_| bad("truncated header"))?;
    let len = u64::from_le_bytes(len);
    if len > 64 << 20 {
        return Err(bad("header too large"));
    }
    let mut json = vec![0u8; len as usize];
    r.read_exact(&mut json)
        .map_err(|_| bad("truncated header"))?;
    Ok((r, json))
}

/// The key in the header of the snapshot at `path` (its memory unread).
pub fn key(path: &Path) -> Result<SnapshotKey, Error> {
    #[derive(Deserialize)]
    struct KeyOnly {
        key: SnapshotKey,
    }
    let bad = |what: &str| Error::Format(path.to_path_buf(), what.to_string());
    let (_, json) = open_header(path)?;
    serde_json::from_slice::<KeyOnly>(&json)
        .map(|k| k.key)
        .map_err(|e| bad(&format!("bad header: {e}")))
}

/// Read the snapshot at `path`, if it was taken with `want`.
pub fn load(path: &Path, want: &SnapshotKey) -> Result<Snapshot, Error> {
    let bad = |what: &str| Error::Format(path.to_path_buf(), what.to_string());
    let (mut r, json) = open_header(path)?;
    let h: OwnedHeader =
        serde_json::from_slice(&json).map_err(|e| bad(&format!("bad header: {e}")))?;
    if let Some(why) = h.key.mismatch(want) {
        return Err(Error::Mismatch(path.to_path_buf(), why));
    }
    if h.mem_mib != want.mem_mib || h.machine.vcpus.len() != want.vcpus {
        return Err(bad("machine shape differs from its own key"));
    }
    let mut memory = vec![0u8; (h.mem_mib << 20) as usize];
    for &i in &h.pages {
        let off = i as usize * PAGE;
        let page = memory
            .get_mut(off..off + PAGE)
            .ok_or_else(|| bad("page beyond guest memory"))?;
        r.read_exact(page).map_err(|_| bad("truncated memory"))?;
    }
    Ok(Snapshot {
        memory,
        mem_mib: h.mem_mib,
        machine: h.machine,
        serial: h.serial,
    })
}

/// kvm-bindings has no serde for `kvm_fpu`: its fields, by name.
pub(super) mod fpu {
    use kvm_bindings::kvm_fpu;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Fpu {
        fpr: [[u8; 16]; 8],
        fcw: u16,
        fsw: u16,
        ftwx: u8,
        last_opcode: u16,
        last_ip: u64,
        last_dp: u64,
        xmm: [[u8; 16]; 16],
        mxcsr: u32,
    }

    pub fn serialize<S: Serializer>(f: &kvm_fpu, s: S) -> Result<S::Ok, S::Error> {
        Fpu {
            fpr: f.fpr,
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm,
            mxcsr: f.mxcsr,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<kvm_fpu, D::Error> {
        let f = Fpu::deserialize(d)?;
        Ok(kvm_fpu {
            fpr: f.fpr,
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm,
            mxcsr: f.mxcsr,
            ..Default::default()
        })
    }
}

/// vm-superio's `SerialState` has no serde: its fields, by name.
mod serial {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use vm_superio::serial::SerialState;

    #[derive(Serialize, Deserialize)]
    struct Uart {
        dll: u8,
        dlh: u8,
        ier: u8,
        iir: u8,
        lcr: u8,
        lsr: u8,
        mcr: u8,
        msr: u8,
        scr: u8,
        rx: Vec<u8>,
    }

    pub fn serialize<S: Serializer>(u: &&SerialState, s: S) -> Result<S::Ok, S::Error> {
        Uart {
            dll: u.baud_divisor_low,
            dlh: u.baud_divisor_high,
            ier: u.interrupt_enable,
            iir: u.interrupt_identification,
            lcr: u.line_control,
            lsr: u.line_status,
            mcr: u.modem_control,
            msr: u.modem_status,
            scr: u.scratch,
            rx: u.in_buffer.clone(),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SerialState, D::Error> {
        let u = Uart::deserialize(d)?;
        Ok(SerialState {
            baud_divisor_low: u.dll,
            baud_divisor_high: u.dlh,
            interrupt_enable: u.ier,
            interrupt_identification: u.iir,
            line_control: u.lcr,
            line_status: u.lsr,
            modem_control: u.mcr,
            modem_status: u.msr,
            scratch: u.scr,
            in_buffer: u.rx,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SnapshotKey {
        SnapshotKey {
            kernel: "/k/vmlinux".into(),
            kernel_sha256: SnapshotKey::sha256(b"kernel"),
            initramfs_sha256: SnapshotKey::sha256(b"initramfs"),
            cmdline: "console=ttyS0".into(),
            host_cpu: "cpu".into(),
            vcpus: 1,
            mem_mib: 64,
        }
    }

    #[test]
    fn mismatch_names_the_difference() {
        let a = key();
        assert_eq!(a.mismatch(&a), None);
        let mut b = a.clone();
        b.kernel_sha256 = SnapshotKey::sha256(b"other");
        assert!(a.mismatch(&b).unwrap().starts_with("another kernel"));
        let mut b = a.clone();
        b.cmdline.push_str(" quiet");
        assert!(a.mismatch(&b).unwrap().contains("command line"));
    }

    #[test]
    fn save_load_round_trip_and_refusal() {
        let k = key();
        let mut memory = vec![0u8; 64 << 20];
        memory[PAGE * 3 + 7] = 0xab;
        let snap = Snapshot::of_memory(memory);
        let mut k1 = k.clone();
        k1.vcpus = 0;
        let dir = std::env::temp_dir().join(format!("preemptor-snap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.snap");
        save(&path, &snap, &k1).unwrap();
        // Only the one non-zero page is stored.
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < 2 * PAGE as u64 + 64 * 1024, "{size}");
        let back = load(&path, &k1).unwrap();
        assert!(back.memory == snap.memory);
        let mut other = k1.clone();
        other.initramfs_sha256 = SnapshotKey::sha256(b"x");
        let e = load(&path, &other).err().unwrap().to_string();
        assert!(
            e.contains("another initramfs") && e.contains("refusing"),
            "{e}"
        );
        std::fs::write(&path, b"junk").unwrap();
        assert!(matches!(load(&path, &k1), Err(Error::Format(..))));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Fuzz (with `vmm/tests/fuzz.rs`'s case count): a snapshot file cut
    /// short, with bits flipped, or of another version never panics or
    /// allocates past its key's machine; it loads or is refused.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn file() -> &'static (Vec<u8>, SnapshotKey) {
            static F: std::sync::OnceLock<(Vec<u8>, SnapshotKey)> = std::sync::OnceLock::new();
            F.get_or_init(|| {
                let mut k = key();
                k.vcpus = 0;
                k.mem_mib = 1;
                let mut memory = vec![0u8; 1 << 20];
                for (i, b) in memory.iter_mut().enumerate().step_by(4099) {
                    *b = i as u8 | 1;
                }
                let snap = Snapshot::of_memory(memory);
                let dir = std::env::temp_dir().join(format!("preemptor-fz-{}", std::process::id()));
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join("s.snap");
                save(&path, &snap, &k).unwrap();
                let bytes = std::fs::read(&path).unwrap();
                let _ = std::fs::remove_dir_all(&dir);
                (bytes, k)
            })
        }

        fn load_bytes(bytes: &[u8], k: &SnapshotKey) -> Result<Snapshot, Error> {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "preemptor-fz-{}-{}.snap",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, bytes).unwrap();
            let r = load(&path, k);
            let _ = std::fs::remove_file(&path);
            r
        }

        fn cases() -> u32 {
            std::env::var("PREEMPTOR_FUZZ_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(256)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(cases()))]

            #[test]
            fn truncated(at in any::<prop::sample::Index>()) {
                let (bytes, k) = file();
                let cut = at.index(bytes.len());
                prop_assert!(load_bytes(&bytes[..cut], k).is_err());
            }

            #[test]
            fn bit_flipped(flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..8)) {
                let (bytes, k) = file();
                let mut b = bytes.clone();
                for (at, bit) in flips {
                    let i = at.index(b.len());
                    b[i] ^= 1 << bit;
                }
                // Loads (a flip in page data) or is refused; never more
                // memory than the key's machine.
                if let Ok(s) = load_bytes(&b, k) {
                    prop_assert_eq!(s.memory.len(), 1 << 20);
                }
            }

            #[test]
            fn other_version(v in 0u32..1000) {
                let (bytes, k) = file();
                let mut b = bytes.clone();
                let magic = format!("preemptor-snapshot v{v}\n");
                b.splice(..MAGIC.len(), magic.bytes());
                let r = load_bytes(&b, k);
                if magic.as_bytes() == MAGIC {
                    prop_assert!(r.is_ok());
                } else {
                    prop_assert!(matches!(r, Err(Error::Format(..))));
                }
            }
        }
    }
}
