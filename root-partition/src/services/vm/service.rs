//! The VM manager as a service of the node: each round it moves the
//! manager (the hypervisor's events, time limits), prints every state
//! change (`root: vm NAME: FROM -> TO`), keeps the events for the
//! management API ([`VmService::take_events`], the last
//! [`MAX_KEPT_EVENTS`]), and at the node's stop deadline (`node.run-for`)
//! or when asked ([`VmService::request_stop`]) stops every running VM
//! gracefully, then the node.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

use super::hypervisor::Hypervisor;
use super::manager::{ManagerConfig, VmEvent, VmEventKind, VmId, VmManager, VmState};
use super::store::Store;
use crate::node::{Poll, Service};

/// Events kept for [`VmService::take_events`] until they are taken; past
/// this the oldest go (a consumer sees the gap in their numbers).
pub const MAX_KEPT_EVENTS: usize = 1024;

/// Where the service prints its lines (the console on the machine).
pub type Printer = fn(fmt::Arguments<'_>);

/// The VM manager as a node service.
pub struct VmService<H: Hypervisor, S: Store> {
    /// The manager.
    pub manager: VmManager<H, S>,
    /// When the node stops (every VM stopped gracefully first).
    pub stop_at: Option<u64>,
    stopping: bool,
    print: Printer,
    kept: VecDeque<VmEvent>,
}

impl<H: Hypervisor, S: Store> VmService<H, S> {
    /// The service around `manager`, stopping the node at `stop_at`.
    pub fn new(manager: VmManager<H, S>, stop_at: Option<u64>, print: Printer) -> Self {
        VmService {
            manager,
            stop_at,
            stopping: false,
            print,
            kept: VecDeque::new(),
        }
    }

    /// Prints `events` and keeps them for [`VmService::take_events`].
    fn report(&mut self, events: Vec<VmEvent>) -> bool {
        let any = !events.is_empty();
        for e in events {
            match &e.kind {
                VmEventKind::StateChanged { from, to } => {
                    (self.print)(format_args!("root: vm {}: {} -> {}", e.name, from, to))
                }
                other => (self.print)(format_args!("root: vm {}: {:?}", e.name, other)),
            }
            if self.kept.len() >= MAX_KEPT_EVENTS {
                self.kept.pop_front();
            }
            self.kept.push_back(e);
        }
        any
    }

    /// The VMs' events since the last call, oldest first (the last
    /// [`MAX_KEPT_EVENTS`]; each has the manager's sequence number). Events
    /// commands cause are taken from the manager here too.
    pub fn take_events(&mut self) -> Vec<VmEvent> {
        let fresh = self.manager.take_events();
        if !fresh.is_empty() {
            self.report(fresh);
        }
        self.kept.drain(..).collect()
    }

    /// Whether the node is stopping (its deadline came, or
    /// [`VmService::request_stop`]).
    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// Stops the node: every running VM is asked to stop gracefully, and
    /// once no VM has a partition the service's poll returns
    /// [`Poll::Stop`]. What the `node.run-for` deadline does; a second call
    /// does nothing.
    pub fn request_stop(&mut self, now: u64) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        (self.print)(format_args!("root: node stopping: stopping every VM"));
        self.stop_all(now);
    }

    /// While the node stops: every Running VM is asked to shut down (one
    /// that was Starting when the stop began is asked once it runs), and
    /// every Paused VM is saved (its state kept, as Hyper-V's automatic
    /// stop action does); Starting, Stopping and Saving ones are waited for.
    fn stop_all(&mut self, now: u64) {
        let due: Vec<(VmId, bool)> = self
            .manager
            .iter()
            .filter_map(|v| match v.state {
                VmState::Running => Some((v.id, true)),
                VmState::Paused => Some((v.id, false)),
                _ => None,
            })
            .collect();
        for (id, running) in due {
            let done = if running {
                self.manager.stop(id, now)
            } else {
                self.manager.save(id)
            };
            if let Err(e) = done {
                (self.print)(format_args!("root: stopping a VM failed: {e}"));
            }
        }
    }

    /// VMs that still have a partition or are on their way to or from
    /// one (the node stops once none has).
    pub fn busy_vms(&self) -> usize {
        self.manager
            .iter()
            .filter(|v| {
                matches!(
                    v.state,
                    VmState::Running
                        | VmState::Starting
                        | VmState::Stopping
                        | VmState::Paused
                        | VmState::Saving
                )
            })
            .count()
    }

    /// Boots the VM manager over `hv` and the definitions of `store`:
    /// prints each skipped definition with its path
    /// and reason, and the count; `None` (and why, printed) when the
    /// definitions cannot be read.
    pub fn boot(
        hv: H,
        store: S,
        config: ManagerConfig,
        now: u64,
        stop_at: Option<u64>,
        print: Printer,
    ) -> Option<Self> {
        match VmManager::boot(hv, store, config, now) {
            Ok((manager, report)) => {
                for skipped in &report.skipped {
                    print(format_args!(
                        "root: vm definition {} skipped: {}",
                        skipped.path, skipped.reason
                    ));
                }
                print(format_args!(
                    "root partition: node: {} VMs defined, {} skipped",
                    report.loaded.len(),
                    report.skipped.len()
                ));
                Some(Self::new(manager, stop_at, print))
            }
            Err(e) => {
                print(format_args!(
                    "root partition: node: the VM definitions cannot be read: {e}"
                ));
                None
            }
        }
    }
}

impl<H: Hypervisor, S: Store> Service for VmService<H, S> {
    fn name(&self) -> &'static str {
        "vms"
    }

    fn poll(&mut self, now: u64, _events: u64) -> Poll {
        let events = self.manager.poll(now);
        let mut busy = self.report(events);
        if self.stopping && busy {
            // A VM that was Starting may run now: it is asked in turn.
            self.stop_all(now);
        }
        if !self.stopping && self.stop_at.is_some_and(|d| now >= d) {
            self.request_stop(now);
            busy = true;
        }
        let events = self.manager.take_events();
        busy |= self.report(events);
        if self.stopping && self.busy_vms() == 0 {
            return Poll::Stop;
        }
        if busy {
            return Poll::Busy;
        }
        let deadlines = [
            self.manager.next_deadline(),
            self.manager.hypervisor().next_deadline(),
            self.stop_at.filter(|_| !self.stopping),
        ];
        Poll::Idle(deadlines.into_iter().flatten().min())
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
