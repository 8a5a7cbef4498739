//! `--out DIR/index.html`: one self-contained page (no network, no script,
//! no external font) for a run, a suite, an exploration, a sweep or a
//! bisection: its tables as the terminal prints them, figures, and per
//! kept run a timeline of its vCPUs (`timeline.rs`), its events, crash
//! report and links to its files. The template is `page.html`
//! (minijinja, autoescaped; only the SVG we draw goes in unescaped).

pub mod timeline;

use serde::Serialize;
use std::path::Path;

use crate::scenario::runner::RunResult;
use crate::stall::chrome::{chrome_trace, End};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("index.html: template: {0}")]
    Template(#[from] minijinja::Error),
    #[error("{0}: {1}")]
    Write(std::path::PathBuf, std::io::Error),
}

/// A table cell: text, optionally a link and a class (`holds`, `fails`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cell {
    pub text: String,
    pub link: Option<String>,
    pub class: Option<String>,
}

impl<T: Into<String>> From<T> for Cell {
    fn from(t: T) -> Self {
        Cell {
            text: t.into(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Table {
    pub caption: String,
    pub head: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// One kept run, as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub id: String,
    pub heading: String,
    pub whole: String,
    pub window: Option<String>,
    pub window_text: String,
    pub events: Vec<String>,
    pub report: Option<String>,
    /// (name, relative link)
    pub files: Vec<(String, String)>,
}

const RUN_FILES: [&str; 6] = [
    "console.log",
    "trace.json",
    "trace.jsonl",
    "stacks.txt",
    "diagram.txt",
    "verdict.json",
];

impl RunView {
    /// The view of `r`, whose files are in `dir` (relative to the page).
    pub fn of(r: &RunResult, vcpus: usize, heading: String, id: String, dir: Option<&str>) -> Self {
        let crash = match &r.verdict {
            crate::boot::verdict::Verdict::Crash { title, .. } => Some(title.clone()),
            _ => None,
        };
        let end = End {
            t_us: (r.seconds * 1e6) as u64,
            crash,
        };
        let trace = chrome_trace(&r.events, vcpus, &heading, &end);
        let events = r
            .events
            .iter()
            .filter(|e| e.kind != crate::stall::trace::EventKind::Hit)
            .map(|e| {
                format!(
                    "{:>12.3} ms  vCPU {}  {:<12} {:<10} {}",
                    e.t_us as f64 / 1e3,
                    e.vcpu,
                    format!("{:?}", e.kind),
                    e.trigger,
                    e.detail
                )
            })
            .collect();
        let files = dir
            .map(|d| {
                RUN_FILES
                    .iter()
                    .map(|f| (f.to_string(), format!("{d}/{f}")))
                    .collect()
            })
            .unwrap_or_default();
        Self::build(
            &trace,
            vcpus,
            end.t_us,
            heading,
            id,
            events,
            r.report.clone(),
            files,
        )
    }

    /// The view of a kept run from its folder (`trace.json`,
    /// `verdict.json`), at `link` relative to the page; None if either is
    /// missing (a run without injection has no trace).
    pub fn from_dir(dir: &Path, link: &str, heading: String, id: String) -> Option<Self> {
        let trace: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("trace.json")).ok()?).ok()?;
        let verdict: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("verdict.json")).ok()?).ok()?;
        let evs = trace["traceEvents"].as_array()?;
        let vcpus = evs
            .iter()
            .filter(|e| e["name"] == "thread_name")
            .filter_map(|e| e["tid"].as_u64())
            .max()
            .map_or(1, |m| m as usize + 1);
        let end = (verdict["seconds"].as_f64().unwrap_or(0.0) * 1e6) as u64;
        let events = evs
            .iter()
            .filter(|e| e["ph"] != "M")
            .map(|e| {
                format!(
                    "{:>12.3} ms  vCPU {}  {:<10} {}",
                    e["ts"].as_u64().unwrap_or(0) as f64 / 1e3,
                    e["tid"],
                    e["name"].as_str().unwrap_or(""),
                    e["args"]["detail"]
                        .as_str()
                        .or(e["args"]["end"].as_str())
                        .unwrap_or("")
                )
            })
            .collect();
        let files = RUN_FILES
            .iter()
            .filter(|f| dir.join(f).exists())
            .map(|f| (f.to_string(), format!("{link}/{f}")))
            .collect();
        let report = verdict["report"].as_str().map(String::from);
        Some(Self::build(
            &trace, vcpus, end, heading, id, events, report, files,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        trace: &serde_json::Value,
        vcpus: usize,
        end_us: u64,
        heading: String,
        id: String,
        events: Vec<String>,
        report: Option<String>,
        files: Vec<(String, String)>,
    ) -> Self {
        let win = timeline::window(trace);
        RunView {
            id,
            heading,
            whole: timeline::svg(trace, vcpus, (0, end_us)),
            window: win.map(|w| timeline::svg(trace, vcpus, w)),
            window_text: win
                .map(|(a, b)| format!("{:.3} to {:.3} ms", a as f64 / 1e3, b as f64 / 1e3))
                .unwrap_or_default(),
            events,
            report,
            files,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Page {
    pub title: String,
    pub summary: Vec<String>,
    pub tables: Vec<Table>,
    /// (heading, preformatted text): an emitted scenario, a diagram.
    pub pre: Vec<(String, String)>,
    /// (heading, SVG): a sweep's plot.
    pub images: Vec<(String, String)>,
    pub runs: Vec<RunView>,
}

impl Page {
    pub fn render(&self) -> Result<String, Error> {
        let mut env = minijinja::Environment::new();
        env.add_template("page.html", include_str!("page.html"))?;
        Ok(env.get_template("page.html")?.render(self)?)
    }

    /// Writes `DIR/index.html`, creating DIR; whole or not at all (a
    /// temporary file renamed).
    pub fn write(&self, dir: &Path) -> Result<std::path::PathBuf, Error> {
        let html = self.render()?;
        std::fs::create_dir_all(dir).map_err(|e| Error::Write(dir.to_path_buf(), e))?;
        let path = dir.join("index.html");
        let tmp = dir.join(".index.html.partial");
        std::fs::write(&tmp, html)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::Write(path.clone(), e))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_text_keeps_svg() {
        let p = Page {
            title: "a <b> & c".into(),
            tables: vec![Table {
                caption: "t".into(),
                head: vec!["k".into()],
                rows: vec![vec![Cell {
                    text: "<i>".into(),
                    link: Some("x/y.html".into()),
                    class: Some("holds".into()),
                }]],
            }],
            images: vec![("plot".into(), "<svg><rect/></svg>".into())],
            ..Default::default()
        };
        let h = p.render().unwrap();
        assert!(h.contains("a &lt;b&gt; &amp; c"));
        assert!(h.contains("&lt;i&gt;"));
        assert!(h.contains("<svg><rect/></svg>"));
        // (minijinja escapes `/` as `&#x2f;` in the link: the browser reads it back)
        assert!(h.contains(r#"<td class="holds"><a href="x"#), "{h}");
        assert!(!h.contains("<script"), "no script");
    }
}
