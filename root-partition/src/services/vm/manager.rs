//! The VM manager: the node's table of VMs (generation-checked [`VmId`] →
//! definition, state, hypervisor handle), the commands an administrator
//! gives (define, start, pause, resume, save, restore, stop, turn off,
//! delete) and the state machine that [`VmManager::poll`] drives with the
//! hypervisor's events and the time. Everything that happens is an
//! [`VmEvent`] with a sequence number (the management API's event stream).
//!
//! States and transitions (`docs/vm-definition.md`, "VM states"):
//!
//! | from | command or event | to |
//! |---|---|---|
//! | Off, Failed | start | Starting |
//! | Starting | guest booted | Running |
//! | Starting | no boot within the boot time limit | Failed (turned off) |
//! | Running | pause | Paused |
//! | Paused | resume | Running |
//! | Running, Paused | save | Saving |
//! | Saving | save completed | Saved |
//! | Saving | save failed | Running or Paused, as before |
//! | Saved | restore | Starting (the saved-state file is deleted) |
//! | Running | stop | Stopping (the guest is asked to shut down) |
//! | Stopping | guest stopped | Off |
//! | Stopping | stop time limit passed | Off (turned off) |
//! | Starting, Running, Paused, Stopping | guest stopped by itself | Off |
//! | Starting, Running, Paused, Stopping, Failed | turn off | Off |
//! | Saved | turn off | Off (the saved state is discarded) |
//! | any with a partition | partition crashed | Failed |
//! | Off, Saved, Failed | delete | (gone: files removed, id stale) |
//! | Off, Running, Paused | add or remove a disk | (same; hot on a partition) |
//!
//! # Invariants
//! - A VM holds a hypervisor handle exactly in Starting, Running, Paused,
//!   Saving and Stopping, and in Failed when its partition crashed and was
//!   not turned off yet.
//! - A command refused ([`VmError`]) changed nothing; a hypervisor
//!   failure during a command is reported both as the command's error and,
//!   when the state changed because of it, as an event.
//! - A deleted VM's [`VmId`] never names anything again: its slot's
//!   generation moves on.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use super::definition::{DefinitionError, DiskSlot, VmDefinition, encode, valid_disk_path};
use super::hypervisor::{HvError, HvEvent, Hypervisor};
use super::store::{self, LoadReport, Store, StoreError, remove_if_present};
use crate::config::MAX_BOOT_DISKS;

/// Hypervisor events handled per [`VmManager::poll`] (the rest wait for
/// the next round, so one flood cannot starve the node's loop).
pub const EVENTS_PER_POLL: usize = 256;
/// Events kept for [`VmManager::take_events`]; past this the oldest are
/// dropped (and counted): a consumer sees the gap in the sequence numbers.
pub const MAX_PENDING_EVENTS: usize = 4096;

/// A VM in the table: slot index and the slot's generation when the VM
/// was defined. A deleted VM's id is refused ([`VmError::NoSuchVm`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmId {
    index: u32,
    generation: u32,
}

impl VmId {
    /// The slot.
    pub fn index(self) -> u32 {
        self.index
    }

    /// The slot's generation.
    pub fn generation(self) -> u32 {
        self.generation
    }

    /// As one number (generation in the high half), for wires and logs.
    pub fn raw(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// From [`VmId::raw`] (checked only when used).
    pub fn from_raw(raw: u64) -> VmId {
        VmId {
            index: raw as u32,
            generation: (raw >> 32) as u32,
        }
    }
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.index, self.generation)
    }
}

/// A VM's state, as Hyper-V Manager shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmState {
    /// No partition.
    Off,
    /// The partition is built and started; the guest is not up yet.
    Starting,
    /// The guest runs.
    Running,
    /// Its vCPUs are stopped; its memory stays.
    Paused,
    /// Its state is being written to its saved-state file.
    Saving,
    /// No partition; its state is in its saved-state file.
    Saved,
    /// The guest was asked to shut down and has a time limit to do so.
    Stopping,
    /// Something went wrong; the reason says what.
    Failed {
        /// What went wrong.
        reason: String,
    },
}

