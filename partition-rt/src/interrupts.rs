//! Interrupt and exception dispatch: vectors 32–255 go to handlers
//! registered with [`set_interrupt_handler`]; vectors 0–31 (exceptions)
//! either complete an armed [`expect_fault`] or are reported through the
//! exception hook, after which the vCPU stops.
//!
//! # Invariants
//! - The handler table holds, per vector, 0 or a `fn(u8)` cast to `usize`;
//!   nothing else is ever stored there.
//! - An expected-fault record is armed, used and cleared by its own vCPU
//!   only (the exception is synchronous), so a fault on one vCPU never
//!   completes another vCPU's expectation.
//! - Handlers run with interrupts disabled (every gate is an interrupt
//!   gate) and must not wait for an interrupt.

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::arch;
use crate::cpu::{self, MAX_VCPUS};

/// What the entry stubs save, lowest address first.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
#[allow(missing_docs)] // Register names.
pub struct InterruptFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// The vector (pushed by the stub).
    pub vector: u64,
    /// The error code (the processor's, or 0).
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// An exception nobody expected, as passed to the exception hook.
#[derive(Clone, Copy, Debug)]
pub struct ExceptionReport {
    /// The vCPU that took it.
    pub vcpu: u32,
    /// The vector (0–31).
    pub vector: u8,
    /// The error code (0 if the exception has none).
    pub error_code: u64,
    /// Where it happened.
    pub rip: u64,
    /// The stack pointer at the time.
    pub rsp: u64,
    /// CR2 (meaningful for a page fault, vector 14).
    pub cr2: u64,
}

impl fmt::Display for ExceptionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "vcpu {}: unexpected exception {} at rip={:#x} (error code {:#x}, rsp={:#x}",
            self.vcpu, self.vector, self.rip, self.error_code, self.rsp
        )?;
        if self.vector == PAGE_FAULT {
            write!(f, ", cr2={:#x}", self.cr2)?;
        }
        write!(f, ")")
    }
}

/// Vector of #UD.
pub const INVALID_OPCODE: u8 = 6;
/// Vector of #GP.
pub const GENERAL_PROTECTION: u8 = 13;
/// Vector of #PF.
pub const PAGE_FAULT: u8 = 14;

static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];
static EXCEPTION_HOOK: AtomicUsize = AtomicUsize::new(0);
static SPURIOUS: AtomicU64 = AtomicU64::new(0);

/// Expected-fault records, one per vCPU: bits 0–7 the bytes to skip (0 =
/// not armed), bit 8 "a fault came", bits 16–23 its vector.
static EXPECTED: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
const FAULT_SEEN: u32 = 1 << 8;

/// Why a handler could not be registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReservedVector(pub u8);

/// Runs `handler(vector)` whenever `vector` (32–255) arrives, on any vCPU.
pub fn set_interrupt_handler(vector: u8, handler: fn(u8)) -> Result<(), ReservedVector> {
    if vector < ipc::hypercall::MIN_VECTOR {
        return Err(ReservedVector(vector));
    }
    HANDLERS[vector as usize].store(handler as usize, Ordering::Release);
    Ok(())
}

/// Forgets the handler of `vector`; it then counts as spurious.
pub fn clear_interrupt_handler(vector: u8) {
    HANDLERS[vector as usize].store(0, Ordering::Release);
}

/// Interrupts that arrived on a vector without a handler.
pub fn spurious_interrupts() -> u64 {
    SPURIOUS.load(Ordering::Relaxed)
}

/// Calls `hook` for an exception nobody expected, before the vCPU stops.
/// The default hook prints the report on the console.
pub fn set_exception_hook(hook: fn(&ExceptionReport)) {
    EXCEPTION_HOOK.store(hook as usize, Ordering::Release);
}

/// Arms this vCPU's expected-fault record, runs `f`, and returns the vector
/// of the exception `f` raised, if any. An exception while armed advances
/// RIP by `skip_bytes` (the length of the faulting instruction) and
/// disarms; so `f` should hold exactly one instruction that may fault,
/// `skip_bytes` long, and nothing else that could.
///
/// Before [`cpu::init_vcpu`] ran this vCPU has no IDT: do not call it then.
pub fn expect_fault(skip_bytes: u8, f: impl FnOnce()) -> Option<u8> {
    let record = cpu::current_vcpu().and_then(|v| EXPECTED.get(v as usize))?;
    record.store(u32::from(skip_bytes.max(1)), Ordering::SeqCst);
    f();
    let state = record.swap(0, Ordering::SeqCst);
    (state & FAULT_SEEN != 0).then_some((state >> 16) as u8)
}

