//! 32-byte directory entries and file entry sets (file, stream extension,
//! file name entries): decoding with validation, encoding with checksums.
//!
//! Invariants: a decoded [`EntrySet`] had a file entry, a stream extension
//! entry and enough name entries for its name length, all in use, with a
//! matching set checksum; [`EntrySet::encode`] always writes a correct set
//! checksum and name hash.

use crate::error::{Error, Result};
use crate::upcase::Upcase;
use alloc::vec;
use alloc::vec::Vec;

/// Bytes per directory entry.
pub const ENTRY_SIZE: usize = 32;
/// Entry type: end of directory.
pub const TYPE_END: u8 = 0x00;
/// Entry type: allocation bitmap.
pub const TYPE_BITMAP: u8 = 0x81;
/// Entry type: up-case table.
pub const TYPE_UPCASE: u8 = 0x82;
/// Entry type: volume label.
pub const TYPE_LABEL: u8 = 0x83;
/// Entry type: file (primary of a file entry set).
pub const TYPE_FILE: u8 = 0x85;
/// Entry type: stream extension.
pub const TYPE_STREAM: u8 = 0xC0;
/// Entry type: file name.
pub const TYPE_NAME: u8 = 0xC1;
/// File attribute: directory.
pub const ATTR_DIRECTORY: u16 = 0x10;
/// File attribute: archive.
pub const ATTR_ARCHIVE: u16 = 0x20;
/// Stream flag: allocation possible.
pub const FLAG_ALLOC_POSSIBLE: u8 = 1;
/// Stream flag: clusters are contiguous and the FAT is not used.
pub const FLAG_NO_FAT_CHAIN: u8 = 2;
/// Longest name in UTF-16 units.
pub const MAX_NAME: usize = 255;

/// A date and time in the volume's local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// Year (1980..=2107).
    pub year: u16,
    /// Month 1..=12.
    pub month: u8,
    /// Day 1..=31.
    pub day: u8,
    /// Hour 0..=23.
    pub hour: u8,
    /// Minute 0..=59.
    pub minute: u8,
    /// Second 0..=59.
    pub second: u8,
}

impl Timestamp {
    /// 1980-01-01 00:00:00, the earliest exFAT time.
    pub const EPOCH: Timestamp = Timestamp {
        year: 1980,
        month: 1,
        day: 1,
        hour: 0,
        minute: 0,
        second: 0,
    };

    /// Encode as the 32-bit DOS-style field.
    pub fn encode(self) -> u32 {
        let year = u32::from(self.year.clamp(1980, 2107) - 1980);
        year << 25
            | u32::from(self.month.clamp(1, 12)) << 21
            | u32::from(self.day.clamp(1, 31)) << 16
            | u32::from(self.hour.min(23)) << 11
            | u32::from(self.minute.min(59)) << 5
            | u32::from(self.second.min(59) / 2)
    }

    /// Decode the 32-bit field (fields are not range-checked).
    pub fn decode(v: u32) -> Timestamp {
        Timestamp {
            year: 1980 + (v >> 25) as u16,
            month: (v >> 21 & 0xF) as u8,
            day: (v >> 16 & 0x1F) as u8,
            hour: (v >> 11 & 0x1F) as u8,
            minute: (v >> 5 & 0x3F) as u8,
            second: ((v & 0x1F) * 2) as u8,
        }
    }
}

/// The checksum over an entry set, skipping the checksum field itself.
pub fn set_checksum(bytes: &[u8]) -> u16 {
    bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 2 | 3))
        .fold(0u16, |sum, (_, &b)| {
            sum.rotate_right(1).wrapping_add(u16::from(b))
        })
}

/// A decoded file entry set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySet {
    /// File attributes.
    pub attributes: u16,
    /// Creation time.
    pub created: u32,
    /// Last modification time.
    pub modified: u32,
    /// Last access time.
    pub accessed: u32,
    /// Stream flags (allocation possible, no FAT chain).
    pub stream_flags: u8,
    /// Bytes of valid data.
    pub valid_length: u64,
    /// First cluster, 0 if nothing is allocated.
    pub first_cluster: u32,
    /// Allocated length in bytes.
    pub data_length: u64,
    /// The name, UTF-16.
    pub name: Vec<u16>,
    /// Secondary entries past the names (vendor extensions), kept as they were.
    pub extra: Vec<[u8; ENTRY_SIZE]>,
}

