//! [`HwKernel`]: the root's [`Kernel`] on the machine (hypercalls through
//! `partition_rt`, the scratch page of [`super::scratch`], the console, the
//! time-stamp counter).

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use ipc::hypercall::{Call, Status};
use root_partition::hv::{Kernel, Results, Scratch, buffer_of};

/// The microkernel, reached by hypercalls (no state: a copy is free).
#[derive(Clone, Copy, Default)]
pub struct HwKernel;

/// Counter ticks per millisecond, from the boot page ([`set_tsc_khz`]).
static TSC_KHZ: AtomicU64 = AtomicU64::new(0);

/// Records the counter's rate from the boot page.
pub fn set_tsc_khz(khz: u64) {
    TSC_KHZ.store(khz, Ordering::Release);
}

impl Scratch for super::scratch::Scratch {
    fn address(&self) -> u64 {
        super::scratch::Scratch::address(self)
    }
    fn page(&self) -> &[u8; 4096] {
        super::scratch::Scratch::page(self)
    }
    fn page_mut(&mut self) -> &mut [u8; 4096] {
        super::scratch::Scratch::page_mut(self)
    }
    fn call(&mut self, call: &Call) -> Result<Results, Status> {
        super::scratch::Scratch::call(self, call)
    }
}

impl Kernel for HwKernel {
    type Rings = partition_rt::SharedRingMemory;

    fn map_rings(
        &self,
        root: ipc::hypercall::SlotHandle,
        memory: ipc::hypercall::SlotHandle,
        first_page: u64,
        gpa: u64,
        pages: u64,
    ) -> Result<Self::Rings, Status> {
        super::map_rings(root, memory, first_page, gpa, pages)
    }

    fn call(&self, call: &Call) -> Result<Results, Status> {
        if buffer_of(call).is_some() {
            return Err(Status::InvalidArgument);
        }
        partition_rt::hypercall(call)
    }

    fn scratch<T>(
        &self,
        f: impl FnOnce(&mut dyn Scratch) -> Result<T, Status>,
    ) -> Result<T, Status> {
        super::scratch::with(|s| f(s))
    }

    fn print(&self, line: fmt::Arguments<'_>) {
        partition_rt::console::print_line(line);
    }

    fn fill_ram(&self, base: u64, len: u64, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), Status> {
        let mut lease = super::ram::lease(base, len).map_err(|_| Status::InvalidArgument)?;
        fill(lease.bytes());
        Ok(())
    }

    fn ticks(&self) -> u64 {
        partition_rt::rdtsc()
    }

    fn tsc_khz(&self) -> u64 {
        TSC_KHZ.load(Ordering::Acquire)
    }
}
