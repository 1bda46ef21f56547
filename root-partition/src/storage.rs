//! The root's storage: the data disk (virtio-blk), the exFAT volume on
//! it, and the VHD files children get as disks.
//!
//! # Invariants
//! The volume is mounted once at boot and shared by every open file; the
//! per-child LUN tables hold the only open VHDs.

use alloc::string::String;
use alloc::vec::Vec;

use ipc::boot::BootInfo;
use ipc::disk::BenchResult;
use partition_rt::sync::SpinLock;
use root_partition::disks::{self, SectorBytes, SharedVolume};

use crate::blk::{self, CHUNK_SECTORS, Disk};

macro_rules! println {
    ($($arg:tt)*) => {
        partition_rt::console::print_line(format_args!($($arg)*))
    };
}

/// The data disk as bytes.
pub type DataDisk = SectorBytes<Disk>;
/// The volume on it.
pub type DataVolume = SharedVolume<DataDisk>;

/// The mounted volume, once found.
static VOLUME: SpinLock<Option<DataVolume>> = SpinLock::new(None);

/// The mounted data volume, if there is one.
pub fn volume() -> Option<DataVolume> {
    VOLUME.lock().clone()
}

/// Finds the data disk and mounts its volume; says what it found. A
/// machine without a data disk runs without storage.
pub fn start(info: &BootInfo) {
    let disk = match blk::probe(info) {
        Ok(Some(disk)) => disk,
        Ok(None) => {
            println!("root partition: no data disk (no virtio-blk device)");
            return;
        }
        Err(e) => {
            println!("root partition: data disk unusable: {e}");
            return;
        }
    };
    let (location, gsi) = (disk.location, disk.gsi);
    let mut bytes = SectorBytes::new(disk, CHUNK_SECTORS);
    let mib = vhd::BlockDevice::size(&mut bytes).unwrap_or(0) >> 20;
    let volume = match disks::mount(bytes) {
        Ok(volume) => volume,
        Err(e) => {
            println!("root partition: data disk at {location}: no exFAT volume: {e}");
            return;
        }
    };
    let (label, files, stats) = {
        let mut v = volume.lock();
        let names: Vec<String> = v
            .list("/")
            .map(|entries| entries.into_iter().map(|e| e.name).collect())
            .unwrap_or_default();
        (String::from(v.label()), names, v.device().disk().stats())
    };
    println!(
        "{}",
        ipc::markers::DataVolume {
            location: &alloc::format!("{location}"),
            gsi,
            mib,
            label: &label,
            files: files.len(),
            requests: stats.requests,
            interrupts: stats.interrupts,
        }
    );
    *VOLUME.lock() = Some(volume);
}

/// The root's own run of the disk benchmark over `file` (the reference a
/// child's run through VMBus is compared with): the same reads, through
/// the same VHD and volume code, without VMBus.
pub fn bench_direct(file: &str) -> Result<BenchResult<'static>, String> {
    let volume = volume().ok_or_else(|| String::from("no data volume"))?;
    disks::bench_direct(&volume, file, partition_rt::rdtsc)
}
