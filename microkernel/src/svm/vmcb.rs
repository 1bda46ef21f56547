//! The virtual machine control block: field offsets (AMD APM vol. 2,
//! appendix B) and typed accessors over a 4 KiB page.
//!
//! # Invariants
//! Accessors only touch the named field's bytes, plus the dirty mask: every
//! `write_*`/`set_segment` of a guest-state field sets its group in
//! `offset::DIRTY` (see [`dirty`]); only the `refresh_*` writes of a backend
//! copying hardware state back into the block do not. Offsets are
//! constants that the tests pin against the manual's table.

/// A guest's general-purpose registers other than RAX and RSP (which the
/// VMCB holds). The VMRUN path in `arch/` depends on this exact layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)] // Register names.
pub struct GuestRegs {
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

/// One VMCB: a page-aligned 4 KiB block, owned by one vCPU.
#[repr(C, align(4096))]
pub struct Vmcb {
    bytes: [u8; 4096],
}

/// Field offsets in the VMCB.
#[allow(missing_docs)] // Each name is the manual's field name.
pub mod offset {
    pub const INTERCEPT_CR: usize = 0x000;
    pub const INTERCEPT_DR: usize = 0x004;
    pub const INTERCEPT_EXCEPTIONS: usize = 0x008;
    pub const INTERCEPT_MISC1: usize = 0x00c;
    pub const INTERCEPT_MISC2: usize = 0x010;
    pub const IOPM_BASE_PA: usize = 0x040;
    pub const MSRPM_BASE_PA: usize = 0x048;
    pub const TSC_OFFSET: usize = 0x050;
    pub const GUEST_ASID: usize = 0x058;
    pub const TLB_CONTROL: usize = 0x05c;
    pub const VINTR: usize = 0x060;
    pub const INTERRUPT_SHADOW: usize = 0x068;
    pub const EXIT_CODE: usize = 0x070;
    pub const EXIT_INFO1: usize = 0x078;
    pub const EXIT_INFO2: usize = 0x080;
    pub const EXIT_INT_INFO: usize = 0x088;
    pub const NP_ENABLE: usize = 0x090;
    pub const EVENT_INJECTION: usize = 0x0a8;
    pub const NESTED_CR3: usize = 0x0b0;
    pub const CLEAN_BITS: usize = 0x0c0;
    pub const NEXT_RIP: usize = 0x0c8;
    /// 0x3e0–0x3ff of the control area are reserved for the host's use:
    /// the VMX backend's own state word (`vmx::sync::STATE`) ...
    pub const HOST_STATE: usize = 0x3f0;
    /// ... and the dirty mask ([`super::dirty`]).
    pub const DIRTY: usize = 0x3f8;
    pub const ES: usize = 0x400;
    pub const CS: usize = 0x410;
    pub const SS: usize = 0x420;
    pub const DS: usize = 0x430;
    pub const FS: usize = 0x440;
    pub const GS: usize = 0x450;
    pub const GDTR: usize = 0x460;
    pub const LDTR: usize = 0x470;
    pub const IDTR: usize = 0x480;
    pub const TR: usize = 0x490;
    pub const CPL: usize = 0x4cb;
    pub const EFER: usize = 0x4d0;
    pub const CR4: usize = 0x548;
    pub const CR3: usize = 0x550;
    pub const CR0: usize = 0x558;
    pub const DR7: usize = 0x560;
    pub const DR6: usize = 0x568;
    pub const RFLAGS: usize = 0x570;
    pub const RIP: usize = 0x578;
    pub const RSP: usize = 0x5d8;
    pub const RAX: usize = 0x5f8;
    pub const STAR: usize = 0x600;
    pub const LSTAR: usize = 0x608;
    pub const CSTAR: usize = 0x610;
    pub const SFMASK: usize = 0x618;
    pub const KERNEL_GS_BASE: usize = 0x620;
    pub const SYSENTER_CS: usize = 0x628;
    pub const SYSENTER_ESP: usize = 0x630;
    pub const SYSENTER_EIP: usize = 0x638;
    pub const CR2: usize = 0x640;
    pub const G_PAT: usize = 0x668;
}

/// The dirty mask at `offset::DIRTY`: the groups of guest-state fields
/// the kernel core wrote since a backend last took the mask. A backend that
/// keeps the guest state in hardware of its own (VMX: the VMCS) copies only
/// these groups into it before the next entry; SVM ignores the mask (VMRUN
/// reads the block itself). Fields outside every group (RAX, CR2, DR6, the
/// syscall MSRs, the rest of the control area) have no VMCS copy or are
/// handled apart.
pub mod dirty {
    use super::offset;

