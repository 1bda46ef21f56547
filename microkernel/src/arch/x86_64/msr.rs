//! Model-specific registers the microkernel uses, by name: the numbers are
//! the `x86` crate's (`x86::msr`), except the AMD SVM ones it lacks; RDMSR
//! and WRMSR are the `x86_64` crate's.

use x86::msr as number;
use x86_64::registers::model_specific::{EferFlags, Msr as Register};

/// The MSRs the microkernel reads or writes.
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
pub enum Msr {
    /// IA32_APIC_BASE.
    ApicBase = number::IA32_APIC_BASE,
    /// IA32_FEATURE_CONTROL (lock, VMX outside SMX).
    FeatureControl = number::IA32_FEATURE_CONTROL,
    /// IA32_PAT.
    Pat = number::IA32_PAT,
    /// IA32_VMX_BASIC (VMCS revision, true-controls support).
    VmxBasic = number::IA32_VMX_BASIC,
    /// IA32_VMX_PINBASED_CTLS.
    VmxPinBased = number::IA32_VMX_PINBASED_CTLS,
    /// IA32_VMX_PROCBASED_CTLS.
    VmxProcBased = number::IA32_VMX_PROCBASED_CTLS,
    /// IA32_VMX_EXIT_CTLS.
    VmxExit = number::IA32_VMX_EXIT_CTLS,
    /// IA32_VMX_ENTRY_CTLS.
    VmxEntry = number::IA32_VMX_ENTRY_CTLS,
    /// IA32_VMX_CR0_FIXED0.
    VmxCr0Fixed0 = number::IA32_VMX_CR0_FIXED0,
    /// IA32_VMX_CR0_FIXED1.
    VmxCr0Fixed1 = number::IA32_VMX_CR0_FIXED1,
    /// IA32_VMX_CR4_FIXED0.
    VmxCr4Fixed0 = number::IA32_VMX_CR4_FIXED0,
    /// IA32_VMX_CR4_FIXED1.
    VmxCr4Fixed1 = number::IA32_VMX_CR4_FIXED1,
    /// IA32_VMX_PROCBASED_CTLS2.
    VmxProcBased2 = number::IA32_VMX_PROCBASED_CTLS2,
    /// IA32_VMX_EPT_VPID_CAP.
    VmxEptVpidCap = number::IA32_VMX_EPT_VPID_CAP,
    /// IA32_VMX_TRUE_PINBASED_CTLS.
    VmxTruePinBased = number::IA32_VMX_TRUE_PINBASED_CTLS,
    /// IA32_VMX_TRUE_PROCBASED_CTLS.
    VmxTrueProcBased = number::IA32_VMX_TRUE_PROCBASED_CTLS,
    /// IA32_VMX_TRUE_EXIT_CTLS.
    VmxTrueExit = number::IA32_VMX_TRUE_EXIT_CTLS,
    /// IA32_VMX_TRUE_ENTRY_CTLS.
    VmxTrueEntry = number::IA32_VMX_TRUE_ENTRY_CTLS,
    /// Extended feature enables (LME, NXE, SVME).
    Efer = number::IA32_EFER,
    /// GS base (the current CPU's `PerCpu`).
    GsBase = number::IA32_GS_BASE,
    /// SVM: VM_CR (SVMDIS is bit 4). Not in the `x86` crate.
    VmCr = 0xc001_0114,
    /// SVM: physical address of the host state-save area. Not in the `x86` crate.
    VmHsavePa = 0xc001_0117,
}

/// EFER bits (the `x86_64` crate's `EferFlags`).
pub mod efer {
    use super::EferFlags;

    /// No-execute enable.
    pub const NXE: u64 = EferFlags::NO_EXECUTE_ENABLE.bits();
    /// SVM enable.
    pub const SVME: u64 = EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE.bits();
}

/// Reads an MSR.
///
/// # Safety
/// The MSR must exist on this processor (otherwise #GP).
pub unsafe fn rdmsr(msr: Msr) -> u64 {
    // SAFETY: the caller guarantees the MSR exists; RDMSR touches no memory.
    unsafe { Register::new(msr as u32).read() }
}

/// Writes an MSR.
///
/// # Safety
/// The MSR must exist and the value must be valid for it; writing changes
/// processor state the rest of the kernel relies on.
pub unsafe fn wrmsr(msr: Msr, value: u64) {
    // SAFETY: the caller guarantees the MSR and value are valid.
    unsafe { Register::new(msr as u32).write(value) }
}

/// Sets EFER.NXE when the processor supports no-execute pages.
pub fn enable_nx_if_supported(supported: bool) {
    if supported {
        // SAFETY: EFER exists; NXE is valid to set when CPUID reports NX.
        unsafe { wrmsr(Msr::Efer, rdmsr(Msr::Efer) | efer::NXE) };
    }
}
