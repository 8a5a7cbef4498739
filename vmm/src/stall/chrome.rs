//! A run's trace in the Chrome trace event format (`trace.json`), which
//! Perfetto (ui.perfetto.dev), `chrome://tracing` and Catapult read.
//!
//! One process (the guest), one thread track per vCPU. Each stall is an
//! `X` slice named by its trigger, from its start to its end, with why it
//! started and ended and the stacks taken during it as args; each
//! preemption hold an `X` slice named `preempt`; fires, watched operands
//! that changed, stacks and the goal are thread instants (`i`, scope
//! `t`); the crash is a global instant at the run's end. Timestamps are
//! microseconds since the VM started, as in `trace.jsonl`; plain hits are
//! left out (they can be hundreds of thousands) and counted in
//! `otherData`.

use serde_json::{json, Value};

use super::trace::{Event, EventKind};

/// The run's end for the trace: when (µs since the VM started) and, for a
/// crash, its title.
pub struct End {
    pub t_us: u64,
    pub crash: Option<String>,
}

/// The trace of `events` (time-ordered, as `Trace::events` gives them) on
/// a guest of `vcpus`.
pub fn chrome_trace(events: &[Event], vcpus: usize, name: &str, end: &End) -> Value {
    let last = events
        .iter()
        .map(|e| e.t_us)
        .max()
        .unwrap_or(0)
        .max(end.t_us);
    let mut out: Vec<Value> = Vec::new();
    // Stalls open per vCPU: (start event, stacks taken during it).
    let mut open: Vec<Option<(&Event, Vec<String>)>> = vec![None; vcpus.max(1)];
    let slice = |start: &Event, until: u64, why_end: &str, stacks: &[String]| {
        json!({
            "name": start.trigger, "cat": "stall", "ph": "X",
            "ts": start.t_us, "dur": until.saturating_sub(start.t_us),
            "pid": 1, "tid": start.vcpu,
            "args": {"start": start.detail, "end": why_end, "stacks": stacks},
        })
    };
    let instant = |e: &Event, name: String, cat: &str| {
        json!({
            "name": name, "cat": cat, "ph": "i", "s": "t",
            "ts": e.t_us, "pid": 1, "tid": e.vcpu,
            "args": {"trigger": e.trigger, "detail": e.detail},
        })
    };
    let mut hits = 0u64;
    for e in events {
        if e.vcpu >= open.len() {
            open.resize(e.vcpu + 1, None);
        }
        match e.kind {
            EventKind::Hit => hits += 1,
            EventKind::StallStart => {
                if let Some((s, st)) = open[e.vcpu].take() {
                    out.push(slice(s, e.t_us, "another stall began", &st));
                }
                open[e.vcpu] = Some((e, Vec::new()));
            }
            EventKind::StallEnd => {
                if let Some((s, st)) = open[e.vcpu].take() {
                    out.push(slice(s, e.t_us, &e.detail, &st));
                }
            }
            EventKind::Resume => {}
            EventKind::Fire => out.push(instant(e, format!("fire {}", e.trigger), "fire")),
            EventKind::Changed => out.push(instant(e, "changed".into(), "watch")),
            EventKind::Preempt => out.push(json!({
                "name": "preempt", "cat": "preempt", "ph": "X",
                "ts": e.t_us, "dur": e.dur_us.unwrap_or(0),
                "pid": 1, "tid": e.vcpu, "args": {"detail": e.detail},
            })),
            EventKind::Stack => {
                if let Some((_, st)) = open[e.vcpu].as_mut() {
                    st.push(e.detail.clone());
                }
                let goal = e.trigger.starts_with("goal reached");
                let name = if goal { "goal" } else { "stack" };
                out.push(instant(e, name.into(), name));
            }
        }
    }
    for (s, st) in open.into_iter().flatten() {
        out.push(slice(s, last, "the run ended", &st));
    }
    if let Some(title) = &end.crash {
        out.push(json!({
            "name": format!("crash: {title}"), "cat": "crash", "ph": "i", "s": "g",
            "ts": end.t_us, "pid": 1, "tid": 0, "args": {"title": title},
        }));
    }
    // Time order (stable: a slice before the instants at its start).
    out.sort_by_key(|v| v["ts"].as_u64().unwrap_or(0));
    let mut meta = vec![json!({
        "name": "process_name", "ph": "M", "pid": 1, "tid": 0, "args": {"name": name},
    })];
    for v in 0..vcpus {
        meta.push(json!({
            "name": "thread_name", "ph": "M", "pid": 1, "tid": v,
            "args": {"name": format!("vCPU {v}")},
        }));
    }
    meta.extend(out);
    json!({
        "traceEvents": meta,
        "displayTimeUnit": "ms",
        "otherData": {"hits_left_out": hits},
    })
}

