//! The site-string grammar, kept free of any kernel image so that scenario
//! files can be checked (and this parser tested) without a vmlinux.
//!
//! ```text
//! site    := func [ "+" offset ]                    function entry / offset
//!          | path ":" line                          DWARF statement(s) of a line
//!          | func "/" pattern [ "#" n ] [ "/next" ]  instruction pattern
//! pattern := "call:" symbol
//!          | "store:" struct "." member { "." member }
//!          | "load:"  struct "." member { "." member }
//! offset  := "0x" hex | decimal
//! ```

use std::fmt;

/// A parsed site string; see the module documentation for the grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteSpec {
    /// `func` or `func+off`.
    Function { name: String, offset: Option<u64> },
    /// `path/file.c:LINE`; `file` may be any trailing part of the path.
    Line { file: String, line: u64 },
    /// `func/pattern[#N][/next]`.
    Pattern {
        function: String,
        pattern: Pattern,
        /// 1-based choice among several matches; `None` demands exactly one.
        nth: Option<usize>,
        /// Resolve to the instruction after the match rather than the match.
        next: bool,
    },
}

/// What an instruction must do to match a pattern site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// A direct `call` whose target is `target` or `target.<suffix>`.
    Call { target: String },
    /// Writes memory at `[reg + offsetof(ty, member)]`.
    Store { ty: String, member: String },
    /// Reads memory at `[reg + offsetof(ty, member)]`.
    Load { ty: String, member: String },
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Call { target } => write!(f, "call:{target}"),
            Pattern::Store { ty, member } => write!(f, "store:{ty}.{member}"),
            Pattern::Load { ty, member } => write!(f, "load:{ty}.{member}"),
        }
    }
}

impl fmt::Display for SiteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SiteSpec::Function { name, offset: None } => write!(f, "{name}"),
            SiteSpec::Function {
                name,
                offset: Some(off),
            } => write!(f, "{name}+{off:#x}"),
            SiteSpec::Line { file, line } => write!(f, "{file}:{line}"),
            SiteSpec::Pattern {
                function,
                pattern,
                nth,
                next,
            } => {
                write!(f, "{function}/{pattern}")?;
                if let Some(n) = nth {
                    write!(f, "#{n}")?;
                }
                if *next {
                    write!(f, "/next")?;
                }
                Ok(())
            }
        }
    }
}

