//! Property tests of every parser that takes outside input: none may panic
//! on any input; each returns its error. CI runs a bounded number of cases
//! per property (`PREEMPTOR_FUZZ_CASES`, default 256); set it higher for a
//! long run.
use preemptor::debug::symbols::{SiteSpec, Symbols};
use preemptor::report::classify;
use preemptor::scenario::suite::Shard;
use preemptor::scenario::Scenario;
use preemptor::stall::spec::{parse_duration, Duration2, TriggerSpec};
use preemptor::vstate::PreemptConfig;
use proptest::prelude::*;
use std::path::PathBuf;

const CORPUS: &str = "/work/shared/crash-corpus/linux";

fn cases() -> u32 {
    std::env::var("PREEMPTOR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn corpus() -> Vec<String> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(CORPUS)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v.iter()
        .filter_map(|p| std::fs::read(p).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect()
}

fn scenarios() -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut v = Vec::new();
    for d in std::fs::read_dir(root).unwrap().flatten() {
        if let Ok(t) = std::fs::read_to_string(d.path().join("scenario.toml")) {
            v.push(t);
        }
    }
    v
}

/// A `--break` option, well formed or nearly.
fn break_opt() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "vcpu", "nth", "every", "from", "prob", "stall", "until", "timeout", "after", "comm",
            "pid", "capture", "arm", "disarm", "during", "blockirq", "rsi", "current", "announce",
            "max",
        ]),
        "[-0-9a-z.$:+]{0,10}",
    )
        .prop_map(|(k, v)| format!("{k}={v}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn break_specs_any_text(s in ".*") {
        let _ = TriggerSpec::parse_break(&s, 0);
    }

    #[test]
    fn break_specs_near_valid(
        site in "[a-z_]{1,16}(\\+0x[0-9a-f]{1,4})?(/(call|store|load):[a-z_.]{1,12})?",
        opts in prop::collection::vec(break_opt(), 0..6),
    ) {
        let mut s = site;
        for o in opts {
            s.push(',');
            s.push_str(&o);
        }
        let _ = TriggerSpec::parse_break(&s, 3);
    }

    #[test]
    fn sites(s in ".*") {
        let _ = SiteSpec::parse(&s);
    }

    #[test]
    fn sites_near_valid(s in "[a-z_]{0,8}[@#/:+.]{0,3}[a-z0-9_.:]{0,12}(/next)?(#[0-9]{1,3})?") {
        let _ = SiteSpec::parse(&s);
    }

    #[test]
    fn durations(s in "[0-9.]{0,8}[a-z]{0,3}(\\.\\.[0-9.]{0,8}[a-z]{0,3})?") {
        let _ = parse_duration(&s);
        let _ = s.parse::<Duration2>();
    }

    #[test]
    fn preempt_specs(s in "((vcpus|gap|hold|x)=[0-9a-z.+]{0,8},?){0,4}|.*") {
        let _ = s.parse::<PreemptConfig>();
    }

    #[test]
    fn shards(s in "[0-9]{0,3}/?[0-9]{0,3}|.*") {
        if let Ok(sh) = s.parse::<Shard>() {
            // Whatever parses, tiles.
            let r = sh.range(100);
            prop_assert!(r.end <= 100 && r.start <= r.end);
        }
    }

    #[test]
    fn scenario_files_any_text(s in ".*") {
        let d = tempdir();
        let f = d.join("scenario.toml");
        std::fs::write(&f, &s).unwrap();
        let _ = Scenario::load(&f);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A real scenario file with a slice cut out or replaced.
    #[test]
    fn scenario_files_mutated(which in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(),
                              len in 0usize..40, with in "[\\[\\]={}\"a-z0-9., \n]{0,12}") {
        let all = scenarios();
        let text = which.get(&all);
        let mut b: Vec<char> = text.chars().collect();
        let i = at.index(b.len().max(1)).min(b.len());
        let j = (i + len).min(b.len());
        b.splice(i..j, with.chars());
        let d = tempdir();
        let f = d.join("scenario.toml");
        std::fs::write(&f, b.into_iter().collect::<String>()).unwrap();
        let _ = Scenario::load(&f);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn classifier_any_bytes(b in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = classify(&String::from_utf8_lossy(&b));
    }

    /// Real logs cut short, and two logs' lines interleaved.
    #[test]
    fn classifier_cut_and_interleaved(a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>(),
                                      cut in any::<prop::sample::Index>(), seed in any::<u64>()) {
        let logs = corpus();
        prop_assume!(!logs.is_empty());
        let x = a.get(&logs);
        let y = b.get(&logs);
        let mut end = cut.index(x.len().max(1)).min(x.len());
        while !x.is_char_boundary(end) {
            end -= 1;
        }
        let _ = classify(&x[..end]);
        let (mut xl, mut yl) = (x.lines(), y.lines());
        let mut mixed = String::new();
        let mut r = seed;
        loop {
            r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let line = if r >> 63 == 0 { xl.next().or_else(|| yl.next()) } else { yl.next().or_else(|| xl.next()) };
            match line {
                Some(l) => { mixed.push_str(l); mixed.push('\n'); }
                None => break,
            }
        }
        let _ = classify(&mixed);
    }
}

fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "preemptor-fuzz-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Kernel images: garbage, an ELF of another machine, a real vmlinux cut
/// short. Each load is an error, never a panic.
#[test]
fn kernel_images_that_are_not() {
    let d = tempdir();
    let mut inputs: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        (
            "garbage".into(),
            (0..65536u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
        ("elf magic only".into(), b"\x7fELF\x02\x01\x01".to_vec()),
    ];
    // An ELF of another machine: this test binary's own bytes with the
    // machine field set to aarch64 (183).
    if let Ok(mut me) = std::fs::read(std::env::current_exe().unwrap()) {
        me.truncate(1 << 20);
        if me.len() > 20 {
            me[18] = 183;
            me[19] = 0;
        }
        inputs.push(("ELF for aarch64, cut at 1 MiB".into(), me));
    }
    let cache = std::env::var("PREEMPTOR_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/preemptor")
        });
    let vmlinux = std::fs::read_dir(cache.join("kernels"))
        .ok()
        .and_then(|mut d| {
            d.find_map(|e| {
                e.ok()
                    .map(|e| e.path().join("vmlinux"))
                    .filter(|p| p.exists())
            })
        });
    if let Some(v) = vmlinux {
        let bytes = std::fs::read(&v).unwrap();
        for cut in [64usize, 4096, 1 << 20, bytes.len() / 2] {
            inputs.push((
                format!("vmlinux cut at {cut}"),
                bytes[..cut.min(bytes.len())].to_vec(),
            ));
        }
    }
    for (name, b) in inputs {
        let f = d.join("vmlinux");
        std::fs::write(&f, &b).unwrap();
        // Loading may succeed for a half vmlinux (symbols are early);
        // lookups on it must then fail cleanly too.
        if let Ok(s) = Symbols::load(&f) {
            let _ = s.resolve("do_exit");
            let _ = s.resolve("kernel/exit.c:900");
            let _ = s.member_offset("task_struct", "comm");
        }
        eprintln!("{name}: no panic");
    }
    let _ = std::fs::remove_dir_all(&d);
}
