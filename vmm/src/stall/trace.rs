//! The record of a run's injections: every hit, fire, stall start and end,
//! and resume, with host timestamps and vCPU ids. Written as JSON lines and
//! rendered as one column per vCPU, like the seed's `CPU A | CPU B` diagram.
use serde::Serialize;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A breakpoint hit that matched a trigger's site (before conditions).
    Hit,
    /// The trigger's conditions held: its action runs.
    Fire,
    StallStart,
    /// The stall ended; `detail` says why (duration, until, timeout, stop).
    StallEnd,
    /// The vCPU re-enters the guest.
    Resume,
    /// A `watch` trigger's operand changed during its stop.
    Changed,
    /// Random preemption held the vCPU (`detail`: for how long).
    Preempt,
    /// A kernel backtrace of the vCPU (`detail`: its top frames), taken at
    /// a stop, at the goal, or at the end of a crashed run.
    Stack,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Microseconds since the VM started.
    pub t_us: u64,
    pub vcpu: usize,
    pub kind: EventKind,
    pub trigger: String,
    pub detail: String,
    /// How long the event lasted, where it is a span recorded at its start
    /// (a preemption hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dur_us: Option<u64>,
}

/// Bounded: plain hits of a hot site (try_to_wake_up) could be millions.
pub struct Trace {
    events: Mutex<Vec<Event>>,
    hits_dropped: Mutex<u64>,
}

const MAX_EVENTS: usize = 200_000;

impl Default for Trace {
    fn default() -> Self {
        Self {
            events: Mutex::new(Vec::new()),
            hits_dropped: Mutex::new(0),
        }
    }
}

impl Trace {
    pub fn record(&self, t: Duration, vcpu: usize, kind: EventKind, trigger: &str, detail: String) {
        self.record_span(t, vcpu, kind, trigger, detail, None);
    }

    /// [`record`](Self::record) for an event that lasts `dur` from `t`.
    pub fn record_span(
        &self,
        t: Duration,
        vcpu: usize,
        kind: EventKind,
        trigger: &str,
        detail: String,
        dur: Option<Duration>,
    ) {
        let mut ev = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if ev.len() >= MAX_EVENTS && kind == EventKind::Hit {
            *self.hits_dropped.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            return;
        }
        ev.push(Event {
            t_us: t.as_micros() as u64,
            vcpu,
            kind,
            trigger: trigger.into(),
            detail,
            dur_us: dur.map(|d| d.as_micros() as u64),
        });
    }

    /// Adds an event recorded elsewhere (a symbolized stack), in time order.
    pub fn insert(&self, e: Event) {
        let mut ev = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let at = ev.partition_point(|x| x.t_us <= e.t_us);
        ev.insert(at, e);
    }

    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn to_json_lines(&self) -> String {
        self.events()
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default() + "\n")
            .collect()
    }
}

