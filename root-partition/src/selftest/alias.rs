//! `selftest=alias-unmap` (test only): the root maps its hypercall scratch
//! page a second time, into its shared window, checks that both addresses
//! reach the same frame, unmaps the alias, and reads the page through its
//! original address again. A kernel that tracked mappings per frame, not
//! per mapping, unmapped the original with the alias (issue 14, defect 6),
//! and this read stopped the root with a nested page fault.

use ipc::boot::BootInfo;
use ipc::hypercall::{Call, Rights};
use ipc::markers::AliasUnmapped;

use super::Probe;
use crate::partition::{Failure, discover};

/// Runs the self-test; the line to print, or what failed.
pub fn run<K: Probe>(k: &K, info: &BootInfo) -> Result<AliasUnmapped, Failure> {
    let root = discover(info)?;
    let window = info.shared_window;
    if window.len() < 4096 {
        return Err(Failure::Check("no shared window"));
    }
    let page = root.scratch;
    let alias = window.end - 4096;
    let first_page = (page - root.ram_range.start) / 4096;
    k.call(&Call::MemoryMap {
        partition: root.authority,
        memory: root.ram,
        first_page,
        gpa: alias,
        pages: 1,
        access: Rights::READ | Rights::WRITE,
    })
    .map_err(|s| Failure::Call("map alias", s))?;
    let value = AliasUnmapped::TAG | page;
    let read_scratch = || {
        k.scratch(|s| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&s.page()[..8]);
            Ok(u64::from_le_bytes(word))
        })
        .map_err(|e| Failure::Call("scratch", e))
    };
    if !k.write_physical(alias, value) {
        return Err(Failure::Check("the alias lies in the root's RAM"));
    }
    if read_scratch()? != value {
        return Err(Failure::Check("the alias reaches another frame"));
    }
    k.call(&Call::MemoryUnmap {
        partition: root.authority,
        gpa: alias,
        pages: 1,
    })
    .map_err(|s| Failure::Call("unmap alias", s))?;
    // Stops the root with a nested page fault if the original went too.
    let value = read_scratch()?;
    Ok(AliasUnmapped { page, alias, value })
}
