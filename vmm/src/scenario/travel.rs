//! Findings that travel: a scenario's trigger sites named so that they
//! survive rebuilds, and checked on every kernel variant the scenario
//! declares.
//!
//! `explore` finds its pairs as `func+off` on one build. Before a finding
//! is written out, [`portable`] renames each site with
//! `Symbols::portable_site` (entry, `FUNC/store:STRUCT.MEMBER#N`,
//! `FUNC/call:SYM`, `/next`, `file:line`; `func+off` only where nothing
//! else names the instruction). [`check_variants`] then resolves every
//! site on every variant: it must give exactly one address, in the same
//! innermost function (the inlined function's own, if any) as on the
//! explored build. A site that does not is reported with the reason and
//! the stall points nearby, as `symbols --stall-points` prints them.

use crate::debug::symbols::{Class, Symbols};
use crate::stall::spec::TriggerSpec;

use super::{runner, Scenario};

/// How one trigger's site was named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    pub trigger: String,
    /// The site as explored (`func+off`).
    pub raw: String,
    /// What the scenario now says.
    pub site: String,
    /// False when only `func+off` names it.
    pub portable: bool,
    /// The innermost function of the instruction (inlined or not).
    pub function: Option<String>,
    pub location: Option<String>,
}

/// Renames each trigger's site (addresses on `syms`' build, in trigger
/// order) to its portable name.
pub fn portable(syms: &Symbols, triggers: &mut [TriggerSpec], addrs: &[u64]) -> Vec<Naming> {
    triggers
        .iter_mut()
        .zip(addrs)
        .map(|(t, &addr)| {
            let raw = t.site.clone();
            let (site, portable) = match syms.portable_site(addr) {
                Ok(p) => (p.site, p.portable),
                Err(_) => (raw.clone(), false),
            };
            t.site = site.clone();
            Naming {
                trigger: t.name.clone(),
                raw,
                site,
                portable,
                function: innermost(syms, addr),
                location: syms.frames(addr).into_iter().find_map(|(_, l)| l),
            }
        })
        .collect()
}

fn innermost(syms: &Symbols, addr: u64) -> Option<String> {
    syms.frames(addr)
        .into_iter()
        .find_map(|(f, _)| f)
        .or_else(|| syms.symbolize(addr).map(|(f, _)| f))
}

/// One site on one variant.
#[derive(Debug, Clone)]
pub struct SiteCheck {
    pub kernel: String,
    pub trigger: String,
    pub site: String,
    pub outcome: Result<Resolved, String>,
}

#[derive(Debug, Clone)]
pub struct Resolved {
    /// `func+off` on that build.
    pub at: String,
    pub location: Option<String>,
    pub function: Option<String>,
}

/// Every naming's site on every variant of `scn` (kernels built if
/// missing). A variant whose kernel cannot be had is one failed check per
/// site, with the reason.
pub fn check_variants(scn: &Scenario, names: &[Naming]) -> Vec<SiteCheck> {
    let mut out = Vec::new();
    for (kernel, _) in scn.variants() {
        let syms = runner::resolve_kernel(scn, &kernel, true)
            .map_err(|e| e.to_string())
            .and_then(|(k, _)| {
                k.vmlinux
                    .ok_or_else(|| format!("no vmlinux for {}", k.path.display()))
            })
            .and_then(|v| Symbols::load(&v).map_err(|e| e.to_string()));
        for n in names {
            let outcome = match &syms {
                Ok(s) => check_one(s, n),
                Err(e) => Err(e.clone()),
            };
            out.push(SiteCheck {
                kernel: kernel.clone(),
                trigger: n.trigger.clone(),
                site: n.site.clone(),
                outcome,
            });
        }
    }
    out
}

fn check_one(syms: &Symbols, n: &Naming) -> Result<Resolved, String> {
    let sites = syms.resolve(&n.site).map_err(|e| {
        format!(
            "{e}{}",
            nearby(syms, n)
                .map(|c| format!("; stall points there: {c}"))
                .unwrap_or_default()
        )
    })?;
    let [s] = sites.as_slice() else {
        return Err(format!(
            "resolves to {} addresses: {}",
            sites.len(),
            sites
                .iter()
                .map(|s| format!("{}+{:#x}", s.function, s.offset))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let function = innermost(syms, s.addr);
    let r = Resolved {
        at: format!("{}+{:#x}", s.function, s.offset),
        location: s.location.clone(),
        function,
    };
    if r.function != n.function {
        return Err(format!(
            "resolves to {} in {}, not in {} as on the explored kernel",
            r.at,
            r.function.as_deref().unwrap_or("?"),
            n.function.as_deref().unwrap_or("?")
        ));
    }
    Ok(r)
}

/// The stall points of the site's function on this build with the class
/// the explored instruction had (what `symbols --stall-points` prints),
/// at most eight.
fn nearby(syms: &Symbols, n: &Naming) -> Option<String> {
    let func = n.raw.split('+').next()?;
    let class = class_of_site(&n.site);
    let wanted = |c: Class| class.is_none_or(|w| c == w || c == Class::Atomic);
    // The function itself, or on this build its inlined copies.
    let pts: Vec<String> = match syms.function(func) {
        Ok(f) => syms
            .stall_points(&f)
            .ok()?
            .into_iter()
            .filter(|p| wanted(p.class))
            .take(8)
            .map(|p| format!("{} {}", p.site, p.location.as_deref().unwrap_or("?")))
            .collect(),
        Err(_) => syms
            .inlined(func)
            .ok()?
            .iter()
            .flat_map(|i| {
                syms.stall_points(&i.caller)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|p| i.contains(p.addr) && wanted(p.class))
                    .map(|p| {
                        format!(
                            "{} {} (inlined into {})",
                            p.site,
                            p.location.as_deref().unwrap_or("?"),
                            i.caller.name
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .take(8)
            .collect(),
    };
    (!pts.is_empty()).then(|| pts.join(", "))
}

fn class_of_site(site: &str) -> Option<Class> {
    if site.ends_with("/next") {
        None
    } else if site.contains("/store:") {
        Some(Class::Store)
    } else if site.contains("/load:") {
        Some(Class::Load)
    } else if site.contains("/call:") {
        Some(Class::Call)
    } else {
        None
    }
}
