//! The boot region: main boot sector fields, extended boot sectors, and the
//! boot checksum sector; twelve sectors, repeated as a backup.
//!
//! Invariants of a parsed [`BootSector`]: sector size 512..4096, cluster
//! size at most 32 MiB, one or two FATs, the FATs and cluster heap lie
//! inside the volume in that order, the FATs are large enough for every
//! cluster, and the root directory's first cluster is in the heap.

use crate::error::{Error, Result};
use alloc::vec;
use alloc::vec::Vec;

/// Sectors in one boot region (main or backup).
pub const BOOT_REGION_SECTORS: u64 = 12;
/// VolumeFlags bit: the volume is being modified.
pub const FLAG_DIRTY: u16 = 1 << 1;
/// Highest cluster count the format allows.
pub const MAX_CLUSTERS: u32 = 0xFFFF_FFF5;

/// The decoded main boot sector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSector {
    /// Sector offset of the volume on its disk (informational).
    pub partition_offset: u64,
    /// Volume length in sectors.
    pub volume_length: u64,
    /// First sector of the first FAT.
    pub fat_offset: u32,
    /// Sectors per FAT.
    pub fat_length: u32,
    /// First sector of the cluster heap.
    pub cluster_heap_offset: u32,
    /// Clusters in the heap (numbered from 2).
    pub cluster_count: u32,
    /// First cluster of the root directory.
    pub root_cluster: u32,
    /// Volume serial number.
    pub serial: u32,
    /// Volume flags (active FAT, dirty, media failure).
    pub flags: u16,
    /// log2 of bytes per sector.
    pub sector_shift: u8,
    /// log2 of sectors per cluster.
    pub cluster_shift: u8,
    /// Number of FATs (1, or 2 for TexFAT).
    pub fat_count: u8,
    /// Percentage of clusters in use (0xFF: unknown).
    pub percent_in_use: u8,
}

impl BootSector {
    /// Bytes per sector.
    pub fn sector_size(&self) -> u64 {
        1 << self.sector_shift
    }

    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u64 {
        1 << (self.sector_shift + self.cluster_shift)
    }

    /// Byte offset of the active FAT.
    pub fn fat_byte_offset(&self) -> u64 {
        let active = u64::from(self.flags & 1).min(u64::from(self.fat_count) - 1);
        (u64::from(self.fat_offset) + active * u64::from(self.fat_length)) << self.sector_shift
    }

    /// Byte offset of a cluster (caller checks the cluster is in the heap).
    pub fn cluster_offset(&self, cluster: u32) -> u64 {
        (u64::from(self.cluster_heap_offset) << self.sector_shift)
            + u64::from(cluster - 2) * self.cluster_size()
    }

    /// Whether `cluster` is a heap cluster.
    pub fn in_heap(&self, cluster: u32) -> bool {
        cluster >= 2 && cluster - 2 < self.cluster_count
    }

    /// Decode and validate the first sector of a boot region.
    pub fn parse(b: &[u8]) -> Result<BootSector> {
        if b.len() < 512 || b[3..11] != *b"EXFAT   " {
            return Err(Error::NotExfat);
        }
        if b[510..512] != [0x55, 0xAA] || b[11..64].iter().any(|&x| x != 0) {
            return Err(Error::Corrupt("boot sector signature or must-be-zero area"));
        }
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |at: usize| u64::from(u32_at(at)) | u64::from(u32_at(at + 4)) << 32;
        let boot = BootSector {
            partition_offset: u64_at(64),
            volume_length: u64_at(72),
            fat_offset: u32_at(80),
            fat_length: u32_at(84),
            cluster_heap_offset: u32_at(88),
            cluster_count: u32_at(92),
            root_cluster: u32_at(96),
            serial: u32_at(100),
            flags: u16::from_le_bytes([b[106], b[107]]),
            sector_shift: b[108],
            cluster_shift: b[109],
            fat_count: b[110],
            percent_in_use: b[112],
        };
        boot.validate()?;
        Ok(boot)
    }

