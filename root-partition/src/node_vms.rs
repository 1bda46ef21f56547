//! The VM manager on the machine: the library's `MachineHv`
//! (`root_partition::services::vm::machine`) over the kernel
//! ([`HwKernel`]) and this root's [`Parts`] — partitions built by the one
//! construction path (`children::start`), saved and restored by `quick`,
//! their buses in `vmbus` — and the node service that drives the manager.

use alloc::string::String;
use alloc::vec::Vec;

use ipc::elf::Image;
use root_partition::config::ChildSpec;
use root_partition::migrate::Stats;
use root_partition::partition::Failure;
use root_partition::partition::control::Buses;
use root_partition::services::migration::quick::{Placement, QuickError};
use root_partition::services::vm::machine::{self, Partitions};
use root_partition::services::vm::service::VmService;
use vsp::integration::{Heartbeat, ShutdownState};

use crate::children::{self, Child, Root, VmBuses};
use crate::hal::kernel::HwKernel;
use crate::storage::DataVolume;

/// What the VM manager needs of this root beyond hypercalls.
pub struct Parts {
    /// The child runtime every VM runs.
    pub image: Image<'static>,
}

/// The machine as the VM manager drives it.
pub type MachineHv = machine::MachineHv<HwKernel, Parts>;

/// The VM manager as a service of the node (printing on the console).
pub type Vms = VmService<MachineHv, DataVolume>;

/// The machine of `root`, starting children from `image`.
pub fn machine_hv(root: Root, image: Image<'static>, stop_timeout_ns: u64) -> MachineHv {
    machine::MachineHv::new(HwKernel, Parts { image }, root, stop_timeout_ns)
}

impl Buses for Parts {
    fn service_all(&mut self) -> usize {
        VmBuses.service_all()
    }
    fn drain(&mut self, index: usize) {
        VmBuses.drain(index);
    }
    fn request_shutdown(&mut self, index: usize, timeout_ms: u32) -> Result<(), String> {
        VmBuses.request_shutdown(index, timeout_ms)
    }
    fn shutdown_state(&mut self, index: usize) -> Option<ShutdownState> {
        VmBuses.shutdown_state(index)
    }
    fn detach(&mut self, index: usize) {
        VmBuses.detach(index);
    }
}

impl Partitions for Parts {
    fn start(
        &mut self,
        root: &Root,
        spec: &ChildSpec,
        index: usize,
        children: &[Option<Child>],
    ) -> Result<Child, Failure> {
        children::start(root, &self.image, spec, index, children)
    }
    fn save(
        &mut self,
        root: &Root,
        child: &Child,
        index: usize,
        path: &str,
    ) -> Result<(Stats, u64), QuickError> {
        crate::quick::save(root, child, index, path)
    }
    fn saved_memory(&mut self, path: &str) -> Result<u64, QuickError> {
        crate::quick::saved_memory(path)
    }
    fn image_span(&self) -> (u64, u64) {
        self.image.span()
    }
    fn restore(
        &mut self,
        root: &Root,
        path: &str,
        at: Placement,
        spec: &ChildSpec,
    ) -> Result<Child, QuickError> {
        crate::quick::restore(root, path, at, spec)
    }
    fn report(&mut self, name: &str, stats: &Stats) {
        crate::migration::report(name, stats);
    }
    fn forget(&mut self, index: usize) {
        crate::vmbus::forget(index);
    }
    fn heartbeat_state(&self, index: usize) -> Option<Heartbeat> {
        crate::vmbus::heartbeat_state(index)
    }
    fn add_disk(&mut self, index: usize, lun: u8, path: &str) -> Result<(), String> {
        let file = path.strip_prefix('/').unwrap_or(path);
        crate::vmbus::add_disk(index, lun, file, true)
            .map(|_| ())
            .map_err(|e| alloc::format!("{e:?}"))
    }
    fn remove_disk(&mut self, index: usize, lun: u8) -> Result<(), String> {
        crate::vmbus::remove_disk(index, lun).map_err(|e| alloc::format!("{e:?}"))
    }
    fn console(&self, index: usize) -> Vec<String> {
        crate::vmbus::console_tail(index)
    }
}
