//! The disk workload as the root, the harness and the host check see it:
//! its modes, the data it writes (so a host tool can check the bytes in a
//! VHD), the benchmark's access pattern, and its console lines.
//!
//! # Invariants
//! [`pattern_byte`] is a pure function of (seed, byte offset): the child
//! writes it, the child reads it back, and the host compares a VHD's
//! contents with it, byte for byte.

use core::fmt;

/// Workload `disk`: `args[0]` is the mode, `args[1]` the seed of the
/// pattern, `args[2]` the first LBA, `args[3]` the sector count.
pub const DISK: &str = "disk";

/// The disk workload's modes (`args[0]`).
pub mod mode {
    /// Write the pattern on LUN 0, flush, read it back and verify; also
    /// read the sectors just past it and report whether they hold the
    /// base disk's pattern ([`crate::workload::base_pattern_byte`]).
    pub const WRITE_VERIFY: u64 = 1;
    /// Only read and verify the pattern on LUN 0 (after a reboot).
    pub const VERIFY: u64 = 2;
    /// Use LUN 0, wait for a hot-added LUN 1, keep many requests
    /// outstanding on it until it is removed; report what completed.
    pub const HOTPLUG: u64 = 3;
    /// Malformed and out-of-bounds storage requests (see `STORAGE_HOSTILE_CHECKS`).
    pub const HOSTILE: u64 = 4;
    /// Sequential and random reads of LUN 0, timed.
    pub const BENCH: u64 = 5;
    /// Write the pattern on LUN 0 in chunks of [`super::STREAM_CHUNK`]
    /// sectors from LBA `args[2]` until the root asks for a shutdown (at
    /// most `args[3]` chunks; 0: as many as fit), then flush, write the
    /// [`super::StopRecord`] at LBA 0, flush again, print
    /// [`super::DiskStopped`] and end the shutdown.
    pub const STREAM: u64 = 6;
}

/// Sectors per write of mode [`mode::STREAM`].
pub const STREAM_CHUNK: u64 = 128;

/// What mode [`mode::STREAM`] leaves at LBA 0 when stopped: 512 bytes,
/// [`StopRecord::MAGIC`], then `chunks`, `lba`, `seed`, `chunk_sectors`
/// as little-endian `u64`s, zeros after. A host check reads it to know
/// which writes were acknowledged before the stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopRecord {
    /// Chunks written and acknowledged.
    pub chunks: u64,
    /// First LBA of the pattern.
    pub lba: u64,
    /// Seed of the pattern.
    pub seed: u64,
    /// Sectors per chunk.
    pub chunk_sectors: u64,
}

impl StopRecord {
    /// The record's first 16 bytes.
    pub const MAGIC: [u8; 16] = *b"capvisor-stopped";

    /// The record's sector.
    pub fn to_sector(&self) -> [u8; 512] {
        let mut out = [0u8; 512];
        out[..16].copy_from_slice(&Self::MAGIC);
        for (i, v) in [self.chunks, self.lba, self.seed, self.chunk_sectors]
            .into_iter()
            .enumerate()
        {
            out[16 + 8 * i..24 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Reads a record back; `None` without the magic.
    pub fn from_sector(sector: &[u8]) -> Option<StopRecord> {
        if sector.get(..16)? != Self::MAGIC {
            return None;
        }
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                sector.get(16 + 8 * i..24 + 8 * i)?.try_into().ok()?,
            ))
        };
        Some(StopRecord {
            chunks: word(0)?,
            lba: word(1)?,
            seed: word(2)?,
            chunk_sectors: word(3)?,
        })
    }
}

/// `disk: stopped by the root after N writes of S sectors from LBA L, flushed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskStopped {
    /// Writes (chunks) acknowledged.
    pub chunks: u64,
    /// Sectors per write.
    pub chunk_sectors: u64,
    /// First LBA.
    pub lba: u64,
}

impl fmt::Display for DiskStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "disk: stopped by the root after {} writes of {} sectors from LBA {}, flushed",
            self.chunks, self.chunk_sectors, self.lba
        )
    }
}

/// The start of every [`DiskStopped`] line (the count varies).
pub const DISK_STOPPED: &str = "disk: stopped by the root after ";

/// Byte `offset` of the pattern with `seed` (a 64-bit mix of both, so a
/// shifted, stale or foreign sector never matches).
pub fn pattern_byte(seed: u64, offset: u64) -> u8 {
    let word = offset / 8;
    let mut x = seed ^ word.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 29;
    (x >> ((offset % 8) * 8)) as u8
}

