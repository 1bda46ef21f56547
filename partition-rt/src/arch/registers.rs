//! Processor registers a partition reads: the time-stamp counter, CR2 and
//! CR3, CPUID, model-specific registers; and the one-page TLB flush. On the
//! `x86_64` crate where it has a wrapper, on `core::arch` where it has not
//! (RDTSC, CPUID).
//!
//! # Invariants
//! Reading CR2, CR3, the time-stamp counter or CPUID has no side effect in
//! ring 0 of a partition (the microkernel emulates CPUID). MSR access is
//! `unsafe`: an MSR the microkernel does not emulate raises #GP.

use core::arch::x86_64::CpuidResult;

use x86_64::VirtAddr;
use x86_64::registers::control::{Cr2, Cr3};
use x86_64::registers::model_specific::Msr;

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC reads a counter into EDX:EAX and has no other effect
    // (the `x86_64` crate has no wrapper for it).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// CR2: the linear address of the last page fault.
pub fn read_cr2() -> u64 {
    Cr2::read_raw()
}

/// CR3: the physical address of the top-level page table, with the flag
/// bits (PWT, PCD) in the low 12 bits, as the register holds it.
pub fn read_cr3() -> u64 {
    let (frame, low) = Cr3::read_raw();
    frame.start_address().as_u64() | u64::from(low)
}

/// CPUID `leaf`, `subleaf`.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    core::arch::x86_64::__cpuid_count(leaf, subleaf)
}

/// Reads model-specific register `msr`.
///
/// # Safety
/// The microkernel must emulate `msr` for this partition, or the caller
/// must have armed [`crate::expect_fault`] for the 2-byte RDMSR: any other
/// read raises #GP.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    // SAFETY: RDMSR touches no memory; the MSR exists or the fault is
    // expected (caller's contract).
    unsafe { Msr::new(msr).read() }
}

/// Writes model-specific register `msr`.
///
/// # Safety
/// As for [`rdmsr`] (2-byte WRMSR), and the value must be one the
/// partition can live with: the microkernel refuses changes it does not
/// allow with #GP, but one it allows takes effect.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: WRMSR touches no memory; the MSR and value are the caller's
    // contract above.
    unsafe { Msr::new(msr).write(value) }
}

/// Flushes the TLB entry of the page holding virtual address `addr`
/// (`INVLPG`; a non-canonical address is made canonical first).
pub fn flush_page(addr: u64) {
    x86_64::instructions::tlb::flush(VirtAddr::new_truncate(addr));
}
