//! Makes the `preemptor` binary self-contained, so an installed copy works
//! from any directory with no checkout (`cargo install --path vmm`):
//!
//! - the guest programs (`guest/`: init and the built-in workloads) are
//!   built here as one static binary and embedded with the list of
//!   workloads it names (`preemptor-guest --list`);
//! - the kernel build script, config fragments, host-compat patches
//!   (`guest/kernel/`) and `preemptor.h` (`guest/include/`) are embedded
//!   as files, which the binary unpacks into its cache when it needs them.
//!
//! Built here rather than shipped prebuilt: the guest binary follows the
//! sources it is built from, and a checkout, `cargo install --path` and
//! `cargo install --git` all have `guest/` beside `vmm/`. (A crates.io
//! package would not; it would need the guest binary prebuilt into it.)
use std::path::{Path, PathBuf};
use std::process::Command;

/// The guest's target: static glibc, so the binary runs as the guest's
/// `/init` with no libraries, and on the host for `--list`.
const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    for p in [
        "guest/src",
        "guest/Cargo.toml",
        "guest/kernel",
        "guest/include",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    build_guest(&root, &out);
    embed_files(&root, &out);
    vmm_sources(&manifest);
}

/// A hash of the VMM's own sources, for the snapshot cache: a snapshot is
/// reused only by the VMM that set its machine up (FNV-1a over the sorted
/// files' paths and bytes; no crate needed for a cache key).
fn vmm_sources(manifest: &Path) {
    let src = manifest.join("src");
    println!("cargo:rerun-if-changed={}", src.display());
    let mut files = Vec::new();
    walk(&src, &mut files);
    files.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in files {
        let rel = f.strip_prefix(&src).unwrap_or(&f).display().to_string();
        let bytes = std::fs::read(&f).unwrap_or_default();
        for b in rel.bytes().chain([0]).chain(bytes) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    println!("cargo:rustc-env=PREEMPTOR_VMM_SOURCES={h:016x}");
}

/// `cargo build -p preemptor-guest` in a target directory of its own (the
/// outer build holds the workspace's), with the guest's flags: static,
/// stripped and small (the guest kernel unpacks the initramfs byte by byte
/// under emulation on some hosts).
fn build_guest(root: &Path, out: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = out.join("guest-target");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--release", "-p", "preemptor-guest"])
        .args(["--target", GUEST_TARGET])
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env(
            "RUSTFLAGS",
            "-C target-feature=+crt-static -C strip=symbols -C opt-level=s",
        );
    // What the outer build set for itself must not leak into the guest's:
    // clippy's wrapper, the outer flags, its target directory.
    for v in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        cmd.env_remove(v);
    }
    let status = cmd.status().expect("run cargo for the guest programs");
    assert!(status.success(), "building the guest programs failed");
    let bin = target_dir
        .join(GUEST_TARGET)
        .join("release/preemptor-guest");
    std::fs::copy(&bin, out.join("preemptor-guest")).expect("copy the guest binary");
    let list = Command::new(&bin)
        .arg("--list")
        .output()
        .expect("run the guest binary with --list");
    assert!(list.status.success(), "preemptor-guest --list failed");
    std::fs::write(out.join("workloads"), list.stdout).expect("write the workload list");
}

/// `embedded_files.rs`: `(path under guest/, contents)` for every file of
/// `guest/kernel/` and `guest/include/`.
fn embed_files(root: &Path, out: &Path) {
    let guest = root.join("guest");
    let mut files = Vec::new();
    for dir in ["kernel", "include"] {
        walk(&guest.join(dir), &mut files);
    }
    files.sort();
    let mut src = String::from("&[\n");
    for f in &files {
        let rel = f.strip_prefix(&guest).unwrap().display().to_string();
        src.push_str(&format!(
            "    ({rel:?}, include_bytes!({:?}) as &[u8]),\n",
            f.display().to_string()
        ));
    }
    src.push_str("]\n");
    std::fs::write(out.join("embedded_files.rs"), src).expect("write embedded_files.rs");
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, files);
        } else {
            files.push(p);
        }
    }
}
