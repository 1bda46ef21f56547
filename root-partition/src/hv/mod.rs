//! The microkernel as the root's services see it: hypercalls, the scratch
//! page for the calls the kernel writes into the caller's memory, the
//! console and the clock, behind the [`Kernel`] trait.
//!
//! On the machine `hal::HwKernel` makes the calls (the only place with the
//! `unsafe` they need); in host tests [`fake::FakeKernel`] makes them into
//! the real kernel core (`microkernel::testkit`), so a service tested on
//! the host meets the kernel's own checks, quotas and capability rules.

use core::fmt;

use ipc::hypercall::{Call, SlotHandle, Status};

#[cfg(test)]
pub mod fake;

/// The result registers of a hypercall (RDI, RSI, RDX).
pub type Results = [u64; 3];

/// The one page the kernel writes into (or reads from) for the root's
/// `VcpuGetState`, `VcpuSetState`, `DirtyFetch`, `MemoryRead` and
/// `MemoryWrite` calls. Exclusive while a [`Kernel::scratch`] closure runs.
pub trait Scratch {
    /// The page's guest-physical address, to name as a call's buffer.
    fn address(&self) -> u64;
    /// The page.
    fn page(&self) -> &[u8; 4096];
    /// The page, to fill before a call that reads it.
    fn page_mut(&mut self) -> &mut [u8; 4096];
    /// Makes `call`, whose buffer must be this page (else
    /// [`Status::InvalidArgument`] without calling).
    fn call(&mut self, call: &Call) -> Result<Results, Status>;
}

/// Child pages mapped into the root for VMBus rings and buffers
/// ([`Kernel::map_rings`]): ring memory that splits in two.
pub trait SplitRings: ipc::vmbus::memory::RingMemory + Sized {
    /// Splits into `[0, at)` and `[at, len)`.
    fn split_at(self, at: usize) -> (Self, Self);
}

impl SplitRings for partition_rt::SharedRingMemory {
    fn split_at(self, at: usize) -> (Self, Self) {
        partition_rt::SharedRingMemory::split_at(self, at)
    }
}

/// The microkernel, to the root's services.
pub trait Kernel {
    /// Child pages mapped into the root, as ring memory.
    type Rings: SplitRings;

    /// Maps `pages` pages of memory object `memory` from `first_page` into
    /// partition `root` at `gpa` (read-write, `MemoryMap`) and returns them
    /// as ring memory.
    fn map_rings(
        &self,
        root: SlotHandle,
        memory: SlotHandle,
        first_page: u64,
        gpa: u64,
        pages: u64,
    ) -> Result<Self::Rings, Status>;

    /// Makes a hypercall that names no buffer of the caller's (a call that
    /// does is refused with [`Status::InvalidArgument`]: use
    /// [`Kernel::scratch`]).
    fn call(&self, call: &Call) -> Result<Results, Status>;
    /// Runs `f` with the scratch page, held exclusively for its duration.
    fn scratch<T>(
        &self,
        f: impl FnOnce(&mut dyn Scratch) -> Result<T, Status>,
    ) -> Result<T, Status>;
    /// Prints a line on the console.
    fn print(&self, line: fmt::Arguments<'_>);
    /// The time-stamp counter.
    fn ticks(&self) -> u64;
    /// Time-stamp counter ticks per millisecond.
    fn tsc_khz(&self) -> u64;

    /// Prepares `[base, base + len)` of the root's own RAM (a range of the
    /// child pool no partition has yet) by running `fill` on its bytes,
    /// held exclusively meanwhile: how a child's memory is loaded before
    /// the root donates it. [`Status::InvalidArgument`] when the range is
    /// not the root's to fill (outside the pool, unaligned, or in use).
    fn fill_ram(&self, base: u64, len: u64, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), Status>;

    /// Nanoseconds since the counter started.
    fn now_ns(&self) -> u64 {
        ipc::hypercall::timer::clock_ns(self.ticks(), self.tsc_khz())
    }

    /// Makes any call: through the scratch page when the kernel writes
    /// into (or reads from) the caller's memory for it.
    fn any_call(&self, call: &Call) -> Result<Results, Status> {
        if buffer_of(call).is_some() {
            self.scratch(|s| s.call(call))
        } else {
            self.call(call)
        }
    }
}

/// A shared kernel is a kernel (services that share one hold references).
impl<K: Kernel> Kernel for &K {
    type Rings = K::Rings;

    fn map_rings(
        &self,
        root: SlotHandle,
        memory: SlotHandle,
        first_page: u64,
        gpa: u64,
        pages: u64,
    ) -> Result<Self::Rings, Status> {
        (**self).map_rings(root, memory, first_page, gpa, pages)
    }
    fn call(&self, call: &Call) -> Result<Results, Status> {
        (**self).call(call)
    }
    fn scratch<T>(
        &self,
        f: impl FnOnce(&mut dyn Scratch) -> Result<T, Status>,
    ) -> Result<T, Status> {
        (**self).scratch(f)
    }
    fn print(&self, line: fmt::Arguments<'_>) {
        (**self).print(line)
    }
    fn ticks(&self) -> u64 {
        (**self).ticks()
    }
    fn tsc_khz(&self) -> u64 {
        (**self).tsc_khz()
    }
    fn fill_ram(&self, base: u64, len: u64, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), Status> {
        (**self).fill_ram(base, len, fill)
    }
}

/// The buffer page a call names, if the call has one.
pub fn buffer_of(call: &Call) -> Option<u64> {
    match *call {
        Call::VcpuGetState { buffer, .. }
        | Call::VcpuSetState { buffer, .. }
        | Call::DirtyFetch { buffer, .. }
        | Call::MemoryRead { buffer, .. }
        | Call::MemoryWrite { buffer, .. } => Some(buffer),
        _ => None,
    }
}

/// A slot handle from a result register.
pub fn handle(raw: u64) -> Result<SlotHandle, Status> {
    SlotHandle::from_raw(raw)
}

/// Prints a line through a [`Kernel`]: `say!(k, "...", args)`.
#[macro_export]
macro_rules! say {
    ($k:expr, $($arg:tt)*) => {
        $crate::hv::Kernel::print($k, format_args!($($arg)*))
    };
}
