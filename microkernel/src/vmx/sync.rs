//! Mirroring the kernel core's guest-state block (VMCB layout) in the VMCS,
//! copying only what an exit needs and what the core changed.
//!
//! The kernel core reads and writes a vCPU's state in its block; the
//! processor keeps it in the VMCS. Three steps keep the two in step:
//!
//! - [`exit`], after every VM exit: reads what describes the exit — the
//!   reason, RIP, and the qualification, guest-physical address,
//!   instruction length and interrupted event as far as [`needs`] asks for
//!   them — and marks the rest of the block *deferred* (still only in the
//!   VMCS).
//! - [`complete`], before anything but the null-hypercall fast path looks
//!   at the block: reads the deferred rest (RSP, RFLAGS, the interrupt
//!   shadow, CR0/CR3/CR4, EFER, PAT, the segments, GDTR/IDTR, SYSENTER).
//! - [`load`], before every VM entry: writes the groups the core wrote
//!   (the block's dirty mask, [`crate::svm::vmcb::dirty`]) and the event to
//!   inject.
//!
//! A null hypercall answered on the fast path thus costs two VMREADs
//! (reason, RIP) and one VMWRITE (RIP), where copying the whole state both
//! ways cost about 85.
//!
//! # Invariants
//! - A block is deferred only between an exit and the next [`complete`],
//!   on the processor whose current VMCS is the vCPU's. The processor loop
//!   completes every exit it does not answer on the fast path (which reads
//!   and writes RAX and RIP only) before it hands the exit to the core, so
//!   the core, `VcpuGetState` and migration only ever see complete blocks.
//! - A group the core did not write is not copied: the VMCS holds its
//!   current value (written by an earlier [`load`], or changed by the guest
//!   and, if the core looked, read back by [`complete`] first).
//! - VM exits clear the valid bit of the VM-entry interruption information
//!   (SDM vol. 3, 24.8.3), so [`load`] writes it only for an event; the
//!   first load of a VMCS (every group dirty) writes it invalid.

use crate::svm::vmcb::{Segment, Vmcb, dirty, mode, offset};

use super::exit::{VmxExit, needs, translate};
use super::{access_rights, field, vmcb_attributes};

/// The backend's state word in the block (in the control area's bytes for
/// the host's use).
pub const STATE: usize = offset::HOST_STATE;
/// [`STATE`]: the VMCS has its controls and host state.
pub const INITIALISED: u64 = 1;
/// [`STATE`]: the VMCS was launched (the next entry is a VMRESUME).
pub const LAUNCHED: u64 = 2;
/// [`STATE`]: the last exit's guest state is partly only in the VMCS.
pub const DEFERRED: u64 = 4;

/// CR4.VMXE: set in the guest's real CR4, hidden by the read shadow.
const CR4_VMXE: u64 = 1 << 13;
/// Valid bit of an event (VMCB EVENTINJ, VMX interruption information).
const EVENT_VALID: u64 = 1 << 31;

/// The CR0 and CR4 bits VMX fixes: FIXED0 bits must be 1, bits clear in
/// FIXED1 must be 0 (the capability MSRs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedBits {
    /// IA32_VMX_CR0_FIXED0.
    pub cr0_fixed0: u64,
    /// IA32_VMX_CR0_FIXED1.
    pub cr0_fixed1: u64,
    /// IA32_VMX_CR4_FIXED0.
    pub cr4_fixed0: u64,
    /// IA32_VMX_CR4_FIXED1.
    pub cr4_fixed1: u64,
}

/// The current VMCS, as the copying code reaches it (VMREAD/VMWRITE on
/// the processor; a map in the host tests).
pub trait Vmcs {
    /// VMREAD of `field`.
    fn read(&mut self, field: u64) -> u64;
    /// VMWRITE of `field`.
    fn write(&mut self, field: u64, value: u64);
    /// The processor's fixed CR0/CR4 bits.
    fn fixed_bits(&self) -> FixedBits;
}

/// Segments in VMCS order (ES, CS, SS, DS, FS, GS, LDTR, TR) and their block offsets.
const SEGMENTS: [usize; 8] = [
    offset::ES,
    offset::CS,
    offset::SS,
    offset::DS,
    offset::FS,
    offset::GS,
    offset::LDTR,
    offset::TR,
];

