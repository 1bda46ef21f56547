//! The root's test-only self-tests, as far as they are hypercalls and
//! checks (the kernel command line asks for them; `ipc::platform`,
//! `ipc::markers`): the attack modes' bookkeeping and the power calls
//! ([`attacks`]), and the alias-unmap check ([`alias`]). Generic over
//! [`Kernel`]: on the machine the binary runs them with `HwKernel`
//! (`selftest_attacks.rs`, `selftest_alias.rs`, which keep the port I/O,
//! MMIO and DMA the attacks need); on the host the same code makes its
//! calls into the real kernel core (`hv::fake::FakeKernel`), whose
//! refusals the host tests check.

pub mod alias;
pub mod attacks;

use crate::hv::Kernel;

/// A plain store to guest-physical memory outside the root's own RAM,
/// through the root's SLAT: what the kernel mapped there (a page of the
/// shared window) is reached, an address the SLAT does not map stops the
/// root (a nested page fault; the call does not return).
pub trait Probe: Kernel {
    /// Writes `value` at `address` (8-byte aligned, outside the root's
    /// RAM, where Rust objects live); false without writing otherwise.
    fn write_physical(&self, address: u64, value: u64) -> bool;
}

#[cfg(test)]
mod tests;
