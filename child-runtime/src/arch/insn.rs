//! Probes of the `instructions` workload: instructions a partition gets no
//! effect from (the microkernel raises #UD or completes them as no-ops),
//! and the `STI; NOP; NOP; NOP; CLI` window a pending interrupt must be
//! taken in.
//!
//! # Invariants
//! Each probe that may fault runs under [`partition_rt::expect_fault`]
//! with the exact length of its one instruction, emitted as bytes.

use core::arch::asm;

/// Instructions the `instructions` workload tries.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)] // Instruction names.
pub enum Instruction {
    /// INVLPGA (0F 01 DF): RAX = address, ECX = ASID.
    Invlpga,
    /// MONITOR (0F 01 C8): RAX = address, ECX = extensions, EDX = hints.
    Monitor,
    /// MWAIT (0F 01 C9): EAX = hints, ECX = extensions.
    Mwait,
    /// WBINVD (0F 09).
    Wbinvd,
    /// INVD (0F 08).
    Invd,
}

impl Instruction {
    /// Bytes of the instruction.
    const fn length(self) -> u8 {
        match self {
            Instruction::Invlpga | Instruction::Monitor | Instruction::Mwait => 3,
            Instruction::Wbinvd | Instruction::Invd => 2,
        }
    }
}

/// Executes `instruction` (address operands 0x1000, the boot page; ASID,
/// hints and extensions 0); returns the vector it raised, `None` if it
/// completed.
pub fn probe(instruction: Instruction) -> Option<u8> {
    partition_rt::expect_fault(instruction.length(), || {
        // SAFETY: under the microkernel each of these either raises #UD
        // (absorbed by the armed expected fault) or completes without
        // effect on memory: INVLPGA and MONITOR only name an address,
        // MWAIT with nothing armed returns, and the microkernel completes
        // WBINVD and INVD as no-ops (on the processor INVD could drop the
        // child's own dirty lines).
        unsafe {
            match instruction {
                Instruction::Invlpga => asm!(
                    ".byte 0x0f, 0x01, 0xdf",
                    in("rax") 0x1000u64, in("ecx") 0u32, options(nostack)
                ),
                Instruction::Monitor => asm!(
                    ".byte 0x0f, 0x01, 0xc8",
                    in("rax") 0x1000u64, in("ecx") 0u32, in("edx") 0u32, options(nostack)
                ),
                Instruction::Mwait => asm!(
                    ".byte 0x0f, 0x01, 0xc9",
                    in("eax") 0u32, in("ecx") 0u32, options(nostack)
                ),
                Instruction::Wbinvd => asm!(".byte 0x0f, 0x09", options(nostack)),
                Instruction::Invd => asm!(".byte 0x0f, 0x08", options(nostack)),
            }
        }
    })
}

/// Opens an interrupt window of three instructions: `STI; NOP; NOP; NOP;
/// CLI`. Called with interrupts off; returns with them off.
pub fn interrupt_window() {
    // SAFETY: the window only lets the vCPU take its pending interrupts,
    // whose handlers are installed; interrupts are off again after it.
    unsafe { asm!("sti", "nop", "nop", "nop", "cli", options(nomem, nostack)) };
}
