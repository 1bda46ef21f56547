//! Quick migration, on the machine: a save to a file on the data volume
//! and a restore from it are the library's
//! (`root_partition::services::migration::quick`, which describes the
//! file), over the kernel's hypercalls ([`HwKernel`]), this root's buses
//! ([`Buses`]) and its data volume (`crate::storage`); the partition a
//! restore fills is made here.

use ipc::hypercall::{Call, Name};
use partition_rt::hypercall;
use root_partition::layout::Layout;
use root_partition::migrate::Stats;
use root_partition::services::migration::quick;

pub use root_partition::services::migration::quick::{Placement, QuickError};

use crate::children::{Child, Failure, Root};
use crate::hal::kernel::HwKernel;
use crate::migration::Buses;
use root_partition::config::ChildSpec;
use root_partition::partition::{self, Purpose};

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
/// starts it, with `spec`'s priority and processor affinity (its memory
/// and vCPUs are the file's).
pub fn restore(
    root: &Root,
    path: &str,
    at: Placement,
    spec: &ChildSpec,
) -> Result<Child, QuickError> {
    let volume = crate::storage::volume().ok_or(QuickError::NoVolume)?;
    let file = volume.lock().open(path).map_err(QuickError::File)?;
    let header = quick::read_header(&volume, &file)?;
    let memory = header.pages * 4096;
    let name = Name::new(header.name());
    let layout = Layout::new(memory, at.image_span.0, at.image_span.1)
        .map_err(|e| QuickError::Format(alloc::format!("layout: {e:?}")))?;
    let mut shape = *spec;
    (shape.name, shape.memory, shape.vcpus) = (name, memory, u32::from(header.vcpus));
    let built = partition::build(&HwKernel, root, &shape, at.base, Purpose::Restore).map_err(
        |e| match e {
            Failure::Call(what, status) => QuickError::Call(what, status),
            other => QuickError::Format(alloc::format!("{other:?}")),
        },
    )?;
    let partition = built.partition;
    let restored = quick::restore_into(
        &HwKernel,
        &Buses,
        root,
        &volume,
        &file,
        &header,
        quick::Restoring {
            partition,
            memory: built.memory,
            self_cap: built.self_slot,
            vcpus: built.vcpu_list().collect(),
            base: at.base,
            index: at.index,
            layout,
        },
    );
    match restored {
        Ok(mut child) => {
            // What its vCPUs were built with.
            (child.spec.priority, child.spec.cpu) = (shape.priority, shape.cpu);
            Ok(child)
        }
        Err(e) => {
            crate::vmbus::forget(at.index);
            let _ = hypercall(&Call::PartitionDestroy { partition });
            Err(e)
        }
    }
}
