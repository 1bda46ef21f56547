//! Port I/O from a partition: `IN`/`OUT` of bytes, 16-bit and 32-bit words,
//! on the `x86_64` crate's port primitives.
//!
//! # Invariants
//! These are safe functions because a port access from a partition cannot
//! break memory safety: `IN`/`OUT` touch no memory, and every access goes
//! through the microkernel's I/O permission map. A port the partition does
//! not hold a USE capability for never reaches hardware: the microkernel
//! drops the write and returns all ones for the read (a child holds no
//! port at all). The ports the root holds (and the ones the microkernel
//! emulates for it, PCI configuration 0xCF8/0xCFC) reach only the devices
//! the root drives, which is the root's job; nothing here is memory of a
//! Rust object.

use x86_64::instructions::port::{PortRead, PortWrite};

/// Reads a byte from `port` (all ones if the partition does not hold it).
pub fn inb(port: u16) -> u8 {
    // SAFETY: IN touches no memory; the microkernel's permission map
    // decides whether it reaches a device (module invariants).
    unsafe { u8::read_from_port(port) }
}

/// Reads a 16-bit word from `port` (all ones if the partition does not hold it).
pub fn inw(port: u16) -> u16 {
    // SAFETY: as for `inb`.
    unsafe { u16::read_from_port(port) }
}

/// Reads a 32-bit word from `port` (all ones if the partition does not hold it).
pub fn inl(port: u16) -> u32 {
    // SAFETY: as for `inb`.
    unsafe { u32::read_from_port(port) }
}

/// Writes a byte to `port` (dropped if the partition does not hold it).
pub fn outb(port: u16, value: u8) {
    // SAFETY: OUT touches no memory; the microkernel's permission map
    // decides whether it reaches a device (module invariants).
    unsafe { u8::write_to_port(port, value) }
}

/// Writes a 16-bit word to `port` (dropped if the partition does not hold it).
pub fn outw(port: u16, value: u16) {
    // SAFETY: as for `outb`.
    unsafe { u16::write_to_port(port, value) }
}

/// Writes a 32-bit word to `port` (dropped if the partition does not hold it).
pub fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`.
    unsafe { u32::write_to_port(port, value) }
}