    /// RIP.
    pub const RIP: u64 = 1 << 0;
    /// RSP.
    pub const RSP: u64 = 1 << 1;
    /// RFLAGS.
    pub const RFLAGS: u64 = 1 << 2;
    /// The interrupt shadow.
    pub const INTERRUPT_SHADOW: u64 = 1 << 3;
    /// CR0, CR3, CR4.
    pub const CONTROL_REGISTERS: u64 = 1 << 4;
    /// EFER.
    pub const EFER: u64 = 1 << 5;
    /// The PAT MSR.
    pub const PAT: u64 = 1 << 6;
    /// DR7.
    pub const DR7: u64 = 1 << 7;
    /// ES, CS, SS, DS, FS, GS, LDTR, TR.
    pub const SEGMENTS: u64 = 1 << 8;
    /// GDTR and IDTR.
    pub const DESCRIPTOR_TABLES: u64 = 1 << 9;
    /// SYSENTER_CS, SYSENTER_ESP, SYSENTER_EIP.
    pub const SYSENTER: u64 = 1 << 10;
    /// The virtual-interrupt control (VINTR: the interrupt-window request).
    pub const VIRTUAL_INTERRUPT: u64 = 1 << 11;
    /// Every group.
    pub const ALL: u64 = (1 << 12) - 1;

    /// The group of the field whose first byte is `at` (0 for none).
    #[inline]
    pub const fn group(at: usize) -> u64 {
        match at {
            offset::INTERRUPT_SHADOW => INTERRUPT_SHADOW,
            offset::VINTR => VIRTUAL_INTERRUPT,
            0x400..=0x45f | 0x470..=0x47f | 0x490..=0x49f => SEGMENTS,
            0x460..=0x46f | 0x480..=0x48f => DESCRIPTOR_TABLES,
            offset::EFER => EFER,
            offset::CR4 | offset::CR3 | offset::CR0 => CONTROL_REGISTERS,
            offset::DR7 => DR7,
            offset::RFLAGS => RFLAGS,
            offset::RIP => RIP,
            offset::RSP => RSP,
            offset::SYSENTER_CS | offset::SYSENTER_ESP | offset::SYSENTER_EIP => SYSENTER,
            offset::G_PAT => PAT,
            _ => 0,
        }
    }
}

/// `INTERCEPT_MISC1` bits.
#[allow(missing_docs)]
pub mod misc1 {
    pub const INTR: u32 = 1 << 0;
    pub const NMI: u32 = 1 << 1;
    pub const SMI: u32 = 1 << 2;
    pub const INIT: u32 = 1 << 3;
    pub const VINTR: u32 = 1 << 4;
    pub const CPUID: u32 = 1 << 18;
    pub const INVD: u32 = 1 << 22;
    pub const HLT: u32 = 1 << 24;
    pub const INVLPGA: u32 = 1 << 26;
    pub const IOIO_PROT: u32 = 1 << 27;
    pub const MSR_PROT: u32 = 1 << 28;
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// `INTERCEPT_MISC2` bits.
#[allow(missing_docs)]
pub mod misc2 {
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
    pub const WBINVD: u32 = 1 << 9;
    pub const MONITOR: u32 = 1 << 10;
    pub const MWAIT: u32 = 1 << 11;
    pub const MWAIT_CONDITIONAL: u32 = 1 << 12;
    pub const XSETBV: u32 = 1 << 13;
}

/// The event-injection format (EVENTINJ, EXITINTINFO).
pub mod event {
    /// The event is valid.
    pub const VALID: u64 = 1 << 31;
    /// Type field (bits 8..11): an external interrupt.
    pub const TYPE_INTERRUPT: u64 = 0;
    /// Type field: an exception.
    pub const TYPE_EXCEPTION: u64 = 3;
    /// Type field: a software interrupt (INTn).
    pub const TYPE_SOFTWARE: u64 = 4;
}

/// `VINTR` bits (the virtual interrupt control word).
#[allow(missing_docs)]
pub mod vintr {
    /// A virtual interrupt is pending (with the VINTR intercept: exit
    /// as soon as the guest could take it).
    pub const V_IRQ: u64 = 1 << 8;
    /// The pending virtual interrupt ignores the guest's TPR.
    pub const V_IGN_TPR: u64 = 1 << 20;
    /// The guest's RFLAGS.IF masks only virtual interrupts.
    pub const V_INTR_MASKING: u64 = 1 << 24;
}

/// A segment register as the VMCB holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Attributes in VMCB format (descriptor bits 8–15 and 20–23 packed).
    pub attrib: u16,
    /// Limit.
    pub limit: u32,
    /// Base.
    pub base: u64,
}

/// VMCB attributes of a 64-bit ring-0 code segment (L=1, D=0).
pub const CODE64_ATTRIB: u16 = 0x029b;
/// VMCB attributes of a ring-0 data segment.
pub const DATA_ATTRIB: u16 = 0x0c93;
/// VMCB attributes of a busy 64-bit TSS.
pub const TSS_ATTRIB: u16 = 0x008b;

impl Default for Vmcb {
    fn default() -> Self {
        Self::new()
    }
}

impl Vmcb {
    /// An all-zero VMCB.
    pub const fn new() -> Self {
        Vmcb { bytes: [0; 4096] }
    }

