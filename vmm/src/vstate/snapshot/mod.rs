//! Boot once, restore per run. A snapshot is the whole machine at the guest
//! workload's snapshot point (its `ready()`: a write to port 0x501): guest
//! RAM, each vCPU's registers, special registers, FPU/XSAVE/XCR0, the MSRs
//! a kernel depends on, LAPIC, MP state, pending events, debug registers;
//! the in-kernel PIC/IOAPIC, PIT and clock; the console UART.
//! Each run gets a fresh VM (same vCPU count and memory size), so no KVM
//! state (shadow page tables, LAPIC internals) leaks from one run to the
//! next; guest memory is kept and only the pages the previous run dirtied
//! (KVM_GET_DIRTY_LOG) are copied back, see [`Restorer`].
use kvm_bindings::{
    kvm_clock_data, kvm_debugregs, kvm_fpu, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_msr_entry, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, Msrs,
};
pub mod file;

use super::vm::{self, Vm, VmConfig};
use kvm_ioctls::{VcpuFd, VmFd};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vm_superio::serial::SerialState;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("snapshot: {what}: {err}")]
    Kvm {
        what: &'static str,
        err: kvm_ioctls::Error,
    },
    #[error("snapshot: guest memory copy failed")]
    Memory,
    #[error("snapshot of {0} vCPUs / {1} MiB cannot restore into {2} vCPUs / {3} MiB")]
    Shape(usize, u64, usize, u64),
    #[error(transparent)]
    Vm(#[from] vm::Error),
    #[error(transparent)]
    File(#[from] file::Error),
}

const PAGE: usize = 4096;

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |err| Error::Kvm { what, err }
}

/// MSRs a running 6.1 guest depends on and KVM lets us move: SYSENTER,
/// SYSCALL targets, kernel GS base, TSC (first: kvm-clock is built on it),
/// TSC_AUX, MISC_ENABLE, PAT, TSC deadline, MTRR default, kvm-clock.
/// Not every MSR KVM lists can be set on every host (kvm_pvm refuses some).
const MSRS: [u32; 16] = [
    0x10,
    0x174,
    0x175,
    0x176,
    0xc000_0081,
    0xc000_0082,
    0xc000_0083,
    0xc000_0084,
    0xc000_0102,
    0xc000_0103,
    0x1a0,
    0x277,
    0x6e0,
    0x2ff,
    0x4b56_4d00,
    0x4b56_4d01,
];

const MSR_TSC_DEADLINE: u32 = 0x6e0;

#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    regs: kvm_regs,
    sregs: kvm_sregs,
    #[serde(with = "file::fpu")]
    fpu: kvm_fpu,
    /// XSAVE state and XCR0, where the host has them: KVM_GET_FPU lacks
    /// the AVX upper halves, and a fresh vCPU's XCR0 (x87 only) would make
    /// the restored guest's AVX instructions fault. On kvm_pvm the guest
    /// runs with `noxsave`.
    xsave: Option<kvm_xsave>,
    xcrs: Option<kvm_xcrs>,
    msrs: Vec<kvm_msr_entry>,
    lapic: kvm_lapic_state,
    mp_state: kvm_mp_state,
    events: kvm_vcpu_events,
    debugregs: kvm_debugregs,
}

pub struct Snapshot {
    pub memory: Vec<u8>,
    pub mem_mib: u64,
    machine: Machine,
    pub serial: SerialState,
}

/// Everything but memory and the UART.
#[derive(Serialize, Deserialize)]
struct Machine {
    vcpus: Vec<VcpuState>,
    irqchips: Vec<kvm_irqchip>,
    pit: kvm_pit_state2,
    clock: kvm_clock_data,
}

