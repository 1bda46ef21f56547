//! Fuzz target: arbitrary bytes as the start of a `kv` VM's disk (the table
//! the service loads at LUN 0, `ipc::kv::decode`). Invariants: no panic;
//! an accepted table holds as many records as it says, each within the
//! protocol's limits, keys strictly ascending; encoding it again gives a
//! table that decodes to the same records.
#![no_main]

use ipc::kv::{MAX_KEY, MAX_VALUE, decode, encode, encoded_len};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(table) = decode(data) else {
        return;
    };
    let mut previous: Option<&[u8]> = None;
    let mut count = 0u64;
    for (k, v) in table.iter() {
        assert!(!k.is_empty() && k.len() <= MAX_KEY && !k.contains(&b' ') && !k.contains(&b'\n'));
        assert!(v.len() <= MAX_VALUE && !v.contains(&b'\n'));
        assert!(previous.is_none_or(|p| p < k), "keys out of order");
        previous = Some(k);
        count += 1;
    }
    assert_eq!(count, table.len());
    let mut again = vec![0u8; encoded_len(table.iter()) as usize];
    let n = encode(table.iter(), &mut again).expect("an accepted table encodes");
    assert_eq!(n, again.len());
    let back = decode(&again).expect("an encoded table decodes");
    assert!(back.iter().eq(table.iter()));
});