    /// Reads a 64-bit field.
    #[inline]
    pub fn read_u64(&self, at: usize) -> u64 {
        let mut b = [0; 8];
        b.copy_from_slice(&self.bytes[at..at + 8]);
        u64::from_le_bytes(b)
    }

    /// Writes a 64-bit field (and marks its group dirty).
    #[inline]
    pub fn write_u64(&mut self, at: usize, value: u64) {
        self.refresh_u64(at, value);
        self.mark_dirty(dirty::group(at));
    }

    /// Writes a 64-bit field with the value the hardware already holds: for
    /// a backend copying guest state back into the block; marks nothing.
    #[inline]
    pub fn refresh_u64(&mut self, at: usize, value: u64) {
        self.bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    /// Reads a 32-bit field.
    #[inline]
    pub fn read_u32(&self, at: usize) -> u32 {
        let mut b = [0; 4];
        b.copy_from_slice(&self.bytes[at..at + 4]);
        u32::from_le_bytes(b)
    }

    /// Writes a 32-bit field (and marks its group dirty).
    #[inline]
    pub fn write_u32(&mut self, at: usize, value: u32) {
        self.bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
        self.mark_dirty(dirty::group(at));
    }

    /// Writes an 8-bit field (and marks its group dirty).
    #[inline]
    pub fn write_u8(&mut self, at: usize, value: u8) {
        self.bytes[at] = value;
        self.mark_dirty(dirty::group(at));
    }

    /// Writes a segment register (and marks its group dirty).
    pub fn set_segment(&mut self, at: usize, seg: Segment) {
        self.refresh_segment(at, seg);
        self.mark_dirty(dirty::group(at));
    }

    /// Writes a segment register with the value the hardware already
    /// holds (see [`Vmcb::refresh_u64`]); marks nothing.
    pub fn refresh_segment(&mut self, at: usize, seg: Segment) {
        self.bytes[at..at + 2].copy_from_slice(&seg.selector.to_le_bytes());
        self.bytes[at + 2..at + 4].copy_from_slice(&seg.attrib.to_le_bytes());
        self.bytes[at + 4..at + 8].copy_from_slice(&seg.limit.to_le_bytes());
        self.refresh_u64(at + 8, seg.base);
    }

    /// Reads a segment register.
    pub fn segment(&self, at: usize) -> Segment {
        Segment {
            selector: u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]]),
            attrib: u16::from_le_bytes([self.bytes[at + 2], self.bytes[at + 3]]),
            limit: self.read_u32(at + 4),
            base: self.read_u64(at + 8),
        }
    }

    /// Adds `groups` to the dirty mask.
    #[inline]
    pub fn mark_dirty(&mut self, groups: u64) {
        if groups != 0 {
            let mask = self.read_u64(offset::DIRTY);
            self.refresh_u64(offset::DIRTY, mask | groups);
        }
    }

    /// The dirty mask, cleared.
    #[inline]
    pub fn take_dirty(&mut self) -> u64 {
        let mask = self.read_u64(offset::DIRTY);
        self.refresh_u64(offset::DIRTY, 0);
        mask
    }
}

