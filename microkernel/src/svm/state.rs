//! Converting between a VMCB (plus the registers VMRUN does not keep) and
//! the architecture-neutral [`VcpuState`] of `VcpuGetState`/`VcpuSetState`.
//!
//! # Invariants
//! `load` only accepts states `validate` passed: long mode with paging on,
//! so a partition cannot hand the processor a state it would refuse or one
//! that leaves 64-bit mode.

use ipc::vcpu_state::{SegmentState, VcpuState, segment};

use super::vmcb::{GuestRegs, Segment, Vmcb, mode, offset};

const SEGMENTS: [usize; 10] = [
    offset::ES,
    offset::CS,
    offset::SS,
    offset::DS,
    offset::FS,
    offset::GS,
    offset::GDTR,
    offset::LDTR,
    offset::IDTR,
    offset::TR,
];
const MSRS: [usize; 9] = [
    offset::STAR,
    offset::LSTAR,
    offset::CSTAR,
    offset::SFMASK,
    offset::KERNEL_GS_BASE,
    offset::SYSENTER_CS,
    offset::SYSENTER_ESP,
    offset::SYSENTER_EIP,
    offset::G_PAT,
];

/// Why a state was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidState;

/// Reads a vCPU's complete state. An external interrupt queued for the
/// next entry (taken from the pending set, or re-queued after an exit that
/// interrupted its delivery) counts as pending: a state saved then and
/// loaded elsewhere still delivers it.
pub fn save(vmcb: &Vmcb, regs: &GuestRegs, mut pending: [u64; 4]) -> VcpuState {
    if let Some(vector) = vmcb.injected_interrupt() {
        pending[usize::from(vector / 64)] |= 1 << (vector % 64);
    }
    let mut s = VcpuState {
        gprs: [
            vmcb.read_u64(offset::RAX),
            regs.rbx,
            regs.rcx,
            regs.rdx,
            regs.rsi,
            regs.rdi,
            regs.rbp,
            vmcb.read_u64(offset::RSP),
            regs.r8,
            regs.r9,
            regs.r10,
            regs.r11,
            regs.r12,
            regs.r13,
            regs.r14,
            regs.r15,
        ],
        rip: vmcb.read_u64(offset::RIP),
        rflags: vmcb.read_u64(offset::RFLAGS),
        cr0: vmcb.read_u64(offset::CR0),
        cr2: vmcb.read_u64(offset::CR2),
        cr3: vmcb.read_u64(offset::CR3),
        cr4: vmcb.read_u64(offset::CR4),
        efer: vmcb.read_u64(offset::EFER) & !mode::EFER_SVME,
        pending,
        ..VcpuState::default()
    };
    for (out, &at) in s.segments.iter_mut().zip(SEGMENTS.iter()) {
        let seg = vmcb.segment(at);
        *out = SegmentState {
            selector: seg.selector,
            attrib: seg.attrib,
            limit: seg.limit,
            base: seg.base,
        };
    }
    for (out, &at) in s.msrs.iter_mut().zip(MSRS.iter()) {
        *out = vmcb.read_u64(at);
    }
    s.debug = [vmcb.read_u64(offset::DR6), vmcb.read_u64(offset::DR7)];
    s
}

/// Checks that a state keeps the vCPU in 64-bit mode with paging on.
pub fn validate(s: &VcpuState) -> Result<(), InvalidState> {
    let long = mode::EFER_LONG & !(1 | (1 << 11)); // LME | LMA
    let cs = s.segments[segment::CS];
    let canonical = |a: u64| !((1u64 << 47)..0xffff_8000_0000_0000).contains(&a);
    if s.efer & long != long
        || s.efer & !(mode::EFER_LONG | (1 << 14)) != 0
        || s.cr0 & (1 | (1 << 31)) != (1 | (1 << 31))
        || s.cr4 & (1 << 5) == 0
        || cs.attrib & (1 << 9) == 0
        || !canonical(s.rip)
        || s.rflags & 0x2 == 0
        || s.cr3 & 0xfff0_0000_0000_0000 != 0
    {
        return Err(InvalidState);
    }
    Ok(())
}

