//! Fuzz target: arbitrary text as the kernel command line the node reads
//! its words from (`node.poll`, `node.run-for=S`, `node.stop-timeout=S`).
//! Invariants: no panic; accepted times are within the documented limit;
//! no `node.` word is lost (with none taken, every one is reported); the banner and the stop
//! time never overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use root_partition::node::options::{MAX_SECONDS, Options};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    let o = Options::parse(text);
    for s in [o.run_for_s, o.stop_timeout_s].into_iter().flatten() {
        assert!(s <= MAX_SECONDS);
    }
    let node_words = text
        .split_whitespace()
        .filter(|w| w.starts_with("node."))
        .count();
    let taken = o.poll || o.run_for_s.is_some() || o.stop_timeout_s.is_some();
    assert!(o.ignored.len() <= node_words);
    assert!(
        taken || o.ignored.len() == node_words,
        "a node word neither taken nor reported"
    );
    assert!(!o.banner().is_empty());
    let _ = o.stop_at(u64::MAX);
});