    fn validate(&self) -> Result<()> {
        if !(9..=12).contains(&self.sector_shift) || self.cluster_shift > 25 - self.sector_shift {
            return Err(Error::Corrupt("sector or cluster size out of range"));
        }
        if !(1..=2).contains(&self.fat_count) {
            return Err(Error::Corrupt("number of FATs is not 1 or 2"));
        }
        if self.cluster_count == 0 || self.cluster_count > MAX_CLUSTERS {
            return Err(Error::Corrupt("cluster count out of range"));
        }
        let fat_end =
            u64::from(self.fat_offset) + u64::from(self.fat_length) * u64::from(self.fat_count);
        let needed_fat = (u64::from(self.cluster_count) + 2) * 4;
        if self.fat_offset < 24 || (u64::from(self.fat_length) << self.sector_shift) < needed_fat {
            return Err(Error::Corrupt("FAT offset or length too small"));
        }
        let heap_end = u64::from(self.cluster_heap_offset)
            + (u64::from(self.cluster_count) << self.cluster_shift);
        if u64::from(self.cluster_heap_offset) < fat_end || heap_end > self.volume_length {
            return Err(Error::Corrupt("cluster heap outside the volume"));
        }
        if !self.in_heap(self.root_cluster) {
            return Err(Error::Corrupt("root directory cluster outside the heap"));
        }
        Ok(())
    }

    /// Encode as the first sector of a boot region (`sector_size` bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; 1 << self.sector_shift];
        b[0..3].copy_from_slice(&[0xEB, 0x76, 0x90]);
        b[3..11].copy_from_slice(b"EXFAT   ");
        b[64..72].copy_from_slice(&self.partition_offset.to_le_bytes());
        b[72..80].copy_from_slice(&self.volume_length.to_le_bytes());
        b[80..84].copy_from_slice(&self.fat_offset.to_le_bytes());
        b[84..88].copy_from_slice(&self.fat_length.to_le_bytes());
        b[88..92].copy_from_slice(&self.cluster_heap_offset.to_le_bytes());
        b[92..96].copy_from_slice(&self.cluster_count.to_le_bytes());
        b[96..100].copy_from_slice(&self.root_cluster.to_le_bytes());
        b[100..104].copy_from_slice(&self.serial.to_le_bytes());
        b[104..106].copy_from_slice(&0x0100u16.to_le_bytes());
        b[106..108].copy_from_slice(&self.flags.to_le_bytes());
        b[108] = self.sector_shift;
        b[109] = self.cluster_shift;
        b[110] = self.fat_count;
        b[111] = 0x80;
        b[112] = self.percent_in_use;
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }
}

/// The boot checksum over the first eleven sectors of a boot region,
/// skipping VolumeFlags and PercentInUse.
pub fn boot_checksum(region: &[u8], sector_size: usize) -> u32 {
    region[..11 * sector_size]
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 106 | 107 | 112))
        .fold(0u32, |sum, (_, &b)| {
            sum.rotate_right(1).wrapping_add(u32::from(b))
        })
}

/// Build a whole boot region (12 sectors) for `boot`.
pub fn boot_region(boot: &BootSector) -> Vec<u8> {
    let ss = boot.sector_size() as usize;
    let mut region = vec![0u8; ss * BOOT_REGION_SECTORS as usize];
    region[..ss].copy_from_slice(&boot.to_bytes());
    for sector in 1..=8 {
        let end = (sector + 1) * ss;
        region[end - 4..end].copy_from_slice(&[0, 0, 0x55, 0xAA]);
    }
    let sum = boot_checksum(&region, ss).to_le_bytes();
    for chunk in region[11 * ss..].chunks_exact_mut(4) {
        chunk.copy_from_slice(&sum);
    }
    region
}

/// Check a boot region read from disk: its checksum sector matches.
pub fn verify_region(region: &[u8], sector_size: usize) -> Result<()> {
    let sum = boot_checksum(region, sector_size).to_le_bytes();
    if region[11 * sector_size..12 * sector_size]
        .chunks_exact(4)
        .any(|c| c != sum)
    {
        return Err(Error::Corrupt("boot region checksum mismatch"));
    }
    Ok(())
}