/// Whether the block's last exit left state only in the VMCS.
#[inline]
pub fn is_deferred(block: &Vmcb) -> bool {
    block.read_u64(STATE) & DEFERRED != 0
}

/// Records that the block's VMCS was just initialised: nothing launched,
/// nothing deferred, every group to be written at the first entry.
pub fn initialised(block: &mut Vmcb) {
    block.refresh_u64(STATE, INITIALISED);
    block.mark_dirty(dirty::ALL);
}

/// Before VM entry: writes what the core changed, and the event to inject.
/// Returns the groups the core changed (the caller applies the controls
/// this file does not know, e.g. the interrupt window, when theirs did).
#[inline]
pub fn load(vmcs: &mut impl Vmcs, block: &mut Vmcb) -> u64 {
    let changed = block.take_dirty();
    if changed & dirty::RIP != 0 {
        vmcs.write(field::GUEST_RIP, block.read_u64(offset::RIP));
    }
    if changed & !dirty::RIP != 0 {
        load_groups(vmcs, block, changed);
    }
    let event = block.read_u64(offset::EVENT_INJECTION);
    if event & EVENT_VALID != 0 {
        vmcs.write(field::ENTRY_INTERRUPTION_INFO, event & 0xffff_ffff);
        vmcs.write(field::ENTRY_EXCEPTION_ERROR_CODE, event >> 32);
        vmcs.write(field::ENTRY_INSTRUCTION_LENGTH, 0);
        block.write_u64(offset::EVENT_INJECTION, 0);
    }
    changed
}

/// The groups other than RIP (the path of everything but the fast path).
#[inline(never)]
fn load_groups(vmcs: &mut impl Vmcs, block: &Vmcb, changed: u64) {
    if changed & dirty::RSP != 0 {
        vmcs.write(field::GUEST_RSP, block.read_u64(offset::RSP));
    }
    if changed & dirty::RFLAGS != 0 {
        vmcs.write(field::GUEST_RFLAGS, block.read_u64(offset::RFLAGS));
    }
    if changed & dirty::INTERRUPT_SHADOW != 0 {
        vmcs.write(
            field::GUEST_INTERRUPTIBILITY,
            block.read_u64(offset::INTERRUPT_SHADOW) & 0b11,
        );
    }
    if changed & dirty::CONTROL_REGISTERS != 0 {
        let fixed = vmcs.fixed_bits();
        let cr0 = block.read_u64(offset::CR0);
        let cr4 = block.read_u64(offset::CR4);
        vmcs.write(
            field::GUEST_CR0,
            (cr0 | fixed.cr0_fixed0) & fixed.cr0_fixed1,
        );
        vmcs.write(field::CR0_READ_SHADOW, cr0);
        vmcs.write(
            field::GUEST_CR4,
            (cr4 | CR4_VMXE | fixed.cr4_fixed0) & fixed.cr4_fixed1,
        );
        vmcs.write(field::CR4_READ_SHADOW, cr4);
        vmcs.write(field::GUEST_CR3, block.read_u64(offset::CR3));
    }
    if changed & dirty::EFER != 0 {
        vmcs.write(
            field::GUEST_IA32_EFER,
            block.read_u64(offset::EFER) & !mode::EFER_SVME,
        );
    }
    if changed & dirty::PAT != 0 {
        vmcs.write(field::GUEST_IA32_PAT, block.read_u64(offset::G_PAT));
    }
    if changed & dirty::DR7 != 0 {
        vmcs.write(field::GUEST_DR7, block.read_u64(offset::DR7));
    }
    if changed & dirty::SEGMENTS != 0 {
        for (i, &at) in SEGMENTS.iter().enumerate() {
            let seg = block.segment(at);
            let i = i as u64;
            vmcs.write(
                field::segment(field::GUEST_ES_SELECTOR, i),
                seg.selector as u64,
            );
            vmcs.write(field::segment(field::GUEST_ES_LIMIT, i), seg.limit as u64);
            // VMX checks granularity against the limit (SVM does not): a
            // limit above 1 MiB needs G.
            let mut rights = access_rights(seg.attrib);
            if rights & (1 << 16) == 0 && seg.limit > 0xf_ffff {
                rights |= 1 << 15;
            }
            vmcs.write(
                field::segment(field::GUEST_ES_ACCESS_RIGHTS, i),
                rights as u64,
            );
            vmcs.write(field::segment(field::GUEST_ES_BASE, i), seg.base);
        }
    }
    if changed & dirty::DESCRIPTOR_TABLES != 0 {
        let gdtr = block.segment(offset::GDTR);
        let idtr = block.segment(offset::IDTR);
        vmcs.write(field::GUEST_GDTR_BASE, gdtr.base);
        vmcs.write(field::GUEST_GDTR_LIMIT, gdtr.limit as u64);
        vmcs.write(field::GUEST_IDTR_BASE, idtr.base);
        vmcs.write(field::GUEST_IDTR_LIMIT, idtr.limit as u64);
    }
    if changed & dirty::SYSENTER != 0 {
        for (f, at) in [
            (field::GUEST_SYSENTER_CS, offset::SYSENTER_CS),
            (field::GUEST_SYSENTER_ESP, offset::SYSENTER_ESP),
            (field::GUEST_SYSENTER_EIP, offset::SYSENTER_EIP),
        ] {
            vmcs.write(f, block.read_u64(at));
        }
    }
    // Never left otherwise by an exit, but a fresh VMCS holds whatever its
    // memory held: both are written with the state (the event after this).
    vmcs.write(field::GUEST_ACTIVITY_STATE, 0);
    vmcs.write(field::ENTRY_INTERRUPTION_INFO, 0);
}

