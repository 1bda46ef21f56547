//! Port I/O primitives, on the `x86_64` crate's.

use x86_64::instructions::port::{PortRead, PortWrite};

/// Writes a byte to an I/O port.
///
/// # Safety
/// The port must belong to a device the microkernel owns, and the write
/// must be one that device expects.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller vouches for the device; OUT has no memory effects.
    unsafe { u8::write_to_port(port, value) };
}

/// Writes a 16-bit word to an I/O port.
///
/// # Safety
/// As for [`outb`].
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: the caller vouches for the device; OUT has no memory effects.
    unsafe { u16::write_to_port(port, value) };
}

/// Writes a 32-bit word to an I/O port.
///
/// # Safety
/// As for [`outb`].
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller vouches for the device; OUT has no memory effects.
    unsafe { u32::write_to_port(port, value) };
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// The port must belong to a device the microkernel owns; reads can have
/// side effects on the device.
pub unsafe fn inb(port: u16) -> u8 {
    // SAFETY: the caller vouches for the device; IN has no memory effects.
    unsafe { u8::read_from_port(port) }
}

/// Reads a 16-bit word from an I/O port.
///
/// # Safety
/// As for [`inb`].
pub unsafe fn inw(port: u16) -> u16 {
    // SAFETY: the caller vouches for the device; IN has no memory effects.
    unsafe { u16::read_from_port(port) }
}

/// Reads a 32-bit word from an I/O port.
///
/// # Safety
/// As for [`inb`].
pub unsafe fn inl(port: u16) -> u32 {
    // SAFETY: the caller vouches for the device; IN has no memory effects.
    unsafe { u32::read_from_port(port) }
}
