//! A mounted exFAT volume: the validated boot sector, the up-case table and
//! the allocation bitmap held in memory, and cluster-level I/O (FAT chains,
//! allocation, freeing).
//!
//! Invariants: every cluster number used for I/O has been checked to lie in
//! the heap; a cluster chain is followed for at most the volume's cluster
//! count, so loops are detected; the in-memory bitmap is written through to
//! disk on every change; the volume's dirty flag is set on disk before the
//! first change and cleared by [`Volume::flush`].

use crate::boot::{BOOT_REGION_SECTORS, BootSector, FLAG_DIRTY, verify_region};
use crate::device::BlockDevice;
use crate::entry::{ENTRY_SIZE, TYPE_BITMAP, TYPE_END, TYPE_LABEL, TYPE_UPCASE, Timestamp};
use crate::error::{Error, Result};
use crate::upcase::{MAX_TABLE_BYTES, Upcase, table_checksum};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

/// FAT value: end of chain.
pub(crate) const END_OF_CHAIN: u32 = 0xFFFF_FFFF;
/// FAT value: bad cluster.
const BAD_CLUSTER: u32 = 0xFFFF_FFF7;

/// A run of contiguous clusters: (first cluster, count).
pub(crate) type Run = (u32, u32);

/// A mounted exFAT volume on a device.
pub struct Volume<D: BlockDevice> {
    pub(crate) dev: D,
    pub(crate) boot: BootSector,
    pub(crate) upcase: Upcase,
    /// One bit per heap cluster, as on disk.
    pub(crate) bitmap: Vec<u8>,
    /// Clusters holding the allocation bitmap, in order.
    pub(crate) bitmap_runs: Vec<Run>,
    pub(crate) upcase_runs: Vec<Run>,
    pub(crate) free: u32,
    /// The dirty flag is set on disk.
    pub(crate) marked_dirty: bool,
    /// Time stamped on created and modified files.
    pub(crate) now: Timestamp,
    pub(crate) label: String,
    pub(crate) hint: u32,
}

impl<D: BlockDevice> Volume<D> {
    /// Mount the volume at the start of `dev`, validating the boot region,
    /// the root directory's system entries, the bitmap and the up-case table.
    pub fn mount(mut dev: D) -> Result<Self> {
        let mut first = [0u8; 512];
        dev.read_at(0, &mut first).map_err(|_| Error::NotExfat)?;
        let boot = BootSector::parse(&first)?;
        let ss = boot.sector_size() as usize;
        let mut region = vec![0u8; ss * BOOT_REGION_SECTORS as usize];
        dev.read_at(0, &mut region)?;
        verify_region(&region, ss)?;
        let device_size = dev.size()?;
        if boot
            .volume_length
            .checked_mul(boot.sector_size())
            .is_none_or(|n| n > device_size)
        {
            return Err(Error::Corrupt("volume is larger than its device"));
        }
        let mut vol = Volume {
            dev,
            bitmap: Vec::new(),
            bitmap_runs: Vec::new(),
            upcase_runs: Vec::new(),
            upcase: Upcase::default_table(),
            free: 0,
            marked_dirty: false,
            now: Timestamp::EPOCH,
            label: String::new(),
            hint: 2,
            boot,
        };
        vol.load_system_entries()?;
        Ok(vol)
    }

