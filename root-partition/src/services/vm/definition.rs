//! A VM's definition: what the administrator asked for (name, id, memory,
//! vCPUs, workload and arguments, disks, NIC, priority, affinity,
//! autostart), stored as one JSON file per VM under [`VM_FOLDER`] on the
//! data volume. The format is specified in `docs/vm-definition.md`.
//!
//! # Invariants
//! - [`decode`] never panics, whatever the bytes; it refuses files over
//!   [`MAX_DEFINITION_BYTES`], a `format` other than [`FORMAT`], unknown,
//!   missing or duplicate top-level fields, and every out-of-range value,
//!   with an error naming the field.
//! - A [`VmDefinition`] only exists validated: every one converts to a
//!   [`ChildSpec`] ([`VmDefinition::child_spec`] cannot fail), and
//!   `decode(encode(d)) == d`.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use ipc::child::{MAX_CHILD_VCPUS, MAX_WORKLOAD};
use ipc::hypercall::Name;
use ipc::vmbus::network::Mac;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{ChildSpec, DiskName, MAX_BOOT_DISKS, MAX_CHILD_MEMORY, MIN_CHILD_MEMORY};

/// The format version this code reads and writes.
pub const FORMAT: u64 = 1;
/// The folder on the data volume that holds one `NAME.json` per VM (and
/// its saved state, `NAME.vmrs`).
pub const VM_FOLDER: &str = "/vms";
/// Largest definition file accepted.
pub const MAX_DEFINITION_BYTES: usize = 64 << 10;
/// Longest VM name (the partition name of the hypercall ABI, [`Name`]).
pub const MAX_NAME: usize = 8;
/// Most workload arguments.
pub const MAX_ARGS: usize = 4;
/// Highest priority.
pub const MAX_PRIORITY: u8 = 7;
/// Processors the microkernel supports (its `MAX_CPUS`): vCPU `i` runs on
/// `cpu + i`, which must stay below this.
pub const MAX_PROCESSORS: u32 = 64;
/// Memory granule: the child's memory is a whole number of 2 MiB pages.
const MEMORY_GRANULE_MIB: u64 = 2;

/// A definition file's name in [`VM_FOLDER`]: `NAME.json`.
pub fn definition_path(name: &str) -> String {
    format!("{VM_FOLDER}/{name}.json")
}

/// A VM's saved-state file in [`VM_FOLDER`]: `NAME.vmrs` (Hyper-V's
/// extension for runtime state).
pub fn saved_state_path(name: &str) -> String {
    format!("{VM_FOLDER}/{name}.vmrs")
}

/// Why a definition was refused: the field (`disks[1].lun`, or empty for
/// the file as a whole) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefinitionError {
    /// The field, as written in the file (`""`: the whole file).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl DefinitionError {
    fn new(field: &str, reason: impl Into<String>) -> Self {
        DefinitionError {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "field `{}`: {}", self.field, self.reason)
        }
    }
}

impl core::error::Error for DefinitionError {}

/// A VM's permanent identity, independent of its name: 128 bits written
/// as a UUID (`8-4-4-4-12` hex digits, read in either case, written in
/// lower case), like Hyper-V's VMId.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmUuid(pub u128);

impl VmUuid {
    /// A random (version 4) UUID from 128 bits of entropy the caller
    /// gathered (the version and variant bits are set here).
    pub fn from_random(bits: u128) -> VmUuid {
        let version = (bits & !(0xf << 76)) | (0x4 << 76);
        VmUuid((version & !(0x3 << 62)) | (0x2 << 62))
    }

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub fn parse(s: &str) -> Option<VmUuid> {
        let b = s.as_bytes();
        if b.len() != 36 {
            return None;
        }
        let mut value = 0u128;
        for (i, &c) in b.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return None;
                }
                continue;
            }
            let digit = (c as char).to_digit(16)?;
            value = (value << 4) | u128::from(digit);
        }
        Some(VmUuid(value))
    }
}

impl fmt::Display for VmUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (v >> 96) as u32,
            (v >> 80) as u16,
            (v >> 64) as u16,
            (v >> 48) as u16,
            v & 0xffff_ffff_ffff
        )
    }
}

/// One disk: a VHD file on the data volume at a LUN of the VM's storage
/// controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSlot {
    /// The file: `/FILE` in the volume's root folder.
    pub path: String,
    /// Its LUN (below [`MAX_BOOT_DISKS`]).
    pub lun: u8,
}

/// The VM's network adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nic {
    /// Its address (a locally administered unicast address), or `None`:
    /// the root picks one.
    pub mac: Option<Mac>,
}

