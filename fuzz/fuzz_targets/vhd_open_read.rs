//! Fuzz target: open arbitrary bytes as a VHD, then read, write, check and
//! resolve parents. Invariant under test: no input panics or hangs; every
//! failure is an `Err`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhd::{ChainAccess, MemDevice, ParentLocation, ParentResolver, Vhd};

/// Resolves every parent to a copy of the same bytes (exercises chains and loops).
struct SameBytes(Vec<u8>);

impl ParentResolver<MemDevice> for SameBytes {
    fn open_parent(&mut self, _: usize, _: &[ParentLocation], _: &str) -> vhd::Result<MemDevice> {
        Ok(MemDevice::new(self.0.clone()))
    }
}

fuzz_target!(|data: &[u8]| {
    let mut device = MemDevice::new(data.to_vec());
    device.limit = data.len() as u64 + (8 << 20);
    let mut resolver = SameBytes(data.to_vec());
    let access = ChainAccess { writable: true, writable_parent: false };
    let Ok(mut disk) = Vhd::open_chain(device, access, &mut resolver) else {
        let _ = Vhd::open(MemDevice::new(data.to_vec())).map(|mut d| d.parent_locations());
        return;
    };
    let size = disk.size();
    let mut buf = vec![0u8; 4096];
    for offset in [0, size / 3, size.saturating_sub(4096), size.saturating_sub(100)] {
        let _ = disk.read_at(offset, &mut buf);
    }
    let _ = disk.write_at(size / 2, &[0x5a; 700]);
    let _ = disk.read_at(size / 2, &mut buf[..700]);
    let _ = disk.flush();
    let _ = disk.check();
    let _ = disk.allocated_ranges();
});
