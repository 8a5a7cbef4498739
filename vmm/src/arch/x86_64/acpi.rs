//! ACPI tables: how a guest kernel with `CONFIG_ACPI` (and no
//! `CONFIG_X86_MPPARSE`) finds its CPUs and IOAPIC, in place of the MP table.
//!
//! RSDP → XSDT → {FADT → DSDT, MADT}, built with the `acpi_tables` crate,
//! which also computes every checksum. No firmware runs, so the tables go
//! where Linux looks for them without EFI: it scans 0xE0000..0xFFFFF on
//! 16-byte boundaries for "RSD PTR " (unless `boot_params.acpi_rsdp_addr`
//! is set: the caller may set it to [`RSDP_START`] and skip the scan). All
//! of [`ACPI_START`]..[`ACPI_END`] lies in the 0x9fc00..1 MiB range the zero
//! page's e820 map already reserves, clear of the MP table at 0x9fc00.
//!
//! The FADT declares a hardware-reduced ACPI platform (as Firecracker and
//! Cloud Hypervisor do): no PM timer, SCI, GPE or PM1 blocks to emulate, and
//! no FACS. Linux then also skips the PIT/HPET timer setup and the legacy
//! PIC (`acpi_generic_reduced_hw_init`), so ISA IRQs only exist once a
//! device asks for their GSI: the DSDT describes COM1 (PNP0501, 0x3f8,
//! GSI 4) for that, which the guest's 8250 driver uses with `CONFIG_PNP=y`.
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{aml, Aml};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} vCPUs do not fit in the MADT (1 to 254)")]
    TooManyCpus(usize),
    #[error("ACPI table {0} overruns its slot in guest memory")]
    TableTooLarge(&'static str),
    #[error("cannot write ACPI table {0} to guest memory")]
    Write(&'static str),
}

/// The RSDP: first 16-byte boundary of the BIOS area Linux scans.
pub const RSDP_START: u64 = 0x000e_0000;
/// Fixed slots after it, each 64-byte aligned; the MADT, whose size grows
/// with the vCPUs (44 + 8 per vCPU + 12 bytes), comes last.
pub const XSDT_START: u64 = 0x000e_0040;
pub const FADT_START: u64 = 0x000e_0080;
pub const DSDT_START: u64 = 0x000e_0200;
pub const MADT_START: u64 = 0x000e_0400;
/// Guest memory the tables occupy (end exclusive): keep it e820-reserved.
pub const ACPI_START: u64 = RSDP_START;
pub const ACPI_END: u64 = 0x000e_1000;

const OEM_ID: [u8; 6] = *b"PRMPTR";
const OEM_REVISION: u32 = 1;
const APIC_DEFAULT_PHYS_BASE: u32 = 0xfee0_0000;
const IO_APIC_DEFAULT_PHYS_BASE: u32 = 0xfec0_0000;
/// MADT flag: the machine also has dual 8259 PICs (KVM's irqchip does).
const MADT_PCAT_COMPAT: u32 = 1;
/// IA-PC boot architecture flags: no VGA to probe, no CMOS RTC (the VMM
/// emulates neither). Bit 1 (8042) stays clear: Linux skips i8042 probing,
/// while `reboot=k` still reaches the VMM's port 0x64.
const IAPC_BOOT_ARCH_NO_VGA: u16 = 1 << 2;
const IAPC_BOOT_ARCH_NO_CMOS_RTC: u16 = 1 << 5;
const COM1_PORT: u16 = 0x3f8;
/// The serial irqfd's GSI (devices::serial::SERIAL_IRQ).
const COM1_GSI: u32 = 4;

fn bytes(table: &dyn Aml) -> Vec<u8> {
    let mut v: Vec<u8> = Vec::new();
    table.to_aml_bytes(&mut v);
    v
}

/// FADT 6.5: HW_REDUCED_ACPI, power and sleep buttons as (absent) control
/// method devices rather than fixed-feature hardware, and the DSDT through
/// its 64-bit X_DSDT field. Everything else stays zero, which the
/// hardware-reduced model allows.
fn fadt() -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, *b"PRMPFACP", OEM_REVISION)
        .dsdt_64(DSDT_START)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.iapc_boot_arch = (IAPC_BOOT_ARCH_NO_VGA | IAPC_BOOT_ARCH_NO_CMOS_RTC).into();
    bytes(&fadt.finalize())
}

