//! Checking a volume: the backup boot region, every directory's entry sets
//! and names, every cluster chain, and the allocation bitmap against what
//! the files use.
//!
//! Invariant: checking only reads. Directories are visited once each
//! (a cluster claimed twice is reported, not followed), so a corrupt tree
//! cannot make the walk loop.

use crate::boot::{BOOT_REGION_SECTORS, verify_region};
use crate::device::BlockDevice;
use crate::dir::Dir;
use crate::error::{Error, Result};
use crate::volume::{Run, Volume};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

/// What [`Volume::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Damage: the volume needs repair.
    pub errors: Vec<String>,
    /// Tolerable: lost clusters, an unclean unmount.
    pub warnings: Vec<String>,
    /// Files seen.
    pub files: u64,
    /// Directories seen (including the root).
    pub directories: u64,
}

impl CheckReport {
    /// Whether no errors were found.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

impl<D: BlockDevice> Volume<D> {
    /// Check the whole volume.
    pub fn check(&mut self) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        let ss = self.boot.sector_size() as usize;
        let mut backup = vec![0u8; ss * BOOT_REGION_SECTORS as usize];
        self.dev
            .read_at(ss as u64 * BOOT_REGION_SECTORS, &mut backup)?;
        let mut main = vec![0u8; ss * BOOT_REGION_SECTORS as usize];
        self.dev.read_at(0, &mut main)?;
        if verify_region(&backup, ss).is_err() {
            report
                .errors
                .push("backup boot region checksum mismatch".into());
        } else if backup[11 * ss..12 * ss] != main[11 * ss..12 * ss] {
            report
                .errors
                .push("backup boot region differs from the main one".into());
        }
        if self.marked_dirty {
            report
                .warnings
                .push("volume is marked dirty (not cleanly unmounted)".into());
        }
        let mut used = vec![0u8; self.bitmap.len()];
        let mut claim = |vol: &Self, report: &mut CheckReport, runs: &[Run], what: &str| -> bool {
            let mut ok = true;
            for &(s, n) in runs {
                for c in s..s + n {
                    let i = (c - 2) as usize;
                    if used[i / 8] >> (i % 8) & 1 == 1 {
                        report
                            .errors
                            .push(format!("cluster {c} is used twice ({what})"));
                        ok = false;
                    }
                    used[i / 8] |= 1 << (i % 8);
                    if !vol.bit(c) {
                        report
                            .errors
                            .push(format!("cluster {c} used by {what} is marked free"));
                    }
                }
            }
            ok
        };
        let system = [self.bitmap_runs.clone(), self.upcase_runs.clone()];
        for runs in &system {
            claim(self, &mut report, runs, "a system file");
        }
        let root = self.root()?;
        let root_runs = self.dir_runs(&root)?;
        claim(self, &mut report, &root_runs, "the root directory");
        let mut pending: Vec<(Dir, String)> = vec![(root, String::new())];
        while let Some((dir, path)) = pending.pop() {
            report.directories += 1;
            let data = match self.read_dir(&dir) {
                Ok(d) => d,
                Err(e) => {
                    report.errors.push(format!("{path}/: {e}"));
                    continue;
                }
            };
            let sets = match self.scan(&data) {
                Ok(s) => s,
                Err(e) => {
                    report.errors.push(format!("{path}/: {e}"));
                    continue;
                }
            };
            for found in sets {
                let name: String = char::decode_utf16(found.set.name.iter().copied())
                    .map(|c| c.unwrap_or('?'))
                    .collect();
                let full = format!("{path}/{name}");
                let stored_hash = {
                    let at = (found.index as usize + 1) * 32 + 4;
                    u16::from_le_bytes([data.bytes[at], data.bytes[at + 1]])
                };
                if stored_hash != self.upcase.name_hash(&found.set.name) {
                    report.errors.push(format!("{full}: name hash mismatch"));
                }
                let runs = if found.set.data_length == 0 {
                    Ok(Vec::new())
                } else if found.set.no_fat_chain() {
                    self.contiguous(found.set.first_cluster, found.set.data_length)
                } else {
                    self.chain(found.set.first_cluster, Some(found.set.data_length))
                };
                let runs = match runs {
                    Ok(r) => r,
                    Err(e) => {
                        report.errors.push(format!("{full}: {e}"));
                        continue;
                    }
                };
                let unique = claim(self, &mut report, &runs, &full);
                if found.set.is_dir() {
                    if unique && !runs.is_empty() {
                        let sub = Dir {
                            first_cluster: found.set.first_cluster,
                            no_fat_chain: found.set.no_fat_chain(),
                            data_length: found.set.data_length,
                            parent: Some((Box::new(dir.clone()), found.index)),
                        };
                        pending.push((sub, full));
                    } else if runs.is_empty() {
                        report
                            .errors
                            .push(format!("{full}: directory without clusters"));
                    }
                } else {
                    report.files += 1;
                }
            }
        }
        let lost = (0..self.boot.cluster_count)
            .filter(|&i| self.bit(i + 2) && used[(i / 8) as usize] >> (i % 8) & 1 == 0)
            .count();
        if lost > 0 {
            report
                .warnings
                .push(format!("{lost} clusters marked used but owned by no file"));
        }
        Ok(report)
    }

    /// Check, and turn a report with errors into [`Error::Corrupt`].
    pub fn check_strict(&mut self) -> Result<CheckReport> {
        let report = self.check()?;
        if report.is_clean() {
            Ok(report)
        } else {
            Err(Error::Corrupt("check found errors"))
        }
    }
}
