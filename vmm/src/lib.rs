//! preemptor: a KVM VMM that boots a small Linux guest, stalls chosen vCPUs
//! at guest-kernel sites, and classifies the guest console.
//!
//! The modules follow the pipeline: boot ([`boot`], [`vstate`], [`arch`],
//! [`devices`], [`host`]) → breakpoints and symbols ([`debug`]) → stall
//! engine ([`stall`]) → report classifier ([`report`]) → CLI ([`cli`]).
pub mod arch;
pub mod bisect;
pub mod boot;
pub mod cli;
pub mod debug;
pub mod devices;
pub mod host;
pub mod report;
pub mod scenario;
pub mod stall;
pub mod view;
pub mod vstate;