/// Fills `buf` with the pattern from byte `offset`.
pub fn fill_pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(seed, offset + i as u64);
    }
}

/// The first byte of `buf` (read from byte `offset`) that differs from the
/// pattern, as an offset.
pub fn pattern_mismatch(seed: u64, offset: u64, buf: &[u8]) -> Option<u64> {
    buf.iter()
        .enumerate()
        .find(|&(i, &b)| b != pattern_byte(seed, offset + i as u64))
        .map(|(i, _)| offset + i as u64)
}

/// The disk the benchmark reads (a fixed VHD on the data volume).
pub const BENCH_FILE: &str = "bench.vhd";
/// Sequential part of the benchmark: bytes read from LBA 0.
pub const BENCH_SEQUENTIAL_BYTES: u64 = 8 << 20;
/// Request size of the sequential part.
pub const BENCH_SEQUENTIAL_REQUEST: u64 = 64 << 10;
/// Random part: 4 KiB reads.
pub const BENCH_RANDOM_READS: u64 = 1024;
/// Random reads fall in the first this many bytes.
pub const BENCH_RANDOM_SPAN: u64 = 16 << 20;

/// The 4 KiB-aligned byte offset of random read `i`.
pub fn bench_random_offset(i: u64) -> u64 {
    let mut x = i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    (x % (BENCH_RANDOM_SPAN / 4096)) * 4096
}

/// `disk: wrote W sectors at LBA L, flushed, read back: OK|MISMATCH at B`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskVerified {
    /// What was done: "wrote and flushed" or "found".
    pub action: &'static str,
    /// Sectors.
    pub sectors: u64,
    /// First LBA.
    pub lba: u64,
    /// First mismatching byte offset, if any.
    pub mismatch: Option<u64>,
}

/// [`DiskVerified::action`] of mode [`mode::WRITE_VERIFY`].
pub const WROTE: &str = "wrote, flushed and read back";
/// [`DiskVerified::action`] of mode [`mode::VERIFY`].
pub const FOUND: &str = "found";

impl fmt::Display for DiskVerified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "disk: {} {} sectors at LBA {}: ",
            self.action, self.sectors, self.lba
        )?;
        match self.mismatch {
            None => write!(f, "pattern intact"),
            Some(at) => write!(f, "MISMATCH at byte {at}"),
        }
    }
}

/// `disk: sectors past the pattern hold the base disk's data: yes|no`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaseSeen(pub bool);

impl fmt::Display for BaseSeen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let answer = if self.0 { "yes" } else { "no" };
        write!(
            f,
            "disk: sectors past the pattern hold the base disk's data: {answer}"
        )
    }
}

/// [`BenchResult::who`] of the child's run with one request in flight.
pub const CHILD_ONE_AT_A_TIME: &str = "child, 1 in flight";
/// [`BenchResult::who`] of the child's run with 4 (sequential) and 32
/// (random) requests in flight.
pub const CHILD_QUEUED: &str = "child, queued";
/// [`BenchResult::who`] of the root's direct run.
pub const ROOT_DIRECT: &str = "root";

/// `disk bench: sequential B bytes in C cycles, random N x 4 KiB in R cycles`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchResult<'a> {
    /// Who measured: "child" or "root".
    pub who: &'a str,
    /// Sequential cycles.
    pub sequential_cycles: u64,
    /// Random cycles.
    pub random_cycles: u64,
}

impl fmt::Display for BenchResult<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "disk bench ({}): sequential {} bytes in {} cycles, random {} x 4 KiB in {} cycles",
            self.who,
            BENCH_SEQUENTIAL_BYTES,
            self.sequential_cycles,
            BENCH_RANDOM_READS,
            self.random_cycles
        )
    }
}

/// Checks the `disk` workload's hostile mode makes.
pub const STORAGE_HOSTILE_CHECKS: u32 = 9;

/// `disk: LUN L added (S sectors)`: the child saw a hot-added disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LunSeen {
    /// The LUN.
    pub lun: u8,
    /// Its capacity.
    pub sectors: u64,
}

impl fmt::Display for LunSeen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "disk: LUN {} added ({} sectors)", self.lun, self.sectors)
    }
}