/// DSDT (revision 2: 64-bit AML integers) holding only COM1, so that the
/// 8250 PNP driver learns GSI 4 and maps it to a Linux IRQ: with no legacy
/// PIC, ISA IRQ 4 is not pre-allocated.
fn dsdt() -> Sdt {
    let mut body: Vec<u8> = Vec::new();
    aml::Device::new(
        "_SB_.COM1".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501")),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![
                    &aml::IO::new(COM1_PORT, COM1_PORT, 1, 8),
                    // consumer, edge-triggered, active high, exclusive
                    &aml::Interrupt::new(true, true, false, false, COM1_GSI),
                ]),
            ),
        ],
    )
    .to_aml_bytes(&mut body);
    let mut dsdt = Sdt::new(*b"DSDT", 36, 2, OEM_ID, *b"PRMPDSDT", OEM_REVISION);
    dsdt.append_slice(&body);
    dsdt
}

/// MADT: the local APIC address with PCAT_COMPAT, one enabled Processor
/// Local APIC per vCPU (ACPI processor UID = APIC ID = index, as the vCPUs'
/// CPUID says), and the IOAPIC with GSIs 0..23 from base 0. Its ID is
/// `vcpus`, as in the MP table (64-bit Linux does not reprogram it).
///
/// No Interrupt Source Override: the VMM keeps KVM's default GSI routing,
/// where ISA IRQ n (the PIT's 0 included) arrives on IOAPIC pin n, as the MP
/// table says. An IRQ0→GSI2 override (QEMU's, which reroutes GSI 0 to
/// pin 2) would be wrong here; and since the FADT's SCI_INT is 0, Linux
/// would even take an IRQ 0 override for the SCI's (level, active low).
fn madt(vcpus: usize) -> Sdt {
    let mut madt = Sdt::new(*b"APIC", 44, 5, OEM_ID, *b"PRMPAPIC", OEM_REVISION);
    madt.write_u32(36, APIC_DEFAULT_PHYS_BASE);
    madt.write_u32(40, MADT_PCAT_COMPAT);
    let mut entries: Vec<u8> = Vec::new();
    for cpu in 0..vcpus {
        ProcessorLocalApic::new(cpu as u8, cpu as u8, EnabledStatus::Enabled)
            .to_aml_bytes(&mut entries);
    }
    IoApic::new(vcpus as u8, IO_APIC_DEFAULT_PHYS_BASE, 0).to_aml_bytes(&mut entries);
    madt.append_slice(&entries);
    madt
}

