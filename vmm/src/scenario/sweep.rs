//! A sweep: one parameter of one trigger varied over a range, the other
//! triggers as the scenario has them. Pure: parsing the `--vary` spec and
//! applying a point to the triggers; the runs are the CLI's.
//!
//! ```text
//! vary   := TRIGGER "." param "=" values
//! param  := stall | stall.duration | stall.timeout | stall.after | block_irq
//!         | nth | every | from | max_fires | probability | vcpu | site
//! values := lo ".." hi          (with --points N or --step S)
//!         | v { "," v }         (a list; for `site` also FUNC/each)
//! ```
//! `stall` replaces the trigger's whole stall with a fixed duration (the
//! `until` form is dropped): for a stall, the crash rate against the
//! duration is the race window's width as the kernel sees it.
use super::runner::{count_title, wilson};
use crate::stall::spec::{parse_duration, Duration2};
use crate::stall::TriggerSpec;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("--vary '{0}': {1}")]
    Spec(String, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Param {
    Stall,
    StallDuration,
    StallTimeout,
    StallAfter,
    BlockIrq,
    Nth,
    Every,
    From,
    MaxFires,
    Probability,
    Vcpu,
    Site,
}

const PARAMS: &[(&str, Param)] = &[
    ("stall", Param::Stall),
    ("stall.duration", Param::StallDuration),
    ("stall.timeout", Param::StallTimeout),
    ("stall.after", Param::StallAfter),
    ("block_irq", Param::BlockIrq),
    ("nth", Param::Nth),
    ("every", Param::Every),
    ("from", Param::From),
    ("max_fires", Param::MaxFires),
    ("probability", Param::Probability),
    ("vcpu", Param::Vcpu),
    ("site", Param::Site),
];

impl Param {
    fn kind(self) -> Kind {
        match self {
            Param::Stall
            | Param::StallDuration
            | Param::StallTimeout
            | Param::StallAfter
            | Param::BlockIrq => Kind::Duration,
            Param::Probability => Kind::Float,
            Param::Site => Kind::Text,
            _ => Kind::Int,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Duration,
    Int,
    Float,
    Text,
}

/// One value of the varied parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Point {
    Duration(#[serde(with = "secs")] Duration),
    Int(u64),
    Float(f64),
    Text(String),
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs_f64(f64::deserialize(d)?))
    }
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Point::Duration(d) => write!(f, "{}", fmt_duration(*d)),
            Point::Int(n) => write!(f, "{n}"),
            Point::Float(x) => write!(f, "{x}"),
            Point::Text(s) => write!(f, "{s}"),
        }
    }
}

/// `1.5ms`, `200us`, `2s`: the shortest exact spelling the parser reads back.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        "0ms".into()
    } else if ns.is_multiple_of(1_000_000_000) {
        format!("{}s", ns / 1_000_000_000)
    } else if ns >= 1_000_000 && ns.is_multiple_of(1_000) {
        format!("{}ms", ns as f64 / 1e6)
    } else if ns.is_multiple_of(1_000) {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

/// A parsed `--vary`: the trigger, the parameter and its points.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vary {
    pub trigger: String,
    pub param: Param,
    /// `TRIGGER.param` as the user wrote it.
    pub name: String,
    pub points: Vec<Point>,
}