impl VmState {
    /// The state's name (`Failed` without its reason).
    pub fn name(&self) -> &'static str {
        match self {
            VmState::Off => "Off",
            VmState::Starting => "Starting",
            VmState::Running => "Running",
            VmState::Paused => "Paused",
            VmState::Saving => "Saving",
            VmState::Saved => "Saved",
            VmState::Stopping => "Stopping",
            VmState::Failed { .. } => "Failed",
        }
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmState::Failed { reason } => write!(f, "Failed ({reason})"),
            other => f.write_str(other.name()),
        }
    }
}

/// A command of the manager (named in errors and events).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// `define`.
    Define,
    /// `start`.
    Start,
    /// `pause`.
    Pause,
    /// `resume`.
    Resume,
    /// `save`.
    Save,
    /// `restore`.
    Restore,
    /// `stop` (graceful).
    Stop,
    /// `turn off`.
    TurnOff,
    /// `delete`.
    Delete,
    /// Adding a disk (hot on a running VM).
    AddDisk,
    /// Removing a disk (hot on a running VM).
    RemoveDisk,
}

impl Operation {
    /// Its name, as `capctl vm` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Define => "define",
            Operation::Start => "start",
            Operation::Pause => "pause",
            Operation::Resume => "resume",
            Operation::Save => "save",
            Operation::Restore => "restore",
            Operation::Stop => "stop",
            Operation::TurnOff => "turn off",
            Operation::Delete => "delete",
            Operation::AddDisk => "add a disk to",
            Operation::RemoveDisk => "remove a disk from",
        }
    }
}

/// Why a command was refused or failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmError {
    /// No VM with that id (never defined, or deleted: a stale id).
    NoSuchVm,
    /// The command is not allowed in the VM's current state (HTTP 409).
    InvalidState {
        /// What was asked.
        operation: Operation,
        /// The VM's name.
        vm: String,
        /// Its state.
        state: VmState,
    },
    /// The definition is invalid (HTTP 400).
    Definition(DefinitionError),
    /// Another VM already has this name or id (HTTP 409).
    AlreadyExists {
        /// `name` or `id`.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// The request clashes with what the VM already has (a LUN in use, a
    /// disk attached already or to another VM): HTTP 409.
    Conflict(String),
    /// The VM has no disk at this LUN (HTTP 404).
    NoSuchDisk {
        /// The VM's name.
        vm: String,
        /// The LUN asked for.
        lun: u8,
    },
    /// The data volume failed.
    Store(StoreError),
    /// The hypervisor failed.
    Hypervisor(HvError),
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmError::NoSuchVm => write!(f, "no such VM"),
            VmError::InvalidState {
                operation,
                vm,
                state,
            } => write!(
                f,
                "cannot {} VM {vm}: it is {}",
                operation.name(),
                state.name()
            ),
            VmError::Definition(e) => write!(f, "invalid definition: {e}"),
            VmError::AlreadyExists { field, value } => {
                write!(f, "a VM with {field} {value} already exists")
            }
            VmError::Conflict(why) => f.write_str(why),
            VmError::NoSuchDisk { vm, lun } => write!(f, "VM {vm} has no disk at LUN {lun}"),
            VmError::Store(e) => write!(f, "data volume: {e}"),
            VmError::Hypervisor(e) => write!(f, "hypervisor: {e}"),
        }
    }
}

impl core::error::Error for VmError {}

impl From<StoreError> for VmError {
    fn from(e: StoreError) -> Self {
        VmError::Store(e)
    }
}

impl From<HvError> for VmError {
    fn from(e: HvError) -> Self {
        VmError::Hypervisor(e)
    }
}

/// What happened to a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmEventKind {
    /// A VM was defined (its file written).
    Defined,
    /// Its state changed.
    StateChanged {
        /// Before.
        from: VmState,
        /// After.
        to: VmState,
    },
    /// The guest acknowledged a shutdown request.
    ShutdownAcknowledged,
    /// The guest did not stop within the time limit; it was turned off.
    StopTimedOut,
    /// The guest's heartbeat stopped answering.
    HeartbeatMissed,
    /// The guest's heartbeat answers again.
    HeartbeatRestored,
    /// An operation failed (the VM's state says where that left it).
    OperationFailed {
        /// What failed.
        operation: Operation,
        /// Why.
        reason: String,
    },
    /// The VM was deleted; its id is stale from now on.
    Deleted,
}

