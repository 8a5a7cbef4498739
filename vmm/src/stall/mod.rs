//! The stall engine: triggers (a guest-kernel site plus conditions) and
//! actions (stall this vCPU for a time or until another trigger fires, arm
//! and disarm triggers, capture values). It implements the vCPU loop's
//! [`DebugHandler`](crate::vstate::DebugHandler): a stall is the handler
//! not returning, so the vCPU stays out of `KVM_RUN` while the others run —
//! what a hypervisor preempting it, or an SMI, does.
pub mod chrome;
pub mod engine;
pub mod spec;
pub mod trace;

pub use engine::{Engine, EngineConfig, Freeze};
pub use spec::{Duration2, Reg, StallSpec, TriggerSpec};
pub use trace::{Event, EventKind, Trace};
