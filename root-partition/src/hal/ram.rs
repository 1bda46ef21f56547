//! The root's RAM as owned values: the boot modules (read-only, for the
//! root's whole life) and leases on ranges of the child pool (read-write,
//! one holder at a time: the root fills a child's memory before donating
//! it).
//!
//! # Invariants
//! - A [`Lease`] covers a range of the pool that no other live lease
//!   overlaps ([`lease`] checks the registry under its lock); the pool
//!   lies above the heap and the scratch page (the memory plan), so a
//!   lease's bytes are reachable through it alone.
//! - The modules are boot data the root never writes and nobody frees.

use alloc::vec::Vec;

use ipc::boot::{BootInfo, PhysRange};
use partition_rt::sync::SpinLock;

/// The pool and the ranges leased from it now.
struct Registry {
    pool: Option<PhysRange>,
    leased: Vec<(u64, u64)>,
}

static REGISTRY: SpinLock<Registry> = SpinLock::new(Registry {
    pool: None,
    leased: Vec::new(),
});

/// Sets the pool leases come from (once, from the memory plan; later
/// calls are ignored and return false).
pub(crate) fn set_pool(pool: PhysRange) -> bool {
    let mut r = REGISTRY.lock();
    if r.pool.is_some() || !pool.start.is_multiple_of(4096) || pool.end < pool.start {
        return false;
    }
    r.pool = Some(pool);
    true
}

/// Why a range cannot be leased.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseError {
    /// No pool yet, or the range is not inside it (or empty, or unaligned).
    OutsidePool,
    /// Another lease holds part of the range.
    Busy,
}

/// Exclusive use of `[base, base + len)` of the pool until dropped.
pub struct Lease {
    base: u64,
    len: u64,
}

/// Leases `[base, base + len)`: the range must be page-aligned, inside the
/// pool and overlap no live lease.
pub fn lease(base: u64, len: u64) -> Result<Lease, LeaseError> {
    let mut r = REGISTRY.lock();
    let pool = r.pool.ok_or(LeaseError::OutsidePool)?;
    let end = base.checked_add(len).ok_or(LeaseError::OutsidePool)?;
    if len == 0 || !base.is_multiple_of(4096) || base < pool.start || end > pool.end {
        return Err(LeaseError::OutsidePool);
    }
    if r.leased.iter().any(|&(b, l)| base < b + l && b < end) {
        return Err(LeaseError::Busy);
    }
    r.leased.push((base, len));
    Ok(Lease { base, len })
}

impl Lease {
    /// The range's bytes.
    pub fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the range is the root's RAM (inside the pool), identity
        // mapped, and no other lease or Rust object reaches it (module
        // invariant); the slice borrows the lease mutably.
        unsafe { core::slice::from_raw_parts_mut(self.base as *mut u8, self.len as usize) }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut r = REGISTRY.lock();
        if let Some(i) = r
            .leased
            .iter()
            .position(|&(b, l)| b == self.base && l == self.len)
        {
            r.leased.swap_remove(i);
        }
    }
}

/// The boot modules the microkernel loaded for the root.
#[derive(Clone, Copy)]
pub struct Modules {
    /// The child runtime's ELF image (empty if none was loaded).
    pub child_image: &'static [u8],
    /// The boot configuration (`boot.cfg`).
    pub config: &'static [u8],
}

static MODULES: SpinLock<Option<Modules>> = SpinLock::new(None);

/// Records the modules of `info` (once, at boot: the boot page's ranges
/// are the microkernel's, checked by `BootInfo::from_page` to lie in the
/// root's boot area).
pub(crate) fn set_modules(info: &BootInfo) {
    let mut m = MODULES.lock();
    if m.is_some() {
        return;
    }
    let bytes = |r: PhysRange| -> &'static [u8] {
        // SAFETY: the range is boot data in the root's RAM, identity
        // mapped, which the root never writes nor frees (module
        // invariant), so shared references to it are sound for ever.
        unsafe { core::slice::from_raw_parts(r.start as *const u8, r.len() as usize) }
    };
    *m = Some(Modules {
        child_image: bytes(info.child_image),
        config: bytes(info.config),
    });
}

/// The boot modules (empty before boot recorded them).
pub fn modules() -> Modules {
    MODULES.lock().unwrap_or(Modules {
        child_image: &[],
        config: &[],
    })
}
