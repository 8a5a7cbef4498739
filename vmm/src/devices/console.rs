//! Where guest console bytes go: an in-memory copy for the report
//! classifier and the init markers, a log file with a host timestamp on
//! every line, and optionally stdout. Both copies are bounded so a flooding
//! guest cannot exhaust host memory or disk.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Prefix of the guest init's marker lines (see guest/src/lib.rs).
pub const MARK: &str = "@@preemptor";

#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    pub log: Option<PathBuf>,
    pub echo: bool,
    /// Bytes kept in memory (the classifier's input); the rest is counted.
    pub max_memory: usize,
    /// Bytes written to the log file.
    pub max_log: u64,
    /// A guest line containing one of these ends the run (the end of a
    /// kernel report: what follows costs time and tells nothing new).
    pub end_on: Vec<String>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            log: None,
            echo: false,
            max_memory: 8 << 20,
            max_log: 64 << 20,
            end_on: Vec::new(),
        }
    }
}

type EndHook = Box<dyn Fn(&str) + Send>;
type LineHook = Box<dyn FnMut(&str, &[u8]) -> bool + Send>;

/// First line of every console log file: says the lines carry host
/// timestamps, so [`guest_text`] can give back what the guest printed.
pub const LOG_HEADER: &str =
    "[preemptor] console log: [host seconds since VM start] guest line; [preemptor] lines are the VMM's";

/// The VMM's note naming the run's vmlinux (`[preemptor] vmlinux PATH`).
pub const KERNEL_NOTE: &str = "vmlinux ";

/// The vmlinux a console log file names, if it does.
pub fn log_vmlinux(text: &str) -> Option<std::path::PathBuf> {
    if !text.starts_with(LOG_HEADER) {
        return None;
    }
    text.lines().find_map(|l| {
        let (_, note) = l.split_once("] [preemptor] ")?;
        note.strip_prefix(KERNEL_NOTE).map(std::path::PathBuf::from)
    })
}

