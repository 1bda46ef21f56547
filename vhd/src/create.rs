//! Creating fixed, dynamic and differencing VHDs on an empty device.
//!
//! Invariants: the written file is reopened through the normal validating
//! path before it is returned, so a created disk is exactly as trustworthy
//! as an opened one. Layout of sparse files: footer copy at 0, dynamic
//! header at 512, table at 1536 (padded to a sector), parent locator data
//! (differencing), then blocks as they are written, then the footer.

use crate::device::BlockDevice;
use crate::disk::Vhd;
use crate::error::{Error, Result};
use crate::footer::{DiskType, Footer, MAX_DISK_SIZE};
use crate::header::{DynamicHeader, LOCATOR_COUNT, ParentLocator};
use crate::locator::ParentLocation;
use alloc::vec;
use alloc::vec::Vec;

const TABLE_OFFSET: u64 = 1536;

/// What every new disk needs besides its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewDisk {
    /// Virtual size in bytes: a non-zero multiple of 512, at most 2040 GiB.
    /// It is kept exactly (it need not be a CHS product): the footer records
    /// it as current size, the geometry by the specification's algorithm
    /// (rounded down) and a creator every reader sizes by current size.
    pub size: u64,
    /// Bytes per block for dynamic and differencing disks (power of two, 512 B..256 MiB).
    pub block_size: u32,
    /// Unique id for the new disk (random, from the caller).
    pub unique_id: [u8; 16],
    /// Creation time, seconds since 2000-01-01 00:00:00 UTC (from the caller).
    pub timestamp: u32,
}

fn check_new<D: BlockDevice>(dev: &mut D, disk: &NewDisk) -> Result<()> {
    if disk.size == 0 || !disk.size.is_multiple_of(512) || disk.size > MAX_DISK_SIZE {
        return Err(Error::BadSize(disk.size));
    }
    if !disk.block_size.is_power_of_two() || !(512..=1 << 28).contains(&disk.block_size) {
        return Err(Error::BadBlockSize(disk.block_size));
    }
    if dev.size()? != 0 {
        return Err(Error::InvalidArgument("the target is not empty"));
    }
    Ok(())
}

impl<D: BlockDevice> Vhd<D> {
    /// Create a fixed disk: the data area (zeros) followed by the footer.
    pub fn create_fixed(mut dev: D, disk: &NewDisk) -> Result<Self> {
        check_new(&mut dev, disk)?;
        let footer = Footer::new(DiskType::Fixed, disk.size, disk.unique_id, disk.timestamp);
        dev.write_at(disk.size, &footer.to_bytes())?;
        dev.flush()?;
        Self::open(dev)
    }

    /// Create an empty dynamic disk.
    pub fn create_dynamic(dev: D, disk: &NewDisk) -> Result<Self> {
        let footer = Footer::new(DiskType::Dynamic, disk.size, disk.unique_id, disk.timestamp);
        create_sparse(dev, disk, footer, [0; 16], 0, "", &[])
    }

    /// Create a differencing disk over `parent`, recording its unique id,
    /// timestamp, file name and the given locations. The returned disk has no
    /// parent attached: attach one with [`Vhd::attach_parent`].
    pub fn create_differencing(
        dev: D,
        parent: &Vhd<D>,
        parent_name: &str,
        locations: &[ParentLocation],
        disk: &NewDisk,
    ) -> Result<Self> {
        if disk.size != parent.size() {
            return Err(Error::InvalidArgument(
                "a differencing disk has its parent's size",
            ));
        }
        let mut footer = Footer::new(
            DiskType::Differencing,
            disk.size,
            disk.unique_id,
            disk.timestamp,
        );
        // The parent's geometry, and its size as capvisor and qemu see it:
        // the same as its current size unless a CHS-sized parent (`vpc `,
        // `qemu`) records a larger one; this creator is sized by current size.
        footer.geometry = parent.footer().geometry;
        footer.current_size = parent.size();
        footer.original_size = parent.size();
        let parent_footer = parent.footer();
        create_sparse(
            dev,
            disk,
            footer,
            parent_footer.unique_id,
            parent_footer.timestamp,
            parent_name,
            locations,
        )
    }
}

fn create_sparse<D: BlockDevice>(
    mut dev: D,
    disk: &NewDisk,
    footer: Footer,
    parent_unique_id: [u8; 16],
    parent_timestamp: u32,
    parent_name: &str,
    locations: &[ParentLocation],
) -> Result<Vhd<D>> {
    check_new(&mut dev, disk)?;
    if locations.len() > LOCATOR_COUNT {
        return Err(Error::InvalidArgument("at most 8 parent locators"));
    }
    let entries = disk.size.div_ceil(u64::from(disk.block_size));
    let table_bytes = (entries * 4).next_multiple_of(512);
    let mut next = TABLE_OFFSET + table_bytes;
    let mut locators = [ParentLocator::default(); LOCATOR_COUNT];
    let mut locator_data: Vec<(u64, Vec<u8>)> = Vec::new();
    for (slot, location) in locators.iter_mut().zip(locations) {
        let data = location.encode()?;
        let space = (data.len() as u64).next_multiple_of(512).max(512);
        *slot = ParentLocator {
            platform_code: location.platform_code(),
            // Windows records the reserved space in bytes (the specification says sectors).
            data_space: space as u32,
            data_length: data.len() as u32,
            data_offset: next,
        };
        locator_data.push((next, data));
        next += space;
    }
    let header = DynamicHeader {
        table_offset: TABLE_OFFSET,
        max_table_entries: entries as u32,
        block_size: disk.block_size,
        parent_unique_id,
        parent_timestamp,
        parent_name: parent_name.into(),
        locators,
    };
    let footer_bytes = footer.to_bytes();
    dev.write_at(next, &footer_bytes)?;
    dev.write_at(0, &footer_bytes)?;
    dev.write_at(512, &header.to_bytes())?;
    let chunk = vec![0xffu8; (table_bytes as usize).min(1 << 20)];
    let mut written = 0u64;
    while written < table_bytes {
        let n = (table_bytes - written).min(chunk.len() as u64) as usize;
        dev.write_at(TABLE_OFFSET + written, &chunk[..n])?;
        written += n as u64;
    }
    for (offset, data) in &locator_data {
        dev.write_at(*offset, data)?;
    }
    dev.flush()?;
    Vhd::open(dev)
}

const _: () = assert!(MAX_DISK_SIZE / 512 < u32::MAX as u64);
