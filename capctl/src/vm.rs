//! `capctl vm ...` offline: define, list and remove VM definitions on a
//! data-volume image, with the root partition's own definition code (one
//! copy of the format, `docs/vm-definition.md`).
//!
//! Invariant: every command that changes the volume flushes it before
//! reporting success; nothing is written unless the definition is valid
//! and its name and id are free.

use crate::Output;
use crate::image::parse_size;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use root_partition::services::vm::definition::{
    self, DiskSlot, Nic, VM_FOLDER, VmDefinition, VmUuid, definition_path, parse_mac,
    saved_state_path,
};
use root_partition::services::vm::store::{self, Store, load_all, remove_if_present};
use serde_json::{Value, json};
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum VmCommand {
    /// Define a VM: write `/vms/NAME.json` on a data-volume image.
    ///
    /// Example: `capctl vm define --volume data.img web --memory 32M
    /// --vcpus 2 --workload kv --disk /web.vhd:0 --autostart`.
    Define {
        /// The data-volume image (exFAT).
        #[arg(long)]
        volume: PathBuf,
        /// The VM's name (1 to 8 letters, digits, `-`, `_`).
        name: String,
        /// Memory, e.g. 32M (a multiple of 2 MiB, 4M to 1G).
        #[arg(long)]
        memory: String,
        /// Virtual processors (1 to 4).
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        /// The child runtime's workload.
        #[arg(long)]
        workload: String,
        /// Workload arguments, comma-separated numbers (up to 4).
        #[arg(long, value_delimiter = ',')]
        args: Vec<u64>,
        /// A disk: `/FILE.vhd:LUN` (or `/FILE.vhd`: the next LUN); repeat for more.
        #[arg(long = "disk")]
        disks: Vec<String>,
        /// A network adapter with this MAC (`02:xx:xx:xx:xx:xx`).
        #[arg(long)]
        mac: Option<String>,
        /// A network adapter whose MAC the node picks.
        #[arg(long, conflicts_with = "mac")]
        nic: bool,
        /// Scheduling priority (0 to 7).
        #[arg(long, default_value_t = 0)]
        priority: u8,
        /// Processor of vCPU 0 (vCPU i gets CPU + i).
        #[arg(long)]
        cpu: Option<u32>,
        /// Start the VM when the node boots (restore it if saved).
        #[arg(long)]
        autostart: bool,
        /// Its id (a UUID; default: a new random one).
        #[arg(long)]
        id: Option<String>,
    },
    /// List the VMs defined on a data-volume image (damaged files are reported).
    List {
        /// The data-volume image (exFAT).
        #[arg(long)]
        volume: PathBuf,
    },
    /// Remove a VM's definition (and its saved state) from a data-volume image.
    Remove {
        /// The data-volume image (exFAT).
        #[arg(long)]
        volume: PathBuf,
        /// The VM's name.
        name: String,
    },
}

use crate::vol::mount;

/// 128 random bits for a new VM's id.
fn random_bits() -> Result<u128> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for a new VM id")?;
    Ok(u128::from_le_bytes(bytes))
}

/// `/FILE:LUN` or `/FILE` (the next free LUN).
fn parse_disks(specs: &[String]) -> Result<Vec<DiskSlot>> {
    let mut disks: Vec<DiskSlot> = Vec::new();
    for spec in specs {
        let (path, lun) = match spec.rsplit_once(':') {
            Some((path, lun)) => (
                path,
                lun.parse::<u8>()
                    .with_context(|| format!("--disk {spec}: LUN {lun:?} is not a number"))?,
            ),
            None => {
                let next = (0..=u8::MAX)
                    .find(|l| !disks.iter().any(|d| d.lun == *l))
                    .unwrap_or(u8::MAX);
                (spec.as_str(), next)
            }
        };
        disks.push(DiskSlot {
            path: path.to_string(),
            lun,
        });
    }
    Ok(disks)
}

/// The definition as JSON output: the file's fields plus its state offline.
fn describe(def: &VmDefinition, saved: bool) -> Value {
    let mut value: Value =
        serde_json::from_slice(&definition::encode(def)).unwrap_or_else(|_| json!({}));
    if let Some(object) = value.as_object_mut() {
        object.remove("format");
        object.insert("state".into(), json!(if saved { "Saved" } else { "Off" }));
        object.insert("file".into(), json!(def.path()));
    }
    value
}

