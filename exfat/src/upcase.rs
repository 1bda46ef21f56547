//! The up-case table: how names compare case-insensitively, and the name
//! hash stored in each stream extension entry.
//!
//! Invariants: a decoded [`Upcase`] maps all 65536 UTF-16 code units (codes
//! past the table's end map to themselves); the generated table uses the
//! identity-run compression the specification describes and maps each
//! code unit to its simple Unicode uppercase when that is one BMP unit.

use crate::error::{Error, Result};
use alloc::vec::Vec;

/// Largest up-case table accepted on mount (bytes).
pub const MAX_TABLE_BYTES: u64 = 2 * 65536 * 2;

/// A decoded up-case table.
#[derive(Clone)]
pub struct Upcase {
    map: Vec<u16>,
}

impl core::fmt::Debug for Upcase {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Upcase")
    }
}

fn simple_upper(unit: u16) -> u16 {
    let Some(c) = char::from_u32(u32::from(unit)) else {
        return unit;
    };
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(u), None) if (u as u32) <= 0xFFFF => u as u16,
        _ => unit,
    }
}

impl Upcase {
    /// Decode a table as stored on disk (compressed or not).
    pub fn decode(bytes: &[u8]) -> Result<Upcase> {
        if !bytes.len().is_multiple_of(2) || bytes.len() as u64 > MAX_TABLE_BYTES {
            return Err(Error::Corrupt("up-case table size"));
        }
        let mut map: Vec<u16> = Vec::with_capacity(65536);
        let mut units = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]));
        while let Some(unit) = units.next() {
            if map.len() >= 65536 {
                break;
            }
            if unit == map.len() as u16 {
                // An identity mapping written out (this is how 0xFFFF maps itself).
                map.push(unit);
            } else if unit == 0xFFFF {
                // A run of identity mappings; a trailing marker without a count is ignored.
                let run = units.next().unwrap_or(0);
                for _ in 0..run {
                    if map.len() >= 65536 {
                        break;
                    }
                    map.push(map.len() as u16);
                }
            } else {
                map.push(unit);
            }
        }
        while map.len() < 65536 {
            map.push(map.len() as u16);
        }
        Ok(Upcase { map })
    }

    /// The table capvisor writes when formatting, compressed.
    pub fn generate() -> Vec<u8> {
        let mut out: Vec<u16> = Vec::new();
        let mut unit: u32 = 0;
        while unit <= 0xFFFF {
            let mut run = 0u32;
            while unit + run <= 0xFFFF && simple_upper((unit + run) as u16) == (unit + run) as u16 {
                run += 1;
            }
            if run >= 3 {
                out.push(0xFFFF);
                out.push(run as u16);
                unit += run;
            } else {
                out.push(simple_upper(unit as u16));
                unit += 1;
            }
        }
        out.iter().flat_map(|u| u.to_le_bytes()).collect()
    }

    /// The default table, decoded.
    pub fn default_table() -> Upcase {
        Upcase::decode(&Upcase::generate()).unwrap_or(Upcase {
            map: (0..=0xFFFF).collect(),
        })
    }

    /// Upper-case one code unit.
    pub fn upper(&self, unit: u16) -> u16 {
        self.map.get(usize::from(unit)).copied().unwrap_or(unit)
    }

    /// The name hash of the stream extension entry.
    pub fn name_hash(&self, name: &[u16]) -> u16 {
        let mut hash = 0u16;
        for &unit in name {
            let up = self.upper(unit);
            for byte in up.to_le_bytes() {
                hash = hash.rotate_right(1).wrapping_add(u16::from(byte));
            }
        }
        hash
    }

    /// Whether two names are equal ignoring case.
    pub fn names_equal(&self, a: &[u16], b: &[u16]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(&x, &y)| self.upper(x) == self.upper(y))
    }
}

/// The up-case table checksum (over the bytes as stored).
pub fn table_checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0u32, |sum, &b| {
        sum.rotate_right(1).wrapping_add(u32::from(b))
    })
}