/// One event, numbered in order from 1 (a client resumes from a number).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmEvent {
    /// Sequence number.
    pub seq: u64,
    /// The VM.
    pub vm: VmId,
    /// Its name.
    pub name: String,
    /// What happened.
    pub kind: VmEventKind,
}

/// The manager's time limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ManagerConfig {
    /// How long a guest has to shut down after `stop` before it is turned off.
    pub stop_timeout_ns: u64,
    /// How long a started or restored guest has to come up.
    pub boot_timeout_ns: u64,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            stop_timeout_ns: 30_000_000_000,
            boot_timeout_ns: 60_000_000_000,
        }
    }
}

/// One VM of the table.
struct Vm<Hd> {
    def: VmDefinition,
    state: VmState,
    handle: Option<Hd>,
    /// When the current Starting or Stopping runs out of time.
    deadline: Option<u64>,
    /// The state a save began in (Running or Paused), to go back to if it fails.
    before_save: Option<VmState>,
}

struct Slot<Hd> {
    generation: u32,
    vm: Option<Vm<Hd>>,
}

/// A read-only view of one VM.
#[derive(Clone, Copy, Debug)]
pub struct VmInfo<'a> {
    /// Its id.
    pub id: VmId,
    /// Its definition.
    pub definition: &'a VmDefinition,
    /// Its state.
    pub state: &'a VmState,
    /// Whether it has a partition now.
    pub has_partition: bool,
}

/// The VM manager over hypervisor `H` and file store `S`.
pub struct VmManager<H: Hypervisor, S: Store> {
    hv: H,
    store: S,
    config: ManagerConfig,
    slots: Vec<Slot<H::Handle>>,
    events: VecDeque<VmEvent>,
    next_seq: u64,
    dropped_events: u64,
}

impl<H: Hypervisor, S: Store> VmManager<H, S> {
    /// An empty manager (nothing loaded).
    pub fn new(hv: H, store: S, config: ManagerConfig) -> Self {
        VmManager {
            hv,
            store,
            config,
            slots: Vec::new(),
            events: VecDeque::new(),
            next_seq: 1,
            dropped_events: 0,
        }
    }

    /// The node boots: every definition is loaded from the store (a VM
    /// with a saved-state file is Saved, the others Off), then every
    /// autostart VM is restored if Saved and started if Off — Hyper-V's
    /// automatic start action. Damaged files are in the report, skipped;
    /// autostart failures are events. Fails only if the folder cannot be
    /// listed.
    pub fn boot(
        hv: H,
        mut store: S,
        config: ManagerConfig,
        now_ns: u64,
    ) -> Result<(Self, LoadReport), StoreError> {
        let report = store::load_all(&mut store)?;
        let mut manager = VmManager::new(hv, store, config);
        let mut autostart = Vec::new();
        for (def, saved) in &report.loaded {
            let state = if *saved { VmState::Saved } else { VmState::Off };
            let id = manager.insert(def.clone(), state);
            if def.autostart {
                autostart.push((id, *saved));
            }
        }
        for (id, saved) in autostart {
            let result = if saved {
                manager.restore(id, now_ns)
            } else {
                manager.start(id, now_ns)
            };
            // Failures are already events (and a failed start is Failed).
            let _ = result;
        }
        Ok((manager, report))
    }

    fn insert(&mut self, def: VmDefinition, state: VmState) -> VmId {
        let vm = Vm {
            def,
            state,
            handle: None,
            deadline: None,
            before_save: None,
        };
        if let Some(index) = self.slots.iter().position(|s| s.vm.is_none()) {
            let slot = &mut self.slots[index];
            slot.vm = Some(vm);
            return VmId {
                index: index as u32,
                generation: slot.generation,
            };
        }
        self.slots.push(Slot {
            generation: 0,
            vm: Some(vm),
        });
        VmId {
            index: (self.slots.len() - 1) as u32,
            generation: 0,
        }
    }

    fn vm(&self, id: VmId) -> Result<&Vm<H::Handle>, VmError> {
        self.slots
            .get(id.index as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.vm.as_ref())
            .ok_or(VmError::NoSuchVm)
    }

