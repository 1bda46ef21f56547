//! `selftest=alias-unmap` (test only): the root maps its hypercall scratch
//! page a second time, into its shared window, checks that both addresses
//! reach the same frame, unmaps the alias, and reads the page through its
//! original address again. A kernel that tracked mappings per frame, not
//! per mapping, unmapped the original with the alias (issue 14, defect 6),
//! and this read stopped the root with a nested page fault.

use ipc::boot::BootInfo;
use ipc::hypercall::{Call, Rights};
use ipc::markers::AliasUnmapped;

use crate::arch;
use crate::children::{Failure, call, discover};

/// Runs the self-test; the line to print, or what failed.
pub fn run(info: &BootInfo) -> Result<AliasUnmapped, Failure> {
    let root = discover(info)?;
    let window = info.shared_window;
    if window.len() < 4096 {
        return Err(Failure::Check("no shared window"));
    }
    let page = root.scratch;
    let alias = window.end - 4096;
    let first_page = (page - root.ram_range.start) / 4096;
    call(
        "map alias",
        Call::MemoryMap {
            partition: root.authority,
            memory: root.ram,
            first_page,
            gpa: alias,
            pages: 1,
            access: Rights::READ | Rights::WRITE,
        },
    )?;
    let value = AliasUnmapped::TAG | page;
    arch::write_physical(alias, value);
    if arch::read_physical(page) != value {
        return Err(Failure::Check("the alias reaches another frame"));
    }
    call(
        "unmap alias",
        Call::MemoryUnmap {
            partition: root.authority,
            gpa: alias,
            pages: 1,
        },
    )?;
    // Stops the root with a nested page fault if the original went too.
    let value = arch::read_physical(page);
    Ok(AliasUnmapped { page, alias, value })
}
