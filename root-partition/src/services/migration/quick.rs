//! Quick migration: the root saves a running child to a file on the data
//! volume and restores it later into a new partition, where it continues.
//!
//! The file is a migration stream (`ipc::migration`, flag
//! `FLAG_SAVED_STATE`) written by the same pre-copy engine as a live
//! migration — one pass while the child runs, then the child paused and
//! the pages it dirtied, its vCPU states and these device records:
//!
//! | kind | instance | content |
//! |---|---|---|
//! | other `0x80` | 0 | capability layout: per occupied slot of the child's space, 10 bytes: index u16, generation u16, role u8 (0 itself, 1 `to_root`, 2 `from_root`, 3 a channel's signal port, 4 its event port), channel u8, rights u32 |
//! | other `0x81` | 0 | the root's side of its VMBus (`vsp::bus_state`) |
//! | other `0x82` | 0 | its specification: workload (32 bytes), args (4 × u64), priority u8, processor u8 (0xff: any) |
//! | storage | 0 | its disks: per LUN, lun u8, path length u8, path |
//!
//! After the save the caller destroys the child. A restore reads the file
//! back into a new partition (its memory anywhere, made by the caller:
//! [`Restoring`]), gives it new ports in the saved slots
//! (`CapDelegateAt`), rebuilds its bus over the restored rings
//! ([`BusHost::restore_bus`]), sets its vCPU states and starts it.
//!
//! # Invariants
//! - Between the save of the bus state and the child's destruction the
//!   root never serves its bus: what the rings hold is served once, after
//!   the restore.
//! - A save that fails leaves the child running; a restore that fails
//!   leaves the caller to destroy what it created.
//! - A file that is not a complete, intact saved state is refused (the
//!   stream's header, records and end checksum are checked before the
//!   child starts).

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use exfat::File;
use ipc::boot::cap_kind;
use ipc::child::CHILD_EVENT_VECTOR;
use ipc::hypercall::{Call, Name, Rights, SlotHandle, Status};
use ipc::migration::{DeviceKind, FLAG_SAVED_STATE, HEADER_LEN, Header};
use vhd::BlockDevice;

use super::{BusHost, ChildDestination, ChildSource, RestoredBus, Tsc};
use crate::disks::SharedVolume;
use crate::hv::Kernel;
use crate::layout::Layout;
use crate::migrate::engine::{DeviceOut, Halt};
use crate::migrate::saved::{
    BUS_DEVICE, CAPS_DEVICE, SPEC_DEVICE, SavedError, SlotEntry, decode_caps, decode_luns,
    decode_spec, encode_caps, encode_luns, encode_spec, role,
};
use crate::migrate::{self, Control, Phase, Policy, Receiver, Stats};
use crate::partition::{Child, Failure, Root};
use crate::services::vmbus::{CHANNELS, Grant};

/// File bytes written per volume write.
const FILE_CHUNK: usize = 256 << 10;

/// Why a save or a restore failed.
// The fields are read through `Debug` when the failure is printed.
#[allow(dead_code)]
#[derive(Debug)]
pub enum QuickError {
    /// No data volume to save to.
    NoVolume,
    /// The file could not be created, written or read.
    File(exfat::Error),
    /// A hypercall failed.
    Call(&'static str, Status),
    /// A capability of the child has no role a restore could give again.
    Capability(u16),
    /// The engine stopped (the child keeps running): why, where.
    Aborted(String),
    /// The file is not a saved state this root can restore.
    Format(String),
    /// A device record of the file is malformed.
    Record(SavedError),
    /// No memory for the restored child.
    NoMemory,
}

impl From<Failure> for QuickError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Call(what, status) => QuickError::Call(what, status),
            other => QuickError::Format(alloc::format!("{other:?}")),
        }
    }
}

fn call<K: Kernel>(kernel: &K, what: &'static str, c: Call) -> Result<[u64; 3], QuickError> {
    kernel.any_call(&c).map_err(|s| QuickError::Call(what, s))
}

fn slot(what: &'static str, raw: u64) -> Result<SlotHandle, QuickError> {
    SlotHandle::from_raw(raw).map_err(|s| QuickError::Call(what, s))
}

/// Bytes of memory of the child saved in `path` (from its header).
pub fn saved_memory<D: BlockDevice>(
    volume: &SharedVolume<D>,
    path: &str,
) -> Result<u64, QuickError> {
    let file = volume.lock().open(path).map_err(QuickError::File)?;
    Ok(read_header(volume, &file)?.pages * 4096)
}