/// A validated VM definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmDefinition {
    /// Its name: 1 to [`MAX_NAME`] letters, digits, `-`, `_` (unique on
    /// the node, compared without regard to case, as exFAT names are).
    pub name: String,
    /// Its identity.
    pub id: VmUuid,
    /// Memory in MiB (a multiple of 2, within the child limits).
    pub memory_mib: u64,
    /// Virtual processors.
    pub vcpus: u32,
    /// The workload the child runtime runs.
    pub workload: String,
    /// Its arguments (up to [`MAX_ARGS`]).
    pub args: Vec<u64>,
    /// Disks, in LUN order.
    pub disks: Vec<DiskSlot>,
    /// Its network adapter, if any.
    pub nic: Option<Nic>,
    /// Scheduling priority, 0 to [`MAX_PRIORITY`].
    pub priority: u8,
    /// The processor of vCPU 0 (vCPU `i` gets `cpu + i`), or any.
    pub cpu: Option<u32>,
    /// Started (or restored) when the node boots.
    pub autostart: bool,
}

/// Top-level fields: each a JSON value checked by hand, so a wrong type
/// names its field; serde refuses unknown, missing and duplicate ones.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    format: Value,
    name: Value,
    id: Value,
    memory_mib: Value,
    vcpus: Value,
    workload: Value,
    #[serde(default)]
    args: Value,
    #[serde(default)]
    disks: Value,
    #[serde(default)]
    nic: Value,
    #[serde(default)]
    priority: Value,
    #[serde(default)]
    cpu: Value,
    #[serde(default)]
    autostart: Value,
}

/// Only the version, read first so a newer file is refused as such.
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    format: Value,
}

/// The file as written (field order is the documented order).
#[derive(Serialize)]
struct Encoded<'a> {
    format: u64,
    name: &'a str,
    id: String,
    memory_mib: u64,
    vcpus: u32,
    workload: &'a str,
    args: &'a [u64],
    disks: Vec<EncodedDisk<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nic: Option<EncodedNic>,
    priority: u8,
    cpu: Option<u32>,
    autostart: bool,
}

#[derive(Serialize)]
struct EncodedDisk<'a> {
    path: &'a str,
    lun: u8,
}

#[derive(Serialize)]
struct EncodedNic {
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
}

fn json_error(e: &serde_json::Error) -> DefinitionError {
    let text = e.to_string();
    // serde names the field in these messages: `missing field `name``.
    let field = ["missing field `", "unknown field `", "duplicate field `"]
        .iter()
        .find_map(|p| text.split_once(p))
        .and_then(|(_, rest)| rest.split_once('`'))
        .map_or(String::new(), |(f, _)| f.to_string());
    DefinitionError {
        field,
        reason: text,
    }
}

fn integer(v: &Value, field: &str, min: u64, max: u64) -> Result<u64, DefinitionError> {
    let n = v
        .as_u64()
        .ok_or_else(|| DefinitionError::new(field, "must be a whole number"))?;
    if !(min..=max).contains(&n) {
        return Err(DefinitionError::new(
            field,
            format!("{n} is out of range ({min} to {max})"),
        ));
    }
    Ok(n)
}

fn text<'a>(v: &'a Value, field: &str) -> Result<&'a str, DefinitionError> {
    v.as_str()
        .ok_or_else(|| DefinitionError::new(field, "must be a string"))
}

/// Whether `s` is a valid VM name (the boot configuration's child names:
/// 1 to 8 letters, digits, `-` or `_`).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

fn valid_workload(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_WORKLOAD
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Parses `02:xx:xx:xx:xx:xx` (either case): six two-digit hex octets.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for octet in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *octet = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(Mac(mac))
}

/// Whether `mac` may be a VM's address: unicast (group bit clear) and
/// locally administered (bit 1 of the first octet set), e.g. `02:...`.
pub fn mac_allowed(mac: &Mac) -> bool {
    mac.0[0] & 0x03 == 0x02
}

/// Whether `path` may be a disk's: `/FILE`, FILE a valid [`DiskName`].
pub fn valid_disk_path(path: &str) -> bool {
    disk_file(path).is_some()
}

/// The file name of a disk path (`/FILE`, FILE a valid [`DiskName`]).
fn disk_file(path: &str) -> Option<DiskName> {
    DiskName::new(path.strip_prefix('/')?)
}

