//! A run's timeline as SVG: one lane per vCPU on a true time axis, drawn
//! from the run's Chrome trace (`stall::chrome`, the same events Perfetto
//! shows): stalls and preemption holds as bars, fires, watched changes,
//! stacks and the goal as ticks, the crash as a red line across the lanes.
//! Every mark has a `<title>` (the browser's tooltip: trigger, why it
//! started and ended, the stacks taken), so the page needs no script.
//!
//! Hand-built elements rather than `plotters`: its SVG backend draws
//! shapes but cannot attach a `<title>` or a class to one, and a lane
//! chart is a few rectangles.

use serde_json::Value;
use std::fmt::Write;

const WIDTH: f64 = 960.0;
const LABEL: f64 = 70.0;
const LANE: f64 = 34.0;
const AXIS: f64 = 24.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1e3)
}

/// The span worth zooming to: the interleaving (from the first stall or
/// fire to the end of the last stall, fire or the goal), with the crash
/// when it follows within twice that span (at least 2 ms), and a margin.
/// A crash long after the interleaving (the seed's comes ~250 ms after its
/// 20 ms of stalls) would squeeze it into a few pixels: it is marked at the
/// right edge instead. None without any of them.
pub fn window(trace: &Value) -> Option<(u64, u64)> {
    let evs = trace["traceEvents"].as_array()?;
    let mut lo = u64::MAX;
    let mut hi = 0u64;
    let mut crash = None;
    for e in evs {
        let ts = e["ts"].as_u64().unwrap_or(0);
        match (e["ph"].as_str(), e["cat"].as_str()) {
            (Some("X"), Some("stall")) => {
                lo = lo.min(ts);
                hi = hi.max(ts + e["dur"].as_u64().unwrap_or(0));
            }
            (Some("i"), Some("fire" | "goal")) => {
                lo = lo.min(ts);
                hi = hi.max(ts);
            }
            (Some("i"), Some("crash")) => crash = Some(ts),
            _ => {}
        }
    }
    match crash {
        Some(c) if lo > hi => (lo, hi) = (c, c),
        Some(c) if c <= hi + 2 * (hi - lo).max(1000) => hi = hi.max(c),
        _ => {}
    }
    if lo > hi {
        return None;
    }
    let margin = ((hi - lo) / 10).max(1000);
    Some((lo.saturating_sub(margin), hi + margin))
}