/// After a VM exit: describes it in the block (EXITCODE, EXITINFO1,
/// EXITINFO2 in SVM terms), with RIP and any interrupted event; the rest
/// of the guest state stays in the VMCS until [`complete`].
#[inline]
pub fn exit(vmcs: &mut impl Vmcs, block: &mut Vmcb) {
    let reason = vmcs.read(field::EXIT_REASON) as u32;
    let rip = vmcs.read(field::GUEST_RIP);
    block.refresh_u64(offset::RIP, rip);
    let need = needs(reason);
    let mut read_if = |wanted: bool, f: u64| if wanted { vmcs.read(f) } else { 0 };
    let e = VmxExit {
        reason,
        qualification: read_if(need.qualification, field::EXIT_QUALIFICATION),
        guest_physical: read_if(need.guest_physical, field::GUEST_PHYSICAL_ADDRESS),
        instruction_length: read_if(need.instruction_length, field::EXIT_INSTRUCTION_LENGTH),
        rip,
    };
    if need.vectoring {
        reinject_interrupted_event(vmcs, block);
    }
    let (code, info1, info2) = translate(&e);
    block.write_u64(offset::EXIT_CODE, code);
    block.write_u64(offset::EXIT_INFO1, info1);
    block.write_u64(offset::EXIT_INFO2, info2);
    let state = block.read_u64(STATE);
    let state = if reason & (1 << 31) != 0 {
        // The entry failed: nothing launched; the event stays unsent.
        vmcs.write(field::ENTRY_INTERRUPTION_INFO, 0);
        state
    } else {
        state | LAUNCHED
    };
    block.refresh_u64(STATE, state | DEFERRED);
}

/// An event whose delivery the exit interrupted is injected again.
#[inline(never)]
fn reinject_interrupted_event(vmcs: &mut impl Vmcs, block: &mut Vmcb) {
    let vectoring = vmcs.read(field::IDT_VECTORING_INFO);
    if vectoring & EVENT_VALID != 0 {
        let code = if vectoring & (1 << 11) != 0 {
            vmcs.read(field::IDT_VECTORING_ERROR_CODE)
        } else {
            0
        };
        block.write_u64(
            offset::EVENT_INJECTION,
            (vectoring & 0xffff_ffff) | (code << 32),
        );
    }
}

