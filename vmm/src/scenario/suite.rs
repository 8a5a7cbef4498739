//! A suite: scenarios × their kernel variants × modes × runs, as one job
//! whose runs are numbered so that hosts can each take a shard and the
//! shards' results merge back into what one host would have produced.
//!
//! Numbering: cells in order (scenarios as given, each scenario's modes —
//! injection first — and within a mode its variants as declared), a cell's
//! runs 0..N in order; run i of a cell has seed `seed + i`, as in `run`.
//! Shard I of N takes a contiguous block of that numbering: blocks keep a
//! cell's runs together, so a shard boots each kernel it touches once and
//! restores its snapshot for the rest (round-robin would make every shard
//! boot every kernel).
use super::runner::RunResult;
use super::{Expect, Scenario};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{BufRead, Write};
use std::ops::Range;
use std::path::Path;

/// Environment variables a batch system sets to a task's 0-based index:
/// ours, a Kubernetes Indexed Job's, a Slurm job array's.
pub const SHARD_ENV: &[&str] = &[
    "PREEMPTOR_SHARD_INDEX",
    "JOB_COMPLETION_INDEX",
    "SLURM_ARRAY_TASK_ID",
];

/// Shard `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 1, count: 1 };

    fn new(index: usize, count: usize) -> Result<Self, String> {
        if count == 0 || index == 0 || index > count {
            return Err(format!("shard {index}/{count}: want I/N with 1 <= I <= N"));
        }
        Ok(Shard { index, count })
    }

    /// The index from the batch system's environment ([`SHARD_ENV`], first
    /// set wins; 0-based there). A Slurm array's task ids are the shard
    /// indices as they are (`--array=0-(N-1)`), not less
    /// `SLURM_ARRAY_TASK_MIN`: a failed task rerun alone (`--array=I`, so
    /// MIN = I) must run shard I again, not shard 0 (it did, and
    /// overwrote the kept runs of its shard, 2026-12-07).
    pub fn from_env(count: usize, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let (var, val) = SHARD_ENV
            .iter()
            .find_map(|v| env(v).map(|x| (*v, x)))
            .ok_or_else(|| format!("--shard-from-env: none of {} is set", SHARD_ENV.join(", ")))?;
        let num = |v: &str, s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("--shard-from-env: {v}={s:?} is not an index"))
        };
        let i = num(var, &val)?;
        Shard::new(i + 1, count).map_err(|e| format!("--shard-from-env: {var}={val}: {e}"))
    }

    /// This shard's block of `total` numbered runs. The blocks of shards
    /// 1..=N tile 0..total exactly, sizes differing by at most one.
    pub fn range(&self, total: usize) -> Range<usize> {
        let at = |i: usize| i * total / self.count;
        at(self.index - 1)..at(self.index)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("shard '{s}': want I/N, e.g. 2/3");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        Shard::new(
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        )
    }
}

/// One scenario × kernel variant × mode and its runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    pub scenario: String,
    pub kernel: String,
    pub inject: bool,
    /// What the runs should show; `None`: every run clean.
    pub expect: Option<Expect>,
    /// The number of its first run in the job.
    pub first: usize,
    pub runs: usize,
}

impl Cell {
    pub fn mode(&self) -> &'static str {
        mode_name(self.inject)
    }
}

/// How a mode is named in tables: "injection" or "no injection".
pub fn mode_name(inject: bool) -> &'static str {
    if inject {
        "injection"
    } else {
        "no injection"
    }
}

/// The whole job, identical on every shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// A hash of everything that makes two shards parts of one job: the
    /// tool's version, the scenarios' files, kernels, modes, runs, seed.
    pub id: String,
    pub version: String,
    pub seed: u64,
    pub cells: Vec<Cell>,
    pub total: usize,
}

