//! Per-vCPU descriptor tables: a GDT (null, 64-bit code at
//! [`CODE_SELECTOR`], data at [`DATA_SELECTOR`]) and an IDT whose 256 gates
//! all point at the entry stubs of [`crate::arch`].
//!
//! # Invariants
//! - Table set `i` belongs to the vCPU that called [`init_vcpu`]`(i)`; a
//!   claim flag per set makes that happen at most once, so each set is
//!   written by one vCPU, before it loads it, and never again.
//! - The descriptors carry the accessed bit already, so the processor never
//!   writes to a loaded GDT.
//! - Which set a vCPU loaded identifies the vCPU: [`current_vcpu`] reads
//!   IDTR back instead of keeping per-vCPU state in a register.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch;

/// Most vCPUs a partition using this crate may have.
pub const MAX_VCPUS: usize = 16;
/// The 64-bit code segment selector.
pub const CODE_SELECTOR: u16 = 0x08;
/// The data segment selector.
pub const DATA_SELECTOR: u16 = 0x10;

/// GDT entries: null; code (present, ring 0, exec/read, accessed, L=1);
/// data (present, ring 0, read/write, accessed, 4 GiB, D/B=1).
pub const GDT: [u64; 3] = [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];

/// One IDT gate (16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct IdtGate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attributes: u8,
    offset_middle: u16,
    offset_high: u32,
    reserved: u32,
}

impl IdtGate {
    /// A present ring-0 64-bit interrupt gate (interrupts disabled on entry)
    /// to `handler` in the code segment `selector`.
    pub const fn interrupt_gate(handler: u64, selector: u16) -> IdtGate {
        IdtGate {
            offset_low: handler as u16,
            selector,
            ist: 0,
            type_attributes: 0x8e,
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }

    /// The handler address the gate points at.
    pub const fn handler(&self) -> u64 {
        self.offset_low as u64
            | ((self.offset_middle as u64) << 16)
            | ((self.offset_high as u64) << 32)
    }
}

/// Fills `idt` with gates to the entry stubs starting at `stub_base`.
pub fn fill_idt(idt: &mut [IdtGate; 256], stub_base: u64) {
    for (vector, gate) in idt.iter_mut().enumerate() {
        *gate =
            IdtGate::interrupt_gate(stub_base + vector as u64 * arch::STUB_BYTES, CODE_SELECTOR);
    }
}

/// One vCPU's tables.
#[repr(C, align(16))]
struct Tables {
    gdt: [u64; 3],
    idt: [IdtGate; 256],
}

/// The table sets, one per vCPU index.
struct TableSets([UnsafeCell<Tables>; MAX_VCPUS]);

// SAFETY: set `i` is written only by the one vCPU that claimed it (module
// invariant), before that vCPU loads it; afterwards it is only read (by the
// processor).
unsafe impl Sync for TableSets {}

static TABLES: TableSets = TableSets(
    [const {
        UnsafeCell::new(Tables {
            gdt: [0; 3],
            idt: [IdtGate {
                offset_low: 0,
                selector: 0,
                ist: 0,
                type_attributes: 0,
                offset_middle: 0,
                offset_high: 0,
                reserved: 0,
            }; 256],
        })
    }; MAX_VCPUS],
);

static CLAIMED: [AtomicBool; MAX_VCPUS] = [const { AtomicBool::new(false) }; MAX_VCPUS];

/// Why [`init_vcpu`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// The index is [`MAX_VCPUS`] or more.
    TooManyVcpus,
    /// Some vCPU already initialised this index.
    AlreadyInitialised,
}

