//! The global descriptor table: kernel code and data segments and the TSS.
//! The descriptors are encoded here (the `x86_64` crate's
//! `GlobalDescriptorTable` wants a `'static` TSS; each processor's lives in
//! its `PerCpu`); loading it uses the crate's instructions.

use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables;
use x86_64::structures::DescriptorTablePointer;
use x86_64::structures::gdt::SegmentSelector;

/// Kernel code selector.
pub const CODE: u16 = 0x08;
/// Kernel data selector.
pub const DATA: u16 = 0x10;
/// TSS selector.
pub const TSS: u16 = 0x18;

/// A GDT: null, code, data, TSS (two slots).
#[repr(C, align(16))]
pub struct Gdt([u64; 5]);

impl Gdt {
    /// The descriptors, TSS not yet set.
    pub const fn new() -> Self {
        Gdt([0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff, 0, 0])
    }

    /// Points the TSS descriptor at `tss` (an available 64-bit TSS of 104 bytes).
    pub fn set_tss(&mut self, tss: u64) {
        let limit = 103u64;
        self.0[3] = limit | ((tss & 0xff_ffff) << 16) | (0x89 << 40) | (((tss >> 24) & 0xff) << 56);
        self.0[4] = tss >> 32;
    }

    /// Loads this GDT, reloads every segment register and the task register.
    ///
    /// # Safety
    /// The GDT (and the TSS it points at) must stay where it is for as long
    /// as the processor uses it, i.e. forever.
    pub unsafe fn load(&self) {
        let pointer = DescriptorTablePointer {
            limit: (core::mem::size_of::<Gdt>() - 1) as u16,
            base: VirtAddr::from_ptr(self),
        };
        // SAFETY: the caller keeps the GDT alive; it holds valid code/data/TSS
        // descriptors at the selectors reloaded here (CS by a far return).
        unsafe {
            tables::lgdt(&pointer);
            CS::set_reg(SegmentSelector(CODE));
            DS::set_reg(SegmentSelector(DATA));
            ES::set_reg(SegmentSelector(DATA));
            SS::set_reg(SegmentSelector(DATA));
            tables::load_tss(SegmentSelector(TSS));
        }
    }
}
