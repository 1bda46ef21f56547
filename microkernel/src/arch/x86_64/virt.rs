//! The virtualization backend, chosen once at boot from CPUID: AMD SVM with
//! nested paging, or Intel VMX with EPT. Everything above `arch/` calls
//! these functions and never names a backend.

use core::sync::atomic::{AtomicU8, Ordering};

use microkernel::svm::vmcb::{GuestRegs, Vmcb};

use super::{svm, vmx};

/// A virtualization backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// AMD SVM + NPT.
    Svm,
    /// Intel VMX + EPT.
    Vmx,
}

impl Backend {
    /// Its name in the boot log (`svm`, `vmx`).
    pub const fn name(self) -> &'static str {
        match self {
            Backend::Svm => "svm",
            Backend::Vmx => "vmx",
        }
    }

    /// Its second-level address translation (`npt`, `ept`).
    pub const fn slat(self) -> &'static str {
        match self {
            Backend::Svm => "npt",
            Backend::Vmx => "ept",
        }
    }

    /// The boot page's `backend` value.
    pub const fn boot_code(self) -> u32 {
        match self {
            Backend::Svm => 1,
            Backend::Vmx => 2,
        }
    }
}

static BACKEND: AtomicU8 = AtomicU8::new(0);

/// Records the backend (bootstrap processor, once).
pub fn select(backend: Backend) {
    BACKEND.store(backend as u8 + 1, Ordering::Relaxed);
}

/// The backend in use.
pub fn backend() -> Backend {
    if BACKEND.load(Ordering::Relaxed) == Backend::Vmx as u8 + 1 {
        Backend::Vmx
    } else {
        Backend::Svm
    }
}

/// Turns virtualization on for this processor. `host_area` and `host_vmcb`
/// are zeroed kernel pages of this processor's.
pub fn enable(host_area: u64, host_vmcb: u64) -> Result<(), vmx::VmxError> {
    match backend() {
        Backend::Svm => {
            svm::enable(host_area, host_vmcb);
            Ok(())
        }
        Backend::Vmx => vmx::enable(host_area),
    }
}

/// Time-stamp counter readings around one run of a guest, taken by the
/// backend: `entered` by the last kernel code before the world switch into
/// the guest, `exited` by the first after it came back. Between them lies
/// only the world switch itself (the register swap and VMRUN, or VMRESUME
/// and the exit stub); everything the backend does to prepare an entry or
/// describe an exit (on VMX: the VMCS copies) lies outside, in the
/// microkernel's path that `cargo image bench` measures.
#[derive(Clone, Copy, Debug)]
pub struct Stamps {
    /// Just before the world switch into the guest.
    pub entered: u64,
    /// Just after the world switch back.
    pub exited: u64,
}

/// Runs a vCPU until its next exit; the exit is described in its VMCB in
/// SVM terms on both backends.
pub fn enter(vmcb: &mut Vmcb, regs: &mut GuestRegs, host_vmcb: u64) -> Stamps {
    match backend() {
        Backend::Svm => {
            let stamps = svm::enter(vmcb, regs, host_vmcb);
            vmcb.reinject_interrupted_event();
            stamps
        }
        Backend::Vmx => vmx::enter(vmcb, regs),
    }
}

/// Makes a vCPU's VMCB complete after [`enter`] returned: on VMX the
/// backend reads only what describes an exit, and the rest of the guest
/// state when this is called (SVM: nothing to do, VMRUN wrote it all). The
/// processor loop calls it for every exit it hands to the kernel core.
#[inline]
pub fn complete(vmcb: &mut Vmcb) {
    if backend() == Backend::Vmx {
        vmx::complete(vmcb);
    }
}

/// Pages a vCPU's hardware context takes: the VMCB (the guest-state block),
/// and on VMX the VMCS after it.
pub fn context_pages() -> usize {
    match backend() {
        Backend::Svm => 1,
        Backend::Vmx => 2,
    }
}
