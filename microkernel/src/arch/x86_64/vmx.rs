//! Intel VMX: turning VMX on for a processor and running a vCPU.
//!
//! The kernel core keeps each vCPU's guest state in a VMCB-layout block
//! (the "shadow"); the VMCS sits in the page right after it. The shadow is
//! mirrored in the VMCS lazily (`microkernel::vmx::sync`): after an exit
//! only what describes it is read (the rest when [`complete`] is called),
//! before an entry only what the core changed is written; the exit is
//! described in the shadow with the SVM exit codes. So everything above
//! this file is the same on both backends. vCPUs never move between
//! processors, so a VMCS is only ever current on the processor that set it up.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use microkernel::svm::vmcb::{GuestRegs, Vmcb, dirty, offset};
use microkernel::vmx::sync::{self, FixedBits, Vmcs};
use microkernel::vmx::{adjust_controls, field};
use x86::vmx::vmcs::control::{
    EntryControls, ExitControls, PinbasedControls, PrimaryControls, SecondaryControls,
};
use x86_64::registers::control::Cr4Flags;

use super::msr::{self, Msr};
use super::virt::Stamps;
use super::{cpu, percpu};

/// The CR0/CR4 bits VMX fixes to 1 (FIXED0) and allows to be 1 (FIXED1),
/// read once at `enable` (the same on every processor) instead of at every
/// VM entry.
static CR0_FIXED0: AtomicU64 = AtomicU64::new(0);
static CR0_FIXED1: AtomicU64 = AtomicU64::new(u64::MAX);
static CR4_FIXED0: AtomicU64 = AtomicU64::new(0);
static CR4_FIXED1: AtomicU64 = AtomicU64::new(u64::MAX);

/// Whether the processor has EPT accessed/dirty flags (dirty logging).
static EPT_AD: AtomicBool = AtomicBool::new(false);

/// The primary processor-based controls as last written (shadow bookkeeping).
const PRIMARY: usize = 0x3e8;
/// The interrupt-window exiting control (bit 2) if the processor has it, else 0.
const WINDOW: usize = 0x3e0;

#[inline]
fn vmread(field: u64) -> u64 {
    let value: u64;
    // SAFETY: a VMCS is current on this processor whenever this module
    // reads one (`enter` makes it current first); VMREAD of a valid field
    // only reads it.
    unsafe { asm!("vmread {v}, {f}", f = in(reg) field, v = out(reg) value, options(nostack)) };
    value
}

#[inline]
fn vmwrite(field: u64, value: u64) {
    // SAFETY: as for `vmread`: the current VMCS belongs to the vCPU being
    // prepared, and the fields written are architectural.
    unsafe { asm!("vmwrite {f}, {v}", f = in(reg) field, v = in(reg) value, options(nostack)) };
}

/// The VMCS current on this processor, for `microkernel::vmx::sync`.
struct CurrentVmcs;

impl Vmcs for CurrentVmcs {
    #[inline]
    fn read(&mut self, field: u64) -> u64 {
        vmread(field)
    }

    #[inline]
    fn write(&mut self, field: u64, value: u64) {
        vmwrite(field, value)
    }

    fn fixed_bits(&self) -> FixedBits {
        FixedBits {
            cr0_fixed0: CR0_FIXED0.load(Ordering::Relaxed),
            cr0_fixed1: CR0_FIXED1.load(Ordering::Relaxed),
            cr4_fixed0: CR4_FIXED0.load(Ordering::Relaxed),
            cr4_fixed1: CR4_FIXED1.load(Ordering::Relaxed),
        }
    }
}

/// Why VMX could not be turned on.
#[derive(Clone, Copy, Debug)]
pub enum VmxError {
    /// Firmware locked IA32_FEATURE_CONTROL with VMX disabled.
    DisabledByFirmware,
    /// No EPT or no VPID in the secondary controls.
    NoEpt,
    /// VMXON failed.
    VmxonFailed,
}

