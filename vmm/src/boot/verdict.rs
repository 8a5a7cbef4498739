//! A run's verdict, from how it ended, the init's markers and the report
//! classifier's reading of the console.
use super::RunOutput;
use crate::report;
use crate::vstate::End;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
        title: String,
        crash_type: String,
        corrupted: bool,
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

pub fn verdict(out: &RunOutput) -> Verdict {
    if let Some(r) = report::classify(&out.console.text()) {
        return Verdict::Crash {
            title: r.title,
            crash_type: r.crash_type,
            corrupted: r.corrupted,
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
        End::ReportEnd(line) => Verdict::Crash {
            title: format!("unclassified kernel report ({})", line.trim()),
            crash_type: "UNKNOWN".into(),
            corrupted: true,
        },
        End::TripleFault { .. } => Verdict::Crash {
            title: "triple fault".into(),
            crash_type: "TRIPLE-FAULT".into(),
            corrupted: false,
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
            },
        },
    }
}
