//! A vCPU's complete architectural state, as `VcpuGetState` writes it and
//! `VcpuSetState` reads it (one page, little-endian u64 words in field
//! order; `docs/hypercalls.md` lists the offsets).

/// A segment register (selector, attributes in AMD VMCB format, limit, base).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentState {
    /// Selector.
    pub selector: u16,
    /// Attributes (descriptor bits 8–15 and 20–23 packed, as in the VMCB).
    pub attrib: u16,
    /// Limit.
    pub limit: u32,
    /// Base.
    pub base: u64,
}

/// Index of each segment in [`VcpuState::segments`].
#[allow(missing_docs)]
pub mod segment {
    pub const ES: usize = 0;
    pub const CS: usize = 1;
    pub const SS: usize = 2;
    pub const DS: usize = 3;
    pub const FS: usize = 4;
    pub const GS: usize = 5;
    pub const GDTR: usize = 6;
    pub const LDTR: usize = 7;
    pub const IDTR: usize = 8;
    pub const TR: usize = 9;
}

/// Everything needed to resume a vCPU elsewhere.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuState {
    /// RAX, RBX, RCX, RDX, RSI, RDI, RBP, RSP, R8–R15.
    pub gprs: [u64; 16],
    /// Instruction pointer.
    pub rip: u64,
    /// Flags.
    pub rflags: u64,
    /// CR0.
    pub cr0: u64,
    /// CR2.
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER as the guest sees it.
    pub efer: u64,
    /// ES, CS, SS, DS, FS, GS, GDTR, LDTR, IDTR, TR.
    pub segments: [SegmentState; 10],
    /// STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE, SYSENTER_CS/ESP/EIP, PAT.
    pub msrs: [u64; 9],
    /// DR6, DR7.
    pub debug: [u64; 2],
    /// Pending virtual interrupt vectors (bit n of word n/64).
    pub pending: [u64; 4],
}

/// Words in the encoding.
pub const WORDS: usize = 16 + 2 + 5 + 20 + 9 + 2 + 4;

impl VcpuState {
    /// Encodes into a page.
    pub fn to_page(&self) -> [u8; 4096] {
        let mut words = [0u64; WORDS];
        let mut i = 0;
        let mut put = |w: u64| {
            words[i] = w;
            i += 1;
        };
        self.gprs.iter().for_each(|&w| put(w));
        [
            self.rip,
            self.rflags,
            self.cr0,
            self.cr2,
            self.cr3,
            self.cr4,
            self.efer,
        ]
        .into_iter()
        .for_each(&mut put);
        for s in &self.segments {
            put(s.selector as u64 | ((s.attrib as u64) << 16) | ((s.limit as u64) << 32));
            put(s.base);
        }
        self.msrs
            .iter()
            .chain(&self.debug)
            .chain(&self.pending)
            .for_each(|&w| put(w));
        let mut page = [0u8; 4096];
        for (n, w) in words.iter().enumerate() {
            page[n * 8..n * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        page
    }

    /// Decodes a page (any bit pattern decodes; the kernel validates what it loads).
    pub fn from_page(page: &[u8; 4096]) -> VcpuState {
        let mut n = 0;
        let mut get = || {
            let mut b = [0u8; 8];
            b.copy_from_slice(&page[n * 8..n * 8 + 8]);
            n += 1;
            u64::from_le_bytes(b)
        };
        let mut s = VcpuState::default();
        s.gprs.iter_mut().for_each(|w| *w = get());
        s.rip = get();
        s.rflags = get();
        s.cr0 = get();
        s.cr2 = get();
        s.cr3 = get();
        s.cr4 = get();
        s.efer = get();
        for seg in s.segments.iter_mut() {
            let w = get();
            *seg = SegmentState {
                selector: w as u16,
                attrib: (w >> 16) as u16,
                limit: (w >> 32) as u32,
                base: get(),
            };
        }
        s.msrs.iter_mut().for_each(|w| *w = get());
        s.debug.iter_mut().for_each(|w| *w = get());
        s.pending.iter_mut().for_each(|w| *w = get());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut s = VcpuState::default();
        for (i, g) in s.gprs.iter_mut().enumerate() {
            *g = i as u64 * 0x1111;
        }
        s.rip = 0xffff_ffff_8000_1234;
        s.segments[segment::CS] = SegmentState {
            selector: 8,
            attrib: 0x29b,
            limit: 0xffff_ffff,
            base: 0,
        };
        s.msrs[8] = 0x0007_0406_0007_0406;
        s.pending[1] = 1;
        assert_eq!(VcpuState::from_page(&s.to_page()), s);
    }
}