/// Whether the processor can run capvisor's VMX backend (EPT and VPID).
pub fn has_ept() -> bool {
    // SAFETY: the caller checked CPUID for VMX; the capability MSRs exist then.
    let (proc, proc2) = unsafe {
        (
            msr::rdmsr(Msr::VmxProcBased),
            msr::rdmsr(Msr::VmxProcBased2),
        )
    };
    // The high halves say which controls may be 1.
    let may_be_one = |capability: u64| (capability >> 32) as u32;
    PrimaryControls::from_bits_truncate(may_be_one(proc))
        .contains(PrimaryControls::SECONDARY_CONTROLS)
        && SecondaryControls::from_bits_truncate(may_be_one(proc2))
            .contains(SecondaryControls::ENABLE_EPT | SecondaryControls::ENABLE_VPID)
}

/// Turns VMX on for this processor with `vmxon_region` (a zeroed kernel page).
pub fn enable(vmxon_region: u64) -> Result<(), VmxError> {
    // SAFETY: the caller checked CPUID for VMX, so these MSRs exist; the
    // VMXON region is a zeroed, page-aligned kernel page owned by this
    // processor; setting CR4.VMXE and the fixed CR0/CR4 bits is what the
    // SDM requires before VMXON and changes nothing else the kernel uses.
    unsafe {
        let control = msr::rdmsr(Msr::FeatureControl);
        if control & 1 == 0 {
            msr::wrmsr(Msr::FeatureControl, control | 0b101);
        } else if control & 0b100 == 0 {
            return Err(VmxError::DisabledByFirmware);
        }
        if !has_ept() {
            return Err(VmxError::NoEpt);
        }
        let cr0 = (cpu::read_cr0() | msr::rdmsr(Msr::VmxCr0Fixed0)) & msr::rdmsr(Msr::VmxCr0Fixed1);
        cpu::write_cr0(cr0);
        let cr4 = (cpu::read_cr4()
            | Cr4Flags::VIRTUAL_MACHINE_EXTENSIONS.bits()
            | msr::rdmsr(Msr::VmxCr4Fixed0))
            & msr::rdmsr(Msr::VmxCr4Fixed1);
        cpu::write_cr4(cr4);
        let revision = msr::rdmsr(Msr::VmxBasic) as u32 & 0x7fff_ffff;
        core::ptr::write_volatile(vmxon_region as *mut u32, revision);
        let failed: u8;
        asm!("vmxon [{r}]", "setna {f}", r = in(reg) &vmxon_region, f = out(reg_byte) failed, options(nostack));
        if failed != 0 {
            return Err(VmxError::VmxonFailed);
        }
        CR0_FIXED0.store(msr::rdmsr(Msr::VmxCr0Fixed0), Ordering::Relaxed);
        CR0_FIXED1.store(msr::rdmsr(Msr::VmxCr0Fixed1), Ordering::Relaxed);
        CR4_FIXED0.store(msr::rdmsr(Msr::VmxCr4Fixed0), Ordering::Relaxed);
        CR4_FIXED1.store(msr::rdmsr(Msr::VmxCr4Fixed1), Ordering::Relaxed);
        let caps = msr::rdmsr(Msr::VmxEptVpidCap);
        EPT_AD.store(caps & (1 << 21) != 0, Ordering::Relaxed);
    }
    Ok(())
}

/// Whether EPT sets accessed/dirty flags (dirty logging needs them).
pub fn ept_dirty_flags() -> bool {
    EPT_AD.load(Ordering::Relaxed)
}

/// The EPT pointer for tables rooted at `root`: write-back, four levels,
/// accessed/dirty flags on when the processor has them.
pub fn ept_pointer(root: u64) -> u64 {
    root | 6
        | (3 << 3)
        | if EPT_AD.load(Ordering::Relaxed) {
            1 << 6
        } else {
            0
        }
}

/// The capability MSR for a control field, the "true" one when the processor has it.
fn capability(plain: Msr, true_msr: Msr) -> u64 {
    // SAFETY: VMX is on, so the capability MSRs exist; bit 55 of
    // IA32_VMX_BASIC says whether the true ones do.
    unsafe {
        if msr::rdmsr(Msr::VmxBasic) & (1 << 55) != 0 {
            msr::rdmsr(true_msr)
        } else {
            msr::rdmsr(plain)
        }
    }
}

