//! The COM1 serial console: the microkernel's log.
//!
//! Lines are written whole under a lock, so processors never interleave
//! within a line. An exception handler that finds the lock held (the
//! faulting code was printing) writes without it rather than deadlock.

use super::port::{inb, outb};
use core::fmt::{self, Write};
use spin::Mutex;

const COM1: u16 = 0x3f8;

struct Uart;

impl Uart {
    fn init() {
        // SAFETY: COM1 is the microkernel's console; this is the 16550's
        // documented set-up sequence (115200 8N1, FIFOs on).
        unsafe {
            outb(COM1 + 1, 0x00);
            outb(COM1 + 3, 0x80);
            outb(COM1, 0x01);
            outb(COM1 + 1, 0x00);
            outb(COM1 + 3, 0x03);
            outb(COM1 + 2, 0xc7);
            outb(COM1 + 4, 0x03);
        }
    }

    fn put(byte: u8) {
        for _ in 0..100_000 {
            // SAFETY: reading the line-status register of our own UART.
            if unsafe { inb(COM1 + 5) } & 0x20 != 0 {
                break;
            }
        }
        // SAFETY: writing the transmit register of our own UART.
        unsafe { outb(COM1, byte) };
    }
}

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                Uart::put(b'\r');
            }
            Uart::put(b);
        }
        Ok(())
    }
}

static LOCK: Mutex<()> = Mutex::new(());

/// Sets up COM1.
pub fn init() {
    Uart::init();
}

/// Writes one formatted line.
pub fn write_line(args: fmt::Arguments<'_>) {
    let _guard = LOCK.lock();
    let _ = Uart.write_fmt(args);
    let _ = Uart.write_str("\n");
}

/// Writes one formatted line from a fault handler: takes the lock if it can,
/// writes anyway if it cannot.
pub fn write_line_emergency(args: fmt::Arguments<'_>) {
    let guard = LOCK.try_lock();
    let _ = Uart.write_fmt(args);
    let _ = Uart.write_str("\n");
    drop(guard);
}
