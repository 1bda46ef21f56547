//! The root partition's hardware access: its RAM through the identity map,
//! hypercalls that write its memory, and stopping. Port I/O and the
//! processor registers are `partition_rt::arch`'s (one copy for every
//! partition); the port functions are re-exported here.

use core::arch::asm;

pub mod dma;
pub mod pci;

/// Port I/O on the ports the root holds a USE capability for (its I/O
/// permission map passes exactly those; others read all ones and drop
/// writes). Safe: see `partition_rt::arch::port`.
pub use partition_rt::arch::{inb, outb};

/// The boot-information page the microkernel put at `addr`.
pub fn boot_page(addr: u64) -> &'static [u8; 4096] {
    // SAFETY: the microkernel passes the guest-physical address of a page in
    // the root's boot area, identity mapped by the initial page tables and
    // never freed; the root only reads it.
    unsafe { &*(addr as *const [u8; 4096]) }
}

/// Reads a 64-bit word at a guest-physical address (identity mapped).
/// Touching memory the SLAT does not map stops the partition.
pub fn read_physical(addr: u64) -> u64 {
    // SAFETY: the initial page tables identity-map every guest-physical
    // address below the top of RAM; a read has no side effect on RAM, and
    // one the SLAT forbids exits to the microkernel instead of completing.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

/// Writes a 64-bit word at a guest-physical address the root's own page
/// tables map (its RAM, or a page it mapped into its shared window).
/// Touching memory the SLAT does not map stops the partition.
///
/// The caller names a page it owns and uses for nothing else at the time
/// (the alias self-test's scratch page).
pub fn write_physical(addr: u64, value: u64) {
    // SAFETY: as for `read_physical`: identity-mapped, and a store the SLAT
    // forbids exits to the microkernel instead of completing; the caller
    // owns the word (see above), so no Rust reference aliases it.
    unsafe { core::ptr::write_volatile(addr as *mut u64, value) }
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

/// Bytes of the root's own RAM at guest-physical `addr` (identity mapped).
///
/// The caller names RAM it owns and uses for nothing else: a boot module,
/// or a child's memory before it is donated.
pub fn ram(addr: u64, len: u64) -> &'static mut [u8] {
    // SAFETY: the initial page tables identity-map all guest-physical
    // memory; the microkernel's SLAT maps only the root's own RAM there (an
    // access elsewhere stops the root, it cannot corrupt anything else); the
    // caller uses the range exclusively (the child it prepares is not yet
    // created, or the module is read-only boot data).
    unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, len as usize) }
}

/// Makes a hypercall that may write into a buffer page of the root's
/// (`VcpuGetState`, `DirtyFetch`, `MemoryRead`, `MemoryWrite`).
///
/// The root only ever passes its scratch page as the buffer, and touches it
/// only through short-lived slices from [`ram`], none alive during a call.
pub fn buffer_hypercall(
    call: &ipc::hypercall::Call,
) -> Result<ipc::hypercall::Results, ipc::hypercall::Status> {
    // SAFETY: no Rust reference covers the scratch page while the call runs
    // (see above), so the microkernel's write cannot alias one.
    unsafe { partition_rt::hypercall::hypercall_unchecked(call) }
}

/// Ring memory over `pages` pages of a child's memory that the root has
/// just mapped into itself read-write at guest-physical `addr` (a VMBus
/// channel's rings, see `crate::vmbus`).
///
/// The caller names pages it mapped with `MemoryMap` at `addr` (identity
/// mapped by the root's page tables) and touches them only through the
/// returned memory until it unmaps them.
pub fn ring_memory(addr: u64, pages: u64) -> partition_rt::SharedRingMemory {
    // SAFETY: the pages are mapped read-write at `addr`, page-aligned, and
    // used only through this ring memory (and by the child) until the root
    // unmaps them (the caller's contract above).
    unsafe { partition_rt::SharedRingMemory::new(addr, (pages * 4096) as usize) }
}

/// Hands the root's heap range to the global allocator (once, at boot).
pub fn init_heap(heap: &partition_rt::heap::LockedHeap, start: u64, end: u64) {
    // SAFETY: the range is the root's own RAM, identity mapped, reserved
    // for the heap by the root's memory plan (`children::heap_range`: clear
    // of the boot area, the modules and every child), and this runs once.
    unsafe { heap.init(start as usize, end as usize) };
}