    fn load_system_entries(&mut self) -> Result<()> {
        let root_runs = self.chain(self.boot.root_cluster, None)?;
        let root = self.read_runs(&root_runs, u64::MAX)?;
        let (mut bitmap, mut upcase) = (None, None);
        for e in root.chunks_exact(ENTRY_SIZE) {
            let le32 = |at: usize| u32::from_le_bytes([e[at], e[at + 1], e[at + 2], e[at + 3]]);
            let le64 = |at: usize| u64::from(le32(at)) | u64::from(le32(at + 4)) << 32;
            match e[0] {
                TYPE_END => break,
                TYPE_BITMAP
                    if bitmap.is_none()
                        && u64::from(e[1] & 1) == u64::from(self.boot.flags & 1) =>
                {
                    bitmap = Some((le32(20), le64(24)));
                }
                TYPE_UPCASE if upcase.is_none() => upcase = Some((le32(20), le64(24), le32(4))),
                TYPE_LABEL => {
                    let n = usize::from(e[1]).min(11);
                    let units = e[2..2 + 2 * n]
                        .chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]));
                    self.label = char::decode_utf16(units)
                        .map(|c| c.unwrap_or('?'))
                        .collect();
                }
                _ => {}
            }
        }
        let (bitmap_cluster, bitmap_len) =
            bitmap.ok_or(Error::Corrupt("no allocation bitmap entry"))?;
        let needed = u64::from(self.boot.cluster_count).div_ceil(8);
        if bitmap_len < needed || bitmap_len > needed + self.boot.cluster_size() {
            return Err(Error::Corrupt("allocation bitmap has the wrong size"));
        }
        self.bitmap_runs = self.chain(bitmap_cluster, Some(bitmap_len))?;
        self.bitmap = self.read_runs(&self.bitmap_runs.clone(), needed)?;
        let (up_cluster, up_len, up_sum) =
            upcase.ok_or(Error::Corrupt("no up-case table entry"))?;
        if up_len == 0 || up_len > MAX_TABLE_BYTES {
            return Err(Error::Corrupt("up-case table has the wrong size"));
        }
        self.upcase_runs = self.chain(up_cluster, Some(up_len))?;
        let table = self.read_runs(&self.upcase_runs.clone(), up_len)?;
        if table_checksum(&table) != up_sum {
            return Err(Error::Corrupt("up-case table checksum mismatch"));
        }
        self.upcase = Upcase::decode(&table)?;
        let used: u32 = (0..self.boot.cluster_count)
            .filter(|&i| self.bit(i + 2))
            .count() as u32;
        self.free = self.boot.cluster_count - used;
        self.marked_dirty = self.boot.flags & FLAG_DIRTY != 0;
        Ok(())
    }

    /// Set the time stamped on files created or modified from now on.
    pub fn set_time(&mut self, now: Timestamp) {
        self.now = now;
    }

    /// The decoded boot sector.
    pub fn boot_sector(&self) -> &BootSector {
        &self.boot
    }

    /// The volume label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u64 {
        self.boot.cluster_size()
    }

    /// Free bytes.
    pub fn free_bytes(&self) -> u64 {
        u64::from(self.free) * self.cluster_size()
    }

    /// Bytes in the cluster heap.
    pub fn total_bytes(&self) -> u64 {
        u64::from(self.boot.cluster_count) * self.cluster_size()
    }

    /// Whether the volume was not cleanly unmounted (or is being modified).
    pub fn is_dirty(&self) -> bool {
        self.marked_dirty
    }

    /// The device underneath (for its counters; writing to it behind the
    /// volume's back corrupts the volume).
    pub fn device(&mut self) -> &mut D {
        &mut self.dev
    }

    /// Flush and hand back the device.
    pub fn into_device(mut self) -> Result<D> {
        self.flush()?;
        Ok(self.dev)
    }

    /// Clear the dirty flag, record the percentage in use and make all writes durable.
    pub fn flush(&mut self) -> Result<()> {
        if self.marked_dirty {
            self.dev.flush()?;
            let cc = u64::from(self.boot.cluster_count);
            let percent = ((cc - u64::from(self.free)) * 100 / cc) as u8;
            let flags = self.boot.flags & !FLAG_DIRTY;
            self.dev.write_at(106, &flags.to_le_bytes())?;
            self.dev.write_at(112, &[percent])?;
            self.boot.flags = flags;
            self.boot.percent_in_use = percent;
            self.marked_dirty = false;
        }
        Ok(self.dev.flush()?)
    }

    /// Set the dirty flag on disk before the first change.
    pub(crate) fn begin_change(&mut self) -> Result<()> {
        if !self.marked_dirty {
            let flags = self.boot.flags | FLAG_DIRTY;
            self.dev.write_at(106, &flags.to_le_bytes())?;
            self.dev.flush()?;
            self.boot.flags = flags;
            self.marked_dirty = true;
        }
        Ok(())
    }

    pub(crate) fn bit(&self, cluster: u32) -> bool {
        let i = (cluster - 2) as usize;
        self.bitmap
            .get(i / 8)
            .is_some_and(|b| b >> (i % 8) & 1 == 1)
    }

    /// Read the FAT entry of `cluster`.
    pub(crate) fn fat_get(&mut self, cluster: u32) -> Result<u32> {
        let mut b = [0u8; 4];
        self.dev
            .read_at(self.boot.fat_byte_offset() + u64::from(cluster) * 4, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Write the FAT entry of `cluster`.
    pub(crate) fn fat_set(&mut self, cluster: u32, value: u32) -> Result<()> {
        let at = self.boot.fat_byte_offset() + u64::from(cluster) * 4;
        Ok(self.dev.write_at(at, &value.to_le_bytes())?)
    }

    /// The runs of a FAT chain: `len` bytes' worth of clusters, or up to the
    /// end-of-chain mark when `len` is `None`.
    pub(crate) fn chain(&mut self, first: u32, len: Option<u64>) -> Result<Vec<Run>> {
        let want = match len {
            Some(len) => {
                let n = len.div_ceil(self.cluster_size());
                if n > u64::from(self.boot.cluster_count) {
                    return Err(Error::Corrupt("file larger than the volume"));
                }
                Some(n as u32)
            }
            None => None,
        };
        let mut runs: Vec<Run> = Vec::new();
        if want == Some(0) {
            return Ok(runs);
        }
        let mut cluster = first;
        let mut count = 0u32;
        loop {
            if !self.boot.in_heap(cluster) {
                return Err(Error::Corrupt("cluster chain leaves the cluster heap"));
            }
            match runs.last_mut() {
                Some((start, n)) if *start + *n == cluster => *n += 1,
                _ => runs.push((cluster, 1)),
            }
            count += 1;
            if Some(count) == want {
                return Ok(runs);
            }
            if count > self.boot.cluster_count {
                return Err(Error::Corrupt("cluster chain loops"));
            }
            let next = self.fat_get(cluster)?;
            match next {
                END_OF_CHAIN if want.is_none() => return Ok(runs),
                END_OF_CHAIN => return Err(Error::Corrupt("cluster chain shorter than its file")),
                BAD_CLUSTER => return Err(Error::Corrupt("cluster chain reaches a bad cluster")),
                _ => cluster = next,
            }
        }
    }

    /// The run of a contiguous (NoFatChain) allocation, validated.
    pub(crate) fn contiguous(&self, first: u32, len: u64) -> Result<Vec<Run>> {
        let n = len.div_ceil(self.cluster_size());
        if n == 0 {
            return Ok(Vec::new());
        }
        let last = u64::from(first) + n - 1;
        if !self.boot.in_heap(first) || last >= u64::from(self.boot.cluster_count) + 2 {
            return Err(Error::Corrupt("contiguous file runs past the cluster heap"));
        }
        Ok(vec![(first, n as u32)])
    }

    /// Read up to `limit` bytes from the start of some runs.
    pub(crate) fn read_runs(&mut self, runs: &[Run], limit: u64) -> Result<Vec<u8>> {
        let cs = self.cluster_size();
        let total: u64 = runs
            .iter()
            .map(|r| u64::from(r.1) * cs)
            .sum::<u64>()
            .min(limit);
        if total > 256 << 20 {
            return Err(Error::Corrupt(
                "directory or system file larger than 256 MiB",
            ));
        }
        let mut out = vec![0u8; total as usize];
        let mut at = 0usize;
        for &(start, n) in runs {
            if at >= out.len() {
                break;
            }
            let len = ((u64::from(n) * cs) as usize).min(out.len() - at);
            self.dev
                .read_at(self.boot.cluster_offset(start), &mut out[at..at + len])?;
            at += len;
        }
        Ok(out)
    }

    /// Device byte offset of byte `pos` of a file laid out in `runs`.
    pub(crate) fn locate(&self, runs: &[Run], pos: u64) -> Option<(u64, u64)> {
        let cs = self.cluster_size();
        let mut skip = pos;
        for &(start, n) in runs {
            let len = u64::from(n) * cs;
            if skip < len {
                return Some((self.boot.cluster_offset(start) + skip, len - skip));
            }
            skip -= len;
        }
        None
    }

    /// Mark clusters used or free in memory and on disk.
    pub(crate) fn mark(&mut self, start: u32, n: u32, used: bool) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        for c in start..start + n {
            let i = (c - 2) as usize;
            if let Some(b) = self.bitmap.get_mut(i / 8) {
                let was = *b >> (i % 8) & 1 == 1;
                if used {
                    *b |= 1 << (i % 8);
                } else {
                    *b &= !(1 << (i % 8));
                }
                match (was, used) {
                    (false, true) => self.free -= 1,
                    (true, false) => self.free += 1,
                    _ => {}
                }
            }
        }
        let (first, last) = (((start - 2) / 8) as u64, ((start + n - 3) / 8) as u64);
        let bytes = self.bitmap[first as usize..=last as usize].to_vec();
        let runs = self.bitmap_runs.clone();
        let mut written = 0u64;
        while written < bytes.len() as u64 {
            let Some((offset, room)) = self.locate(&runs, first + written) else {
                return Err(Error::Corrupt("allocation bitmap shorter than the heap"));
            };
            let n = room.min(bytes.len() as u64 - written) as usize;
            self.dev
                .write_at(offset, &bytes[written as usize..written as usize + n])?;
            written += n as u64;
        }
        Ok(())
    }

    fn is_free_run(&self, start: u32, n: u32) -> bool {
        let end = u64::from(start) + u64::from(n);
        end <= u64::from(self.boot.cluster_count) + 2 && (start..start + n).all(|c| !self.bit(c))
    }

    /// Find `n` contiguous free clusters, searching from `from` then wrapping.
    pub(crate) fn find_run(&self, n: u32, from: u32) -> Option<u32> {
        let end = self.boot.cluster_count + 2;
        let from = if self.boot.in_heap(from) { from } else { 2 };
        for range in [(from, end), (2, from)] {
            let mut c = range.0;
            let mut run = 0u32;
            while c < range.1 {
                let i = (c - 2) as usize;
                if run == 0 && i.is_multiple_of(8) && self.bitmap.get(i / 8) == Some(&0xFF) {
                    c += 8;
                    continue;
                }
                if self.bit(c) {
                    run = 0;
                } else {
                    run += 1;
                    if run == n {
                        return Some(c + 1 - n);
                    }
                }
                c += 1;
            }
        }
        None
    }

    /// Allocate `n` clusters, contiguous if at all possible, preferring to
    /// start at `near`. Returns the runs (marked used, FAT not written).
    pub(crate) fn allocate(&mut self, n: u32, near: u32) -> Result<Vec<Run>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        if n > self.free {
            return Err(Error::NoSpace);
        }
        if self.boot.in_heap(near) && self.is_free_run(near, n) {
            self.mark(near, n, true)?;
            return Ok(vec![(near, n)]);
        }
        if let Some(start) = self.find_run(n, self.hint) {
            self.mark(start, n, true)?;
            self.hint = start + n;
            return Ok(vec![(start, n)]);
        }
        // Fragmented: take the first free clusters, as runs.
        let mut runs: Vec<Run> = Vec::new();
        let mut left = n;
        let mut c = 2;
        while left > 0 && c < self.boot.cluster_count + 2 {
            if !self.bit(c) {
                match runs.last_mut() {
                    Some((s, k)) if *s + *k == c => *k += 1,
                    _ => runs.push((c, 1)),
                }
                left -= 1;
            }
            c += 1;
        }
        for &(s, k) in &runs {
            self.mark(s, k, true)?;
        }
        Ok(runs)
    }

    /// Write FAT entries linking `runs` in order, ending the chain.
    pub(crate) fn write_chain(&mut self, runs: &[Run]) -> Result<()> {
        let clusters: Vec<u32> = runs.iter().flat_map(|&(s, n)| s..s + n).collect();
        for (i, &c) in clusters.iter().enumerate() {
            let next = clusters.get(i + 1).copied().unwrap_or(END_OF_CHAIN);
            self.fat_set(c, next)?;
        }
        Ok(())
    }

    /// Write zeros over whole clusters.
    pub(crate) fn zero_runs(&mut self, runs: &[Run]) -> Result<()> {
        let cs = self.cluster_size();
        let zeros = vec![0u8; (cs as usize).min(1 << 20)];
        for &(start, n) in runs {
            let (mut at, end) = (
                self.boot.cluster_offset(start),
                self.boot.cluster_offset(start) + u64::from(n) * cs,
            );
            while at < end {
                let k = (end - at).min(zeros.len() as u64) as usize;
                self.dev.write_at(at, &zeros[..k])?;
                at += k as u64;
            }
        }
        Ok(())
    }
}

/// Total clusters in some runs.
pub(crate) fn run_clusters(runs: &[Run]) -> u64 {
    runs.iter().map(|r| u64::from(r.1)).sum()
}