fn disks(v: &Value) -> Result<Vec<DiskSlot>, DefinitionError> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => return Err(DefinitionError::new("disks", "must be a list")),
    };
    if items.len() > MAX_BOOT_DISKS {
        return Err(DefinitionError::new(
            "disks",
            format!("{} disks, at most {MAX_BOOT_DISKS}", items.len()),
        ));
    }
    let mut out: Vec<DiskSlot> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let field = |f: &str| format!("disks[{i}]{f}");
        let object = item
            .as_object()
            .ok_or_else(|| DefinitionError::new(&field(""), "must be an object"))?;
        if let Some(key) = object
            .keys()
            .find(|k| !matches!(k.as_str(), "path" | "lun"))
        {
            return Err(DefinitionError::new(
                &field(""),
                format!("unknown field `{key}`, expected `path` or `lun`"),
            ));
        }
        let missing = || "missing";
        let path_field = field(".path");
        let path = text(
            object
                .get("path")
                .ok_or_else(|| DefinitionError::new(&path_field, missing()))?,
            &path_field,
        )?;
        if disk_file(path).is_none() {
            return Err(DefinitionError::new(
                &path_field,
                "must be /FILE: a file in the volume's root folder, 1 to 32 letters, digits, \
                 `-`, `_` or `.`, not starting with a dot",
            ));
        }
        let lun_field = field(".lun");
        let lun = integer(
            object
                .get("lun")
                .ok_or_else(|| DefinitionError::new(&lun_field, missing()))?,
            &lun_field,
            0,
            MAX_BOOT_DISKS as u64 - 1,
        )? as u8;
        if out.iter().any(|d| d.lun == lun) {
            return Err(DefinitionError::new(
                &lun_field,
                format!("LUN {lun} is used twice"),
            ));
        }
        if out.iter().any(|d| d.path.eq_ignore_ascii_case(path)) {
            return Err(DefinitionError::new(
                &path_field,
                format!("{path} is attached twice"),
            ));
        }
        out.push(DiskSlot {
            path: path.to_string(),
            lun,
        });
    }
    out.sort_by_key(|d| d.lun);
    Ok(out)
}

fn nic(v: &Value) -> Result<Option<Nic>, DefinitionError> {
    let object = match v {
        Value::Null => return Ok(None),
        Value::Object(object) => object,
        _ => return Err(DefinitionError::new("nic", "must be an object")),
    };
    if let Some(key) = object.keys().find(|k| k.as_str() != "mac") {
        return Err(DefinitionError::new(
            "nic",
            format!("unknown field `{key}`, expected `mac`"),
        ));
    }
    let mac = match object.get("mac") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let s = text(v, "nic.mac")?;
            let mac = parse_mac(s).ok_or_else(|| {
                DefinitionError::new("nic.mac", "must be six hex octets, e.g. 02:63:76:00:00:01")
            })?;
            if !mac_allowed(&mac) {
                return Err(DefinitionError::new(
                    "nic.mac",
                    "must be a locally administered unicast address (first octet 02, 06, 0a, \
                     0e, ...)",
                ));
            }
            Some(mac)
        }
    };
    Ok(Some(Nic { mac }))
}

