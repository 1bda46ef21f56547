//! Partitions: an isolated guest-physical address space (its SLAT), a
//! capability space, its vCPUs and the memory donated to it.
//!
//! # Invariants
//! A stopped partition's vCPUs never run again; a partition's SLAT maps
//! only memory objects it owns (or, for the root, its own RAM).

use alloc::vec::Vec;
use ipc::hypercall::{Name, Status, StopReason};

use super::ObjectId;
use crate::cap::CapSpace;
use crate::kernel::MAX_VCPUS;

/// Console bytes buffered per partition until a newline.
pub const CONSOLE_LINE: usize = 160;
/// Console lines a partition may print in a burst.
pub const CONSOLE_BURST: u32 = 32;
/// Timer ticks per console line refilled.
pub const CONSOLE_REFILL_TICKS: u64 = 2;

/// Kernel objects a child may own: its vCPUs (at most 4), the ports it
/// creates, and what it gives partitions it creates. Its creator pays
/// this much (plus the partition and its memory object) from its own quota.
pub const CHILD_QUOTA: u32 = 32;
/// Mapping records of a child's guest-physical space (the root maps its
/// memory, rings and buffers: a handful).
pub const CHILD_MAPPINGS: usize = 64;
/// Mapping records of the root's guest-physical space (its RAM ranges,
/// split by donations, and the children's pages in its shared window).
pub const ROOT_MAPPINGS: usize = 2048;

/// Whether a partition runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Its vCPUs may run.
    Running,
    /// Stopped for good, with the reason and its detail.
    Stopped(StopReason, u64),
    /// Being destroyed: waiting for its vCPUs to leave the processors.
    Dying,
}

/// A partition.
#[derive(Debug)]
pub struct Partition {
    /// Name, for the console and reports.
    pub name: Name,
    /// Its capability space.
    pub cspace: CapSpace,
    /// Host-physical address of its SLAT root.
    pub slat_root: u64,
    /// Address-space id its vCPUs run with.
    pub asid: u32,
    /// Host-physical addresses of its I/O and MSR permission maps.
    pub permission_maps: (u64, u64),
    /// Its vCPUs, in creation order (at most [`MAX_VCPUS`]).
    pub vcpus: heapless::Vec<ObjectId, MAX_VCPUS>,
    /// Memory objects donated to it.
    pub memory: Vec<ObjectId>,
    /// Run state.
    pub state: RunState,
    /// Dirty-page logging on.
    pub dirty_logging: bool,
    /// The partition that created it (None for the root).
    pub creator: Option<ObjectId>,
    /// The console line being assembled.
    pub console: [u8; CONSOLE_LINE],
    /// Bytes in `console`.
    pub console_len: usize,
    /// Console lines left in the current budget.
    pub console_tokens: u32,
    /// Tick at which the budget was last refilled.
    pub console_refilled: u64,
    /// Hypercalls made (statistics).
    pub hypercalls: u64,
    /// WBINVD and INVD executed, each a no-op (statistics; the first is reported).
    pub cache_flushes: u64,
    /// The highest priority any of its vCPUs may have, set by its creator.
    pub ceiling: u8,
    /// Kernel objects it may still own (ports, vCPUs, the partitions and
    /// memory objects it creates, and the quotas it hands them).
    pub quota: u32,
    /// Most mapping records of its guest-physical space.
    pub mapping_limit: usize,
}

impl Partition {
    /// A new running partition with an empty capability space, no quota,
    /// ceiling 0 and the child's mapping limit; `OutOfMemory` when the
    /// heap cannot hold its capability space.
    pub fn new(
        name: Name,
        slat_root: u64,
        asid: u32,
        permission_maps: (u64, u64),
        creator: Option<ObjectId>,
    ) -> Result<Self, Status> {
        Ok(Partition {
            name,
            cspace: CapSpace::try_new()?,
            slat_root,
            asid,
            permission_maps,
            vcpus: heapless::Vec::new(),
            memory: Vec::new(),
            state: RunState::Running,
            dirty_logging: false,
            creator,
            console: [0; CONSOLE_LINE],
            console_len: 0,
            console_tokens: CONSOLE_BURST,
            console_refilled: 0,
            hypercalls: 0,
            cache_flushes: 0,
            ceiling: 0,
            quota: 0,
            mapping_limit: CHILD_MAPPINGS,
        })
    }

    /// Takes one console line from the budget, refilling it from `now`
    /// (in timer ticks). False when the partition is over its budget.
    pub fn take_console_token(&mut self, now: u64) -> bool {
        let earned = now.saturating_sub(self.console_refilled) / CONSOLE_REFILL_TICKS;
        if earned > 0 {
            self.console_tokens =
                (self.console_tokens as u64 + earned).min(CONSOLE_BURST as u64) as u32;
            self.console_refilled += earned * CONSOLE_REFILL_TICKS;
        }
        if self.console_tokens == 0 {
            return false;
        }
        self.console_tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_budget_refills_with_time() {
        let mut p = Partition::new(Name::new("p"), 0, 1, (0, 0), None).unwrap();
        for _ in 0..CONSOLE_BURST {
            assert!(p.take_console_token(0));
        }
        assert!(!p.take_console_token(0));
        assert!(!p.take_console_token(1));
        assert!(p.take_console_token(2));
        assert!(!p.take_console_token(3));
        assert!(p.take_console_token(1000));
        assert_eq!(
            p.console_tokens,
            CONSOLE_BURST - 1,
            "refill caps at the burst"
        );
    }
}
