//! The VM manager's [`Hypervisor`] on a real kernel: a partition per VM in
//! one of [`MAX_CHILDREN`] slots (its VMBus index), paused, resumed and
//! destroyed by hypercalls, its run state looked at every
//! [`STATUS_PERIOD_NS`] (a child that halted is `Stopped`, one that
//! faulted `Crashed`), its integration services' changes (a shutdown the
//! guest acknowledged, a heartbeat lost or back) turned into events.
//!
//! What is not the kernel's is the [`Partitions`] trait's: building a new
//! child (image, layout, VMBus, boot disks), quick migration's save and
//! restore on the data volume, and the child's bus (integration states,
//! forget, detach, drain). On the machine `node_vms.rs` implements it over
//! `children`, `quick` and `vmbus`; host tests over fakes.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use ipc::hypercall::{Call, SlotHandle, StopReason, run_state};
use vsp::integration::{Heartbeat, ShutdownState};

use super::definition::VmDefinition;
use super::hypervisor::{HvError, HvEvent, Hypervisor};
use super::manager::VmId;
use crate::config::ChildSpec;
use crate::hv::Kernel;
use crate::migrate::Stats;
use crate::partition::control::Buses;
use crate::partition::{Child, Failure, MAX_CHILDREN, Root, place};
use crate::services::migration::quick::{Placement, QuickError};

/// How often the partitions' run states are looked at.
pub const STATUS_PERIOD_NS: u64 = 500_000_000;

/// What the machine does for the VM manager beyond hypercalls: building a
/// new child, quick migration's save and restore, and its bus (the
/// [`Buses`] a wait serves, and forget, the heartbeat). The scenario
/// interpreter's machine (`services::scenario::ScenarioMachine`) is one.
pub trait Partitions: Buses {
    /// Builds and starts child `spec` in slot `index`, clear of `children`.
    fn start(
        &mut self,
        root: &Root,
        spec: &ChildSpec,
        index: usize,
        children: &[Option<Child>],
    ) -> Result<Child, Failure>;
    /// Saves `child` (slot `index`) to `path`: the statistics and the
    /// file's bytes; the child still exists (the caller destroys it).
    fn save(
        &mut self,
        root: &Root,
        child: &Child,
        index: usize,
        path: &str,
    ) -> Result<(Stats, u64), QuickError>;
    /// Bytes of memory of the child saved in `path`.
    fn saved_memory(&mut self, path: &str) -> Result<u64, QuickError>;
    /// The child runtime image's span (a restored child's layout).
    fn image_span(&self) -> (u64, u64);
    /// Restores the child saved in `path` at `at` with `spec`'s priority
    /// and affinity, and starts it.
    fn restore(
        &mut self,
        root: &Root,
        path: &str,
        at: Placement,
        spec: &ChildSpec,
    ) -> Result<Child, QuickError>;
    /// Prints a migration's statistics (a save's).
    fn report(&mut self, name: &str, stats: &Stats);
    /// Forgets slot `index`'s bus without touching its pages' contents
    /// (its state was saved).
    fn forget(&mut self, index: usize);
    /// Slot `index`'s heartbeat.
    fn heartbeat_state(&self, index: usize) -> Option<Heartbeat>;
    /// Adds disk file `path` (a file of the volume's root folder, `/FILE`
    /// or `FILE`) as LUN `lun` of running child `index`'s storage
    /// controller; why not.
    fn add_disk(&mut self, index: usize, lun: u8, path: &str) -> Result<(), String>;
    /// Removes LUN `lun` of running child `index`; why not.
    fn remove_disk(&mut self, index: usize, lun: u8) -> Result<(), String>;
    /// Child `index`'s last console lines, oldest first.
    fn console(&self, index: usize) -> Vec<String>;
}

/// The machine as the VM manager drives it.
pub struct MachineHv<K: Kernel, P: Partitions> {
    kernel: K,
    parts: P,
    root: Root,
    children: [Option<Child>; MAX_CHILDREN],
    vms: [Option<VmId>; MAX_CHILDREN],
    events: VecDeque<(VmId, HvEvent)>,
    next_status: u64,
    /// What was last reported of each slot's integration services:
    /// (shutdown acknowledged, heartbeat lost).
    reported: [(bool, bool); MAX_CHILDREN],
    /// The time a guest has to shut down (the manager's stop limit).
    stop_timeout_ms: u32,
}

fn hv_error(what: &str, e: impl core::fmt::Debug) -> HvError {
    HvError(format!("{what}: {e:?}"))
}

