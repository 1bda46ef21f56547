//! Fuzz target: arbitrary bytes as a partition ELF image.
//! Invariants: no panic; an accepted image's segments lie in the window,
//! inside the file, and do not overlap; the entry is in an executable one.
#![no_main]

use ipc::boot::PARTITION_IMAGE_BASE;
use ipc::elf::Image;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(image) = Image::parse(data, PARTITION_IMAGE_BASE, u64::MAX) else { return };
    let segments = image.segments();
    for (i, s) in segments.iter().enumerate() {
        assert!(s.vaddr >= PARTITION_IMAGE_BASE);
        assert!(s.file_size <= s.mem_size);
        assert_eq!(image.file_bytes(s).len() as u64, s.file_size);
        for t in &segments[i + 1..] {
            assert!(s.vaddr + s.mem_size <= t.vaddr || t.vaddr + t.mem_size <= s.vaddr);
        }
    }
    assert!(segments.iter().any(|s| s.execute && s.vaddr <= image.entry && image.entry < s.vaddr + s.mem_size));
});