/// The roles of the child's capabilities, from `CapInspect` and the
/// root's own handles on the same objects.
pub fn inspect_caps<K: Kernel, B: BusHost>(
    kernel: &K,
    bus: &B,
    child: &Child,
    index: usize,
) -> Result<Vec<SlotEntry>, QuickError> {
    let to_root = bus.to_root_port(index);
    let from_root = child.from_root.map_or(u64::MAX, SlotHandle::raw);
    let channels = bus.channel_ports(index);
    let mut entries = Vec::new();
    for i in 0..256u16 {
        let r = call(
            kernel,
            "inspect",
            Call::CapInspect {
                partition: child.partition,
                index: i,
            },
        )?;
        let kind = ((r[0] >> 16) & 0xff) as u32;
        if kind == 0 {
            continue;
        }
        let at = SlotHandle {
            index: i,
            generation: r[0] as u16,
        };
        let own = r[2];
        let (role, channel) = if kind == cap_kind::PARTITION && own == child.partition.raw() {
            (role::SELF, 0)
        } else if kind == cap_kind::PORT && own == to_root {
            (role::TO_ROOT, 0)
        } else if kind == cap_kind::PORT && own == from_root {
            (role::FROM_ROOT, 0)
        } else if let Some((ch, _, _)) = channels
            .iter()
            .find(|c| kind == cap_kind::PORT && c.1 == own)
        {
            (role::SIGNAL, *ch as u8)
        } else if let Some((ch, _, _)) = channels
            .iter()
            .find(|c| kind == cap_kind::PORT && c.2 == own)
        {
            (role::EVENT, *ch as u8)
        } else {
            return Err(QuickError::Capability(i));
        };
        entries.push(SlotEntry {
            at,
            role,
            channel,
            rights: r[1] as u32,
        });
    }
    Ok(entries)
}

/// The stream into a file on the volume, in large writes.
pub struct FileTransport<D: BlockDevice> {
    volume: SharedVolume<D>,
    file: File,
    offset: u64,
    staged: Vec<u8>,
}

impl<D: BlockDevice> FileTransport<D> {
    /// A transport writing `file` of `volume` from its start.
    pub fn new(volume: SharedVolume<D>, file: File) -> Self {
        FileTransport {
            volume,
            file,
            offset: 0,
            staged: Vec::with_capacity(FILE_CHUNK + ipc::migration::MAX_RECORD),
        }
    }

    fn write_staged(&mut self) -> Result<(), exfat::Error> {
        if self.staged.is_empty() {
            return Ok(());
        }
        self.volume
            .lock()
            .write(&mut self.file, self.offset, &self.staged)?;
        self.offset += self.staged.len() as u64;
        self.staged.clear();
        Ok(())
    }

    /// Writes what is staged and flushes the volume; the file's length.
    pub fn finish(mut self) -> Result<u64, exfat::Error> {
        self.write_staged()?;
        self.volume.lock().flush()?;
        Ok(self.offset)
    }
}

impl<D: BlockDevice> migrate::Transport for FileTransport<D> {
    type Error = exfat::Error;

    fn send(&mut self, bytes: &[u8]) -> Result<(), exfat::Error> {
        self.staged.extend_from_slice(bytes);
        if self.staged.len() >= FILE_CHUNK {
            self.write_staged()?;
        }
        Ok(())
    }
}

/// Serves every bus while the child runs, none once it is paused.
struct Serving<'a, B: BusHost>(&'a B);

impl<B: BusHost> Control for Serving<'_, B> {
    fn proceed(&mut self, phase: Phase) -> bool {
        if let Phase::Precopy { .. } = phase {
            self.0.service_all();
        }
        true
    }
}

/// What a save adds to the child's device records.
pub struct SaveExtras {
    caps: Vec<u8>,
    spec: Vec<u8>,
    index: usize,
}

impl SaveExtras {
    /// Emits the device records (while the child is paused).
    pub fn emit<B: BusHost>(&self, bus: &B, out: &mut DeviceOut<'_>) -> Result<(), Halt> {
        out(DeviceKind::Other(CAPS_DEVICE), 0, &self.caps)?;
        out(DeviceKind::Other(SPEC_DEVICE), 0, &self.spec)?;
        let mut saved = vec![0u8; ipc::migration::MAX_DEVICE_STATE];
        let (len, luns) = bus.save_bus(self.index, &mut saved).ok_or(Halt)?;
        out(DeviceKind::Other(BUS_DEVICE), 0, &saved[..len])?;
        out(DeviceKind::Storage, 0, &encode_luns(&luns))
    }
}

