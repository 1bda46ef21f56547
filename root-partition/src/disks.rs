//! The root's storage stack above the disk driver: a sector device seen as
//! bytes ([`SectorBytes`]), the exFAT volume on it shared by every open
//! file ([`SharedVolume`]), a file on that volume seen as a block device
//! ([`VolumeFile`]) so a VHD can live in it, parents of differencing disks
//! found on the same volume ([`VolumeResolver`]), and each child's table of
//! LUNs ([`Luns`]), each an open VHD chain.
//!
//! # Invariants
//! - Every read and write of a LUN is bounds-checked against the disk's
//!   size before it reaches the VHD; a LUN number past [`MAX_LUNS`] or not
//!   present is an error, never a panic.
//! - A LUN's flush flushes its VHD (tables and footer), then the volume
//!   (dirty flag, bitmap), then the device: once it returns, what the LUN
//!   acknowledged is on the disk.
//! - Removing a LUN flushes it first; a removed LUN's data is never
//!   touched again through this table.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use exfat::{File, Volume};
use partition_rt::sync::SpinLock;
use vhd::{BlockDevice, ChainAccess, IoError, ParentLocation, ParentResolver, Vhd};

/// Bytes in a sector (the unit of the disk driver and of the storage protocol).
pub const SECTOR: usize = 512;
/// LUNs a controller holds.
pub const MAX_LUNS: usize = 64;

/// A disk addressed in 512-byte sectors (the virtio-blk driver).
pub trait Sectors {
    /// Sectors on the disk.
    fn sector_count(&self) -> u64;
    /// Reads whole sectors from `lba` into `buf` (a multiple of [`SECTOR`]).
    fn read_sectors(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), IoError>;
    /// Writes whole sectors from `buf` at `lba`.
    fn write_sectors(&mut self, lba: u64, buf: &[u8]) -> Result<(), IoError>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> Result<(), IoError>;
}

/// A sector disk as byte-addressed storage: aligned parts go straight to
/// the disk, partial sectors are read, changed and written back. The disk
/// does not grow: a write past its end fails.
pub struct SectorBytes<S> {
    disk: S,
    /// Largest run of sectors moved in one driver request.
    chunk: usize,
}

impl<S: Sectors> SectorBytes<S> {
    /// Wraps `disk`; requests are split into runs of at most `chunk_sectors`.
    pub fn new(disk: S, chunk_sectors: usize) -> Self {
        SectorBytes {
            disk,
            chunk: chunk_sectors.max(1),
        }
    }

    /// The disk underneath.
    pub fn disk(&mut self) -> &mut S {
        &mut self.disk
    }

    fn check(&self, offset: u64, len: usize) -> Result<(), IoError> {
        let end = offset
            .checked_add(len as u64)
            .ok_or_else(|| IoError::new("disk offset overflows"))?;
        let size = self.disk.sector_count() * SECTOR as u64;
        if end > size {
            return Err(IoError::new(format!(
                "access {offset:#x}+{len:#x} past the disk's end {size:#x}"
            )));
        }
        Ok(())
    }
}

impl<S: Sectors> BlockDevice for SectorBytes<S> {
    fn size(&mut self) -> Result<u64, IoError> {
        Ok(self.disk.sector_count() * SECTOR as u64)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.check(offset, buf.len())?;
        let mut sector = [0u8; SECTOR];
        for piece in pieces(offset, buf.len(), self.chunk) {
            let part = &mut buf[piece.at..piece.at + piece.len];
            if piece.whole {
                self.disk.read_sectors(piece.lba, part)?;
            } else {
                self.disk.read_sectors(piece.lba, &mut sector)?;
                part.copy_from_slice(&sector[piece.within..piece.within + piece.len]);
            }
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        self.check(offset, buf.len())?;
        let mut sector = [0u8; SECTOR];
        for piece in pieces(offset, buf.len(), self.chunk) {
            let part = &buf[piece.at..piece.at + piece.len];
            if piece.whole {
                self.disk.write_sectors(piece.lba, part)?;
            } else {
                // Read, change and write back a partial sector.
                self.disk.read_sectors(piece.lba, &mut sector)?;
                sector[piece.within..piece.within + piece.len].copy_from_slice(part);
                self.disk.write_sectors(piece.lba, &sector)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), IoError> {
        self.disk.flush()
    }
}

/// One disk access of a byte range: whole sectors, or part of one sector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    /// First sector.
    lba: u64,
    /// Where the piece starts in the caller's buffer.
    at: usize,
    /// Its length in bytes.
    len: usize,
    /// Whole sectors (`len` a multiple of [`SECTOR`]) or part of one.
    whole: bool,
    /// For part of a sector: where in the sector it starts.
    within: usize,
}

/// Splits `[offset, offset + len)` into runs of at most `chunk` whole
/// sectors and partial sectors at the edges.
fn pieces(offset: u64, len: usize, chunk: usize) -> impl Iterator<Item = Piece> {
    let mut done = 0usize;
    core::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let pos = offset + done as u64;
        let within = (pos % SECTOR as u64) as usize;
        let left = len - done;
        let whole = within == 0 && left >= SECTOR;
        let n = if whole {
            (left / SECTOR).min(chunk) * SECTOR
        } else {
            (SECTOR - within).min(left)
        };
        let piece = Piece {
            lba: pos / SECTOR as u64,
            at: done,
            len: n,
            whole,
            within,
        };
        done += n;
        Some(piece)
    })
}