/// Two (or more) columns, one per vCPU, of everything but plain hits.
pub fn diagram(events: &[Event], vcpus: usize) -> String {
    const W: usize = 44;
    let mut out = String::new();
    out.push_str(&format!("{:>12} ", "time"));
    for v in 0..vcpus {
        out.push_str(&format!("| {:<W$}", format!("vCPU {v}")));
    }
    out.push('\n');
    out.push_str(&format!("{:->12}-", ""));
    for _ in 0..vcpus {
        out.push_str(&format!("+-{:-<W$}", ""));
    }
    out.push('\n');
    // Random preemption can hold a vCPU thousands of times a run: past a
    // screenful they are counted, not drawn (the trace has each).
    let preempts = events
        .iter()
        .filter(|e| e.kind == EventKind::Preempt)
        .count();
    let draw_preempts = preempts <= 40;
    for e in events
        .iter()
        .filter(|e| e.kind != EventKind::Hit && (draw_preempts || e.kind != EventKind::Preempt))
    {
        let what = match e.kind {
            EventKind::Fire => format!("{} fires {}", e.trigger, e.detail),
            EventKind::StallStart => format!("  stalled ({})", e.detail),
            EventKind::StallEnd => format!("  stall ends: {}", e.detail),
            EventKind::Resume => "  runs on".to_string(),
            EventKind::Changed => format!("  {}", e.detail),
            EventKind::Preempt => format!("  preempted for {}", e.detail),
            // The top of the stack; the trace and stacks.txt have all of it.
            EventKind::Stack => format!(
                "  stack: {}",
                e.detail
                    .split(" < ")
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" < ")
            ),
            EventKind::Hit => unreachable!(),
        };
        // Wrapped within the vCPU's column, never cut: the offset and the
        // task are what a reader looks for.
        for (i, line) in wrap(&what, W).into_iter().enumerate() {
            if i == 0 {
                out.push_str(&format!("{:>9.3} ms ", e.t_us as f64 / 1000.0));
            } else {
                out.push_str(&format!("{:12} ", ""));
            }
            for v in 0..vcpus {
                if v == e.vcpu {
                    out.push_str(&format!("| {line:<W$}"));
                } else {
                    out.push_str(&format!("| {:W$}", ""));
                }
            }
            out.push('\n');
        }
    }
    if !draw_preempts {
        out.push_str(&format!(
            "{:12} ({preempts} random preemptions not drawn: see the trace)\n",
            ""
        ));
    }
    out
}

/// `text` in lines of at most `width` characters, broken at spaces (a
/// word longer than a line is split), continuation lines indented by two.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let indent = text.len() - text.trim_start().len();
    let mut lines: Vec<String> = vec![" ".repeat(indent)];
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let cur = lines.last_mut().expect("one line");
            let used = cur.chars().count();
            let blank = cur.trim().is_empty();
            let sep = usize::from(!blank);
            if used + sep + word.len() <= width {
                if !blank {
                    cur.push(' ');
                }
                cur.extend(word.iter());
                break;
            }
            if blank && word.len() > width - used {
                // Longer than a whole line: split it.
                let take = width - used;
                cur.extend(word[..take].iter());
                word.drain(..take);
            }
            lines.push(" ".repeat(indent + 2));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_events_wrap_within_their_column() {
        let text = "  waker fires at ttwu_do_activate.constprop.0+0x8f (hit 12) exit-race[31] $T=0xffff888000463000";
        let lines = wrap(text, 44);
        assert!(lines.len() > 1, "{lines:?}");
        assert!(lines.iter().all(|l| l.chars().count() <= 44), "{lines:?}");
        let words: Vec<&str> = lines.iter().flat_map(|l| l.split_whitespace()).collect();
        assert_eq!(
            words,
            text.split_whitespace().collect::<Vec<_>>(),
            "nothing lost"
        );
        assert!(lines[0].starts_with("  waker") && lines[1].starts_with("    "));
        let long = "x".repeat(100);
        let lines = wrap(&long, 44);
        assert_eq!(lines.concat().replace(' ', ""), long);
        assert!(lines.iter().all(|l| l.chars().count() <= 44), "{lines:?}");
    }

    #[test]
    fn columns() {
        let t = Trace::default();
        t.record(
            Duration::from_micros(1500),
            1,
            EventKind::Fire,
            "w",
            "rsi=T".into(),
        );
        t.record(
            Duration::from_micros(1600),
            0,
            EventKind::StallEnd,
            "t",
            "until w".into(),
        );
        t.record(
            Duration::from_micros(1700),
            0,
            EventKind::Hit,
            "t",
            String::new(),
        );
        let d = diagram(&t.events(), 2);
        let lines: Vec<&str> = d.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[2].contains("| w fires"));
        assert!(lines[2].find("w fires").unwrap() > lines[3].find("stall ends").unwrap());
        assert_eq!(t.to_json_lines().lines().count(), 3);
    }
}