/// Control-register and mode constants for a 64-bit guest.
pub mod mode {
    /// CR0: PE | MP | ET | NE | WP | PG.
    pub const CR0_LONG: u64 = 1 | (1 << 1) | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 31);
    /// CR4: PAE | OSFXSR | OSXMMEXCPT.
    pub const CR4_LONG: u64 = (1 << 5) | (1 << 9) | (1 << 10);
    /// EFER: SCE | LME | LMA | NXE.
    pub const EFER_LONG: u64 = 1 | (1 << 8) | (1 << 10) | (1 << 11);
    /// EFER.SVME: must stay set in every guest's EFER.
    pub const EFER_SVME: u64 = 1 << 12;
    /// The reset value of the PAT MSR.
    pub const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;
}

/// What the first vCPU of a partition starts with.
#[derive(Clone, Copy, Debug)]
pub struct LongModeStart {
    /// Guest CR3: the partition's initial page tables.
    pub cr3: u64,
    /// Entry point.
    pub rip: u64,
    /// Initial stack pointer.
    pub rsp: u64,
    /// Address space identifier (never 0).
    pub asid: u32,
    /// Nested page table root.
    pub nested_cr3: u64,
    /// I/O permission map (12 KiB, physically contiguous).
    pub iopm: u64,
    /// MSR permission map (8 KiB, physically contiguous).
    pub msrpm: u64,
}

impl Vmcb {
    /// Prepares a vCPU that starts in 64-bit mode at ring 0 under nested
    /// paging, with every intercept the microkernel relies on set.
    pub fn init_long_mode(&mut self, start: &LongModeStart) {
        *self = Vmcb::new();
        self.write_u32(offset::INTERCEPT_EXCEPTIONS, 0);
        self.write_u32(
            offset::INTERCEPT_MISC1,
            misc1::INTR
                | misc1::NMI
                | misc1::SMI
                | misc1::INIT
                | misc1::VINTR
                | misc1::CPUID
                | misc1::INVD
                | misc1::HLT
                | misc1::INVLPGA
                | misc1::IOIO_PROT
                | misc1::MSR_PROT
                | misc1::SHUTDOWN,
        );
        self.write_u32(
            offset::INTERCEPT_MISC2,
            misc2::VMRUN
                | misc2::VMMCALL
                | misc2::VMLOAD
                | misc2::VMSAVE
                | misc2::STGI
                | misc2::CLGI
                | misc2::SKINIT
                | misc2::WBINVD
                | misc2::MONITOR
                | misc2::MWAIT
                | misc2::MWAIT_CONDITIONAL
                | misc2::XSETBV,
        );
        self.write_u64(offset::IOPM_BASE_PA, start.iopm);
        self.write_u64(offset::MSRPM_BASE_PA, start.msrpm);
        self.write_u32(offset::GUEST_ASID, start.asid);
        self.write_u8(offset::TLB_CONTROL, 1);
        self.write_u64(offset::VINTR, vintr::V_INTR_MASKING);
        self.write_u64(offset::NP_ENABLE, 1);
        self.write_u64(offset::NESTED_CR3, start.nested_cr3);

        let code = Segment {
            selector: 0x08,
            attrib: CODE64_ATTRIB,
            limit: 0xffff_ffff,
            base: 0,
        };
        let data = Segment {
            selector: 0x10,
            attrib: DATA_ATTRIB,
            limit: 0xffff_ffff,
            base: 0,
        };
        self.set_segment(offset::CS, code);
        for seg in [offset::DS, offset::ES, offset::SS, offset::FS, offset::GS] {
            self.set_segment(seg, data);
        }
        self.set_segment(
            offset::TR,
            Segment {
                selector: 0,
                attrib: TSS_ATTRIB,
                limit: 0x67,
                base: 0,
            },
        );
        self.set_segment(
            offset::LDTR,
            Segment {
                selector: 0,
                attrib: 0x0082,
                limit: 0,
                base: 0,
            },
        );
        self.set_segment(
            offset::GDTR,
            Segment {
                selector: 0,
                attrib: 0,
                limit: 0,
                base: 0,
            },
        );
        self.set_segment(
            offset::IDTR,
            Segment {
                selector: 0,
                attrib: 0,
                limit: 0,
                base: 0,
            },
        );
        self.write_u8(offset::CPL, 0);
        self.write_u64(offset::EFER, mode::EFER_LONG | mode::EFER_SVME);
        self.write_u64(offset::CR0, mode::CR0_LONG);
        self.write_u64(offset::CR4, mode::CR4_LONG);
        self.write_u64(offset::CR3, start.cr3);
        self.write_u64(offset::DR7, 0x400);
        self.write_u64(offset::DR6, 0xffff_0ff0);
        self.write_u64(offset::RFLAGS, 0x2);
        self.write_u64(offset::RIP, start.rip);
        self.write_u64(offset::RSP, start.rsp);
        self.write_u64(offset::G_PAT, mode::PAT_DEFAULT);
    }

