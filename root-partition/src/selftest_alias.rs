//! `selftest=alias-unmap` (test only) on the machine: the check itself is
//! the library's (`root_partition::selftest::alias`); the root's plain
//! stores to physical memory it names ([`Probe`]) are here.

use ipc::boot::BootInfo;
use ipc::markers::AliasUnmapped;
use root_partition::selftest::Probe;

use crate::children::Failure;
use crate::hal;
use crate::hal::kernel::HwKernel;

impl Probe for HwKernel {
    fn write_physical(&self, address: u64, value: u64) -> bool {
        hal::write_physical(address, value)
    }
}

/// Runs the self-test; the line to print, or what failed.
pub fn run(info: &BootInfo) -> Result<AliasUnmapped, Failure> {
    root_partition::selftest::alias::run(&HwKernel, info)
}
