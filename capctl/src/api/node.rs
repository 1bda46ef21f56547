//! `capctl node ...`: show the node, shut it down (a job), and make a new
//! API token — offline on a data-volume image (`--volume`, the node not
//! running) or online (`PUT /node/token` with the current token).
//!
//! Invariants: the node only ever gets the token's SHA-256; the new
//! token is written to its file (mode 0600) before the node or the volume
//! learns its hash, and takes the file's place only after they did, so a
//! failure leaves the old token working and its file as it was.

use super::client::{Client, Method};
use super::job::{self, Wait};
use super::token::{self, HASH_PATH, Pending};
use super::{Global, table};
use crate::Output;
use crate::vol::mount;
use anyhow::{Context, Result};
use clap::Subcommand;
use root_partition::services::vm::store;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Show the node: state, uptime, VMs, API statistics.
    Show,
    /// Shut the node down: every VM stopped gracefully, the volume
    /// flushed, the machine powered off (Stop-Computer).
    Shutdown {
        #[command(flatten)]
        wait: Wait,
    },
    /// Make a new API token (32 random bytes) and give the node its SHA-256.
    ///
    /// Offline (`--volume IMG`): writes `/node/api-token.sha256` on the
    /// data-volume image. Online: replaces the node's token (the current
    /// one authenticates the change and stops working at once). The token
    /// goes to `--out`, else to the --token-file / CAPVISOR_TOKEN_FILE
    /// file, else to standard output.
    Token {
        /// The data-volume image (exFAT): set the token offline.
        #[arg(long)]
        volume: Option<PathBuf>,
        /// Where to write the new token (mode 0600).
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
}

/// `capctl node ...`.
pub fn run(cmd: NodeCommand, out: &Output, global: &Global) -> Result<ExitCode> {
    match cmd {
        NodeCommand::Show => {
            let client = Client::new(global)?;
            let node = client.get("/node", "node")?;
            out.result(&table::node_details(&node), node);
            Ok(ExitCode::SUCCESS)
        }
        NodeCommand::Shutdown { wait } => {
            let client = Client::new(global)?;
            let answer = client.call(Method::Post, "/node/shutdown", None, "node")?;
            job::accepted(&client, answer, &wait, out)
        }
        NodeCommand::Token { volume, out: path } => {
            let path = path.or_else(|| token::file_of(global).map(|(p, _)| p));
            token(global, out, volume, path)
        }
    }
}

/// Where the new token's hash goes.
enum Target {
    /// `/node/api-token.sha256` on this data-volume image.
    Offline(PathBuf),
    /// The running node (`PUT /node/token`).
    Online(Client),
}

fn token(
    global: &Global,
    out: &Output,
    volume: Option<PathBuf>,
    path: Option<PathBuf>,
) -> Result<ExitCode> {
    // Online: the current token is needed (and checked) before anything
    // is made.
    let target = match volume {
        Some(image) => Target::Offline(image),
        None => Target::Online(Client::new(global)?),
    };
    let new = token::generate()?;
    let sha256 = token::digest(&new);
    let pending = match &path {
        Some(p) => Some(Pending::write(p, &new)?),
        None => None,
    };
    let installed = match &target {
        Target::Offline(image) => (|| -> Result<String> {
            let mut vol = mount(image, true)?;
            store::replace(&mut vol, HASH_PATH, format!("{sha256}\n").as_bytes())
                .with_context(|| format!("cannot write {HASH_PATH} on {}", image.display()))?;
            vol.flush()
                .with_context(|| format!("cannot flush {}", image.display()))?;
            Ok(format!("{HASH_PATH} on {}", image.display()))
        })(),
        Target::Online(client) => client
            .call(
                Method::Put,
                "/node/token",
                Some(&json!({ "sha256": sha256 })),
                "node token",
            )
            .map(|_| format!("the node at {}", client.node())),
    };
    let whereto = match installed {
        Ok(whereto) => whereto,
        Err(e) => {
            if let Some(p) = pending {
                p.abandon();
            }
            return Err(e);
        }
    };
    match pending {
        Some(p) => {
            let file = p.commit()?;
            out.result(
                &format!(
                    "new API token written to {} (mode 0600); its SHA-256 is in {whereto}",
                    file.display()
                ),
                json!({ "token_file": file, "sha256": sha256, "installed": whereto }),
            );
        }
        // No file was given for it: standard output is the only place.
        None => out.result(
            &new,
            json!({ "token": new, "sha256": sha256, "installed": whereto }),
        ),
    }
    Ok(ExitCode::SUCCESS)
}
