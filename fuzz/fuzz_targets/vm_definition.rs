//! Fuzz target: arbitrary bytes as a VM definition file on the data volume
//! (`root_partition::services::vm::definition`, `docs/vm-definition.md`).
//! Invariants: no panic; whatever is accepted is within the limits the
//! partition-construction path relies on, and round-trips: encoding it and
//! decoding again gives the same definition, and encoding that gives the
//! same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use root_partition::config::{MAX_BOOT_DISKS, MAX_CHILD_MEMORY, MIN_CHILD_MEMORY};
use root_partition::services::vm::definition::{MAX_DEFINITION_BYTES, decode, encode, valid_name};

fuzz_target!(|data: &[u8]| {
    let Ok(def) = decode(data) else { return };
    assert!(data.len() <= MAX_DEFINITION_BYTES);
    assert!(valid_name(&def.name));
    let spec = def.child_spec();
    assert!((MIN_CHILD_MEMORY..=MAX_CHILD_MEMORY).contains(&spec.memory));
    assert!((1..=ipc::child::MAX_CHILD_VCPUS).contains(&spec.vcpus));
    assert!(spec.priority <= 7);
    assert_eq!(spec.workload(), def.workload);
    assert_eq!(spec.disks.iter().flatten().count(), def.disks.len());
    assert!(def.disks.len() <= MAX_BOOT_DISKS);
    let bytes = encode(&def);
    let again = decode(&bytes).expect("an accepted definition encodes to a valid file");
    assert_eq!(again, def);
    assert_eq!(encode(&again), bytes);
});
