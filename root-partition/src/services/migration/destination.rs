//! [`ChildDestination`]: a new partition as the engine's
//! [`Destination`], written through hypercalls (memory writes and vCPU
//! states through the scratch page).

use alloc::vec::Vec;

use ipc::hypercall::{Call, SlotHandle, Status};
use ipc::migration::{DeviceKind, Header};

use crate::hv::Kernel;
use crate::migrate::{Destination, PAGE};

/// The destination partition, written through hypercalls (a live
/// migration's, or a restored child's).
pub struct ChildDestination<'a, K: Kernel> {
    /// The kernel.
    pub kernel: &'a K,
    /// The partition.
    pub partition: SlotHandle,
    /// Its vCPUs, not started.
    pub vcpus: Vec<SlotHandle>,
    /// The page count the stream must have, if known.
    pub pages: Option<u64>,
    /// Device records kept (a restore's), or `None` to ignore them (on one
    /// node the bus stays in the root).
    pub devices: Option<Vec<(DeviceKind, Vec<u8>)>>,
}

impl<K: Kernel> Destination for ChildDestination<'_, K> {
    type Error = Status;

    fn write_page(&mut self, page: u64, data: &[u8; PAGE]) -> Result<(), Status> {
        if page == 0 {
            return Ok(());
        }
        let partition = self.partition;
        self.kernel.scratch(|s| {
            s.page_mut().copy_from_slice(data);
            let buffer = s.address();
            s.call(&Call::MemoryWrite {
                partition,
                gpa: page * 4096,
                buffer,
            })
            .map(|_| ())
        })
    }

    fn set_vcpu_state(&mut self, index: u16, bytes: &[u8]) -> Result<(), Status> {
        set_vcpu_state(self.kernel, &self.vcpus, index, bytes)
    }

    fn device_state(&mut self, kind: DeviceKind, instance: u8, bytes: &[u8]) -> Result<(), Status> {
        let Some(devices) = self.devices.as_mut() else {
            return Ok(());
        };
        if instance != 0 || devices.iter().any(|(k, _)| *k == kind) {
            return Err(Status::InvalidArgument);
        }
        devices.push((kind, bytes.to_vec()));
        Ok(())
    }

    fn begin(&mut self, header: &Header) -> Result<(), Status> {
        if usize::from(header.vcpus) != self.vcpus.len()
            || self.pages.is_some_and(|p| p != header.pages)
        {
            return Err(Status::InvalidArgument);
        }
        Ok(())
    }

    fn zero_pages(&mut self, first: u64, count: u64) -> Result<(), Status> {
        let zero = [0u8; PAGE];
        for page in first..first.saturating_add(count) {
            self.write_page(page, &zero)?;
        }
        Ok(())
    }
}

/// Sets vCPU `index` of `vcpus` to a saved state (through the scratch page).
pub fn set_vcpu_state<K: Kernel>(
    kernel: &K,
    vcpus: &[SlotHandle],
    index: u16,
    bytes: &[u8],
) -> Result<(), Status> {
    let vcpu = *vcpus.get(index as usize).ok_or(Status::InvalidArgument)?;
    kernel.scratch(|s| {
        let page = s.page_mut();
        page.fill(0);
        page.get_mut(..bytes.len())
            .ok_or(Status::InvalidArgument)?
            .copy_from_slice(bytes);
        let buffer = s.address();
        s.call(&Call::VcpuSetState { vcpu, buffer }).map(|_| ())
    })
}
