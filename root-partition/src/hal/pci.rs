//! PCI configuration space through the legacy ports 0xCF8 (address) and
//! 0xCFC (data), as the i440FX chipset QEMU's `pc` machine has it. The
//! microkernel emulates these ports for the root: it latches the address
//! and carries out each data access, refusing writes that would move what
//! it keeps (`microkernel::chipset`).

use core::sync::atomic::{AtomicU64, Ordering};

use partition_rt::arch::{inl, outl};
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};

/// Configuration reads and writes made (each is two port accesses, both
/// emulated by the microkernel: `docs/boot.md`).
static ACCESSES: AtomicU64 = AtomicU64::new(0);

/// Configuration reads and writes made so far.
pub fn accesses() -> u64 {
    ACCESSES.load(Ordering::Relaxed)
}

const ADDRESS: u16 = 0xcf8;
const DATA: u16 = 0xcfc;

/// Configuration mechanism #1 (port I/O).
pub struct PortCam;

fn address(df: DeviceFunction, register: u8) -> u32 {
    (1 << 31)
        | (u32::from(df.bus) << 16)
        | (u32::from(df.device & 0x1f) << 11)
        | (u32::from(df.function & 0x7) << 8)
        | u32::from(register & 0xfc)
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, register: u8) -> u32 {
        // The address/data pair is one operation: no interrupt handler of
        // the root touches configuration space, so no lock is needed.
        ACCESSES.fetch_add(1, Ordering::Relaxed);
        outl(ADDRESS, address(df, register));
        inl(DATA)
    }

    fn write_word(&mut self, df: DeviceFunction, register: u8, data: u32) {
        ACCESSES.fetch_add(1, Ordering::Relaxed);
        outl(ADDRESS, address(df, register));
        outl(DATA, data);
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}
