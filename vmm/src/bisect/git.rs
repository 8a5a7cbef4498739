//! The history under test, read with `git` (the repository is only read).

use super::Error;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Command;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub sha: String,
    pub subject: String,
    /// Author date, YYYY-MM-DD.
    pub date: String,
}

impl Commit {
    pub fn short(&self) -> &str {
        &self.sha[..self.sha.len().min(12)]
    }
}

const FORMAT: &str = "--format=%H%x1f%s%x1f%as";

fn git(repo: &Path, args: &[&str]) -> Result<std::process::Output, Error> {
    Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .map_err(|e| Error::Input(format!("git: {e}")))
}

fn parse(line: &str) -> Option<Commit> {
    let mut f = line.split('\x1f');
    Some(Commit {
        sha: f.next()?.to_string(),
        subject: f.next()?.to_string(),
        date: f.next()?.to_string(),
    })
}

/// The commit `rev` names in `repo`; `what` names the option in errors.
pub fn resolve(repo: &Path, rev: &str, what: &str) -> Result<Commit, Error> {
    let o = git(repo, &["rev-parse", "--git-dir"])?;
    if !o.status.success() {
        return Err(Error::Input(format!(
            "--repo {}: not a git repository",
            repo.display()
        )));
    }
    let spec = format!("{rev}^{{commit}}");
    let o = git(repo, &["log", "-1", FORMAT, &spec, "--"])?;
    let line = String::from_utf8_lossy(&o.stdout);
    match parse(line.trim_end()) {
        Some(c) if o.status.success() => Ok(c),
        _ => Err(Error::Input(format!(
            "{what} {rev}: no such commit in {}",
            repo.display()
        ))),
    }
}

/// The commits after `old` up to `new` on `new`'s first-parent line,
/// oldest first (`new` last). `old` must be an ancestor of `new`.
pub fn between(repo: &Path, old: &Commit, new: &Commit) -> Result<Vec<Commit>, Error> {
    let st = git(repo, &["merge-base", "--is-ancestor", &old.sha, &new.sha])?;
    if !st.status.success() {
        return Err(Error::Input(format!(
            "--old {} is not an ancestor of --new {}",
            old.short(),
            new.short()
        )));
    }
    let range = format!("{}..{}", old.sha, new.sha);
    let o = git(
        repo,
        &[
            "log",
            FORMAT,
            "--reverse",
            "--first-parent",
            "--ancestry-path",
            &range,
            "--",
        ],
    )?;
    if !o.status.success() {
        return Err(Error::Input(format!(
            "git log {range}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    let v: Vec<Commit> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(parse)
        .collect();
    if v.last() != Some(new) {
        return Err(Error::Input(format!(
            "--old {} and --new {}: no commit between them on --new's first-parent line",
            old.short(),
            new.short()
        )));
    }
    Ok(v)
}
