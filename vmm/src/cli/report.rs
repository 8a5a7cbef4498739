//! `preemptor report`: the console classifier over log files.
use super::UsageError;
use crate::report::classify;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Console logs (raw guest console text).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// One JSON object per file per line.
    #[arg(long)]
    pub json: bool,
}

/// Exit status 1 when any file holds a crash, so scripts can branch on it.
pub fn run(a: ReportArgs) -> Result<i32, UsageError> {
    let mut any = false;
    for f in &a.files {
        let bytes = std::fs::read(f).map_err(|e| UsageError(format!("{}: {e}", f.display())))?;
        let text = String::from_utf8_lossy(&bytes).replace('\r', "");
        let r = classify(&text);
        any |= r.is_some();
        if a.json {
            let j = serde_json::json!({
                "file": f.display().to_string(),
                "crash": r.is_some(),
                "title": r.as_ref().map(|r| r.title.clone()),
                "type": r.as_ref().map(|r| r.crash_type.clone()),
                "corrupted": r.as_ref().is_some_and(|r| r.corrupted),
            });
            println!("{j}");
        } else {
            match &r {
                Some(r) => println!(
                    "{}: {} [{}]{}",
                    f.display(),
                    r.title,
                    r.crash_type,
                    if r.corrupted { " (corrupted)" } else { "" }
                ),
                None => println!("{}: no crash", f.display()),
            }
        }
    }
    Ok(i32::from(any))
}