/// The volume every open file shares; each file operation holds the lock
/// for its duration.
pub type SharedVolume<D> = Arc<SpinLock<Volume<D>>>;

/// Mounts the exFAT volume on `device` for sharing.
pub fn mount<D: BlockDevice>(device: D) -> Result<SharedVolume<D>, exfat::Error> {
    Ok(Arc::new(SpinLock::new(Volume::mount(device)?)))
}

fn exfat_io(what: &str, error: exfat::Error) -> IoError {
    IoError::new(format!("{what}: {error}"))
}

/// A file on the shared volume as a block device (the file a VHD lives in).
pub struct VolumeFile<D: BlockDevice> {
    volume: SharedVolume<D>,
    file: File,
}

impl<D: BlockDevice> VolumeFile<D> {
    /// Opens `path` on `volume`.
    pub fn open(volume: &SharedVolume<D>, path: &str) -> Result<Self, exfat::Error> {
        let file = volume.lock().open(path)?;
        Ok(VolumeFile {
            volume: volume.clone(),
            file,
        })
    }
}

impl<D: BlockDevice> BlockDevice for VolumeFile<D> {
    fn size(&mut self) -> Result<u64, IoError> {
        Ok(self.file.len())
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let n = self
            .volume
            .lock()
            .read(&self.file, offset, buf)
            .map_err(|e| exfat_io("file read", e))?;
        if n != buf.len() {
            return Err(IoError::new(format!(
                "read of {} bytes at {offset:#x} past the file's end",
                buf.len()
            )));
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        self.volume
            .lock()
            .write(&mut self.file, offset, buf)
            .map_err(|e| exfat_io("file write", e))
    }

    fn flush(&mut self) -> Result<(), IoError> {
        self.volume
            .lock()
            .flush()
            .map_err(|e| exfat_io("volume flush", e))
    }
}

/// Finds a differencing disk's parent on the same volume: the relative
/// locations first (`.\base.vhd`, in the volume's root), then the parent's
/// recorded name.
pub struct VolumeResolver<D: BlockDevice> {
    volume: SharedVolume<D>,
}

impl<D: BlockDevice> VolumeResolver<D> {
    /// A resolver over `volume`.
    pub fn new(volume: &SharedVolume<D>) -> Self {
        VolumeResolver {
            volume: volume.clone(),
        }
    }
}

/// A recorded parent path as a path on the volume: separators unified, `.`
/// parts dropped, the drive letter of an absolute Windows path removed.
pub fn volume_path(recorded: &str) -> String {
    let unified = recorded.replace('\\', "/");
    let without_drive = match unified.as_bytes() {
        [letter, b':', ..] if letter.is_ascii_alphabetic() => &unified[2..],
        _ => &unified[..],
    };
    let parts: Vec<&str> = without_drive
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let mut path = String::from("/");
    path.push_str(&parts.join("/"));
    path
}

impl<D: BlockDevice> ParentResolver<VolumeFile<D>> for VolumeResolver<D> {
    fn open_parent(
        &mut self,
        _depth: usize,
        locations: &[ParentLocation],
        parent_name: &str,
    ) -> vhd::Result<VolumeFile<D>> {
        let candidates = locations
            .iter()
            .map(|l| volume_path(&l.path))
            .chain(core::iter::once(volume_path(parent_name)));
        let mut last = None;
        for path in candidates {
            match VolumeFile::open(&self.volume, &path) {
                Ok(file) => return Ok(file),
                Err(e) => last = Some(exfat_io(&path, e)),
            }
        }
        Err(vhd::Error::Io(
            last.unwrap_or_else(|| IoError::new("no parent location")),
        ))
    }
}

/// Why a LUN operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LunError {
    /// No LUN with that number (or past [`MAX_LUNS`]).
    NoSuchLun,
    /// The LUN number is taken.
    InUse,
    /// LBA and count reach past the disk's end.
    OutOfRange,
    /// The disk's file could not be opened or its VHD is invalid.
    Open(String),
    /// The VHD or the volume failed.
    Io(String),
}

/// One open disk.
struct Lun<D: BlockDevice> {
    name: String,
    disk: Vhd<VolumeFile<D>>,
}