impl Job {
    /// `scenarios` with the variant names to run on each (all of a
    /// scenario's variants must exist in it); `modes` in order; `options`:
    /// anything else that changes what runs do (random preemption).
    pub fn new(
        version: &str,
        seed: u64,
        runs: usize,
        scenarios: &[(&Scenario, Vec<String>)],
        modes: &[bool],
        options: &str,
    ) -> Job {
        let mut cells = Vec::new();
        let mut h = Sha256::new();
        h.update(format!("{version}\0{seed}\0{runs}\0{modes:?}\0{options}\0"));
        for (scn, kernels) in scenarios {
            h.update(format!("{}\0{}\0{kernels:?}\0", scn.name, scn.text));
            let variants = scn.variants();
            for &inject in modes {
                for k in kernels {
                    let expect = if inject {
                        variants
                            .iter()
                            .find(|(n, _)| n == k)
                            .and_then(|(_, v)| v.expect)
                    } else {
                        Some(Expect::Clean)
                    };
                    cells.push(Cell {
                        scenario: scn.name.clone(),
                        kernel: k.clone(),
                        inject,
                        expect,
                        first: cells.len() * runs,
                        runs,
                    });
                }
            }
        }
        let id = h
            .finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        Job {
            id,
            version: version.to_string(),
            seed,
            total: cells.len() * runs,
            cells,
        }
    }

    /// This shard's runs: (cell index, run index within the cell).
    pub fn share(&self, shard: Shard) -> Vec<(usize, usize)> {
        let r = shard.range(self.total);
        self.cells
            .iter()
            .enumerate()
            .flat_map(|(c, cell)| (0..cell.runs).map(move |i| (c, i)))
            .filter(|(c, i)| r.contains(&(self.cells[*c].first + i)))
            .collect()
    }
}

/// A line of a suite's JSON-lines results.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Record {
    /// First line of each shard's file.
    Job { job: Job, shard: Shard },
    /// One finished run.
    Run {
        job: String,
        cell: usize,
        scenario: String,
        kernel: String,
        /// The kernel build's cache key (a hash of its inputs).
        kernel_build: String,
        inject: bool,
        /// Its number in the whole job.
        number: usize,
        run: Box<RunResult>,
    },
}

/// Appends records to a file, one whole line per write, flushed: a suite
/// killed mid-run leaves every finished run and no torn line.
pub struct Writer(std::fs::File);

impl Writer {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Writer(std::fs::File::create(path)?))
    }

    pub fn write(&mut self, r: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_string(r).map_err(std::io::Error::other)?;
        line.push('\n');
        self.0.write_all(line.as_bytes())?;
        self.0.flush()
    }
}

/// Reads a results file. A last line cut short (the writer was killed
/// mid-write) is dropped and counted; any other bad line is an error.
pub fn read(path: &Path) -> Result<(Vec<Record>, usize), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let lines: Vec<String> = std::io::BufReader::new(f)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    let mut torn = 0;
    for (n, l) in lines.iter().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(l) {
            Ok(r) => out.push(r),
            Err(_) if n + 1 == lines.len() => torn += 1,
            Err(e) => {
                return Err(format!(
                    "{}:{}: not a preemptor suite record: {e}",
                    path.display(),
                    n + 1
                ))
            }
        }
    }
    Ok((out, torn))
}

/// Shards' records, merged: the job and each cell's runs in run order.
pub struct Merged {
    pub job: Job,
    pub runs: Vec<Vec<RunResult>>,
    /// Numbers of the job's runs that no file has.
    pub missing: Vec<usize>,
    /// The shard counts the files were cut by (normally one).
    pub counts: Vec<usize>,
}

impl Merged {
    /// The shards with runs missing: (shard, its runs, how many missing),
    /// by the shard counts the files name (a killed or never-started
    /// task's shard is named, to be run again alone).
    pub fn missing_shards(&self) -> Vec<(Shard, Range<usize>, usize)> {
        let mut out = Vec::new();
        for &count in &self.counts {
            for index in 1..=count {
                let sh = Shard { index, count };
                let r = sh.range(self.job.total);
                let n = self.missing.iter().filter(|m| r.contains(m)).count();
                if n > 0 {
                    out.push((sh, r, n));
                }
            }
        }
        out
    }
}

