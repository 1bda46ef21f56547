//! Workload `memdirty`: memory that changes at a set rate and checks
//! itself — the load a live migration has to keep up with, and the proof
//! that it moved every page.
//!
//! `args[0]`: `(IPv4 address << 16) | TCP port` of a key-value service
//! (`crate::kv`) vCPU 0 runs beside it (0: none; the child then needs only
//! one vCPU); `args[1]`: working-set pages; `args[2]`: pages dirtied per
//! second; `args[3]`: seconds to run. The dirtying vCPU is the last one.
//!
//! Every page of the working set holds [`page_word`]s of its current
//! *version*; a table (in the same memory) keeps each page's
//! [`checksum`]. Before a page is rewritten its contents are checked
//! against the table; whenever the root signals `from_root` (after a
//! migration or restore), and at the end, every page is checked:
//! [`MemdirtyVerified`] reports it.
//!
//! # Invariants
//! [`page_word`] and [`checksum`] are pure: the child and host tests agree.

use core::fmt;

/// The workload's name.
pub const MEMDIRTY: &str = "memdirty";

/// 64-bit words per page.
pub const WORDS: usize = 512;

/// Word `word` of working-set page `page` at version `version`.
pub const fn page_word(page: u64, version: u64, word: usize) -> u64 {
    let x = (page << 40) ^ (version << 12) ^ word as u64;
    // SplitMix64's finaliser: every bit depends on every input bit.
    let x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a over a page's words.
pub fn checksum(words: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in words {
        for b in w.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Packs the key-value service's endpoint into `args[0]`.
pub const fn endpoint_arg(ipv4: u32, port: u16) -> u64 {
    ((ipv4 as u64) << 16) | port as u64
}

/// Unpacks `args[0]`: (IPv4 address, port), `None` for no service.
pub const fn endpoint(arg: u64) -> Option<(u32, u16)> {
    if arg == 0 {
        None
    } else {
        Some(((arg >> 16) as u32, arg as u16))
    }
}

/// A full check of the working set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemdirtyVerified {
    /// Why: the number of root signals seen so far (0 = the final check).
    pub epoch: u32,
    /// Pages checked.
    pub pages: u64,
    /// Pages whose contents did not match their checksum.
    pub bad: u64,
    /// Pages written so far.
    pub writes: u64,
}

impl fmt::Display for MemdirtyVerified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memdirty: verified {} pages after signal {}: {} bad ({} writes so far)",
            self.pages, self.epoch, self.bad, self.writes
        )
    }
}

/// The workload's last line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemdirtyDone {
    /// Pages written.
    pub writes: u64,
    /// Bad pages found by all checks (before-write checks included).
    pub bad: u64,
    /// Root signals seen.
    pub signals: u32,
}

impl fmt::Display for MemdirtyDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memdirty: done: {} writes, {} bad pages, {} signals",
            self.writes, self.bad, self.signals
        )
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn versions_and_pages_differ_and_checksums_see_it() {
        let page = |p, v| core::array::from_fn::<u64, WORDS, _>(|w| page_word(p, v, w));
        assert_ne!(checksum(&page(1, 1)), checksum(&page(1, 2)));
        assert_ne!(checksum(&page(1, 1)), checksum(&page(2, 1)));
        assert_eq!(checksum(&page(7, 3)), checksum(&page(7, 3)));
        assert_eq!(
            endpoint(endpoint_arg(0x0a00_0214, 7000)),
            Some((0x0a00_0214, 7000))
        );
        assert_eq!(endpoint(0), None);
        assert_eq!(
            MemdirtyVerified {
                epoch: 1,
                pages: 2,
                bad: 0,
                writes: 5
            }
            .to_string(),
            "memdirty: verified 2 pages after signal 1: 0 bad (5 writes so far)"
        );
    }
}
