//! Scenario files (`scenarios/*.toml`): one race each — the guest to boot,
//! the stall engine's triggers, the interleaving goal that says the race
//! window was reached, and what each kernel is expected to do.
//! The format is documented in `scenarios/README.md`.
pub mod explore;
pub mod parallel;
pub mod runner;
pub mod suite;
pub mod sweep;
pub mod travel;

use crate::stall::TriggerSpec;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// file:line: message (key)
    #[error("{file}:{line}: {msg}")]
    At {
        file: PathBuf,
        line: usize,
        msg: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Crash,
    Clean,
}

impl std::str::FromStr for Expect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "crash" => Ok(Expect::Crash),
            "clean" => Ok(Expect::Clean),
            _ => Err(format!("'{s}': expected crash or clean")),
        }
    }
}

/// Where the snapshot that restored runs start from is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotAt {
    /// The program's own snapshot point (`ready()` / `preemptor_ready()`).
    Ready,
    /// Just before init starts the program: each run pays for its start.
    Start,
}

/// A file packed into the initramfs: `src` relative to the scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub src: PathBuf,
    /// Absolute path in the guest.
    pub dst: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guest {
    #[serde(default = "default_vcpus")]
    pub vcpus: usize,
    #[serde(default = "default_memory")]
    pub memory: u64,
    /// A workload built into the guest binary (guest/src/workloads).
    pub workload: Option<String>,
    /// The scenario's own program: C source (`.c`, compiled on the host)
    /// or a static x86_64 ELF; relative to the scenario file.
    pub program: Option<PathBuf>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub files: Vec<FileSpec>,
    /// Default: `ready` if the program calls its snapshot point, else `start`.
    pub snapshot: Option<SnapshotAt>,
    #[serde(default)]
    pub cmdline: String,
    /// Seconds.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

fn default_vcpus() -> usize {
    2
}
fn default_memory() -> u64 {
    128
}
fn default_timeout() -> u64 {
    300
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    /// Trigger names that must fire in this order for a run to count.
    pub sequence: Vec<String>,
    /// Stop injecting once the goal is reached (default true).
    #[serde(default = "yes")]
    pub disarm_on_goal: bool,
}

fn yes() -> bool {
    true
}

/// One kernel the scenario compares (`[kernel.NAME]`): a base plus
/// patches and config fragments (relative to the scenario file), and what
/// it should do under injection.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    #[serde(default = "default_base")]
    pub base: String,
    #[serde(default)]
    pub patches: Vec<PathBuf>,
    #[serde(default)]
    pub config: Vec<PathBuf>,
    pub expect: Option<Expect>,
}

pub fn default_base() -> String {
    crate::boot::artifacts::DEFAULT_BASE.into()
}