impl Snapshot {
    /// Save the machine. Every vCPU must be out of KVM_RUN; each is first
    /// entered once with `immediate_exit` so KVM completes a pending exit
    /// (the init's port write) and the saved RIP is past it.
    pub fn capture(
        vm: &VmFd,
        mem: &GuestMemoryMmap,
        mem_mib: u64,
        vcpus: &mut [VcpuFd],
        serial: SerialState,
    ) -> Result<Self, Error> {
        let mut states = Vec::new();
        for v in vcpus.iter_mut() {
            v.set_kvm_immediate_exit(1);
            let _ = v.run();
            v.set_kvm_immediate_exit(0);
            let mut msrs = Msrs::new(MSRS.len()).expect("fits");
            for (e, idx) in msrs.as_mut_slice().iter_mut().zip(MSRS) {
                e.index = idx;
            }
            let n = v.get_msrs(&mut msrs).map_err(kvm("get MSRs"))?;
            states.push(VcpuState {
                regs: v.get_regs().map_err(kvm("get regs"))?,
                sregs: v.get_sregs().map_err(kvm("get sregs"))?,
                fpu: v.get_fpu().map_err(kvm("get FPU"))?,
                xsave: v.get_xsave().ok(),
                xcrs: v.get_xcrs().ok(),
                msrs: msrs.as_slice()[..n].to_vec(),
                lapic: v.get_lapic().map_err(kvm("get LAPIC"))?,
                mp_state: v.get_mp_state().map_err(kvm("get MP state"))?,
                events: v.get_vcpu_events().map_err(kvm("get vCPU events"))?,
                debugregs: v.get_debug_regs().map_err(kvm("get debug regs"))?,
            });
        }
        let mut irqchips = Vec::new();
        for chip_id in 0..3 {
            let mut c = kvm_irqchip {
                chip_id,
                ..Default::default()
            };
            vm.get_irqchip(&mut c).map_err(kvm("get irqchip"))?;
            irqchips.push(c);
        }
        let mut memory = vec![0u8; (mem_mib << 20) as usize];
        mem.read_slice(&mut memory, GuestAddress(0))
            .map_err(|_| Error::Memory)?;
        Ok(Self {
            memory,
            mem_mib,
            machine: Machine {
                vcpus: states,
                irqchips,
                pit: vm.get_pit2().map_err(kvm("get PIT"))?,
                clock: vm.get_clock().map_err(kvm("get clock"))?,
            },
            serial,
        })
    }

    pub fn vcpus(&self) -> usize {
        self.machine.vcpus.len()
    }

    /// Copy the snapshot's memory back: all of it, or only the pages set in
    /// `dirty` (a KVM dirty bitmap). Returns the number of pages copied.
    pub fn restore_memory(
        &self,
        mem: &GuestMemoryMmap,
        dirty: Option<&[u64]>,
    ) -> Result<usize, Error> {
        let Some(bitmap) = dirty else {
            mem.write_slice(&self.memory, GuestAddress(0))
                .map_err(|_| Error::Memory)?;
            return Ok(self.memory.len() / PAGE);
        };
        let mut pages = 0;
        for (w, &bits) in bitmap.iter().enumerate() {
            let mut b = bits;
            while b != 0 {
                let i = w * 64 + b.trailing_zeros() as usize;
                b &= b - 1;
                let off = i * PAGE;
                let src = self.memory.get(off..off + PAGE).ok_or(Error::Memory)?;
                mem.write_slice(src, GuestAddress(off as u64))
                    .map_err(|_| Error::Memory)?;
                pages += 1;
            }
        }
        Ok(pages)
    }

