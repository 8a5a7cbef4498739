//! KVM state: the VM (memory, in-kernel irqchip and PIT) and the vCPU run
//! loop. The loop knows nothing of scenarios: debug exits go to a
//! [`vcpu::DebugHandler`] (the stall engine implements it).
pub mod emulate;
pub mod exitbench;
pub mod gdb;
pub mod preempt;
pub mod snapshot;
pub mod vcpu;
pub mod vm;

pub use gdb::{GdbConfig, GdbCtl};
pub use preempt::PreemptConfig;
pub use vcpu::{current_vcpu, DebugHandler, End, Resume, RunShared, VcpuCtx};
pub use vm::{Vm, VmConfig};