/// `disk: LUN L removed with requests in flight: O completed, E failed cleanly, X other errors`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotRemoved {
    /// The LUN.
    pub lun: u8,
    /// Requests in flight when the removal notice arrived.
    pub in_flight: u64,
    /// Requests that completed `Ok`.
    pub completed: u64,
    /// Requests failed with `Removed` or `NoSuchLun`.
    pub failed_cleanly: u64,
    /// Any other outcome (errors of other kinds, timeouts).
    pub other: u64,
}

impl fmt::Display for HotRemoved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "disk: LUN {} removed with {} requests in flight: {} completed, {} failed cleanly, {} other outcomes",
            self.lun, self.in_flight, self.completed, self.failed_cleanly, self.other
        )
    }
}

/// `disk: hot remove: every in-flight request ended cleanly: yes|no`
/// (some were in flight, each completed or failed `Removed`/`NoSuchLun`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotRemoveClean(pub bool);

impl fmt::Display for HotRemoveClean {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let answer = if self.0 { "yes" } else { "no" };
        write!(
            f,
            "disk: hot remove: every in-flight request ended cleanly: {answer}"
        )
    }
}

/// One check of the hostile mode: `disk hostile: NAME: answered STATUS (PASS|FAIL)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageHostileCheck<'a> {
    /// What was tried.
    pub name: &'a str,
    /// The answer, as text.
    pub answer: &'a str,
    /// Whether it was the expected one.
    pub pass: bool,
}

impl fmt::Display for StorageHostileCheck<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.pass { "PASS" } else { "FAIL" };
        write!(
            f,
            "disk hostile: {}: answered {} ({verdict})",
            self.name, self.answer
        )
    }
}

/// `disk hostile: P of N checks passed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageHostileSummary {
    /// Checks passed.
    pub passed: u32,
}

impl fmt::Display for StorageHostileSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "disk hostile: {} of {} checks passed",
            self.passed, STORAGE_HOSTILE_CHECKS
        )
    }
}

/// `disk: R requests, S signals to the root`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientCounts {
    /// Requests sent.
    pub requests: u64,
    /// Port signals sent.
    pub signals: u64,
}

impl fmt::Display for ClientCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "disk: {} requests, {} signals to the root",
            self.requests, self.signals
        )
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn stop_records_round_trip_and_stop_lines_start_alike() {
        let r = StopRecord {
            chunks: 41,
            lba: 64,
            seed: 0x5709,
            chunk_sectors: STREAM_CHUNK,
        };
        let sector = r.to_sector();
        assert_eq!(StopRecord::from_sector(&sector), Some(r));
        assert_eq!(StopRecord::from_sector(&[0u8; 512]), None);
        assert_eq!(StopRecord::from_sector(&sector[..20]), None);
        let line = DiskStopped {
            chunks: 41,
            chunk_sectors: 128,
            lba: 64,
        }
        .to_string();
        assert!(line.starts_with(DISK_STOPPED));
        assert_eq!(
            line,
            "disk: stopped by the root after 41 writes of 128 sectors from LBA 64, flushed"
        );
    }

    #[test]
    fn patterns_differ_by_seed_and_offset() {
        let mut a = [0u8; 1024];
        fill_pattern(1, 512, &mut a);
        assert_eq!(pattern_mismatch(1, 512, &a), None);
        assert_eq!(pattern_mismatch(2, 512, &a), Some(512));
        assert!(
            pattern_mismatch(1, 0, &a).is_some(),
            "a shifted sector matched"
        );
        let zeros = [0u8; 512];
        assert!(pattern_mismatch(0, 0, &zeros).is_some());
    }

    #[test]
    fn random_offsets_are_aligned_and_in_span() {
        let mut distinct = std::collections::BTreeSet::new();
        for i in 0..BENCH_RANDOM_READS {
            let o = bench_random_offset(i);
            assert_eq!(o % 4096, 0);
            assert!(o < BENCH_RANDOM_SPAN);
            distinct.insert(o);
        }
        assert!(distinct.len() > 900, "{} distinct offsets", distinct.len());
    }

    #[test]
    fn lines_have_their_shape() {
        let v = DiskVerified {
            action: WROTE,
            sectors: 8,
            lba: 4096,
            mismatch: None,
        };
        assert_eq!(
            v.to_string(),
            "disk: wrote, flushed and read back 8 sectors at LBA 4096: pattern intact"
        );
        assert!(
            DiskVerified {
                mismatch: Some(7),
                ..v
            }
            .to_string()
            .ends_with("MISMATCH at byte 7")
        );
    }
}
