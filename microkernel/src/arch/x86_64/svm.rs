//! AMD SVM: enabling it on a processor and entering guest mode.
//!
//! `enter` performs VMLOAD/VMRUN/VMSAVE for one vCPU between CLGI and STGI,
//! swapping the general-purpose registers VMRUN does not (everything but
//! RAX and RSP, which live in the VMCB). The host's FS/GS/TR/LDTR and
//! syscall MSRs are saved once per processor by VMSAVE into a host VMCB and
//! restored by VMLOAD after every exit.

use core::arch::{asm, global_asm};

use microkernel::svm::vmcb::{GuestRegs, Vmcb};

use super::cpu;
use super::msr::{self, Msr, efer};
use super::virt::Stamps;

global_asm!(
    r#"
    .section .text.svm, "ax"
    .global svm_enter
/* rdi = guest VMCB (physical), rsi = &mut GuestRegs, rdx = host VMCB (physical) */
svm_enter:
    push %rbp
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    push %rdx
    push %rsi
    mov %rdi, %rax
    mov 0x00(%rsi), %rbx
    mov 0x08(%rsi), %rcx
    mov 0x10(%rsi), %rdx
    mov 0x20(%rsi), %rdi
    mov 0x28(%rsi), %rbp
    mov 0x30(%rsi), %r8
    mov 0x38(%rsi), %r9
    mov 0x40(%rsi), %r10
    mov 0x48(%rsi), %r11
    mov 0x50(%rsi), %r12
    mov 0x58(%rsi), %r13
    mov 0x60(%rsi), %r14
    mov 0x68(%rsi), %r15
    mov 0x18(%rsi), %rsi
    clgi
    vmload %rax
    vmrun %rax
    vmsave %rax
    push %rsi
    mov 8(%rsp), %rsi
    mov %rbx, 0x00(%rsi)
    mov %rcx, 0x08(%rsi)
    mov %rdx, 0x10(%rsi)
    mov %rdi, 0x20(%rsi)
    mov %rbp, 0x28(%rsi)
    mov %r8, 0x30(%rsi)
    mov %r9, 0x38(%rsi)
    mov %r10, 0x40(%rsi)
    mov %r11, 0x48(%rsi)
    mov %r12, 0x50(%rsi)
    mov %r13, 0x58(%rsi)
    mov %r14, 0x60(%rsi)
    mov %r15, 0x68(%rsi)
    pop %rax
    mov %rax, 0x18(%rsi)
    pop %rsi
    pop %rax
    vmload %rax
    stgi
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    ret
"#,
    options(att_syntax)
);

unsafe extern "C" {
    fn svm_enter(vmcb: u64, regs: *mut GuestRegs, host_vmcb: u64);
}

/// Whether firmware disabled SVM (VM_CR.SVMDIS).
pub fn disabled_by_firmware() -> bool {
    // SAFETY: VM_CR exists on every processor that reports SVM (checked by the caller).
    unsafe { msr::rdmsr(Msr::VmCr) & (1 << 4) != 0 }
}

/// Turns SVM on for this processor and saves the host's VMLOAD state.
///
/// `host_save_area` and `host_vmcb` are zeroed, page-aligned kernel frames
/// owned by this processor.
pub fn enable(host_save_area: u64, host_vmcb: u64) {
    // SAFETY: the caller checked CPUID for SVM and VM_CR.SVMDIS; EFER.SVME
    // and VM_HSAVE_PA are then architecturally valid to write, and VMSAVE
    // writes only the host VMCB page.
    unsafe {
        let value = msr::rdmsr(Msr::Efer);
        msr::wrmsr(Msr::Efer, value | efer::SVME);
        msr::wrmsr(Msr::VmHsavePa, host_save_area);
        asm!("vmsave rax", in("rax") host_vmcb, options(nostack));
    }
}

/// Runs the vCPU whose VMCB is `vmcb` until the next #VMEXIT.
///
/// `host_vmcb` is the page `enable` filled on this processor.
pub fn enter(vmcb: &mut Vmcb, regs: &mut GuestRegs, host_vmcb: u64) -> Stamps {
    // Kernel memory is identity mapped: the VMCB's address is its physical address.
    let vmcb_pa = vmcb as *mut Vmcb as u64;
    let entered = cpu::rdtsc();
    // SAFETY: SVM is enabled on this processor (`enable`); the VMCB is a
    // page-aligned kernel page the caller holds exclusively (hardware
    // updates it through the same pointer during VMRUN); the host VMCB is
    // this processor's; `svm_enter` preserves every callee-saved register
    // and the host's segment state.
    unsafe { svm_enter(vmcb_pa, regs, host_vmcb) };
    Stamps {
        entered,
        exited: cpu::rdtsc(),
    }
}