/// A controller's LUNs: each an open VHD chain on the shared volume.
pub struct Luns<D: BlockDevice> {
    volume: SharedVolume<D>,
    slots: Vec<Option<Lun<D>>>,
}

impl<D: BlockDevice> Luns<D> {
    /// An empty controller over `volume`.
    pub fn new(volume: &SharedVolume<D>) -> Self {
        let mut slots = Vec::new();
        slots.resize_with(MAX_LUNS, || None);
        Luns {
            volume: volume.clone(),
            slots,
        }
    }

    /// Opens the VHD at `path` (with its parents, read-only) as `lun`,
    /// writable; returns its size in sectors.
    pub fn attach(&mut self, lun: u8, path: &str) -> Result<u64, LunError> {
        let slot = self
            .slots
            .get_mut(usize::from(lun))
            .ok_or(LunError::NoSuchLun)?;
        if slot.is_some() {
            return Err(LunError::InUse);
        }
        let file = VolumeFile::open(&self.volume, path)
            .map_err(|e| LunError::Open(format!("{path}: {e}")))?;
        let mut resolver = VolumeResolver::new(&self.volume);
        let access = ChainAccess {
            writable: true,
            writable_parent: false,
        };
        let disk = Vhd::open_chain(file, access, &mut resolver)
            .map_err(|e| LunError::Open(format!("{path}: {e}")))?;
        let sectors = disk.size() / SECTOR as u64;
        *slot = Some(Lun {
            name: String::from(path),
            disk,
        });
        Ok(sectors)
    }

    /// Flushes and closes `lun`; returns its file's path.
    pub fn detach(&mut self, lun: u8) -> Result<String, LunError> {
        let slot = self
            .slots
            .get_mut(usize::from(lun))
            .ok_or(LunError::NoSuchLun)?;
        let mut entry = slot.take().ok_or(LunError::NoSuchLun)?;
        let flushed = entry.disk.flush().map_err(|e| LunError::Io(format!("{e}")));
        let name = core::mem::take(&mut entry.name);
        drop(entry);
        flushed.map(|()| name)
    }

    /// The path of the file behind `lun`, if present.
    pub fn path(&self, lun: u8) -> Option<&str> {
        self.slots
            .get(usize::from(lun))?
            .as_ref()
            .map(|l| l.name.as_str())
    }

    /// Numbers of the LUNs present.
    pub fn present(&self) -> impl Iterator<Item = u8> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| i as u8)
    }

    fn lun(&mut self, lun: u8) -> Result<&mut Lun<D>, LunError> {
        self.slots
            .get_mut(usize::from(lun))
            .and_then(Option::as_mut)
            .ok_or(LunError::NoSuchLun)
    }

    /// Size of `lun` in sectors.
    pub fn capacity(&mut self, lun: u8) -> Option<u64> {
        self.lun(lun).ok().map(|l| l.disk.size() / SECTOR as u64)
    }

    fn range(&mut self, lun: u8, lba: u64, len: usize) -> Result<(&mut Lun<D>, u64), LunError> {
        let entry = self.lun(lun)?;
        if !len.is_multiple_of(SECTOR) {
            return Err(LunError::OutOfRange);
        }
        let offset = lba.checked_mul(SECTOR as u64).ok_or(LunError::OutOfRange)?;
        let end = offset.checked_add(len as u64).ok_or(LunError::OutOfRange)?;
        if end > entry.disk.size() {
            return Err(LunError::OutOfRange);
        }
        Ok((entry, offset))
    }

    /// Reads whole sectors of `lun` from `lba`.
    pub fn read(&mut self, lun: u8, lba: u64, buf: &mut [u8]) -> Result<(), LunError> {
        let (entry, offset) = self.range(lun, lba, buf.len())?;
        entry
            .disk
            .read_at(offset, buf)
            .map_err(|e| LunError::Io(format!("{e}")))
    }

    /// Writes whole sectors of `lun` at `lba`.
    pub fn write(&mut self, lun: u8, lba: u64, buf: &[u8]) -> Result<(), LunError> {
        let (entry, offset) = self.range(lun, lba, buf.len())?;
        entry
            .disk
            .write_at(offset, buf)
            .map_err(|e| LunError::Io(format!("{e}")))
    }

    /// Makes everything written to `lun` durable.
    pub fn flush(&mut self, lun: u8) -> Result<(), LunError> {
        self.lun(lun)?
            .disk
            .flush()
            .map_err(|e| LunError::Io(format!("{e}")))
    }

    /// Flushes every LUN; the first error, after trying them all.
    pub fn flush_all(&mut self) -> Result<(), LunError> {
        let mut result = Ok(());
        for entry in self.slots.iter_mut().flatten() {
            if let Err(e) = entry.disk.flush() {
                result = result.and(Err(LunError::Io(format!("{e}"))));
            }
        }
        result
    }
}

