//! ACPI table access for the `acpi` crate: physical memory is identity
//! mapped, so mapping a table is taking its address.

use acpi::{AcpiHandler, PhysicalMapping};
use core::ptr::NonNull;

/// The identity-mapping ACPI handler.
#[derive(Clone, Copy, Debug)]
pub struct IdentityMapped;

impl AcpiHandler for IdentityMapped {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let virt = NonNull::new(physical_address as *mut T).expect("ACPI table at address 0");
        // SAFETY: all physical memory below the top of the kernel's identity
        // map is mapped at its own address; the crate only reads the region.
        unsafe { PhysicalMapping::new(physical_address, virt, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// Reads `len` bytes of an ACPI table at physical `addr`.
pub fn table_bytes(addr: u64, len: usize) -> &'static [u8] {
    // SAFETY: ACPI tables are firmware-reserved memory, identity mapped and
    // never written by the kernel.
    unsafe { core::slice::from_raw_parts(addr as *const u8, len) }
}

/// Opens the ACPI tables from the RSDT (revision 0) or XSDT at `address`.
pub fn tables(revision: u8, address: u64) -> Option<acpi::AcpiTables<IdentityMapped>> {
    // SAFETY: the address comes from an RSDP whose checksum the boot code
    // verified; the crate validates the root table's signature and checksum.
    unsafe { acpi::AcpiTables::from_rsdt(IdentityMapped, revision, address as usize).ok() }
}
