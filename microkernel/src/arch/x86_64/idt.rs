//! The interrupt descriptor table, the entry stubs, and the dispatcher that
//! turns an interrupt into a call of a safe handler with a [`TrapFrame`].

use core::arch::global_asm;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use x86_64::VirtAddr;
use x86_64::structures::DescriptorTablePointer;

use super::gdt;

/// Local APIC timer vector.
pub const TIMER_VECTOR: u8 = 0x30;
/// Wake-up IPI vector.
pub const WAKEUP_VECTOR: u8 = 0x31;
/// Local APIC spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// Registers saved by the entry stubs, in stack order.
#[repr(C)]
#[derive(Debug)]
#[allow(missing_docs)] // Register names.
pub struct TrapFrame {
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
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

global_asm!(
    r#"
    .section .text.isr, "ax"
/* One 16-byte stub per vector, vector v at isr_stubs + 16 * v. Vectors
   whose exception pushes an error code push only the vector; the others
   push a zero error code first, so every frame looks the same. */
    .balign 16
    .global isr_stubs
isr_stubs:
    .set vector, 0
    .rept 256
    .balign 16
    .if vector == 8 || (vector >= 10 && vector <= 14) || vector == 17 || vector == 21 || vector == 29 || vector == 30
    pushq $vector
    .else
    pushq $0
    pushq $vector
    .endif
    jmp isr_common
    .set vector, vector + 1
    .endr
    .balign 16
    .global isr_stubs_end
isr_stubs_end:

isr_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    cld
    call interrupt_dispatch
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    /* The dispatcher marks a frame whose error code the processor never
       pushed (an interrupt on an exception vector that has one). */
    cmpq $-1, (%rsp)
    je 1f
    add $16, %rsp
    iretq
1:
    add $8, %rsp
    iretq
"#,
    options(att_syntax)
);

/// Bytes of one entry stub.
const STUB_BYTES: usize = 16;

unsafe extern "C" {
    static isr_stubs: [u8; 256 * STUB_BYTES];
    static isr_stubs_end: u8;
}

/// Exception vectors whose exceptions push an error code.
const ERROR_CODE_VECTORS: [u64; 10] = [8, 10, 11, 12, 13, 14, 17, 21, 29, 30];
/// The non-maskable interrupt's vector.
const NMI_VECTOR: u64 = 2;
/// What the dispatcher writes over a frame's vector when the processor
/// pushed no error code (the entry code then pops one word less).
const NO_ERROR_CODE: u64 = u64::MAX;

/// Interrupts nobody expected: how many, and the first one's vector (+1; 0 = none).
static STRAY: AtomicU64 = AtomicU64::new(0);
static FIRST_STRAY: AtomicU32 = AtomicU32::new(0);

fn stray(vector: u64) {
    STRAY.fetch_add(1, Ordering::Relaxed);
    let _ =
        FIRST_STRAY.compare_exchange(0, vector as u32 + 1, Ordering::Relaxed, Ordering::Relaxed);
}

/// Stray interrupts taken so far and the vector of the first.
pub fn stray_interrupts() -> (u64, u8) {
    (
        STRAY.load(Ordering::Relaxed),
        FIRST_STRAY.load(Ordering::Relaxed).saturating_sub(1) as u8,
    )
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const EMPTY: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        attributes: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    fn interrupt(handler: u64, ist: u8) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: gdt::CODE,
            ist,
            attributes: 0x8e,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

/// An interrupt descriptor table.
#[repr(C, align(16))]
pub struct Idt([Gate; 256]);

impl Idt {
    /// An empty IDT.
    pub const fn new() -> Self {
        Idt([Gate::EMPTY; 256])
    }

    /// Installs every stub: double fault on IST 1, NMI on IST 2, machine check on IST 3.
    pub fn fill(&mut self) {
        // SAFETY: the assembly above defines 256 stubs of `STUB_BYTES`
        // each from `isr_stubs` to `isr_stubs_end`, never written; only
        // their addresses are taken.
        let (base, end) = unsafe {
            (
                isr_stubs.as_ptr() as u64,
                &isr_stubs_end as *const u8 as u64,
            )
        };
        assert_eq!(
            end - base,
            (256 * STUB_BYTES) as u64,
            "an interrupt entry stub outgrew its 16 bytes"
        );
        for (vector, gate) in self.0.iter_mut().enumerate() {
            let ist = match vector {
                8 => 1,
                2 => 2,
                18 => 3,
                _ => 0,
            };
            *gate = Gate::interrupt(base + (vector * STUB_BYTES) as u64, ist);
        }
    }

    /// Loads this IDT.
    ///
    /// # Safety
    /// The IDT must stay where it is for as long as the processor uses it.
    pub unsafe fn load(&self) {
        let pointer = DescriptorTablePointer {
            limit: (core::mem::size_of::<Idt>() - 1) as u16,
            base: VirtAddr::from_ptr(self),
        };
        // SAFETY: the caller keeps the IDT alive; its gates point at the stubs above.
        unsafe { x86_64::instructions::tables::lidt(&pointer) };
    }
}

/// Handles every interrupt and exception. An interrupt nobody expects —
/// a vector the microkernel does not use, a non-maskable interrupt, or a
/// message interrupt (a device's write to the local APIC's window, which
/// the root's DMA can make) on an exception vector — is counted,
/// acknowledged at the local APIC when it is in service there, and
/// otherwise ignored: it must never pass for an exception. An exception
/// vector is an interrupt exactly when its in-service bit is set.
#[unsafe(no_mangle)]
extern "C" fn interrupt_dispatch(frame: &mut TrapFrame) {
    let vector = frame.vector;
    match vector {
        NMI_VECTOR => stray(vector),
        0..=31 => {
            if !super::apic::in_service(vector as u8) {
                super::exceptions::fatal(frame)
            }
            stray(vector);
            super::apic::eoi();
            if ERROR_CODE_VECTORS.contains(&vector) {
                frame.vector = NO_ERROR_CODE;
            }
        }
        v if v == TIMER_VECTOR as u64 => {
            super::percpu::tick();
            super::apic::eoi();
        }
        v if v == WAKEUP_VECTOR as u64 => {
            super::percpu::kicked();
            super::apic::eoi();
        }
        v if (super::ioapic::VECTOR_BASE as u64
            ..super::ioapic::VECTOR_BASE as u64 + super::ioapic::LINES as u64)
            .contains(&v) =>
        {
            super::ioapic::fired((v - super::ioapic::VECTOR_BASE as u64) as u32);
            super::apic::eoi();
        }
        // A message interrupt: on a vector the kernel handed out it is
        // recorded for the kernel core; on any other it is a stray one.
        v if super::msi::is_message_vector(v) => {
            if !super::msi::fired(v as u8) {
                stray(v);
            }
            if super::apic::in_service(v as u8) {
                super::apic::eoi();
            }
        }
        // The local APIC's spurious vector: no EOI, unless a message
        // interrupt came on it (then it is in service and would block
        // every other vector until acknowledged).
        v if v == SPURIOUS_VECTOR as u64 => {
            if super::apic::in_service(SPURIOUS_VECTOR) {
                stray(v);
                super::apic::eoi();
            }
        }
        // Legacy PIC interrupts (masked) and vectors nobody uses.
        v => {
            stray(v);
            if super::apic::in_service(v as u8) {
                super::apic::eoi();
            }
        }
    }
}