/// The SVG of `trace` for `vcpus` lanes over `[t0, t1]` (µs since the VM
/// started).
pub fn svg(trace: &Value, vcpus: usize, (t0, t1): (u64, u64)) -> String {
    let t1 = t1.max(t0 + 1);
    let plot = WIDTH - LABEL - 10.0;
    let x = |t: u64| LABEL + (t.clamp(t0, t1) - t0) as f64 / (t1 - t0) as f64 * plot;
    let lanes = vcpus.max(1);
    let evs = trace["traceEvents"].as_array().cloned().unwrap_or_default();
    // A crash past the window gets a line of its own under the lanes for
    // its label, clear of the marks at the window's right edge.
    let late_crash = evs
        .iter()
        .any(|e| e["cat"] == "crash" && e["ts"].as_u64().is_some_and(|t| t > t1));
    let lanes_end = AXIS + lanes as f64 * LANE;
    let height = lanes_end + if late_crash { 20.0 } else { 6.0 };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    // The axis: five ticks.
    for i in 0..=4 {
        let t = t0 + (t1 - t0) * i / 4;
        let px = x(t);
        let _ = write!(
            s,
            r##"<line x1="{px:.1}" y1="{AXIS}" x2="{px:.1}" y2="{height}" stroke="#ddd"/><text x="{px:.1}" y="14" text-anchor="{}">{}</text>"##,
            if i == 4 { "end" } else { "middle" },
            ms(t)
        );
    }
    for v in 0..lanes {
        let y = AXIS + v as f64 * LANE;
        let _ = write!(
            s,
            r##"<g class="lane" data-vcpu="{v}"><rect x="{LABEL}" y="{y:.1}" width="{plot:.1}" height="{:.1}" fill="#f4f6f8"/><text x="4" y="{:.1}">vCPU {v}</text></g>"##,
            LANE - 4.0,
            y + LANE / 2.0 + 4.0
        );
    }
    for e in &evs {
        let ph = e["ph"].as_str().unwrap_or("");
        let ts = e["ts"].as_u64().unwrap_or(0);
        let lane = e["tid"].as_u64().unwrap_or(0) as f64;
        let y = AXIS + lane * LANE;
        let name = e["name"].as_str().unwrap_or("");
        match (ph, e["cat"].as_str().unwrap_or("")) {
            ("X", cat) => {
                let end = ts + e["dur"].as_u64().unwrap_or(0);
                if end < t0 || ts > t1 {
                    continue;
                }
                let (fill, class) = if cat == "preempt" {
                    ("#8aa1c1", "preempt")
                } else {
                    ("#f0a030", "stall")
                };
                let a = &e["args"];
                let mut tip = format!("{name}: {} to {} ({})", ms(ts), ms(end), ms(end - ts));
                for (k, label) in [("start", "started"), ("end", "ended"), ("detail", "")] {
                    if let Some(t) = a[k].as_str().filter(|t| !t.is_empty()) {
                        tip += &format!("\n{label}{}{t}", if label.is_empty() { "" } else { ": " });
                    }
                }
                for st in a["stacks"].as_array().into_iter().flatten() {
                    tip += &format!("\nstack: {}", st.as_str().unwrap_or(""));
                }
                let (x0, x1) = (x(ts), x(end));
                let _ = write!(
                    s,
                    r#"<rect class="{class}" x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{fill}" rx="2"><title>{}</title></rect>"#,
                    y + 5.0,
                    (x1 - x0).max(2.0),
                    LANE - 14.0,
                    esc(&tip)
                );
                if x1 - x0 > 60.0 {
                    let _ = write!(
                        s,
                        r#"<text x="{:.1}" y="{:.1}" pointer-events="none">{}</text>"#,
                        x0 + 3.0,
                        y + LANE / 2.0 + 3.0,
                        esc(name)
                    );
                }
            }
            // The crash: a red line at its time, or, past the window, a
            // dashed one at its right edge, labelled with the time below.
            ("i", cat) if ts >= t0 && (ts <= t1 || cat == "crash") => {
                let a = &e["args"];
                let detail = a["detail"].as_str().or(a["title"].as_str()).unwrap_or("");
                let tip = esc(&format!("{name} at {}\n{detail}", ms(ts)));
                let px = x(ts);
                if cat == "crash" {
                    let (y2, dash, lx, ly, label) = if ts > t1 {
                        let when = format!("crash at {} &#8594;", ms(ts));
                        (
                            lanes_end,
                            r#" stroke-dasharray="4 3""#,
                            px,
                            height - 5.0,
                            when,
                        )
                    } else {
                        (height, "", px - 3.0, AXIS + 10.0, "crash".to_string())
                    };
                    let _ = write!(
                        s,
                        r##"<g class="crash"><line x1="{px:.1}" y1="{AXIS}" x2="{px:.1}" y2="{y2:.1}" stroke="#d02020" stroke-width="2"{dash}/><text x="{lx:.1}" y="{ly:.1}" fill="#d02020" text-anchor="end">{label}</text><title>{tip}</title></g>"##
                    );
                    continue;
                }
                let color = match cat {
                    "fire" => "#2060c0",
                    "goal" => "#20a040",
                    "watch" => "#a040a0",
                    _ => "#777",
                };
                let (ya, yb) = (y + 2.0, y + LANE - 6.0);
                let _ = write!(
                    s,
                    r#"<line class="{cat}" x1="{px:.1}" y1="{ya:.1}" x2="{px:.1}" y2="{yb:.1}" stroke="{color}" stroke-width="2"><title>{tip}</title></line>"#
                );
            }
            _ => {}
        }
    }
    s += "</svg>";
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stall::chrome::{chrome_trace, End};
    use crate::stall::trace::{Event, EventKind};

    fn ev(t_us: u64, vcpu: usize, kind: EventKind, trigger: &str) -> Event {
        Event {
            t_us,
            vcpu,
            kind,
            trigger: trigger.into(),
            detail: "d <x>".into(),
            dur_us: None,
        }
    }

    #[test]
    fn lanes_stalls_and_the_crash() {
        let events = vec![
            ev(1000, 1, EventKind::Fire, "waker"),
            ev(1000, 1, EventKind::StallStart, "waker"),
            ev(5000, 1, EventKind::StallEnd, "waker"),
            ev(2000, 0, EventKind::Fire, "dead"),
        ];
        let t = chrome_trace(
            &events,
            2,
            "x",
            &End {
                t_us: 6000,
                crash: Some("kernel BUG in do_task_dead".into()),
            },
        );
        let w = window(&t).unwrap();
        assert!(w.0 <= 1000 && w.1 >= 6000, "{w:?}");
        let s = svg(&t, 2, w);
        assert_eq!(s.matches(r#"class="lane""#).count(), 2);
        assert_eq!(s.matches(r#"class="stall""#).count(), 1);
        assert_eq!(s.matches(r#"class="crash""#).count(), 1);
        assert_eq!(s.matches(r#"class="fire""#).count(), 2);
        assert!(s.contains("d &lt;x&gt;"), "escaped");
        assert!(!s.contains("<x>"));
    }

    #[test]
    fn a_late_crash_is_marked_at_the_edge_of_the_window() {
        let events = vec![
            ev(100_000, 1, EventKind::StallStart, "waker"),
            ev(120_000, 1, EventKind::StallEnd, "waker"),
        ];
        let end = End {
            t_us: 400_000,
            crash: Some("kernel BUG in do_task_dead".into()),
        };
        let t = chrome_trace(&events, 2, "x", &end);
        let w = window(&t).unwrap();
        assert!(w.0 < 100_000 && w.1 > 120_000 && w.1 < 200_000, "{w:?}");
        let s = svg(&t, 2, w);
        assert_eq!(s.matches(r#"class="crash""#).count(), 1);
        assert!(s.contains("crash at 400.000 ms"), "{s}");
        // A crash close behind the stalls stays inside.
        let near = End {
            t_us: 150_000,
            ..end
        };
        let w = window(&chrome_trace(&events, 2, "x", &near)).unwrap();
        assert!(w.1 > 150_000, "{w:?}");
    }
}
