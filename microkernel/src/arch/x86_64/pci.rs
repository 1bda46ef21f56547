//! PCI configuration mechanism #1 on the hardware: the address at 0xCF8,
//! the data at 0xCFC–0xCFF. The microkernel carries out the root's
//! configuration accesses here (`microkernel::chipset` decides which).
//!
//! # Invariants
//! The address write and the data access are one operation under a lock:
//! no other processor's access comes in between.

use microkernel::chipset::{CONFIG_ADDRESS, CONFIG_DATA};
use spin::Mutex;

use super::port;

/// Held across the address write and the data access.
static LOCK: Mutex<()> = Mutex::new(());

/// Reads `size` bytes (1, 2, 4) at byte `offset` of the dword at `address`.
pub fn read(address: u32, offset: u8, size: u8) -> u32 {
    let _held = LOCK.lock();
    let data = CONFIG_DATA + (offset & 3) as u16;
    // SAFETY: 0xCF8/0xCFC are the host bridge's configuration ports, which
    // the microkernel keeps from every partition; a configuration read has
    // no effect beyond the device register read.
    unsafe {
        port::outl(CONFIG_ADDRESS, address);
        match size {
            1 => port::inb(data) as u32,
            2 => port::inw(data) as u32,
            _ => port::inl(CONFIG_DATA),
        }
    }
}

/// Writes the low `size` bytes of `value` at byte `offset` of the dword at `address`.
pub fn write(address: u32, offset: u8, size: u8, value: u32) {
    let _held = LOCK.lock();
    let data = CONFIG_DATA + (offset & 3) as u16;
    // SAFETY: as for `read`; the caller checked the write against what
    // the microkernel keeps (`microkernel::chipset::refuse_write`).
    unsafe {
        port::outl(CONFIG_ADDRESS, address);
        match size {
            1 => port::outb(data, value as u8),
            2 => port::outw(data, value as u16),
            _ => port::outl(CONFIG_DATA, value),
        }
    }
}
