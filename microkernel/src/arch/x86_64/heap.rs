//! The microkernel's heap: a linked-list allocator over frames taken from
//! the frame pool at boot. Kernel objects (capability spaces, run queues,
//! the object table) live here.

use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Gives the heap `[start, start + bytes)`, frames the caller took from the pool.
pub fn init(start: u64, bytes: usize) {
    // SAFETY: the range was just allocated from the kernel's identity-mapped
    // frame pool for the heap alone; `init` runs once, before any allocation.
    unsafe { HEAP.lock().init(start as *mut u8, bytes) };
}