    fn vm_mut(&mut self, id: VmId) -> Result<&mut Vm<H::Handle>, VmError> {
        self.slots
            .get_mut(id.index as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.vm.as_mut())
            .ok_or(VmError::NoSuchVm)
    }

    fn emit(&mut self, vm: VmId, kind: VmEventKind) {
        let name = self.vm(vm).map(|v| v.def.name.clone()).unwrap_or_default();
        self.emit_named(vm, name, kind);
    }

    fn emit_named(&mut self, vm: VmId, name: String, kind: VmEventKind) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.events.pop_front();
            self.dropped_events += 1;
        }
        self.events.push_back(VmEvent {
            seq,
            vm,
            name,
            kind,
        });
    }

    /// Moves `id` to `to` and records the change.
    fn set_state(&mut self, id: VmId, to: VmState) {
        let Ok(vm) = self.vm_mut(id) else { return };
        let from = core::mem::replace(&mut vm.state, to.clone());
        if from != to {
            self.emit(id, VmEventKind::StateChanged { from, to });
        }
    }

    /// Refuses `operation` unless the VM is in one of `allowed`.
    fn require(
        &self,
        id: VmId,
        operation: Operation,
        allowed: &[&str],
    ) -> Result<&Vm<H::Handle>, VmError> {
        let vm = self.vm(id)?;
        if allowed.contains(&vm.state.name()) {
            Ok(vm)
        } else {
            Err(VmError::InvalidState {
                operation,
                vm: vm.def.name.clone(),
                state: vm.state.clone(),
            })
        }
    }

    fn failed(&mut self, id: VmId, operation: Operation, reason: String) {
        self.emit(
            id,
            VmEventKind::OperationFailed {
                operation,
                reason: reason.clone(),
            },
        );
    }

    /// Destroys the VM's partition, if it has one (a failure is an event;
    /// the handle is gone either way).
    fn destroy(&mut self, id: VmId) -> Result<(), HvError> {
        let handle = self.vm_mut(id).ok().and_then(|vm| vm.handle.take());
        match handle {
            Some(handle) => self.hv.turn_off(handle),
            None => Ok(()),
        }
    }

    // ----- queries -----

    /// The VM called `name` (compared without regard to case).
    pub fn find(&self, name: &str) -> Option<VmId> {
        self.iter()
            .find(|info| info.definition.name.eq_ignore_ascii_case(name))
            .map(|info| info.id)
    }

    /// One VM.
    pub fn info(&self, id: VmId) -> Result<VmInfo<'_>, VmError> {
        let vm = self.vm(id)?;
        Ok(VmInfo {
            id,
            definition: &vm.def,
            state: &vm.state,
            has_partition: vm.handle.is_some(),
        })
    }

    /// A VM's state.
    pub fn state(&self, id: VmId) -> Result<&VmState, VmError> {
        Ok(&self.vm(id)?.state)
    }

    /// Every VM, by slot.
    pub fn iter(&self) -> impl Iterator<Item = VmInfo<'_>> + '_ {
        self.slots.iter().enumerate().filter_map(|(index, slot)| {
            slot.vm.as_ref().map(|vm| VmInfo {
                id: VmId {
                    index: index as u32,
                    generation: slot.generation,
                },
                definition: &vm.def,
                state: &vm.state,
                has_partition: vm.handle.is_some(),
            })
        })
    }

    /// The earliest time limit running (for the node loop's sleep).
    pub fn next_deadline(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter_map(|s| s.vm.as_ref()?.deadline)
            .min()
    }

    /// The events since the last call (or the last [`VmManager::poll`]).
    pub fn take_events(&mut self) -> Vec<VmEvent> {
        self.events.drain(..).collect()
    }

    /// Events dropped because nobody took them ([`MAX_PENDING_EVENTS`]).
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// The hypervisor (for tests and the node's wiring).
    pub fn hypervisor(&mut self) -> &mut H {
        &mut self.hv
    }

    /// The file store.
    pub fn store(&mut self) -> &mut S {
        &mut self.store
    }

    // ----- commands -----

    /// Defines a new VM: checks the definition, refuses a name or id in
    /// use, writes its file (a leftover saved state of that name is
    /// removed first) and adds it, Off.
    pub fn define(&mut self, def: VmDefinition) -> Result<VmId, VmError> {
        let def = def.validate().map_err(VmError::Definition)?;
        if let Some(other) = self.find(&def.name) {
            let name = self.vm(other)?.def.name.clone();
            return Err(VmError::AlreadyExists {
                field: "name",
                value: name,
            });
        }
        if self.iter().any(|info| info.definition.id == def.id) {
            return Err(VmError::AlreadyExists {
                field: "id",
                value: def.id.to_string(),
            });
        }
        remove_if_present(&mut self.store, &def.saved_state_path())?;
        store::replace(&mut self.store, &def.path(), &encode(&def))?;
        let id = self.insert(def, VmState::Off);
        self.emit(id, VmEventKind::Defined);
        Ok(id)
    }

    /// Starts an Off (or Failed) VM: Starting, then Running when the guest
    /// is up. A hypervisor refusal leaves it Failed with the reason.
    pub fn start(&mut self, id: VmId, now_ns: u64) -> Result<(), VmError> {
        self.require(id, Operation::Start, &["Off", "Failed"])?;
        // A crashed partition left behind goes first.
        self.destroy(id)?;
        let vm = self.vm(id)?;
        let (spec, def) = (vm.def.child_spec(), vm.def.clone());
        match self.hv.start(id, &spec, &def) {
            Ok(handle) => {
                let deadline = now_ns.saturating_add(self.config.boot_timeout_ns);
                let vm = self.vm_mut(id)?;
                vm.handle = Some(handle);
                vm.deadline = Some(deadline);
                self.set_state(id, VmState::Starting);
                Ok(())
            }
            Err(e) => {
                self.failed(id, Operation::Start, e.0.clone());
                self.set_state(
                    id,
                    VmState::Failed {
                        reason: format!("start failed: {e}"),
                    },
                );
                Err(VmError::Hypervisor(e))
            }
        }
    }

    fn with_handle(
        &mut self,
        id: VmId,
        op: impl FnOnce(&mut H, &mut H::Handle) -> Result<(), HvError>,
    ) -> Result<(), VmError> {
        let slot = self
            .slots
            .get_mut(id.index as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.vm.as_mut())
            .ok_or(VmError::NoSuchVm)?;
        let handle = slot
            .handle
            .as_mut()
            .ok_or_else(|| VmError::Hypervisor(HvError("no partition".into())))?;
        op(&mut self.hv, handle).map_err(VmError::Hypervisor)
    }

    /// Pauses a Running VM.
    pub fn pause(&mut self, id: VmId) -> Result<(), VmError> {
        self.require(id, Operation::Pause, &["Running"])?;
        self.with_handle(id, |hv, h| hv.pause(h))?;
        self.set_state(id, VmState::Paused);
        Ok(())
    }

    /// Resumes a Paused VM.
    pub fn resume(&mut self, id: VmId) -> Result<(), VmError> {
        self.require(id, Operation::Resume, &["Paused"])?;
        self.with_handle(id, |hv, h| hv.resume(h))?;
        self.set_state(id, VmState::Running);
        Ok(())
    }

    /// Saves a Running or Paused VM to its saved-state file
    /// (`/vms/NAME.vmrs`): Saving, then Saved when the hypervisor is done
    /// (or back as it was if the save fails).
    pub fn save(&mut self, id: VmId) -> Result<(), VmError> {
        let vm = self.require(id, Operation::Save, &["Running", "Paused"])?;
        let (path, before) = (vm.def.saved_state_path(), vm.state.clone());
        self.with_handle(id, |hv, h| hv.save(h, &path))?;
        self.vm_mut(id)?.before_save = Some(before);
        self.set_state(id, VmState::Saving);
        Ok(())
    }

    /// Restores a Saved VM from its saved-state file: Starting, then
    /// Running when the guest is up. The file is deleted once the
    /// partition is rebuilt (the state lives in the partition from then
    /// on). A hypervisor refusal leaves it Saved.
    pub fn restore(&mut self, id: VmId, now_ns: u64) -> Result<(), VmError> {
        let vm = self.require(id, Operation::Restore, &["Saved"])?;
        let (spec, def) = (vm.def.child_spec(), vm.def.clone());
        let path = def.saved_state_path();
        match self.hv.restore(id, &spec, &def, &path) {
            Ok(handle) => {
                let deadline = now_ns.saturating_add(self.config.boot_timeout_ns);
                let vm = self.vm_mut(id)?;
                vm.handle = Some(handle);
                vm.deadline = Some(deadline);
                self.set_state(id, VmState::Starting);
                if let Err(e) = remove_if_present(&mut self.store, &path) {
                    self.failed(
                        id,
                        Operation::Restore,
                        format!("cannot delete the saved state {path}: {e}"),
                    );
                }
                Ok(())
            }
            Err(e) => {
                self.failed(id, Operation::Restore, e.0.clone());
                Err(VmError::Hypervisor(e))
            }
        }
    }

    /// Stops a Running VM gracefully: the guest is asked to shut down
    /// (Stopping); Off when it has stopped, or when the stop time limit
    /// runs out (then it is turned off). A guest that cannot be asked (no
    /// shutdown service) is turned off at once.
    pub fn stop(&mut self, id: VmId, now_ns: u64) -> Result<(), VmError> {
        self.require(id, Operation::Stop, &["Running"])?;
        let asked = self.with_handle(id, |hv, h| hv.request_shutdown(h));
        self.set_state(id, VmState::Stopping);
        match asked {
            Ok(()) => {
                self.vm_mut(id)?.deadline =
                    Some(now_ns.saturating_add(self.config.stop_timeout_ns));
                Ok(())
            }
            Err(e) => {
                self.failed(id, Operation::Stop, format!("{e}; turning it off"));
                self.power_off(id);
                Ok(())
            }
        }
    }

    /// Destroys the partition and records the outcome: Off, or Failed if
    /// the hypervisor could not destroy it.
    fn power_off(&mut self, id: VmId) {
        if let Ok(vm) = self.vm_mut(id) {
            vm.deadline = None;
            vm.before_save = None;
        }
        match self.destroy(id) {
            Ok(()) => self.set_state(id, VmState::Off),
            Err(e) => self.set_state(
                id,
                VmState::Failed {
                    reason: format!("turn off failed: {e}"),
                },
            ),
        }
    }

    /// Turns a VM off at once (its partition destroyed, the guest not
    /// asked). A Saved VM's saved state is discarded.
    pub fn turn_off(&mut self, id: VmId) -> Result<(), VmError> {
        let vm = self.require(
            id,
            Operation::TurnOff,
            &[
                "Starting", "Running", "Paused", "Stopping", "Failed", "Saved",
            ],
        )?;
        if vm.state == VmState::Saved {
            let path = vm.def.saved_state_path();
            remove_if_present(&mut self.store, &path)?;
            self.set_state(id, VmState::Off);
            return Ok(());
        }
        self.power_off(id);
        match self.state(id)? {
            VmState::Failed { reason } => Err(VmError::Hypervisor(HvError(reason.clone()))),
            _ => Ok(()),
        }
    }

    /// Deletes an Off, Saved or Failed VM: its saved state and its
    /// definition file are removed (in that order) and its id goes stale.
    pub fn delete(&mut self, id: VmId) -> Result<(), VmError> {
        let vm = self.require(id, Operation::Delete, &["Off", "Saved", "Failed"])?;
        let (name, path, saved) = (
            vm.def.name.clone(),
            vm.def.path(),
            vm.def.saved_state_path(),
        );
        remove_if_present(&mut self.store, &saved)?;
        remove_if_present(&mut self.store, &path)?;
        self.store.flush()?;
        // A crashed partition left behind goes too (after the files: a
        // failure here is only an event).
        if let Err(e) = self.destroy(id) {
            self.failed(id, Operation::Delete, format!("turn off failed: {e}"));
        }
        let slot = &mut self.slots[id.index as usize];
        slot.vm = None;
        slot.generation = slot.generation.wrapping_add(1);
        self.emit_named(id, name, VmEventKind::Deleted);
        Ok(())
    }

    /// The VM's last console lines, oldest first (none without a partition).
    pub fn console(&self, id: VmId) -> Result<Vec<String>, VmError> {
        let vm = self.vm(id)?;
        Ok(vm
            .handle
            .as_ref()
            .map(|h| self.hv.console(h))
            .unwrap_or_default())
    }

    /// Adds `disk` to an Off, Running or Paused VM: on a partition through
    /// the hypervisor first (hot add), then the definition is changed and
    /// written ([`store::replace`]). Refused: a LUN out of range or in use,
    /// a path that is not `/FILE`, a file the volume does not have, a file
    /// this VM or another one has already ([`VmError::Conflict`]).
    pub fn add_disk(&mut self, id: VmId, disk: DiskSlot) -> Result<(), VmError> {
        let vm = self.require(id, Operation::AddDisk, &["Off", "Running", "Paused"])?;
        let name = vm.def.name.clone();
        if usize::from(disk.lun) >= MAX_BOOT_DISKS {
            return Err(VmError::Definition(DefinitionError {
                field: "lun".into(),
                reason: format!("{} is out of range (0 to {})", disk.lun, MAX_BOOT_DISKS - 1),
            }));
        }
        if !valid_disk_path(&disk.path) {
            return Err(VmError::Definition(DefinitionError {
                field: "path".into(),
                reason: format!(
                    "{:?} must be /FILE: a file in the volume's root folder, 1 to 32 letters, \
                     digits, `-`, `_` or `.`, not starting with a dot",
                    disk.path
                ),
            }));
        }
        if let Some(used) = vm.def.disks.iter().find(|d| d.lun == disk.lun) {
            return Err(VmError::Conflict(format!(
                "LUN {} of VM {name} is in use by {}",
                disk.lun, used.path
            )));
        }
        if let Some(other) = self.iter().find(|v| {
            v.definition
                .disks
                .iter()
                .any(|d| d.path.eq_ignore_ascii_case(&disk.path))
        }) {
            return Err(VmError::Conflict(format!(
                "{} is attached to VM {} already",
                disk.path, other.definition.name
            )));
        }
        if !self.store.exists(&disk.path)? {
            return Err(VmError::Definition(DefinitionError {
                field: "path".into(),
                reason: format!("{} does not exist on the data volume", disk.path),
            }));
        }
        let mut def = self.vm(id)?.def.clone();
        def.disks.push(disk.clone());
        def.disks.sort_by_key(|d| d.lun);
        let def = def.validate().map_err(VmError::Definition)?;
        let hot = self.vm(id)?.handle.is_some();
        if hot {
            self.with_handle(id, |hv, h| hv.add_disk(h, disk.lun, &disk.path))?;
        }
        if let Err(e) = store::replace(&mut self.store, &def.path(), &encode(&def)) {
            if hot {
                // Undo, so the definition and the partition agree.
                let _ = self.with_handle(id, |hv, h| hv.remove_disk(h, disk.lun));
            }
            return Err(VmError::Store(e));
        }
        self.vm_mut(id)?.def = def;
        Ok(())
    }

    /// Removes the disk at `lun` of an Off, Running or Paused VM: hot
    /// through the hypervisor on a partition, then the definition is
    /// changed and written ([`store::replace`]).
    pub fn remove_disk(&mut self, id: VmId, lun: u8) -> Result<(), VmError> {
        let vm = self.require(id, Operation::RemoveDisk, &["Off", "Running", "Paused"])?;
        let Some(disk) = vm.def.disks.iter().find(|d| d.lun == lun).cloned() else {
            return Err(VmError::NoSuchDisk {
                vm: vm.def.name.clone(),
                lun,
            });
        };
        let mut def = vm.def.clone();
        def.disks.retain(|d| d.lun != lun);
        let hot = vm.handle.is_some();
        if hot {
            self.with_handle(id, |hv, h| hv.remove_disk(h, lun))?;
        }
        if let Err(e) = store::replace(&mut self.store, &def.path(), &encode(&def)) {
            if hot {
                let _ = self.with_handle(id, |hv, h| hv.add_disk(h, lun, &disk.path));
            }
            return Err(VmError::Store(e));
        }
        self.vm_mut(id)?.def = def;
        Ok(())
    }

    // ----- the state machine -----

    /// Handles the hypervisor's pending events (up to
    /// [`EVENTS_PER_POLL`]) and the time limits due at `now_ns`; returns
    /// every event since the last call.
    pub fn poll(&mut self, now_ns: u64) -> Vec<VmEvent> {
        self.step(now_ns);
        self.take_events()
    }

    /// [`VmManager::poll`] without taking the events (they wait for
    /// [`VmManager::take_events`]); returns how many hypervisor events
    /// were handled ([`EVENTS_PER_POLL`]: more may be waiting).
    pub fn step(&mut self, now_ns: u64) -> usize {
        let mut handled = 0;
        while handled < EVENTS_PER_POLL {
            let Some((id, event)) = self.hv.poll(now_ns) else {
                break;
            };
            handled += 1;
            self.handle_event(id, event);
        }
        let due: Vec<VmId> = self
            .iter()
            .map(|info| info.id)
            .filter(|&id| {
                self.vm(id)
                    .ok()
                    .and_then(|vm| vm.deadline)
                    .is_some_and(|d| d <= now_ns)
            })
            .collect();
        for id in due {
            self.time_limit(id);
        }
        handled
    }

    fn time_limit(&mut self, id: VmId) {
        let Ok(vm) = self.vm_mut(id) else { return };
        vm.deadline = None;
        match vm.state {
            VmState::Stopping => {
                self.emit(id, VmEventKind::StopTimedOut);
                self.power_off(id);
            }
            VmState::Starting => {
                let reason = format!(
                    "the guest did not come up within {} ms",
                    self.config.boot_timeout_ns / 1_000_000
                );
                let destroyed = self.destroy(id);
                let reason = match destroyed {
                    Ok(()) => reason,
                    Err(e) => format!("{reason}; turn off failed: {e}"),
                };
                self.set_state(id, VmState::Failed { reason });
            }
            _ => {}
        }
    }

    fn handle_event(&mut self, id: VmId, event: HvEvent) {
        // Events of deleted VMs (stale ids) are dropped here.
        let Ok(vm) = self.vm_mut(id) else { return };
        let state = vm.state.name();
        match event {
            HvEvent::Booted if state == "Starting" => {
                vm.deadline = None;
                self.set_state(id, VmState::Running);
            }
            HvEvent::ShutdownAcknowledged if state == "Stopping" => {
                self.emit(id, VmEventKind::ShutdownAcknowledged);
            }
            HvEvent::Stopped if matches!(state, "Starting" | "Running" | "Paused" | "Stopping") => {
                self.power_off(id);
            }
            HvEvent::HeartbeatMissed => self.emit(id, VmEventKind::HeartbeatMissed),
            HvEvent::HeartbeatRestored => self.emit(id, VmEventKind::HeartbeatRestored),
            HvEvent::SaveCompleted if state == "Saving" => {
                // The hypervisor destroyed the partition after the save.
                vm.handle = None;
                vm.before_save = None;
                self.set_state(id, VmState::Saved);
            }
            HvEvent::SaveFailed(reason) if state == "Saving" => {
                let back = vm.before_save.take().unwrap_or(VmState::Running);
                self.failed(id, Operation::Save, reason);
                self.set_state(id, back);
            }
            HvEvent::Crashed(reason) if vm.handle.is_some() => {
                vm.deadline = None;
                vm.before_save = None;
                self.set_state(id, VmState::Failed { reason });
            }
            // Anything else does not apply to the VM's state (a late
            // event of an operation already finished): ignored.
            _ => {}
        }
    }
}

/// The VM manager as one of the node's services: each round handles the
/// hypervisor's events and the time limits; its events wait in the
/// manager for the management API ([`VmManager::take_events`]).
impl<H: Hypervisor, S: Store> crate::node::Service for VmManager<H, S> {
    fn name(&self) -> &'static str {
        "vm"
    }

    fn poll(&mut self, now_ns: u64, _events: u64) -> crate::node::Poll {
        if self.step(now_ns) == EVENTS_PER_POLL {
            crate::node::Poll::Busy
        } else {
            crate::node::Poll::Idle(self.next_deadline())
        }
    }
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
