//! What the firmware's ACPI tables say about the machine: its processors
//! (MADT), its I/O APICs, and how to power it off (FADT, DSDT `\_S5`).

use acpi::fadt::Fadt;
use acpi::madt::{Madt, MadtEntry};
use acpi::sdt::SdtHeader;

use crate::arch;

/// Most processors the kernel starts.
pub const MAX_CPUS: usize = 64;
/// Most I/O APICs the kernel tracks.
pub const MAX_IOAPICS: usize = 8;
/// Most interrupt source overrides the kernel keeps (one per ISA IRQ).
pub const MAX_OVERRIDES: usize = 16;

/// A MADT interrupt source override: ISA IRQ `irq` is wired to `gsi`,
/// with the polarity and trigger mode of `flags` (MPS INTI flags: bits
/// 0–1 polarity, 01 active-high, 11 active-low; bits 2–3 trigger mode, 01
/// edge, 11 level; 00 conforms to the bus: ISA is edge, active-high).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Override {
    /// ISA IRQ.
    pub irq: u8,
    /// Global system interrupt it arrives on.
    pub gsi: u32,
    /// MPS INTI flags.
    pub flags: u16,
}

impl Override {
    /// Level-triggered (else edge).
    pub fn level(&self) -> bool {
        self.flags & 0b1100 == 0b1100
    }

    /// Active-low (else active-high).
    pub fn active_low(&self) -> bool {
        self.flags & 0b11 == 0b11
    }
}

/// The machine as ACPI describes it.
pub struct Platform {
    /// Local APIC ids of the usable processors, bootstrap processor first.
    pub apic_ids: [u32; MAX_CPUS],
    /// Valid entries in `apic_ids`.
    pub cpu_count: usize,
    /// Physical addresses of the I/O APICs.
    pub ioapics: [u64; MAX_IOAPICS],
    /// Valid entries in `ioapics`.
    pub ioapic_count: usize,
    /// Interrupt source overrides of ISA IRQs.
    pub overrides: [Override; MAX_OVERRIDES],
    /// Valid entries in `overrides`.
    pub override_count: usize,
    /// ACPI revision and RSDT/XSDT address, for the root partition.
    pub acpi: Option<(u8, u64)>,
}

impl Platform {
    /// The usable processors' APIC ids.
    pub fn apic_ids(&self) -> &[u32] {
        &self.apic_ids[..self.cpu_count]
    }

    /// The I/O APICs' addresses.
    pub fn ioapics(&self) -> &[u64] {
        &self.ioapics[..self.ioapic_count]
    }

    /// The interrupt source overrides.
    pub fn overrides(&self) -> &[Override] {
        &self.overrides[..self.override_count]
    }
}

/// Reads the MADT and FADT. Without ACPI the machine is taken as a single processor.
pub fn discover(acpi_root: Option<(u8, u64)>) -> Platform {
    arch::apic::discover();
    let bsp = arch::apic::id();
    let mut platform = Platform {
        apic_ids: [0; MAX_CPUS],
        cpu_count: 1,
        ioapics: [0; MAX_IOAPICS],
        ioapic_count: 0,
        overrides: [Override::default(); MAX_OVERRIDES],
        override_count: 0,
        acpi: acpi_root,
    };
    platform.apic_ids[0] = bsp;
    let Some((revision, address)) = acpi_root else {
        kprintln!("acpi: no tables from the boot loader; starting the bootstrap processor only");
        return platform;
    };
    let tables = match arch::acpi::tables(revision, address) {
        Some(t) => t,
        None => {
            kprintln!(
                "acpi: unreadable root table at {address:#x}; starting the bootstrap processor only"
            );
            return platform;
        }
    };
    if let Ok(madt) = tables.find_table::<Madt>() {
        for entry in madt.get().entries() {
            match entry {
                MadtEntry::LocalApic(e) => {
                    let (id, flags) = (e.apic_id as u32, e.flags);
                    add_cpu(&mut platform, id, flags, bsp);
                }
                MadtEntry::LocalX2Apic(e) => {
                    let (id, flags) = (e.x2apic_id, e.flags);
                    add_cpu(&mut platform, id, flags, bsp);
                }
                MadtEntry::IoApic(e) if platform.ioapic_count < MAX_IOAPICS => {
                    platform.ioapics[platform.ioapic_count] = e.io_apic_address as u64;
                    platform.ioapic_count += 1;
                }
                // Bus 0 is ISA, the only bus overrides name.
                MadtEntry::InterruptSourceOverride(e)
                    if e.bus == 0 && platform.override_count < MAX_OVERRIDES =>
                {
                    platform.overrides[platform.override_count] = Override {
                        irq: e.irq,
                        gsi: e.global_system_interrupt,
                        flags: e.flags,
                    };
                    platform.override_count += 1;
                }
                _ => {}
            }
        }
    } else {
        kprintln!("acpi: no MADT; starting the bootstrap processor only");
    }
    if let Ok(fadt) = tables.find_table::<Fadt>() {
        let port = fadt
            .pm1a_control_block()
            .ok()
            .map(|b| b.address)
            .filter(|&a| a != 0 && a <= 0xffff);
        let slp_typ = fadt
            .dsdt_address()
            .ok()
            .and_then(|dsdt| s5_sleep_type(dsdt as u64))
            .unwrap_or(0);
        if let Some(port) = port {
            arch::power::set_acpi_soft_off(port as u16, slp_typ);
        }
    }
    kprintln!(
        "acpi: revision {}, {} processors, {} I/O APICs",
        revision,
        platform.cpu_count,
        platform.ioapic_count
    );
    platform
}

fn add_cpu(platform: &mut Platform, apic_id: u32, flags: u32, bsp: u32) {
    // Bit 0: enabled; bit 1: online capable.
    if flags & 0b11 == 0 || apic_id == bsp || platform.cpu_count >= MAX_CPUS {
        return;
    }
    if platform.apic_ids().contains(&apic_id) {
        return;
    }
    platform.apic_ids[platform.cpu_count] = apic_id;
    platform.cpu_count += 1;
}

/// Finds `\_S5`'s SLP_TYPa in the DSDT's AML: the `_S5_` name followed by a
/// package whose first element is a byte (prefix 0x0A), a zero or a one.
fn s5_sleep_type(dsdt: u64) -> Option<u8> {
    let header = arch::acpi::table_bytes(dsdt, core::mem::size_of::<SdtHeader>());
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if !(36..=1 << 20).contains(&len) {
        return None;
    }
    let aml = arch::acpi::table_bytes(dsdt, len);
    let at = aml.windows(4).position(|w| w == b"_S5_")?;
    // NameOp "_S5_" PackageOp PkgLength NumElements first-element
    let rest = aml.get(at + 4..at + 10)?;
    if rest[0] != 0x12 {
        return None;
    }
    let first = &rest[3..];
    match first[0] {
        0x0a => Some(first[1]),
        0x00 => Some(0),
        0x01 => Some(1),
        _ => None,
    }
}
