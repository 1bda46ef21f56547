//! Processor identification, control registers, the interrupt flag, HLT
//! and the time-stamp counter: on the `x86_64` crate, except CPUID and
//! RDTSC (`core::arch`; the crate has no wrapper) and the deliberate
//! triple fault.

use core::arch::asm;
use core::arch::x86_64::{__cpuid_count, CpuidResult};

use x86_64::PhysAddr;
use x86_64::instructions::{interrupts, tables};
use x86_64::registers::control::{Cr0, Cr2, Cr3, Cr4};
use x86_64::structures::paging::PhysFrame;

/// Executes CPUID.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    __cpuid_count(leaf, subleaf)
}

/// Virtualization support the processor reports.
#[derive(Clone, Copy, Debug)]
pub struct VirtFeatures {
    /// AMD SVM (CPUID 0x80000001 ECX bit 2).
    pub svm: bool,
    /// Nested paging (CPUID 0x8000000A EDX bit 0).
    pub npt: bool,
    /// Number of ASIDs (CPUID 0x8000000A EBX).
    pub asids: u32,
    /// Intel VMX (CPUID 1 ECX bit 5).
    pub vmx: bool,
    /// No-execute pages (CPUID 0x80000001 EDX bit 20).
    pub nx: bool,
}

/// Reads the virtualization features.
pub fn virt_features() -> VirtFeatures {
    let max_ext = cpuid(0x8000_0000, 0).eax;
    let ext = if max_ext >= 0x8000_0001 {
        cpuid(0x8000_0001, 0)
    } else {
        CpuidResult {
            eax: 0,
            ebx: 0,
            ecx: 0,
            edx: 0,
        }
    };
    let svm = ext.ecx & (1 << 2) != 0;
    let (npt, asids) = if svm && max_ext >= 0x8000_000a {
        let leaf = cpuid(0x8000_000a, 0);
        (leaf.edx & 1 != 0, leaf.ebx)
    } else {
        (false, 0)
    };
    VirtFeatures {
        svm,
        npt,
        asids,
        vmx: cpuid(1, 0).ecx & (1 << 5) != 0,
        nx: ext.edx & (1 << 20) != 0,
    }
}

/// Loads CR3.
///
/// # Safety
/// `root` must be a valid PML4 that maps the running code, its stack and
/// every structure the kernel touches.
pub unsafe fn write_cr3(root: u64) {
    let frame = PhysFrame::containing_address(PhysAddr::new_truncate(root));
    // SAFETY: guaranteed by the caller; the low 12 bits (PWT, PCD) are
    // written as given.
    unsafe { Cr3::write_raw(frame, (root & 0xfff) as u16) };
}

/// Reads CR0.
pub fn read_cr0() -> u64 {
    Cr0::read_raw()
}

/// Writes CR0.
///
/// # Safety
/// The value must keep paging, protection and every feature the kernel
/// relies on enabled (it may only add bits such as the VMX fixed ones).
pub unsafe fn write_cr0(value: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe { Cr0::write_raw(value) };
}

/// Reads CR2 (the last page-fault address).
pub fn read_cr2() -> u64 {
    Cr2::read_raw()
}

/// Reads CR3 (the top-level table's address and the PWT/PCD bits).
pub fn read_cr3() -> u64 {
    let (frame, low) = Cr3::read_raw();
    frame.start_address().as_u64() | u64::from(low)
}

/// Reads CR4.
pub fn read_cr4() -> u64 {
    Cr4::read_raw()
}

/// Writes CR4.
///
/// # Safety
/// As for [`write_cr0`].
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe { Cr4::write_raw(value) };
}

/// The base addresses of the GDT and the IDT this processor has loaded.
pub fn descriptor_table_bases() -> (u64, u64) {
    (tables::sgdt().base.as_u64(), tables::sidt().base.as_u64())
}

/// Enables interrupts (the IDT is loaded before any caller runs this).
pub fn enable_interrupts() {
    interrupts::enable();
}

/// Waits for the next interrupt with interrupts enabled (`STI; HLT`,
/// atomic: an interrupt pending before is not missed).
pub fn wait_for_interrupt() {
    interrupts::enable_and_hlt();
}

/// Stops this processor for good.
pub fn halt_forever() -> ! {
    loop {
        interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Reads the time-stamp counter (instructions, under QEMU `-icount shift=0`).
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Disables interrupts just before VM entry (a VMX exit returns with them
/// off; the caller enables them again after the exit).
pub fn disable_interrupts_for_entry() {
    interrupts::disable();
}

/// Resets this processor (and, on a PC, the machine) by a triple fault:
/// an empty interrupt descriptor table, then an exception.
pub fn triple_fault() -> ! {
    let empty = [0u8; 10];
    // SAFETY: the machine is being reset on purpose; with a zero-limit IDT
    // the breakpoint cannot be delivered, which shuts the processor down.
    unsafe { asm!("cli", "lidt [{}]", "int3", in(reg) empty.as_ptr(), options(noreturn, nostack)) }
}
