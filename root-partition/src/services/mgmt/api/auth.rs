//! The API token check: the node keeps only the SHA-256 of the token
//! (`/node/api-token.sha256` on the data volume, 64 hex digits and a
//! newline); a request's `Authorization: Bearer TOKEN` is hashed and the
//! digests compared in constant time (`subtle`).
//!
//! # Invariants
//! - The token itself is never stored, logged or kept: only its digest.
//! - Without a valid digest file every request is refused.

use alloc::string::String;
use alloc::vec::Vec;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::services::vm::store::{self, Store, StoreError};

/// Where the digest lives on the data volume.
pub const TOKEN_FILE: &str = "/node/api-token.sha256";
/// The file's longest accepted size (a longer one is not a digest).
const MAX_FILE: usize = 128;

/// The refusal's message when the node has no token.
pub const NO_TOKEN: &str = "no API token on this node: run capctl node token";

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The node has no (valid) token file.
    NoToken,
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that is not the node's.
    Wrong,
}

impl Refusal {
    /// The message of the 401 answer.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NoToken => NO_TOKEN,
            Refusal::Missing => "missing API token: send Authorization: Bearer TOKEN",
            Refusal::Wrong => "wrong API token",
        }
    }
}

/// The node's token digest, if it has one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Auth {
    digest: Option<[u8; 32]>,
}

/// The digest of `hex` (64 hex digits, either case).
pub fn parse_digest(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
        let text = core::str::from_utf8(pair).ok()?;
        if !text.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// `digest` as the file holds it: 64 lower-case hex digits and a newline.
pub fn digest_file(digest: &[u8; 32]) -> Vec<u8> {
    let mut out = String::with_capacity(65);
    for b in digest {
        out.push_str(&alloc::format!("{b:02x}"));
    }
    out.push('\n');
    out.into_bytes()
}

/// SHA-256 of `token` (as its ASCII bytes).
pub fn token_digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Auth {
    /// No token: every request is refused.
    pub fn none() -> Auth {
        Auth { digest: None }
    }

    /// A node whose token has digest `digest`.
    pub fn with_digest(digest: [u8; 32]) -> Auth {
        Auth {
            digest: Some(digest),
        }
    }

    /// From the digest file's contents: exactly 64 hex digits and a
    /// newline; anything else means no token.
    pub fn from_file(contents: &[u8]) -> Auth {
        Auth {
            digest: contents.strip_suffix(b"\n").and_then(parse_digest),
        }
    }

    /// From [`TOKEN_FILE`] on `store` (none if absent or unreadable).
    pub fn load<S: Store + ?Sized>(store: &mut S) -> Auth {
        match store.read(TOKEN_FILE, MAX_FILE) {
            Ok(contents) => Auth::from_file(&contents),
            Err(_) => Auth::none(),
        }
    }

    /// Writes `digest` to [`TOKEN_FILE`] (crash-safe, [`store::replace`])
    /// and switches to it: the old token stops working at once.
    pub fn replace<S: Store + ?Sized>(
        &mut self,
        store: &mut S,
        digest: [u8; 32],
    ) -> Result<(), StoreError> {
        store::replace(store, TOKEN_FILE, &digest_file(&digest))?;
        self.digest = Some(digest);
        Ok(())
    }

    /// Whether the node has a token.
    pub fn configured(&self) -> bool {
        self.digest.is_some()
    }

    /// Checks an `Authorization` header's value (`Bearer TOKEN`).
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), Refusal> {
        let Some(digest) = &self.digest else {
            return Err(Refusal::NoToken);
        };
        let token = authorization
            .and_then(|v| {
                let (scheme, rest) = v.split_at_checked(7)?;
                scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
            })
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::Missing)?;
        if bool::from(token_digest(token).ct_eq(digest)) {
            Ok(())
        } else {
            Err(Refusal::Wrong)
        }
    }
}