/// The format's rules, as `trace.json` must keep them: every event has a
/// name, a phase, a pid and a tid; all but metadata a timestamp; `X` a
/// duration; instants a scope; metadata names its thread or process;
/// `B`/`E` pairs balance per track; timestamps never go back on a track.
/// The first broken rule, or `Ok`.
pub fn check_format(trace: &Value) -> Result<(), String> {
    let evs = trace["traceEvents"]
        .as_array()
        .ok_or("no traceEvents array")?;
    let mut last: std::collections::HashMap<(u64, u64), u64> = Default::default();
    let mut depth: std::collections::HashMap<(u64, u64), i64> = Default::default();
    for (i, e) in evs.iter().enumerate() {
        let ph = e["ph"].as_str().ok_or(format!("event {i}: no ph"))?;
        e["name"].as_str().ok_or(format!("event {i}: no name"))?;
        let pid = e["pid"].as_u64().ok_or(format!("event {i}: no pid"))?;
        let tid = e["tid"].as_u64().ok_or(format!("event {i}: no tid"))?;
        if ph == "M" {
            e["args"]["name"]
                .as_str()
                .ok_or(format!("event {i}: metadata without args.name"))?;
            continue;
        }
        let ts = e["ts"].as_u64().ok_or(format!("event {i}: no ts"))?;
        match ph {
            "X" => {
                e["dur"]
                    .as_u64()
                    .ok_or(format!("event {i}: X without dur"))?;
            }
            "i" | "I" => {
                let s = e["s"].as_str().unwrap_or("t");
                if !matches!(s, "t" | "p" | "g") {
                    return Err(format!("event {i}: instant scope {s}"));
                }
            }
            "B" => *depth.entry((pid, tid)).or_default() += 1,
            "E" => {
                let d = depth.entry((pid, tid)).or_default();
                *d -= 1;
                if *d < 0 {
                    return Err(format!("event {i}: E without B on tid {tid}"));
                }
            }
            other => return Err(format!("event {i}: phase {other} not used here")),
        }
        let prev = last.insert((pid, tid), ts).unwrap_or(0);
        if ts < prev {
            return Err(format!("event {i}: ts {ts} before {prev} on tid {tid}"));
        }
    }
    if let Some(((_, tid), _)) = depth.iter().find(|(_, d)| **d != 0) {
        return Err(format!("unbalanced B/E on tid {tid}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: u64, vcpu: usize, kind: EventKind, trigger: &str, detail: &str) -> Event {
        Event {
            t_us: t,
            vcpu,
            kind,
            trigger: trigger.into(),
            detail: detail.into(),
            dur_us: None,
        }
    }

    #[test]
    fn stalls_are_slices_fires_instants_and_the_format_holds() {
        use EventKind::*;
        let mut p = ev(50, 1, Preempt, "preempt", "1ms");
        p.dur_us = Some(1000);
        let events = vec![
            ev(10, 0, Hit, "exiter", ""),
            ev(11, 0, Fire, "exiter", "at f+0x1"),
            ev(12, 0, Stack, "exiter stops vCPU 0", "f+0x1 < g"),
            ev(13, 0, StallStart, "exiter", "until waker"),
            p,
            ev(200, 1, Fire, "waker", "at h"),
            ev(210, 1, StallStart, "waker", "100ms"),
            ev(300, 0, StallEnd, "exiter", "waker fired"),
            ev(301, 0, Resume, "exiter", ""),
            ev(400, 1, Stack, "goal reached on vCPU 1", "h < i"),
        ];
        let t = chrome_trace(
            &events,
            2,
            "guest",
            &End {
                t_us: 500,
                crash: Some("kernel BUG in do_task_dead".into()),
            },
        );
        check_format(&t).unwrap();
        let evs = t["traceEvents"].as_array().unwrap();
        let x: Vec<&Value> = evs.iter().filter(|e| e["cat"] == "stall").collect();
        assert_eq!(x.len(), 2);
        assert_eq!(
            (x[0]["ts"].as_u64(), x[0]["dur"].as_u64()),
            (Some(13), Some(287))
        );
        assert_eq!(x[0]["args"]["end"], "waker fired");
        assert_eq!(x[0]["args"]["stacks"].as_array().unwrap().len(), 0);
        // The waker never ended: to the run's end.
        assert_eq!(
            (x[1]["ts"].as_u64(), x[1]["dur"].as_u64()),
            (Some(210), Some(290))
        );
        assert_eq!(x[1]["args"]["stacks"][0], "h < i");
        assert_eq!(evs.iter().filter(|e| e["cat"] == "fire").count(), 2);
        assert_eq!(evs.iter().filter(|e| e["cat"] == "goal").count(), 1);
        let pre = evs.iter().find(|e| e["cat"] == "preempt").unwrap();
        assert_eq!(pre["dur"], 1000);
        assert!(evs.iter().any(|e| e["cat"] == "crash" && e["s"] == "g"));
        assert_eq!(t["otherData"]["hits_left_out"], 1);
        let names: Vec<&str> = evs
            .iter()
            .filter(|e| e["name"] == "thread_name")
            .map(|e| e["args"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["vCPU 0", "vCPU 1"]);
    }

    #[test]
    fn the_checker_refuses_broken_traces() {
        let bad = |evs: Value| check_format(&json!({ "traceEvents": evs })).unwrap_err();
        assert!(bad(json!([{"name":"a","ph":"X","ts":1,"pid":1,"tid":0}])).contains("dur"));
        assert!(bad(json!([{"name":"a","ph":"E","ts":1,"pid":1,"tid":0}])).contains("E without B"));
        assert!(bad(json!([{"name":"a","ph":"B","ts":1,"pid":1,"tid":0}])).contains("unbalanced"));
        assert!(bad(json!([
            {"name":"a","ph":"i","ts":5,"pid":1,"tid":0},
            {"name":"b","ph":"i","ts":4,"pid":1,"tid":0}
        ]))
        .contains("before"));
        assert!(bad(json!([{"name":"m","ph":"M","pid":1,"tid":0}])).contains("args.name"));
    }
}