    /// Everything but memory: irqchip, PIT, clock, each vCPU (the VM has
    /// the snapshot's shape, see [`Restorer::vm`]).
    fn restore_state(&self, vm: &VmFd, vcpus: &[VcpuFd]) -> Result<(), Error> {
        for c in &self.machine.irqchips {
            vm.set_irqchip(c).map_err(kvm("set irqchip"))?;
        }
        vm.set_pit2(&self.machine.pit).map_err(kvm("set PIT"))?;
        let clock = kvm_clock_data {
            clock: self.machine.clock.clock,
            ..Default::default()
        };
        vm.set_clock(&clock).map_err(kvm("set clock"))?;
        // Registers, FPU, special registers, MSRs (TSC first), MP state,
        // LAPIC, then the TSC deadline again: KVM ignores a deadline written
        // while the LAPIC timer is not in TSC-deadline mode, and a lost
        // deadline leaves that CPU without its timer (measured: a restored
        // run's CPU 0 crawled, 240 s instead of 6 s).
        for (v, s) in vcpus.iter().zip(&self.machine.vcpus) {
            v.set_regs(&s.regs).map_err(kvm("set regs"))?;
            v.set_fpu(&s.fpu).map_err(kvm("set FPU"))?;
            if let Some(x) = &s.xsave {
                // SAFETY: a whole kvm_xsave, as KVM_GET_XSAVE filled it.
                unsafe { v.set_xsave(x) }.map_err(kvm("set XSAVE"))?;
            }
            if let Some(x) = &s.xcrs {
                v.set_xcrs(x).map_err(kvm("set XCRs"))?;
            }
            v.set_sregs(&s.sregs).map_err(kvm("set sregs"))?;
            let set_msr = |e: &kvm_msr_entry| {
                let one = Msrs::from_entries(std::slice::from_ref(e)).expect("fits");
                if v.set_msrs(&one).map(|n| n != 1).unwrap_or(true) {
                    tracing::debug!(msr = e.index, "MSR not restorable on this host");
                }
            };
            s.msrs.iter().for_each(set_msr);
            v.set_mp_state(s.mp_state).map_err(kvm("set MP state"))?;
            v.set_lapic(&s.lapic).map_err(kvm("set LAPIC"))?;
            s.msrs
                .iter()
                .filter(|e| e.index == MSR_TSC_DEADLINE)
                .for_each(set_msr);
            v.set_vcpu_events(&s.events)
                .map_err(kvm("set vCPU events"))?;
            v.set_debug_regs(&s.debugregs)
                .map_err(kvm("set debug regs"))?;
        }
        Ok(())
    }
}

/// How one restore went.
#[derive(Debug, Clone, Copy)]
pub struct RestoreStats {
    /// 4 KiB pages copied back from the snapshot.
    pub pages: usize,
    /// All of memory was copied (first run, or no dirty log on this host).
    pub full: bool,
    /// Time to copy those pages.
    pub memory: Duration,
    /// Time from nothing to a runnable VM (memory, VM, vCPUs, state).
    pub total: Duration,
}

/// Hands out restored VMs, one per run, to as many runs at once as ask.
/// Guest memory outlives each VM: after a run, [`Restorer::recycle`] keeps
/// it with the run's dirty log in a pool, and the next restore takes one
/// from there and copies only those pages back. A run that finds the pool
/// empty (the first, or one more running at the same time) gets a
/// copy-on-write mapping of the snapshot's memory (a private mapping of a
/// memfd holding it, written once): nothing copied, and pages shared
/// between VMs until a guest writes them.
pub struct Restorer {
    pub snapshot: Arc<Snapshot>,
    spare: Mutex<Vec<(GuestMemoryMmap, Vec<u64>)>>,
    /// The snapshot's memory in a memfd, for copy-on-write mappings (None:
    /// the host refused one; fresh memory and a full copy instead).
    image: std::sync::OnceLock<Option<std::fs::File>>,
}

