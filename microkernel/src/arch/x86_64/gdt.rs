//! The global descriptor table: kernel code and data segments and the TSS.

use core::arch::asm;

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
        #[repr(C, packed)]
        struct Pointer {
            limit: u16,
            base: u64,
        }
        let pointer = Pointer {
            limit: (core::mem::size_of::<Gdt>() - 1) as u16,
            base: self as *const Gdt as u64,
        };
        // SAFETY: the caller keeps the GDT alive; it holds valid code/data/TSS
        // descriptors at the selectors reloaded here.
        unsafe {
            asm!(
                "lgdt [{ptr}]",
                "push {code}",
                "lea {tmp}, [rip + 2f]",
                "push {tmp}",
                "retfq",
                "2:",
                "mov ds, {data:x}",
                "mov es, {data:x}",
                "mov ss, {data:x}",
                "ltr {tss:x}",
                ptr = in(reg) &pointer,
                code = in(reg) CODE as u64,
                data = in(reg) DATA as u64,
                tss = in(reg) TSS as u64,
                tmp = out(reg) _,
            )
        };
    }
}
