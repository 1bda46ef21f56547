//! The root partition's hardware access: the serial port it drives, reads
//! of physical memory through its identity map, and stopping.

use core::arch::asm;
use core::fmt;

const COM1: u16 = 0x3f8;

fn outb(port: u16, value: u8) {
    // SAFETY: the root owns COM1 (its I/O permission map passes it); OUT
    // has no memory effects.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as for `outb`.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// The serial console.
pub struct Serial;

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                put(b'\r');
            }
            put(b);
        }
        Ok(())
    }
}

fn put(b: u8) {
    for _ in 0..100_000 {
        if inb(COM1 + 5) & 0x20 != 0 {
            break;
        }
    }
    outb(COM1, b);
}

/// The boot-information page the microkernel put at `addr`.
pub fn boot_page(addr: u64) -> &'static [u8; 4096] {
    // SAFETY: the microkernel passes the guest-physical address of a page in
    // the root's boot area, identity mapped by the initial page tables and
    // never freed; the root only reads it.
    unsafe { &*(addr as *const [u8; 4096]) }
}

/// Reads a 64-bit word at a guest-physical address (identity mapped).
/// Touching memory the SLAT does not map stops the partition.
pub fn read_physical(addr: u64) -> u64 {
    // SAFETY: the initial page tables identity-map every guest-physical
    // address below the top of RAM; a read has no side effect on RAM, and
    // one the SLAT forbids exits to the microkernel instead of completing.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

/// Stops the partition for good (HLT with interrupts off: the microkernel
/// treats it as the root powering off).
pub fn power_off() -> ! {
    loop {
        // SAFETY: disabling interrupts and halting affects only this vCPU.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}

/// Stops the partition with a fault the microkernel reports.
pub fn crash() -> ! {
    // SAFETY: UD2 raises #UD; with no IDT the vCPU triple-faults and the
    // microkernel stops the partition with a report.
    unsafe { asm!("ud2", options(nomem, nostack, noreturn)) }
}
