//! Fuzz target: arbitrary text as the root partition's boot configuration.
//! Invariants: no panic; every accepted child fits the limits the root relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use root_partition::config::{Action, MAX_CHILD_MEMORY, MIN_CHILD_MEMORY, scenario};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else { return };
    for name in ["demo", "a", "s"] {
        if let Ok(s) = scenario(text, name) {
            for action in s.actions() {
                if let Action::Start(c) = action {
                    assert!((MIN_CHILD_MEMORY..=MAX_CHILD_MEMORY).contains(&c.memory));
                    assert!((1..=4).contains(&c.vcpus));
                    assert!(c.priority <= 7);
                }
            }
        }
    }
});
