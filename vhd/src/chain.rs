//! Differencing chains: opening a disk together with its ancestors, and
//! merging a differencing disk into its parent.
//!
//! Invariants: a chain holds each disk (by unique id) at most once and is at
//! most [`MAX_CHAIN_DEPTH`] parents deep; every link's unique id and size
//! are checked before it is attached.

use crate::device::BlockDevice;
use crate::disk::Vhd;
use crate::error::{Error, Result};
use crate::footer::DiskType;
use crate::locator::ParentLocation;
use alloc::vec;
use alloc::vec::Vec;

/// Deepest parent chain that is followed.
pub const MAX_CHAIN_DEPTH: usize = 16;

/// Finds and opens parents named by differencing disks (the library cannot
/// open files itself).
pub trait ParentResolver<D> {
    /// Open the parent of the disk `depth` links below the top (0 = the disk
    /// the chain was opened with), given its recorded locations (relative
    /// first) and the parent's file name from the header.
    fn open_parent(
        &mut self,
        depth: usize,
        locations: &[ParentLocation],
        parent_name: &str,
    ) -> Result<D>;
}

/// How the disks of a chain are opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChainAccess {
    /// Open the top disk for writing.
    pub writable: bool,
    /// Open the immediate parent for writing (needed to merge).
    pub writable_parent: bool,
}

impl<D: BlockDevice> Vhd<D> {
    /// Open a disk and, if it is differencing, every ancestor through `resolver`.
    pub fn open_chain<R: ParentResolver<D>>(
        dev: D,
        access: ChainAccess,
        resolver: &mut R,
    ) -> Result<Self> {
        let top = if access.writable {
            Vhd::open(dev)?
        } else {
            Vhd::open_read_only(dev)?
        };
        let mut seen = vec![top.footer.unique_id];
        let mut disks = vec![top];
        loop {
            let depth = disks.len() - 1;
            let Some(child) = disks.last_mut() else { break };
            if child.disk_type() != DiskType::Differencing {
                break;
            }
            if depth >= MAX_CHAIN_DEPTH {
                return Err(Error::ChainTooDeep);
            }
            let locations = child.parent_locations()?;
            let name = child
                .header()
                .map(|h| h.parent_name.clone())
                .unwrap_or_default();
            let wanted = child
                .header()
                .map(|h| h.parent_unique_id)
                .unwrap_or_default();
            let dev = resolver.open_parent(depth, &locations, &name)?;
            let parent = if depth == 0 && access.writable_parent {
                Vhd::open(dev)?
            } else {
                Vhd::open_read_only(dev)?
            };
            if seen.contains(&parent.footer.unique_id) {
                return Err(Error::ParentLoop);
            }
            if parent.footer.unique_id != wanted {
                return Err(Error::ParentMismatch(
                    "unique id differs from the one recorded",
                ));
            }
            seen.push(parent.footer.unique_id);
            disks.push(parent);
        }
        while disks.len() > 1 {
            let Some(parent) = disks.pop() else { break };
            if let Some(child) = disks.last_mut() {
                child.attach_parent(parent)?;
            }
        }
        disks.pop().ok_or(Error::NoParent)
    }

    /// Copy every sector this differencing disk holds into its parent, then
    /// flush the parent. `progress(done, total)` is called per block. Returns
    /// the number of bytes copied. The child is left unchanged (and still
    /// reads the same), so it can be deleted or kept.
    pub fn merge_into_parent(&mut self, progress: &mut dyn FnMut(u64, u64)) -> Result<u64> {
        if self.disk_type() != DiskType::Differencing {
            return Err(Error::NotDifferencing);
        }
        match self.parent.as_deref() {
            None => return Err(Error::NoParent),
            Some(p) if !p.is_writable() => return Err(Error::ReadOnly),
            Some(_) => {}
        }
        let (blocks, block_size) = match &self.sparse {
            Some(s) => (s.bat.len() as u32, s.block_size()),
            None => return Err(Error::NotDifferencing),
        };
        let mut copied = 0u64;
        let mut buf = vec![0u8; (block_size as usize).min(1 << 20)];
        for block in 0..blocks {
            let block_start = u64::from(block) * block_size;
            let present = self.present_runs(block, (self.size - block_start).min(block_size))?;
            let data = self
                .sparse
                .as_ref()
                .and_then(|s| s.data_offset(block))
                .unwrap_or(0);
            for (start, end) in present {
                let mut pos = start;
                while pos < end {
                    let n = (end - pos).min(buf.len() as u64) as usize;
                    self.dev.read_at(data + pos, &mut buf[..n])?;
                    if let Some(parent) = self.parent.as_deref_mut() {
                        parent.write_at(block_start + pos, &buf[..n])?;
                    }
                    pos += n as u64;
                    copied += n as u64;
                }
            }
            progress(u64::from(block) + 1, u64::from(blocks));
        }
        if let Some(parent) = self.parent.as_deref_mut() {
            parent.flush()?;
        }
        Ok(copied)
    }

    /// Byte ranges within `block` (up to `len`) that this file holds.
    pub(crate) fn present_runs(&mut self, block: u32, len: u64) -> Result<Vec<(u64, u64)>> {
        if self
            .sparse
            .as_ref()
            .and_then(|s| s.data_offset(block))
            .is_none()
        {
            return Ok(Vec::new());
        }
        self.load_bitmap_for(block)?;
        Ok(self.present_ranges(block, len))
    }

    /// Virtual byte ranges this file holds data for (allocated blocks, and
    /// within them sectors marked present). Fixed disks hold everything.
    pub fn allocated_ranges(&mut self) -> Result<Vec<(u64, u64)>> {
        let Some(sparse) = &self.sparse else {
            return Ok(vec![(0, self.size)]);
        };
        let (blocks, block_size) = (sparse.bat.len() as u32, sparse.block_size());
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for block in 0..blocks {
            let start = u64::from(block) * block_size;
            for (s, e) in self.present_runs(block, (self.size - start).min(block_size))? {
                match ranges.last_mut() {
                    Some(last) if last.1 == start + s => last.1 = start + e,
                    _ => ranges.push((start + s, start + e)),
                }
            }
        }
        Ok(ranges)
    }
}
