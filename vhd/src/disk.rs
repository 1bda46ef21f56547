//! An open VHD: reads, writes, block allocation and flush.
//!
//! Invariants: accesses are checked against the virtual size before any I/O;
//! every table entry points at a validated block (see `open.rs`), and new
//! blocks are appended at the footer's position with the footer first moved
//! past them, so the file always ends in a valid footer. Table entries and
//! sector-bitmap updates are held in memory and written by [`Vhd::flush`]
//! only after the data they describe is durable: a crash between flushes
//! loses unflushed writes but never leaves a table entry pointing at
//! unwritten space.

use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::footer::{DiskType, Footer};
use crate::header::DynamicHeader;
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec;
use alloc::vec::Vec;

/// Table entry of a block that is not allocated.
pub(crate) const UNUSED: u32 = u32::MAX;
/// Sector bitmaps kept in memory before the cache is written back and emptied.
const BITMAP_CACHE: usize = 256;
const SECTOR: u64 = 512;

/// A sector bitmap held in memory.
pub(crate) struct CachedBitmap {
    pub(crate) bits: Vec<u8>,
    pub(crate) dirty: bool,
}

/// State of a dynamic or differencing disk.
pub(crate) struct Sparse {
    pub(crate) header: DynamicHeader,
    /// One entry per block of the virtual disk (sector offset or [`UNUSED`]).
    pub(crate) bat: Vec<u32>,
    pub(crate) bitmap_size: u32,
    /// One bit per block: its sector bitmap is known to be all ones.
    pub(crate) full: Vec<u64>,
    pub(crate) bitmaps: BTreeMap<u32, CachedBitmap>,
    /// Table sectors (128 entries each) changed since the last flush.
    pub(crate) dirty_table: BTreeSet<u32>,
}

impl Sparse {
    fn is_full(&self, block: u32) -> bool {
        self.full
            .get(block as usize / 64)
            .is_some_and(|w| w >> (block % 64) & 1 == 1)
    }

    fn set_full(&mut self, block: u32) {
        if let Some(w) = self.full.get_mut(block as usize / 64) {
            *w |= 1 << (block % 64);
        }
    }

    pub(crate) fn block_size(&self) -> u64 {
        u64::from(self.header.block_size)
    }

    /// File offset of a block's data, if it is allocated.
    pub(crate) fn data_offset(&self, block: u32) -> Option<u64> {
        match self.bat.get(block as usize) {
            Some(&e) if e != UNUSED => Some(u64::from(e) * SECTOR + u64::from(self.bitmap_size)),
            _ => None,
        }
    }
}

/// An open VHD file of any type, generic over the device holding it.
pub struct Vhd<D: BlockDevice> {
    pub(crate) dev: D,
    pub(crate) footer: Footer,
    /// Offset of the footer at the end of the file.
    pub(crate) footer_offset: u64,
    /// The footer must be rewritten at `footer_offset` on flush.
    pub(crate) footer_dirty: bool,
    /// The end footer was damaged when opened and the start copy was used.
    pub(crate) recovered_footer: bool,
    pub(crate) size: u64,
    pub(crate) sparse: Option<Sparse>,
    pub(crate) parent: Option<Box<Vhd<D>>>,
    pub(crate) writable: bool,
}

/// A run of sectors inside one block that is either present in this file or not.
struct Run {
    start: u64,
    end: u64,
    present: bool,
}

impl<D: BlockDevice> Vhd<D> {
    /// Virtual size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Fixed, dynamic or differencing.
    pub fn disk_type(&self) -> DiskType {
        self.footer.disk_type
    }

    /// The decoded footer.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// The dynamic header (dynamic and differencing disks).
    pub fn header(&self) -> Option<&DynamicHeader> {
        self.sparse.as_ref().map(|s| &s.header)
    }

    /// Whether the end footer was damaged and recovered from the copy at offset 0
    /// (a writable open rewrites it at the next flush).
    pub fn footer_recovered(&self) -> bool {
        self.recovered_footer
    }

