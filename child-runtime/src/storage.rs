//! The child's storage controller: opens the root's storage offer on
//! pages of its heap, grants a buffer region once, and hands workloads a
//! [`StorageClient`] (`docs/devices/storage.md`).
//!
//! # Invariants
//! The client lives behind one lock; only the disk workload's vCPU uses
//! it. Every wait is bounded by [`crate::vmbus::WAIT_PATIENCE`] yields.

use ipc::child::ChildBootInfo;
use ipc::vmbus::control::STORAGE_CLASS;
use ipc::vmbus::ring::{self, Consumer, Producer};
use partition_rt::SharedRingMemory;
use partition_rt::sync::SpinLock;
use vsc::bus::{BusError, RingPages};
use vsc::storage::{StorageClient, StorageClientError};

use crate::arch;
use crate::vmbus::{self, STORAGE_SIGNAL, WAIT_PATIENCE};

/// Pages of the child-to-root ring (control page + data).
const OUT_PAGES: u32 = 9;
/// Pages of the root-to-child ring.
const IN_PAGES: u32 = 9;
/// Pages of the buffer region (room for 64 requests of 4 KiB, or one of
/// 256 KiB).
pub const BUFFER_PAGES: u32 = 64;

static CLIENT: SpinLock<Option<StorageClient<SharedRingMemory>>> = SpinLock::new(None);
/// A second view of the root-to-child ring, to look for packets before
/// sleeping (see [`wait`]).
static INBOUND: SpinLock<Option<SharedRingMemory>> = SpinLock::new(None);

/// Why the controller could not be opened.
// The fields are read through `Debug` when the failure is printed.
#[allow(dead_code)]
#[derive(Debug)]
pub enum OpenError {
    /// Out of heap, or a ring unusable.
    Memory,
    /// The control bus is not connected.
    NoBus,
    /// The control protocol failed.
    Bus(BusError),
    /// The buffer grant failed.
    Grant(StorageClientError),
}

/// Opens the storage controller and grants the buffer region.
pub fn open(info: &ChildBootInfo) -> Result<(), OpenError> {
    let pages = OUT_PAGES + IN_PAGES;
    let gpa = arch::alloc_ring_pages(u64::from(pages)).ok_or(OpenError::Memory)?;
    let rings = arch::ring_memory(info, gpa, u64::from(pages) * 4096).ok_or(OpenError::Memory)?;
    let (out, inb) = rings.split_at(OUT_PAGES as usize * 4096);
    ring::initialize(&out).map_err(|_| OpenError::Memory)?;
    ring::initialize(&inb).map_err(|_| OpenError::Memory)?;
    let opened = vmbus::with_bus(|bus| {
        bus.open(
            STORAGE_CLASS,
            RingPages {
                gpa,
                pages,
                outbound_pages: OUT_PAGES,
            },
            vmbus::signal_control,
            vmbus::wait,
            WAIT_PATIENCE,
        )
    })
    .ok_or(OpenError::NoBus)?
    .map_err(OpenError::Bus)?;
    vmbus::set_storage_ports(opened.signal_port, opened.event_port);
    let buffer_gpa = arch::alloc_ring_pages(u64::from(BUFFER_PAGES)).ok_or(OpenError::Memory)?;
    let buffer = arch::ring_memory(info, buffer_gpa, u64::from(BUFFER_PAGES) * 4096)
        .ok_or(OpenError::Memory)?;
    let mut client = StorageClient::new(
        Producer::new(out).map_err(|_| OpenError::Memory)?,
        Consumer::new(inb).map_err(|_| OpenError::Memory)?,
        buffer,
        buffer_gpa,
        BUFFER_PAGES,
    );
    client
        .grant(signal, vmbus::wait, WAIT_PATIENCE)
        .map_err(OpenError::Grant)?;
    let view = arch::ring_memory(
        info,
        gpa + u64::from(OUT_PAGES) * 4096,
        u64::from(IN_PAGES) * 4096,
    )
    .ok_or(OpenError::Memory)?;
    *INBOUND.lock() = Some(view);
    *CLIENT.lock() = Some(client);
    Ok(())
}

/// Signals the root on the storage channel.
pub fn signal() {
    vmbus::signal(STORAGE_SIGNAL);
}

/// Whether the root-to-child ring holds a packet.
fn inbound_waiting() -> bool {
    use ipc::vmbus::memory::RingMemory;
    INBOUND.lock().as_ref().is_some_and(|m| {
        m.load_u32_acquire(ring::WRITE_INDEX) != m.load_u32_acquire(ring::READ_INDEX)
    })
}

/// The wait of the storage client: sleeps (HLT) until the root signals,
/// unless a packet is already there. The signal count is read before the
/// ring, so a signal that lands in between ends the sleep at once; the root
/// signals whenever it writes into the empty ring (the child leaves its
/// interrupts unmasked). Sleeping, rather than yielding in a loop, leaves
/// the processor — and under emulation the host's — to the root and the
/// disk.
pub fn wait() {
    let seen = vmbus::events();
    if inbound_waiting() {
        return;
    }
    partition_rt::wait_until(|| vmbus::events() != seen || inbound_waiting());
}

/// Runs `f` with the client, if the controller is open.
pub fn with<R>(f: impl FnOnce(&mut StorageClient<SharedRingMemory>) -> R) -> Option<R> {
    CLIENT.lock().as_mut().map(f)
}
