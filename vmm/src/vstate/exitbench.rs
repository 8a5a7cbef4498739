//! Exit round-trip costs on this host, measured on a two-instruction guest
//! (real mode, no kernel): a bare port-I/O exit against a breakpoint hit
//! resumed the way the vCPU loop resumes it (breakpoints off, single-step,
//! breakpoints on: two exits), in one VM, alternating batches. The same
//! guest counts the hardware breakpoint slots that work (`doctor`).
use super::vcpu::guest_debug;
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const CODE: u64 = 0x1000;
// 0x1000: out 0x80, al ; 0x1002: jmp 0x1000   (port-I/O loop)
// 0x1004: nop          ; 0x1005: jmp 0x1004   (breakpoint loop)
// 0x1008: nop x4       ; 0x100c: jmp 0x1008   (one site per slot)
const PROGRAM: [u8; 14] = [
    0xe6, 0x80, 0xeb, 0xfc, 0x90, 0xeb, 0xfd, 0x90, 0x90, 0x90, 0x90, 0x90, 0xeb, 0xfa,
];
const SLOTS_LOOP: u64 = CODE + 8;

pub struct ExitCosts {
    pub io_exit: Duration,
    pub breakpoint: Duration,
    pub samples: usize,
}

/// The median of the samples (the upper one of an even count); NaN-free
/// input assumed. Shared by every benchmark.
pub fn median<T: PartialOrd + Copy + Default>(v: &mut [T]) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn set_rip(vcpu: &VcpuFd, rip: u64) -> Result<(), String> {
    let mut r = vcpu.get_regs().map_err(|e| e.to_string())?;
    r.rip = rip;
    r.rflags = 2;
    vcpu.set_regs(&r).map_err(|e| e.to_string())
}

/// The program loaded in a VM of one real-mode vCPU. The memory must
/// outlive the VM: both are returned.
fn tiny_vm() -> Result<(kvm_ioctls::VmFd, GuestMemoryMmap, VcpuFd), String> {
    let kvm = Kvm::new().map_err(|e| format!("/dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| e.to_string())?;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)])
        .map_err(|e| e.to_string())?;
    let host = mem
        .get_host_address(GuestAddress(0))
        .map_err(|e| e.to_string())? as u64;
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: 0x10_0000,
        userspace_addr: host,
        flags: 0,
    };
    // SAFETY: the caller keeps `mem` alive as long as the VM (returned together).
    unsafe { vm.set_user_memory_region(region) }.map_err(|e| e.to_string())?;
    mem.write_slice(&PROGRAM, GuestAddress(CODE))
        .map_err(|e| e.to_string())?;
    let vcpu = vm.create_vcpu(0).map_err(|e| e.to_string())?;
    let mut sregs = vcpu.get_sregs().map_err(|e| e.to_string())?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).map_err(|e| e.to_string())?;
    Ok((vm, mem, vcpu))
}

/// How many of the 4 debug-register slots stop the guest: one breakpoint
/// per slot on four consecutive `nop`s, each hit stepped over as the vCPU
/// loop does, until every slot has hit or 32 exits have passed.
pub fn breakpoint_slots() -> Result<usize, String> {
    let (_vm, _mem, mut vcpu) = tiny_vm()?;
    let bp = [0, 1, 2, 3].map(|i| Some(SLOTS_LOOP + i));
    set_rip(&vcpu, SLOTS_LOOP)?;
    let mut hit = [false; 4];
    for _ in 0..32 {
        vcpu.set_guest_debug(&guest_debug(&bp, false, false))
            .map_err(|e| e.to_string())?;
        match vcpu.run() {
            Ok(VcpuExit::Debug(d)) => {
                if let Some(i) = bp.iter().position(|b| *b == Some(d.pc)) {
                    hit[i] = true;
                }
            }
            Ok(e) => return Err(format!("unexpected exit {e:?} waiting for a breakpoint")),
            Err(e) => return Err(e.to_string()),
        }
        if hit.iter().all(|h| *h) {
            break;
        }
        vcpu.set_guest_debug(&guest_debug(&bp, true, false))
            .map_err(|e| e.to_string())?;
        match vcpu.run() {
            Ok(VcpuExit::Debug(_)) => {}
            Ok(e) => return Err(format!("unexpected exit {e:?} while stepping")),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(hit.iter().filter(|h| **h).count())
}

pub fn measure(samples: usize) -> Result<ExitCosts, String> {
    let (_vm, _mem, mut vcpu) = tiny_vm()?;
    let bp = [Some(CODE + 4), None, None, None];
    let (mut io, mut brk) = (Vec::new(), Vec::new());
    let batch = 100;
    while io.len() < samples {
        set_rip(&vcpu, CODE)?;
        vcpu.set_guest_debug(&guest_debug(&[None; 4], false, false))
            .map_err(|e| e.to_string())?;
        for _ in 0..batch {
            let t = Instant::now();
            match vcpu.run() {
                Ok(VcpuExit::IoOut(0x80, _)) => io.push(t.elapsed()),
                Ok(e) => return Err(format!("unexpected exit {e:?} in the I/O loop")),
                Err(e) => return Err(e.to_string()),
            }
        }
        set_rip(&vcpu, CODE + 4)?;
        vcpu.set_guest_debug(&guest_debug(&bp, false, false))
            .map_err(|e| e.to_string())?;
        for _ in 0..batch {
            let t = Instant::now();
            // Hit, then the loop's resume: step over with breakpoints off,
            // then re-arm (the re-arm takes effect at the next KVM_RUN).
            match vcpu.run() {
                Ok(VcpuExit::Debug(_)) => {}
                Ok(e) => return Err(format!("unexpected exit {e:?} waiting for the breakpoint")),
                Err(e) => return Err(e.to_string()),
            }
            vcpu.set_guest_debug(&guest_debug(&bp, true, true))
                .map_err(|e| e.to_string())?;
            match vcpu.run() {
                Ok(VcpuExit::Debug(_)) => {}
                Ok(e) => return Err(format!("unexpected exit {e:?} while stepping")),
                Err(e) => return Err(e.to_string()),
            }
            vcpu.set_guest_debug(&guest_debug(&bp, false, false))
                .map_err(|e| e.to_string())?;
            brk.push(t.elapsed());
        }
    }
    Ok(ExitCosts {
        io_exit: median(&mut io),
        breakpoint: median(&mut brk),
        samples: samples.max(batch),
    })
}
