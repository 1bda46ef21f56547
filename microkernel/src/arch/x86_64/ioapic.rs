//! The I/O APIC: device interrupt lines routed to the microkernel, which
//! forwards them to partitions as virtual interrupts.
//!
//! Line `gsi` is delivered to vector [`VECTOR_BASE`] + gsi on the bootstrap
//! processor, masked until a partition binds it. The line is masked again
//! when it fires and unmasked when the partition acknowledges it, so a
//! level-triggered device cannot storm the kernel.

use core::sync::atomic::{AtomicU64, Ordering};

/// Vector of GSI 0.
pub const VECTOR_BASE: u8 = 0x50;
/// Lines handled (one I/O APIC of 24 inputs).
pub const LINES: u32 = 24;

static BASE: AtomicU64 = AtomicU64::new(0);
/// Lines that fired and wait for the kernel to deliver them (bit = GSI).
static FIRED: AtomicU64 = AtomicU64::new(0);

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

/// Takes over the I/O APIC at `base`: every line masked.
pub fn init(base: u64) {
    BASE.store(base, Ordering::Relaxed);
    for gsi in 0..LINES {
        route(gsi, false, 0);
    }
}

/// Routes `gsi` to its vector on the processor with `apic_id`, masked or not.
/// ISA lines (0–15) are edge-triggered active-high; PCI lines (16–23) level-triggered active-low.
pub fn route(gsi: u32, enabled: bool, apic_id: u32) {
    if gsi >= LINES {
        return;
    }
    let mut low = (VECTOR_BASE as u32 + gsi) | if enabled { 0 } else { 1 << 16 };
    if gsi >= 16 {
        low |= (1 << 15) | (1 << 13);
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
