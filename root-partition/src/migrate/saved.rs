//! The device records a saved-state file carries beside the root's VMBus
//! state (`docs/migration.md`, "Saved-state files"): the child's capability
//! layout, its specification and its disks. They come back from a file, so
//! they are decoded as foreign input: every decoder checks everything and
//! never panics (fuzz target `saved_records`).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use ipc::child::MAX_WORKLOAD;
use ipc::hypercall::{Name, SlotHandle};

use crate::config::{ChildSpec, MAX_BOOT_DISKS};

/// Device record (`DeviceKind::Other`): the capability layout.
pub const CAPS_DEVICE: u8 = 0x80;
/// Device record (`DeviceKind::Other`): the root's side of the VMBus.
pub const BUS_DEVICE: u8 = 0x81;
/// Device record (`DeviceKind::Other`): the child's specification.
pub const SPEC_DEVICE: u8 = 0x82;
/// Bytes of one capability entry.
pub const CAP_ENTRY: usize = 10;
/// Bytes of the specification record.
pub const SPEC_BYTES: usize = MAX_WORKLOAD + 32 + 2;

/// A slot's role, as saved.
pub mod role {
    /// The child's capability on itself.
    pub const SELF: u8 = 0;
    /// The port it signals to reach the root.
    pub const TO_ROOT: u8 = 1;
    /// The port the root signals it on.
    pub const FROM_ROOT: u8 = 2;
    /// A VMBus channel's port it signals.
    pub const SIGNAL: u8 = 3;
    /// A VMBus channel's port the root signals it on.
    pub const EVENT: u8 = 4;
}

/// VMBus channels per child (control + offers).
pub const CHANNELS: u8 = 5;

/// One saved slot of the child's capability space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotEntry {
    /// Index and generation.
    pub at: SlotHandle,
    /// What it names ([`role`]).
    pub role: u8,
    /// The channel, for [`role::SIGNAL`] and [`role::EVENT`].
    pub channel: u8,
    /// Its rights (bits).
    pub rights: u32,
}

/// Why a saved record is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SavedError {
    /// The record's length is not what its content needs.
    Length(&'static str),
    /// A capability entry out of range (slot, role or channel).
    Capability(SlotEntry),
    /// The specification's priority or processor is out of range.
    Spec,
    /// A disk entry: LUN out of range, or a path that is not UTF-8.
    Disk,
}

impl fmt::Display for SavedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SavedError::Length(what) => write!(f, "{what} record of the wrong length"),
            SavedError::Capability(e) => write!(f, "capability entry out of range: {e:?}"),
            SavedError::Spec => f.write_str("specification out of range"),
            SavedError::Disk => f.write_str("disk entry out of range"),
        }
    }
}

/// Encodes the capability layout: per entry index u16, generation u16,
/// role u8, channel u8, rights u32 (little-endian).
pub fn encode_caps(entries: &[SlotEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * CAP_ENTRY);
    for e in entries {
        out.extend_from_slice(&e.at.index.to_le_bytes());
        out.extend_from_slice(&e.at.generation.to_le_bytes());
        out.push(e.role);
        out.push(e.channel);
        out.extend_from_slice(&e.rights.to_le_bytes());
    }
    out
}

/// Decodes [`encode_caps`]'s bytes; refuses slots past 255, unknown roles,
/// channels past the last, the same slot twice and the same role twice.
pub fn decode_caps(bytes: &[u8]) -> Result<Vec<SlotEntry>, SavedError> {
    if !bytes.len().is_multiple_of(CAP_ENTRY) {
        return Err(SavedError::Length("capability"));
    }
    let mut out: Vec<SlotEntry> = Vec::with_capacity(bytes.len() / CAP_ENTRY);
    for c in bytes.chunks_exact(CAP_ENTRY) {
        let e = SlotEntry {
            at: SlotHandle {
                index: u16::from_le_bytes([c[0], c[1]]),
                generation: u16::from_le_bytes([c[2], c[3]]),
            },
            role: c[4],
            channel: c[5],
            rights: u32::from_le_bytes([c[6], c[7], c[8], c[9]]),
        };
        // One slot per role (per channel for the channel ports): a restore
        // makes one port per role.
        let channel = if e.role >= role::SIGNAL { e.channel } else { 0 };
        if e.at.index >= 256
            || e.role > role::EVENT
            || e.channel >= CHANNELS
            || out.iter().any(|o| {
                o.at.index == e.at.index
                    || (o.role == e.role && (o.role < role::SIGNAL || o.channel == channel))
            })
        {
            return Err(SavedError::Capability(e));
        }
        out.push(e);
    }
    Ok(out)
}

/// Encodes a child's specification: workload (32 bytes), args (4 × u64),
/// priority u8, processor u8 (0xff: any).
pub fn encode_spec(spec: &ChildSpec) -> Vec<u8> {
    let mut out = Vec::with_capacity(SPEC_BYTES);
    out.extend_from_slice(&spec.workload);
    for a in spec.args {
        out.extend_from_slice(&a.to_le_bytes());
    }
    out.push(spec.priority);
    out.push(spec.cpu.map_or(0xff, |c| c.min(0xfe) as u8));
    out
}

