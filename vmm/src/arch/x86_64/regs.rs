//! A vCPU's state at kernel entry: long mode, flat segments, the kernel's
//! entry point in `rip` and the zero page in `rsi` (64-bit boot protocol);
//! CPUID with this vCPU's APIC ID; the LAPIC's LINT pins as the MP table
//! says.
use super::layout::*;
use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, CpuId, Msrs};
use kvm_ioctls::VcpuFd;

/// null, null, code64 (0x10), data (0x18), TSS (0x20): the boot protocol
/// wants `__BOOT_CS` = 0x10 and `__BOOT_DS` = 0x18.
pub const GDT: [u64; 5] = [
    0,
    0,
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0xf_0000) << 32)
        | ((base as u64 & 0xff_ffff) << 16)
        | (limit as u64 & 0xffff)
}

fn segment(index: usize) -> kvm_segment {
    let e = GDT[index];
    let g = ((e >> 55) & 1) as u8;
    let raw_limit = ((e >> 32) & 0xf_0000) as u32 | (e & 0xffff) as u32;
    let present = ((e >> 47) & 1) as u8;
    kvm_segment {
        base: ((e >> 32) & 0xff00_0000) | ((e >> 16) & 0xff_ffff),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: (index * 8) as u16,
        type_: ((e >> 40) & 0xf) as u8,
        present,
        dpl: ((e >> 45) & 3) as u8,
        db: ((e >> 54) & 1) as u8,
        s: ((e >> 44) & 1) as u8,
        l: ((e >> 53) & 1) as u8,
        g,
        avl: ((e >> 52) & 1) as u8,
        unusable: (present == 0) as u8,
        padding: 0,
    }
}

const X86_CR0_PE: u64 = 1;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Long mode with the boot page tables; only the BSP needs it (APs start
/// through INIT/SIPI, which KVM handles in the kernel).
pub fn setup_long_mode(vcpu: &VcpuFd, entry: u64) -> Result<(), kvm_ioctls::Error> {
    let mut sregs: kvm_sregs = vcpu.get_sregs()?;
    let code = segment(2);
    let data = segment(3);
    let tss = segment(4);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
    sregs.cr3 = PML4_START;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.efer |= EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs)?;

    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START,
        ..Default::default()
    };
    vcpu.set_regs(&regs)?;

    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu)
}

/// The few MSRs a kernel expects sane at entry: fast strings on, MTRRs
/// default write-back. Not every MSR KVM lists can be set on every host
/// (kvm_pvm refuses some), so only these.
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), kvm_ioctls::Error> {
    const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
    const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
    let entries = [
        kvm_msr_entry {
            index: MSR_IA32_MISC_ENABLE,
            data: 1,
            ..Default::default()
        },
        kvm_msr_entry {
            index: MSR_MTRR_DEF_TYPE,
            data: (1 << 11) | 6,
            ..Default::default()
        },
    ];
    let msrs = Msrs::from_entries(&entries).expect("two MSR entries fit");
    vcpu.set_msrs(&msrs).map(|_| ())
}

/// LINT0 = ExtINT, LINT1 = NMI, as the MP table declares.
pub fn setup_lint(vcpu: &VcpuFd) -> Result<(), kvm_ioctls::Error> {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const MODE_EXTINT: u32 = 7;
    const MODE_NMI: u32 = 4;
    let mut lapic = vcpu.get_lapic()?;
    for (off, mode) in [(APIC_LVT0, MODE_EXTINT), (APIC_LVT1, MODE_NMI)] {
        let mut b = [0u8; 4];
        for (i, x) in b.iter_mut().enumerate() {
            *x = lapic.regs[off + i] as u8;
        }
        let v = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
        for (i, x) in v.to_le_bytes().iter().enumerate() {
            lapic.regs[off + i] = *x as _;
        }
    }
    vcpu.set_lapic(&lapic)
}

/// CLOCKSOURCE, NOP_IO_DELAY, CLOCKSOURCE2, CLOCKSOURCE_STABLE_BIT.
const KVM_FEATURE_CLOCK_ONLY: u32 = (1 << 0) | (1 << 1) | (1 << 3) | (1 << 24);

/// KVM's supported CPUID with this vCPU's APIC ID in leaves 1 and 0xb.
pub fn setup_cpuid(
    vcpu: &VcpuFd,
    supported: &CpuId,
    apic_id: u8,
    num_cpus: u8,
) -> Result<(), kvm_ioctls::Error> {
    let mut cpuid = supported.clone();
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                e.ebx =
                    (e.ebx & 0x0000_ffff) | ((num_cpus as u32) << 16) | ((apic_id as u32) << 24);
                e.edx |= 1 << 28; // HTT: the count in ebx[23:16] is valid
            }
            0xb => e.edx = apic_id as u32,
            // KVM paravirt features: only the clock. PV IPIs (hypercalls)
            // hang AP bring-up on kvm_pvm; PV spinlocks/unhalt would make
            // lock waiters halt instead of spin behind a stalled vCPU; PV TLB
            // flush, steal time and async PF change scheduling behaviour.
            // QEMU's default CPU models expose a similarly small set.
            0x4000_0001 => e.eax &= KVM_FEATURE_CLOCK_ONLY,
            _ => {}
        }
    }
    vcpu.set_cpuid2(&cpuid)
}