impl<K: Kernel, P: Partitions> MachineHv<K, P> {
    /// The machine of `root` over `kernel` and `parts`.
    pub fn new(kernel: K, parts: P, root: Root, stop_timeout_ns: u64) -> Self {
        MachineHv {
            kernel,
            parts,
            root,
            children: [None; MAX_CHILDREN],
            vms: [None; MAX_CHILDREN],
            events: VecDeque::new(),
            next_status: 0,
            reported: [(false, false); MAX_CHILDREN],
            stop_timeout_ms: u32::try_from(stop_timeout_ns / 1_000_000)
                .unwrap_or(u32::MAX)
                .clamp(1, 600_000),
        }
    }

    /// The partitions' side (tests look at their fakes).
    pub fn parts(&mut self) -> &mut P {
        &mut self.parts
    }

    /// The child in slot `index`, if any.
    pub fn child_at(&self, index: usize) -> Option<Child> {
        self.children.get(index).copied().flatten()
    }

    fn free_slot(&self) -> Result<usize, HvError> {
        self.children
            .iter()
            .position(Option::is_none)
            .ok_or_else(|| {
                HvError(format!(
                    "every one of the {MAX_CHILDREN} partition slots is in use"
                ))
            })
    }

    fn child(&self, index: usize) -> Result<Child, HvError> {
        self.child_at(index)
            .ok_or_else(|| HvError(String::from("no partition")))
    }

    fn vcpus(&self, index: usize, call: fn(SlotHandle) -> Call) -> Result<(), HvError> {
        let child = self.child(index)?;
        for vcpu in child.vcpus.iter().flatten() {
            self.kernel
                .call(&call(*vcpu))
                .map_err(|e| hv_error("vCPU", e))?;
        }
        Ok(())
    }

    fn release(&mut self, index: usize) {
        self.children[index] = None;
        self.vms[index] = None;
        self.reported[index] = (false, false);
    }

    fn destroy(&self, partition: SlotHandle) -> Result<(), HvError> {
        self.kernel
            .call(&Call::PartitionDestroy { partition })
            .map(|_| ())
            .map_err(|e| hv_error("destroy", e))
    }

    /// Turns changes of the integration services into events.
    fn check_integration(&mut self) {
        for index in 0..MAX_CHILDREN {
            let Some(vm) = self.vms[index] else {
                continue;
            };
            let (acked, lost) = self.reported[index];
            let shutdown = self.parts.shutdown_state(index);
            if !acked
                && matches!(
                    shutdown,
                    Some(ShutdownState::Acknowledged | ShutdownState::Done)
                )
            {
                self.reported[index].0 = true;
                self.events.push_back((vm, HvEvent::ShutdownAcknowledged));
            }
            let heartbeat = self.parts.heartbeat_state(index);
            let now_lost = matches!(heartbeat, Some(Heartbeat::Unresponsive(_)));
            if now_lost != lost && !self.children[index].is_some_and(|c| c.ended) {
                self.reported[index].1 = now_lost;
                let event = if now_lost {
                    HvEvent::HeartbeatMissed
                } else {
                    HvEvent::HeartbeatRestored
                };
                self.events.push_back((vm, event));
            }
        }
    }

    /// Looks at every partition's run state.
    fn check_status(&mut self) {
        for index in 0..MAX_CHILDREN {
            let (Some(child), Some(vm)) = (self.children[index], self.vms[index]) else {
                continue;
            };
            if child.ended {
                continue;
            }
            let Ok(s) = self.kernel.call(&Call::PartitionStatus {
                partition: child.partition,
            }) else {
                continue;
            };
            if s[0] != run_state::STOPPED {
                continue;
            }
            if let Some(c) = self.children[index].as_mut() {
                c.ended = true;
            }
            // Print what it said before it stopped.
            self.parts.drain(index);
            let reason = StopReason::from_raw(s[1]).unwrap_or(StopReason::UnhandledExit);
            let event = if reason == StopReason::Halted {
                HvEvent::Stopped
            } else {
                HvEvent::Crashed(format!("{reason:?} ({:#x})", s[2]))
            };
            self.events.push_back((vm, event));
        }
    }
}

impl<K: Kernel, P: Partitions> Hypervisor for MachineHv<K, P> {
    type Handle = usize;

    fn start(&mut self, vm: VmId, spec: &ChildSpec, _def: &VmDefinition) -> Result<usize, HvError> {
        let index = self.free_slot()?;
        let child = self
            .parts
            .start(&self.root, spec, index, &self.children)
            .map_err(|e| HvError(format!("start: {e:?}")))?;
        self.children[index] = Some(child);
        self.vms[index] = Some(vm);
        self.events.push_back((vm, HvEvent::Booted));
        Ok(index)
    }