/// Saves `child` (bus `index`) to `path` on `volume`; the child is paused
/// at the end (the caller destroys it). On failure it runs on.
pub fn save<K: Kernel, B: BusHost, D: BlockDevice>(
    kernel: &K,
    bus: &B,
    volume: &SharedVolume<D>,
    child: &Child,
    index: usize,
    path: &str,
) -> Result<(Stats, u64), QuickError> {
    let caps = encode_caps(&inspect_caps(kernel, bus, child, index)?);
    let file = {
        let mut v = volume.lock();
        let _ = v.remove(path);
        v.create(path).map_err(QuickError::File)?
    };
    let mut transport = FileTransport::new(volume.clone(), file);
    let mut source = ChildSource::new(kernel, bus, child, index);
    source.extras = Some(SaveExtras {
        caps,
        spec: encode_spec(&child.spec),
        index,
    });
    // One pass while it runs, then the rest paused: a short outage.
    let policy = Policy {
        max_passes: 1,
        ..Policy::default()
    };
    let mut clock = Tsc::new(kernel);
    let stats = migrate::engine::migrate_with_flags(
        &mut source,
        &mut transport,
        &mut clock,
        &mut Serving(bus),
        &policy,
        child.spec.name.as_str(),
        FLAG_SAVED_STATE,
    )
    .map_err(|a| QuickError::Aborted(alloc::format!("{:?} in {}", a.reason, a.phase.name())))?;
    match transport.finish() {
        Ok(bytes) => Ok((stats, bytes)),
        Err(e) => {
            let _ = source.resume_after_save();
            Err(QuickError::File(e))
        }
    }
}

/// Reads the stream header at the start of `file`: refused unless it is a
/// capvisor saved state.
pub fn read_header<D: BlockDevice>(
    volume: &SharedVolume<D>,
    file: &File,
) -> Result<Header, QuickError> {
    struct Grab(Option<Header>);
    impl ipc::migration::RecordSink for Grab {
        type Error = ();
        fn header(&mut self, h: &Header) -> Result<(), ()> {
            self.0 = Some(*h);
            Err(())
        }
        fn record(&mut self, _: &ipc::migration::Record<'_>) -> Result<(), ()> {
            Err(())
        }
    }
    let mut bytes = [0u8; HEADER_LEN];
    let n = volume
        .lock()
        .read(file, 0, &mut bytes)
        .map_err(QuickError::File)?;
    let mut grab = Grab(None);
    let mut decoder = Box::new(ipc::migration::Decoder::new());
    let _ = decoder.feed(&bytes[..n], &mut grab);
    let header = grab.0.ok_or(QuickError::Format(String::from(
        "not a capvisor saved state",
    )))?;
    if header.flags & FLAG_SAVED_STATE == 0 {
        return Err(QuickError::Format(String::from(
            "a migration stream, not a saved state",
        )));
    }
    Ok(header)
}

/// Where a restored child goes (what the root's VM manager decides).
pub struct Placement {
    /// Host-physical base of free memory for the child.
    pub base: u64,
    /// Its bus (and vector) index.
    pub index: usize,
    /// The child runtime image's span, for the child's layout.
    pub image_span: (u64, u64),
}

/// The partition a restore fills: made by the caller from the header
/// (memory mapped from GPA 0x1000, one vCPU per saved vCPU, not started).
pub struct Restoring {
    /// The partition.
    pub partition: SlotHandle,
    /// Its memory object.
    pub memory: SlotHandle,
    /// Its own capability on itself (the saved layout must agree).
    pub self_cap: SlotHandle,
    /// Its vCPUs.
    pub vcpus: Vec<SlotHandle>,
    /// Host-physical base of its memory.
    pub base: u64,
    /// Its bus (and vector) index.
    pub index: usize,
    /// Its layout.
    pub layout: Layout,
}

