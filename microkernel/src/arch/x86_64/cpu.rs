//! Processor identification and control registers.

use core::arch::asm;
use core::arch::x86_64::{__cpuid_count, CpuidResult};

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
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("mov cr3, {}", in(reg) root, options(nostack)) };
}

/// Reads CR2 (the last page-fault address).
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads CR3.
pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Enables interrupts.
pub fn enable_interrupts() {
    // SAFETY: the IDT is loaded before any caller runs this.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

/// Waits for the next interrupt with interrupts enabled.
pub fn wait_for_interrupt() {
    // SAFETY: STI; HLT atomically enables interrupts and sleeps until one.
    unsafe { asm!("sti; hlt", options(nomem, nostack)) };
}

/// Stops this processor for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: halting with interrupts off stops the processor.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}

/// Reads the time-stamp counter (instructions, under QEMU `-icount shift=0`).
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC only reads the counter.
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    ((hi as u64) << 32) | lo as u64
}

/// Disables interrupts just before VM entry (a VMX exit returns with them
/// off; the caller enables them again after the exit).
pub fn disable_interrupts_for_entry() {
    // SAFETY: CLI only masks interrupts.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// Resets this processor (and, on a PC, the machine) by a triple fault:
/// an empty interrupt descriptor table, then an exception.
pub fn triple_fault() -> ! {
    let empty = [0u8; 10];
    // SAFETY: the machine is being reset on purpose; with a zero-limit IDT
    // the breakpoint cannot be delivered, which shuts the processor down.
    unsafe { asm!("cli", "lidt [{}]", "int3", in(reg) empty.as_ptr(), options(noreturn, nostack)) }
}
