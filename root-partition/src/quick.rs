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
//! After the save the child is destroyed. A restore reads the file back
//! into a new partition (its memory anywhere), gives it new ports in the
//! saved slots (`CapDelegateAt`), rebuilds its bus over the restored
//! rings, opens its disks again, sets its vCPU states and starts it.
//!
//! # Invariants
//! - Between the save of the bus state and the child's destruction the
//!   root never serves its bus: what the rings hold is served once, after
//!   the restore.
//! - A save that fails leaves the child running; a restore that fails
//!   destroys what it created.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use exfat::File;
use ipc::boot::cap_kind;
use ipc::child::CHILD_EVENT_VECTOR;
use ipc::hypercall::{Call, Name, Rights, SlotHandle, Status};
use ipc::migration::{DeviceKind, FLAG_SAVED_STATE, HEADER_LEN, Header};
use partition_rt::hypercall;
use root_partition::layout::Layout;
use root_partition::migrate::engine::{DeviceOut, Halt};
use root_partition::migrate::saved::{
    BUS_DEVICE, CAPS_DEVICE, SPEC_DEVICE, SlotEntry, decode_caps, decode_luns, decode_spec,
    encode_caps, encode_luns, encode_spec, role,
};
use root_partition::migrate::{self, Control, Phase, Policy, Receiver, Stats};

use crate::children::{Child, Root, call, handle};
use crate::hal::kernel::HwKernel;
use crate::migration::{ChildDestination, ChildSource, Tsc};
use crate::storage::DataVolume;
use root_partition::config::ChildSpec;
use root_partition::partition::{self, Purpose};

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
    Record(root_partition::migrate::saved::SavedError),
    /// No memory for the restored child.
    NoMemory,
}

impl From<crate::children::Failure> for QuickError {
    fn from(f: crate::children::Failure) -> Self {
        match f {
            crate::children::Failure::Call(what, status) => QuickError::Call(what, status),
            other => QuickError::Format(alloc::format!("{other:?}")),
        }
    }
}

/// Bytes of memory of the child saved in `path` (from its header).
pub fn saved_memory(path: &str) -> Result<u64, QuickError> {
    let volume = crate::storage::volume().ok_or(QuickError::NoVolume)?;
    let file = volume.lock().open(path).map_err(QuickError::File)?;
    Ok(read_header(&volume, &file)?.pages * 4096)
}