/// Builds this vCPU's GDT and IDT (set `index`), loads them, and reloads
/// CS, SS, DS and ES. Call once per vCPU, first thing, with interrupts
/// disabled; afterwards exceptions are reported through
/// [`crate::interrupts`] instead of triple-faulting.
pub fn init_vcpu(index: u32) -> Result<(), InitError> {
    let i = index as usize;
    if i >= MAX_VCPUS {
        return Err(InitError::TooManyVcpus);
    }
    if CLAIMED[i].swap(true, Ordering::AcqRel) {
        return Err(InitError::AlreadyInitialised);
    }
    let tables = TABLES.0[i].get();
    // SAFETY: this vCPU just claimed set `i`, so nothing else writes or
    // reads it (module invariant).
    unsafe {
        (*tables).gdt = GDT;
        fill_idt(&mut (*tables).idt, arch::isr_stub_base());
    }
    // SAFETY: the tables live in a static and are never written again
    // (claimed once); the GDT has the code and data descriptors at the
    // selectors given; every gate points at an entry stub.
    unsafe {
        arch::load_descriptor_tables(
            (&raw const (*tables).gdt).cast(),
            size_of::<[u64; 3]>() as u16,
            (&raw const (*tables).idt).cast(),
            size_of::<[IdtGate; 256]>() as u16,
            CODE_SELECTOR,
            DATA_SELECTOR,
        );
    }
    Ok(())
}

/// The index of the vCPU running this (as passed to [`init_vcpu`]), or
/// `None` before it ran.
pub fn current_vcpu() -> Option<u32> {
    vcpu_of_idt(arch::idt_base())
}

fn vcpu_of_idt(base: u64) -> Option<u32> {
    (0..MAX_VCPUS)
        .find(|&i| {
            // SAFETY: only the address of the field is computed, nothing is read.
            let idt = unsafe { &raw const (*TABLES.0[i].get()).idt };
            idt as u64 == base
        })
        .map(|i| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_encode_their_handler() {
        let gate = IdtGate::interrupt_gate(0xffff_ffff_8012_3456, CODE_SELECTOR);
        assert_eq!(gate.handler(), 0xffff_ffff_8012_3456);
        assert_eq!(size_of::<IdtGate>(), 16);
        let mut idt = [IdtGate::default(); 256];
        fill_idt(&mut idt, 0xffff_ffff_8000_1000);
        assert_eq!(idt[0].handler(), 0xffff_ffff_8000_1000);
        assert_eq!(idt[255].handler(), 0xffff_ffff_8000_1000 + 255 * 16);
        assert!(
            idt.iter()
                .all(|g| g.type_attributes == 0x8e && g.selector == 0x08)
        );
    }

    #[test]
    fn gdt_descriptors() {
        // Code: L (bit 53) set, D (bit 54) clear, present, DPL 0, code type.
        let code = GDT[(CODE_SELECTOR / 8) as usize];
        assert_eq!((code >> 53) & 3, 1);
        assert_eq!((code >> 40) & 0xff, 0x9b);
        let data = GDT[(DATA_SELECTOR / 8) as usize];
        assert_eq!((data >> 40) & 0xff, 0x93);
    }

    #[test]
    fn unknown_idt_is_no_vcpu() {
        assert_eq!(vcpu_of_idt(0), None);
        // SAFETY: only the address is computed.
        let idt3 = unsafe { &raw const (*TABLES.0[3].get()).idt } as u64;
        assert_eq!(vcpu_of_idt(idt3), Some(3));
    }

    #[test]
    fn entry_stubs_push_their_vector() {
        let stubs = arch::isr_stub_bytes();
        const WITH_ERROR_CODE: [u8; 10] = [8, 10, 11, 12, 13, 14, 17, 21, 29, 30];
        for vector in 0..=255u8 {
            let stub = &stubs[vector as usize * 16..][..16];
            let rest = if WITH_ERROR_CODE.contains(&vector) {
                stub
            } else {
                assert_eq!(&stub[..2], &[0x6a, 0x00], "vector {vector}: push 0");
                &stub[2..]
            };
            // push imm8 (sign-extended) or push imm32.
            let pushed = match rest[0] {
                0x6a => rest[1] as i8 as i64,
                0x68 => i32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]) as i64,
                other => panic!("vector {vector}: unexpected opcode {other:#x}"),
            };
            assert_eq!(pushed, i64::from(vector), "vector {vector}");
        }
    }
}
