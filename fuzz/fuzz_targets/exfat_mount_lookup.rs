//! Fuzz target: mount arbitrary bytes as an exFAT volume, then look up
//! paths, list, read and check. Invariant under test: no input panics or
//! hangs; every failure is an `Err`.
#![no_main]

use exfat::{MemDevice, Volume};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut vol) = Volume::mount(MemDevice::new(data.to_vec())) else { return };
    for path in ["/", "/a", "/disks/base.vhd", "/DISKS", "/x/y/z"] {
        let _ = vol.stat(path);
        if let Ok(entries) = vol.list(path) {
            for e in entries.iter().take(8) {
                let child = format!("{}/{}", path.trim_end_matches('/'), e.name);
                if let Ok(file) = vol.open(&child) {
                    let mut buf = [0u8; 512];
                    let _ = vol.read(&file, 0, &mut buf);
                    let _ = vol.extents(&file);
                }
                let _ = vol.list(&child);
            }
        }
    }
    let _ = vol.check();
});
