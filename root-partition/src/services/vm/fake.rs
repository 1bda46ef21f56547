//! A deterministic stand-in for the machine, for host tests of the VM
//! manager and of whatever sits on it: partitions are table entries, a
//! guest boots, acknowledges shutdowns and stops as its knobs say, saves
//! write a small file into a [`MemStore`], and any operation can be made
//! to fail once.
//!
//! # Invariants
//! - Events come out of [`Hypervisor::poll`] in the order they were
//!   caused, never before the call that caused them returned.
//! - Every live partition is in [`FakeHypervisor::partitions`]; a handle
//!   is never reused.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::definition::VmDefinition;
use super::hypervisor::{HvError, HvEvent, Hypervisor};
use super::manager::VmId;
use super::store::{MemStore, Store};
use crate::config::ChildSpec;

/// An operation of the fake, to make it fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FakeOp {
    /// [`Hypervisor::start`].
    Start,
    /// [`Hypervisor::pause`].
    Pause,
    /// [`Hypervisor::resume`].
    Resume,
    /// [`Hypervisor::save`] refuses at once.
    Save,
    /// [`Hypervisor::save`] begins, then fails ([`HvEvent::SaveFailed`]).
    SaveLater,
    /// [`Hypervisor::restore`].
    Restore,
    /// [`Hypervisor::request_shutdown`].
    Shutdown,
    /// [`Hypervisor::turn_off`].
    TurnOff,
    /// [`Hypervisor::add_disk`].
    AddDisk,
    /// [`Hypervisor::remove_disk`].
    RemoveDisk,
}

/// A partition of the fake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakePartition {
    /// The VM it was built for.
    pub vm: VmId,
    /// Its specification.
    pub spec: ChildSpec,
    /// Whether its vCPUs are paused.
    pub paused: bool,
    /// Whether it was restored from a saved state (and from which file).
    pub restored_from: Option<String>,
    /// Its disks now: `(LUN, file name)`, by LUN (the boot disks of its
    /// specification, then hot adds and removes).
    pub disks: Vec<(u8, String)>,
    /// Its console's lines (`NAME: booted` once built; tests add more).
    pub console: Vec<String>,
}

/// The fake's handle on a partition.
#[derive(Debug, PartialEq, Eq)]
pub struct FakeHandle(pub u64);

/// The fake hypervisor.
pub struct FakeHypervisor {
    next: u64,
    /// Live partitions by handle number.
    pub partitions: BTreeMap<u64, FakePartition>,
    pending: VecDeque<(VmId, HvEvent)>,
    failures: BTreeMap<FakeOp, String>,
    /// Guests come up after a start or restore (else they stay Starting).
    pub guests_boot: bool,
    /// Guests acknowledge a shutdown request and stop.
    pub guests_shut_down: bool,
    /// Every call, in order (`start alpha`, `turn_off 3`, ...).
    pub log: Vec<String>,
    store: Option<MemStore>,
}

impl FakeHypervisor {
    /// A fake whose guests boot and shut down when asked; saves are
    /// written into `store` (restores read them back from it) if given.
    pub fn new(store: Option<MemStore>) -> Self {
        FakeHypervisor {
            next: 1,
            partitions: BTreeMap::new(),
            pending: VecDeque::new(),
            failures: BTreeMap::new(),
            guests_boot: true,
            guests_shut_down: true,
            log: Vec::new(),
            store,
        }
    }

    /// Makes the next `op` fail with `reason`.
    pub fn fail_next(&mut self, op: FakeOp, reason: &str) {
        self.failures.insert(op, reason.to_string());
    }

    /// Queues an event for `vm` (a heartbeat lost, a crash, a guest that
    /// stops by itself, a late or stale event).
    pub fn inject(&mut self, vm: VmId, event: HvEvent) {
        self.pending.push_back((vm, event));
    }

    /// The live partition built for `vm`.
    pub fn partition_of(&self, vm: VmId) -> Option<&FakePartition> {
        self.partitions.values().find(|p| p.vm == vm)
    }

    fn check(&mut self, op: FakeOp) -> Result<(), HvError> {
        match self.failures.remove(&op) {
            Some(reason) => Err(HvError(reason)),
            None => Ok(()),
        }
    }

    fn build(&mut self, vm: VmId, spec: &ChildSpec, restored_from: Option<String>) -> FakeHandle {
        let handle = self.next;
        self.next += 1;
        let disks = (0u8..)
            .zip(spec.disks.iter())
            .filter_map(|(lun, d)| Some((lun, d.as_ref()?.as_str().to_string())))
            .collect();
        self.partitions.insert(
            handle,
            FakePartition {
                vm,
                spec: *spec,
                paused: false,
                restored_from,
                disks,
                console: alloc::vec![format!("{}: booted", spec.name.as_str())],
            },
        );
        if self.guests_boot {
            self.pending.push_back((vm, HvEvent::Booted));
        }
        FakeHandle(handle)
    }