impl LunError {
    fn backend(&self) -> vsp::storage::BackendError {
        match self {
            LunError::NoSuchLun => vsp::storage::BackendError::NoSuchLun,
            _ => vsp::storage::BackendError::Io,
        }
    }
}

/// The storage service provider performs a child's requests on its LUNs.
impl<D: BlockDevice> vsp::storage::StorageBackend for Luns<D> {
    fn capacity(&mut self, lun: u8) -> Option<u64> {
        Luns::capacity(self, lun)
    }

    fn read(
        &mut self,
        lun: u8,
        lba: u64,
        buf: &mut [u8],
    ) -> Result<(), vsp::storage::BackendError> {
        Luns::read(self, lun, lba, buf).map_err(|e| e.backend())
    }

    fn write(&mut self, lun: u8, lba: u64, buf: &[u8]) -> Result<(), vsp::storage::BackendError> {
        Luns::write(self, lun, lba, buf).map_err(|e| e.backend())
    }

    fn flush(&mut self, lun: u8) -> Result<(), vsp::storage::BackendError> {
        Luns::flush(self, lun).map_err(|e| e.backend())
    }
}

/// A scratch buffer of `sectors` sectors (for callers that move data
/// between a LUN and somewhere else).
pub fn sector_buffer(sectors: usize) -> Vec<u8> {
    vec![0; sectors * SECTOR]
}

/// Mounts the exFAT volume on the data disk `device` (at PCI `location`,
/// interrupt line `gsi`) and prints what it holds (`ipc::markers::DataVolume`,
/// with the disk's request and interrupt counts from `counters`), or why
/// it cannot (`None`).
pub fn mount_data_volume<D: BlockDevice>(
    mut device: D,
    location: &str,
    gsi: u32,
    counters: impl FnOnce(&mut D) -> (u64, u64),
    print: fn(core::fmt::Arguments<'_>),
) -> Option<SharedVolume<D>> {
    let mib = device.size().unwrap_or(0) >> 20;
    let volume = match mount(device) {
        Ok(volume) => volume,
        Err(e) => {
            print(format_args!(
                "root partition: data disk at {location}: no exFAT volume: {e}"
            ));
            return None;
        }
    };
    let (label, files, (requests, interrupts)) = {
        let mut v = volume.lock();
        let files = v.list("/").map(|entries| entries.len()).unwrap_or_default();
        (String::from(v.label()), files, counters(v.device()))
    };
    print(format_args!(
        "{}",
        ipc::markers::DataVolume {
            location,
            gsi,
            mib,
            label: &label,
            files,
            requests,
            interrupts,
        }
    ));
    Some(volume)
}

/// The storage benchmark's root side: reads `BENCH_SEQUENTIAL_BYTES` of
/// `/FILE` (a VHD on `volume`) in `BENCH_SEQUENTIAL_REQUEST` requests, then
/// `BENCH_RANDOM_READS` random 4 KiB reads, straight through the storage
/// stack, timing each phase with `ticks` (the time-stamp counter).
pub fn bench_direct<D: BlockDevice>(
    volume: &SharedVolume<D>,
    file: &str,
    mut ticks: impl FnMut() -> u64,
) -> Result<ipc::disk::BenchResult<'static>, String> {
    use ipc::disk::{
        BENCH_RANDOM_READS, BENCH_SEQUENTIAL_BYTES, BENCH_SEQUENTIAL_REQUEST, bench_random_offset,
    };
    let mut luns = Luns::new(volume);
    luns.attach(0, &alloc::format!("/{file}"))
        .map_err(|e| alloc::format!("{file}: {e:?}"))?;
    let mut buf = alloc::vec![0u8; BENCH_SEQUENTIAL_REQUEST as usize];
    let start = ticks();
    for offset in (0..BENCH_SEQUENTIAL_BYTES).step_by(BENCH_SEQUENTIAL_REQUEST as usize) {
        luns.read(0, offset / SECTOR as u64, &mut buf)
            .map_err(|e| alloc::format!("{file}: {e:?}"))?;
    }
    let sequential_cycles = ticks().wrapping_sub(start);
    let start = ticks();
    for i in 0..BENCH_RANDOM_READS {
        luns.read(0, bench_random_offset(i) / SECTOR as u64, &mut buf[..4096])
            .map_err(|e| alloc::format!("{file}: {e:?}"))?;
    }
    let random_cycles = ticks().wrapping_sub(start);
    let _ = luns.detach(0);
    Ok(ipc::disk::BenchResult {
        who: ipc::disk::ROOT_DIRECT,
        sequential_cycles,
        random_cycles,
    })
}

#[cfg(test)]
#[path = "disks_tests.rs"]
mod tests;
