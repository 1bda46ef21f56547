//! Fuzz target: arbitrary bytes as the boot pages partitions decode (the
//! root's boot-information page, a child's boot page, a vCPU state page).
//! Invariants: no panic; whatever decodes re-encodes to a page that
//! decodes to the same value.
#![no_main]

use ipc::boot::BootInfo;
use ipc::child::ChildBootInfo;
use ipc::vcpu_state::VcpuState;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut page = [0u8; 4096];
    let n = data.len().min(4096);
    page[..n].copy_from_slice(&data[..n]);
    // Make the magic numbers likely so the decoders get past them.
    if data.first().is_some_and(|b| b & 1 == 0) {
        page[..8].copy_from_slice(&ipc::boot::BOOT_INFO_MAGIC.to_le_bytes());
        page[8..12].copy_from_slice(&ipc::boot::BOOT_INFO_VERSION.to_le_bytes());
    }
    if let Ok(info) = BootInfo::from_page(&page) {
        let _ = (info.memory(), info.reserved(), info.caps(), info.cmdline());
        assert_eq!(BootInfo::from_page(&info.to_page()).map(|i| i.to_page()), Ok(info.to_page()));
    }
    if data.first().is_some_and(|b| b & 2 == 0) {
        page[..8].copy_from_slice(&ipc::child::CHILD_BOOT_MAGIC.to_le_bytes());
        page[8..12].copy_from_slice(&ipc::child::CHILD_BOOT_VERSION.to_le_bytes());
    }
    if let Ok(child) = ChildBootInfo::from_page(&page) {
        let _ = child.workload();
        assert_eq!(ChildBootInfo::from_page(&child.to_page()), Ok(child));
    }
    let state = VcpuState::from_page(&page);
    assert_eq!(VcpuState::from_page(&state.to_page()), state);
});
