//! The root partition's hardware access and the only place of its
//! `unsafe` (with the virtio drivers' DMA in `dma`, and `blk`'s requests,
//! still outside: see docs/node.md): the boot page, the heap, its RAM as
//! owned values ([`ram`]: boot modules, leases of the child pool), the
//! hypercall scratch page as an owned value ([`scratch`]), ring memory over
//! child pages mapped into the shared window ([`map_rings`]), physical
//! probes outside its own RAM, and stopping. Port I/O and the processor
//! registers are `partition_rt::arch`'s (one copy for every partition);
//! the port functions are re-exported here.
//!
//! # Invariants
//! No safe function here hands out memory whose soundness depends on its
//! caller: the heap, the scratch page, the pool and the modules are set up
//! once by [`boot`] from the microkernel's boot page; RAM is reached only
//! through a [`ram::Lease`] (exclusive), [`ram::Modules`] (read-only boot
//! data) or the [`scratch::Scratch`] (exclusive, behind a lock); raw
//! physical accesses refuse the root's own RAM.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};

use ipc::boot::{BootInfo, PhysRange};
use ipc::hypercall::{Call, Rights, SlotHandle, Status};
use partition_rt::sync::SpinLock;

pub mod blk;
pub mod dma;
pub mod kernel;
pub mod net;
pub mod pci;
pub mod ram;
pub mod scratch;
pub mod stack;
pub mod virtio;

/// Port I/O on the ports the root holds a USE capability for (its I/O
/// permission map passes exactly those; others read all ones and drop
/// writes). Safe: see `partition_rt::arch::port`.
pub use partition_rt::arch::{inb, outb};

/// Guest-physical ranges of the root's own RAM (from the boot page),
/// which [`read_physical`] and [`write_physical`] refuse.
static OWN_RAM: SpinLock<Vec<PhysRange>> = SpinLock::new(Vec::new());

/// Reads the boot-information page the microkernel put at `boot_page`
/// (the `_start` argument) and sets up what the rest of the root reaches
/// only through this module: the heap, the scratch page, the child pool,
/// the boot modules. Once, from `_start`, before anything else: a second
/// call returns an error without touching anything.
pub fn boot(boot_page: u64, heap: &partition_rt::heap::LockedHeap) -> Result<BootInfo, String> {
    static BOOTED: AtomicBool = AtomicBool::new(false);
    if BOOTED.swap(true, Ordering::AcqRel) {
        return Err(String::from("the root booted already"));
    }
    // SAFETY: the microkernel passes the guest-physical address of the
    // boot-information page in the root's boot area, identity mapped by
    // the initial page tables and never freed or written (this runs once,
    // from `_start`, with that argument).
    let page: &'static [u8; 4096] = unsafe { &*(boot_page as *const [u8; 4096]) };
    let info = BootInfo::from_page(page)
        .map_err(|e| format!("unusable boot page at {boot_page:#x}: {e:?}"))?;
    let (heap_range, _) =
        crate::children::heap_range(&info).map_err(|e| format!("no room for its heap: {e:?}"))?;
    // SAFETY: the range is the root's own RAM, identity mapped, reserved
    // for the heap by the memory plan (`children::heap_range`: clear of the
    // boot area, the modules, the scratch page below it and every child),
    // and this runs once.
    unsafe { heap.init(heap_range.start as usize, heap_range.end as usize) };
    *OWN_RAM.lock() = info.memory().to_vec();
    kernel::set_tsc_khz(u64::from(info.tsc_khz));
    ram::set_modules(&info);
    if let Ok(root) = crate::children::discover(&info) {
        scratch::init(root.scratch, root.authority);
        ram::set_pool(root.pool);
    }
    Ok(info)
}

/// Whether `[addr, addr + 8)` touches the root's own RAM.
fn own_ram(addr: u64) -> bool {
    let end = addr.saturating_add(8);
    OWN_RAM.lock().iter().any(|r| addr < r.end && r.start < end)
}

/// Reads a 64-bit word at a guest-physical address outside the root's own
/// RAM (`None` inside it): the hypervisor's frames (the kernel stops the
/// root with a nested page fault), a page the root mapped into its shared
/// window. Touching memory the SLAT does not map stops the partition.
pub fn read_physical(addr: u64) -> Option<u64> {
    if own_ram(addr) || !addr.is_multiple_of(8) {
        return None;
    }
    // SAFETY: the address is identity mapped by the initial page tables
    // and outside the root's RAM, so no Rust object of the root's lies
    // there; a read the SLAT forbids exits to the microkernel instead of
    // completing.
    Some(unsafe { core::ptr::read_volatile(addr as *const u64) })
}

/// Writes a 64-bit word at a guest-physical address outside the root's
/// own RAM (false inside it, nothing written): a page it mapped into its
/// shared window. Touching memory the SLAT does not map stops the partition.
pub fn write_physical(addr: u64, value: u64) -> bool {
    if own_ram(addr) || !addr.is_multiple_of(8) {
        return false;
    }
    // SAFETY: as for `read_physical`: identity mapped and outside the
    // root's RAM (no Rust object there); a store the SLAT forbids exits to
    // the microkernel instead of completing.
    unsafe { core::ptr::write_volatile(addr as *mut u64, value) };
    true
}

/// Stops the partition for good (HLT with interrupts off: the microkernel
/// treats it as the root powering off).
pub fn power_off() -> ! {
    partition_rt::halt_forever()
}

/// Stops the partition with a fault the microkernel reports.
pub fn crash() -> ! {
    // SAFETY: UD2 raises #UD; with no IDT the vCPU triple-faults and the
    // microkernel stops the partition with a report. (The `x86_64` crate
    // has no UD2 wrapper.)
    unsafe { asm!("ud2", options(nomem, nostack, noreturn)) }
}

/// Maps `pages` pages of a child's memory (`memory`, from `first_page`)
/// into the root (`root`, its own partition) read-write at `gpa`, in its
/// shared window (never its RAM), and returns ring memory over them (a
/// VMBus channel's rings, see `crate::vmbus`). The ring memory reaches the
/// pages with volatile accesses only (the child writes them too).
pub fn map_rings(
    root: SlotHandle,
    memory: SlotHandle,
    first_page: u64,
    gpa: u64,
    pages: u64,
) -> Result<partition_rt::SharedRingMemory, Status> {
    let len = pages.checked_mul(4096).ok_or(Status::InvalidArgument)?;
    if len == 0 || !gpa.is_multiple_of(4096) || own_ram(gpa) || own_ram(gpa + len - 8) {
        return Err(Status::InvalidArgument);
    }
    partition_rt::hypercall(&Call::MemoryMap {
        partition: root,
        memory,
        first_page,
        gpa,
        pages,
        access: Rights::READ | Rights::WRITE,
    })?;
    // SAFETY: the pages were just mapped read-write at `gpa`, page-aligned,
    // outside the root's RAM (no Rust object of the root's there); ring
    // memory reaches them with volatile accesses, as the child does.
    Ok(unsafe { partition_rt::SharedRingMemory::new(gpa, len as usize) })
}