    fn live(&mut self, handle: &FakeHandle) -> Result<&mut FakePartition, HvError> {
        self.partitions
            .get_mut(&handle.0)
            .ok_or_else(|| HvError(format!("partition {} does not exist", handle.0)))
    }
}

impl Hypervisor for FakeHypervisor {
    type Handle = FakeHandle;

    fn start(
        &mut self,
        vm: VmId,
        spec: &ChildSpec,
        def: &VmDefinition,
    ) -> Result<FakeHandle, HvError> {
        self.log.push(format!("start {}", def.name));
        self.check(FakeOp::Start)?;
        Ok(self.build(vm, spec, None))
    }

    fn pause(&mut self, handle: &mut FakeHandle) -> Result<(), HvError> {
        self.log.push(format!("pause {}", handle.0));
        self.check(FakeOp::Pause)?;
        self.live(handle)?.paused = true;
        Ok(())
    }

    fn resume(&mut self, handle: &mut FakeHandle) -> Result<(), HvError> {
        self.log.push(format!("resume {}", handle.0));
        self.check(FakeOp::Resume)?;
        self.live(handle)?.paused = false;
        Ok(())
    }

    fn save(&mut self, handle: &mut FakeHandle, path: &str) -> Result<(), HvError> {
        self.log.push(format!("save {} {path}", handle.0));
        self.check(FakeOp::Save)?;
        let vm = self.live(handle)?.vm;
        if let Some(reason) = self.failures.remove(&FakeOp::SaveLater) {
            self.pending.push_back((vm, HvEvent::SaveFailed(reason)));
            return Ok(());
        }
        if let Some(store) = &mut self.store {
            let name = self.partitions[&handle.0].spec.name;
            store
                .write(path, format!("saved state of {}", name.as_str()).as_bytes())
                .map_err(|e| HvError(format!("{path}: {e}")))?;
        }
        self.partitions.remove(&handle.0);
        self.pending.push_back((vm, HvEvent::SaveCompleted));
        Ok(())
    }

    fn restore(
        &mut self,
        vm: VmId,
        spec: &ChildSpec,
        def: &VmDefinition,
        path: &str,
    ) -> Result<FakeHandle, HvError> {
        self.log.push(format!("restore {} {path}", def.name));
        self.check(FakeOp::Restore)?;
        if let Some(store) = &mut self.store {
            let data = store
                .read(path, 1 << 20)
                .map_err(|e| HvError(format!("{path}: {e}")))?;
            if data != format!("saved state of {}", def.name).as_bytes() {
                return Err(HvError(format!(
                    "{path}: not a saved state of {}",
                    def.name
                )));
            }
        }
        Ok(self.build(vm, spec, Some(path.to_string())))
    }

    fn request_shutdown(&mut self, handle: &mut FakeHandle) -> Result<(), HvError> {
        self.log.push(format!("shutdown {}", handle.0));
        self.check(FakeOp::Shutdown)?;
        let vm = self.live(handle)?.vm;
        if self.guests_shut_down {
            self.pending.push_back((vm, HvEvent::ShutdownAcknowledged));
            self.pending.push_back((vm, HvEvent::Stopped));
        }
        Ok(())
    }

    fn turn_off(&mut self, handle: FakeHandle) -> Result<(), HvError> {
        self.log.push(format!("turn_off {}", handle.0));
        // The partition is gone whatever the answer.
        let existed = self.partitions.remove(&handle.0).is_some();
        self.check(FakeOp::TurnOff)?;
        if !existed {
            return Err(HvError(format!("partition {} does not exist", handle.0)));
        }
        Ok(())
    }

    fn add_disk(&mut self, handle: &mut FakeHandle, lun: u8, path: &str) -> Result<(), HvError> {
        self.log.push(format!("add_disk {} {lun} {path}", handle.0));
        self.check(FakeOp::AddDisk)?;
        let file = path.trim_start_matches('/').to_string();
        let partition = self.live(handle)?;
        if partition.disks.iter().any(|(l, _)| *l == lun) {
            return Err(HvError(format!("LUN {lun} is in use")));
        }
        partition.disks.push((lun, file));
        partition.disks.sort();
        Ok(())
    }

    fn remove_disk(&mut self, handle: &mut FakeHandle, lun: u8) -> Result<(), HvError> {
        self.log.push(format!("remove_disk {} {lun}", handle.0));
        self.check(FakeOp::RemoveDisk)?;
        let partition = self.live(handle)?;
        let before = partition.disks.len();
        partition.disks.retain(|(l, _)| *l != lun);
        if partition.disks.len() == before {
            return Err(HvError(format!("no disk at LUN {lun}")));
        }
        Ok(())
    }

    fn console(&self, handle: &FakeHandle) -> Vec<String> {
        self.partitions
            .get(&handle.0)
            .map(|p| p.console.clone())
            .unwrap_or_default()
    }

    fn poll(&mut self, _now_ns: u64) -> Option<(VmId, HvEvent)> {
        self.pending.pop_front()
    }
}
