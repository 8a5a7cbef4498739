//! `preemptor report`: the console classifier over log files.
use super::UsageError;
use crate::debug::symbolize::symbolize_report;
use crate::debug::symbols::Symbols;
use crate::devices::console;
use crate::report::{classify, classify_partial};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Console logs: raw guest console text, or the console.log files
    /// preemptor writes (their host timestamps and notes are stripped).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// One JSON object per file per line.
    #[arg(long)]
    pub json: bool,
    /// Symbolize the report with this vmlinux before titling it (a
    /// preemptor console.log names its own; raw logs are titled as they are).
    #[arg(long)]
    pub vmlinux: Option<PathBuf>,
    /// Print the (symbolized) guest text that was classified.
    #[arg(long)]
    pub print: bool,
}

/// Exit status 1 when any file holds a crash, so scripts can branch on it.
pub fn run(a: ReportArgs) -> Result<i32, UsageError> {
    let mut any = false;
    for f in &a.files {
        let bytes = std::fs::read(f).map_err(|e| UsageError(format!("{}: {e}", f.display())))?;
        let raw = String::from_utf8_lossy(&bytes).replace('\r', "");
        let mut text = console::guest_text(&raw);
        // A run that ended where its title settled logged only that much.
        let classify = if raw.contains(crate::vstate::vcpu::SETTLED_END) {
            classify_partial
        } else {
            classify
        };
        // A preemptor log names its vmlinux: title from the symbolized
        // report, as the run did.
        let vmlinux = a.vmlinux.clone().or_else(|| console::log_vmlinux(&raw));
        if let Some(v) = vmlinux.filter(|v| v.exists()) {
            let syms = Symbols::load(&v)?;
            if classify(&text).is_some() {
                text = symbolize_report(&text, &syms);
            }
        }
        let r = classify(&text);
        if a.print {
            print!("{text}");
        }
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