    /// Asks for an exit (`Exit::InterruptWindow`) as soon as the guest can
    /// take an interrupt (`wanted`), or no longer.
    pub fn request_interrupt_window(&mut self, wanted: bool) {
        let v = self.read_u64(offset::VINTR) & !(vintr::V_IRQ | vintr::V_IGN_TPR);
        let request = if wanted {
            vintr::V_IRQ | vintr::V_IGN_TPR
        } else {
            0
        };
        self.write_u64(offset::VINTR, v | request);
    }

    /// Whether an interrupt-window exit is asked for.
    pub fn interrupt_window_requested(&self) -> bool {
        self.read_u64(offset::VINTR) & vintr::V_IRQ != 0
    }

    /// After an exit: an event whose delivery the exit interrupted
    /// (EXITINTINFO valid, e.g. an injected interrupt whose frame push
    /// faulted to the hypervisor) is queued again for the next VMRUN, as
    /// the VMX backend does with the IDT-vectoring information. A software
    /// interrupt (INTn) or a software exception (#BP, #OF) is not: RIP
    /// still points at its instruction, which runs again. Returns whether
    /// an event was queued.
    pub fn reinject_interrupted_event(&mut self) -> bool {
        let info = self.read_u64(offset::EXIT_INT_INFO);
        if info & event::VALID == 0 {
            return false;
        }
        self.write_u64(offset::EXIT_INT_INFO, 0);
        let kind = (info >> 8) & 7;
        let vector = info & 0xff;
        let software = kind == event::TYPE_SOFTWARE
            || (kind == event::TYPE_EXCEPTION && (vector == 3 || vector == 4));
        if software || self.read_u64(offset::EVENT_INJECTION) & event::VALID != 0 {
            return false;
        }
        self.write_u64(offset::EVENT_INJECTION, info);
        true
    }

    /// The external interrupt queued for the next VMRUN, if one is.
    pub fn injected_interrupt(&self) -> Option<u8> {
        let event = self.read_u64(offset::EVENT_INJECTION);
        (event & event::VALID != 0 && (event >> 8) & 7 == event::TYPE_INTERRUPT)
            .then_some(event as u8)
    }

