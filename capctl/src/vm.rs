//! `capctl vm ...`: offline, define, list and remove VM definitions on a
//! data-volume image, with the root partition's own definition code (one
//! copy of the format, `docs/vm-definition.md`); online, the node's VMs
//! through its management API (`crate::api::vm`), with the same options
//! for `vm create` as for `vm define`.
//!
//! Invariant: every command that changes the volume flushes it before
//! reporting success; nothing is written unless the definition is valid
//! and its name and id are free.

use crate::Output;
use crate::api::{self, Global, job::Wait};
use crate::image::parse_size;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
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

/// A VM definition's options, shared by `vm define` (offline) and `vm
/// create` (online): one parser for both.
#[derive(Args)]
pub struct VmSpec {
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
    /// Workload arguments, comma-separated numbers (up to 4); `--arg N` may repeat.
    #[arg(long, visible_alias = "arg", value_delimiter = ',')]
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
}

impl VmSpec {
    /// The validated definition, and whether its id was given (rather
    /// than drawn at random).
    pub fn definition(self) -> Result<(VmDefinition, bool)> {
        let bytes = parse_size(&self.memory)?;
        if bytes % (1 << 20) != 0 {
            bail!("--memory {}: not a whole number of MiB", self.memory);
        }
        let id_given = self.id.is_some();
        let id = match self.id {
            Some(text) => VmUuid::parse(&text)
                .with_context(|| format!("--id {text}: not a UUID (8-4-4-4-12 hex digits)"))?,
            None => VmUuid::from_random(random_bits()?),
        };
        let nic = match self.mac {
            Some(text) => Some(Nic {
                mac: Some(
                    parse_mac(&text)
                        .with_context(|| format!("--mac {text}: not six hex octets"))?,
                ),
            }),
            None => self.nic.then_some(Nic { mac: None }),
        };
        let def = VmDefinition {
            name: self.name,
            id,
            memory_mib: bytes >> 20,
            vcpus: self.vcpus,
            workload: self.workload,
            args: self.args,
            disks: parse_disks(&self.disks)?,
            nic,
            priority: self.priority,
            cpu: self.cpu,
            autostart: self.autostart,
        }
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid definition: {e}"))?;
        Ok((def, id_given))
    }
}

/// A long operation's target: the VM and whether to wait for its job.
#[derive(Args)]
pub struct Target {
    /// The VM's name.
    name: String,
    #[command(flatten)]
    wait: Wait,
}

#[derive(Subcommand)]
pub enum VmCommand {
    /// Define a VM offline: write `/vms/NAME.json` on a data-volume image.
    ///
    /// Example: `capctl vm define --volume data.img web --memory 32M
    /// --vcpus 2 --workload kv --disk /web.vhd:0 --autostart`.
    Define {
        /// The data-volume image (exFAT).
        #[arg(long)]
        volume: PathBuf,
        #[command(flatten)]
        spec: VmSpec,
    },
    /// List the VMs (Get-VM): the node's, or with `--volume` the ones
    /// defined on a data-volume image (offline; damaged files are reported).
    List {
        /// The data-volume image (exFAT): list offline instead of asking the node.
        #[arg(long)]
        volume: Option<PathBuf>,
    },
    /// Remove a VM's definition (and its saved state) from a data-volume image, offline.
    Remove {
        /// The data-volume image (exFAT).
        #[arg(long)]
        volume: PathBuf,
        /// The VM's name.
        name: String,
    },
    /// Create a VM on the node (New-VM); the options of `vm define`.
    ///
    /// Example: `capctl vm create kv --memory 32M --workload kv --disk /alpha.vhd:0 --nic`.
    Create {
        #[command(flatten)]
        spec: VmSpec,
    },
    /// Show one VM of the node (Get-VM NAME).
    Show {
        /// The VM's name.
        name: String,
    },
    /// Start a VM (Start-VM); a saved VM is restored.
    Start(Target),
    /// Stop a VM gracefully through its guest (Stop-VM).
    Stop(Target),
    /// Turn a VM off at once, without asking its guest (Stop-VM -TurnOff).
    TurnOff(Target),
    /// Pause a running VM (Suspend-VM).
    Pause(Target),
    /// Resume a paused VM (Resume-VM).
    Resume(Target),
    /// Save a VM's state to the data volume and turn it off (Save-VM).
    Save(Target),
    /// Restore a saved VM (Start-VM on a saved VM).
    Restore(Target),
    /// Delete a VM that is Off, Saved or Failed (Remove-VM).
    Delete {
        /// The VM's name.
        name: String,
    },
    /// Print a VM's last console lines.
    Console {
        /// The VM's name.
        name: String,
    },
    /// A VM's disks on the node: list, hot add, hot remove.
    #[command(subcommand)]
    Disk(VmDiskCommand),
}

