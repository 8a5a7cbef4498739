//! Scenario files (`scenarios/*.toml`): one race each — the guest to boot,
//! the stall engine's triggers, the interleaving goal that says the race
//! window was reached, and what each kernel is expected to do.
//! The format is documented in `scenarios/README.md`.
pub mod runner;

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guest {
    #[serde(default = "default_vcpus")]
    pub vcpus: usize,
    #[serde(default = "default_memory")]
    pub memory: u64,
    pub workload: String,
    #[serde(default)]
    pub args: Vec<String>,
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

/// Expected verdict per kernel variant name (`fixed`, `reverted`).
pub type Expectations = std::collections::BTreeMap<String, Expect>;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub guest: Guest,
    #[serde(default)]
    pub goal: Goal,
    #[serde(default)]
    pub expect: Expectations,
    #[serde(default, rename = "trigger")]
    pub triggers: Vec<TriggerSpec>,
    #[serde(skip)]
    pub path: PathBuf,
    #[serde(skip)]
    text: String,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Read(path.into(), e))?;
        let mut s: Scenario = toml::from_str(&text).map_err(|e| Error::At {
            file: path.into(),
            line: e.span().map(|r| line_of(&text, r.start)).unwrap_or(0),
            msg: e.message().replace('\n', " "),
        })?;
        s.path = path.into();
        s.text = text;
        Ok(s)
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
            "name = \"x\"\n[guest]\nworkload = \"hello\"\n[goal]\nsequence = [\"a\"]\n[expect]\nfixed = \"clean\"\n\
             [[trigger]]\nname = \"a\"\nsite = \"f\"\nvcpus = [1]\nstall = { until = \"a\", timeout = \"1ms..2ms\" }\nregs = { rsi = \"$T\" }\n",
        )
        .unwrap();
        assert_eq!(s.triggers.len(), 1);
        assert_eq!(s.expect.get("fixed"), Some(&Expect::Clean));
        assert!(s.goal.disarm_on_goal);
        let e = load_str("name = \"x\"\n[guest]\nworkload = \"hello\"\n[[trigger]]\nname = \"a\"\nsite = \"f\"\nwat = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":7:") && e.contains("wat"), "{e}");
    }
}
