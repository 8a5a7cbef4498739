//! Intel MultiProcessor Specification 1.4 table: how a guest kernel without
//! ACPI (ours: `CONFIG_X86_MPPARSE`) finds its CPUs, IOAPIC and ISA IRQs.
//! No published rust-vmm crate builds one; the format is small enough to
//! write byte by byte, which keeps it free of `unsafe` struct casts.
use super::layout::MPTABLE_START;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} vCPUs do not fit in an MP table (at most 254)")]
    TooManyCpus(usize),
    #[error("cannot write the MP table to guest memory")]
    Write,
}

const APIC_DEFAULT_PHYS_BASE: u32 = 0xfee0_0000;
const IO_APIC_DEFAULT_PHYS_BASE: u32 = 0xfec0_0000;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const IOAPIC_PINS: u8 = 24;
const CPU_EN: u8 = 1;
const CPU_BSP: u8 = 2;
// Family 6; FPU and APIC present: what the spec's "processor entry" wants.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IOINT: u8 = 3;
const ENTRY_LINT: u8 = 4;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// Build the table for `num_cpus` CPUs with APIC IDs 0..n (vCPU 0 is the BSP).
pub fn build(num_cpus: usize) -> Result<Vec<u8>, Error> {
    if num_cpus == 0 || num_cpus > 254 {
        return Err(Error::TooManyCpus(num_cpus));
    }
    let ioapic_id = num_cpus as u8;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..num_cpus {
        entries.push(ENTRY_PROCESSOR);
        entries.push(cpu as u8);
        entries.push(APIC_VERSION);
        entries.push(CPU_EN | if cpu == 0 { CPU_BSP } else { 0 });
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, CPU_EN]);
    entries.extend_from_slice(&IO_APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    count += 1;
    // ISA IRQ i → IOAPIC pin i: KVM's default GSI routing does the same.
    for pin in 0..IOAPIC_PINS {
        entries.extend_from_slice(&[ENTRY_IOINT, INT_TYPE_INT, 0, 0, 0, pin, ioapic_id, pin]);
        count += 1;
    }
    // LINT0 = ExtINT (the 8259), LINT1 = NMI, on every local APIC.
    entries.extend_from_slice(&[ENTRY_LINT, INT_TYPE_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[ENTRY_LINT, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_addr = MPTABLE_START as u32 + 16;
    let mut hdr = Vec::with_capacity(44);
    hdr.extend_from_slice(b"PCMP");
    hdr.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    hdr.push(4); // spec revision 1.4
    hdr.push(0); // checksum, below
    hdr.extend_from_slice(b"PREEMPTR");
    hdr.extend_from_slice(b"KVM-GUEST   ");
    hdr.extend_from_slice(&0u32.to_le_bytes()); // OEM table
    hdr.extend_from_slice(&0u16.to_le_bytes());
    hdr.extend_from_slice(&count.to_le_bytes());
    hdr.extend_from_slice(&APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    hdr.extend_from_slice(&[0, 0, 0, 0]); // extended table length, checksum, reserved
    let mut table = hdr;
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut fp = Vec::with_capacity(16);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&table_addr.to_le_bytes());
    fp.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // length 16 B, rev 1.4
    fp[10] = checksum(&fp);

    fp.extend_from_slice(&table);
    Ok(fp)
}

pub fn write(mem: &GuestMemoryMmap, num_cpus: usize) -> Result<(), Error> {
    let bytes = build(num_cpus)?;
    if MPTABLE_START as usize + bytes.len() > 0xa_0000 {
        return Err(Error::TooManyCpus(num_cpus));
    }
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(|_| Error::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_counts() {
        let t = build(2).unwrap();
        assert_eq!(&t[0..4], b"_MP_");
        assert_eq!(t[..16].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let table = &t[16..];
        assert_eq!(&table[0..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(table.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(
            u16::from_le_bytes([table[34], table[35]]),
            2 + 1 + 1 + 24 + 2
        );
        assert_eq!(table[44 + 3], CPU_EN | CPU_BSP);
        assert_eq!(table[64 + 3], CPU_EN);
    }

    #[test]
    fn rejects_zero_cpus() {
        assert!(build(0).is_err());
    }
}
