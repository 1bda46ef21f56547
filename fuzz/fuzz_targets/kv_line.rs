//! Fuzz target: arbitrary bytes as one line of the key-value protocol (what
//! a network peer sends the `kv` workload). Invariants: no panic; an
//! accepted command respects the key and value limits the service relies on.
#![no_main]

use ipc::kv::{Command, MAX_KEY, MAX_VALUE, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Command::Set(k, v)) => {
            assert!(!k.is_empty() && k.len() <= MAX_KEY && !k.contains(&b' '));
            assert!(v.len() <= MAX_VALUE);
        }
        Ok(Command::Get(k) | Command::Del(k)) => {
            assert!(!k.is_empty() && k.len() <= MAX_KEY && !k.contains(&b' '));
        }
        Ok(Command::Quit) | Err(_) => {}
    }
});
