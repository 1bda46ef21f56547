//! A validating reader for the ELF64 partition images: the microkernel
//! loads the root partition with it, the root loads child runtimes.
//!
//! # Invariants
//! Every offset and size is checked against the file before it is used:
//! a truncated or hostile image gives an [`ElfError`], never a panic or a
//! read outside the slice. Loadable segments must lie inside the window the
//! caller allows and must not overlap each other.

/// Why an image was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Shorter than its headers claim.
    Truncated,
    /// Not an ELF file.
    BadMagic,
    /// Not ELF64, little-endian, x86-64, executable.
    Unsupported,
    /// A segment's file bytes exceed its memory size, or its range wraps.
    BadSegment,
    /// A segment lies outside the allowed virtual window.
    OutsideWindow,
    /// Two loadable segments overlap.
    Overlap,
    /// The entry point is not inside an executable segment.
    BadEntry,
    /// More loadable segments than [`MAX_SEGMENTS`].
    TooManySegments,
}

/// Most loadable segments an image may have.
pub const MAX_SEGMENTS: usize = 16;

/// One `PT_LOAD` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Segment {
    /// Virtual address of the first byte.
    pub vaddr: u64,
    /// Bytes in memory (the tail past `file_size` is zero).
    pub mem_size: u64,
    /// Offset of the segment's bytes in the file.
    pub file_offset: u64,
    /// Bytes taken from the file.
    pub file_size: u64,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub execute: bool,
}

