//! Live migration on one node, on the machine: the partition the child
//! moves to is made here ([`create_target`]); the migration itself is the
//! library's (`root_partition::services::migration`), over the kernel's
//! hypercalls ([`HwKernel`]) and this root's buses ([`Buses`], the
//! library's `BusHost` over `crate::vmbus`).

use alloc::string::String;
use alloc::vec::Vec;

use ipc::hypercall::SlotHandle;
use root_partition::config::AbortAt;
use root_partition::migrate::Stats;
use root_partition::services::migration::{self, BusHost, Moved, Refused, RestoredBus, Target};

pub use root_partition::services::migration::MigrateError;

use crate::children::{Child, Failure, Root};
use crate::hal::kernel::HwKernel;
use root_partition::partition::{self, Purpose};

/// This root's buses and child ports, as a migration needs them.
pub struct Buses;

impl BusHost for Buses {
    fn service_all(&self) {
        crate::vmbus::service_all();
    }

    fn can_move(&self, index: usize) -> bool {
        crate::vmbus::window_of(index, 0).1 != u64::MAX
    }

    fn shared_pages(&self, index: usize) -> Vec<(u64, u64)> {
        crate::vmbus::shared_pages(index)
    }

    fn move_child(&self, index: usize, to: Moved) -> Result<(), Refused> {
        crate::vmbus::move_child(
            index,
            crate::vmbus::MovedChild {
                partition: to.partition,
                memory: to.memory,
                vcpu0: to.vcpu0,
                base: to.base,
            },
        )
        .map_err(|_| Refused)
    }

    fn announce(&self, index: usize) {
        crate::vmbus::announce(index);
    }

    fn save_bus(&self, index: usize, out: &mut [u8]) -> Option<(usize, Vec<(u8, String)>)> {
        crate::vmbus::save_bus(index, out)
    }

    fn channel_ports(&self, index: usize) -> Vec<(usize, u64, u64)> {
        crate::vmbus::channel_ports(index)
    }

    fn to_root_port(&self, index: usize) -> u64 {
        crate::children::to_root_port(index)
    }

    fn make_to_root(
        &self,
        root: &Root,
        index: usize,
        partition: SlotHandle,
        at: Option<SlotHandle>,
    ) -> Result<SlotHandle, Failure> {
        crate::children::make_to_root(root, index, partition, at)
    }

    fn restore_bus(&self, bus: RestoredBus<'_>) -> Result<(), String> {
        let mut platform = bus.grant;
        for &(channel, signal, event) in &bus.ports {
            if channel >= crate::vmbus::CHANNELS {
                return Err(alloc::format!("no channel {channel}"));
            }
            crate::vmbus::make_ports_at(&mut platform, channel, Some((signal, event)))
                .map_err(|_| alloc::format!("ports of channel {channel}"))?;
        }
        crate::vmbus::restore_bus(bus.name, platform, bus.saved, bus.luns)
            .map_err(|e| alloc::format!("bus: {e:?}"))
    }

    fn forget(&self, index: usize) {
        crate::vmbus::forget(index);
    }
}

fn create_target(root: &Root, child: &Child, base: u64) -> Result<Target, MigrateError> {
    let mut spec = child.spec;
    spec.memory = child.pages * 4096;
    spec.vcpus = child.vcpus.iter().flatten().count() as u32;
    let purpose = Purpose::Target {
        source: child.partition,
    };
    let built = partition::build(&HwKernel, root, &spec, base, purpose)?;
    Ok(Target {
        partition: built.partition,
        memory: built.memory,
        vcpus: built.vcpu_list().collect(),
        base,
    })
}

/// Live-migrates `child` (bus `index`) to a new partition at `base` (free
/// memory of the root's). On success `child` describes the destination.
pub fn live(
    root: &Root,
    child: &mut Child,
    index: usize,
    base: u64,
    abort: Option<AbortAt>,
) -> Result<Stats, MigrateError> {
    migration::live(&HwKernel, &Buses, child, index, abort, |child| {
        create_target(root, child, base)
    })
}

/// The statistics as the console shows them, and as one JSON line.
pub fn report(name: &str, stats: &Stats) {
    migration::report(&HwKernel, name, stats);
}
