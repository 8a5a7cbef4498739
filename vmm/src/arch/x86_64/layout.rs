//! Guest physical memory layout used at boot (all below 1 MiB but the kernel).
pub const BOOT_GDT_START: u64 = 0x500;
pub const BOOT_IDT_START: u64 = 0x520;
pub const ZERO_PAGE_START: u64 = 0x7000;
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
pub const CMDLINE_START: u64 = 0x2_0000;
pub const CMDLINE_MAX_SIZE: usize = 4096;
/// The MP floating pointer must sit in the last KiB of base memory (one of
/// the places the kernel scans), reserved in the e820 map.
pub const MPTABLE_START: u64 = 0x9_fc00;
/// A bzImage's protected-mode code is loaded here.
pub const HIMEM_START: u64 = 0x10_0000;
/// Nothing of ours goes below the kernel's load address (16 MiB).
pub const KERNEL_LOW_LIMIT: u64 = 0x100_0000;