    fn pause(&mut self, handle: &mut usize) -> Result<(), HvError> {
        self.vcpus(*handle, |vcpu| Call::VcpuPause { vcpu })
    }

    fn resume(&mut self, handle: &mut usize) -> Result<(), HvError> {
        self.vcpus(*handle, |vcpu| Call::VcpuResume { vcpu })
    }

    fn save(&mut self, handle: &mut usize, path: &str) -> Result<(), HvError> {
        let index = *handle;
        let child = self.child(index)?;
        let vm = self.vms[index].ok_or_else(|| HvError(String::from("no VM")))?;
        match self.parts.save(&self.root, &child, index, path) {
            Ok((stats, bytes)) => {
                let name = child.spec.name;
                self.parts.report(name.as_str(), &stats);
                // Its bus state is in the file: never served again here.
                self.parts.forget(index);
                let _ = self.destroy(child.partition);
                self.release(index);
                self.kernel.print(format_args!(
                    "root: {} saved to {path} ({bytes} bytes, {} ms paused)",
                    name.as_str(),
                    stats.blackout_ns / 1_000_000
                ));
                self.events.push_back((vm, HvEvent::SaveCompleted));
            }
            Err(e) => self
                .events
                .push_back((vm, HvEvent::SaveFailed(format!("{e:?}")))),
        }
        Ok(())
    }

    fn restore(
        &mut self,
        vm: VmId,
        spec: &ChildSpec,
        _def: &VmDefinition,
        path: &str,
    ) -> Result<usize, HvError> {
        let index = self.free_slot()?;
        let memory = self
            .parts
            .saved_memory(path)
            .map_err(|e| HvError(format!("saved state: {e:?}")))?;
        let base = place(&self.root, &self.children, memory)
            .ok_or_else(|| HvError(format!("no room for {} MiB", memory >> 20)))?;
        let at = Placement {
            base,
            index,
            image_span: self.parts.image_span(),
        };
        let restored = self
            .parts
            .restore(&self.root, path, at, spec)
            .map_err(|e| HvError(format!("restore: {e:?}")))?;
        if restored.spec.name != spec.name {
            self.parts.detach(index);
            let _ = self.destroy(restored.partition);
            return Err(HvError(format!(
                "{path} holds {}, not {}",
                restored.spec.name.as_str(),
                spec.name.as_str()
            )));
        }
        // The child checks its memory on this signal (memdirty).
        if let Some(port) = restored.from_root {
            let _ = self.kernel.call(&Call::PortSignal { port });
        }
        self.children[index] = Some(restored);
        self.vms[index] = Some(vm);
        self.events.push_back((vm, HvEvent::Booted));
        Ok(index)
    }

    fn request_shutdown(&mut self, handle: &mut usize) -> Result<(), HvError> {
        let _ = self.child(*handle)?;
        self.parts
            .request_shutdown(*handle, self.stop_timeout_ms)
            .map_err(|e| HvError(format!("the guest's shutdown service: {e}")))
    }

    fn turn_off(&mut self, handle: usize) -> Result<(), HvError> {
        let child = self.child(handle)?;
        self.parts.detach(handle);
        let result = self.destroy(child.partition);
        self.release(handle);
        result
    }

    fn add_disk(&mut self, handle: &mut usize, lun: u8, path: &str) -> Result<(), HvError> {
        let _ = self.child(*handle)?;
        self.parts
            .add_disk(*handle, lun, path)
            .map_err(|e| HvError(format!("hot add of {path} at LUN {lun}: {e}")))
    }

    fn remove_disk(&mut self, handle: &mut usize, lun: u8) -> Result<(), HvError> {
        let _ = self.child(*handle)?;
        self.parts
            .remove_disk(*handle, lun)
            .map_err(|e| HvError(format!("hot remove of LUN {lun}: {e}")))
    }

    fn console(&self, handle: &usize) -> Vec<String> {
        self.parts.console(*handle)
    }

    /// When the run states are next looked at (while any partition runs).
    fn next_deadline(&self) -> Option<u64> {
        self.children
            .iter()
            .flatten()
            .any(|c| !c.ended)
            .then_some(self.next_status)
    }

    fn poll(&mut self, now_ns: u64) -> Option<(VmId, HvEvent)> {
        if self.events.is_empty() && now_ns >= self.next_status {
            self.next_status = now_ns + STATUS_PERIOD_NS;
            self.check_integration();
            self.check_status();
        }
        self.events.pop_front()
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
