//! The I/O permission map (IOPM) and MSR permission map (MSRPM) that decide
//! which port and MSR accesses a partition makes directly and which exit to
//! the microkernel.
//!
//! # Invariants
//! A set bit means "intercept". A map starts with everything intercepted;
//! only ranges explicitly granted are cleared.

/// Bytes in an IOPM (65,536 ports + the 3 bits past the end an access can touch).
pub const IOPM_BYTES: usize = 3 * 4096;
/// Bytes in an MSRPM.
pub const MSRPM_BYTES: usize = 2 * 4096;

/// Grants (or takes back) direct access to ports `[first, first + count)`.
pub fn set_ports(iopm: &mut [u8; IOPM_BYTES], first: u16, count: u32, intercept: bool) {
    for port in first as u32..(first as u32 + count).min(0x1_0000) {
        let (byte, bit) = ((port / 8) as usize, port % 8);
        if intercept {
            iopm[byte] |= 1 << bit;
        } else {
            iopm[byte] &= !(1 << bit);
        }
    }
}

/// Whether an access to `port` exits.
pub fn port_intercepted(iopm: &[u8; IOPM_BYTES], port: u16) -> bool {
    iopm[port as usize / 8] & (1 << (port % 8)) != 0
}

/// The byte offset and bit of an MSR's read bit in the MSRPM, if the MSR is
/// in one of the three ranges the map covers (others always exit).
fn msr_slot(msr: u32) -> Option<(usize, u32)> {
    let (base, first) = match msr {
        0..=0x1fff => (0, 0),
        0xc000_0000..=0xc000_1fff => (0x800, 0xc000_0000),
        0xc001_0000..=0xc001_1fff => (0x1000, 0xc001_0000),
        _ => return None,
    };
    let index = (msr - first) * 2;
    Some((base + (index / 8) as usize, index % 8))
}

/// Lets the partition read and write `msr` directly. Returns false for an
/// MSR the map cannot cover.
pub fn pass_msr(msrpm: &mut [u8; MSRPM_BYTES], msr: u32) -> bool {
    match msr_slot(msr) {
        Some((byte, bit)) => {
            msrpm[byte] &= !(0b11 << bit);
            true
        }
        None => false,
    }
}

/// Whether a read (`write == false`) or write of `msr` exits.
pub fn msr_intercepted(msrpm: &[u8; MSRPM_BYTES], msr: u32, write: bool) -> bool {
    match msr_slot(msr) {
        Some((byte, bit)) => msrpm[byte] & (1 << (bit + write as u32)) != 0,
        None => true,
    }
}

/// MSRs whose state lives in the VMCB (loaded by VMRUN/VMLOAD, saved by
/// #VMEXIT/VMSAVE), so a partition may access them directly.
pub const PASSTHROUGH_MSRS: [u32; 10] = [
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    0x176,       // SYSENTER_EIP
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SFMASK
    0xc000_0100, // FS_BASE
    0xc000_0101, // GS_BASE
    0xc000_0102, // KERNEL_GS_BASE
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_round_trip() {
        let mut iopm = [0xffu8; IOPM_BYTES];
        set_ports(&mut iopm, 0x3f8, 8, false);
        assert!(!port_intercepted(&iopm, 0x3f8));
        assert!(!port_intercepted(&iopm, 0x3ff));
        assert!(port_intercepted(&iopm, 0x3f7));
        assert!(port_intercepted(&iopm, 0x400));
        set_ports(&mut iopm, 0xfff0, 100, false); // clamps at the last port
        assert!(!port_intercepted(&iopm, 0xffff));
        assert_eq!(iopm[0x2000], 0xff, "bits past port 0xffff stay set");
    }

    #[test]
    fn msrs_round_trip() {
        let mut msrpm = [0xffu8; MSRPM_BYTES];
        for msr in PASSTHROUGH_MSRS {
            assert!(pass_msr(&mut msrpm, msr));
        }
        assert!(!msr_intercepted(&msrpm, 0xc000_0100, false));
        assert!(!msr_intercepted(&msrpm, 0xc000_0100, true));
        assert!(
            msr_intercepted(&msrpm, 0xc000_0080, true),
            "EFER stays intercepted"
        );
        assert!(
            msr_intercepted(&msrpm, 0x1b, false),
            "APIC_BASE stays intercepted"
        );
        assert!(msr_intercepted(&msrpm, 0x4000_0000, false));
        assert!(!pass_msr(&mut msrpm, 0x4000_0000));
        // FS_BASE (0xc0000100) is entry 0x100 of the second range: byte 0x800 + 0x40.
        assert_eq!(msrpm[0x840] & 0b11, 0);
    }
}
