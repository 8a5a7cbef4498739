//! What a trigger is, as users write it: `--break` strings on the command
//! line and `[[trigger]]` tables in scenario files describe the same model.
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("bad duration '{0}' (expected e.g. 200ms, 1.5s, 500us, or a range 1ms..5ms)")]
    Duration(String),
    #[error("--break '{0}': {1}")]
    Break(String, String),
}

/// A fixed duration or a uniform random one in `[lo, hi]` drawn per stall
/// from the run's seeded generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Duration2 {
    pub lo: Duration,
    pub hi: Duration,
}

impl Duration2 {
    pub fn fixed(d: Duration) -> Self {
        Self { lo: d, hi: d }
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, Error> {
    let err = || Error::Duration(s.to_string());
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(err)?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().map_err(|_| err())?;
    let secs = match unit {
        "s" => v,
        "ms" => v / 1e3,
        "us" => v / 1e6,
        "ns" => v / 1e9,
        _ => return Err(err()),
    };
    if !secs.is_finite() || !(0.0..=3600.0).contains(&secs) {
        return Err(err());
    }
    Ok(Duration::from_secs_f64(secs))
}

impl std::str::FromStr for Duration2 {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.split_once("..") {
            Some((a, b)) => {
                let (lo, hi) = (parse_duration(a)?, parse_duration(b)?);
                if lo > hi {
                    return Err(Error::Duration(s.into()));
                }
                Ok(Self { lo, hi })
            }
            None => parse_duration(s).map(Self::fixed),
        }
    }
}

impl<'de> Deserialize<'de> for Duration2 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Registers a predicate or capture may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reg {
    Rdi,
    Rsi,
    Rdx,
    Rcx,
    R8,
    R9,
    R10,
    R11,
    Rax,
    Rbx,
    R12,
    R13,
    R14,
    R15,
    Rsp,
    Rbp,
    Rip,
    /// The current task pointer (per-CPU `current_task`), not a register.
    Current,
    /// The base register of the memory operand of the instruction at the
    /// site: at `FUNC/store:task_struct.__state` that is the task whose
    /// state is stored, whichever register the compiler put it in (an
    /// inlined copy picks its own).
    Base,
}

impl std::str::FromStr for Reg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        toml::Value::String(s.to_string())
            .try_into()
            .map_err(|_| format!("unknown register '{s}' (rdi, rsi, rdx, rcx, r8-r15, rax, rbx, rsp, rbp, rip, current, base)"))
    }
}

/// A value to compare with: a number or a capture (`$name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Value {
    Num(u64),
    Var(String),
}

impl std::str::FromStr for Value {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(v) = s.strip_prefix('$') {
            return Ok(Value::Var(v.to_string()));
        }
        let n = match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16),
            None => s.parse(),
        };
        n.map(Value::Num)
            .map_err(|_| format!("'{s}' is neither a number nor a $capture"))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Value::Num(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// What a fired trigger does to its vCPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StallSpec {
    /// Stall for this long (fixed or a range).
    pub duration: Option<Duration2>,
    /// Or stall until this trigger fires (on any vCPU; `*`: any trigger)...
    pub until: Option<String>,
    /// Or stall until this trigger's stall has ended (`*`: every other
    /// stall in progress): with `after`, this stop outlasts another by
    /// that much, whatever the other's length...
    pub outlast: Option<String>,
    /// ...for at most this long.
    pub timeout: Option<Duration2>,
    /// Stay stalled this much longer after `until` fired (or the outlasted
    /// stall ended).
    pub after: Option<Duration2>,
}

