//! `capctl`: the capvisor administrator's command line. Offline it prepares
//! and inspects the storage of child partitions from any Linux host: VHD
//! virtual hard disks (fixed, dynamic, differencing) and raw images, and
//! exFAT volume images that hold them, and the VM definitions kept on
//! them (`capctl vm ... --volume`). Online it is the client of a node's
//! management API (`capctl --node HOST:PORT vm|node|job|events`, see
//! `api`). It also simulates live migration with the root partition's own
//! engine.
//!
//! Invariants: every command exits 0 only if it did all it was asked; bad
//! files and arguments print one clear `error:` line and exit 1; with
//! `--json` the result (or the error) is one JSON object on standard output.

mod api;
mod disk;
mod image;
mod migrate;
mod vm;
mod vol;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Manage capvisor virtual hard disks and storage volumes.
///
/// Disks are VHD files, the format Hyper-V and Virtual PC use: fixed (all
/// space allocated up front), dynamic (grows as data is written) and
/// differencing (records only what differs from a parent disk, like a
/// Hyper-V checkpoint's .avhd). Raw images are plain byte-for-byte copies.
/// Volumes are exFAT file systems that hold the VHD files, like the NTFS or
/// Cluster Shared Volumes a Hyper-V host keeps its disks on.
#[derive(Parser)]
#[command(name = "capctl", version, propagate_version = true)]
struct Cli {
    /// Print the result as one JSON object instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    global: api::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Virtual hard disks: create, inspect, check, read, write, convert, merge.
    #[command(subcommand)]
    Disk(disk::DiskCommand),
    /// exFAT volume images: format, list, copy files in and out, remove, check.
    #[command(subcommand)]
    Vol(vol::VolCommand),
    /// VMs: on the node (list, show, create, start, stop, ...) or offline
    /// on a data-volume image (define, list --volume, remove).
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// The node: show it, shut it down, replace its API token.
    #[command(subcommand)]
    Node(api::node::NodeCommand),
    /// The node's jobs (long operations): list, show, watch, cancel.
    #[command(subcommand)]
    Job(api::job::JobCommand),
    /// The node's event stream (state changes, jobs), resumable by number.
    Events(api::events::EventsArgs),
    /// Live migration: simulate the pre-copy engine against a model of a child and a link.
    #[command(subcommand)]
    Migrate(migrate::MigrateCommand),
}

/// Where command results go: text for people or one JSON object.
pub struct Output {
    /// Print JSON.
    pub json: bool,
}

impl Output {
    /// Print a result: `text` for people, `value` for `--json`.
    pub fn result(&self, text: &str, value: serde_json::Value) {
        if self.json {
            println!("{value}");
        } else if !text.is_empty() {
            println!("{text}");
        }
    }

    /// A progress bar on standard error (hidden with `--json` or without a terminal).
    pub fn progress(&self, total: u64, what: &str) -> indicatif::ProgressBar {
        if self.json {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(total);
        let style = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what.to_owned());
        bar
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Output { json: cli.json };
    let result = match cli.command {
        Command::Disk(cmd) => disk::run(cmd, &out),
        Command::Vol(cmd) => vol::run(cmd, &out),
        Command::Vm(cmd) => vm::run(cmd, &out, &cli.global),
        Command::Node(cmd) => api::node::run(cmd, &out, &cli.global),
        Command::Job(cmd) => api::job::run(cmd, &out, &cli.global),
        Command::Events(args) => api::events::run(args, &out, &cli.global),
        Command::Migrate(cmd) => migrate::run(cmd, &out),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // A failure the API client described (the node's error body
            // for --json, a message that never holds the token).
            if let Some(failure) = e.downcast_ref::<api::Failure>() {
                if out.json {
                    println!("{}", failure.json);
                }
                eprintln!("capctl: error: {}", failure.message);
                return ExitCode::FAILURE;
            }
            let message = format!("{e:#}");
            if out.json {
                println!("{}", serde_json::json!({ "error": message }));
            }
            eprintln!("capctl: error: {message}");
            ExitCode::FAILURE
        }
    }
}
