//! Opening a VHD: find and validate the footer, the dynamic header and the
//! block allocation table before anything else touches the file.
//!
//! Invariants established for [`crate::Vhd`]: the virtual size is a multiple
//! of 512 within the format's limit; a fixed disk's data lies before its
//! footer; every allocated block (sector bitmap and data) lies inside the file
//! before the footer, past the footer copy, and overlaps neither another
//! block nor the header or table; the table covers the whole virtual size.

use crate::bytes::{align_up, be_u32};
use crate::device::BlockDevice;
use crate::disk::{Sparse, UNUSED, Vhd};
use crate::error::{Error, Result};
use crate::footer::{DiskType, FOOTER_SIZE, Footer, MAX_DISK_SIZE};
use crate::header::{DynamicHeader, HEADER_SIZE};
use alloc::collections::BTreeMap;
use alloc::collections::BTreeSet;
use alloc::vec;
use alloc::vec::Vec;

/// Where the footer was found.
struct FoundFooter {
    footer: Footer,
    /// Offset of the footer at the end of the file, or where it must be rewritten.
    offset: u64,
    /// The end footer was damaged and the copy at offset 0 was used.
    recovered: bool,
}

fn find_footer<D: BlockDevice>(dev: &mut D, len: u64) -> Result<FoundFooter> {
    if len < FOOTER_SIZE as u64 {
        return Err(Error::TooSmall { len });
    }
    let mut tail = [0u8; FOOTER_SIZE];
    dev.read_at(len - FOOTER_SIZE as u64, &mut tail)?;
    let end_error = match Footer::parse(&tail) {
        Ok(footer) => {
            return Ok(FoundFooter {
                footer,
                offset: len - 512,
                recovered: false,
            });
        }
        Err(e) => e,
    };
    // Virtual PC before 2004 wrote 511-byte footers.
    if len % 512 == 511
        && let Ok(footer) = Footer::parse(&tail[1..])
    {
        return Ok(FoundFooter {
            footer,
            offset: len - 511,
            recovered: false,
        });
    }
    // Dynamic and differencing files keep a copy at offset 0.
    let mut head = [0u8; FOOTER_SIZE];
    dev.read_at(0, &mut head)?;
    match Footer::parse(&head) {
        Ok(footer) if footer.disk_type != DiskType::Fixed => Ok(FoundFooter {
            footer,
            offset: len,
            recovered: true,
        }),
        _ => Err(end_error),
    }
}

impl<D: BlockDevice> Vhd<D> {
    /// Open a VHD for reading and writing, validating every structure.
    pub fn open(dev: D) -> Result<Self> {
        Self::open_with(dev, true)
    }

    /// Open a VHD that will only be read.
    pub fn open_read_only(dev: D) -> Result<Self> {
        Self::open_with(dev, false)
    }

    fn open_with(mut dev: D, writable: bool) -> Result<Self> {
        let len = dev.size()?;
        let found = find_footer(&mut dev, len)?;
        let size = found.footer.virtual_size();
        if !size.is_multiple_of(512) || size > MAX_DISK_SIZE {
            return Err(Error::BadSize(size));
        }
        let mut footer_offset = found.offset;
        let sparse = match found.footer.disk_type {
            DiskType::Fixed => {
                if size > footer_offset {
                    return Err(Error::Malformed(
                        "fixed disk's data is shorter than its size",
                    ));
                }
                None
            }
            DiskType::Dynamic | DiskType::Differencing => {
                let (sparse, end) = open_sparse(&mut dev, &found, size)?;
                if found.recovered {
                    footer_offset = align_up(end.max(len.saturating_sub(512)), 512)
                        .ok_or(Error::Malformed("file too large"))?;
                }
                Some(sparse)
            }
        };
        Ok(Vhd {
            dev,
            footer: found.footer,
            footer_offset,
            footer_dirty: found.recovered,
            recovered_footer: found.recovered,
            size,
            sparse,
            parent: None,
            writable,
        })
    }
}

/// Validate the dynamic header and table; returns the state and the end of
/// the last structure in the file.
fn open_sparse<D: BlockDevice>(
    dev: &mut D,
    found: &FoundFooter,
    size: u64,
) -> Result<(Sparse, u64)> {
    let limit = found.offset;
    let header_offset = found.footer.data_offset;
    let header_end = header_offset
        .checked_add(HEADER_SIZE as u64)
        .filter(|&end| header_offset >= 512 && end <= limit)
        .ok_or(Error::Malformed("dynamic header offset outside the file"))?;
    let mut raw = vec![0u8; HEADER_SIZE];
    dev.read_at(header_offset, &mut raw)?;
    let header = DynamicHeader::parse(&raw)?;
    let block_size = u64::from(header.block_size);
    let needed = size.div_ceil(block_size);
    if needed > u64::from(header.max_table_entries) {
        return Err(Error::BadTable("too few entries for the disk size"));
    }
    let table_offset = header.table_offset;
    let table_end = table_offset
        .checked_add(needed * 4)
        .filter(|&end| table_offset >= 512 && end <= limit)
        .ok_or(Error::BadTable("table lies outside the file"))?;
    if table_offset < header_end && header_offset < table_end {
        return Err(Error::BadTable("table overlaps the dynamic header"));
    }
    let mut raw_bat = vec![0u8; (needed * 4) as usize];
    dev.read_at(table_offset, &mut raw_bat)?;
    let bat: Vec<u32> = (0..needed as usize)
        .map(|i| be_u32(&raw_bat, i * 4))
        .collect();
    drop(raw_bat);

    let bitmap_size = header.bitmap_size();
    let span = u64::from(bitmap_size) + block_size;
    // (start, end, block index or u32::MAX for metadata)
    let mut extents: Vec<(u64, u64, u32)> = vec![
        (0, 512, u32::MAX),
        (header_offset, header_end, u32::MAX),
        (table_offset, table_end, u32::MAX),
    ];
    for (index, &entry) in bat.iter().enumerate() {
        if entry == UNUSED {
            continue;
        }
        let start = u64::from(entry) * 512;
        let end = start + span;
        if end > limit {
            return Err(Error::BlockOutOfFile {
                block: index as u32,
                offset: start,
            });
        }
        extents.push((start, end, index as u32));
    }
    extents.sort_unstable();
    for pair in extents.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.0 < a.1 {
            let block = if b.2 != u32::MAX { b.2 } else { a.2 };
            return Err(Error::BlockOverlap { block });
        }
    }
    let end = extents.iter().map(|e| e.1).max().unwrap_or(512);
    let words = bat.len().div_ceil(64);
    Ok((
        Sparse {
            header,
            bat,
            bitmap_size,
            full: vec![0; words],
            bitmaps: BTreeMap::new(),
            dirty_table: BTreeSet::new(),
        },
        end,
    ))
}
