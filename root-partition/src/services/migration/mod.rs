//! Moving a running child: live migration on one node ([`live`]) and quick
//! migration, a save to a file on the data volume and a restore from it
//! ([`quick`]). Both drive the pre-copy engine (`crate::migrate`) with a
//! [`source::ChildSource`] and a [`destination::ChildDestination`], which
//! reach the child through the kernel's hypercalls ([`Kernel`]): the dirty
//! log, memory reads and writes through the scratch page, vCPU states,
//! pause and resume.
//!
//! The child's VMBus stays in the root and follows it: what the
//! migration needs of the buses (serve them, their shared pages, move a
//! child's bus to its new memory, save and restore a bus) is behind
//! [`BusHost`], which the binary implements with its bus module.
//!
//! # Invariants
//! - During a blackout the root serves no bus: nothing it does may write
//!   the child's memory between the final copy and the handover (or the
//!   save of the bus state).
//! - Any failure before the handover (live) or before the file is
//!   complete (save) leaves the source running.

use alloc::string::String;
use alloc::vec::Vec;

use ipc::hypercall::{Name, SlotHandle};

use crate::hv::Kernel;
use crate::migrate::{Clock, Stats};
use crate::partition::{Failure, Root};
use crate::services::vmbus::Grant;

pub mod destination;
pub mod live;
pub mod quick;
pub mod source;

pub use destination::{ChildDestination, set_vcpu_state};
pub use live::{MigrateError, Target, live};
pub use source::ChildSource;

/// Where a child's bus moves at a live migration's handover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moved {
    /// The new partition (CONTROL).
    pub partition: SlotHandle,
    /// Its memory object (MAP, READ, WRITE).
    pub memory: SlotHandle,
    /// Its vCPU 0.
    pub vcpu0: SlotHandle,
    /// Host-physical base of its memory.
    pub base: u64,
}

/// A bus refused to move ([`BusHost::move_child`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused;

/// A restored child's bus, to rebuild over its restored rings.
pub struct RestoredBus<'a> {
    /// The child's name.
    pub name: Name,
    /// What the root holds to act for the new partition's bus (no ports
    /// and no pages mapped yet).
    pub grant: Grant,
    /// Per channel with both ports saved: (channel, the child's slot of
    /// the port it signals, its slot of the port it is signalled on).
    pub ports: Vec<(usize, SlotHandle, SlotHandle)>,
    /// The root's side of the bus as saved (`vsp::bus_state`).
    pub saved: &'a [u8],
    /// Its disks: (LUN, file path).
    pub luns: &'a [(u8, String)],
}

/// What a migration needs of the root's VMBus and of the child's ports
/// (the binary's bus module; a fake in host tests).
pub trait BusHost {
    /// Serves every bus once (between copy steps, while the child runs).
    fn service_all(&self);
    /// Whether child `index`'s bus can follow it to new memory (the root
    /// maps shared pages through a window).
    fn can_move(&self, index: usize) -> bool;
    /// The child's pages the root has mapped now: (GPA, pages).
    fn shared_pages(&self, index: usize) -> Vec<(u64, u64)>;
    /// Hands child `index`'s bus over to new memory and vCPU 0; on failure
    /// nothing changed.
    fn move_child(&self, index: usize, to: Moved) -> Result<(), Refused>;
    /// Announces the child's network address again (after a move).
    fn announce(&self, index: usize);
    /// The root's side of child `index`'s bus as saved-state bytes in
    /// `out` (length) and its disks (LUN, file path).
    fn save_bus(&self, index: usize, out: &mut [u8]) -> Option<(usize, Vec<(u8, String)>)>;
    /// The root's ports of child `index`'s channels: (channel, the port
    /// the child signals, the port the root signals), raw handles.
    fn channel_ports(&self, index: usize) -> Vec<(usize, u64, u64)>;
    /// The root's raw handle on child `index`'s `to_root` port (`u64::MAX`
    /// if none).
    fn to_root_port(&self, index: usize) -> u64;
    /// Makes child slot `index`'s `to_root` port and gives `partition` a
    /// copy in slot `at`; returns the child's handle.
    fn make_to_root(
        &self,
        root: &Root,
        index: usize,
        partition: SlotHandle,
        at: Option<SlotHandle>,
    ) -> Result<SlotHandle, Failure>;
    /// Rebuilds a restored child's bus.
    fn restore_bus(&self, bus: RestoredBus<'_>) -> Result<(), String>;
    /// Drops child `index`'s bus (a restore that failed).
    fn forget(&self, index: usize);
}

/// The engine's clock: the kernel's time-stamp counter.
pub struct Tsc<'a, K: Kernel> {
    kernel: &'a K,
}

impl<'a, K: Kernel> Tsc<'a, K> {
    /// The clock of `kernel`.
    pub fn new(kernel: &'a K) -> Self {
        Tsc { kernel }
    }
}

impl<K: Kernel> Clock for Tsc<'_, K> {
    fn now_ns(&mut self) -> u64 {
        self.kernel.now_ns()
    }
    fn ticks(&mut self) -> u64 {
        self.kernel.ticks()
    }
}

/// Bytes of JSON per console line (the JSON is ASCII).
const JSON_PIECE: usize = 100;

/// Prints the statistics as the console shows them, and as one JSON
/// document in numbered pieces (`migration json K/N <piece>`) that a
/// reader joins in order (console lines are short).
pub fn report<K: Kernel>(k: &K, name: &str, stats: &Stats) {
    for line in alloc::format!("{stats}").lines() {
        crate::say!(k, "root: {name}: {line}");
    }
    let mut json = String::new();
    let _ = stats.write_json(&mut json);
    let pieces: Vec<&str> = json
        .as_bytes()
        .chunks(JSON_PIECE)
        .filter_map(|c| core::str::from_utf8(c).ok())
        .collect();
    for (i, piece) in pieces.iter().enumerate() {
        crate::say!(
            k,
            "root: {name}: migration json {}/{} {piece}",
            i + 1,
            pieces.len()
        );
    }
}

#[cfg(test)]
mod tests;