impl Restorer {
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        Self {
            snapshot,
            spare: Mutex::new(Vec::new()),
            image: std::sync::OnceLock::new(),
        }
    }

    /// A fresh VM of shape `cfg` holding the snapshot's machine; the
    /// snapshot must have that shape.
    pub fn vm(&self, cfg: &VmConfig) -> Result<(Vm, RestoreStats), Error> {
        let start = Instant::now();
        let s = &self.snapshot;
        if (s.vcpus(), s.mem_mib) != (cfg.vcpus, cfg.mem_mib) {
            return Err(Error::Shape(s.vcpus(), s.mem_mib, cfg.vcpus, cfg.mem_mib));
        }
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let t = Instant::now();
        let (mem, pages, full) = match spare {
            Some((mem, dirty)) => {
                let pages = s.restore_memory(&mem, Some(&dirty))?;
                (mem, pages, false)
            }
            None => match self.cow_memory() {
                Some(mem) => (mem, 0, true),
                None => {
                    let mem = vm::guest_memory(s.mem_mib)?;
                    let pages = s.restore_memory(&mem, None)?;
                    (mem, pages, true)
                }
            },
        };
        let memory = t.elapsed();
        let vm = Vm::with_memory(cfg, mem)?;
        s.restore_state(&vm.fd, &vm.vcpus)?;
        Ok((
            vm,
            RestoreStats {
                pages,
                full,
                memory,
                total: start.elapsed(),
            },
        ))
    }

    /// A private (copy-on-write) mapping of the snapshot's memory.
    fn cow_memory(&self) -> Option<GuestMemoryMmap> {
        use vm_memory::mmap::MmapRegionBuilder;
        use vm_memory::{FileOffset, GuestRegionMmap};
        let image = self
            .image
            .get_or_init(|| {
                let r = memfd_with(&self.snapshot.memory);
                if let Err(e) = &r {
                    tracing::debug!("no memfd for copy-on-write restores: {e}");
                }
                r.ok()
            })
            .as_ref()?;
        let region = MmapRegionBuilder::new(self.snapshot.memory.len())
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .with_file_offset(FileOffset::new(image.try_clone().ok()?, 0))
            .build()
            .ok()?;
        let region = GuestRegionMmap::new(region, GuestAddress(0))?;
        GuestMemoryMmap::from_regions(vec![region]).ok()
    }
    /// Check the dirty log: restore the last run's dirty pages into the kept
    /// memory now and count the pages that still differ from the snapshot
    /// (a write the log missed). None before the first run or without a
    /// dirty log. Costs a compare of all guest memory.
    pub fn stale_pages(&self) -> Result<Option<usize>, Error> {
        let g = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        let Some((mem, dirty)) = g.last() else {
            return Ok(None);
        };
        self.snapshot.restore_memory(mem, Some(dirty))?;
        let mut page = vec![0u8; PAGE];
        let mut stale = 0;
        for (i, want) in self.snapshot.memory.chunks(PAGE).enumerate() {
            mem.read_slice(&mut page, GuestAddress((i * PAGE) as u64))
                .map_err(|_| Error::Memory)?;
            stale += usize::from(page != want);
        }
        Ok(Some(stale))
    }

    /// After a run, every vCPU stopped: keep the memory and what the run
    /// dirtied for the next restore: KVM's dirty log plus `written`, the
    /// page numbers the VMM wrote itself. Without a dirty log (a host that
    /// does not keep one), the next restore copies everything.
    pub fn recycle(&self, vm: &Vm, written: &[u64]) {
        match vm.dirty_log() {
            Ok(mut d) => {
                for &page in written {
                    if let Some(word) = d.get_mut((page / 64) as usize) {
                        *word |= 1 << (page % 64);
                    }
                }
                self.spare
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((vm.mem.clone(), d))
            }
            Err(e) => tracing::debug!("no dirty log, next restore copies all memory: {e}"),
        }
    }
}

/// An anonymous memory file holding `bytes`.
fn memfd_with(bytes: &[u8]) -> std::io::Result<std::fs::File> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: a constant C string; the returned descriptor is checked and
    // then owned by the File.
    let fd = unsafe { libc::memfd_create(c"preemptor-snapshot".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(bytes)?;
    Ok(f)
}

#[cfg(test)]
impl Snapshot {
    /// A snapshot of `memory` and no vCPUs, for tests of the pure parts.
    pub(super) fn of_memory(memory: Vec<u8>) -> Self {
        Self {
            mem_mib: (memory.len() >> 20) as u64,
            memory,
            machine: Machine {
                vcpus: Vec::new(),
                irqchips: Vec::new(),
                pit: Default::default(),
                clock: Default::default(),
            },
            serial: SerialState::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_restore_copies_only_marked_pages() {
        let mut memory = vec![0u8; 1 << 20];
        memory
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i / PAGE) as u8);
        let snap = Snapshot::of_memory(memory);
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        assert_eq!(snap.restore_memory(&mem, None).unwrap(), 256);
        // A run scribbles over pages 3, 64 and 255; the log says so.
        for p in [3u64, 64, 255] {
            mem.write_slice(&[0xee; 16], GuestAddress(p * PAGE as u64 + 100))
                .unwrap();
        }
        let mut bitmap = vec![0u64; 4];
        bitmap[0] |= 1 << 3;
        bitmap[1] |= 1;
        bitmap[3] |= 1 << 63;
        assert_eq!(snap.restore_memory(&mem, Some(&bitmap)).unwrap(), 3);
        let mut back = vec![0u8; 1 << 20];
        mem.read_slice(&mut back, GuestAddress(0)).unwrap();
        assert!(back == snap.memory);
    }
}