/// One trigger: a site and when it fires, and what it then does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    pub name: String,
    /// `func`, `func+0x1f`, `file.c:LINE`, or an instruction pattern such as
    /// `ttwu_do_wakeup/store:task_struct.__state` (see debug::symbols).
    pub site: String,
    /// vCPUs it applies to; all when empty.
    #[serde(default)]
    pub vcpus: Vec<usize>,
    /// Fire on the n-th matching hit only.
    pub nth: Option<u64>,
    /// Fire on every n-th matching hit.
    pub every: Option<u64>,
    /// Fire on matching hits from the n-th on.
    pub from: Option<u64>,
    /// Fire with this probability (seeded per run).
    pub probability: Option<f64>,
    /// At most this many fires (then the trigger disarms itself).
    pub max_fires: Option<u64>,
    /// Fire only while trigger NAME's stall is in progress (on another
    /// vCPU); `*`: while any trigger's is.
    pub during: Option<String>,
    /// Fire only with a value captured by a trigger that is now stalled in
    /// a register (the stalled task, as its waker holds it): this vCPU is
    /// acting on what the stalled one holds.
    #[serde(default)]
    pub acts_on_stalled: bool,
    /// Current task's `comm` must equal this.
    pub comm: Option<String>,
    /// Current task's pid must equal this.
    pub pid: Option<u32>,
    /// Current task's `flags & mask` must be non-zero (e.g. 0x4 PF_EXITING).
    pub task_flags: Option<u64>,
    /// Register predicates: `{ rsi = "$T" }` or `{ rdi = 0x1234 }`.
    #[serde(default)]
    pub regs: std::collections::BTreeMap<String, Value>,
    /// Capture values at fire time: `{ T = "current" }`.
    #[serde(default)]
    pub capture: std::collections::BTreeMap<String, Reg>,
    #[serde(default)]
    pub stall: StallSpec,
    /// Keep interrupts off on this vCPU after the action, for at most this
    /// long or until its next breakpoint hit.
    pub block_irq: Option<Duration2>,
    /// Tell the guest it was paused (KVM_KVMCLOCK_CTRL); an SMI would not.
    #[serde(default)]
    pub announce: bool,
    /// At a stop, read the memory operand of the site's instruction, and
    /// again when the stop ends: a different value means another CPU wrote
    /// it meanwhile (the trace says so; `explore` learns from it).
    #[serde(default)]
    pub watch: bool,
    /// Starts disarmed (armed by another trigger's `arm`).
    #[serde(default)]
    pub disarmed: bool,
    #[serde(default)]
    pub arm: Vec<String>,
    #[serde(default)]
    pub disarm: Vec<String>,
}

impl TriggerSpec {
    pub fn new(name: &str, site: &str) -> Self {
        Self {
            name: name.into(),
            site: site.into(),
            vcpus: vec![],
            nth: None,
            every: None,
            from: None,
            probability: None,
            max_fires: None,
            during: None,
            acts_on_stalled: false,
            comm: None,
            pid: None,
            task_flags: None,
            regs: Default::default(),
            capture: Default::default(),
            stall: StallSpec::default(),
            block_irq: None,
            announce: false,
            watch: false,
            disarmed: false,
            arm: vec![],
            disarm: vec![],
        }
    }

    /// Parse `SITE[,key=value|flag]...` (the `--break` syntax); `index`
    /// names unnamed triggers `b0`, `b1`, ...
    pub fn parse_break(s: &str, index: usize) -> Result<Self, Error> {
        let e = |m: String| Error::Break(s.to_string(), m);
        let mut parts = s.split(',');
        let site = parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| e("no site".into()))?;
        let mut t = TriggerSpec::new(&format!("b{index}"), site);
        let num = |k: &str, v: &str| -> Result<u64, Error> {
            v.parse()
                .map_err(|_| e(format!("{k}: '{v}' is not a number")))
        };
        let dur = |v: &str| v.parse::<Duration2>().map_err(|x| e(x.to_string()));
        for p in parts {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match k {
                "name" => t.name = v.into(),
                "vcpu" => {
                    for x in v.split('+') {
                        t.vcpus.push(num(k, x)? as usize)
                    }
                }
                "nth" => t.nth = Some(num(k, v)?),
                "every" => t.every = Some(num(k, v)?),
                "from" => t.from = Some(num(k, v)?),
                "max" => t.max_fires = Some(num(k, v)?),
                "prob" => t.probability = Some(v.parse().map_err(|_| e(format!("prob: '{v}'")))?),
                "stall" => t.stall.duration = Some(dur(v)?),
                "until" => t.stall.until = Some(v.into()),
                "timeout" => t.stall.timeout = Some(dur(v)?),
                "after" => t.stall.after = Some(dur(v)?),
                "during" => t.during = Some(v.into()),
                "comm" => t.comm = Some(v.into()),
                "pid" => t.pid = Some(num(k, v)? as u32),
                "task_flags" => {
                    t.task_flags = Some(
                        v.parse::<Value>()
                            .ok()
                            .and_then(|x| match x {
                                Value::Num(n) => Some(n),
                                _ => None,
                            })
                            .ok_or_else(|| e(format!("task_flags: '{v}'")))?,
                    )
                }
                "capture" => {
                    let (var, reg) = v
                        .split_once(':')
                        .ok_or_else(|| e("capture=VAR:REG".into()))?;
                    t.capture.insert(var.into(), reg.parse().map_err(e)?);
                }
                "arm" => t.arm.push(v.into()),
                "disarm" => t.disarm.push(v.into()),
                "disarmed" => t.disarmed = true,
                "blockirq" => t.block_irq = Some(dur(v)?),
                "announce" => t.announce = true,
                r if r.parse::<Reg>().is_ok() => {
                    t.regs.insert(r.into(), v.parse().map_err(e)?);
                }
                _ => return Err(e(format!("unknown key '{k}'"))),
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500us").unwrap(), Duration::from_micros(500));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5m").is_err());
        let r: Duration2 = "1ms..3ms".parse().unwrap();
        assert_eq!(
            (r.lo, r.hi),
            (Duration::from_millis(1), Duration::from_millis(3))
        );
        assert!("3ms..1ms".parse::<Duration2>().is_err());
    }

    #[test]
    fn break_syntax() {
        let t = TriggerSpec::parse_break("try_to_wake_up,vcpu=1,nth=50,stall=200ms", 0).unwrap();
        assert_eq!(t.site, "try_to_wake_up");
        assert_eq!(t.vcpus, vec![1]);
        assert_eq!(t.nth, Some(50));
        assert_eq!(
            t.stall.duration,
            Some(Duration2::fixed(Duration::from_millis(200)))
        );
        let t = TriggerSpec::parse_break(
            "ttwu_do_wakeup/store:task_struct.__state,rsi=$T,until=dead,timeout=50ms,name=w",
            3,
        )
        .unwrap();
        assert_eq!(t.name, "w");
        assert_eq!(t.regs.get("rsi"), Some(&Value::Var("T".into())));
        assert_eq!(t.stall.until.as_deref(), Some("dead"));
        let t = TriggerSpec::parse_break("f,capture=T:current,blockirq=5ms", 1).unwrap();
        assert_eq!(t.capture.get("T"), Some(&Reg::Current));
        assert_eq!(
            t.block_irq,
            Some(Duration2::fixed(Duration::from_millis(5)))
        );
        assert!(TriggerSpec::parse_break("f,bogus=1", 0)
            .unwrap_err()
            .to_string()
            .contains("unknown key 'bogus'"));
        assert!(TriggerSpec::parse_break(",nth=1", 0).is_err());
    }
}