/// Makes `vmcs` current and writes its controls and host state.
fn initialise(vmcs: u64, shadow: &mut Vmcb) {
    // SAFETY: `vmcs` is the kernel page after the vCPU's shadow; VMCLEAR,
    // the revision id and VMPTRLD make it a fresh current VMCS.
    unsafe {
        asm!("vmclear [{}]", in(reg) &vmcs, options(nostack));
        let revision = msr::rdmsr(Msr::VmxBasic) as u32 & 0x7fff_ffff;
        core::ptr::write_volatile(vmcs as *mut u32, revision);
        asm!("vmptrld [{}]", in(reg) &vmcs, options(nostack));
    }
    let pin = adjust_controls(
        (PinbasedControls::EXTERNAL_INTERRUPT_EXITING | PinbasedControls::NMI_EXITING).bits(),
        capability(Msr::VmxPinBased, Msr::VmxTruePinBased),
    );
    let primary_capability = capability(Msr::VmxProcBased, Msr::VmxTrueProcBased);
    let primary = adjust_controls(
        (PrimaryControls::HLT_EXITING
            | PrimaryControls::MWAIT_EXITING
            | PrimaryControls::MONITOR_EXITING
            | PrimaryControls::USE_IO_BITMAPS
            | PrimaryControls::USE_MSR_BITMAPS
            | PrimaryControls::SECONDARY_CONTROLS)
            .bits(),
        primary_capability,
    );
    // Interrupt-window exiting is switched per entry (`interrupt_window`).
    shadow.write_u64(PRIMARY, primary as u64);
    shadow.write_u64(
        WINDOW,
        (primary_capability >> 32) & u64::from(PrimaryControls::INTERRUPT_WINDOW_EXITING.bits()),
    );
    // SAFETY: the secondary-controls MSR exists (checked by `has_ept`).
    let secondary = adjust_controls(
        (SecondaryControls::ENABLE_EPT
            | SecondaryControls::ENABLE_VPID
            | SecondaryControls::WBINVD_EXITING)
            .bits(),
        unsafe { msr::rdmsr(Msr::VmxProcBased2) },
    );
    let exit = adjust_controls(
        (ExitControls::HOST_ADDRESS_SPACE_SIZE
            | ExitControls::SAVE_IA32_PAT
            | ExitControls::LOAD_IA32_PAT
            | ExitControls::SAVE_IA32_EFER
            | ExitControls::LOAD_IA32_EFER)
            .bits(),
        capability(Msr::VmxExit, Msr::VmxTrueExit),
    );
    let entry = adjust_controls(
        (EntryControls::IA32E_MODE_GUEST
            | EntryControls::LOAD_IA32_PAT
            | EntryControls::LOAD_IA32_EFER)
            .bits(),
        capability(Msr::VmxEntry, Msr::VmxTrueEntry),
    );
    vmwrite(field::PIN_BASED_CONTROLS, pin as u64);
    vmwrite(field::PRIMARY_CONTROLS, primary as u64);
    vmwrite(field::SECONDARY_CONTROLS, secondary as u64);
    vmwrite(field::EXIT_CONTROLS, exit as u64);
    vmwrite(field::ENTRY_CONTROLS, entry as u64);
    vmwrite(field::EXCEPTION_BITMAP, 0);
    for f in [
        field::EXIT_MSR_STORE_COUNT,
        field::EXIT_MSR_LOAD_COUNT,
        field::ENTRY_MSR_LOAD_COUNT,
    ] {
        vmwrite(f, 0);
    }
    vmwrite(field::CR0_GUEST_HOST_MASK, 0);
    vmwrite(
        field::CR4_GUEST_HOST_MASK,
        Cr4Flags::VIRTUAL_MACHINE_EXTENSIONS.bits(),
    );
    vmwrite(field::VMCS_LINK_POINTER, u64::MAX);
    vmwrite(field::VPID, shadow.read_u32(offset::GUEST_ASID) as u64);
    vmwrite(
        field::EPT_POINTER,
        ept_pointer(shadow.read_u64(offset::NESTED_CR3)),
    );
    let iopm = shadow.read_u64(offset::IOPM_BASE_PA);
    vmwrite(field::IO_BITMAP_A, iopm);
    vmwrite(field::IO_BITMAP_B, iopm + 0x1000);
    vmwrite(field::MSR_BITMAP, shadow.read_u64(offset::MSRPM_BASE_PA));

    // Host state: this processor's.
    let me = percpu::current();
    let (gdt_base, idt_base) = cpu::descriptor_table_bases();
    vmwrite(field::HOST_CR0, cpu::read_cr0());
    vmwrite(field::HOST_CR3, cpu::read_cr3());
    vmwrite(field::HOST_CR4, cpu::read_cr4());
    vmwrite(field::HOST_CS_SELECTOR, super::gdt::CODE as u64);
    for f in [
        field::HOST_SS_SELECTOR,
        field::HOST_DS_SELECTOR,
        field::HOST_ES_SELECTOR,
    ] {
        vmwrite(f, super::gdt::DATA as u64);
    }
    vmwrite(field::HOST_FS_SELECTOR, 0);
    vmwrite(field::HOST_GS_SELECTOR, 0);
    vmwrite(field::HOST_TR_SELECTOR, super::gdt::TSS as u64);
    vmwrite(field::HOST_FS_BASE, 0);
    // SAFETY: GS base and the other MSRs read here exist on every x86-64 processor with VMX.
    unsafe {
        vmwrite(field::HOST_GS_BASE, msr::rdmsr(Msr::GsBase));
        vmwrite(field::HOST_IA32_EFER, msr::rdmsr(Msr::Efer));
        vmwrite(field::HOST_IA32_PAT, msr::rdmsr(Msr::Pat));
    }
    vmwrite(field::HOST_TR_BASE, &me.tss as *const _ as u64);
    vmwrite(field::HOST_GDTR_BASE, gdt_base);
    vmwrite(field::HOST_IDTR_BASE, idt_base);
    vmwrite(field::HOST_SYSENTER_CS, 0);
    vmwrite(field::HOST_SYSENTER_ESP, 0);
    vmwrite(field::HOST_SYSENTER_EIP, 0);
    unsafe extern "C" {
        fn vmx_exit_stub();
    }
    vmwrite(field::HOST_RIP, vmx_exit_stub as *const () as u64);
}