    /// Queues an exception for delivery at the next VMRUN.
    pub fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        let mut event = vector as u64 | (3 << 8) | (1 << 31);
        if let Some(code) = error_code {
            event |= (1 << 11) | ((code as u64) << 32);
        }
        self.write_u64(offset::EVENT_INJECTION, event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_manual() {
        assert_eq!(core::mem::size_of::<Vmcb>(), 4096);
        assert_eq!(core::mem::align_of::<Vmcb>(), 4096);
        // Spot checks against APM vol. 2 table B-1/B-2.
        assert_eq!(offset::EXIT_CODE, 0x70);
        assert_eq!(offset::NESTED_CR3, 0xb0);
        assert_eq!(offset::RIP, 0x578);
        assert_eq!(offset::RAX, 0x5f8);
    }

    #[test]
    fn long_mode_start_sets_required_state() {
        let mut v = Box::new(Vmcb::new());
        v.init_long_mode(&LongModeStart {
            cr3: 0x1000,
            rip: 0xffff_ffff_8000_1000,
            rsp: 0x8000,
            asid: 1,
            nested_cr3: 0x20_0000,
            iopm: 0x30_0000,
            msrpm: 0x31_0000,
        });
        // QEMU refuses VMRUN without the VMRUN intercept, with ASID 0 or without EFER.SVME.
        assert_ne!(v.read_u32(offset::INTERCEPT_MISC2) & misc2::VMRUN, 0);
        assert_ne!(v.read_u32(offset::GUEST_ASID), 0);
        assert_ne!(v.read_u64(offset::EFER) & mode::EFER_SVME, 0);
        assert_eq!(v.segment(offset::CS).attrib, CODE64_ATTRIB);
        assert_eq!(v.read_u64(offset::RIP), 0xffff_ffff_8000_1000);
        assert_eq!(v.read_u64(offset::NP_ENABLE), 1);
        for bit in [misc1::VINTR, misc1::INVD, misc1::INVLPGA] {
            assert_ne!(v.read_u32(offset::INTERCEPT_MISC1) & bit, 0);
        }
        for bit in [misc2::WBINVD, misc2::MONITOR, misc2::MWAIT] {
            assert_ne!(v.read_u32(offset::INTERCEPT_MISC2) & bit, 0);
        }
        assert!(!v.interrupt_window_requested());
        v.request_interrupt_window(true);
        assert!(v.interrupt_window_requested());
        assert_ne!(v.read_u64(offset::VINTR) & vintr::V_INTR_MASKING, 0);
        v.request_interrupt_window(false);
        assert_eq!(v.read_u64(offset::VINTR), vintr::V_INTR_MASKING);
    }

    #[test]
    fn an_interrupted_delivery_is_queued_again_once() {
        let mut v = Box::new(Vmcb::new());
        assert!(!v.reinject_interrupted_event(), "nothing was interrupted");
        // An external interrupt, vector 0x51.
        v.write_u64(offset::EXIT_INT_INFO, 0x51 | event::VALID);
        assert!(v.reinject_interrupted_event());
        assert_eq!(v.read_u64(offset::EVENT_INJECTION), 0x51 | event::VALID);
        assert_eq!(v.injected_interrupt(), Some(0x51));
        assert_eq!(v.read_u64(offset::EXIT_INT_INFO), 0);
        assert!(!v.reinject_interrupted_event(), "consumed");
        // A page fault with its error code keeps the code.
        v.write_u64(offset::EVENT_INJECTION, 0);
        let pf = 14 | (3 << 8) | (1 << 11) | event::VALID | (2 << 32);
        v.write_u64(offset::EXIT_INT_INFO, pf);
        assert!(v.reinject_interrupted_event());
        assert_eq!(v.read_u64(offset::EVENT_INJECTION), pf);
        assert_eq!(v.injected_interrupt(), None, "an exception is no interrupt");
        // INTn and INT3 run again instead.
        v.write_u64(offset::EVENT_INJECTION, 0);
        for soft in [0x80 | (4 << 8), 3 | (3 << 8)] {
            v.write_u64(offset::EXIT_INT_INFO, soft | event::VALID);
            assert!(!v.reinject_interrupted_event());
            assert_eq!(v.read_u64(offset::EVENT_INJECTION), 0);
        }
        v.inject_exception(13, Some(0));
        assert_eq!(
            v.read_u64(offset::EVENT_INJECTION),
            13 | (3 << 8) | (1 << 11) | (1 << 31)
        );
    }
}
