//! The local APIC (xAPIC, memory-mapped): enable, timer, EOI and the
//! INIT/SIPI inter-processor interrupts that start application processors.
//!
//! # Invariants
//! The register window is identity-mapped uncacheable by `memory::init`
//! before any function here runs.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::{idt, msr, pit};

/// Physical (and virtual) address of the local APIC window.
static BASE: AtomicU64 = AtomicU64::new(0xfee0_0000);
/// Whether a local APIC was enabled (its window is mapped from then on).
static ENABLED: AtomicBool = AtomicBool::new(false);
/// Timer counts (divide by 16) per 10 ms, measured on the bootstrap processor.
static COUNTS_PER_10MS: AtomicU32 = AtomicU32::new(0);

const ID: usize = 0x20;
const EOI: usize = 0xb0;
/// The first of eight in-service registers (32 vectors each, 16 bytes apart).
const ISR: usize = 0x100;
const SPURIOUS: usize = 0xf0;
const ICR_LOW: usize = 0x300;
const ICR_HIGH: usize = 0x310;
const LVT_TIMER: usize = 0x320;
const TIMER_INITIAL: usize = 0x380;
const TIMER_CURRENT: usize = 0x390;
const TIMER_DIVIDE: usize = 0x3e0;

fn read(reg: usize) -> u32 {
    let addr = BASE.load(Ordering::Relaxed) as usize + reg;
    // SAFETY: the APIC window is mapped (module invariant) and `reg` is one
    // of the architectural register offsets above.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

fn write(reg: usize, value: u32) {
    let addr = BASE.load(Ordering::Relaxed) as usize + reg;
    // SAFETY: as for `read`.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) };
}

/// Physical address of the local APIC window.
pub fn base() -> u64 {
    BASE.load(Ordering::Relaxed)
}

/// Reads the APIC base from IA32_APIC_BASE (bootstrap processor, once).
pub fn discover() {
    // SAFETY: IA32_APIC_BASE exists on every x86-64 processor.
    let value = unsafe { msr::rdmsr(msr::Msr::ApicBase) };
    BASE.store(value & 0x000f_ffff_ffff_f000, Ordering::Relaxed);
}

/// Enables this processor's local APIC (software enable + spurious vector).
pub fn enable() {
    // SAFETY: IA32_APIC_BASE exists; setting bit 11 (global enable) keeps the base.
    unsafe {
        let value = msr::rdmsr(msr::Msr::ApicBase);
        msr::wrmsr(msr::Msr::ApicBase, value | (1 << 11));
    }
    write(SPURIOUS, 0x100 | idt::SPURIOUS_VECTOR as u32);
    ENABLED.store(true, Ordering::Release);
}

/// Whether `vector` is in service at this processor's local APIC: an
/// interrupt on it is being handled and waits for its EOI. False before
/// any local APIC is enabled.
pub fn in_service(vector: u8) -> bool {
    if !ENABLED.load(Ordering::Acquire) {
        return false;
    }
    read(ISR + 0x10 * (vector as usize / 32)) & (1 << (vector % 32)) != 0
}

/// This processor's APIC id.
pub fn id() -> u32 {
    read(ID) >> 24
}

/// Signals end of interrupt.
pub fn eoi() {
    write(EOI, 0);
}

/// Measures the timer against the PIT (bootstrap processor, once).
pub fn calibrate() {
    write(TIMER_DIVIDE, 0x3);
    write(LVT_TIMER, 1 << 16); // masked, one-shot
    write(TIMER_INITIAL, u32::MAX);
    let tsc = super::cpu::rdtsc();
    pit::sleep_us(10_000);
    let elapsed = u32::MAX - read(TIMER_CURRENT);
    let ticks = super::cpu::rdtsc().wrapping_sub(tsc);
    TSC_KHZ.store((ticks / 10).min(u32::MAX as u64) as u32, Ordering::Relaxed);
    write(TIMER_INITIAL, 0);
    COUNTS_PER_10MS.store(elapsed.max(1000), Ordering::Relaxed);
}

/// Time-stamp counter ticks per millisecond, from [`calibrate`].
static TSC_KHZ: AtomicU32 = AtomicU32::new(0);

/// Time-stamp counter ticks per millisecond (0 before [`calibrate`]).
pub fn tsc_khz() -> u32 {
    TSC_KHZ.load(Ordering::Relaxed)
}

/// Timer counts per 10 ms.
pub fn counts_per_10ms() -> u32 {
    COUNTS_PER_10MS.load(Ordering::Relaxed)
}

/// Starts the periodic timer on this processor with a period of `ms` milliseconds.
pub fn start_timer(ms: u32) {
    let count = (counts_per_10ms() as u64 * ms as u64 / 10).clamp(1, u32::MAX as u64) as u32;
    write(TIMER_DIVIDE, 0x3);
    write(LVT_TIMER, idt::TIMER_VECTOR as u32 | (1 << 17));
    write(TIMER_INITIAL, count);
}

fn wait_icr_idle() {
    while read(ICR_LOW) & (1 << 12) != 0 {
        core::hint::spin_loop();
    }
}

/// Sends INIT to `apic_id`.
pub fn send_init(apic_id: u32) {
    write(ICR_HIGH, apic_id << 24);
    write(ICR_LOW, 0x0000_4500); // INIT, assert, level
    wait_icr_idle();
    write(ICR_HIGH, apic_id << 24);
    write(ICR_LOW, 0x0000_8500); // INIT de-assert, level (legacy processors)
    wait_icr_idle();
}

/// Sends a start-up IPI to `apic_id` for the trampoline at `page` (a 4 KiB-aligned address below 1 MiB).
pub fn send_startup(apic_id: u32, page: u64) {
    write(ICR_HIGH, apic_id << 24);
    write(ICR_LOW, 0x0000_4600 | ((page >> 12) as u32 & 0xff));
    wait_icr_idle();
}

/// Sends a fixed interrupt with `vector` to the processor with `apic_id`.
pub fn send_ipi(apic_id: u32, vector: u8) {
    write(ICR_HIGH, apic_id << 24);
    write(ICR_LOW, vector as u32);
    wait_icr_idle();
}
