//! The layering invariant of ARCHITECTURE.md: each module of `vmm/src`
//! uses only the modules after it in pipeline order.
use std::path::Path;

/// Pipeline order; a module may use any module that comes later.
const ORDER: &[&str] = &[
    "cli", "view", "bisect", "scenario", "stall", "boot", "vstate", "debug", "report", "arch",
    "devices", "host",
];

fn sources(p: &Path, out: &mut Vec<std::path::PathBuf>) {
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            sources(&e.unwrap().path(), out);
        }
    } else if p.is_file() && p.extension().is_some_and(|e| e == "rs") {
        out.push(p.to_path_buf());
    }
}

#[test]
fn layers_point_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut bad = Vec::new();
    for (i, m) in ORDER.iter().enumerate() {
        let mut files = Vec::new();
        sources(&src.join(m), &mut files);
        sources(&src.join(format!("{m}.rs")), &mut files);
        assert!(!files.is_empty(), "no sources for module {m}");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for (n, line) in text.lines().enumerate() {
                for earlier in &ORDER[..i] {
                    if line.contains(&format!("crate::{earlier}::"))
                        || line.contains(&format!("crate::{earlier};"))
                        || line.contains(&format!("crate::{earlier} "))
                    {
                        bad.push(format!("{}:{}: {m} uses {earlier}", f.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports running upward:\n{}",
        bad.join("\n")
    );
}