/// `--preempt`: a profile name (`vstate::preempt::PROFILES`) or
/// `vcpus=0+1,gap=10ms,hold=1ms..6ms` (any of the keys; the others as in
/// `overcommit`).
impl std::str::FromStr for crate::vstate::PreemptConfig {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        use crate::vstate::preempt::PROFILES;
        if let Some((name, spec, _)) = PROFILES.iter().find(|p| p.0 == s) {
            let mut p: Self = spec.parse()?;
            p.name = name.to_string();
            return Ok(p);
        }
        let mut p = Self {
            name: s.to_string(),
            vcpus: vec![],
            gap: Duration::from_millis(10),
            hold: (Duration::from_millis(1), Duration::from_millis(6)),
            seed: 0,
        };
        let names: Vec<&str> = PROFILES.iter().map(|p| p.0).collect();
        let keys = format!("keys vcpus, gap, hold; or a profile: {}", names.join(", "));
        for kv in s.split(',').filter(|k| !k.trim().is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("--preempt '{s}': '{kv}' is not key=value ({keys})"))?;
            let bad = |e: String| format!("--preempt '{s}': {k}: {e}");
            match k.trim() {
                "vcpus" => {
                    p.vcpus = v
                        .split('+')
                        .map(|x| {
                            x.trim()
                                .parse::<usize>()
                                .map_err(|_| bad(format!("'{x}' is not a vCPU index")))
                        })
                        .collect::<Result<_, _>>()?
                }
                "gap" => p.gap = parse_duration(v).map_err(|e| bad(e.to_string()))?,
                "hold" => {
                    let d: Duration2 = v.parse().map_err(|e: Error| bad(e.to_string()))?;
                    p.hold = (d.lo, d.hi);
                }
                other => return Err(format!("--preempt '{s}': unknown key '{other}' ({keys})")),
            }
        }
        if p.gap.is_zero() {
            return Err(format!("--preempt '{s}': gap must be more than 0"));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod preempt_tests {
    use crate::vstate::preempt::PROFILES;
    use crate::vstate::PreemptConfig;
    use std::time::Duration;

    #[test]
    fn profiles_parse_and_specs_too() {
        for (name, ..) in PROFILES {
            let p: PreemptConfig = name.parse().unwrap();
            assert_eq!(p.name, *name);
        }
        let p: PreemptConfig = "vcpus=1+0,gap=5ms,hold=100us..1ms".parse().unwrap();
        assert_eq!(p.vcpus, [1, 0]);
        assert_eq!(p.gap, Duration::from_millis(5));
        assert_eq!(
            p.hold,
            (Duration::from_micros(100), Duration::from_millis(1))
        );
        for bad in [
            "gap=0ms",
            "hold=2ms..1ms",
            "vcpus=x",
            "often=1",
            "gap=5",
            "turbo",
        ] {
            assert!(bad.parse::<PreemptConfig>().is_err(), "{bad}");
        }
    }
}
