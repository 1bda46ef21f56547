//! The 8254 programmable interval timer, used only at boot as a known clock
//! (channel 2, gated through port 0x61) to calibrate the local APIC timer
//! and to time the INIT/SIPI sequence.

use super::port::{inb, outb};

const FREQUENCY_HZ: u64 = 1_193_182;

/// Busy-waits `us` microseconds (bootstrap processor only, before the root runs).
pub fn sleep_us(us: u64) {
    let mut left = us;
    while left > 0 {
        let chunk = left.min(50_000);
        one_shot(chunk);
        left -= chunk;
    }
}

fn one_shot(us: u64) {
    let count = (FREQUENCY_HZ * us / 1_000_000).clamp(1, 0xffff) as u16;
    // SAFETY: the PIT and port 0x61's gate bits belong to the microkernel
    // (the root's I/O permission map intercepts them); this is the
    // documented mode-0 one-shot sequence on channel 2.
    unsafe {
        let gate = inb(0x61) & 0xfc;
        outb(0x61, gate); // gate low, speaker off
        outb(0x43, 0b1011_0000); // channel 2, lo/hi byte, mode 0, binary
        outb(0x42, count as u8);
        outb(0x42, (count >> 8) as u8);
        outb(0x61, gate | 1); // gate high: count down
        while inb(0x61) & 0x20 == 0 {
            core::hint::spin_loop();
        }
        outb(0x61, gate);
    }
}

/// Remaps the legacy 8259 PICs away from the exception vectors and masks them.
pub fn disable_legacy_pic() {
    // SAFETY: the 8259 pair belongs to the microkernel; this is the standard
    // ICW1–ICW4 initialisation followed by masking every line.
    unsafe {
        outb(0x20, 0x11);
        outb(0xa0, 0x11);
        outb(0x21, 0x20);
        outb(0xa1, 0x28);
        outb(0x21, 0x04);
        outb(0xa1, 0x02);
        outb(0x21, 0x01);
        outb(0xa1, 0x01);
        outb(0x21, 0xff);
        outb(0xa1, 0xff);
    }
}
