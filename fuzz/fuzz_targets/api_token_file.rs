//! Fuzz target: arbitrary bytes as the data volume's token file
//! (`/node/api-token.sha256`, `Auth::from_file`).
//! Invariants: no panic; a token is configured exactly when the file is 64
//! hex digits and a newline, and then only the token whose digest the file
//! names is accepted (the file's own text never is).
#![no_main]

use libfuzzer_sys::fuzz_target;
use root_partition::services::mgmt::api::auth::{Auth, digest_file, parse_digest, token_digest};

fuzz_target!(|data: &[u8]| {
    let auth = Auth::from_file(data);
    let digest = data.strip_suffix(b"\n").and_then(parse_digest);
    assert_eq!(auth.configured(), digest.is_some());
    let mut header = b"Bearer ".to_vec();
    header.extend_from_slice(data);
    let _ = auth.check(Some(&header));
    if let Some(digest) = digest {
        assert_eq!(
            digest_file(&digest).to_ascii_lowercase(),
            data.to_ascii_lowercase()
        );
        // A token whose digest is the file's passes; the digest text itself does not
        // (unless it hashes to itself, which SHA-256 does not do).
        assert_ne!(token_digest(&data[..64]), digest);
        assert!(auth.check(Some(&header[..header.len() - 1])).is_err());
    }
});