/// Characters of linker symbols as the kernel spells them: C identifiers
/// plus the `.` of compiler clones (`foo.constprop.0`, `foo.isra.0`).
fn is_symbol(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// A function as a site names it: `func`, or `func@caller` for the copies
/// of an inlined `func` inside `caller`.
fn is_function_ref(s: &str) -> bool {
    match s.split_once('@') {
        Some((f, caller)) => is_symbol(f) && is_symbol(caller),
        None => is_symbol(s),
    }
}

fn is_ident(s: &str) -> bool {
    is_symbol(s) && !s.contains('.')
}

/// `0x`-prefixed hex or decimal.
pub(crate) fn parse_number(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(hex, 16).ok()
    } else if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

impl SiteSpec {
    /// Parses a site string; the error is a reason, without the site itself.
    pub fn parse(site: &str) -> Result<SiteSpec, String> {
        let s = site.trim();
        if s.is_empty() {
            return Err("empty site".into());
        }
        // A line site is the only form ending in `:DIGITS` (a pattern ends
        // in a symbol, a member, `#N` or `/next`), so test it first: its
        // path may contain `/` too.
        if let Some((file, line)) = s.rsplit_once(':') {
            if !line.is_empty() && line.chars().all(|c| c.is_ascii_digit()) {
                if file.is_empty() {
                    return Err("missing file name before `:LINE`".into());
                }
                let line: u64 = line
                    .parse()
                    .map_err(|_| format!("line `{line}` is too large"))?;
                if line == 0 {
                    return Err("line numbers start at 1".into());
                }
                return Ok(SiteSpec::Line {
                    file: file.to_string(),
                    line,
                });
            }
        }
        if let Some((function, rest)) = s.split_once('/') {
            return Self::parse_pattern(function, rest);
        }
        let (name, offset) = match s.split_once('+') {
            Some((name, off)) => {
                let off = parse_number(off.trim()).ok_or_else(|| {
                    format!("bad offset `{off}` (expected 0x-prefixed hex or decimal)")
                })?;
                (name.trim(), Some(off))
            }
            None => (s, None),
        };
        if !is_function_ref(name) {
            return Err(format!(
                "`{name}` is not a function name (expected FUNC, FUNC+OFF, FILE:LINE or FUNC/PATTERN)"
            ));
        }
        Ok(SiteSpec::Function {
            name: name.to_string(),
            offset,
        })
    }

    fn parse_pattern(function: &str, rest: &str) -> Result<SiteSpec, String> {
        if !is_function_ref(function) {
            return Err(format!("`{function}` is not a function name"));
        }
        let (rest, next) = match rest.strip_suffix("/next") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        if let Some((_, extra)) = rest.split_once('/') {
            return Err(format!(
                "unexpected `/{extra}` (only `/next` may follow a pattern)"
            ));
        }
        let (rest, nth) = match rest.rsplit_once('#') {
            Some((r, n)) => match n.parse::<usize>() {
                Ok(n) if n >= 1 => (r, Some(n)),
                _ => return Err(format!("bad match number `#{n}` (expected #1, #2, ...)")),
            },
            None => (rest, None),
        };
        let Some((kind, arg)) = rest.split_once(':') else {
            return Err(format!(
                "`{rest}` is not a pattern (expected call:SYM, store:STRUCT.MEMBER or load:STRUCT.MEMBER)"
            ));
        };
        let pattern = match kind {
            "call" => {
                if !is_symbol(arg) {
                    return Err(format!("`{arg}` is not a symbol name"));
                }
                Pattern::Call {
                    target: arg.to_string(),
                }
            }
            "store" | "load" => {
                let (ty, member) = arg
                    .split_once('.')
                    .ok_or_else(|| format!("`{arg}` is not STRUCT.MEMBER"))?;
                if !is_ident(ty) {
                    return Err(format!("`{ty}` is not a struct name"));
                }
                if !member.split('.').all(is_ident) {
                    return Err(format!("`{member}` is not a member name"));
                }
                let (ty, member) = (ty.to_string(), member.to_string());
                if kind == "store" {
                    Pattern::Store { ty, member }
                } else {
                    Pattern::Load { ty, member }
                }
            }
            other => {
                return Err(format!(
                    "unknown pattern kind `{other}` (expected call, store or load)"
                ))
            }
        };
        Ok(SiteSpec::Pattern {
            function: function.to_string(),
            pattern,
            nth,
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn func(name: &str, offset: Option<u64>) -> SiteSpec {
        SiteSpec::Function {
            name: name.into(),
            offset,
        }
    }

    #[test]
    fn functions_and_offsets() {
        assert_eq!(
            SiteSpec::parse("try_to_wake_up"),
            Ok(func("try_to_wake_up", None))
        );
        assert_eq!(
            SiteSpec::parse("ttwu_do_wakeup.constprop.0+0x1f"),
            Ok(func("ttwu_do_wakeup.constprop.0", Some(0x1f)))
        );
        assert_eq!(SiteSpec::parse(" f+90 "), Ok(func("f", Some(90))));
        assert_eq!(SiteSpec::parse("f+0X1F"), Ok(func("f", Some(0x1f))));
        assert!(SiteSpec::parse("f+").is_err());
        assert!(SiteSpec::parse("f+0x").is_err());
        assert!(SiteSpec::parse("f+12z").is_err());
        assert!(SiteSpec::parse("f-4").is_err());
        assert!(SiteSpec::parse("+4").is_err());
        assert!(SiteSpec::parse("9f").is_err());
        assert!(SiteSpec::parse("").is_err());
    }

    #[test]
    fn lines() {
        assert_eq!(
            SiteSpec::parse("kernel/sched/core.c:3659"),
            Ok(SiteSpec::Line {
                file: "kernel/sched/core.c".into(),
                line: 3659
            })
        );
        assert_eq!(
            SiteSpec::parse("core.c:1"),
            Ok(SiteSpec::Line {
                file: "core.c".into(),
                line: 1
            })
        );
        assert!(SiteSpec::parse("core.c:0").is_err());
        assert!(SiteSpec::parse(":12").is_err());
        assert!(SiteSpec::parse("core.c:99999999999999999999999").is_err());
    }

    #[test]
    fn patterns() {
        assert_eq!(
            SiteSpec::parse("ttwu_do_wakeup/store:task_struct.__state"),
            Ok(SiteSpec::Pattern {
                function: "ttwu_do_wakeup".into(),
                pattern: Pattern::Store {
                    ty: "task_struct".into(),
                    member: "__state".into()
                },
                nth: None,
                next: false,
            })
        );
        assert_eq!(
            SiteSpec::parse("rwsem_down_read_slowpath/store:task_struct.__state#1/next"),
            Ok(SiteSpec::Pattern {
                function: "rwsem_down_read_slowpath".into(),
                pattern: Pattern::Store {
                    ty: "task_struct".into(),
                    member: "__state".into()
                },
                nth: Some(1),
                next: true,
            })
        );
        assert_eq!(
            SiteSpec::parse("f/load:task_struct.se.on_rq#2"),
            Ok(SiteSpec::Pattern {
                function: "f".into(),
                pattern: Pattern::Load {
                    ty: "task_struct".into(),
                    member: "se.on_rq".into()
                },
                nth: Some(2),
                next: false,
            })
        );
        assert_eq!(
            SiteSpec::parse("do_task_dead/call:__schedule/next"),
            Ok(SiteSpec::Pattern {
                function: "do_task_dead".into(),
                pattern: Pattern::Call {
                    target: "__schedule".into()
                },
                nth: None,
                next: true,
            })
        );
        for bad in [
            "f/jmp:g",
            "f/call:",
            "f/call:9x",
            "f/store:task_struct",
            "f/store:.x",
            "f/store:task_struct.",
            "f/store:a.b#0",
            "f/store:a.b#x",
            "f/store:a.b/prev",
            "f/call:g/next/next",
            "f/",
            "/call:g",
            "f+1/call:g",
        ] {
            assert!(SiteSpec::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "f",
            "f+0x1f",
            "kernel/sched/core.c:3659",
            "f/call:g",
            "f/store:task_struct.__state#2/next",
            "f/load:a.b.c",
        ] {
            let spec = SiteSpec::parse(s).unwrap();
            assert_eq!(SiteSpec::parse(&spec.to_string()), Ok(spec));
        }
    }
}
