//! `preemptor report`: the console classifier over log files.
use super::UsageError;
use crate::debug::symbolize::symbolize_report;
use crate::debug::symbols::Symbols;
use crate::devices::console;
use crate::report::{classify, classify_partial, Report};
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

/// The guest text of a console log (raw, or a preemptor console.log) and
/// its crash, titled as the run titled it: a log that ended where its
/// title settled is not a damaged report, and with `syms` the report is
/// symbolized first (file:line, `[inline]` frames).
pub fn classify_text(raw: &str, syms: Option<&Symbols>) -> (String, Option<Report>) {
    let mut text = console::guest_text(raw);
    let classify = if raw.contains(crate::vstate::vcpu::SETTLED_END) {
        classify_partial
    } else {
        classify
    };
    if let Some(syms) = syms {
        if classify(&text).is_some() {
            text = symbolize_report(&text, syms);
        }
    }
    let r = classify(&text);
    (text, r)
}

/// Exit status 1 when any file holds a crash, so scripts can branch on it.
pub fn run(a: ReportArgs) -> Result<i32, UsageError> {
    let mut any = false;
    for f in &a.files {
        let bytes = std::fs::read(f).map_err(|e| UsageError(format!("{}: {e}", f.display())))?;
        let raw = String::from_utf8_lossy(&bytes).replace('\r', "");
        // A preemptor log names its vmlinux: title from the symbolized
        // report, as the run did.
        let vmlinux = a.vmlinux.clone().or_else(|| console::log_vmlinux(&raw));
        let syms = match vmlinux.filter(|v| v.exists()) {
            Some(v) => Some(Symbols::load(&v)?),
            None => None,
        };
        let (text, r) = classify_text(&raw, syms.as_ref());
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
