//! Consistency checks beyond what opening validates: the footer copy, the
//! sector bitmaps, saved state, the parent's timestamp, and whether other
//! readers (Hyper-V, QEMU before and since 10.0) see the same size.
//!
//! Invariant: checking only reads; it never changes the file.

use crate::device::BlockDevice;
use crate::disk::Vhd;
use crate::error::Result;
use crate::footer::{DiskType, FOOTER_SIZE, Footer};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing; the disk is fine.
    Note,
    /// Tolerated by readers, but not what the specification asks for.
    Warning,
    /// Damage: data may be wrong or other tools may refuse the file.
    Error,
}

/// One result of [`Vhd::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How serious it is.
    pub severity: Severity,
    /// What was found.
    pub message: String,
}

impl<D: BlockDevice> Vhd<D> {
    /// Check the disk (not its parents) and list what was found.
    pub fn check(&mut self) -> Result<Vec<Finding>> {
        let mut found = Vec::new();
        let mut say = |severity, message: String| found.push(Finding { severity, message });
        if self.recovered_footer {
            say(
                Severity::Error,
                "the footer at the end of the file is damaged; the copy at offset 0 was used \
                 (opening for writing and flushing rewrites it)"
                    .into(),
            );
        }
        if !self.footer.readers_agree() {
            let (chs, current) = (self.footer.chs_size(), self.footer.current_size);
            let creator = String::from_utf8_lossy(&self.footer.creator_app);
            let creator = creator.trim_end_matches('\0');
            say(
                Severity::Warning,
                if self.footer.sized_by_chs() {
                    format!(
                        "readers disagree on the size: creator '{creator}' is sized by its CHS \
                         geometry ({chs} bytes) here and in QEMU, by its current size \
                         ({current} bytes) in Hyper-V"
                    )
                } else {
                    format!(
                        "readers disagree on the size: {current} bytes (current size) here, in \
                         Hyper-V and QEMU 10, but {chs} bytes (CHS geometry) in QEMU before \
                         10.0, which does not trust creator '{creator}' (a copy made by \
                         this capvisor agrees)"
                    )
                },
            );
        }
        if self.footer.saved_state {
            say(
                Severity::Warning,
                "a virtual machine's saved state depends on this disk".into(),
            );
        }
        if self.sparse.is_some() {
            let mut copy = [0u8; FOOTER_SIZE];
            self.dev.read_at(0, &mut copy)?;
            match Footer::parse(&copy) {
                Err(e) => say(Severity::Error, format!("footer copy at offset 0: {e}")),
                Ok(f) if f != self.footer => say(
                    Severity::Warning,
                    "the footer copy at offset 0 differs from the footer".into(),
                ),
                Ok(_) => {}
            }
            let blocks = self.block_usage().map(|(n, _)| n).unwrap_or(0);
            let mut partial = 0u32;
            for block in 0..blocks {
                let block_size = self.sparse.as_ref().map(|s| s.block_size()).unwrap_or(0);
                let start = u64::from(block) * block_size;
                let len = (self.size - start).min(block_size);
                let runs = self.present_runs(block, len)?;
                let allocated = self
                    .sparse
                    .as_ref()
                    .and_then(|s| s.data_offset(block))
                    .is_some();
                if allocated && !(runs.len() == 1 && runs[0] == (0, len)) {
                    partial += 1;
                }
            }
            if partial > 0 && self.footer.disk_type == DiskType::Dynamic {
                say(
                    Severity::Note,
                    format!(
                        "{partial} allocated blocks have sectors not marked in use (read as zeros)"
                    ),
                );
            }
        }
        if self.footer.disk_type == DiskType::Differencing {
            let recorded = self.header().map(|h| h.parent_timestamp).unwrap_or(0);
            match self.parent() {
                None => say(Severity::Error, "the parent is not available".into()),
                Some(p) if p.footer().timestamp != recorded => say(
                    Severity::Note,
                    "the parent's timestamp differs from the one recorded at creation".into(),
                ),
                Some(_) => {}
            }
        }
        Ok(found)
    }
}
