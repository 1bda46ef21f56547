//! The data disk: a virtio-blk PCI device driven by the root, with
//! completions signalled by the device's interrupt — MSI-X, or its line —
//! which the root takes through an interrupt capability (bound to
//! [`VECTOR`]; `crate::hal::virtio::attach`).
//!
//! Each request is queued, the device notified, and the root sleeps in HLT
//! until the device's interrupt says a request completed (the interrupt
//! handler has already lowered and acknowledged it: `crate::hal::virtio`).
//!
//! # Invariants
//! - Buffers handed to the device lie in the identity map; a caller's
//!   buffer in the root's image is bounced through [`Disk::bounce`].
//! - At most one request is outstanding: the root's storage work is one
//!   thread of control.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;

use ipc::boot::{BootInfo, PARTITION_IMAGE_BASE};
use root_partition::disks::{SECTOR, Sectors};
use vhd::IoError;
use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk};
use virtio_drivers::transport::DeviceType;
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::pci::bus::DeviceFunction;

use crate::hal::dma::RootHal;
use crate::hal::virtio;

/// The vector the disk's interrupt arrives on.
pub const VECTOR: u8 = 0x78;
/// Sectors moved per device request.
pub const CHUNK_SECTORS: usize = 128;

/// Counters of the data disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Requests completed.
    pub requests: u64,
    /// Device interrupts taken.
    pub interrupts: u64,
    /// Bytes read and written.
    pub bytes: u64,
}

/// The virtio-blk data disk.
pub struct Disk {
    blk: VirtIOBlk<RootHal, PciTransport>,
    irq: virtio::DeviceInterrupt,
    /// Global system interrupt of the device's line.
    pub gsi: u32,
    /// PCI location.
    pub location: DeviceFunction,
    bounce: Box<[u8]>,
    /// Interrupts taken so far (see [`Disk::take_interrupts`]).
    taken: u64,
    stats: DiskStats,
}

/// Finds the first virtio-blk device on PCI bus 0, starts it and binds its
/// interrupt; `Ok(None)` when the machine has none.
pub fn probe(info: &BootInfo) -> Result<Option<Disk>, String> {
    let Some(virtio::Found {
        transport,
        location,
        gsi,
    }) = virtio::find(DeviceType::Block)?
    else {
        return Ok(None);
    };
    let mut blk = VirtIOBlk::<RootHal, _>::new(transport)
        .map_err(|e| format!("virtio-blk at {location}: {e:?}"))?;
    let irq = virtio::attach(info, location, gsi, VECTOR, "disk")?;
    blk.enable_interrupts();
    Ok(Some(Disk {
        blk,
        irq,
        gsi,
        location,
        bounce: alloc::vec![0u8; CHUNK_SECTORS * SECTOR].into_boxed_slice(),
        taken: irq.count(),
        stats: DiskStats::default(),
    }))
}

fn identity_mapped(buf: &[u8]) -> bool {
    (buf.as_ptr() as u64) < PARTITION_IMAGE_BASE
}

fn io(what: &str, lba: u64, e: virtio_drivers::Error) -> IoError {
    IoError::new(format!("virtio-blk {what} at sector {lba}: {e:?}"))
}

impl Disk {
    /// The disk's counters.
    pub fn stats(&self) -> DiskStats {
        self.stats
    }

    /// Counts the device interrupts that arrived since the last call (the
    /// handler already took each: `crate::hal::virtio`).
    fn take_interrupts(&mut self) {
        let now = self.irq.count();
        self.stats.interrupts += now.wrapping_sub(self.taken);
        self.taken = now;
    }

    /// Sleeps until request `token` is in the used ring, taking the
    /// device's interrupts as they come.
    fn wait(&mut self, token: u16) {
        loop {
            self.take_interrupts();
            if self.blk.peek_used() == Some(token) {
                return;
            }
            let (taken, irq) = (self.taken, self.irq);
            let blk = &mut self.blk;
            partition_rt::wait_until(|| irq.count() != taken || blk.peek_used() == Some(token));
        }
    }

    fn read_direct(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let mut req = BlkReq::default();
        let mut resp = BlkResp::default();
        // SAFETY: `req`, `buf` and `resp` stay borrowed here until the
        // request completes below; none is touched meanwhile.
        let token = unsafe {
            self.blk
                .read_blocks_nb(lba as usize, &mut req, buf, &mut resp)
        }
        .map_err(|e| io("read", lba, e))?;
        self.wait(token);
        // SAFETY: the same buffers as for `read_blocks_nb`.
        unsafe { self.blk.complete_read_blocks(token, &req, buf, &mut resp) }
            .map_err(|e| io("read", lba, e))?;
        self.stats.requests += 1;
        self.stats.bytes += buf.len() as u64;
        Ok(())
    }

    fn write_direct(&mut self, lba: u64, buf: &[u8]) -> Result<(), IoError> {
        let mut req = BlkReq::default();
        let mut resp = BlkResp::default();
        // SAFETY: as in `read_direct`.
        let token = unsafe {
            self.blk
                .write_blocks_nb(lba as usize, &mut req, buf, &mut resp)
        }
        .map_err(|e| io("write", lba, e))?;
        self.wait(token);
        // SAFETY: the same buffers as for `write_blocks_nb`.
        unsafe { self.blk.complete_write_blocks(token, &req, buf, &mut resp) }
            .map_err(|e| io("write", lba, e))?;
        self.stats.requests += 1;
        self.stats.bytes += buf.len() as u64;
        Ok(())
    }
}

impl Sectors for Disk {
    fn sector_count(&self) -> u64 {
        self.blk.capacity()
    }

    fn read_sectors(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), IoError> {
        for (i, chunk) in buf.chunks_mut(CHUNK_SECTORS * SECTOR).enumerate() {
            let at = lba + (i * CHUNK_SECTORS) as u64;
            if identity_mapped(chunk) {
                self.read_direct(at, chunk)?;
            } else {
                let mut bounce = core::mem::take(&mut self.bounce);
                let result = self.read_direct(at, &mut bounce[..chunk.len()]);
                chunk.copy_from_slice(&bounce[..chunk.len()]);
                self.bounce = bounce;
                result?;
            }
        }
        Ok(())
    }

    fn write_sectors(&mut self, lba: u64, buf: &[u8]) -> Result<(), IoError> {
        for (i, chunk) in buf.chunks(CHUNK_SECTORS * SECTOR).enumerate() {
            let at = lba + (i * CHUNK_SECTORS) as u64;
            if identity_mapped(chunk) {
                self.write_direct(at, chunk)?;
            } else {
                let mut bounce = core::mem::take(&mut self.bounce);
                bounce[..chunk.len()].copy_from_slice(chunk);
                let result = self.write_direct(at, &bounce[..chunk.len()]);
                self.bounce = bounce;
                result?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), IoError> {
        // The driver's flush waits by polling the used ring; the device's
        // interrupt for it is taken here (or on the next wait).
        let result = self
            .blk
            .flush()
            .map_err(|e| IoError::new(format!("virtio-blk flush: {e:?}")));
        self.take_interrupts();
        self.stats.requests += 1;
        result
    }
}
