//! The root's scratch page: the one page the microkernel writes into for
//! the root (`VcpuGetState`, `DirtyFetch`, `MemoryRead`) or reads from
//! (`VcpuSetState`, `MemoryWrite` to a child), as an owned value.
//!
//! # Invariants
//! - The page is reached only through the [`Scratch`] inside [`SCRATCH`]:
//!   whoever holds the lock holds the only way to it, so no Rust reference
//!   to the page is alive while a call the kernel writes it for runs
//!   ([`Scratch::call`] takes `&mut self`, and the references
//!   [`Scratch::page`] and [`Scratch::page_mut`] hand out borrow it).
//! - [`Scratch::call`] only makes calls whose buffer is this page, and
//!   never a `MemoryWrite` into the root itself (the kernel would write the
//!   root's memory behind Rust's back).

use ipc::hypercall::{Call, Results, SlotHandle, Status};
use partition_rt::sync::SpinLock;
use root_partition::hv::buffer_of;

/// The scratch page once the memory plan placed it (see [`init`]).
static SCRATCH: SpinLock<Option<Scratch>> = SpinLock::new(None);

/// The scratch page (not `Clone`: one exists).
pub struct Scratch {
    address: u64,
    /// The root's own partition capability: `MemoryWrite` to it is refused.
    own: SlotHandle,
}

/// Places the scratch page at `address` (a page of the root's RAM that
/// nothing else uses: the memory plan keeps the page below the heap for
/// it); `own` is the root's partition capability. Once: later calls are
/// ignored and return false.
pub(crate) fn init(address: u64, own: SlotHandle) -> bool {
    let mut s = SCRATCH.lock();
    if s.is_some() || !address.is_multiple_of(4096) {
        return false;
    }
    *s = Some(Scratch { address, own });
    true
}

/// Runs `f` with the scratch page, locked for its duration
/// ([`Status::InvalidState`] before [`init`]).
pub fn with<T>(f: impl FnOnce(&mut Scratch) -> Result<T, Status>) -> Result<T, Status> {
    match SCRATCH.lock().as_mut() {
        Some(scratch) => f(scratch),
        None => Err(Status::InvalidState),
    }
}

impl Scratch {
    /// The page's guest-physical address, to name as a call's buffer.
    pub fn address(&self) -> u64 {
        self.address
    }

    /// The page.
    pub fn page(&self) -> &[u8; 4096] {
        // SAFETY: the page is a page of the root's RAM, identity mapped,
        // that only this (unique) value reaches (module invariant); the
        // reference borrows `self`, so no call writes the page while it
        // lives.
        unsafe { &*(self.address as *const [u8; 4096]) }
    }

    /// The page, to fill before a call that reads it.
    pub fn page_mut(&mut self) -> &mut [u8; 4096] {
        // SAFETY: as for `page`; `&mut self` makes the reference unique.
        unsafe { &mut *(self.address as *mut [u8; 4096]) }
    }

    /// Makes `call`, whose buffer must be this page (else
    /// [`Status::InvalidArgument`] without calling); a `MemoryWrite` into
    /// the root's own partition is refused the same way.
    pub fn call(&mut self, call: &Call) -> Result<Results, Status> {
        if buffer_of(call) != Some(self.address) {
            return Err(Status::InvalidArgument);
        }
        if let Call::MemoryWrite { partition, .. } = *call
            && partition == self.own
        {
            return Err(Status::InvalidArgument);
        }
        // SAFETY: the kernel writes only the buffer page (checked above:
        // this page, not the root itself for MemoryWrite), and no Rust
        // reference to the page is alive: `page`/`page_mut` borrow `self`,
        // which this call holds mutably.
        unsafe { partition_rt::hypercall::hypercall_unchecked(call) }
    }
}