pub fn run(cmd: VmCommand, out: &Output) -> Result<ExitCode> {
    match cmd {
        VmCommand::Define {
            volume,
            name,
            memory,
            vcpus,
            workload,
            args,
            disks,
            mac,
            nic,
            priority,
            cpu,
            autostart,
            id,
        } => {
            let bytes = parse_size(&memory)?;
            if bytes % (1 << 20) != 0 {
                bail!("--memory {memory}: not a whole number of MiB");
            }
            let id = match id {
                Some(text) => VmUuid::parse(&text)
                    .with_context(|| format!("--id {text}: not a UUID (8-4-4-4-12 hex digits)"))?,
                None => VmUuid::from_random(random_bits()?),
            };
            let nic = match mac {
                Some(text) => Some(Nic {
                    mac: Some(
                        parse_mac(&text)
                            .with_context(|| format!("--mac {text}: not six hex octets"))?,
                    ),
                }),
                None => nic.then_some(Nic { mac: None }),
            };
            let def = VmDefinition {
                name,
                id,
                memory_mib: bytes >> 20,
                vcpus,
                workload,
                args,
                disks: parse_disks(&disks)?,
                nic,
                priority,
                cpu,
                autostart,
            }
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid definition: {e}"))?;
            let mut vol = mount(&volume, true)?;
            let report = load_all(&mut vol)?;
            if let Some((other, _)) = report
                .loaded
                .iter()
                .find(|(d, _)| d.name.eq_ignore_ascii_case(&def.name))
            {
                bail!("VM {} is already defined ({})", other.name, other.path());
            }
            if let Some((other, _)) = report.loaded.iter().find(|(d, _)| d.id == def.id) {
                bail!("id {} is already used by VM {}", def.id, other.name);
            }
            let path = definition_path(&def.name);
            if Store::exists(&mut vol, &path)? {
                bail!("{path} exists but does not load (see `capctl vm list`); remove it first");
            }
            for disk in &def.disks {
                if !Store::exists(&mut vol, &disk.path)? {
                    eprintln!(
                        "capctl: warning: {} is not on the volume (yet): the VM will not start without it",
                        disk.path
                    );
                }
            }
            remove_if_present(&mut vol, &saved_state_path(&def.name))?;
            store::replace(&mut vol, &path, &definition::encode(&def))?;
            vol.flush()?;
            out.result(
                &format!("defined VM {} ({}) in {path}", def.name, def.id),
                describe(&def, false),
            );
        }
        VmCommand::List { volume } => {
            let mut vol = mount(&volume, false)?;
            let report = load_all(&mut vol)?;
            let mut lines = vec![format!(
                "{:<8}  {:<5}  {:>6}  {:>5}  {:<12}  {:<9}  {:<36}  {}",
                "NAME", "STATE", "MEMORY", "VCPUS", "WORKLOAD", "AUTOSTART", "ID", "DISKS"
            )];
            for (def, saved) in &report.loaded {
                let disks: Vec<String> = def
                    .disks
                    .iter()
                    .map(|d| format!("{}:{}", d.path, d.lun))
                    .collect();
                lines.push(format!(
                    "{:<8}  {:<5}  {:>5}M  {:>5}  {:<12}  {:<9}  {:<36}  {}",
                    def.name,
                    if *saved { "Saved" } else { "Off" },
                    def.memory_mib,
                    def.vcpus,
                    def.workload,
                    if def.autostart { "yes" } else { "no" },
                    def.id.to_string(),
                    disks.join(" ")
                ));
            }
            for skipped in &report.skipped {
                lines.push(format!("skipped {skipped}"));
            }
            let vms: Vec<Value> = report
                .loaded
                .iter()
                .map(|(def, saved)| describe(def, *saved))
                .collect();
            let skipped: Vec<Value> = report
                .skipped
                .iter()
                .map(|s| json!({ "path": s.path, "reason": s.reason }))
                .collect();
            out.result(
                &lines.join("\n"),
                json!({ "folder": VM_FOLDER, "vms": vms, "skipped": skipped }),
            );
        }
        VmCommand::Remove { volume, name } => {
            if !definition::valid_name(&name) {
                bail!("{name:?} is not a VM name");
            }
            let mut vol = mount(&volume, true)?;
            let path = definition_path(&name);
            if !Store::exists(&mut vol, &path)? {
                bail!("no VM {name} on {} ({path} not found)", volume.display());
            }
            // The order the node deletes in: saved state, then definition.
            remove_if_present(&mut vol, &saved_state_path(&name))?;
            Store::remove(&mut vol, &path)?;
            vol.flush()?;
            out.result(
                &format!("removed VM {name} ({path})"),
                json!({ "removed": name, "file": path }),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