/// A validated image.
#[derive(Clone, Debug)]
pub struct Image<'a> {
    bytes: &'a [u8],
    /// Entry point (virtual).
    pub entry: u64,
    segments: [Segment; MAX_SEGMENTS],
    count: usize,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, ElfError> {
    let s = b.get(at..at + 2).ok_or(ElfError::Truncated)?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, ElfError> {
    let s = b.get(at..at + 4).ok_or(ElfError::Truncated)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, ElfError> {
    let s = b.get(at..at + 8).ok_or(ElfError::Truncated)?;
    let mut a = [0; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const PF_W: u32 = 2;

impl<'a> Image<'a> {
    /// Parses and validates `bytes`; every loadable segment must lie in
    /// `[window_start, window_end)`.
    pub fn parse(bytes: &'a [u8], window_start: u64, window_end: u64) -> Result<Self, ElfError> {
        if bytes.len() < 64 {
            return Err(ElfError::Truncated);
        }
        if bytes[..4] != *b"\x7fELF" {
            return Err(ElfError::BadMagic);
        }
        // ELFCLASS64, little-endian, version 1, ET_EXEC, EM_X86_64.
        if bytes[4] != 2 || bytes[5] != 1 || bytes[6] != 1 {
            return Err(ElfError::Unsupported);
        }
        if u16_at(bytes, 16)? != 2 || u16_at(bytes, 18)? != 62 {
            return Err(ElfError::Unsupported);
        }
        let entry = u64_at(bytes, 24)?;
        let phoff = usize::try_from(u64_at(bytes, 32)?).map_err(|_| ElfError::Truncated)?;
        let phentsize = u16_at(bytes, 54)? as usize;
        let phnum = u16_at(bytes, 56)? as usize;
        if phentsize < 56 {
            return Err(ElfError::Unsupported);
        }
        let table_len = phentsize.checked_mul(phnum).ok_or(ElfError::Truncated)?;
        let table_end = phoff.checked_add(table_len).ok_or(ElfError::Truncated)?;
        if table_end > bytes.len() {
            return Err(ElfError::Truncated);
        }
        let mut image = Image {
            bytes,
            entry,
            segments: [Segment::default(); MAX_SEGMENTS],
            count: 0,
        };
        for i in 0..phnum {
            let at = phoff + i * phentsize;
            if u32_at(bytes, at)? != PT_LOAD {
                continue;
            }
            let flags = u32_at(bytes, at + 4)?;
            let seg = Segment {
                file_offset: u64_at(bytes, at + 8)?,
                vaddr: u64_at(bytes, at + 16)?,
                file_size: u64_at(bytes, at + 32)?,
                mem_size: u64_at(bytes, at + 40)?,
                write: flags & PF_W != 0,
                execute: flags & PF_X != 0,
            };
            if seg.mem_size == 0 {
                continue;
            }
            image.check_segment(&seg, window_start, window_end)?;
            let slot = image
                .segments
                .get_mut(image.count)
                .ok_or(ElfError::TooManySegments)?;
            *slot = seg;
            image.count += 1;
        }
        if !image
            .segments()
            .iter()
            .any(|s| s.execute && s.vaddr <= entry && entry < s.vaddr + s.mem_size)
        {
            return Err(ElfError::BadEntry);
        }
        Ok(image)
    }

    fn check_segment(
        &self,
        seg: &Segment,
        window_start: u64,
        window_end: u64,
    ) -> Result<(), ElfError> {
        if seg.file_size > seg.mem_size {
            return Err(ElfError::BadSegment);
        }
        let file_end = seg
            .file_offset
            .checked_add(seg.file_size)
            .ok_or(ElfError::BadSegment)?;
        if file_end > self.bytes.len() as u64 {
            return Err(ElfError::Truncated);
        }
        let end = seg
            .vaddr
            .checked_add(seg.mem_size)
            .ok_or(ElfError::BadSegment)?;
        if seg.vaddr < window_start || end > window_end {
            return Err(ElfError::OutsideWindow);
        }
        for other in self.segments() {
            if seg.vaddr < other.vaddr + other.mem_size && other.vaddr < end {
                return Err(ElfError::Overlap);
            }
        }
        Ok(())
    }

    /// The loadable segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments[..self.count]
    }

    /// The file bytes of a segment (validated at parse time).
    pub fn file_bytes(&self, seg: &Segment) -> &'a [u8] {
        let start = seg.file_offset as usize;
        self.bytes
            .get(start..start + seg.file_size as usize)
            .unwrap_or(&[])
    }

    /// Lowest and one-past-highest virtual address of the loadable segments.
    pub fn span(&self) -> (u64, u64) {
        let start = self.segments().iter().map(|s| s.vaddr).min().unwrap_or(0);
        let end = self
            .segments()
            .iter()
            .map(|s| s.vaddr + s.mem_size)
            .max()
            .unwrap_or(0);
        (start, end)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    const BASE: u64 = 0xffff_ffff_8000_0000;

    /// A minimal ELF: header, two program headers, 0x100 bytes of code.
    fn image() -> Vec<u8> {
        let mut b = vec![0u8; 0x200];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        b[16..18].copy_from_slice(&2u16.to_le_bytes());
        b[18..20].copy_from_slice(&62u16.to_le_bytes());
        b[24..32].copy_from_slice(&(BASE + 0x10).to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&2u16.to_le_bytes());
        let ph = |b: &mut Vec<u8>,
                  at: usize,
                  flags: u32,
                  off: u64,
                  vaddr: u64,
                  filesz: u64,
                  memsz: u64| {
            b[at..at + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
            b[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
            b[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
            b[at + 32..at + 40].copy_from_slice(&filesz.to_le_bytes());
            b[at + 40..at + 48].copy_from_slice(&memsz.to_le_bytes());
        };
        ph(&mut b, 64, PF_X | 4, 0x100, BASE, 0x80, 0x80);
        ph(&mut b, 120, PF_W | 4, 0x180, BASE + 0x1000, 0x80, 0x3000);
        b
    }

    #[test]
    fn parses_a_valid_image() {
        let bytes = image();
        let img = Image::parse(&bytes, BASE, u64::MAX).unwrap();
        assert_eq!(img.entry, BASE + 0x10);
        assert_eq!(img.segments().len(), 2);
        assert!(img.segments()[0].execute && !img.segments()[0].write);
        assert_eq!(img.file_bytes(&img.segments()[1]).len(), 0x80);
        assert_eq!(img.span(), (BASE, BASE + 0x4000));
    }

    #[test]
    fn refuses_hostile_images() {
        let good = image();
        let mut b = good.clone();
        b[0] = 0;
        assert_eq!(
            Image::parse(&b, BASE, u64::MAX).unwrap_err(),
            ElfError::BadMagic
        );
        assert_eq!(
            Image::parse(&good[..100], BASE, u64::MAX).unwrap_err(),
            ElfError::Truncated
        );
        assert_eq!(
            Image::parse(&good, BASE + 0x1000, u64::MAX).unwrap_err(),
            ElfError::OutsideWindow
        );
        let mut b = good.clone();
        b[120 + 32..120 + 40].copy_from_slice(&0x4000u64.to_le_bytes()); // filesz > memsz
        assert_eq!(
            Image::parse(&b, BASE, u64::MAX).unwrap_err(),
            ElfError::BadSegment
        );
        let mut b = good.clone();
        b[120 + 8..120 + 16].copy_from_slice(&u64::MAX.to_le_bytes()); // offset wraps
        assert_eq!(
            Image::parse(&b, BASE, u64::MAX).unwrap_err(),
            ElfError::BadSegment
        );
        let mut b = good.clone();
        b[120 + 16..120 + 24].copy_from_slice(&(BASE + 0x40).to_le_bytes()); // overlaps segment 0
        assert_eq!(
            Image::parse(&b, BASE, u64::MAX).unwrap_err(),
            ElfError::Overlap
        );
        let mut b = good.clone();
        b[24..32].copy_from_slice(&(BASE + 0x1000).to_le_bytes()); // entry in data
        assert_eq!(
            Image::parse(&b, BASE, u64::MAX).unwrap_err(),
            ElfError::BadEntry
        );
        let mut b = good.clone();
        b[56..58].copy_from_slice(&0xffffu16.to_le_bytes());
        assert_eq!(
            Image::parse(&b, BASE, u64::MAX).unwrap_err(),
            ElfError::Truncated
        );
        let mut b = good;
        b[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Image::parse(&b, BASE, u64::MAX).is_err());
    }
}
