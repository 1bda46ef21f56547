//! Live migration on one node, on the machine: the partition the child
//! moves to is made here ([`create_target`]); the migration itself is the
//! library's (`root_partition::services::migration`), over the kernel's
//! hypercalls ([`HwKernel`]) and this root's buses ([`Buses`], the
//! library's `BusHost` over `crate::vmbus`).

use alloc::string::String;
use alloc::vec::Vec;

use ipc::hypercall::{Call, Rights, SlotHandle};
use partition_rt::hypercall;
use root_partition::config::AbortAt;
use root_partition::migrate::Stats;
use root_partition::services::migration::{self, BusHost, Moved, Refused, RestoredBus, Target};

pub use root_partition::services::migration::MigrateError;

use crate::children::{Child, Failure, Root, call, handle};
use crate::hal::kernel::HwKernel;

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
        let mut platform = crate::vmbus::RootPlatform {
            root: bus.root,
            root_vcpu: bus.root_vcpu,
            partition: bus.partition,
            memory: bus.memory,
            vcpu0: bus.vcpu0,
            base: bus.base,
            layout: bus.layout,
            index: bus.index,
            to_child: [None; crate::vmbus::CHANNELS],
            shared: Vec::new(),
        };
        for &(channel, signal, event) in &bus.ports {
            if channel >= crate::vmbus::CHANNELS {
                return Err(alloc::format!("no channel {channel}"));
            }
            platform
                .make_ports_at(channel, Some((signal, event)))
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
    let pages = child.pages;
    let first_page = (base - root.ram_range.start) / 4096;
    let r = call(
        "create",
        Call::PartitionCreate {
            authority: root.authority,
            memory: root.ram,
            first_page,
            pages,
            name: child.spec.name,
            ceiling: child.spec.priority,
        },
    )?;
    let (partition, memory) = (handle(r[0])?, handle(r[1])?);
    let built = (|| {
        call(
            "map",
            Call::MemoryMap {
                partition,
                memory,
                first_page: 1,
                gpa: 0x1000,
                pages: pages - 1,
                access: Rights::READ | Rights::WRITE | Rights::EXECUTE,
            },
        )?;
        let mut vcpus = Vec::new();
        for (i, _) in child.vcpus.iter().flatten().enumerate() {
            let affinity = child.spec.cpu.map_or(0, |c| c as u64 + i as u64 + 1);
            let r = call(
                "vcpu",
                Call::VcpuCreate {
                    partition,
                    rip: 0,
                    rsp: 0,
                    cr3: 0,
                    arg: 0,
                    flags: child.spec.priority as u64 | (affinity << 8),
                },
            )?;
            vcpus.push(handle(r[0])?);
        }
        call(
            "clone",
            Call::CapClone {
                source: child.partition,
                target: partition,
            },
        )?;
        Ok(vcpus)
    })();
    match built {
        Ok(vcpus) => Ok(Target {
            partition,
            memory,
            vcpus,
            base,
        }),
        Err(e) => {
            let _ = hypercall(&Call::PartitionDestroy { partition });
            Err(e)
        }
    }
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