global_asm!(
    r#"
    .section .text.vmx, "ax"
    .global vmx_enter
    .global vmx_exit_stub
/* rdi = &mut GuestRegs, rsi = &mut u64 (guest RAX), rdx = 1 if launched */
vmx_enter:
    push %rbp
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    push %rdi
    push %rsi
    push %rdx
    mov $0x6c14, %rax          /* HOST_RSP */
    vmwrite %rsp, %rax
    cmpq $0, (%rsp)
    mov (%rsi), %rax
    mov 0x00(%rdi), %rbx
    mov 0x08(%rdi), %rcx
    mov 0x10(%rdi), %rdx
    mov 0x18(%rdi), %rsi
    mov 0x28(%rdi), %rbp
    mov 0x30(%rdi), %r8
    mov 0x38(%rdi), %r9
    mov 0x40(%rdi), %r10
    mov 0x48(%rdi), %r11
    mov 0x50(%rdi), %r12
    mov 0x58(%rdi), %r13
    mov 0x60(%rdi), %r14
    mov 0x68(%rdi), %r15
    mov 0x20(%rdi), %rdi
    jne 1f
    vmlaunch
    jmp 2f
1:
    vmresume
2:
    /* VM entry failed: host registers are the guest's; the stack is ours. */
    add $24, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    mov $1, %eax
    ret

vmx_exit_stub:
    push %rax
    mov 24(%rsp), %rax         /* &mut GuestRegs */
    mov %rbx, 0x00(%rax)
    mov %rcx, 0x08(%rax)
    mov %rdx, 0x10(%rax)
    mov %rsi, 0x18(%rax)
    mov %rdi, 0x20(%rax)
    mov %rbp, 0x28(%rax)
    mov %r8, 0x30(%rax)
    mov %r9, 0x38(%rax)
    mov %r10, 0x40(%rax)
    mov %r11, 0x48(%rax)
    mov %r12, 0x50(%rax)
    mov %r13, 0x58(%rax)
    mov %r14, 0x60(%rax)
    mov %r15, 0x68(%rax)
    mov 16(%rsp), %rbx         /* &mut guest RAX */
    pop %rcx
    mov %rcx, (%rbx)
    add $24, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    xor %eax, %eax
    ret
"#,
    options(att_syntax)
);

unsafe extern "C" {
    fn vmx_enter(regs: *mut GuestRegs, rax: *mut u64, launched: u64) -> u64;
}

fn flush_guest_tlb() {
    let descriptor = [0u64; 2];
    // SAFETY: INVEPT/INVVPID all-context (type 2) with a valid descriptor
    // only drop cached translations.
    unsafe {
        asm!("invept {t}, [{d}]", t = in(reg) 2u64, d = in(reg) descriptor.as_ptr(), options(nostack));
        asm!("invvpid {t}, [{d}]", t = in(reg) 2u64, d = in(reg) descriptor.as_ptr(), options(nostack));
    }
}

