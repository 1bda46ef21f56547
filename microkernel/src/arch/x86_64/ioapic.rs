//! The I/O APIC: device interrupt lines routed to the microkernel, which
//! forwards them to partitions as virtual interrupts.
//!
//! Line `gsi` is delivered to vector [`VECTOR_BASE`] + gsi on the bootstrap
//! processor, masked until a partition binds it. The line is masked again
//! when it fires and unmasked when every partition binding on it has
//! acknowledged it, so a level-triggered device cannot storm the kernel.
//!
//! Each line keeps the trigger mode and polarity the firmware describes:
//! ISA lines (0–15) edge-triggered active-high, PCI lines (16–23)
//! level-triggered active-low, unless the MADT's interrupt source
//! overrides say otherwise ([`configure`]; QEMU's `pc` machine marks the
//! PCI interrupt lines 5, 9, 10 and 11 level-triggered active-high).

use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// Vector of GSI 0.
pub const VECTOR_BASE: u8 = 0x50;
/// Lines handled (one I/O APIC of 24 inputs).
pub const LINES: u32 = 24;

/// Mode bit: level-triggered (else edge).
const LEVEL: u8 = 1;
/// Mode bit: active-low (else active-high).
const ACTIVE_LOW: u8 = 2;

static BASE: AtomicU64 = AtomicU64::new(0);
/// Lines that fired and wait for the kernel to deliver them (bit = GSI).
static FIRED: AtomicU64 = AtomicU64::new(0);
/// Trigger mode and polarity per line ([`LEVEL`], [`ACTIVE_LOW`]).
static MODES: [AtomicU8; LINES as usize] = [const { AtomicU8::new(0) }; LINES as usize];

fn write(reg: u32, value: u32) {
    let base = BASE.load(Ordering::Relaxed);
    if base == 0 {
        return;
    }
    // SAFETY: the I/O APIC window is identity-mapped uncacheable and owned by
    // the kernel (the root's SLAT excludes it); IOREGSEL/IOWIN are at 0x0/0x10.
    unsafe {
        core::ptr::write_volatile(base as *mut u32, reg);
        core::ptr::write_volatile((base + 0x10) as *mut u32, value);
    }
}

/// Takes over the I/O APIC at `base`: the default modes (ISA edge
/// active-high, PCI level active-low), every line masked.
pub fn init(base: u64) {
    BASE.store(base, Ordering::Relaxed);
    for gsi in 0..LINES {
        let mode = if gsi >= 16 { LEVEL | ACTIVE_LOW } else { 0 };
        MODES[gsi as usize].store(mode, Ordering::Relaxed);
        route(gsi, false, 0);
    }
}

/// Sets line `gsi`'s trigger mode and polarity (an interrupt source
/// override); the line stays masked.
pub fn configure(gsi: u32, level: bool, active_low: bool) {
    if gsi >= LINES {
        return;
    }
    let mode = if level { LEVEL } else { 0 } | if active_low { ACTIVE_LOW } else { 0 };
    MODES[gsi as usize].store(mode, Ordering::Relaxed);
    route(gsi, false, 0);
}

/// The level-triggered lines (bit = GSI).
pub fn level_lines() -> u64 {
    (0..LINES)
        .filter(|&g| MODES[g as usize].load(Ordering::Relaxed) & LEVEL != 0)
        .fold(0, |bits, g| bits | 1 << g)
}

/// Routes `gsi` to its vector on the processor with `apic_id`, masked or
/// not, with its trigger mode and polarity.
pub fn route(gsi: u32, enabled: bool, apic_id: u32) {
    if gsi >= LINES {
        return;
    }
    let mode = MODES[gsi as usize].load(Ordering::Relaxed);
    let mut low = (VECTOR_BASE as u32 + gsi) | if enabled { 0 } else { 1 << 16 };
    if mode & LEVEL != 0 {
        low |= 1 << 15;
    }
    if mode & ACTIVE_LOW != 0 {
        low |= 1 << 13;
    }
    write(0x10 + 2 * gsi, 1 << 16);
    write(0x11 + 2 * gsi, apic_id << 24);
    write(0x10 + 2 * gsi, low);
}

/// Called from the interrupt handler: masks the line and records it.
pub fn fired(gsi: u32) {
    route(gsi, false, 0);
    FIRED.fetch_or(1 << gsi, Ordering::AcqRel);
}

/// Lines that fired since the last call.
pub fn take_fired() -> u64 {
    FIRED.swap(0, Ordering::AcqRel)
}

/// Whether a line fired and waits for the kernel.
pub fn any_fired() -> bool {
    FIRED.load(Ordering::Acquire) != 0
}
