//! PCI configuration space through the legacy ports 0xCF8 (address) and
//! 0xCFC (data), as the i440FX chipset QEMU's `pc` machine has it. The
//! root holds these ports through its initial I/O-port capabilities.

use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};

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

fn outl(port: u16, value: u32) {
    // SAFETY: port I/O has no memory effects; ports the root does not hold
    // are dropped by the microkernel's permission map.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}

fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: as for `outl`.
    unsafe {
        core::arch::asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags))
    };
    value
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, register: u8) -> u32 {
        // The address/data pair is one operation: no interrupt handler of
        // the root touches configuration space, so no lock is needed.
        outl(ADDRESS, address(df, register));
        inl(DATA)
    }

    fn write_word(&mut self, df: DeviceFunction, register: u8, data: u32) {
        outl(ADDRESS, address(df, register));
        outl(DATA, data);
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}
