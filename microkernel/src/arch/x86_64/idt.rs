//! The interrupt descriptor table, the entry stubs, and the dispatcher that
//! turns an interrupt into a call of a safe handler with a [`TrapFrame`].

use core::arch::{asm, global_asm};

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
    .macro STUB_NOERR n
    .balign 16
isr_stub_\n:
    push $0
    push $\n
    jmp isr_common
    .endm
    .macro STUB_ERR n
    .balign 16
isr_stub_\n:
    push $\n
    jmp isr_common
    .endm

    .section .text.isr, "ax"
    .irp n, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
    STUB_NOERR \n
    .endr
    .irp n, 8,10,11,12,13,14,17,21,29,30
    STUB_ERR \n
    .endr
    .irp n, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,255
    STUB_NOERR \n
    .endr
    .irp n, 80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96,97,98,99,100,101,102,103
    STUB_NOERR \n
    .endr

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
    add $16, %rsp
    iretq

    .section .rodata.isr, "a"
    .balign 8
    .global isr_stub_table
isr_stub_table:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad isr_stub_\n
    .endr
    .irp n, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49
    .quad isr_stub_\n
    .endr
    .quad isr_stub_255
    .irp n, 80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96,97,98,99,100,101,102,103
    .quad isr_stub_\n
    .endr
"#,
    options(att_syntax)
);

/// Vectors with a stub, in `isr_stub_table` order.
const STUB_VECTORS: usize = 50;

/// Device-interrupt stubs (vectors `ioapic::VECTOR_BASE..+LINES`) after the spurious one.
const DEVICE_STUBS: usize = super::ioapic::LINES as usize;

unsafe extern "C" {
    static isr_stub_table: [u64; STUB_VECTORS + 1 + DEVICE_STUBS];
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
        // SAFETY: the table is defined in the assembly above with exactly
        // STUB_VECTORS + 1 entries and is never written.
        let stubs = unsafe { &isr_stub_table };
        for (vector, &stub) in stubs.iter().enumerate().take(STUB_VECTORS) {
            let ist = match vector {
                8 => 1,
                2 => 2,
                18 => 3,
                _ => 0,
            };
            self.0[vector] = Gate::interrupt(stub, ist);
        }
        self.0[SPURIOUS_VECTOR as usize] = Gate::interrupt(stubs[STUB_VECTORS], 0);
        for line in 0..DEVICE_STUBS {
            let vector = super::ioapic::VECTOR_BASE as usize + line;
            self.0[vector] = Gate::interrupt(stubs[STUB_VECTORS + 1 + line], 0);
        }
    }

    /// Loads this IDT.
    ///
    /// # Safety
    /// The IDT must stay where it is for as long as the processor uses it.
    pub unsafe fn load(&self) {
        #[repr(C, packed)]
        struct Pointer {
            limit: u16,
            base: u64,
        }
        let pointer = Pointer {
            limit: (core::mem::size_of::<Idt>() - 1) as u16,
            base: self as *const Idt as u64,
        };
        // SAFETY: the caller keeps the IDT alive; its gates point at the stubs above.
        unsafe { asm!("lidt [{}]", in(reg) &pointer, options(nostack)) };
    }
}

#[unsafe(no_mangle)]
extern "C" fn interrupt_dispatch(frame: &mut TrapFrame) {
    match frame.vector {
        0..=31 => super::exceptions::fatal(frame),
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
        // Legacy PIC and APIC spurious interrupts: no EOI.
        _ => {}
    }
}
