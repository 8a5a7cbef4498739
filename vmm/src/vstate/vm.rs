//! The VM: guest RAM, in-kernel LAPIC/IOAPIC/PIC and PIT, and its vCPUs.
use crate::arch::x86_64::regs;
use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_MEM_LOG_DIRTY_PAGES,
    KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open /dev/kvm: {0} (is KVM available and accessible to this user?)")]
    OpenKvm(kvm_ioctls::Error),
    #[error("KVM: {what}: {err}")]
    Kvm {
        what: &'static str,
        err: kvm_ioctls::Error,
    },
    #[error("guest memory of {0} MiB: {1}")]
    Memory(u64, String),
    #[error("invalid VM configuration: {0}")]
    Config(String),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |err| Error::Kvm { what, err }
}

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub vcpus: usize,
    pub mem_mib: u64,
}

pub struct Vm {
    pub kvm: Kvm,
    pub fd: VmFd,
    pub mem: GuestMemoryMmap,
    pub vcpus: Vec<VcpuFd>,
}

/// Zeroed guest RAM of `mem_mib` MiB at guest address 0.
pub fn guest_memory(mem_mib: u64) -> Result<GuestMemoryMmap, Error> {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), (mem_mib << 20) as usize)])
        .map_err(|e| Error::Memory(mem_mib, e.to_string()))
}

impl Vm {
    /// A VM with fresh, zeroed guest memory.
    pub fn new(cfg: &VmConfig) -> Result<Self, Error> {
        Self::build(cfg, None)
    }

    /// A VM over existing guest memory (a restored snapshot's), logging the
    /// pages the guest writes so the next restore copies only those back.
    pub fn with_memory(cfg: &VmConfig, mem: GuestMemoryMmap) -> Result<Self, Error> {
        Self::build(cfg, Some(mem))
    }

    /// Bitmap (bit per 4 KiB page, slot 0) of the pages written since the
    /// VM was created. Needs [`Vm::with_memory`].
    pub fn dirty_log(&self) -> Result<Vec<u64>, Error> {
        let len = self.mem.iter().map(|r| r.len() as usize).sum();
        self.fd
            .get_dirty_log(0, len)
            .map_err(kvm_err("get dirty log"))
    }

    fn build(cfg: &VmConfig, reuse: Option<GuestMemoryMmap>) -> Result<Self, Error> {
        if cfg.vcpus == 0 || cfg.vcpus > 64 {
            return Err(Error::Config(format!(
                "{} vCPUs (1..=64 supported)",
                cfg.vcpus
            )));
        }
        // Below 64 MiB the kernel and initramfs do not fit; above 1 GiB the
        // boot page tables would not cover the initramfs we put at the top.
        if !(64..=1024).contains(&cfg.mem_mib) {
            return Err(Error::Config(format!(
                "{} MiB of memory (64..=1024 supported)",
                cfg.mem_mib
            )));
        }
        let kvm = Kvm::new().map_err(Error::OpenKvm)?;
        let fd = kvm.create_vm().map_err(kvm_err("create VM"))?;
        let size = cfg.mem_mib << 20;
        let log_dirty = reuse.is_some();
        let mem = match reuse {
            Some(m) if m.iter().map(|r| r.len()).sum::<u64>() == size => m,
            Some(_) => {
                return Err(Error::Config(format!(
                    "reused guest memory is not {} MiB",
                    cfg.mem_mib
                )))
            }
            None => guest_memory(cfg.mem_mib)?,
        };
        for (slot, region) in mem.iter().enumerate() {
            let r = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: mem.get_host_address(region.start_addr()).unwrap() as u64,
                flags: if log_dirty {
                    KVM_MEM_LOG_DIRTY_PAGES
                } else {
                    0
                },
            };
            // SAFETY: the region stays mapped for as long as the VM lives
            // (both are owned by this struct, memory dropped after fd).
            unsafe { fd.set_user_memory_region(r) }.map_err(kvm_err("set memory region"))?;
        }
        fd.set_tss_address(0xfffb_d000)
            .map_err(kvm_err("set TSS address"))?;
        fd.create_irq_chip().map_err(kvm_err("create irqchip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(kvm_err("create PIT"))?;

        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("get CPUID"))?;
        let mut vcpus = Vec::with_capacity(cfg.vcpus);
        for i in 0..cfg.vcpus {
            let v = fd.create_vcpu(i as u64).map_err(kvm_err("create vCPU"))?;
            regs::setup_cpuid(&v, &supported, i as u8, cfg.vcpus as u8)
                .map_err(kvm_err("set CPUID"))?;
            regs::setup_msrs(&v).map_err(kvm_err("set MSRs"))?;
            regs::setup_lint(&v).map_err(kvm_err("set LAPIC LINT"))?;
            vcpus.push(v);
        }
        Ok(Self {
            kvm,
            fd,
            mem,
            vcpus,
        })
    }
}
