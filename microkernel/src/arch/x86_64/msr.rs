//! Model-specific registers the microkernel uses, by name.

use core::arch::asm;

/// The MSRs the microkernel reads or writes.
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
pub enum Msr {
    /// IA32_APIC_BASE.
    ApicBase = 0x1b,
    /// Extended feature enables (LME, NXE, SVME).
    Efer = 0xc000_0080,
    /// GS base (the current CPU's `PerCpu`).
    GsBase = 0xc000_0101,
    /// SVM: VM_CR (SVMDIS is bit 4).
    VmCr = 0xc001_0114,
    /// SVM: physical address of the host state-save area.
    VmHsavePa = 0xc001_0117,
}

/// EFER bits.
pub mod efer {
    /// No-execute enable.
    pub const NXE: u64 = 1 << 11;
    /// SVM enable.
    pub const SVME: u64 = 1 << 12;
}

/// Reads an MSR.
///
/// # Safety
/// The MSR must exist on this processor (otherwise #GP).
pub unsafe fn rdmsr(msr: Msr) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists; RDMSR touches no memory.
    unsafe {
        asm!("rdmsr", in("ecx") msr as u32, out("eax") lo, out("edx") hi, options(nomem, nostack))
    };
    ((hi as u64) << 32) | lo as u64
}

/// Writes an MSR.
///
/// # Safety
/// The MSR must exist and the value must be valid for it; writing changes
/// processor state the rest of the kernel relies on.
pub unsafe fn wrmsr(msr: Msr, value: u64) {
    // SAFETY: the caller guarantees the MSR and value are valid.
    unsafe {
        asm!("wrmsr", in("ecx") msr as u32, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack))
    };
}

/// Sets EFER.NXE when the processor supports no-execute pages.
pub fn enable_nx_if_supported(supported: bool) {
    if supported {
        // SAFETY: EFER exists; NXE is valid to set when CPUID reports NX.
        unsafe { wrmsr(Msr::Efer, rdmsr(Msr::Efer) | efer::NXE) };
    }
}