/// Reads a definition file, refusing anything not exactly right (see the
/// module's invariants).
pub fn decode(bytes: &[u8]) -> Result<VmDefinition, DefinitionError> {
    if bytes.len() > MAX_DEFINITION_BYTES {
        return Err(DefinitionError::new(
            "",
            format!(
                "file of {} bytes, at most {MAX_DEFINITION_BYTES}",
                bytes.len()
            ),
        ));
    }
    // serde would also fill a struct from a JSON list, in field order.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(DefinitionError::new("", "must be one JSON object"));
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| json_error(&e))?;
    match probe.format {
        Value::Null => return Err(DefinitionError::new("format", "missing")),
        Value::Number(ref n) if n.as_u64() == Some(FORMAT) => {}
        ref other => {
            return Err(DefinitionError::new(
                "format",
                format!("unsupported format version {other}; this node reads version {FORMAT}"),
            ));
        }
    }
    let raw: RawDefinition = serde_json::from_slice(bytes).map_err(|e| json_error(&e))?;
    let _ = raw.format;
    let name = text(&raw.name, "name")?;
    if !valid_name(name) {
        return Err(DefinitionError::new(
            "name",
            format!("{name:?}: must be 1 to {MAX_NAME} letters, digits, `-` or `_`"),
        ));
    }
    let id = VmUuid::parse(text(&raw.id, "id")?).ok_or_else(|| {
        DefinitionError::new("id", "must be a UUID, xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")
    })?;
    let memory_mib = integer(
        &raw.memory_mib,
        "memory_mib",
        MIN_CHILD_MEMORY >> 20,
        MAX_CHILD_MEMORY >> 20,
    )?;
    if !memory_mib.is_multiple_of(MEMORY_GRANULE_MIB) {
        return Err(DefinitionError::new(
            "memory_mib",
            format!("{memory_mib} is not a multiple of {MEMORY_GRANULE_MIB}"),
        ));
    }
    let vcpus = integer(&raw.vcpus, "vcpus", 1, u64::from(MAX_CHILD_VCPUS))? as u32;
    let workload = text(&raw.workload, "workload")?;
    if !valid_workload(workload) {
        return Err(DefinitionError::new(
            "workload",
            format!("must be 1 to {MAX_WORKLOAD} letters, digits, `-`, `_` or `.`"),
        ));
    }
    let args = match &raw.args {
        Value::Null => Vec::new(),
        Value::Array(items) if items.len() <= MAX_ARGS => items
            .iter()
            .enumerate()
            .map(|(i, v)| integer(v, &format!("args[{i}]"), 0, u64::MAX))
            .collect::<Result<Vec<u64>, _>>()?,
        Value::Array(items) => {
            return Err(DefinitionError::new(
                "args",
                format!("{} arguments, at most {MAX_ARGS}", items.len()),
            ));
        }
        _ => return Err(DefinitionError::new("args", "must be a list of numbers")),
    };
    let priority = match &raw.priority {
        Value::Null => 0,
        v => integer(v, "priority", 0, u64::from(MAX_PRIORITY))? as u8,
    };
    let cpu = match &raw.cpu {
        Value::Null => None,
        v => {
            let last = u64::from(MAX_PROCESSORS - vcpus);
            Some(integer(v, "cpu", 0, last)? as u32)
        }
    };
    let autostart = match &raw.autostart {
        Value::Null => false,
        Value::Bool(b) => *b,
        _ => return Err(DefinitionError::new("autostart", "must be true or false")),
    };
    Ok(VmDefinition {
        name: name.to_string(),
        id,
        memory_mib,
        vcpus,
        workload: workload.to_string(),
        args,
        disks: disks(&raw.disks)?,
        nic: nic(&raw.nic)?,
        priority,
        cpu,
        autostart,
    })
}

/// Writes a definition file (pretty-printed JSON, a final newline).
pub fn encode(def: &VmDefinition) -> Vec<u8> {
    let encoded = Encoded {
        format: FORMAT,
        name: &def.name,
        id: def.id.to_string(),
        memory_mib: def.memory_mib,
        vcpus: def.vcpus,
        workload: &def.workload,
        args: &def.args,
        disks: def
            .disks
            .iter()
            .map(|d| EncodedDisk {
                path: &d.path,
                lun: d.lun,
            })
            .collect(),
        nic: def.nic.map(|n| EncodedNic {
            mac: n.mac.map(|m| m.to_string()),
        }),
        priority: def.priority,
        cpu: def.cpu,
        autostart: def.autostart,
    };
    // Serializing plain structs with string keys cannot fail.
    let mut out = serde_json::to_vec_pretty(&encoded).unwrap_or_default();
    out.push(b'\n');
    out
}

impl VmDefinition {
    /// Checks a definition built in code (not read from a file) by the
    /// same rules as [`decode`].
    pub fn validate(self) -> Result<VmDefinition, DefinitionError> {
        decode(&encode(&self))
    }

    /// The partition-construction path's specification of this VM. The
    /// NIC is not part of it (every child gets one, `docs/vm-definition.md`).
    pub fn child_spec(&self) -> ChildSpec {
        let mut workload = [0u8; MAX_WORKLOAD];
        let len = self.workload.len().min(MAX_WORKLOAD);
        workload[..len].copy_from_slice(&self.workload.as_bytes()[..len]);
        let mut args = [0u64; MAX_ARGS];
        for (slot, arg) in args.iter_mut().zip(&self.args) {
            *slot = *arg;
        }
        let mut disks = [None; MAX_BOOT_DISKS];
        for disk in &self.disks {
            if let Some(slot) = disks.get_mut(usize::from(disk.lun)) {
                *slot = disk_file(&disk.path);
            }
        }
        ChildSpec {
            name: Name::new(&self.name),
            memory: self.memory_mib << 20,
            vcpus: self.vcpus,
            workload,
            args,
            cpu: self.cpu,
            priority: self.priority,
            disks,
        }
    }

    /// Where this VM's definition file is.
    pub fn path(&self) -> String {
        definition_path(&self.name)
    }

    /// Where this VM's saved state is (when it has one).
    pub fn saved_state_path(&self) -> String {
        saved_state_path(&self.name)
    }
}

#[cfg(test)]
#[path = "definition_tests.rs"]
mod tests;
