//! What the VM manager asks of the machine: the [`Hypervisor`] trait. The
//! real implementation (capabilities, the partition-construction path,
//! VMBus integration services, the quick-migration engine) lives in the
//! bare-metal code; [`super::fake::FakeHypervisor`] stands in for it in
//! host tests.
//!
//! # Invariants
//! - An operation that returns `Err` changed nothing: the partition is
//!   in the state it was in before the call (a failed `start` or
//!   `restore` left no partition behind).
//! - Long operations (boot, save, a guest's shutdown) only begin in the
//!   call; their end comes back from [`Hypervisor::poll`] as a
//!   [`HvEvent`] tagged with the [`VmId`] the partition was created for.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::definition::VmDefinition;
use super::manager::VmId;
use crate::config::ChildSpec;

/// Why the hypervisor refused or failed an operation (its words, for the
/// administrator).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HvError(pub String);

impl fmt::Display for HvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl core::error::Error for HvError {}

/// Something that happened to a partition, reported by [`Hypervisor::poll`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HvEvent {
    /// The guest is up after a start or a restore (its VMBus connected).
    Booted,
    /// The guest acknowledged a shutdown request (the shutdown
    /// integration service answered); it is flushing and ending.
    ShutdownAcknowledged,
    /// The guest ended (it exited, or shut down as asked); its partition
    /// still exists until [`Hypervisor::turn_off`].
    Stopped,
    /// The guest's heartbeat stopped answering.
    HeartbeatMissed,
    /// The guest's heartbeat answers again.
    HeartbeatRestored,
    /// A save finished: the state is in the file and the partition is
    /// gone (its handle is dead).
    SaveCompleted,
    /// A save failed; the partition runs on as before.
    SaveFailed(String),
    /// The partition faulted or was destroyed behind the manager's back.
    Crashed(String),
}

/// The machine, as the VM manager drives it.
pub trait Hypervisor {
    /// What identifies a live partition (capability slots, a VMBus index):
    /// owned by the manager's table entry while the partition exists.
    type Handle;

    /// Builds a partition for `spec` and starts it; [`HvEvent::Booted`]
    /// follows once the guest is up.
    fn start(
        &mut self,
        vm: VmId,
        spec: &ChildSpec,
        def: &VmDefinition,
    ) -> Result<Self::Handle, HvError>;

    /// Stops every vCPU of the partition where it is.
    fn pause(&mut self, handle: &mut Self::Handle) -> Result<(), HvError>;

    /// Lets a paused partition run again.
    fn resume(&mut self, handle: &mut Self::Handle) -> Result<(), HvError>;

    /// Begins saving the partition to `path` on the data volume; ends with
    /// [`HvEvent::SaveCompleted`] (the partition is destroyed) or
    /// [`HvEvent::SaveFailed`] (it runs on).
    fn save(&mut self, handle: &mut Self::Handle, path: &str) -> Result<(), HvError>;

    /// Builds a partition from the saved state at `path` (with `spec`'s
    /// priority and affinity) and starts it; [`HvEvent::Booted`] follows.
    fn restore(
        &mut self,
        vm: VmId,
        spec: &ChildSpec,
        def: &VmDefinition,
        path: &str,
    ) -> Result<Self::Handle, HvError>;

    /// Asks the guest to shut down (the shutdown integration service);
    /// [`HvEvent::ShutdownAcknowledged`] and [`HvEvent::Stopped`] follow if
    /// it complies.
    fn request_shutdown(&mut self, handle: &mut Self::Handle) -> Result<(), HvError>;

    /// Destroys the partition at once; its memory returns to the root. The
    /// handle is consumed whatever the outcome.
    fn turn_off(&mut self, handle: Self::Handle) -> Result<(), HvError>;

    /// Attaches disk file `path` (`/FILE` on the data volume) as LUN `lun`
    /// of the partition's storage controller while it runs or is paused
    /// (the guest is told a LUN arrived).
    fn add_disk(&mut self, handle: &mut Self::Handle, lun: u8, path: &str) -> Result<(), HvError>;

    /// Detaches LUN `lun` of the partition's storage controller (the
    /// guest's requests still queued on it complete as removed).
    fn remove_disk(&mut self, handle: &mut Self::Handle, lun: u8) -> Result<(), HvError>;

    /// The partition's last console lines, oldest first (empty when the
    /// machine keeps none).
    fn console(&self, handle: &Self::Handle) -> Vec<String>;

    /// The next event of any partition, if one is pending.
    fn poll(&mut self, now_ns: u64) -> Option<(VmId, HvEvent)>;

    /// When [`Hypervisor::poll`] next has something to look at without an
    /// event (a periodic check of the partitions), if ever.
    fn next_deadline(&self) -> Option<u64> {
        None
    }
}
