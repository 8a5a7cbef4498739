//! Runs the console classifier over the shared crash corpus (real kernel
//! logs titled by syzkaller) and fails below the accuracy the rest of the
//! VMM relies on.

use preemptor::report::classify;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const CORPUS: &str = "/work/shared/crash-corpus/linux";
const MIN_DETECTION: f64 = 0.98;
const MIN_TITLE: f64 = 0.80;

struct Case {
    name: String,
    title: Option<String>,
    typ: Option<String>,
    corrupted: bool,
    log: String,
}

fn parse(path: &Path) -> Case {
    let bytes = std::fs::read(path).expect("read corpus file");
    let data = String::from_utf8_lossy(&bytes).replace('\r', "");
    let (header, rest) = data.split_once("\n\n").unwrap_or((&data, ""));
    let mut case = Case {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        title: None,
        typ: None,
        corrupted: false,
        log: String::new(),
    };
    for line in header.lines() {
        if let Some(t) = line.strip_prefix("TITLE: ") {
            case.title = Some(t.to_string());
        } else if let Some(t) = line.strip_prefix("TYPE: ") {
            case.typ = Some(t.to_string());
        } else if line == "CORRUPTED: Y" {
            case.corrupted = true;
        }
    }
    // The expected report, if any, follows the log after a blank line.
    let log = match rest.find("\n\nREPORT:\n") {
        Some(p) => &rest[..p + 1],
        None if rest.starts_with("REPORT:\n") => "",
        None => rest,
    };
    case.log = log.to_string();
    case
}

fn kind(title: &str) -> &str {
    title.split(" in ").next().unwrap_or(title)
}

#[test]
fn crash_corpus() {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(CORPUS) {
        Ok(d) => d.map(|e| e.unwrap().path()).collect(),
        Err(e) => {
            eprintln!("crash corpus not available at {CORPUS}: {e}; skipping");
            return;
        }
    };
    paths.sort();
    let cases: Vec<Case> = paths.iter().map(|p| parse(p)).collect();
    let total = cases.len();
    let mut detected_ok = 0;
    let (mut crashes, mut title_ok, mut type_ok, mut corrupted_ok) = (0, 0, 0, 0);
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for case in &cases {
        let got = classify(&case.log);
        if got.is_some() == case.title.is_some() {
            detected_ok += 1;
        }
        let Some(want) = &case.title else {
            if let Some(r) = got {
                groups
                    .entry("false positive".into())
                    .or_default()
                    .push(format!("{}: got {:?}", case.name, r.title));
            }
            continue;
        };
        crashes += 1;
        let Some(r) = got else {
            groups
                .entry("missed crash".into())
                .or_default()
                .push(format!("{}: want {want:?}", case.name));
            continue;
        };
        let want_type = case.typ.as_deref().unwrap_or("UNKNOWN");
        if r.crash_type == want_type {
            type_ok += 1;
        }
        if r.corrupted == case.corrupted {
            corrupted_ok += 1;
        }
        if &r.title == want {
            title_ok += 1;
        } else {
            groups
                .entry(format!("{} -> {}", kind(want), kind(&r.title)))
                .or_default()
                .push(format!("{}: want {want:?} got {:?}", case.name, r.title));
        }
    }
    let detection = detected_ok as f64 / total as f64;
    let title = title_ok as f64 / crashes.max(1) as f64;
    let typ = type_ok as f64 / crashes.max(1) as f64;
    let mut sorted: Vec<_> = groups.into_iter().collect();
    sorted.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    println!("mismatches by expected -> got kind:");
    for (group, items) in &sorted {
        println!("  [{}] {group}", items.len());
        for item in items {
            println!("      {item}");
        }
    }
    println!("files: {total} ({crashes} with a crash)");
    println!(
        "crash detection accuracy: {:.1}% ({detected_ok}/{total})",
        detection * 100.0
    );
    println!(
        "exact title match:        {:.1}% ({title_ok}/{crashes})",
        title * 100.0
    );
    println!(
        "type match:               {:.1}% ({type_ok}/{crashes})",
        typ * 100.0
    );
    println!(
        "corrupted flag match:     {:.1}% ({corrupted_ok}/{crashes})",
        corrupted_ok as f64 / crashes.max(1) as f64 * 100.0
    );
    assert!(
        detection >= MIN_DETECTION,
        "crash detection {detection:.3} < {MIN_DETECTION}"
    );
    assert!(title >= MIN_TITLE, "exact titles {title:.3} < {MIN_TITLE}");
}

/// A run may end as soon as `settled` says the title can no longer change
/// (the VMM gives it the console from the report's first line on, after
/// every line). Over every corpus log with a crash and every such prefix,
/// the first settled title and type must be those of the whole log.
#[test]
fn settled_titles_are_final() {
    use preemptor::report::settled;
    let Ok(dir) = std::fs::read_dir(CORPUS) else {
        eprintln!("crash corpus not available at {CORPUS}; skipping");
        return;
    };
    let mut paths: Vec<PathBuf> = dir.map(|e| e.unwrap().path()).collect();
    paths.sort();
    let (mut crashes, mut early, mut never) = (0, 0, 0);
    let (mut saved, mut lines_total) = (0usize, 0usize);
    let mut wrong = Vec::new();
    let mut corrupted_differs = 0;
    for p in &paths {
        let case = parse(p);
        let Some(full) = classify(&case.log) else {
            continue;
        };
        crashes += 1;
        let report = &case.log[full.start..];
        let ends: Vec<usize> = report.match_indices('\n').map(|(i, _)| i + 1).collect();
        lines_total += ends.len();
        match ends.iter().position(|&e| settled(&report[..e]).is_some()) {
            None => never += 1,
            Some(i) => {
                let s = settled(&report[..ends[i]]).unwrap();
                if s.title != full.title || s.crash_type != full.crash_type {
                    wrong.push(format!(
                        "{}: settled at line {} as {:?} ({}), whole log {:?} ({})",
                        case.name,
                        i + 1,
                        s.title,
                        s.crash_type,
                        full.title,
                        full.crash_type
                    ));
                } else {
                    early += 1;
                    saved += ends.len() - (i + 1);
                    corrupted_differs += usize::from(s.corrupted != full.corrupted);
                }
            }
        }
    }
    println!(
        "settled early: {early} of {crashes} crash logs ({never} only at the end); \
         {saved} of {lines_total} lines from the report's start on not waited for; \
         corrupted flag differs in {corrupted_differs}"
    );
    assert!(
        wrong.is_empty(),
        "settled titles that changed:\n{}",
        wrong.join("\n")
    );
    assert!(
        early * 2 > crashes,
        "settles too rarely to matter: {early}/{crashes}"
    );
}
