//! x86_64 boot: guest physical layout, the Linux 64-bit boot protocol's
//! zero page, the Intel MP table and ACPI tables (a kernel finds its CPUs
//! in whichever it supports; with both, ACPI wins), and each vCPU's
//! initial state.
//!
//! The kernel is entered directly in long mode (the 64-bit boot protocol:
//! `rsi` = zero page, identity-mapped page tables, flat segments), from an
//! ELF `vmlinux` (its `startup_64`) or a bzImage (load address + 0x200). No
//! firmware runs: under emulation every guest-kernel instruction costs.
pub mod acpi;
pub mod layout;
pub mod mptable;
pub mod regs;

use layout::*;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("guest memory write at {0:#x} failed")]
    Memory(u64),
    #[error("MP table: {0}")]
    MpTable(#[from] mptable::Error),
    #[error("ACPI: {0}")]
    Acpi(#[from] acpi::Error),
    #[error("initramfs of {0} bytes does not fit in guest memory")]
    InitrdTooLarge(usize),
    #[error("KVM vCPU setup: {0}")]
    Kvm(#[from] kvm_ioctls::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Where the initramfs goes: the top of RAM, page aligned, as boot loaders
/// do, so it never overlaps the kernel image.
pub fn initrd_address(mem_size: u64, initrd_len: usize) -> Result<u64> {
    let len = initrd_len as u64;
    let top = mem_size.min(1 << 30); // below the identity-mapped first GiB
    let addr = top
        .checked_sub(len)
        .ok_or(Error::InitrdTooLarge(initrd_len))?
        & !0xfff;
    if addr < KERNEL_LOW_LIMIT {
        return Err(Error::InitrdTooLarge(initrd_len));
    }
    Ok(addr)
}

/// Fill the zero page. `hdr` is the bzImage's own setup header, if any.
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    hdr: Option<setup_header>,
    cmdline_len: usize,
    initrd: Option<(u64, usize)>,
    mem_size: u64,
) -> Result<()> {
    let mut p = boot_params::default();
    if let Some(h) = hdr {
        p.hdr = h;
    }
    p.hdr.type_of_loader = 0xff; // "undefined" boot loader
                                 // Where the ACPI tables are (a kernel without ACPI ignores it).
    p.acpi_rsdp_addr = acpi::RSDP_START;
    p.hdr.boot_flag = 0xaa55;
    p.hdr.header = 0x5372_6448; // "HdrS"
    p.hdr.kernel_alignment = 0x0100_0000;
    p.hdr.cmd_line_ptr = CMDLINE_START as u32;
    p.hdr.cmdline_size = cmdline_len as u32;
    if let Some((addr, len)) = initrd {
        p.hdr.ramdisk_image = addr as u32;
        p.hdr.ramdisk_size = len as u32;
    }
    let e820 = [
        (0, MPTABLE_START, 1u32),
        (MPTABLE_START, 0x10_0000 - MPTABLE_START, 2u32),
        (0x10_0000, mem_size - 0x10_0000, 1u32),
    ];
    for (i, (addr, size, type_)) in e820.iter().enumerate() {
        p.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: *type_,
        };
    }
    p.e820_entries = e820.len() as u8;
    // SAFETY: boot_params is a plain C struct; viewing it as bytes is sound.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            &p as *const _ as *const u8,
            std::mem::size_of::<boot_params>(),
        )
    };
    mem.write_slice(bytes, GuestAddress(ZERO_PAGE_START))
        .map_err(|_| Error::Memory(ZERO_PAGE_START))
}

/// Identity-map the first GiB with 2 MiB pages: enough for `startup_64`,
/// which builds its own tables at once.
pub fn write_page_tables(mem: &GuestMemoryMmap) -> Result<()> {
    let w = |addr: u64, val: u64| {
        mem.write_obj(val, GuestAddress(addr))
            .map_err(|_| Error::Memory(addr))
    };
    w(PML4_START, PDPTE_START | 0x03)?;
    w(PDPTE_START, PDE_START | 0x03)?;
    for i in 0..512u64 {
        w(PDE_START + i * 8, (i << 21) | 0x83)?;
    }
    Ok(())
}

/// A flat GDT with the boot protocol's selectors: code 0x10, data 0x18.
pub fn write_gdt(mem: &GuestMemoryMmap) -> Result<()> {
    for (i, e) in regs::GDT.iter().enumerate() {
        let a = BOOT_GDT_START + (i * 8) as u64;
        mem.write_obj(*e, GuestAddress(a))
            .map_err(|_| Error::Memory(a))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(|_| Error::Memory(BOOT_IDT_START))
}