/// Waits with interrupts enabled until `done()` holds, sleeping in HLT
/// between interrupts. Checks with interrupts disabled and sleeps with
/// `STI; HLT`, so an interrupt that makes `done()` true cannot slip in
/// between the check and the sleep. Returns with interrupts enabled.
pub fn wait_until(mut done: impl FnMut() -> bool) {
    loop {
        arch::disable_interrupts();
        if done() {
            arch::enable_interrupts();
            return;
        }
        arch::wait_for_interrupt();
    }
}

/// Interrupts taken (vectors from [`ipc::hypercall::MIN_VECTOR`] up,
/// handled or not), on every vCPU of the partition.
static TAKEN: AtomicU64 = AtomicU64::new(0);

/// How many interrupts this partition has taken so far: a loop that sleeps
/// in [`wait_until`] until this moves wakes on any interrupt.
pub fn taken() -> u64 {
    TAKEN.load(Ordering::Acquire)
}

/// Called by the entry stubs with the saved frame (see [`crate::arch`]).
pub extern "C" fn dispatch(frame: &mut InterruptFrame) {
    let vector = frame.vector as u8;
    if vector >= ipc::hypercall::MIN_VECTOR {
        TAKEN.fetch_add(1, Ordering::AcqRel);
        let handler = HANDLERS[vector as usize].load(Ordering::Acquire);
        if handler == 0 {
            SPURIOUS.fetch_add(1, Ordering::Relaxed);
        } else {
            // SAFETY: the table holds only `fn(u8)` pointers cast to usize
            // (module invariant), and this one is not 0.
            let handler: fn(u8) = unsafe { core::mem::transmute::<usize, fn(u8)>(handler) };
            handler(vector);
        }
        return;
    }
    let vcpu = cpu::current_vcpu().unwrap_or(u32::MAX);
    if let Some(record) = EXPECTED.get(vcpu as usize) {
        let state = record.load(Ordering::SeqCst);
        let skip = state & 0xff;
        if skip != 0 {
            record.store(FAULT_SEEN | (u32::from(vector) << 16), Ordering::SeqCst);
            frame.rip = frame.rip.wrapping_add(u64::from(skip));
            return;
        }
    }
    let report = ExceptionReport {
        vcpu,
        vector,
        error_code: frame.error_code,
        rip: frame.rip,
        rsp: frame.rsp,
        cr2: if vector == PAGE_FAULT {
            arch::read_cr2()
        } else {
            0
        },
    };
    match EXCEPTION_HOOK.load(Ordering::Acquire) {
        0 => crate::console::emergency_line(format_args!("{report}")),
        hook => {
            // SAFETY: only `fn(&ExceptionReport)` pointers cast to usize are
            // ever stored in EXCEPTION_HOOK.
            let hook: fn(&ExceptionReport) =
                unsafe { core::mem::transmute::<usize, fn(&ExceptionReport)>(hook) };
            hook(&report);
        }
    }
    arch::halt_forever()
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn frame_layout_matches_the_stubs() {
        // 15 registers, vector, error code, then the processor's 5 words.
        assert_eq!(size_of::<InterruptFrame>(), 22 * 8);
        assert_eq!(core::mem::offset_of!(InterruptFrame, rax), 14 * 8);
        assert_eq!(core::mem::offset_of!(InterruptFrame, vector), 15 * 8);
        assert_eq!(core::mem::offset_of!(InterruptFrame, rip), 17 * 8);
        assert_eq!(core::mem::offset_of!(InterruptFrame, ss), 21 * 8);
    }

    static HITS: AtomicU32 = AtomicU32::new(0);

    fn count(vector: u8) {
        HITS.fetch_add(u32::from(vector), Ordering::Relaxed);
    }

    #[test]
    fn external_vectors_reach_their_handler() {
        assert_eq!(set_interrupt_handler(13, count), Err(ReservedVector(13)));
        set_interrupt_handler(0x41, count).unwrap();
        let mut frame = InterruptFrame {
            vector: 0x41,
            ..Default::default()
        };
        dispatch(&mut frame);
        assert_eq!(HITS.load(Ordering::Relaxed), 0x41);
        clear_interrupt_handler(0x41);
        let before = spurious_interrupts();
        dispatch(&mut frame);
        assert_eq!(spurious_interrupts(), before + 1);
        assert_eq!(HITS.load(Ordering::Relaxed), 0x41);
    }

    #[test]
    fn reports_render() {
        let report = ExceptionReport {
            vcpu: 1,
            vector: 14,
            error_code: 2,
            rip: 0xffff_ffff_8000_1234,
            rsp: 0x7ff8,
            cr2: 0x1000_0000,
        };
        assert_eq!(
            report.to_string(),
            "vcpu 1: unexpected exception 14 at rip=0xffffffff80001234 (error code 0x2, rsp=0x7ff8, cr2=0x10000000)"
        );
    }
}
