//! Random vCPU descheduling, as a host scheduler does it: no breakpoints,
//! the chosen vCPUs are taken out of `KVM_RUN` at random moments (a
//! Poisson process per vCPU: exponential gaps with a given mean) and held
//! for a random time from a range, then run on. The guest is not told
//! (no steal time): like an SMI, or a host that does not advertise
//! `KVM_FEATURE_STEAL_TIME`.
//!
//! A thread of the run draws the moments from the run's seed and asks the
//! vCPU (a kick, as for inspections); the vCPU holds itself at its next
//! loop turn through its handler's `on_preempt` (the stall engine records
//! it in the trace), or simply sleeps without one.
use super::vcpu::RunShared;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Named profiles: (name, spec, what it models).
pub const PROFILES: &[(&str, &str, &str)] = &[
    (
        "light",
        "gap=100ms,hold=500us..2ms",
        "an idle-ish host: every vCPU loses its pCPU about ten times a second for up to 2 ms",
    ),
    (
        "overcommit",
        "gap=10ms,hold=1ms..6ms",
        "a 2x overcommitted host: every vCPU is descheduled about every 10 ms for a CFS slice or two",
    ),
    (
        "smi-storm",
        "vcpus=0,gap=1ms,hold=50us..200us",
        "SMIs on vCPU 0: short, frequent stops of one CPU",
    ),
];

/// Parsed from a profile name or a spec in `stall::spec` (with the other
/// duration syntax).
#[derive(Debug, Clone, PartialEq)]
pub struct PreemptConfig {
    /// Its name when it is a profile, else the spec as given.
    pub name: String,
    /// vCPUs to preempt; empty: all of them.
    pub vcpus: Vec<usize>,
    /// Mean gap between two preemptions of one vCPU.
    pub gap: Duration,
    /// Hold time, uniform in this range.
    pub hold: (Duration, Duration),
    /// Seeds the draws (the run's seed, so runs differ and repeat).
    pub seed: u64,
}

/// SplitMix64: the seeded generator of the VMM's random draws.
pub fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Uniform in [0, 1).
pub fn unit(rng: &mut u64) -> f64 {
    (splitmix(rng) >> 11) as f64 / (1u64 << 53) as f64
}

impl PreemptConfig {
    /// The vCPUs it preempts in a guest of `n`.
    pub fn targets(&self, n: usize) -> Vec<usize> {
        if self.vcpus.is_empty() {
            (0..n).collect()
        } else {
            self.vcpus.iter().copied().filter(|v| *v < n).collect()
        }
    }

    fn gap(&self, rng: &mut u64) -> Duration {
        // Exponential: -ln(U) * mean.
        let u = unit(rng).max(1e-12);
        self.gap.mul_f64(-u.ln())
    }

    fn hold(&self, rng: &mut u64) -> Duration {
        let (lo, hi) = self.hold;
        lo + (hi - lo).mul_f64(unit(rng))
    }
}

/// Runs until the VM stops: asks each target vCPU to hold at its drawn
/// moments. The first moment of each vCPU is drawn from the run's start.
pub fn run(cfg: PreemptConfig, shared: Arc<RunShared>, vcpus: usize) {
    if let Err(e) = crate::host::seccomp::install(crate::host::seccomp::Role::Preempt) {
        shared.finish(crate::vstate::End::HostError(e.to_string()));
        return;
    }
    let mut rng = cfg.seed ^ 0x9ee3_97e5_4a1c_0001;
    let start = Instant::now();
    let mut next: Vec<(usize, Instant)> = cfg
        .targets(vcpus)
        .into_iter()
        .map(|v| (v, start + cfg.gap(&mut rng)))
        .collect();
    if next.is_empty() {
        return;
    }
    while !shared.stopping() {
        let (i, at) = next
            .iter()
            .enumerate()
            .min_by_key(|(_, (_, t))| *t)
            .map(|(i, (_, t))| (i, *t))
            .expect("targets");
        let now = Instant::now();
        if at > now {
            std::thread::sleep((at - now).min(Duration::from_millis(20)));
            continue;
        }
        let v = next[i].0;
        shared.request_preempt(v, cfg.hold(&mut rng));
        next[i].1 = Instant::now() + cfg.gap(&mut rng);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_have_the_asked_mean_and_range() {
        let p = PreemptConfig {
            name: String::new(),
            vcpus: vec![],
            gap: Duration::from_millis(10),
            hold: (Duration::from_millis(1), Duration::from_millis(3)),
            seed: 0,
        };
        let mut rng = 7;
        let n = 20_000;
        let mean = (0..n).map(|_| p.gap(&mut rng).as_secs_f64()).sum::<f64>() / n as f64;
        assert!((mean - 0.010).abs() < 0.0005, "{mean}");
        for _ in 0..1000 {
            let h = p.hold(&mut rng);
            assert!(h >= Duration::from_millis(1) && h <= Duration::from_millis(3));
        }
    }
}