/// Parse `TRIGGER.param=values`. A range needs `points` (evenly spaced,
/// both ends included) or `step`.
pub fn parse(spec: &str, points: Option<usize>, step: Option<&str>) -> Result<Vary, Error> {
    let e = |m: &str| Error::Spec(spec.to_string(), m.to_string());
    let (name, values) = spec
        .split_once('=')
        .ok_or_else(|| e("expected TRIGGER.PARAM=VALUES, e.g. waker.stall=0ms..20ms"))?;
    let (trigger, p) = name
        .split_once('.')
        .ok_or_else(|| e("expected TRIGGER.PARAM before '='"))?;
    let param = PARAMS
        .iter()
        .find(|(n, _)| *n == p)
        .map(|(_, p)| *p)
        .ok_or_else(|| {
            let names: Vec<&str> = PARAMS.iter().map(|(n, _)| *n).collect();
            e(&format!(
                "unknown parameter '{p}' (one of: {})",
                names.join(", ")
            ))
        })?;
    let kind = param.kind();
    let one = |v: &str| -> Result<Point, Error> {
        let v = v.trim();
        match kind {
            Kind::Duration => parse_duration(v)
                .map(Point::Duration)
                .map_err(|x| e(&x.to_string())),
            Kind::Int => v
                .parse()
                .map(Point::Int)
                .map_err(|_| e(&format!("'{v}' is not a whole number"))),
            Kind::Float => match v.parse::<f64>() {
                Ok(x) if (0.0..=1.0).contains(&x) => Ok(Point::Float(x)),
                _ => Err(e(&format!("'{v}' is not a probability in 0..=1"))),
            },
            Kind::Text if v.is_empty() => Err(e("empty site")),
            Kind::Text => Ok(Point::Text(v.to_string())),
        }
    };
    let pts = match values.split_once("..") {
        Some((lo, hi)) if kind != Kind::Text => {
            let (lo, hi) = (one(lo)?, one(hi)?);
            range(&lo, &hi, points, step.map(one).transpose()?.as_ref()).map_err(|m| e(&m))?
        }
        _ => values.split(',').map(one).collect::<Result<Vec<_>, _>>()?,
    };
    if pts.is_empty() {
        return Err(e("no values"));
    }
    if pts.len() > 10_000 {
        return Err(e(&format!("{} points: at most 10000", pts.len())));
    }
    Ok(Vary {
        trigger: trigger.to_string(),
        param,
        name: name.to_string(),
        points: pts,
    })
}

fn range(
    lo: &Point,
    hi: &Point,
    points: Option<usize>,
    step: Option<&Point>,
) -> Result<Vec<Point>, String> {
    let (a, b) = (value(lo), value(hi));
    if a > b {
        return Err("the range's low end is above its high end".into());
    }
    let n = match (points, step) {
        (Some(n), None) if n >= 2 => n,
        (Some(1), None) => return Ok(vec![lo.clone()]),
        (None, Some(s)) if value(s) > 0.0 => ((b - a) / value(s) + 1e-9).floor() as usize + 1,
        (None, None) => return Err("a range needs --points N or --step S".into()),
        (Some(_), Some(_)) => return Err("--points and --step together".into()),
        _ => return Err("--points must be at least 1 and --step above 0".into()),
    };
    if n > 10_000 {
        return Err(format!("{n} points: at most 10000"));
    }
    let at = |i: usize| match (points, step) {
        (None, Some(s)) => a + value(s) * i as f64,
        _ => a + (b - a) * i as f64 / (n - 1) as f64,
    };
    Ok((0..n)
        .map(|i| match lo {
            Point::Duration(_) => Point::Duration(Duration::from_nanos(at(i).round() as u64)),
            Point::Int(_) => Point::Int(at(i).round() as u64),
            _ => Point::Float(at(i)),
        })
        .collect())
}

/// The point as a number for the x axis (durations in ns).
fn value(p: &Point) -> f64 {
    match p {
        Point::Duration(d) => d.as_nanos() as f64,
        Point::Int(n) => *n as f64,
        Point::Float(x) => *x,
        Point::Text(_) => f64::NAN,
    }
}

impl Vary {
    /// The x coordinate of point `i`: ms for durations, the value for
    /// numbers, the index for sites.
    pub fn x(&self, i: usize) -> f64 {
        match &self.points[i] {
            Point::Duration(d) => d.as_secs_f64() * 1e3,
            Point::Text(_) => i as f64,
            p => value(p),
        }
    }

    /// The x axis' label.
    pub fn axis(&self) -> String {
        match self.param.kind() {
            Kind::Duration => format!("{} (ms)", self.name),
            _ => self.name.clone(),
        }
    }