/// Reads the guest state the last exit left in the VMCS into the block
/// (nothing if it is complete already). The VMCS must be the block's.
pub fn complete(vmcs: &mut impl Vmcs, block: &mut Vmcb) {
    let state = block.read_u64(STATE);
    if state & DEFERRED == 0 {
        return;
    }
    for (at, f) in [
        (offset::RSP, field::GUEST_RSP),
        (offset::RFLAGS, field::GUEST_RFLAGS),
        (offset::CR0, field::GUEST_CR0),
        (offset::CR3, field::GUEST_CR3),
        (offset::G_PAT, field::GUEST_IA32_PAT),
        (offset::SYSENTER_CS, field::GUEST_SYSENTER_CS),
        (offset::SYSENTER_ESP, field::GUEST_SYSENTER_ESP),
        (offset::SYSENTER_EIP, field::GUEST_SYSENTER_EIP),
    ] {
        block.refresh_u64(at, vmcs.read(f));
    }
    block.refresh_u64(
        offset::INTERRUPT_SHADOW,
        vmcs.read(field::GUEST_INTERRUPTIBILITY) & 0b11,
    );
    block.refresh_u64(offset::CR4, vmcs.read(field::GUEST_CR4) & !CR4_VMXE);
    block.refresh_u64(
        offset::EFER,
        vmcs.read(field::GUEST_IA32_EFER) | mode::EFER_SVME,
    );
    for (i, &at) in SEGMENTS.iter().enumerate() {
        let i = i as u64;
        let seg = Segment {
            selector: vmcs.read(field::segment(field::GUEST_ES_SELECTOR, i)) as u16,
            attrib: vmcb_attributes(
                vmcs.read(field::segment(field::GUEST_ES_ACCESS_RIGHTS, i)) as u32
            ),
            limit: vmcs.read(field::segment(field::GUEST_ES_LIMIT, i)) as u32,
            base: vmcs.read(field::segment(field::GUEST_ES_BASE, i)),
        };
        block.refresh_segment(at, seg);
    }
    for (at, base, limit) in [
        (
            offset::GDTR,
            field::GUEST_GDTR_BASE,
            field::GUEST_GDTR_LIMIT,
        ),
        (
            offset::IDTR,
            field::GUEST_IDTR_BASE,
            field::GUEST_IDTR_LIMIT,
        ),
    ] {
        let seg = Segment {
            selector: 0,
            attrib: 0,
            limit: vmcs.read(limit) as u32,
            base: vmcs.read(base),
        };
        block.refresh_segment(at, seg);
    }
    block.refresh_u64(STATE, state & !DEFERRED);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::svm::state;
    use crate::svm::vmcb::{CODE64_ATTRIB, DATA_ATTRIB, LongModeStart};
    use crate::vmx::exit::reason;
    use ipc::hypercall::number;

    /// Granularity in VMCB segment attributes.
    const G: u16 = 1 << 11;

    /// A VMCS as a map, counting accesses.
    #[derive(Default)]
    struct FakeVmcs {
        fields: BTreeMap<u64, u64>,
        reads: Vec<u64>,
        writes: Vec<u64>,
    }

    impl Vmcs for FakeVmcs {
        fn read(&mut self, f: u64) -> u64 {
            self.reads.push(f);
            self.fields.get(&f).copied().unwrap_or(0)
        }
        fn write(&mut self, f: u64, value: u64) {
            self.writes.push(f);
            self.fields.insert(f, value);
        }
        fn fixed_bits(&self) -> FixedBits {
            FixedBits {
                cr0_fixed0: 1 << 5, // NE
                cr0_fixed1: u64::MAX,
                cr4_fixed0: CR4_VMXE,
                cr4_fixed1: u64::MAX,
            }
        }
    }

    impl FakeVmcs {
        fn get(&self, f: u64) -> u64 {
            self.fields.get(&f).copied().unwrap_or(0)
        }
        fn forget(&mut self) {
            self.reads.clear();
            self.writes.clear();
        }
        /// The processor takes an exit with `reason` at `rip`.
        fn exit_at(&mut self, reason: u32, rip: u64) {
            self.fields.insert(field::EXIT_REASON, reason as u64);
            self.fields.insert(field::GUEST_RIP, rip);
            self.fields.remove(&field::ENTRY_INTERRUPTION_INFO);
        }
    }

    /// A started vCPU's block and VMCS after its first entry.
    fn started() -> (Box<Vmcb>, FakeVmcs) {
        let mut block = Box::new(Vmcb::new());
        block.init_long_mode(&LongModeStart {
            cr3: 0x5000,
            rip: 0x40_1000,
            rsp: 0x7f_f000,
            asid: 3,
            nested_cr3: 0x20_0000,
            iopm: 0x30_0000,
            msrpm: 0x33_0000,
        });
        let mut vmcs = FakeVmcs::default();
        initialised(&mut block);
        assert_eq!(load(&mut vmcs, &mut block), dirty::ALL);
        (block, vmcs)
    }

    #[test]
    fn the_first_entry_writes_the_whole_state() {
        let (block, vmcs) = started();
        assert_eq!(vmcs.get(field::GUEST_RIP), 0x40_1000);
        assert_eq!(vmcs.get(field::GUEST_RSP), 0x7f_f000);
        assert_eq!(vmcs.get(field::GUEST_CR3), 0x5000);
        assert_eq!(vmcs.get(field::GUEST_CR0), mode::CR0_LONG | (1 << 5));
        assert_eq!(vmcs.get(field::CR0_READ_SHADOW), mode::CR0_LONG);
        assert_eq!(vmcs.get(field::GUEST_CR4), mode::CR4_LONG | CR4_VMXE);
        assert_eq!(vmcs.get(field::CR4_READ_SHADOW), mode::CR4_LONG);
        assert_eq!(vmcs.get(field::GUEST_IA32_EFER), mode::EFER_LONG);
        assert_eq!(vmcs.get(field::GUEST_IA32_PAT), mode::PAT_DEFAULT);
        assert_eq!(vmcs.get(field::GUEST_DR7), 0x400);
        assert_eq!(vmcs.get(field::GUEST_RFLAGS), 0x2);
        // 4 GiB segments get G (VMX checks it, SVM does not).
        let cs = field::segment(field::GUEST_ES_ACCESS_RIGHTS, 1);
        assert_eq!(
            vmcs.get(cs),
            access_rights(CODE64_ATTRIB) as u64 | (1 << 15)
        );
        let ds = field::segment(field::GUEST_ES_ACCESS_RIGHTS, 3);
        assert_eq!(vmcs.get(ds), access_rights(DATA_ATTRIB) as u64 | (1 << 15));
        assert!(vmcs.writes.contains(&field::ENTRY_INTERRUPTION_INFO));
        assert_eq!(vmcs.get(field::ENTRY_INTERRUPTION_INFO), 0);
        assert_eq!(block.read_u64(offset::DIRTY), 0);
    }

    /// The fast path: two VMREADs at the exit, one VMWRITE at the entry.
    #[test]
    fn a_null_hypercall_copies_reason_and_rip_only() {
        let (mut block, mut vmcs) = started();
        vmcs.forget();
        vmcs.exit_at(reason::VMCALL, 0x40_2000);
        exit(&mut vmcs, &mut block);
        assert_eq!(vmcs.reads, [field::EXIT_REASON, field::GUEST_RIP]);
        assert_eq!(
            block.read_u64(offset::EXIT_CODE),
            crate::svm::exit::code::VMMCALL
        );
        assert!(is_deferred(&block));
        // What run.rs does on the fast path.
        assert_eq!(block.read_u64(offset::RAX), number::NULL);
        block.write_u64(offset::RAX, 0);
        let rip = block.read_u64(offset::RIP);
        block.write_u64(offset::RIP, rip + 3);
        assert_eq!(load(&mut vmcs, &mut block), dirty::RIP);
        assert_eq!(vmcs.reads.len(), 2);
        assert_eq!(vmcs.writes, [field::GUEST_RIP]);
        assert_eq!(vmcs.get(field::GUEST_RIP), 0x40_2003);
    }

    #[test]
    fn complete_reads_back_what_the_guest_changed() {
        let (mut block, mut vmcs) = started();
        // The guest runs a while: it changes its stack, flags, CR3, a segment.
        vmcs.fields.insert(field::GUEST_RSP, 0x7f_e000);
        vmcs.fields.insert(field::GUEST_RFLAGS, 0x202);
        vmcs.fields.insert(field::GUEST_CR3, 0x9000);
        vmcs.fields.insert(field::GUEST_INTERRUPTIBILITY, 1);
        vmcs.fields
            .insert(field::segment(field::GUEST_ES_BASE, 4), 0xfeed_0000);
        vmcs.exit_at(reason::HLT, 0x40_3000);
        exit(&mut vmcs, &mut block);
        // Deferred: the block still holds the old values.
        assert_eq!(block.read_u64(offset::RSP), 0x7f_f000);
        complete(&mut vmcs, &mut block);
        assert!(!is_deferred(&block));
        assert_eq!(block.read_u64(offset::RIP), 0x40_3000);
        assert_eq!(block.read_u64(offset::RSP), 0x7f_e000);
        assert_eq!(block.read_u64(offset::RFLAGS), 0x202);
        assert_eq!(block.read_u64(offset::CR3), 0x9000);
        assert_eq!(block.read_u64(offset::INTERRUPT_SHADOW), 1);
        assert_eq!(block.segment(offset::FS).base, 0xfeed_0000);
        // VMXE hidden, SVME shown, attributes back in VMCB format.
        assert_eq!(block.read_u64(offset::CR4), mode::CR4_LONG);
        assert_ne!(block.read_u64(offset::EFER) & mode::EFER_SVME, 0);
        assert_eq!(block.segment(offset::CS).attrib, CODE64_ATTRIB | G);
        // Reading back marks nothing: the next entry writes nothing.
        vmcs.forget();
        load(&mut vmcs, &mut block);
        assert!(vmcs.writes.is_empty());
        // A second complete reads nothing.
        complete(&mut vmcs, &mut block);
        assert!(vmcs.reads.is_empty());
    }

    #[test]
    fn only_the_groups_the_core_wrote_are_written() {
        let (mut block, mut vmcs) = started();
        vmcs.exit_at(reason::HLT, 0x40_3000);
        exit(&mut vmcs, &mut block);
        complete(&mut vmcs, &mut block);
        vmcs.forget();
        // The core emulates HLT: RIP + 1, interrupt shadow off, and injects an interrupt.
        block.write_u64(offset::RIP, 0x40_3001);
        block.write_u64(offset::INTERRUPT_SHADOW, 0);
        block.write_u64(offset::EVENT_INJECTION, 0x30 | (1 << 31));
        load(&mut vmcs, &mut block);
        assert_eq!(
            vmcs.writes,
            [
                field::GUEST_RIP,
                field::GUEST_INTERRUPTIBILITY,
                field::GUEST_ACTIVITY_STATE,
                field::ENTRY_INTERRUPTION_INFO,
                field::ENTRY_INTERRUPTION_INFO,
                field::ENTRY_EXCEPTION_ERROR_CODE,
                field::ENTRY_INSTRUCTION_LENGTH,
            ]
        );
        assert_eq!(vmcs.get(field::ENTRY_INTERRUPTION_INFO), 0x30 | (1 << 31));
        assert_eq!(block.read_u64(offset::EVENT_INJECTION), 0);
    }

    /// `VcpuSetState` (and restoring a migrated vCPU) writes every group;
    /// `VcpuGetState` after a complete gives the state back.
    #[test]
    fn a_state_set_reaches_the_vmcs_and_comes_back() {
        let (mut block, mut vmcs) = started();
        vmcs.exit_at(reason::VMCALL, 0x40_2000);
        exit(&mut vmcs, &mut block);
        complete(&mut vmcs, &mut block);
        let mut regs = crate::svm::vmcb::GuestRegs::default();
        let mut s = state::save(&block, &regs, [0; 4]);
        s.rip = 0x50_0000;
        s.gprs[7] = 0x6f_0000;
        s.cr3 = 0xa000;
        s.rflags = 0x246;
        s.segments[ipc::vcpu_state::segment::FS].base = 0x1234_0000;
        s.msrs[6] = 0x8000; // SYSENTER_ESP
        state::validate(&s).expect("valid");
        state::load(&mut block, &mut regs, &s);
        vmcs.forget();
        load(&mut vmcs, &mut block);
        assert_eq!(vmcs.get(field::GUEST_RIP), 0x50_0000);
        assert_eq!(vmcs.get(field::GUEST_RSP), 0x6f_0000);
        assert_eq!(vmcs.get(field::GUEST_CR3), 0xa000);
        assert_eq!(vmcs.get(field::GUEST_RFLAGS), 0x246);
        assert_eq!(
            vmcs.get(field::segment(field::GUEST_ES_BASE, 4)),
            0x1234_0000
        );
        assert_eq!(vmcs.get(field::GUEST_SYSENTER_ESP), 0x8000);
        // Round trip through an exit (the guest changed nothing).
        vmcs.exit_at(reason::IO, 0x50_0000);
        exit(&mut vmcs, &mut block);
        complete(&mut vmcs, &mut block);
        let back = state::save(&block, &regs, [0; 4]);
        assert_eq!(back.rip, s.rip);
        assert_eq!(back.gprs, s.gprs);
        assert_eq!(back.cr3, s.cr3);
        assert_eq!(back.cr0 | (1 << 5), s.cr0 | (1 << 5));
        assert_eq!(back.cr4, s.cr4);
        assert_eq!(back.efer, s.efer);
        for (back, set) in back.segments.iter().zip(s.segments) {
            assert_eq!(
                (back.selector, back.limit, back.base),
                (set.selector, set.limit, set.base)
            );
            // VMX may add G to a segment above 1 MiB.
            assert_eq!(back.attrib & !G, set.attrib & !G);
        }
        assert_eq!(back.msrs[5..9], s.msrs[5..9]);
    }

    #[test]
    fn an_exit_reads_what_its_translation_needs() {
        let (mut block, mut vmcs) = started();
        vmcs.forget();
        // OUT dx, al to 0xf4 at 0x4000, 1 byte long.
        vmcs.fields.insert(field::EXIT_QUALIFICATION, 0xf4 << 16);
        vmcs.fields.insert(field::EXIT_INSTRUCTION_LENGTH, 1);
        vmcs.exit_at(reason::IO, 0x4000);
        exit(&mut vmcs, &mut block);
        assert_eq!(
            vmcs.reads,
            [
                field::EXIT_REASON,
                field::GUEST_RIP,
                field::EXIT_QUALIFICATION,
                field::EXIT_INSTRUCTION_LENGTH
            ]
        );
        assert_eq!(block.read_u64(offset::EXIT_INFO2), 0x4001);
        // An EPT violation during the delivery of vector 0x20: delivered again.
        vmcs.forget();
        vmcs.fields.insert(field::GUEST_PHYSICAL_ADDRESS, 0x10_0000);
        vmcs.fields
            .insert(field::IDT_VECTORING_INFO, 0x20 | (1 << 31));
        vmcs.exit_at(reason::EPT_VIOLATION, 0x4000);
        exit(&mut vmcs, &mut block);
        assert!(vmcs.reads.contains(&field::GUEST_PHYSICAL_ADDRESS));
        assert!(vmcs.reads.contains(&field::IDT_VECTORING_INFO));
        assert_eq!(block.read_u64(offset::EXIT_INFO2), 0x10_0000);
        assert_eq!(block.read_u64(offset::EVENT_INJECTION), 0x20 | (1 << 31));
        vmcs.forget();
        load(&mut vmcs, &mut block);
        assert_eq!(vmcs.get(field::ENTRY_INTERRUPTION_INFO), 0x20 | (1 << 31));
    }

    #[test]
    fn a_failed_entry_is_not_launched_and_sends_no_event() {
        let (mut block, mut vmcs) = started();
        block.write_u64(offset::EVENT_INJECTION, 0x30 | (1 << 31));
        load(&mut vmcs, &mut block);
        vmcs.exit_at(reason::INVALID_GUEST_STATE | (1 << 31), 0x40_1000);
        vmcs.fields
            .insert(field::ENTRY_INTERRUPTION_INFO, 0x30 | (1 << 31));
        exit(&mut vmcs, &mut block);
        assert_eq!(block.read_u64(offset::EXIT_CODE), u64::MAX);
        assert_eq!(block.read_u64(STATE) & LAUNCHED, 0);
        assert_eq!(vmcs.get(field::ENTRY_INTERRUPTION_INFO), 0);
    }

    /// Every field the backend copies belongs to a dirty group, so a core
    /// write of it is never lost.
    #[test]
    fn every_copied_field_has_a_group() {
        let copied = [
            offset::RIP,
            offset::RSP,
            offset::RFLAGS,
            offset::INTERRUPT_SHADOW,
            offset::CR0,
            offset::CR3,
            offset::CR4,
            offset::EFER,
            offset::G_PAT,
            offset::DR7,
            offset::GDTR,
            offset::IDTR,
            offset::SYSENTER_CS,
            offset::SYSENTER_ESP,
            offset::SYSENTER_EIP,
        ];
        for at in copied.into_iter().chain(SEGMENTS) {
            let (mut block, mut vmcs) = started();
            vmcs.forget();
            if dirty::group(at) & (dirty::SEGMENTS | dirty::DESCRIPTOR_TABLES) != 0 {
                let mut seg = block.segment(at);
                seg.base = 0x1000;
                block.set_segment(at, seg);
            } else {
                block.write_u64(at, 0x1000);
            }
            load(&mut vmcs, &mut block);
            assert!(
                !vmcs.writes.is_empty(),
                "offset {at:#x} never reaches the VMCS"
            );
        }
    }
}