/// One table as placed: (signature, guest address, bytes).
pub type Placed = (&'static str, u64, Vec<u8>);

/// The tables for `vcpus` CPUs.
pub fn build(vcpus: usize) -> Result<Vec<Placed>, Error> {
    if vcpus == 0 || vcpus > 254 {
        return Err(Error::TooManyCpus(vcpus));
    }
    let mut xsdt = XSDT::new(OEM_ID, *b"PRMPXSDT", OEM_REVISION);
    xsdt.add_entry(FADT_START);
    xsdt.add_entry(MADT_START);
    let tables = vec![
        ("RSDP", RSDP_START, bytes(&Rsdp::new(OEM_ID, XSDT_START))),
        ("XSDT", XSDT_START, bytes(&xsdt)),
        ("FACP", FADT_START, fadt()),
        ("DSDT", DSDT_START, dsdt().as_slice().to_vec()),
        ("APIC", MADT_START, madt(vcpus).as_slice().to_vec()),
    ];
    let slot_ends = [XSDT_START, FADT_START, DSDT_START, MADT_START, ACPI_END];
    for (table, end) in tables.iter().zip(slot_ends) {
        if table.1 + table.2.len() as u64 > end {
            return Err(Error::TableTooLarge(table.0));
        }
    }
    Ok(tables)
}

/// Write the tables into guest memory. Call once per cold boot, like
/// `mptable::write`.
pub fn write(mem: &GuestMemoryMmap, vcpus: usize) -> Result<(), Error> {
    for (name, addr, data) in build(vcpus)? {
        mem.write_slice(&data, GuestAddress(addr))
            .map_err(|_| Error::Write(name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    /// The whole table at `addr` (length at offset 4), checksum checked.
    fn table(mem: &GuestMemoryMmap, addr: u64, sig: &[u8; 4]) -> Vec<u8> {
        let len: u32 = mem.read_obj(GuestAddress(addr + 4)).unwrap();
        let mut t = vec![0u8; len as usize];
        mem.read_slice(&mut t, GuestAddress(addr)).unwrap();
        assert_eq!(&t[..4], sig);
        assert_eq!(sum(&t), 0, "{} checksum", String::from_utf8_lossy(sig));
        t
    }

    #[test]
    fn tables_in_guest_memory() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        write(&mem, 3).unwrap();

        let mut rsdp = [0u8; 36];
        mem.read_slice(&mut rsdp, GuestAddress(RSDP_START)).unwrap();
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..20]), 0);
        assert_eq!(sum(&rsdp), 0);
        assert_eq!(rsdp[15], 2, "revision");
        assert_eq!(u32_at(&rsdp, 20), 36, "length");
        assert_eq!(u64_at(&rsdp, 24), XSDT_START);

        let xsdt = table(&mem, XSDT_START, b"XSDT");
        let entries: Vec<u64> = xsdt[36..].chunks(8).map(|c| u64_at(c, 0)).collect();
        assert_eq!(entries, [FADT_START, MADT_START]);

        let fadt = table(&mem, FADT_START, b"FACP");
        assert_eq!(fadt.len(), 276);
        assert_ne!(u32_at(&fadt, 112) & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_eq!(u64_at(&fadt, 140), DSDT_START, "X_DSDT");
        let dsdt = table(&mem, DSDT_START, b"DSDT");
        assert!(dsdt.len() > 36);

        let madt = table(&mem, MADT_START, b"APIC");
        assert!(MADT_START + madt.len() as u64 <= ACPI_END);
        assert_eq!(u32_at(&madt, 36), APIC_DEFAULT_PHYS_BASE);
        assert_eq!(u32_at(&madt, 40), MADT_PCAT_COMPAT);
        let (mut lapics, mut ioapics, mut off) = (Vec::new(), 0, 44);
        while off < madt.len() {
            let len = madt[off + 1] as usize;
            match madt[off] {
                0 => {
                    assert_eq!(len, 8);
                    assert_eq!(u32_at(&madt, off + 4), 1, "enabled");
                    lapics.push((madt[off + 2], madt[off + 3]));
                }
                1 => {
                    assert_eq!(len, 12);
                    assert_eq!(madt[off + 2], 3, "IOAPIC id = vcpus");
                    assert_eq!(u32_at(&madt, off + 4), IO_APIC_DEFAULT_PHYS_BASE);
                    assert_eq!(u32_at(&madt, off + 8), 0, "GSI base");
                    ioapics += 1;
                }
                k => panic!("unexpected MADT entry type {k}"),
            }
            off += len;
        }
        assert_eq!(off, madt.len());
        assert_eq!(lapics, [(0u8, 0u8), (1, 1), (2, 2)]);
        assert_eq!(ioapics, 1);
    }

    #[test]
    fn vcpu_limits() {
        assert!(build(0).is_err());
        assert!(build(255).is_err());
        assert!(build(254).is_ok());
    }
}