impl EntrySet {
    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.attributes & ATTR_DIRECTORY != 0
    }

    /// Whether the clusters are contiguous without a FAT chain.
    pub fn no_fat_chain(&self) -> bool {
        self.stream_flags & FLAG_NO_FAT_CHAIN != 0
    }

    /// Number of entries the set takes.
    pub fn entry_count(&self) -> usize {
        2 + self.name.len().div_ceil(15) + self.extra.len()
    }

    /// Decode a set from `bytes`, which starts at its file entry and holds
    /// at least `(1 + secondary count) * 32` bytes.
    pub fn decode(bytes: &[u8]) -> Result<EntrySet> {
        let Some(&[kind, secondary]) = bytes.get(..2) else {
            return Err(Error::Corrupt("entry set truncated"));
        };
        if kind != TYPE_FILE || !(2..=18).contains(&secondary) {
            return Err(Error::Corrupt("file entry secondary count out of range"));
        }
        let len = (usize::from(secondary) + 1) * ENTRY_SIZE;
        let set = bytes
            .get(..len)
            .ok_or(Error::Corrupt("entry set runs past the directory"))?;
        let stored = u16::from_le_bytes([set[2], set[3]]);
        if stored != set_checksum(set) {
            return Err(Error::Corrupt("entry set checksum mismatch"));
        }
        let stream = &set[ENTRY_SIZE..2 * ENTRY_SIZE];
        if stream[0] != TYPE_STREAM {
            return Err(Error::Corrupt(
                "file entry not followed by a stream extension",
            ));
        }
        let name_len = usize::from(stream[3]);
        let name_entries = name_len.div_ceil(15);
        if name_len == 0 || name_entries + 1 > usize::from(secondary) {
            return Err(Error::Corrupt("name length does not fit the entry set"));
        }
        let mut name = Vec::with_capacity(name_len);
        let mut extra = Vec::new();
        for (i, entry) in set.chunks_exact(ENTRY_SIZE).enumerate().skip(2) {
            if i < 2 + name_entries {
                if entry[0] != TYPE_NAME {
                    return Err(Error::Corrupt("missing file name entry"));
                }
                for c in entry[2..32].chunks_exact(2) {
                    if name.len() < name_len {
                        name.push(u16::from_le_bytes([c[0], c[1]]));
                    }
                }
            } else {
                if entry[0] & 0x80 == 0 || entry[0] & 0x40 == 0 {
                    return Err(Error::Corrupt(
                        "unused or primary entry inside an entry set",
                    ));
                }
                let mut copy = [0u8; ENTRY_SIZE];
                copy.copy_from_slice(entry);
                extra.push(copy);
            }
        }
        let le32 =
            |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let le64 = |b: &[u8], at: usize| u64::from(le32(b, at)) | u64::from(le32(b, at + 4)) << 32;
        let out = EntrySet {
            attributes: u16::from_le_bytes([set[4], set[5]]),
            created: le32(set, 8),
            modified: le32(set, 12),
            accessed: le32(set, 16),
            stream_flags: stream[1],
            valid_length: le64(stream, 8),
            first_cluster: le32(stream, 20),
            data_length: le64(stream, 24),
            name,
            extra,
        };
        if out.valid_length > out.data_length {
            return Err(Error::Corrupt("valid data length exceeds data length"));
        }
        Ok(out)
    }

    /// Encode with a correct name hash and set checksum.
    pub fn encode(&self, upcase: &Upcase) -> Vec<u8> {
        let count = self.entry_count();
        let mut b = vec![0u8; count * ENTRY_SIZE];
        b[0] = TYPE_FILE;
        b[1] = (count - 1) as u8;
        b[4..6].copy_from_slice(&self.attributes.to_le_bytes());
        b[8..12].copy_from_slice(&self.created.to_le_bytes());
        b[12..16].copy_from_slice(&self.modified.to_le_bytes());
        b[16..20].copy_from_slice(&self.accessed.to_le_bytes());
        let s = &mut b[ENTRY_SIZE..2 * ENTRY_SIZE];
        s[0] = TYPE_STREAM;
        s[1] = self.stream_flags;
        s[3] = self.name.len() as u8;
        s[4..6].copy_from_slice(&upcase.name_hash(&self.name).to_le_bytes());
        s[8..16].copy_from_slice(&self.valid_length.to_le_bytes());
        s[20..24].copy_from_slice(&self.first_cluster.to_le_bytes());
        s[24..32].copy_from_slice(&self.data_length.to_le_bytes());
        for (i, chunk) in self.name.chunks(15).enumerate() {
            let e = &mut b[(2 + i) * ENTRY_SIZE..(3 + i) * ENTRY_SIZE];
            e[0] = TYPE_NAME;
            for (j, unit) in chunk.iter().enumerate() {
                e[2 + 2 * j..4 + 2 * j].copy_from_slice(&unit.to_le_bytes());
            }
        }
        let extra_at = (2 + self.name.len().div_ceil(15)) * ENTRY_SIZE;
        for (i, e) in self.extra.iter().enumerate() {
            b[extra_at + i * ENTRY_SIZE..extra_at + (i + 1) * ENTRY_SIZE].copy_from_slice(e);
        }
        let sum = set_checksum(&b);
        b[2..4].copy_from_slice(&sum.to_le_bytes());
        b
    }
}

/// Check and convert a name for storage.
pub fn encode_name(name: &str) -> Result<Vec<u16>> {
    let units: Vec<u16> = name.encode_utf16().collect();
    let bad = |u: u16| {
        u < 0x20
            || matches!(
                u,
                0x22 | 0x2A | 0x2F | 0x3A | 0x3C | 0x3E | 0x3F | 0x5C | 0x7C
            )
    };
    if units.is_empty()
        || units.len() > MAX_NAME
        || units.iter().any(|&u| bad(u))
        || name == "."
        || name == ".."
    {
        return Err(Error::InvalidName);
    }
    Ok(units)
}