/// The kernel a scenario runs on when it declares none.
pub const BASE_VARIANT: &str = "base";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub guest: Guest,
    #[serde(default)]
    pub goal: Goal,
    /// Kernel variants in the order the file declares them.
    #[serde(default)]
    pub kernel: indexmap::IndexMap<String, Variant>,
    #[serde(default, rename = "trigger")]
    pub triggers: Vec<TriggerSpec>,
    /// The scenario file (`scenario.toml` inside a scenario folder).
    #[serde(skip)]
    pub path: PathBuf,
    #[serde(skip)]
    text: String,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Scenario {
    /// A scenario folder (its `scenario.toml`) or a TOML file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let path = &if path.is_dir() {
            path.join("scenario.toml")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(path).map_err(|e| Error::Read(path.into(), e))?;
        let mut s: Scenario = toml::from_str(&text).map_err(|e| Error::At {
            file: path.into(),
            line: e.span().map(|r| line_of(&text, r.start)).unwrap_or(0),
            msg: e.message().replace('\n', " "),
        })?;
        s.path = path.into();
        s.text = text;
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<(), Error> {
        let g = &self.guest;
        match (&g.workload, &g.program) {
            (Some(_), Some(_)) => Err(self.error_at_key(
                "program",
                "[guest] takes a workload or a program, not both".into(),
            )),
            (None, None) => Err(self.error_at_key(
                "[guest]",
                "[guest] needs a program (C source or static binary) or a built-in workload".into(),
            )),
            _ => Ok(()),
        }?;
        for f in &g.files {
            if !f.dst.starts_with('/') {
                return Err(self.error_at_key(
                    "files",
                    format!("files: dst '{}' must be an absolute guest path", f.dst),
                ));
            }
        }
        Ok(())
    }

    /// The folder the scenario's relative paths start from.
    pub fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// A path from the scenario file, relative to its folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        self.dir().join(p)
    }

    /// The kernel variants to compare: as declared, or the base alone.
    pub fn variants(&self) -> Vec<(String, Variant)> {
        if self.kernel.is_empty() {
            return vec![(
                BASE_VARIANT.into(),
                Variant {
                    base: default_base(),
                    ..Default::default()
                },
            )];
        }
        self.kernel
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    }

    /// An error about `key` inside the `[kernel.NAME]` table.
    pub fn error_at_variant(&self, name: &str, key: &str, msg: String) -> Error {
        let header = format!("[kernel.{name}]");
        let lines: Vec<&str> = self.text.lines().collect();
        let start = lines
            .iter()
            .position(|l| l.trim_start().starts_with(&header));
        let line = start.map(|s| {
            lines[s + 1..]
                .iter()
                .take_while(|l| !l.trim_start().starts_with('['))
                .position(|l| l.trim_start().starts_with(key))
                .map(|i| s + 2 + i)
                .unwrap_or(s + 1)
        });
        Error::At {
            file: self.path.clone(),
            line: line.unwrap_or(0),
            msg,
        }
    }

    /// An error located at the first line matching `at` (0 if none).
    fn error_where(&self, at: impl Fn(&str) -> bool, msg: String) -> Error {
        let line = self
            .text
            .lines()
            .position(|l| at(l.trim_start()))
            .map(|i| i + 1)
            .unwrap_or(0);
        Error::At {
            file: self.path.clone(),
            line,
            msg,
        }
    }

    /// An error about trigger `name`, located at its `name = "..."` line.
    pub fn error_at_trigger(&self, name: &str, msg: String) -> Error {
        let needle = format!("\"{name}\"");
        self.error_where(|l| l.starts_with("name") && l.contains(&needle), msg)
    }

    /// An error about a key, located where it first appears.
    pub fn error_at_key(&self, key: &str, msg: String) -> Error {
        self.error_where(|l| l.starts_with(key), msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(s: &str) -> Result<Scenario, Error> {
        let dir = std::env::temp_dir().join(format!("preemptor-scn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("{}.toml", s.len()));
        std::fs::write(&p, s).unwrap();
        Scenario::load(&p)
    }

    #[test]
    fn unknown_key_names_line() {
        let e = load_str("name = \"x\"\n[guest]\nworkload = \"hello\"\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":4:") && e.contains("bogus"), "{e}");
    }

    #[test]
    fn triggers_and_goal() {
        let s = load_str(
            "name = \"x\"\n[guest]\nworkload = \"hello\"\n[goal]\nsequence = [\"a\"]\n[kernel.zz]\nexpect = \"clean\"\n[kernel.aa]\npatches = [\"p.patch\"]\n\
             [[trigger]]\nname = \"a\"\nsite = \"f\"\nvcpus = [1]\nstall = { until = \"a\", timeout = \"1ms..2ms\" }\nregs = { rsi = \"$T\" }\n",
        )
        .unwrap();
        assert_eq!(s.triggers.len(), 1);
        let v = s.variants();
        assert_eq!(v[0].0, "zz", "declared order");
        assert_eq!(v[0].1.expect, Some(Expect::Clean));
        assert_eq!(v[1].1.patches, vec![PathBuf::from("p.patch")]);
        assert_eq!(v[1].1.base, "debian:6.1");
        assert!(s.goal.disarm_on_goal);
        let e = load_str("name = \"x\"\n[guest]\nworkload = \"hello\"\n[[trigger]]\nname = \"a\"\nsite = \"f\"\nwat = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":7:") && e.contains("wat"), "{e}");
    }

    #[test]
    fn workload_or_program() {
        let e = load_str("name = \"x\"\n[guest]\nvcpus = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":2:") && e.contains("needs a program"), "{e}");
        let e = load_str("name = \"x\"\n[guest]\nworkload = \"a\"\nprogram = \"b.c\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":4:") && e.contains("not both"), "{e}");
        let s = load_str("name = \"x\"\n[guest]\nprogram = \"b.c\"\n").unwrap();
        assert_eq!(s.variants()[0].0, BASE_VARIANT);
    }

    #[test]
    fn variant_errors_point_into_their_table() {
        let s = load_str("name = \"x\"\n[guest]\nworkload = \"a\"\n[kernel.a]\npatches = []\n[kernel.b]\nexpect = \"crash\"\npatches = [\"x\"]\n").unwrap();
        let e = s.error_at_variant("b", "patches", "m".into()).to_string();
        assert!(e.ends_with(":8: m"), "{e}");
    }
}