/// Merges the records of several files (`name` labels errors). Refuses
/// files of different jobs, and one kernel variant built from different
/// inputs on different hosts.
pub fn merge(files: &[(String, Vec<Record>)]) -> Result<Merged, String> {
    let mut job: Option<(String, Job)> = None;
    let mut counts = Vec::new();
    for (name, recs) in files {
        for r in recs {
            if let Record::Job { job: j, shard } = r {
                if !counts.contains(&shard.count) {
                    counts.push(shard.count);
                }
                match &job {
                    None => job = Some((name.clone(), j.clone())),
                    Some((first, j0)) if j0 != j => {
                        return Err(format!(
                            "{name}: a shard of another job than {first} (scenarios, kernels, runs, seed or tool version differ: job {} vs {})",
                            j.id, j0.id
                        ))
                    }
                    _ => {}
                }
            }
        }
    }
    let (_, job) = job.ok_or("no job record in the files: not suite results")?;
    let mut by_number: Vec<Option<RunResult>> = vec![None; job.total];
    let mut builds: Vec<Option<(String, String)>> = vec![None; job.cells.len()];
    for (name, recs) in files {
        for r in recs {
            let Record::Run {
                job: id,
                cell,
                kernel_build,
                number,
                run,
                ..
            } = r
            else {
                continue;
            };
            if *id != job.id || *cell >= job.cells.len() || *number >= job.total {
                return Err(format!("{name}: run {number} is not of job {}", job.id));
            }
            match &builds[*cell] {
                Some((other, b)) if b != kernel_build => {
                    let c = &job.cells[*cell];
                    return Err(format!(
                        "{name}: kernel {} of {} is build {kernel_build}, in {other} build {b}: the shards ran different kernels",
                        c.kernel, c.scenario
                    ));
                }
                Some(_) => {}
                None => builds[*cell] = Some((name.clone(), kernel_build.clone())),
            }
            by_number[*number] = Some((**run).clone());
        }
    }
    let missing = (0..job.total).filter(|n| by_number[*n].is_none()).collect();
    let runs = job
        .cells
        .iter()
        .map(|c| {
            (c.first..c.first + c.runs)
                .filter_map(|n| by_number[n].clone())
                .collect()
        })
        .collect();
    Ok(Merged {
        job,
        runs,
        missing,
        counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shard_of_missing_runs_is_named() {
        let m = Merged {
            job: Job {
                id: "j".into(),
                version: "v".into(),
                seed: 1,
                cells: vec![],
                total: 9,
            },
            runs: vec![],
            missing: vec![4, 5],
            counts: vec![3],
        };
        let s = m.missing_shards();
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].0.index, s[0].0.count, s[0].1.clone(), s[0].2),
            (2, 3, 3..6, 2)
        );
    }

    #[test]
    fn shards_tile_the_job() {
        for total in 0..40 {
            for count in 1..8 {
                let mut next = 0;
                for index in 1..=count {
                    let r = Shard { index, count }.range(total);
                    assert_eq!(r.start, next, "{total} {index}/{count}");
                    assert!(r.len() <= total / count + 1);
                    next = r.end;
                }
                assert_eq!(next, total);
            }
        }
    }

    #[test]
    fn shard_syntax() {
        assert_eq!("2/3".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        for bad in ["0/3", "4/3", "1/0", "x/2", "2", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn shard_from_env() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let s = Shard::from_env(3, env(&[("JOB_COMPLETION_INDEX", "2")])).unwrap();
        assert_eq!(s, Shard { index: 3, count: 3 });
        // A rerun of task 1 alone (`--array=1`) is shard 2 again.
        let s = Shard::from_env(
            4,
            env(&[("SLURM_ARRAY_TASK_ID", "1"), ("SLURM_ARRAY_TASK_MIN", "1")]),
        )
        .unwrap();
        assert_eq!(s, Shard { index: 2, count: 4 });
        assert!(Shard::from_env(4, env(&[("SLURM_ARRAY_TASK_ID", "4")])).is_err());
        assert!(Shard::from_env(3, env(&[("JOB_COMPLETION_INDEX", "3")])).is_err());
        assert!(Shard::from_env(3, env(&[])).is_err());
    }
}
