//! Formatting: lay out a fresh exFAT volume (boot regions, FAT, allocation
//! bitmap, up-case table, root directory) and mount it.
//!
//! Invariants: the layout satisfies every rule `BootSector::parse` checks,
//! the system files are contiguous with FAT chains, and the result is
//! mounted through the validating path before it is returned.

use crate::boot::{BOOT_REGION_SECTORS, BootSector, MAX_CLUSTERS, boot_region};
use crate::device::BlockDevice;
use crate::entry::{ENTRY_SIZE, TYPE_BITMAP, TYPE_LABEL, TYPE_UPCASE};
use crate::error::{Error, Result};
use crate::upcase::{Upcase, table_checksum};
use crate::volume::{END_OF_CHAIN, Volume};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

const SECTOR_SHIFT: u8 = 9;
/// First sector of the FAT on volumes of 64 MiB and more (1 MiB alignment, as
/// mkfs.exfat does); smaller volumes use the minimum, 24.
const FAT_OFFSET: u32 = 2048;
const SMALL_FAT_OFFSET: u32 = 24;
/// Smallest volume formatted.
pub const MIN_VOLUME: u64 = 128 << 10;

/// How to format a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatOptions {
    /// Volume size in bytes (rounded down to 512); 0 means the whole device.
    pub size: u64,
    /// Bytes per cluster (power of two, 512 B..32 MiB); `None` picks by size.
    pub cluster_size: Option<u32>,
    /// Volume label, at most 11 UTF-16 units.
    pub label: String,
    /// Volume serial number.
    pub serial: u32,
}

/// Default cluster size, as Windows and mkfs.exfat choose it.
fn default_cluster(size: u64) -> u32 {
    match size {
        s if s <= 256 << 20 => 4096,
        s if s <= 32 << 30 => 32 << 10,
        _ => 128 << 10,
    }
}

impl<D: BlockDevice> Volume<D> {
    /// Format `dev` and mount the new volume.
    pub fn format(mut dev: D, options: &FormatOptions) -> Result<Self> {
        let size = if options.size == 0 {
            dev.size()?
        } else {
            options.size
        } / 512
            * 512;
        if size < MIN_VOLUME {
            return Err(Error::InvalidArgument("volume smaller than 128 KiB"));
        }
        let fat_offset = if size < 64 << 20 {
            SMALL_FAT_OFFSET
        } else {
            FAT_OFFSET
        };
        let cluster = options
            .cluster_size
            .unwrap_or_else(|| default_cluster(size));
        if !cluster.is_power_of_two() || !(512..=32 << 20).contains(&cluster) {
            return Err(Error::InvalidArgument(
                "cluster size not a power of two in 512 B..32 MiB",
            ));
        }
        let label: Vec<u16> = options.label.encode_utf16().collect();
        if label.len() > 11 {
            return Err(Error::InvalidArgument("label longer than 11 characters"));
        }
        let cluster_shift = (cluster.trailing_zeros() - u32::from(SECTOR_SHIFT)) as u8;
        let spc = 1u64 << cluster_shift;
        let total = size / 512;
        let mut count = total.saturating_sub(u64::from(fat_offset)) / spc;
        let (fat_length, heap) = loop {
            let fat_length = ((count + 2) * 4).div_ceil(512);
            let heap = (u64::from(fat_offset) + fat_length).next_multiple_of(spc);
            let fits = total.saturating_sub(heap) / spc;
            if fits >= count {
                break (fat_length, heap);
            }
            count = fits;
        };
        let count = count.min(u64::from(MAX_CLUSTERS)) as u32;
        let bitmap_len = u64::from(count).div_ceil(8);
        let table = Upcase::generate();
        let bitmap_clusters = bitmap_len.div_ceil(u64::from(cluster)) as u32;
        let upcase_clusters = (table.len() as u64).div_ceil(u64::from(cluster)) as u32;
        if u64::from(bitmap_clusters + upcase_clusters + 1) > u64::from(count) {
            return Err(Error::InvalidArgument(
                "volume too small for its system files",
            ));
        }
        let bitmap_first = 2;
        let upcase_first = bitmap_first + bitmap_clusters;
        let root = upcase_first + upcase_clusters;
        let boot = BootSector {
            partition_offset: 0,
            volume_length: total,
            fat_offset,
            fat_length: fat_length as u32,
            cluster_heap_offset: heap as u32,
            cluster_count: count,
            root_cluster: root,
            serial: options.serial,
            flags: 0,
            sector_shift: SECTOR_SHIFT,
            cluster_shift,
            fat_count: 1,
            percent_in_use: 0,
        };
        // Extend the device to the volume's size, then write the regions.
        dev.write_at(size - 512, &[0u8; 512])?;
        let region = boot_region(&boot);
        dev.write_at(0, &region)?;
        dev.write_at(512 * BOOT_REGION_SECTORS, &region)?;
        let mut fat = vec![0u8; (fat_length * 512) as usize];
        let mut set = |c: u32, v: u32| {
            let at = c as usize * 4;
            fat[at..at + 4].copy_from_slice(&v.to_le_bytes());
        };
        set(0, 0xFFFF_FFF8);
        set(1, END_OF_CHAIN);
        for (first, n) in [
            (bitmap_first, bitmap_clusters),
            (upcase_first, upcase_clusters),
            (root, 1),
        ] {
            for c in first..first + n {
                set(
                    c,
                    if c + 1 == first + n {
                        END_OF_CHAIN
                    } else {
                        c + 1
                    },
                );
            }
        }
        dev.write_at(u64::from(fat_offset) * 512, &fat)?;
        let used = bitmap_clusters + upcase_clusters + 1;
        let mut bitmap = vec![0u8; (u64::from(bitmap_clusters) * u64::from(cluster)) as usize];
        for i in 0..used as usize {
            bitmap[i / 8] |= 1 << (i % 8);
        }
        dev.write_at(boot.cluster_offset(bitmap_first), &bitmap)?;
        let mut up = table.clone();
        up.resize(
            (u64::from(upcase_clusters) * u64::from(cluster)) as usize,
            0,
        );
        dev.write_at(boot.cluster_offset(upcase_first), &up)?;
        let mut dir = vec![0u8; cluster as usize];
        let (e, rest) = dir.split_at_mut(ENTRY_SIZE);
        e[0] = TYPE_LABEL;
        e[1] = label.len() as u8;
        for (j, u) in label.iter().enumerate() {
            e[2 + 2 * j..4 + 2 * j].copy_from_slice(&u.to_le_bytes());
        }
        let (e, rest) = rest.split_at_mut(ENTRY_SIZE);
        e[0] = TYPE_BITMAP;
        e[20..24].copy_from_slice(&bitmap_first.to_le_bytes());
        e[24..32].copy_from_slice(&bitmap_len.to_le_bytes());
        let e = &mut rest[..ENTRY_SIZE];
        e[0] = TYPE_UPCASE;
        e[4..8].copy_from_slice(&table_checksum(&table).to_le_bytes());
        e[20..24].copy_from_slice(&upcase_first.to_le_bytes());
        e[24..32].copy_from_slice(&(table.len() as u64).to_le_bytes());
        dev.write_at(boot.cluster_offset(root), &dir)?;
        dev.flush()?;
        Volume::mount(dev)
    }
}