/// Decodes [`encode_spec`]'s bytes into the specification of child `name`
/// with `memory` bytes and `vcpus` vCPUs (from the stream header).
pub fn decode_spec(
    bytes: &[u8],
    name: Name,
    memory: u64,
    vcpus: u32,
) -> Result<ChildSpec, SavedError> {
    if bytes.len() != SPEC_BYTES {
        return Err(SavedError::Length("specification"));
    }
    let mut workload = [0u8; MAX_WORKLOAD];
    workload.copy_from_slice(&bytes[..MAX_WORKLOAD]);
    let mut args = [0u64; 4];
    for (a, word) in args
        .iter_mut()
        .zip(bytes[MAX_WORKLOAD..MAX_WORKLOAD + 32].chunks_exact(8))
    {
        let mut b = [0u8; 8];
        b.copy_from_slice(word);
        *a = u64::from_le_bytes(b);
    }
    let (priority, cpu) = (bytes[MAX_WORKLOAD + 32], bytes[MAX_WORKLOAD + 33]);
    if priority > ipc::hypercall::MAX_PRIORITY {
        return Err(SavedError::Spec);
    }
    Ok(ChildSpec {
        name,
        memory,
        vcpus,
        workload,
        args,
        cpu: (cpu != 0xff).then_some(u32::from(cpu)),
        priority,
        disks: [None; MAX_BOOT_DISKS],
    })
}

/// Encodes a child's disks: per LUN, lun u8, path length u8, path (cut at
/// 255 bytes).
pub fn encode_luns(luns: &[(u8, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (lun, path) in luns {
        let bytes = path.as_bytes();
        let len = bytes.len().min(255);
        out.push(*lun);
        out.push(len as u8);
        out.extend_from_slice(&bytes[..len]);
    }
    out
}

/// Decodes [`encode_luns`]'s bytes; refuses LUNs past the controller's,
/// paths that are not UTF-8, a LUN twice and a cut entry.
pub fn decode_luns(mut bytes: &[u8]) -> Result<Vec<(u8, String)>, SavedError> {
    let mut out: Vec<(u8, String)> = Vec::new();
    while let [lun, len, rest @ ..] = bytes {
        let len = usize::from(*len);
        let path = rest
            .get(..len)
            .and_then(|p| core::str::from_utf8(p).ok())
            .ok_or(SavedError::Disk)?;
        if usize::from(*lun) >= ipc::vmbus::storage::MAX_LUNS || out.iter().any(|(l, _)| l == lun) {
            return Err(SavedError::Disk);
        }
        out.push((*lun, String::from(path)));
        bytes = &rest[len..];
    }
    if !bytes.is_empty() {
        return Err(SavedError::Length("disk"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u16, generation: u16, role: u8, channel: u8) -> SlotEntry {
        SlotEntry {
            at: SlotHandle { index, generation },
            role,
            channel,
            rights: 0x21,
        }
    }

    #[test]
    fn records_round_trip() {
        let caps = [entry(0, 0, role::SELF, 0), entry(3, 7, role::SIGNAL, 2)];
        assert_eq!(decode_caps(&encode_caps(&caps)), Ok(caps.to_vec()));
        let mut spec = ChildSpec {
            name: Name::new("q1"),
            memory: 64 << 20,
            vcpus: 2,
            workload: [0; MAX_WORKLOAD],
            args: [1, 2, 3, u64::MAX],
            cpu: Some(1),
            priority: 3,
            disks: [None; MAX_BOOT_DISKS],
        };
        spec.workload[..8].copy_from_slice(b"memdirty");
        let back = decode_spec(&encode_spec(&spec), spec.name, spec.memory, 2).unwrap();
        assert_eq!(back, spec);
        let luns = [(0, String::from("/alpha.vhd")), (5, String::from("/x"))];
        assert_eq!(decode_luns(&encode_luns(&luns)), Ok(luns.to_vec()));
        assert_eq!(decode_luns(&[]), Ok(Vec::new()));
    }

    #[test]
    fn bad_records_are_refused() {
        let good = encode_caps(&[entry(1, 0, role::TO_ROOT, 0)]);
        assert_eq!(
            decode_caps(&good[..9]),
            Err(SavedError::Length("capability"))
        );
        for bad in [
            entry(256, 0, role::SELF, 0),
            entry(1, 0, 5, 0),
            entry(1, 0, role::EVENT, CHANNELS),
        ] {
            assert_eq!(
                decode_caps(&encode_caps(&[bad])),
                Err(SavedError::Capability(bad))
            );
        }
        let twice = encode_caps(&[entry(1, 0, role::SELF, 0), entry(1, 1, role::TO_ROOT, 0)]);
        assert!(decode_caps(&twice).is_err());
        let role_twice = encode_caps(&[
            entry(1, 0, role::FROM_ROOT, 0),
            entry(2, 0, role::FROM_ROOT, 0),
        ]);
        assert!(decode_caps(&role_twice).is_err());
        let two_channels = [entry(1, 0, role::SIGNAL, 0), entry(2, 0, role::SIGNAL, 1)];
        assert_eq!(
            decode_caps(&encode_caps(&two_channels)),
            Ok(two_channels.to_vec())
        );
        let name = Name::new("x");
        assert_eq!(
            decode_spec(&[0; 10], name, 0, 1),
            Err(SavedError::Length("specification"))
        );
        let mut spec = [0u8; SPEC_BYTES];
        spec[MAX_WORKLOAD + 32] = 8;
        assert_eq!(decode_spec(&spec, name, 0, 1), Err(SavedError::Spec));
        assert_eq!(decode_luns(&[64, 1, b'a']), Err(SavedError::Disk));
        assert_eq!(decode_luns(&[0, 2, b'a']), Err(SavedError::Disk));
        assert_eq!(decode_luns(&[0, 1, 0xff]), Err(SavedError::Disk));
        assert_eq!(
            decode_luns(&[0, 1, b'a', 0, 1, b'b']),
            Err(SavedError::Disk)
        );
        assert_eq!(decode_luns(&[0]), Err(SavedError::Length("disk")));
    }
}