    /// Whether writes are allowed.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Blocks in the table and how many are allocated (dynamic and differencing disks).
    pub fn block_usage(&self) -> Option<(u32, u32)> {
        self.sparse.as_ref().map(|s| {
            let used = s.bat.iter().filter(|&&e| e != UNUSED).count();
            (s.bat.len() as u32, used as u32)
        })
    }

    /// The attached parent, if any.
    pub fn parent(&self) -> Option<&Vhd<D>> {
        self.parent.as_deref()
    }

    /// The underlying device.
    pub fn device(&mut self) -> &mut D {
        &mut self.dev
    }

    /// Flush and hand back the device (and drop any parent).
    pub fn into_device(mut self) -> Result<D> {
        self.flush()?;
        Ok(self.dev)
    }

    fn check_range(&self, offset: u64, len: usize) -> Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Error::OutOfRange {
                offset,
                len: len as u64,
                size: self.size,
            }),
        }
    }

    /// Read `buf.len()` bytes of the virtual disk at `offset`.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        let Some(sparse) = &self.sparse else {
            return Ok(self.dev.read_at(offset, buf)?);
        };
        let block_size = sparse.block_size();
        let (mut offset, mut buf) = (offset, buf);
        while !buf.is_empty() {
            let within = offset % block_size;
            let n = (block_size - within).min(buf.len() as u64) as usize;
            let (chunk, rest) = buf.split_at_mut(n);
            self.read_in_block((offset / block_size) as u32, within, chunk)?;
            offset += n as u64;
            buf = rest;
        }
        Ok(())
    }

    fn read_in_block(&mut self, block: u32, within: u64, chunk: &mut [u8]) -> Result<()> {
        let Some(sparse) = &self.sparse else {
            return Ok(());
        };
        let block_start = u64::from(block) * sparse.block_size();
        let Some(data) = sparse.data_offset(block) else {
            return self.read_absent(block_start + within, chunk);
        };
        if !sparse.is_full(block) {
            self.load_bitmap(block)?;
        }
        let runs = self.runs(block, within, within + chunk.len() as u64);
        for run in runs {
            let piece = &mut chunk[(run.start - within) as usize..(run.end - within) as usize];
            if run.present {
                self.dev.read_at(data + run.start, piece)?;
            } else {
                self.read_absent(block_start + run.start, piece)?;
            }
        }
        Ok(())
    }

    /// Bytes this file does not hold: zeros, or the parent's data.
    fn read_absent(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if self.footer.disk_type != DiskType::Differencing {
            buf.fill(0);
            return Ok(());
        }
        match self.parent.as_deref_mut() {
            Some(parent) => parent.read_at(offset, buf),
            None => Err(Error::NoParent),
        }
    }

    /// Split `start..end` (bytes within a block) into runs by sector presence.
    fn runs(&self, block: u32, start: u64, end: u64) -> Vec<Run> {
        let Some(sparse) = &self.sparse else {
            return Vec::new();
        };
        if sparse.is_full(block) {
            return vec![Run {
                start,
                end,
                present: true,
            }];
        }
        let bits = sparse
            .bitmaps
            .get(&block)
            .map(|b| b.bits.as_slice())
            .unwrap_or(&[]);
        let bit = |sector: u64| {
            bits.get((sector / 8) as usize)
                .is_some_and(|b| b & (0x80 >> (sector % 8)) != 0)
        };
        let mut runs: Vec<Run> = Vec::new();
        let mut pos = start;
        while pos < end {
            let sector = pos / SECTOR;
            let next = ((sector + 1) * SECTOR).min(end);
            let present = bit(sector);
            match runs.last_mut() {
                Some(last) if last.present == present => last.end = next,
                _ => runs.push(Run {
                    start: pos,
                    end: next,
                    present,
                }),
            }
            pos = next;
        }
        runs
    }

    /// Byte ranges within `block` (from 0 to `len`) marked present in its bitmap.
    pub(crate) fn present_ranges(&self, block: u32, len: u64) -> Vec<(u64, u64)> {
        self.runs(block, 0, len)
            .into_iter()
            .filter(|r| r.present)
            .map(|r| (r.start, r.end))
            .collect()
    }

    /// Bring a block's sector bitmap into the cache (or mark it full).
    pub(crate) fn load_bitmap_for(&mut self, block: u32) -> Result<()> {
        self.load_bitmap(block)
    }

    fn load_bitmap(&mut self, block: u32) -> Result<()> {
        let needs_room = match &self.sparse {
            Some(s) if s.is_full(block) || s.bitmaps.contains_key(&block) => return Ok(()),
            Some(s) => s.bitmaps.len() >= BITMAP_CACHE,
            None => return Ok(()),
        };
        if needs_room {
            self.write_metadata()?;
            if let Some(s) = &mut self.sparse {
                s.bitmaps.clear();
            }
        }
        let Some(sparse) = &mut self.sparse else {
            return Ok(());
        };
        let Some(&entry) = sparse.bat.get(block as usize) else {
            return Ok(());
        };
        let mut bits = vec![0u8; sparse.bitmap_size as usize];
        self.dev.read_at(u64::from(entry) * SECTOR, &mut bits)?;
        let sectors = (sparse.block_size() / SECTOR) as usize;
        if bitmap_all_set(&bits, sectors) {
            sparse.set_full(block);
        } else {
            sparse
                .bitmaps
                .insert(block, CachedBitmap { bits, dirty: false });
        }
        Ok(())
    }

    /// Write `buf.len()` bytes of the virtual disk at `offset`.
    pub fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly);
        }
        self.check_range(offset, buf.len())?;
        if self.sparse.is_none() {
            return Ok(self.dev.write_at(offset, buf)?);
        }
        let (mut pos, mut src) = (offset, buf);
        while !src.is_empty() {
            let in_sector = (pos % SECTOR) as usize;
            if in_sector != 0 || src.len() < SECTOR as usize {
                // Partial sector: merge with what the disk (or its parent) holds now.
                let sector_start = pos - in_sector as u64;
                let n = (SECTOR as usize - in_sector).min(src.len());
                let mut sector = [0u8; SECTOR as usize];
                self.read_at(sector_start, &mut sector)?;
                sector[in_sector..in_sector + n].copy_from_slice(&src[..n]);
                self.write_sectors(sector_start, &sector)?;
                pos += n as u64;
                src = &src[n..];
            } else {
                let n = src.len() / SECTOR as usize * SECTOR as usize;
                self.write_sectors(pos, &src[..n])?;
                pos += n as u64;
                src = &src[n..];
            }
        }
        Ok(())
    }

    /// Write whole sectors of a sparse disk.
    fn write_sectors(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        let Some(sparse) = &self.sparse else {
            return Ok(());
        };
        let block_size = sparse.block_size();
        let (mut offset, mut buf) = (offset, buf);
        while !buf.is_empty() {
            let block = (offset / block_size) as u32;
            let within = offset % block_size;
            let n = (block_size - within).min(buf.len() as u64) as usize;
            let data = match self.sparse.as_ref().and_then(|s| s.data_offset(block)) {
                Some(data) => data,
                None => self.allocate_block(block)?,
            };
            self.dev.write_at(data + within, &buf[..n])?;
            self.mark_written(block, within / SECTOR, n as u64 / SECTOR)?;
            offset += n as u64;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Set the bitmap bits of sectors just written (held until flush).
    fn mark_written(&mut self, block: u32, first: u64, count: u64) -> Result<()> {
        match &self.sparse {
            Some(s) if !s.is_full(block) => {}
            _ => return Ok(()),
        }
        self.load_bitmap(block)?;
        let Some(sparse) = &mut self.sparse else {
            return Ok(());
        };
        let sectors = (sparse.block_size() / SECTOR) as usize;
        let Some(cached) = sparse.bitmaps.get_mut(&block) else {
            return Ok(());
        };
        for sector in first..first + count {
            let (byte, mask) = ((sector / 8) as usize, 0x80u8 >> (sector % 8));
            if let Some(b) = cached.bits.get_mut(byte)
                && *b & mask == 0
            {
                *b |= mask;
                cached.dirty = true;
            }
        }
        if bitmap_all_set(&cached.bits, sectors) {
            sparse.set_full(block);
        }
        Ok(())
    }

    /// Append a block at the end of the file; returns the offset of its data.
    fn allocate_block(&mut self, block: u32) -> Result<u64> {
        let Some(sparse) = &mut self.sparse else {
            return Err(Error::NotDifferencing);
        };
        let start = self.footer_offset.next_multiple_of(SECTOR);
        let sector = start / SECTOR;
        if sector >= u64::from(UNUSED) {
            return Err(Error::FileFull);
        }
        let bitmap_size = u64::from(sparse.bitmap_size);
        let new_footer = start + bitmap_size + sparse.block_size();
        // Footer first: the file never ends without one. The bitmap then
        // overwrites the old footer; the data area is fresh (zero) space.
        self.dev.write_at(new_footer, &self.footer.to_bytes())?;
        let dynamic = self.footer.disk_type == DiskType::Dynamic;
        let fill = if dynamic { 0xff } else { 0 };
        self.dev
            .write_at(start, &vec![fill; bitmap_size as usize])?;
        if let Some(entry) = sparse.bat.get_mut(block as usize) {
            *entry = sector as u32;
        }
        sparse.dirty_table.insert(block / 128);
        if dynamic {
            sparse.set_full(block);
        } else {
            let bits = vec![0u8; bitmap_size as usize];
            sparse
                .bitmaps
                .insert(block, CachedBitmap { bits, dirty: false });
        }
        self.footer_offset = new_footer;
        self.footer_dirty = false;
        Ok(start + bitmap_size)
    }

    /// Write cached bitmaps, table sectors and a recovered footer (no flush).
    /// Returns whether anything was written.
    fn write_metadata(&mut self) -> Result<bool> {
        let mut wrote = false;
        if let Some(sparse) = &mut self.sparse {
            let mut any_dirty = sparse.bitmaps.values().any(|b| b.dirty);
            any_dirty |= !sparse.dirty_table.is_empty();
            if any_dirty {
                // Data first: metadata must never describe bytes not yet durable.
                self.dev.flush()?;
            }
            for (&block, cached) in sparse.bitmaps.iter_mut().filter(|(_, b)| b.dirty) {
                if let Some(&entry) = sparse.bat.get(block as usize) {
                    self.dev.write_at(u64::from(entry) * SECTOR, &cached.bits)?;
                }
                cached.dirty = false;
                wrote = true;
            }
            for table_sector in core::mem::take(&mut sparse.dirty_table) {
                let first = table_sector as usize * 128;
                let last = (first + 128).min(sparse.bat.len());
                let bytes: Vec<u8> = sparse.bat[first..last]
                    .iter()
                    .flat_map(|e| e.to_be_bytes())
                    .collect();
                let at = sparse.header.table_offset + first as u64 * 4;
                self.dev.write_at(at, &bytes)?;
                wrote = true;
            }
        }
        if self.footer_dirty {
            self.dev
                .write_at(self.footer_offset, &self.footer.to_bytes())?;
            self.footer_dirty = false;
            self.recovered_footer = false;
            wrote = true;
        }
        Ok(wrote)
    }

    /// Make every write so far durable, with the table and bitmaps describing it.
    pub fn flush(&mut self) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        self.write_metadata()?;
        Ok(self.dev.flush()?)
    }
}

fn bitmap_all_set(bits: &[u8], sectors: usize) -> bool {
    let whole = sectors / 8;
    let rest = sectors % 8;
    bits.get(..whole)
        .is_some_and(|b| b.iter().all(|&x| x == 0xff))
        && (rest == 0
            || bits
                .get(whole)
                .is_some_and(|&b| b & (0xff << (8 - rest)) == (0xff << (8 - rest))))
}