/// Loads a validated state; returns the pending vectors.
pub fn load(vmcb: &mut Vmcb, regs: &mut GuestRegs, s: &VcpuState) -> [u64; 4] {
    let g = s.gprs;
    vmcb.write_u64(offset::RAX, g[0]);
    *regs = GuestRegs {
        rbx: g[1],
        rcx: g[2],
        rdx: g[3],
        rsi: g[4],
        rdi: g[5],
        rbp: g[6],
        r8: g[8],
        r9: g[9],
        r10: g[10],
        r11: g[11],
        r12: g[12],
        r13: g[13],
        r14: g[14],
        r15: g[15],
    };
    vmcb.write_u64(offset::RSP, g[7]);
    vmcb.write_u64(offset::RIP, s.rip);
    vmcb.write_u64(offset::RFLAGS, s.rflags);
    vmcb.write_u64(offset::CR0, s.cr0);
    vmcb.write_u64(offset::CR2, s.cr2);
    vmcb.write_u64(offset::CR3, s.cr3);
    vmcb.write_u64(offset::CR4, s.cr4);
    vmcb.write_u64(offset::EFER, s.efer | mode::EFER_SVME);
    for (seg, &at) in s.segments.iter().zip(SEGMENTS.iter()) {
        vmcb.set_segment(
            at,
            Segment {
                selector: seg.selector,
                attrib: seg.attrib,
                limit: seg.limit,
                base: seg.base,
            },
        );
    }
    for (value, &at) in s.msrs.iter().zip(MSRS.iter()) {
        vmcb.write_u64(at, *value);
    }
    vmcb.write_u64(offset::DR6, s.debug[0]);
    vmcb.write_u64(offset::DR7, s.debug[1]);
    vmcb.write_u64(offset::EVENT_INJECTION, 0);
    s.pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svm::vmcb::LongModeStart;

    #[test]
    fn save_load_round_trip_and_validation() {
        let mut vmcb = Box::new(Vmcb::new());
        vmcb.init_long_mode(&LongModeStart {
            cr3: 0x2000,
            rip: 0x40_1000,
            rsp: 0x8000,
            asid: 1,
            nested_cr3: 0,
            iopm: 0,
            msrpm: 0,
        });
        let regs = GuestRegs {
            rbx: 7,
            r15: 9,
            ..GuestRegs::default()
        };
        let s = save(&vmcb, &regs, [0, 1, 0, 0]);
        assert_eq!(s.efer & mode::EFER_SVME, 0, "SVME is hidden");
        validate(&s).unwrap();
        let mut other = Box::new(Vmcb::new());
        let mut regs2 = GuestRegs::default();
        assert_eq!(load(&mut other, &mut regs2, &s), [0, 1, 0, 0]);
        assert_eq!(regs2, regs);
        assert_eq!(save(&other, &regs2, [0, 1, 0, 0]), s);
        assert_ne!(other.read_u64(offset::EFER) & mode::EFER_SVME, 0);
        // An interrupt queued for the next entry is saved as pending.
        vmcb.write_u64(offset::EVENT_INJECTION, 0x45 | (1 << 31));
        assert_eq!(
            save(&vmcb, &regs, [0, 1, 0, 0]).pending,
            [0, 1 | (1 << 5), 0, 0]
        );
        // An exception is not (the instruction runs again).
        vmcb.write_u64(offset::EVENT_INJECTION, 6 | (3 << 8) | (1 << 31));
        assert_eq!(save(&vmcb, &regs, [0, 1, 0, 0]).pending, [0, 1, 0, 0]);
        let mut bad = s;
        bad.efer = 0;
        assert_eq!(validate(&bad), Err(InvalidState));
        let mut bad = s;
        bad.cr0 &= !(1 << 31);
        assert_eq!(validate(&bad), Err(InvalidState));
        let mut bad = s;
        bad.rip = 0x8000_0000_0000;
        assert_eq!(validate(&bad), Err(InvalidState));
    }
}
