//! Live migration on one node: the root moves a running child to a new
//! partition with the pre-copy engine, through an in-node transport that
//! applies the stream to the destination as it is produced.
//!
//! Steps: the destination is made (same memory size and vCPUs, not
//! started, a slot-for-slot copy of the child's capabilities: the
//! caller's [`Target`]); the engine runs — dirty log on, pass after pass
//! while the child runs and the root keeps serving every bus; then the
//! blackout: the child paused, its last dirty pages plus every page the
//! root shares with it (rings and buffers the root writes without the
//! dirty log seeing it), its vCPU states; hand over — the child's bus is
//! mapped again from the new memory at the same root addresses, its ports
//! deliver to the new vCPUs, its switch port announces its MAC — start
//! the destination and destroy the source. Any failure before the
//! handover leaves the source running (the engine resumes it) and
//! destroys the destination.
//!
//! # Invariants
//! - During the blackout the root serves no bus.
//! - The source is destroyed only after the destination has every page,
//!   every vCPU state and the bus.

use alloc::boxed::Box;
use alloc::vec::Vec;

use ipc::child::CHILD_EVENT_VECTOR;
use ipc::hypercall::{Call, SlotHandle, Status};

use super::{BusHost, ChildDestination, ChildSource, Moved, Tsc};
use crate::config::AbortAt;
use crate::hv::Kernel;
use crate::migrate::{self, Aborted, Control, Loopback, Phase, Policy, Source, Stats};
use crate::partition::{Child, Failure};

/// Why a migration failed (the source keeps running).
// The fields are read through `Debug` when the failure is printed.
#[allow(dead_code)]
#[derive(Debug)]
pub enum MigrateError {
    /// Building the destination failed.
    Setup(&'static str, Status),
    /// The root has no shared window: the bus could not follow the child.
    NoWindow,
    /// The engine aborted (reason in the statistics).
    Aborted(Box<Stats>),
    /// The handover failed.
    Handover(&'static str),
}

impl From<Failure> for MigrateError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Call(what, status) => MigrateError::Setup(what, status),
            _ => MigrateError::Handover("setup"),
        }
    }
}

/// The destination before the handover: made, mapped, its vCPUs created
/// and not started, the child's capabilities copied.
pub struct Target {
    /// The new partition.
    pub partition: SlotHandle,
    /// Its memory object.
    pub memory: SlotHandle,
    /// Its vCPUs, one per vCPU of the child, in order.
    pub vcpus: Vec<SlotHandle>,
    /// Host-physical base of its memory.
    pub base: u64,
}

/// Serves every bus while the child runs, none in the blackout; carries
/// out a scenario's abort.
struct Steering<'a, K: Kernel, B: BusHost> {
    kernel: &'a K,
    bus: &'a B,
    abort: Option<AbortAt>,
    destination: SlotHandle,
    destroyed: bool,
    /// Pre-copy control points passed (one per 1,024 pages and per pass).
    copy_points: u32,
}

impl<K: Kernel, B: BusHost> Control for Steering<'_, K, B> {
    fn proceed(&mut self, phase: Phase) -> bool {
        match phase {
            Phase::Blackout => self.abort != Some(AbortAt::Blackout),
            Phase::Precopy { pass } => {
                self.copy_points += 1;
                // A few thousand pages into the first pass.
                if self.abort == Some(AbortAt::Destination) && self.copy_points == 4 {
                    crate::say!(
                        self.kernel,
                        "root: migration test: destroying the destination mid-copy (pass {pass})"
                    );
                    let _ = self.kernel.call(&Call::PartitionDestroy {
                        partition: self.destination,
                    });
                    self.destroyed = true;
                }
                self.bus.service_all();
                true
            }
            _ => true,
        }
    }
}

/// Live-migrates `child` (bus `index`) to the partition `make_target`
/// builds for it. On success `child` describes the destination and the
/// source is destroyed; on failure the source runs on and the destination
/// is destroyed.
pub fn live<K: Kernel, B: BusHost>(
    kernel: &K,
    bus: &B,
    child: &mut Child,
    index: usize,
    abort: Option<AbortAt>,
    make_target: impl FnOnce(&Child) -> Result<Target, MigrateError>,
) -> Result<Stats, MigrateError> {
    if !bus.can_move(index) {
        return Err(MigrateError::NoWindow);
    }
    let target = make_target(child)?;
    let vcpus: Vec<SlotHandle> = child.vcpus.iter().flatten().copied().collect();
    let mut source = ChildSource::new(kernel, bus, child, index);
    let mut transport = Loopback::new(ChildDestination {
        kernel,
        partition: target.partition,
        vcpus: target.vcpus.clone(),
        pages: Some(child.pages),
        devices: None,
    });
    let mut steering = Steering {
        kernel,
        bus,
        abort,
        destination: target.partition,
        destroyed: false,
        copy_points: 0,
    };
    let policy = Policy::default();
    let mut clock = Tsc::new(kernel);
    let name = child.spec.name;
    let result = migrate::migrate(
        &mut source,
        &mut transport,
        &mut clock,
        &mut steering,
        &policy,
        name.as_str(),
    );
    let stats = match result {
        Ok(stats) => stats,
        Err(Aborted { stats, .. }) => {
            if !steering.destroyed {
                let _ = kernel.call(&Call::PartitionDestroy {
                    partition: target.partition,
                });
            }
            return Err(MigrateError::Aborted(stats));
        }
    };
    // The source is paused with everything sent: hand over.
    let vcpu0 = *target.vcpus.first().ok_or(MigrateError::Handover("vcpu"))?;
    let handover = (|| {
        bus.move_child(
            index,
            Moved {
                partition: target.partition,
                memory: target.memory,
                vcpu0,
                base: target.base,
            },
        )
        .map_err(|_| MigrateError::Handover("bus"))?;
        if let Some(port) = child.from_root {
            kernel
                .call(&Call::PortBind {
                    port,
                    vcpu: vcpu0,
                    vector: CHILD_EVENT_VECTOR,
                })
                .map_err(|_| MigrateError::Handover("port"))?;
        }
        Ok(())
    })();
    if let Err(e) = handover {
        // Back to the source, which never stopped being whole.
        if let Some(&old0) = vcpus.first() {
            let _ = bus.move_child(
                index,
                Moved {
                    partition: child.partition,
                    memory: child.memory,
                    vcpu0: old0,
                    base: child.base,
                },
            );
            if let Some(port) = child.from_root {
                let _ = kernel.call(&Call::PortBind {
                    port,
                    vcpu: old0,
                    vector: CHILD_EVENT_VECTOR,
                });
            }
        }
        let _ = source.resume();
        let _ = kernel.call(&Call::PartitionDestroy {
            partition: target.partition,
        });
        return Err(e);
    }
    for v in &target.vcpus {
        kernel
            .call(&Call::VcpuStart { vcpu: *v })
            .map_err(|_| MigrateError::Handover("start"))?;
    }
    let _ = kernel.call(&Call::PartitionDestroy {
        partition: child.partition,
    });
    bus.announce(index);
    child.partition = target.partition;
    child.memory = target.memory;
    child.base = target.base;
    for (slot, v) in child.vcpus.iter_mut().flatten().zip(&target.vcpus) {
        *slot = *v;
    }
    Ok(stats)
}