/// Interrupt-window exiting exactly while the kernel core asks for the
/// window (a vector waits for the guest to take interrupts again).
fn interrupt_window(shadow: &mut Vmcb) {
    let primary = shadow.read_u64(PRIMARY);
    let window = shadow.read_u64(WINDOW);
    let wanted = if shadow.interrupt_window_requested() {
        primary | window
    } else {
        primary & !window
    };
    if wanted != primary {
        vmwrite(field::PRIMARY_CONTROLS, wanted);
        shadow.write_u64(PRIMARY, wanted);
    }
}

/// Runs the vCPU whose shadow is `shadow` until the next VM exit, and
/// describes the exit in the shadow in SVM terms. The rest of the guest
/// state stays in the VMCS until [`complete`].
pub fn enter(shadow: &mut Vmcb, regs: &mut GuestRegs) -> Stamps {
    let vmcs = shadow as *mut Vmcb as u64 + 4096;
    let me = percpu::current();
    if shadow.read_u64(sync::STATE) & sync::INITIALISED == 0 {
        initialise(vmcs, shadow);
        sync::initialised(shadow);
        me.current_vmcs.store(vmcs, Ordering::Relaxed);
    } else if me.current_vmcs.load(Ordering::Relaxed) != vmcs {
        // SAFETY: the VMCS was set up on this processor (vCPUs never move).
        unsafe { asm!("vmptrld [{}]", in(reg) &vmcs, options(nostack)) };
        me.current_vmcs.store(vmcs, Ordering::Relaxed);
    }
    if shadow.read_u64(offset::TLB_CONTROL) & 0xff != 0 {
        flush_guest_tlb();
    }
    let changed = sync::load(&mut CurrentVmcs, shadow);
    if changed & dirty::VIRTUAL_INTERRUPT != 0 {
        interrupt_window(shadow);
    }
    let launched = shadow.read_u64(sync::STATE) & sync::LAUNCHED;
    let mut rax = shadow.read_u64(offset::RAX);
    cpu::disable_interrupts_for_entry();
    let entered = cpu::rdtsc();
    // SAFETY: the current VMCS holds this vCPU's complete, consistent state
    // (controls and host state from `initialise`, the guest state written
    // by `sync::load` now or earlier and since changed only by the guest);
    // `vmx_enter` preserves the callee-saved registers and returns through
    // the exit stub or the failure path.
    let failed = unsafe { vmx_enter(regs, &mut rax, launched) };
    let stamps = Stamps {
        entered,
        exited: cpu::rdtsc(),
    };
    if failed != 0 {
        cpu::enable_interrupts();
        let error = vmread(field::VM_INSTRUCTION_ERROR);
        super::serial::write_line(format_args!(
            "VM entry failed: VM-instruction error {error}"
        ));
        // No exit cleared it: the event was not sent.
        vmwrite(field::ENTRY_INTERRUPTION_INFO, 0);
        shadow.write_u64(offset::EXIT_CODE, u64::MAX);
        shadow.write_u64(offset::EXIT_INFO1, error);
        return stamps;
    }
    shadow.write_u64(offset::RAX, rax);
    sync::exit(&mut CurrentVmcs, shadow);
    // A pending external interrupt is taken here, by the host.
    cpu::enable_interrupts();
    stamps
}

/// Reads into `shadow` the guest state its last exit left in the VMCS, so
/// the kernel core can look at all of it. The processor loop calls this for
/// every exit it does not answer on the null-hypercall fast path, on the
/// vCPU's processor before the vCPU's VMCS stops being current there.
///
/// # Panics
/// If the shadow is incomplete and its VMCS is not this processor's
/// current one (a kernel bug: the state would be lost).
pub fn complete(shadow: &mut Vmcb) {
    if sync::is_deferred(shadow) {
        let vmcs = shadow as *mut Vmcb as u64 + 4096;
        assert_eq!(
            percpu::current().current_vmcs.load(Ordering::Relaxed),
            vmcs,
            "guest state left in a VMCS that is not current here"
        );
        sync::complete(&mut CurrentVmcs, shadow);
    }
}
