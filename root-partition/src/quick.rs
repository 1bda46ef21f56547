//! Quick migration, on the machine: a save to a file on the data volume
//! and a restore from it are the library's
//! (`root_partition::services::migration::quick`, which describes the
//! file), over the kernel's hypercalls ([`HwKernel`]), this root's buses
//! ([`Buses`]) and its data volume (`crate::storage`); the partition a
//! restore fills is made here.

use alloc::vec::Vec;

use ipc::hypercall::{Call, Name, Rights};
use partition_rt::hypercall;
use root_partition::layout::Layout;
use root_partition::migrate::Stats;
use root_partition::services::migration::quick;

pub use root_partition::services::migration::quick::{Placement, QuickError};

use crate::children::{Child, Root, call, handle};
use crate::hal::kernel::HwKernel;
use crate::migration::Buses;

/// Bytes of memory of the child saved in `path` (from its header).
pub fn saved_memory(path: &str) -> Result<u64, QuickError> {
    let volume = crate::storage::volume().ok_or(QuickError::NoVolume)?;
    quick::saved_memory(&volume, path)
}

/// Saves `child` (bus `index`) to `path` on the data volume; the child is
/// paused at the end (the caller destroys it). On failure it runs on.
pub fn save(
    _root: &Root,
    child: &Child,
    index: usize,
    path: &str,
) -> Result<(Stats, u64), QuickError> {
    let volume = crate::storage::volume().ok_or(QuickError::NoVolume)?;
    quick::save(&HwKernel, &Buses, &volume, child, index, path)
}

/// Restores the child saved in `path` into a new partition at `at` and
/// starts it.
pub fn restore(root: &Root, path: &str, at: Placement) -> Result<Child, QuickError> {
    let volume = crate::storage::volume().ok_or(QuickError::NoVolume)?;
    let file = volume.lock().open(path).map_err(QuickError::File)?;
    let header = quick::read_header(&volume, &file)?;
    let memory = header.pages * 4096;
    let name = Name::new(header.name());
    let layout = Layout::new(memory, at.image_span.0, at.image_span.1)
        .map_err(|e| QuickError::Format(alloc::format!("layout: {e:?}")))?;
    let first_page = (at.base - root.ram_range.start) / 4096;
    let r = call(
        "create",
        Call::PartitionCreate {
            authority: root.authority,
            memory: root.ram,
            first_page,
            pages: header.pages,
            name,
            // Restored vCPUs run at priority 0 (flags 0 below).
            ceiling: 0,
        },
    )?;
    let (partition, child_memory, child_self) = (handle(r[0])?, handle(r[1])?, handle(r[2])?);
    let built = (|| {
        call(
            "map",
            Call::MemoryMap {
                partition,
                memory: child_memory,
                first_page: 1,
                gpa: 0x1000,
                pages: header.pages - 1,
                access: Rights::READ | Rights::WRITE | Rights::EXECUTE,
            },
        )?;
        let mut vcpus = Vec::new();
        for _ in 0..header.vcpus {
            let r = call(
                "vcpu",
                Call::VcpuCreate {
                    partition,
                    rip: 0,
                    rsp: 0,
                    cr3: 0,
                    arg: 0,
                    flags: 0,
                },
            )?;
            vcpus.push(handle(r[0])?);
        }
        quick::restore_into(
            &HwKernel,
            &Buses,
            root,
            &volume,
            &file,
            &header,
            quick::Restoring {
                partition,
                memory: child_memory,
                self_cap: child_self,
                vcpus,
                base: at.base,
                index: at.index,
                layout,
            },
        )
    })();
    if built.is_err() {
        crate::vmbus::forget(at.index);
        let _ = hypercall(&Call::PartitionDestroy { partition });
    }
    built
}
