//! The VM manager on the machine: the real [`Hypervisor`] (partitions
//! built by the one construction path in `children`, saved and restored
//! by `quick`, VMBus by `vmbus`) and the node service that drives the
//! manager (`root_partition::services::vm`) from the event loop.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;

use ipc::elf::Image;
use ipc::hypercall::{Call, StopReason, run_state};
use partition_rt::hypercall;
use root_partition::config::ChildSpec;

use root_partition::services::vm::definition::VmDefinition;
use root_partition::services::vm::hypervisor::{HvError, HvEvent, Hypervisor};
use root_partition::services::vm::manager::VmId;
use root_partition::services::vm::service::VmService;
use vsp::integration::{Heartbeat, ShutdownState};

use crate::children::{self, Child, MAX_CHILDREN, Root};
use crate::storage::DataVolume;

macro_rules! println {
    ($($arg:tt)*) => {
        partition_rt::console::print_line(format_args!($($arg)*))
    };
}

/// How often the partitions' run states are looked at (a child that
/// halted or faulted becomes a `Stopped` or `Crashed` event).
const STATUS_PERIOD_NS: u64 = 500_000_000;

/// The machine as the VM manager drives it: a partition per VM, in one of
/// [`MAX_CHILDREN`] slots (its VMBus index).
pub struct MachineHv {
    root: Root,
    image: Image<'static>,
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

impl MachineHv {
    /// The machine of `root`, starting children from `image`.
    pub fn new(root: Root, image: Image<'static>, stop_timeout_ns: u64) -> Self {
        MachineHv {
            root,
            image,
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
        self.children
            .get(index)
            .copied()
            .flatten()
            .ok_or_else(|| HvError(String::from("no partition")))
    }

    fn vcpus(
        &self,
        index: usize,
        call: fn(ipc::hypercall::SlotHandle) -> Call,
    ) -> Result<(), HvError> {
        let child = self.child(index)?;
        for vcpu in child.vcpus.iter().flatten() {
            hypercall(&call(*vcpu)).map_err(|e| hv_error("vCPU", e))?;
        }
        Ok(())
    }

    fn release(&mut self, index: usize) {
        self.children[index] = None;
        self.vms[index] = None;
        self.reported[index] = (false, false);
    }

    /// Turns changes of the integration services into events: a shutdown
    /// the guest acknowledged, a heartbeat lost or back.
    fn check_integration(&mut self) {
        for index in 0..MAX_CHILDREN {
            let Some(vm) = self.vms[index] else {
                continue;
            };
            let (acked, lost) = self.reported[index];
            let shutdown = crate::vmbus::shutdown_state(index);
            if !acked
                && matches!(
                    shutdown,
                    Some(ShutdownState::Acknowledged | ShutdownState::Done)
                )
            {
                self.reported[index].0 = true;
                self.events.push_back((vm, HvEvent::ShutdownAcknowledged));
            }
            let heartbeat = crate::vmbus::heartbeat_state(index);
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
            let Ok(s) = hypercall(&Call::PartitionStatus {
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
            crate::vmbus::drain(index);
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

impl Hypervisor for MachineHv {
    type Handle = usize;

    fn start(&mut self, vm: VmId, spec: &ChildSpec, _def: &VmDefinition) -> Result<usize, HvError> {
        let index = self.free_slot()?;
        let child = children::start(&self.root, &self.image, spec, index, &self.children)
            .map_err(|e| hv_error("start", e))?;
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
        match crate::quick::save(&self.root, &child, index, path) {
            Ok((stats, bytes)) => {
                crate::migration::report(child.spec.name.as_str(), &stats);
                // Its bus state is in the file: never served again here.
                crate::vmbus::forget(index);
                let _ = hypercall(&Call::PartitionDestroy {
                    partition: child.partition,
                });
                self.release(index);
                println!(
                    "root: {} saved to {path} ({bytes} bytes, {} ms paused)",
                    child.spec.name.as_str(),
                    stats.blackout_ns / 1_000_000
                );
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
        let memory = crate::quick::saved_memory(path).map_err(|e| hv_error("saved state", e))?;
        let base = children::place(&self.root, &self.children, memory)
            .ok_or_else(|| HvError(format!("no room for {} MiB", memory >> 20)))?;
        let at = crate::quick::Placement {
            base,
            index,
            image_span: self.image.span(),
        };
        let restored = crate::quick::restore(&self.root, path, at, spec)
            .map_err(|e| hv_error("restore", e))?;
        if restored.spec.name != spec.name {
            crate::vmbus::detach(index);
            let _ = hypercall(&Call::PartitionDestroy {
                partition: restored.partition,
            });
            return Err(HvError(format!(
                "{path} holds {}, not {}",
                restored.spec.name.as_str(),
                spec.name.as_str()
            )));
        }
        // The child checks its memory on this signal (memdirty).
        if let Some(port) = restored.from_root {
            let _ = hypercall(&Call::PortSignal { port });
        }
        self.children[index] = Some(restored);
        self.vms[index] = Some(vm);
        self.events.push_back((vm, HvEvent::Booted));
        Ok(index)
    }

    fn request_shutdown(&mut self, handle: &mut usize) -> Result<(), HvError> {
        let _ = self.child(*handle)?;
        crate::vmbus::request_shutdown(*handle, self.stop_timeout_ms)
            .map_err(|e| hv_error("the guest's shutdown service", e))
    }

    fn turn_off(&mut self, handle: usize) -> Result<(), HvError> {
        let child = self.child(handle)?;
        crate::vmbus::detach(handle);
        let result = hypercall(&Call::PartitionDestroy {
            partition: child.partition,
        })
        .map(|_| ())
        .map_err(|e| hv_error("destroy", e));
        self.release(handle);
        result
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

/// The VM manager as a service of the node (printing on the console).
pub type Vms = VmService<MachineHv, DataVolume>;
