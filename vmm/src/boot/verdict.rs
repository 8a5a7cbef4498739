//! A run's verdict, from how it ended, the init's markers and the report
//! classifier's reading of the console.
use super::RunOutput;
use crate::debug::symbolize::symbolize_report;
use crate::debug::symbols::Symbols;
use crate::report;
use crate::vstate::End;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// The workload ran and exited 0; the guest restarted cleanly.
    Clean,
    /// The workload ran and exited non-zero, kernel intact.
    WorkloadFailed {
        status: i32,
    },
    /// The kernel crashed (or the machine died without a word).
    Crash {
        /// From the symbolized report when the kernel's vmlinux was at
        /// hand (names the inlined function a bug is in), else the raw one.
        title: String,
        crash_type: String,
        corrupted: bool,
        /// The title of the console report as printed (unsymbolized).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        raw_title: Option<String>,
    },
    /// Wall-clock timeout without an end.
    Hang,
    /// The host could not run the guest (e.g. an instruction it cannot emulate).
    HostError {
        reason: String,
    },
    Interrupted,
}

impl Verdict {
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Clean => "clean",
            Verdict::WorkloadFailed { .. } => "workload-failed",
            Verdict::Crash { .. } => "crash",
            Verdict::Hang => "hang",
            Verdict::HostError { .. } => "host-error",
            Verdict::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Crash { title, .. } => write!(f, "crash: {title}"),
            Verdict::WorkloadFailed { status } => write!(f, "workload-failed: status {status}"),
            Verdict::HostError { reason } => write!(f, "host-error: {reason}"),
            v => f.write_str(v.name()),
        }
    }
}

/// Facts from the init's markers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Markers {
    pub cpus: Option<u32>,
    pub started: bool,
    pub status: Option<i32>,
    /// Seconds from VM start to the init's first marker.
    pub ready_at: Option<f64>,
}

pub fn markers(out: &RunOutput) -> Markers {
    let mut m = Markers::default();
    for (t, line) in out.console.markers() {
        let mut words = line.split_whitespace();
        let kind = words.next().unwrap_or("");
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
                .map(str::to_string)
        };
        match kind {
            "ready" => {
                m.cpus = field("cpus").and_then(|v| v.parse().ok());
                m.ready_at.get_or_insert(t.as_secs_f64());
            }
            "start" => m.started = true,
            "end" => m.status = field("status").and_then(|v| v.parse().ok()),
            _ => {}
        }
    }
    // A restored run starts after init's `start`: the workload's seed read
    // (its `ready()`, after the snapshot point) says it is running.
    m.started |= out.workload_ready;
    m
}

/// The run's verdict. With the kernel's symbols, a crash is titled from
/// the symbolized report (see [`crate::debug::symbolize`]), as syzbot does.
pub fn verdict(out: &RunOutput, syms: Option<&Symbols>) -> Verdict {
    let text = out.console.text();
    // A run that ended once the title settled has only part of its report.
    let classify = match out.end {
        End::ReportSettled(_) => report::classify_partial,
        _ => report::classify,
    };
    if let Some(r) = classify(&text) {
        let sym = syms.and_then(|s| classify(&symbolize_report(&text, s)));
        return match sym {
            Some(sr) => Verdict::Crash {
                title: sr.title,
                crash_type: sr.crash_type,
                corrupted: sr.corrupted,
                raw_title: Some(r.title),
            },
            None => Verdict::Crash {
                title: r.title,
                crash_type: r.crash_type,
                corrupted: r.corrupted,
                raw_title: None,
            },
        };
    }
    let m = markers(out);
    match &out.end {
        End::Timeout => Verdict::Hang,
        End::Interrupted => Verdict::Interrupted,
        End::EmulationFailure { .. } | End::HostError(_) | End::SnapshotPoint => {
            Verdict::HostError {
                reason: out.end.to_string(),
            }
        }
        // The console matched a report's end but the classifier found no
        // report: say so rather than call it clean.
        End::ReportEnd(line) | End::ReportSettled(line) => Verdict::Crash {
            title: format!("unclassified kernel report ({})", line.trim()),
            crash_type: "UNKNOWN".into(),
            corrupted: true,
            raw_title: None,
        },
        End::TripleFault { .. } => Verdict::Crash {
            title: "triple fault".into(),
            crash_type: "TRIPLE-FAULT".into(),
            corrupted: false,
            raw_title: None,
        },
        End::Reset => match m.status {
            Some(0) => Verdict::Clean,
            Some(status) => Verdict::WorkloadFailed { status },
            // A restart without init's end marker: a panic the classifier
            // did not recognise, or init died.
            None => Verdict::Crash {
                title: "guest restarted before the workload ended".into(),
                crash_type: "UNKNOWN".into(),
                corrupted: true,
                raw_title: None,
            },
        },
    }
}
