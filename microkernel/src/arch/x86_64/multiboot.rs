//! Reading GRUB's multiboot2 boot information.

use multiboot2::{BootInformation, BootInformationHeader};

/// EAX at entry when a multiboot2 loader started us.
pub const BOOTLOADER_MAGIC: u32 = 0x36d7_6289;

/// Parses the boot information at physical `addr`.
pub fn load(addr: u64) -> Option<BootInformation<'static>> {
    if addr == 0 || !addr.is_multiple_of(8) {
        return None;
    }
    // SAFETY: GRUB put the boot information at `addr` (passed in EBX); it is
    // identity mapped and reserved as a module in the memory map so nothing
    // overwrites it while the microkernel reads it. The crate checks sizes.
    unsafe { BootInformation::load(addr as *const BootInformationHeader).ok() }
}