    /// The triggers with point `i` applied to the varied one.
    pub fn apply(&self, triggers: &[TriggerSpec], i: usize) -> Result<Vec<TriggerSpec>, Error> {
        let mut out = triggers.to_vec();
        let names: Vec<&str> = triggers.iter().map(|t| t.name.as_str()).collect();
        let t = out
            .iter_mut()
            .find(|t| t.name == self.trigger)
            .ok_or_else(|| {
                Error::Spec(
                    self.name.clone(),
                    format!(
                        "the scenario has no trigger '{}' (it has: {})",
                        self.trigger,
                        names.join(", ")
                    ),
                )
            })?;
        let p = &self.points[i];
        let wrong = || {
            Error::Spec(
                self.name.clone(),
                format!("'{p}' does not fit this parameter"),
            )
        };
        let d = |p: &Point| match p {
            Point::Duration(d) => Ok(Duration2::fixed(*d)),
            _ => Err(wrong()),
        };
        let n = |p: &Point| match p {
            Point::Int(n) => Ok(*n),
            _ => Err(wrong()),
        };
        match self.param {
            Param::Stall => {
                t.stall = Default::default();
                t.stall.duration = Some(d(p)?);
            }
            Param::StallDuration => t.stall.duration = Some(d(p)?),
            Param::StallTimeout => t.stall.timeout = Some(d(p)?),
            Param::StallAfter => t.stall.after = Some(d(p)?),
            Param::BlockIrq => t.block_irq = Some(d(p)?),
            Param::Nth => t.nth = Some(n(p)?),
            Param::Every => t.every = Some(n(p)?),
            Param::From => t.from = Some(n(p)?),
            Param::MaxFires => t.max_fires = Some(n(p)?),
            Param::Probability => {
                if let Point::Float(x) = p {
                    t.probability = Some(*x)
                }
            }
            Param::Vcpu => t.vcpus = vec![n(p)? as usize],
            Param::Site => {
                if let Point::Text(s) = p {
                    t.site = s.clone()
                }
            }
        }
        Ok(out)
    }
}

/// What one point's runs gave. The rate is over the runs that said
/// something about the kernel: the workload started and the host did not
/// fail (a sweep ignores the scenario's goal: short stalls miss it by
/// design, and that is what the rate shows).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PointResult {
    pub runs: usize,
    pub valid: usize,
    pub crashes: usize,
    pub goal: usize,
    pub seconds: f64,
    pub titles: Vec<(String, usize)>,
}

impl PointResult {
    pub fn add(&mut self, valid: bool, crash: Option<&str>, goal: bool, seconds: f64) {
        self.runs += 1;
        self.seconds += seconds;
        if !valid {
            return;
        }
        self.valid += 1;
        self.goal += goal as usize;
        if let Some(t) = crash {
            self.crashes += 1;
            count_title(&mut self.titles, t);
        }
    }

    pub fn rate(&self) -> Option<f64> {
        (self.valid > 0).then(|| self.crashes as f64 / self.valid as f64)
    }

    pub fn ci95(&self) -> Option<(f64, f64)> {
        wilson(self.crashes, self.valid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_lists() {
        let v = parse("waker.stall=0ms..20ms", None, Some("5ms")).unwrap();
        assert_eq!(v.points.len(), 5);
        assert_eq!(v.points[4], Point::Duration(Duration::from_millis(20)));
        assert_eq!(v.x(1), 5.0);
        let v = parse("waker.nth=1..3", Some(3), None).unwrap();
        assert_eq!(v.points, vec![Point::Int(1), Point::Int(2), Point::Int(3)]);
        let v = parse("w.site=a+0x1,b", None, None).unwrap();
        assert_eq!(v.points.len(), 2);
        assert!(parse("w.stall=1ms..2ms", None, None).is_err());
        assert!(parse("w.bogus=1", None, None).is_err());
        assert!(parse("w.stall=5ms..1ms", Some(3), None).is_err());
        assert!(parse("w.probability=2", None, None).is_err());
        assert!(parse("nodot=1", None, None).is_err());
    }

    #[test]
    fn apply_replaces_the_stall() {
        let mut t = TriggerSpec::new("w", "f");
        t.stall.until = Some("x".into());
        t.stall.timeout = Some(Duration2::fixed(Duration::from_millis(9)));
        let v = parse("w.stall=3ms", None, None).unwrap();
        let out = v.apply(&[t], 0).unwrap();
        assert_eq!(
            out[0].stall.duration,
            Some(Duration2::fixed(Duration::from_millis(3)))
        );
        assert_eq!(out[0].stall.until, None);
        assert!(v.apply(&[], 0).is_err());
    }

    #[test]
    fn durations_print_back() {
        for s in ["0ms", "1.5ms", "200us", "2s", "20ms"] {
            assert_eq!(fmt_duration(parse_duration(s).unwrap()), s);
        }
    }
}