/// Reads the saved state in `file` (whose header is `header`) into the
/// partition `into`, gives it its ports in the saved slots, rebuilds its
/// bus and starts it. On failure the caller destroys the partition and
/// forgets its bus.
pub fn restore_into<K: Kernel, B: BusHost, D: BlockDevice>(
    kernel: &K,
    bus: &B,
    root: &Root,
    volume: &SharedVolume<D>,
    file: &File,
    header: &Header,
    into: Restoring,
) -> Result<Child, QuickError> {
    let name = Name::new(header.name());
    let memory = header.pages * 4096;
    let Restoring {
        partition,
        memory: child_memory,
        self_cap,
        vcpus,
        base,
        index,
        layout,
    } = into;
    let mut receiver = Receiver::new(ChildDestination {
        kernel,
        partition,
        vcpus: vcpus.clone(),
        pages: Some(header.pages),
        devices: Some(Vec::new()),
    });
    let mut chunk = vec![0u8; FILE_CHUNK];
    let mut offset = 0;
    while offset < file.len() {
        let n = volume
            .lock()
            .read(file, offset, &mut chunk)
            .map_err(QuickError::File)?;
        if n == 0 {
            break;
        }
        receiver
            .feed(&chunk[..n])
            .map_err(|e| QuickError::Format(alloc::format!("{e:?}")))?;
        offset += n as u64;
    }
    let (restored, _) = receiver
        .finish()
        .map_err(|e| QuickError::Format(alloc::format!("{e:?}")))?;
    let devices = restored.devices.unwrap_or_default();
    let device = |kind: DeviceKind| {
        devices
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, b)| b.as_slice())
            .ok_or(QuickError::Format(alloc::format!("no {kind:?} record")))
    };
    let caps = decode_caps(device(DeviceKind::Other(CAPS_DEVICE))?).map_err(QuickError::Record)?;
    let spec = decode_spec(
        device(DeviceKind::Other(SPEC_DEVICE))?,
        name,
        memory,
        u32::from(header.vcpus),
    )
    .map_err(QuickError::Record)?;
    let luns = decode_luns(device(DeviceKind::Storage)?).map_err(QuickError::Record)?;
    let saved_bus = device(DeviceKind::Other(BUS_DEVICE))?;
    let vcpu0 = *vcpus
        .first()
        .ok_or(QuickError::Format(String::from("no vCPU")))?;
    // Its capabilities, slot for slot.
    let mut from_root = None;
    // (channel, signal slot, event slot)
    let mut channels: Vec<(u8, Option<SlotHandle>, Option<SlotHandle>)> = Vec::new();
    for e in &caps {
        match e.role {
            role::SELF if e.at == self_cap => {}
            role::SELF => {
                return Err(QuickError::Format(alloc::format!(
                    "self capability at {:?}",
                    e.at
                )));
            }
            role::TO_ROOT => {
                bus.make_to_root(root, index, partition, Some(e.at))?;
            }
            role::FROM_ROOT => {
                let port = slot("port", call(kernel, "port", Call::PortCreate)?[0])?;
                call(
                    kernel,
                    "bind",
                    Call::PortBind {
                        port,
                        vcpu: vcpu0,
                        vector: CHILD_EVENT_VECTOR,
                    },
                )?;
                call(
                    kernel,
                    "grant",
                    Call::CapDelegateAt {
                        slot: port,
                        target: partition,
                        // What the root gives, whatever the file says.
                        rights: Rights::BIND,
                        at: e.at,
                    },
                )?;
                from_root = Some(port);
            }
            r @ (role::SIGNAL | role::EVENT) => {
                let at = match channels.iter().position(|c| c.0 == e.channel) {
                    Some(at) => at,
                    None => {
                        channels.push((e.channel, None, None));
                        channels.len() - 1
                    }
                };
                if r == role::SIGNAL {
                    channels[at].1 = Some(e.at);
                } else {
                    channels[at].2 = Some(e.at);
                }
            }
            other => {
                return Err(QuickError::Format(alloc::format!(
                    "capability role {other} at {:?}",
                    e.at
                )));
            }
        }
    }
    let ports = channels
        .iter()
        .filter_map(|&(ch, signal, event)| Some((usize::from(ch), signal?, event?)))
        .collect();
    bus.restore_bus(RestoredBus {
        name,
        grant: Grant {
            root: root.authority,
            root_vcpu: root.vcpu,
            partition,
            memory: child_memory,
            vcpu0,
            base,
            layout,
            index,
            to_child: [None; CHANNELS],
            shared: Vec::new(),
        },
        ports,
        saved: saved_bus,
        luns: &luns,
    })
    .map_err(QuickError::Format)?;
    for v in &vcpus {
        call(kernel, "start", Call::VcpuStart { vcpu: *v })?;
    }
    let mut slots = [None; 4];
    for (slot, v) in slots.iter_mut().zip(&vcpus) {
        *slot = Some(*v);
    }
    Ok(Child {
        spec,
        partition,
        memory: child_memory,
        vcpus: slots,
        base,
        pages: header.pages,
        ended: false,
        from_root,
    })
}