/// The roles of the child's capabilities, from `CapInspect` and the
/// root's own handles on the same objects.
fn inspect_caps(child: &Child, index: usize) -> Result<Vec<SlotEntry>, QuickError> {
    let to_root = crate::children::to_root_port(index);
    let from_root = child.from_root.map_or(u64::MAX, SlotHandle::raw);
    let channels = crate::vmbus::channel_ports(index);
    let mut entries = Vec::new();
    for i in 0..256u16 {
        let r = call(
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
struct FileTransport {
    volume: DataVolume,
    file: File,
    offset: u64,
    staged: Vec<u8>,
}

impl FileTransport {
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

    fn finish(mut self) -> Result<u64, exfat::Error> {
        self.write_staged()?;
        self.volume.lock().flush()?;
        Ok(self.offset)
    }
}

impl migrate::Transport for FileTransport {
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
struct Serving;

impl Control for Serving {
    fn proceed(&mut self, phase: Phase) -> bool {
        if let Phase::Precopy { .. } = phase {
            crate::vmbus::service_all();
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
    pub fn emit(&self, out: &mut DeviceOut<'_>) -> Result<(), Halt> {
        out(DeviceKind::Other(CAPS_DEVICE), 0, &self.caps)?;
        out(DeviceKind::Other(SPEC_DEVICE), 0, &self.spec)?;
        let mut bus = vec![0u8; ipc::migration::MAX_DEVICE_STATE];
        let (len, luns) = crate::vmbus::save_bus(self.index, &mut bus).ok_or(Halt)?;
        out(DeviceKind::Other(BUS_DEVICE), 0, &bus[..len])?;
        out(DeviceKind::Storage, 0, &encode_luns(&luns))
    }
}

/// Saves `child` (bus `index`) to `path` on the data volume; the child is
/// paused at the end (the caller destroys it). On failure it runs on.
pub fn save(
    root: &Root,
    child: &Child,
    index: usize,
    path: &str,
) -> Result<(Stats, u64), QuickError> {
    let volume = crate::storage::volume().ok_or(QuickError::NoVolume)?;
    let caps = encode_caps(&inspect_caps(child, index)?);
    let file = {
        let mut v = volume.lock();
        let _ = v.remove(path);
        v.create(path).map_err(QuickError::File)?
    };
    let mut transport = FileTransport {
        volume,
        file,
        offset: 0,
        staged: Vec::with_capacity(FILE_CHUNK + ipc::migration::MAX_RECORD),
    };
    let mut source = ChildSource::new(root, child, index);
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
    let mut clock = Tsc::new(root.tsc_khz);
    let stats = migrate::engine::migrate_with_flags(
        &mut source,
        &mut transport,
        &mut clock,
        &mut Serving,
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

/// Reads the stream header at the start of `file`.
fn read_header(volume: &DataVolume, file: &File) -> Result<Header, QuickError> {
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

/// What [`restore`] needs of the root's scenario runner.
pub struct Placement {
    /// Host-physical base of free memory for the child.
    pub base: u64,
    /// Its bus (and vector) index.
    pub index: usize,
    /// The child runtime image's span, for the child's layout.
    pub image_span: (u64, u64),
}

/// Restores the child saved in `path` into a new partition at `at` and
/// starts it, with `spec`'s priority and processor affinity (its memory
/// and vCPUs are the file's).
pub fn restore(
    root: &Root,
    path: &str,
    at: Placement,
    spec: &ChildSpec,
) -> Result<Child, QuickError> {
    let volume = crate::storage::volume().ok_or(QuickError::NoVolume)?;
    let file = volume.lock().open(path).map_err(QuickError::File)?;
    let header = read_header(&volume, &file)?;
    let memory = header.pages * 4096;
    let name = Name::new(header.name());
    let layout = Layout::new(memory, at.image_span.0, at.image_span.1)
        .map_err(|e| QuickError::Format(alloc::format!("layout: {e:?}")))?;
    let mut shape = *spec;
    (shape.name, shape.memory, shape.vcpus) = (name, memory, u32::from(header.vcpus));
    let built = partition::build(&HwKernel, root, &shape, at.base, Purpose::Restore)?;
    let (partition, child_memory, child_self) = (built.partition, built.memory, built.self_slot);
    let built = (|| {
        let vcpus: Vec<SlotHandle> = built.vcpu_list().collect();
        let mut receiver = Receiver::new(ChildDestination {
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
                .read(&file, offset, &mut chunk)
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
        let caps =
            decode_caps(device(DeviceKind::Other(CAPS_DEVICE))?).map_err(QuickError::Record)?;
        let mut spec = decode_spec(
            device(DeviceKind::Other(SPEC_DEVICE))?,
            name,
            memory,
            u32::from(header.vcpus),
        )
        .map_err(QuickError::Record)?;
        // What its vCPUs were built with.
        (spec.priority, spec.cpu) = (shape.priority, shape.cpu);
        let luns = decode_luns(device(DeviceKind::Storage)?).map_err(QuickError::Record)?;
        let bus = device(DeviceKind::Other(BUS_DEVICE))?.to_vec();
        let vcpu0 = *vcpus
            .first()
            .ok_or(QuickError::Format(String::from("no vCPU")))?;
        // Its capabilities, slot for slot.
        let mut from_root = None;
        let mut channel_slots: [(Option<SlotHandle>, Option<SlotHandle>); crate::vmbus::CHANNELS] =
            [(None, None); crate::vmbus::CHANNELS];
        for e in &caps {
            match e.role {
                role::SELF if e.at == child_self => {}
                role::SELF => {
                    return Err(QuickError::Format(alloc::format!(
                        "self capability at {:?}",
                        e.at
                    )));
                }
                role::TO_ROOT => {
                    crate::children::make_to_root(root, at.index, partition, Some(e.at))?;
                }
                role::FROM_ROOT => {
                    let port = handle(call("port", Call::PortCreate)?[0])?;
                    call(
                        "bind",
                        Call::PortBind {
                            port,
                            vcpu: vcpu0,
                            vector: CHILD_EVENT_VECTOR,
                        },
                    )?;
                    call(
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
                role::SIGNAL => channel_slots[usize::from(e.channel)].0 = Some(e.at),
                _ => channel_slots[usize::from(e.channel)].1 = Some(e.at),
            }
        }
        let mut platform = crate::vmbus::RootPlatform {
            root: root.authority,
            root_vcpu: root.vcpu,
            partition,
            memory: child_memory,
            vcpu0,
            base: at.base,
            layout,
            index: at.index,
            to_child: [None; crate::vmbus::CHANNELS],
            shared: Vec::new(),
        };
        for (channel, slots) in channel_slots.iter().enumerate() {
            if let (Some(signal), Some(event)) = slots {
                platform
                    .make_ports_at(channel, Some((*signal, *event)))
                    .map_err(|_| {
                        QuickError::Format(alloc::format!("ports of channel {channel}"))
                    })?;
            }
        }
        crate::vmbus::restore_bus(name, platform, &bus, &luns)
            .map_err(|e| QuickError::Format(alloc::format!("bus: {e:?}")))?;
        for v in &vcpus {
            call("start", Call::VcpuStart { vcpu: *v })?;
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
            base: at.base,
            pages: header.pages,
            ended: false,
            from_root,
        })
    })();
    if built.is_err() {
        crate::vmbus::forget(at.index);
        let _ = hypercall(&Call::PartitionDestroy { partition });
    }
    built
}