/// The guest's own text of a console log file (host timestamps and the
/// VMM's notes removed), or the text as it is if it is not such a log.
pub fn guest_text(text: &str) -> String {
    let Some(rest) = text.strip_prefix(LOG_HEADER) else {
        return text.to_string();
    };
    let mut out = String::with_capacity(rest.len());
    for line in rest.lines() {
        let line = match line.strip_prefix('[').and_then(|l| l.split_once("] ")) {
            Some((stamp, guest)) if stamp.trim().parse::<f64>().is_ok() => guest,
            _ => line,
        };
        if line.starts_with("[preemptor] ") || line.is_empty() && out.is_empty() {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

struct Inner {
    cfg: ConsoleConfig,
    start: Instant,
    text: Vec<u8>,
    dropped: u64,
    log: Option<BufWriter<File>>,
    logged: u64,
    at_line_start: bool,
    line: Vec<u8>,
    /// Host time of each marker line, in order.
    markers: Vec<(Duration, String)>,
    on_end_line: Option<EndHook>,
    /// Each called with every complete guest line (and all the text so
    /// far) while it returns true.
    on_line: Vec<LineHook>,
    /// Notes held back until the guest's current line ends.
    pending_notes: Vec<String>,
    /// The first error writing the log file (a full disk): the log is
    /// not whole, and whoever keeps it must say so.
    log_error: Option<std::io::Error>,
}

/// Marker lines kept: init prints a handful; a guest printing the prefix
/// in a loop must not grow the list without bound.
const MAX_MARKERS: usize = 4096;

/// Cheap to clone: all clones write to the same console.
#[derive(Clone)]
pub struct Console(Arc<Mutex<Inner>>);

impl Console {
    pub fn new(cfg: ConsoleConfig, start: Instant) -> std::io::Result<Self> {
        let log = match &cfg.log {
            Some(p) => {
                let mut f = BufWriter::new(File::create(p)?);
                f.write_all(LOG_HEADER.as_bytes())?;
                f.write_all(b"\n")?;
                Some(f)
            }
            None => None,
        };
        Ok(Self(Arc::new(Mutex::new(Inner {
            cfg,
            start,
            text: Vec::new(),
            dropped: 0,
            log,
            logged: 0,
            at_line_start: true,
            line: Vec::new(),
            markers: Vec::new(),
            on_end_line: None,
            on_line: Vec::new(),
            pending_notes: Vec::new(),
            log_error: None,
        }))))
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything the guest printed (up to the memory bound), lossy UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.inner().text).into_owned()
    }

    pub fn dropped(&self) -> u64 {
        self.inner().dropped
    }

    /// Why the log file is not whole, if writing it failed.
    pub fn log_error(&self) -> Option<std::io::Error> {
        let g = self.inner();
        let e = g.log_error.as_ref()?;
        Some(std::io::Error::new(e.kind(), e.to_string()))
    }

    /// Marker lines (without the prefix) with the host time they ended.
    pub fn markers(&self) -> Vec<(Duration, String)> {
        self.inner().markers.clone()
    }

    /// Write a line of our own into the log (not the guest text), e.g. the
    /// VMM's verdict or stall events, so the log tells the whole story.
    /// A note that comes while a guest line is half written waits for
    /// its end, so log lines stay whole (and `report` reads them right).
    pub fn note(&self, msg: &str) {
        let mut g = self.inner();
        let t = g.start.elapsed();
        let line = format!("[{:>10.6}] [preemptor] {msg}\n", t.as_secs_f64());
        if g.at_line_start {
            g.write_log(line.as_bytes());
        } else {
            g.pending_notes.push(line);
        }
    }

    /// Called with each complete guest line and the text kept so far,
    /// ending with that line (on the thread that wrote it, the console
    /// locked), until it returns false. Hooks add up.
    pub fn on_line(&self, f: impl FnMut(&str, &[u8]) -> bool + Send + 'static) {
        self.inner().on_line.push(Box::new(f));
    }

    /// Called with the first guest line that matches `end_on`.
    pub fn on_end_line(&self, f: impl Fn(&str) + Send + 'static) {
        self.inner().on_end_line = Some(Box::new(f));
    }

    /// Write out the log; notes still waiting for a guest line's end
    /// (the guest stopped mid-line) follow on a line of their own.
    pub fn flush(&self) {
        let mut g = self.inner();
        let pending = std::mem::take(&mut g.pending_notes);
        if !pending.is_empty() {
            g.write_log(b"\n");
            for n in pending {
                g.write_log(n.as_bytes());
            }
        }
        if let Some(Err(e)) = g.log.as_mut().map(|l| l.flush()) {
            g.log_error.get_or_insert(e);
        }
    }
}

impl Inner {
    fn write_log(&mut self, bytes: &[u8]) {
        if self.logged >= self.cfg.max_log {
            return;
        }
        if let Some(l) = self.log.as_mut() {
            let n = bytes.len().min((self.cfg.max_log - self.logged) as usize);
            let mut r = l.write_all(&bytes[..n]);
            self.logged += n as u64;
            if self.logged >= self.cfg.max_log && r.is_ok() {
                r = l.write_all(b"\n[preemptor] log limit reached, rest of the console dropped\n");
            }
            if let Err(e) = r {
                // Stop writing: the rest would fail the same way.
                self.logged = self.cfg.max_log;
                self.log_error.get_or_insert(e);
            }
        }
    }

    fn push(&mut self, b: u8) {
        if self.text.len() < self.cfg.max_memory {
            self.text.push(b);
        } else {
            self.dropped += 1;
        }
        if self.at_line_start {
            let t = self.start.elapsed();
            let stamp = format!("[{:>10.6}] ", t.as_secs_f64());
            self.write_log(stamp.as_bytes());
            self.at_line_start = false;
        }
        if b != b'\r' {
            self.write_log(&[b]);
        }
        if b == b'\n' {
            self.at_line_start = true;
            for n in std::mem::take(&mut self.pending_notes) {
                self.write_log(n.as_bytes());
            }
            let line = String::from_utf8_lossy(&self.line).trim_end().to_string();
            if let Some(rest) = line
                .strip_prefix(MARK)
                .filter(|_| self.markers.len() < MAX_MARKERS)
            {
                self.markers
                    .push((self.start.elapsed(), rest.trim().to_string()));
            }
            let mut hooks = std::mem::take(&mut self.on_line);
            hooks.retain_mut(|f| f(&line, &self.text));
            self.on_line = hooks;
            if self.cfg.end_on.iter().any(|e| line.contains(e.as_str())) {
                if let Some(f) = self.on_end_line.take() {
                    f(&line);
                }
            }
            self.line.clear();
        } else if self.line.len() < 4096 {
            self.line.push(b);
        }
    }
}

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut g = self.inner();
        for &b in buf {
            g.push(b);
        }
        if g.cfg.echo {
            let _ = std::io::stdout().write_all(buf);
            let _ = std::io::stdout().flush();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_and_bounds() {
        let cfg = ConsoleConfig {
            max_memory: 64,
            ..Default::default()
        };
        let mut c = Console::new(cfg, Instant::now()).unwrap();
        c.write_all(b"boot\r\n@@preemptor ready cpus=2\r\n")
            .unwrap();
        assert_eq!(c.markers()[0].1, "ready cpus=2");
        c.write_all(&[b'x'; 100]).unwrap();
        assert_eq!(c.text().len(), 64);
        assert!(c.dropped() > 0);
        // A guest forging marker lines for ever keeps a bounded list.
        for i in 0..2 * MAX_MARKERS {
            c.write_all(format!("@@preemptor flood {i}\n").as_bytes())
                .unwrap();
        }
        assert_eq!(c.markers().len(), MAX_MARKERS);
    }

    #[test]
    fn log_file_is_bounded_and_its_errors_kept() {
        let dir = std::env::temp_dir().join(format!("preemptor-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("console.log");
        let cfg = ConsoleConfig {
            log: Some(log.clone()),
            max_log: 4096,
            ..Default::default()
        };
        let mut c = Console::new(cfg, Instant::now()).unwrap();
        for _ in 0..1000 {
            c.write_all(b"flood flood flood\n").unwrap();
        }
        c.flush();
        assert!(c.log_error().is_none());
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.len() < 4096 + 200, "{}", text.len());
        assert!(text.ends_with("log limit reached, rest of the console dropped\n"));
        // A full disk: the first error is kept for whoever keeps the log.
        let cfg = ConsoleConfig {
            log: Some("/dev/full".into()),
            ..Default::default()
        };
        if let Ok(mut c) = Console::new(cfg, Instant::now()) {
            c.write_all(&[b'y'; 1 << 16]).unwrap();
            c.flush();
            let e = c.log_error().expect("ENOSPC kept");
            assert!(e.to_string().contains("No space left"), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn log_file_gives_back_the_guest_text() {
        let dir = std::env::temp_dir().join(format!("preemptor-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("console.log");
        let mut c = Console::new(
            ConsoleConfig {
                log: Some(log.clone()),
                ..Default::default()
            },
            Instant::now(),
        )
        .unwrap();
        let guest = "[    1.000000][    T1] kernel BUG at kernel/sched/core.c:6604!\nplain\n";
        c.note("snapshot restored");
        let (head, tail) = guest.split_at(20);
        c.write_all(head.as_bytes()).unwrap();
        c.note("a note in the middle of a guest line waits for its end");
        c.write_all(tail.as_bytes()).unwrap();
        c.note("run ended");
        c.flush();
        let text = std::fs::read_to_string(&log).unwrap();
        assert_ne!(text, guest);
        assert_eq!(guest_text(&text), guest);
        assert_eq!(guest_text(guest), guest, "raw text stays as it is");
    }

    #[test]
    fn end_line_fires_once() {
        let cfg = ConsoleConfig {
            end_on: vec!["---[ end trace".into()],
            ..Default::default()
        };
        let mut c = Console::new(cfg, Instant::now()).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        c.on_end_line(move |l| s.lock().unwrap().push(l.to_string()));
        c.write_all(
            b"x
[  1.0] ---[ end trace 0 ]---
---[ end trace 1 ]---
",
        )
        .unwrap();
        assert_eq!(*seen.lock().unwrap(), vec!["[  1.0] ---[ end trace 0 ]---"]);
    }
}
