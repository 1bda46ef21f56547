//! Model-specific registers the microkernel uses, by name.

use core::arch::asm;

/// The MSRs the microkernel reads or writes.
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
pub enum Msr {
    /// IA32_APIC_BASE.
    ApicBase = 0x1b,
    /// IA32_FEATURE_CONTROL (lock, VMX outside SMX).
    FeatureControl = 0x3a,
    /// IA32_PAT.
    Pat = 0x277,
    /// IA32_VMX_BASIC (VMCS revision, true-controls support).
    VmxBasic = 0x480,
    /// IA32_VMX_PINBASED_CTLS.
    VmxPinBased = 0x481,
    /// IA32_VMX_PROCBASED_CTLS.
    VmxProcBased = 0x482,
    /// IA32_VMX_EXIT_CTLS.
    VmxExit = 0x483,
    /// IA32_VMX_ENTRY_CTLS.
    VmxEntry = 0x484,
    /// IA32_VMX_CR0_FIXED0.
    VmxCr0Fixed0 = 0x486,
    /// IA32_VMX_CR0_FIXED1.
    VmxCr0Fixed1 = 0x487,
    /// IA32_VMX_CR4_FIXED0.
    VmxCr4Fixed0 = 0x488,
    /// IA32_VMX_CR4_FIXED1.
    VmxCr4Fixed1 = 0x489,
    /// IA32_VMX_PROCBASED_CTLS2.
    VmxProcBased2 = 0x48b,
    /// IA32_VMX_EPT_VPID_CAP.
    VmxEptVpidCap = 0x48c,
    /// IA32_VMX_TRUE_PINBASED_CTLS.
    VmxTruePinBased = 0x48d,
    /// IA32_VMX_TRUE_PROCBASED_CTLS.
    VmxTrueProcBased = 0x48e,
    /// IA32_VMX_TRUE_EXIT_CTLS.
    VmxTrueExit = 0x48f,
    /// IA32_VMX_TRUE_ENTRY_CTLS.
    VmxTrueEntry = 0x490,
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
