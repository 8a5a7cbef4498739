//! preemptor: a KVM VMM that boots a small Linux guest, stalls chosen vCPUs
//! at guest-kernel sites, and classifies the guest console.
//!
//! The modules follow the pipeline: boot ([`vstate`], [`arch`], [`devices`],
//! [`host`]) → breakpoints and symbols ([`debug`]) → stall engine
//! ([`stall`]) → report classifier ([`report`]) → scenarios → CLI.

pub mod report;
