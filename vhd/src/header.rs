//! The 1024-byte dynamic disk header of dynamic and differencing VHDs, with
//! its eight parent locator entries.
//!
//! Invariants: a parsed [`DynamicHeader`] had the `cxsparse` cookie, a
//! matching checksum, version 1.0 and a power-of-two block size between 512
//! bytes and 256 MiB; [`DynamicHeader::to_bytes`] always writes a valid checksum.

use crate::bytes::{be_u32, be_u64, checksum, put};
use crate::error::{Error, Result};
use alloc::string::String;
use alloc::vec::Vec;

/// Size of the dynamic header in bytes.
pub const HEADER_SIZE: usize = 1024;
/// The dynamic header's cookie.
pub const HEADER_COOKIE: &[u8; 8] = b"cxsparse";
/// Default block size: 2 MiB, as Hyper-V and qemu use.
pub const DEFAULT_BLOCK_SIZE: u32 = 2 << 20;
/// Number of parent locator entries in the header.
pub const LOCATOR_COUNT: usize = 8;
const CHECKSUM_AT: usize = 36;
const VERSION_1_0: u32 = 0x0001_0000;
const LOCATORS_AT: usize = 576;
const LOCATOR_SIZE: usize = 24;

/// Platform code of a parent locator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// Unused entry.
    None,
    /// `W2ru`: relative Windows path, UTF-16LE.
    RelativeWindows,
    /// `W2ku`: absolute Windows path, UTF-16LE.
    AbsoluteWindows,
    /// `Wi2r` / `Wi2k`: deprecated Windows paths.
    LegacyWindows,
    /// `Mac ` / `MacX`: Mac OS alias or file URL.
    Mac,
    /// Any other code.
    Other(u32),
}

impl Platform {
    /// Decode a platform code.
    pub fn from_code(code: u32) -> Platform {
        match &code.to_be_bytes() {
            [0, 0, 0, 0] => Platform::None,
            b"W2ru" => Platform::RelativeWindows,
            b"W2ku" => Platform::AbsoluteWindows,
            b"Wi2r" | b"Wi2k" => Platform::LegacyWindows,
            b"Mac " | b"MacX" => Platform::Mac,
            _ => Platform::Other(code),
        }
    }
}

/// One parent locator entry: where in the file a path to the parent is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParentLocator {
    /// Raw platform code (see [`Platform::from_code`]).
    pub platform_code: u32,
    /// Space reserved for the locator data. The specification says sectors;
    /// Windows writes bytes. Readers rely only on `data_length`.
    pub data_space: u32,
    /// Length of the locator data in bytes.
    pub data_length: u32,
    /// Absolute file offset of the locator data.
    pub data_offset: u64,
}

/// The decoded dynamic disk header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicHeader {
    /// Absolute file offset of the block allocation table.
    pub table_offset: u64,
    /// Entries in the block allocation table.
    pub max_table_entries: u32,
    /// Bytes of data per block (excluding its sector bitmap).
    pub block_size: u32,
    /// Parent's unique id (differencing disks).
    pub parent_unique_id: [u8; 16],
    /// Parent's modification time, seconds since 2000-01-01 UTC.
    pub parent_timestamp: u32,
    /// Parent's file name, as stored (UTF-16BE in the file).
    pub parent_name: String,
    /// The eight locator entries, unused ones zero.
    pub locators: [ParentLocator; LOCATOR_COUNT],
}

impl DynamicHeader {
    /// Decode and validate a header.
    pub fn parse(buf: &[u8]) -> Result<DynamicHeader> {
        if buf.len() < HEADER_SIZE || buf.get(..8) != Some(&HEADER_COOKIE[..]) {
            return Err(Error::NoDynamicHeader);
        }
        let buf = &buf[..HEADER_SIZE];
        let stored = be_u32(buf, CHECKSUM_AT);
        let computed = checksum(buf, CHECKSUM_AT);
        if stored != computed {
            return Err(Error::HeaderChecksum { stored, computed });
        }
        let version = be_u32(buf, 24);
        if version != VERSION_1_0 {
            return Err(Error::UnsupportedVersion(version));
        }
        let block_size = be_u32(buf, 32);
        if !block_size.is_power_of_two() || !(512..=1 << 28).contains(&block_size) {
            return Err(Error::BadBlockSize(block_size));
        }
        let mut parent_unique_id = [0u8; 16];
        parent_unique_id.copy_from_slice(&buf[40..56]);
        let name_units: Vec<u16> = buf[64..576]
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let mut locators = [ParentLocator::default(); LOCATOR_COUNT];
        for (i, loc) in locators.iter_mut().enumerate() {
            let at = LOCATORS_AT + i * LOCATOR_SIZE;
            *loc = ParentLocator {
                platform_code: be_u32(buf, at),
                data_space: be_u32(buf, at + 4),
                data_length: be_u32(buf, at + 8),
                data_offset: be_u64(buf, at + 16),
            };
        }
        Ok(DynamicHeader {
            table_offset: be_u64(buf, 16),
            max_table_entries: be_u32(buf, 28),
            block_size,
            parent_unique_id,
            parent_timestamp: be_u32(buf, 56),
            parent_name: char::decode_utf16(name_units)
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect(),
            locators,
        })
    }

    /// Encode with a correct checksum. A parent name longer than 255 UTF-16
    /// units is cut to fit.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        put(&mut b, 0, HEADER_COOKIE);
        put(&mut b, 8, &u64::MAX.to_be_bytes());
        put(&mut b, 16, &self.table_offset.to_be_bytes());
        put(&mut b, 24, &VERSION_1_0.to_be_bytes());
        put(&mut b, 28, &self.max_table_entries.to_be_bytes());
        put(&mut b, 32, &self.block_size.to_be_bytes());
        put(&mut b, 40, &self.parent_unique_id);
        put(&mut b, 56, &self.parent_timestamp.to_be_bytes());
        for (i, unit) in self.parent_name.encode_utf16().take(255).enumerate() {
            put(&mut b, 64 + 2 * i, &unit.to_be_bytes());
        }
        for (i, loc) in self.locators.iter().enumerate() {
            let at = LOCATORS_AT + i * LOCATOR_SIZE;
            put(&mut b, at, &loc.platform_code.to_be_bytes());
            put(&mut b, at + 4, &loc.data_space.to_be_bytes());
            put(&mut b, at + 8, &loc.data_length.to_be_bytes());
            put(&mut b, at + 16, &loc.data_offset.to_be_bytes());
        }
        let sum = checksum(&b, CHECKSUM_AT);
        put(&mut b, CHECKSUM_AT, &sum.to_be_bytes());
        b
    }

    /// Bytes of sector bitmap before each block's data (a whole number of sectors).
    pub fn bitmap_size(&self) -> u32 {
        (self.block_size / 512).div_ceil(8).next_multiple_of(512)
    }
}
