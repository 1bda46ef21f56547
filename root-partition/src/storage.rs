//! The root's storage: the data disk (virtio-blk), the exFAT volume on
//! it, and the VHD files children get as disks.
//!
//! # Invariants
//! The volume is mounted once at boot and shared by every open file; the
//! per-child LUN tables hold the only open VHDs.

use alloc::string::String;

use ipc::boot::BootInfo;
use ipc::disk::BenchResult;
use partition_rt::sync::SpinLock;
use root_partition::disks::{self, SectorBytes, SharedVolume};

use crate::hal::blk::{self, CHUNK_SECTORS, Disk};

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
    let (location, gsi) = (alloc::format!("{}", disk.location), disk.gsi);
    let bytes = SectorBytes::new(disk, CHUNK_SECTORS);
    let counters = |d: &mut DataDisk| {
        let stats = d.disk().stats();
        (stats.requests, stats.interrupts)
    };
    let print = partition_rt::console::print_line;
    if let Some(volume) = disks::mount_data_volume(bytes, &location, gsi, counters, print) {
        *VOLUME.lock() = Some(volume);
    }
}

/// The root's own run of the disk benchmark over `file` (the reference a
/// child's run through VMBus is compared with): the same reads, through
/// the same VHD and volume code, without VMBus.
pub fn bench_direct(file: &str) -> Result<BenchResult<'static>, String> {
    let volume = volume().ok_or_else(|| String::from("no data volume"))?;
    disks::bench_direct(&volume, file, partition_rt::rdtsc)
}
