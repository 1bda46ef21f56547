//! Fuzz target: the device records of a saved-state file the root reads
//! back at a restore (`root_partition::migrate::saved`): the capability
//! layout, the child's specification and its disks. The first byte picks
//! the record, the rest is its content. Invariants: no panic; whatever
//! decodes is in range and encodes back to the same bytes.
#![no_main]

use ipc::hypercall::Name;
use libfuzzer_sys::fuzz_target;
use root_partition::migrate::saved::{
    CHANNELS, decode_caps, decode_luns, decode_spec, encode_caps, encode_luns, encode_spec, role,
};

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            if let Ok(caps) = decode_caps(bytes) {
                assert!(caps.iter().all(|e| e.at.index < 256
                    && e.role <= role::EVENT
                    && e.channel < CHANNELS));
                assert_eq!(encode_caps(&caps), bytes);
            }
        }
        1 => {
            if let Ok(spec) = decode_spec(bytes, Name::new("f"), 1 << 20, 1) {
                assert!(spec.priority <= ipc::hypercall::MAX_PRIORITY);
                assert_eq!(encode_spec(&spec), bytes);
            }
        }
        _ => {
            if let Ok(luns) = decode_luns(bytes) {
                assert!(luns.iter().all(|(l, _)| usize::from(*l) < 64));
                assert_eq!(encode_luns(&luns), bytes);
            }
        }
    }
});
