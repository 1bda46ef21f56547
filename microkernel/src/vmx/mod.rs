//! Intel VMX data that needs no hardware: VMCS field encodings, control
//! adjustment against the capability MSRs, segment access rights, the
//! translation of a VMX exit into the kernel core's exit vocabulary, and
//! what is copied between the guest-state block and the VMCS when.
//!
//! The kernel core keeps every vCPU's guest state in a VMCB-layout block
//! (`svm::vmcb::Vmcb`); on Intel processors the hardware layer mirrors that
//! block in the VMCS (`sync`: what an exit needs after it, the rest when
//! anything but the null-hypercall fast path looks, what the core changed
//! before the next entry), and describes the exit with the same codes SVM
//! uses. So the core, its hypercalls and its tests are the same on both
//! backends.

pub mod exit;
pub mod field;
pub mod sync;

/// Adjusts a desired control value to what the processor allows: the low
/// half of the capability MSR holds the bits that must be 1, the high half
/// the bits that may be 1.
pub const fn adjust_controls(desired: u32, capability: u64) -> u32 {
    let must_be_one = capability as u32;
    let may_be_one = (capability >> 32) as u32;
    (desired | must_be_one) & may_be_one
}

/// VMX access rights from VMCB segment attributes (type, S, DPL, P in bits
/// 0–7; AVL, L, D/B, G in bits 8–11 of the VMCB format, 12–15 in VMX);
/// attributes of 0 mark an unusable segment (bit 16).
pub const fn access_rights(vmcb_attrib: u16) -> u32 {
    if vmcb_attrib == 0 {
        return 1 << 16;
    }
    (vmcb_attrib as u32 & 0xff) | ((vmcb_attrib as u32 & 0xf00) << 4)
}

/// VMCB segment attributes from VMX access rights (0 for an unusable segment).
pub const fn vmcb_attributes(access_rights: u32) -> u16 {
    if access_rights & (1 << 16) != 0 {
        return 0;
    }
    ((access_rights & 0xff) | ((access_rights >> 4) & 0xf00)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svm::vmcb::{CODE64_ATTRIB, DATA_ATTRIB, TSS_ATTRIB};

    #[test]
    fn controls_respect_the_capability_msr() {
        // Bits 1, 2 must be 1; only bits 0–7 may be 1.
        let cap = (0xffu64 << 32) | 0b110;
        assert_eq!(adjust_controls(0b1_0000_0001, cap), 0b111);
    }

    #[test]
    fn access_rights_round_trip() {
        assert_eq!(access_rights(CODE64_ATTRIB), 0x209b);
        assert_eq!(access_rights(DATA_ATTRIB), 0xc093);
        assert_eq!(access_rights(TSS_ATTRIB), 0x008b);
        assert_eq!(access_rights(0), 1 << 16);
        for attrib in [CODE64_ATTRIB, DATA_ATTRIB, TSS_ATTRIB, 0] {
            assert_eq!(vmcb_attributes(access_rights(attrib)), attrib);
        }
    }
}