#[derive(Subcommand)]
pub enum VmDiskCommand {
    /// List a VM's disks (Get-VMHardDiskDrive).
    List {
        /// The VM's name.
        name: String,
    },
    /// Attach a disk (Add-VMHardDiskDrive): hot add if the VM runs.
    ///
    /// Example: `capctl vm disk add kv --path /extra.vhd --lun 1`.
    Add {
        /// The VM's name.
        name: String,
        /// The VHD on the node's data volume.
        #[arg(long)]
        path: String,
        /// Its LUN.
        #[arg(long)]
        lun: u8,
        #[command(flatten)]
        wait: Wait,
    },
    /// Detach a disk (Remove-VMHardDiskDrive): hot remove if the VM runs.
    Remove {
        /// The VM's name.
        name: String,
        /// The disk's LUN.
        #[arg(long)]
        lun: u8,
        #[command(flatten)]
        wait: Wait,
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

pub fn run(cmd: VmCommand, out: &Output, global: &Global) -> Result<ExitCode> {
    match cmd {
        VmCommand::Define { volume, spec } => {
            let (def, _) = spec.definition()?;
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
        VmCommand::List { volume: None } => return api::vm::list(global, out),
        VmCommand::List {
            volume: Some(volume),
        } => {
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
        VmCommand::Create { spec } => {
            let (def, id_given) = spec.definition()?;
            let mut body = describe(&def, false);
            if let Some(object) = body.as_object_mut() {
                object.remove("state");
                object.remove("file");
                if !id_given {
                    // The node picks one.
                    object.remove("id");
                }
            }
            return api::vm::create(global, out, &def.name, body);
        }
        VmCommand::Show { name } => return api::vm::show(global, out, &name),
        VmCommand::Start(t) => return api::vm::operation(global, out, &t.name, "start", &t.wait),
        VmCommand::Stop(t) => return api::vm::operation(global, out, &t.name, "stop", &t.wait),
        VmCommand::TurnOff(t) => {
            return api::vm::operation(global, out, &t.name, "turn-off", &t.wait);
        }
        VmCommand::Pause(t) => return api::vm::operation(global, out, &t.name, "pause", &t.wait),
        VmCommand::Resume(t) => {
            return api::vm::operation(global, out, &t.name, "resume", &t.wait);
        }
        VmCommand::Save(t) => return api::vm::operation(global, out, &t.name, "save", &t.wait),
        VmCommand::Restore(t) => {
            return api::vm::operation(global, out, &t.name, "restore", &t.wait);
        }
        VmCommand::Delete { name } => return api::vm::delete(global, out, &name),
        VmCommand::Console { name } => return api::vm::console(global, out, &name),
        VmCommand::Disk(VmDiskCommand::List { name }) => {
            return api::vm::disk_list(global, out, &name);
        }
        VmCommand::Disk(VmDiskCommand::Add {
            name,
            path,
            lun,
            wait,
        }) => return api::vm::disk_add(global, out, &name, &path, lun, &wait),
        VmCommand::Disk(VmDiskCommand::Remove { name, lun, wait }) => {
            return api::vm::disk_remove(global, out, &name, lun, &wait);
        }
    }
    Ok(ExitCode::SUCCESS)
}
