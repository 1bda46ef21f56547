//! `capctl` as the client of a node's management API (`docs/management.md`,
//! HTTP/1.1 + JSON under `/api/v1`): the global options that say which
//! node and which token, the HTTP client, and the verbs `vm` (online),
//! `node`, `job` and `events`.
//!
//! Invariants: a token is never printed, logged or put in an error
//! message (errors name where it came from); every failure is one
//! [`Failure`] (one `capctl: error:` line, exit 1, and with `--json` the
//! node's error body, or one of the same shape, on standard output).

pub mod client;
pub mod events;
pub mod job;
pub mod node;
pub mod table;
pub mod token;
pub mod vm;

use clap::Args;
use serde_json::{Value, json};
use std::fmt;
use std::path::PathBuf;

/// The node's default management address: QEMU's forwarded port.
pub const DEFAULT_NODE: &str = "127.0.0.1:7100";

/// Which node to talk to and with which token (global options).
#[derive(Args, Clone, Debug)]
pub struct Global {
    /// The node's management API, HOST:PORT.
    #[arg(long, global = true, env = "CAPVISOR_NODE", default_value = DEFAULT_NODE)]
    pub node: String,
    /// A file holding the API token (else env CAPVISOR_TOKEN, the token
    /// itself, or env CAPVISOR_TOKEN_FILE, a file holding it).
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

/// A failure already put in words: the `capctl: error:` line, and the
/// JSON value `--json` prints on standard output.
#[derive(Debug)]
pub struct Failure {
    /// The one-line message (never holds a token).
    pub message: String,
    /// The node's error body, or one of the same shape made here.
    pub json: Value,
}

impl Failure {
    /// A failure with a code of our own (`{"error":{"code","message"}}`).
    pub fn new(code: &str, message: String) -> Failure {
        let json = json!({ "error": { "code": code, "message": message } });
        Failure { message, json }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}
