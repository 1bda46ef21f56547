//! A small first-fit heap over one address range given at run time, and a
//! locked wrapper usable as the `#[global_allocator]`.
//!
//! # Invariants
//! - Free memory is a singly linked list of [`FreeBlock`]s stored in the
//!   free memory itself, sorted by address, never overlapping and never
//!   adjacent (neighbours are merged when a block is freed).
//! - Every block start and every block size is a multiple of [`GRANULE`]
//!   (16 bytes, enough room for a `FreeBlock`), so splitting a block never
//!   leaves a piece too small to hold its own header.
//! - Every allocation occupies `round_up(max(size, GRANULE), GRANULE)`
//!   bytes; `dealloc` recomputes the same size from the layout.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

use crate::sync::SpinLock;

/// Allocation granule: block sizes and addresses are multiples of it.
pub const GRANULE: usize = 16;

/// The header of a free block, stored at the block's start.
#[repr(C, align(16))]
struct FreeBlock {
    /// Bytes in the block, header included.
    size: usize,
    /// The next free block (higher address), or null.
    next: *mut FreeBlock,
}

const _: () = assert!(core::mem::size_of::<FreeBlock>() <= GRANULE);

/// A heap: a free list over memory it was given.
pub struct Heap {
    head: *mut FreeBlock,
    capacity: usize,
}

// SAFETY: a `Heap` only holds pointers into the memory handed to `init`,
// which belongs to the heap alone; moving the heap to another vCPU moves
// that ownership with it.
unsafe impl Send for Heap {}

const fn round_up(value: usize, align: usize) -> Option<usize> {
    match value.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// The bytes an allocation of `layout` occupies, and the alignment it needs.
fn footprint(layout: Layout) -> Option<(usize, usize)> {
    let size = round_up(layout.size().max(GRANULE), GRANULE)?;
    Some((size, layout.align().max(GRANULE)))
}

impl Heap {
    /// A heap with no memory: every allocation fails until [`Heap::init`].
    pub const fn empty() -> Self {
        Heap {
            head: ptr::null_mut(),
            capacity: 0,
        }
    }

    /// Hands the heap the memory `[start, end)` (trimmed to [`GRANULE`]
    /// boundaries). A heap given memory before keeps it too.
    ///
    /// # Safety
    /// `[start, end)` must be readable and writable memory that nothing
    /// else uses, for as long as the heap and the allocations it returns
    /// live, and must not overlap memory the heap already has.
    pub unsafe fn init(&mut self, start: usize, end: usize) {
        let Some(start) = round_up(start, GRANULE) else {
            return;
        };
        let end = end & !(GRANULE - 1);
        if end <= start {
            return;
        }
        self.capacity += end - start;
        // SAFETY: the caller gives `[start, end)` to the heap; it is aligned
        // to GRANULE and at least GRANULE bytes long.
        unsafe { self.release(start, end - start) };
    }

    /// Bytes the heap was given.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes free now, and the number of free blocks.
    pub fn free(&self) -> (usize, usize) {
        let (mut bytes, mut blocks) = (0, 0);
        let mut cur = self.head;
        while !cur.is_null() {
            // SAFETY: every pointer in the list is a valid free block (module invariant).
            let block = unsafe { &*cur };
            bytes += block.size;
            blocks += 1;
            cur = block.next;
        }
        (bytes, blocks)
    }

    /// Allocates memory for `layout`, or returns null.
    pub fn allocate(&mut self, layout: Layout) -> *mut u8 {
        let Some((size, align)) = footprint(layout) else {
            return ptr::null_mut();
        };
        let mut prev: *mut *mut FreeBlock = &mut self.head;
        // SAFETY: `prev` points at `self.head` or at the `next` field of a
        // free block, and every non-null pointer in the list is a valid free
        // block we own (module invariant).
        unsafe {
            let mut cur = *prev;
            while !cur.is_null() {
                let block_start = cur as usize;
                let block_end = block_start + (*cur).size;
                let next = (*cur).next;
                if let Some(start) = round_up(block_start, align)
                    && let Some(end) = start.checked_add(size)
                    && end <= block_end
                {
                    // Front and back pieces are multiples of GRANULE.
                    let mut link = next;
                    if end < block_end {
                        let back = end as *mut FreeBlock;
                        back.write(FreeBlock {
                            size: block_end - end,
                            next,
                        });
                        link = back;
                    }
                    if start > block_start {
                        (*cur).size = start - block_start;
                        (*cur).next = link;
                    } else {
                        *prev = link;
                    }
                    return start as *mut u8;
                }
                prev = &raw mut (*cur).next;
                cur = next;
            }
        }
        ptr::null_mut()
    }

    /// Returns an allocation to the heap.
    ///
    /// # Safety
    /// `ptr` must have come from [`Heap::allocate`] on this heap with the
    /// same `layout`, and must not be used afterwards.
    pub unsafe fn deallocate(&mut self, ptr: *mut u8, layout: Layout) {
        if let Some((size, _)) = footprint(layout) {
            // SAFETY: the block was allocated with this footprint (caller's
            // contract), so it is ours again, GRANULE-aligned and sized.
            unsafe { self.release(ptr as usize, size) };
        }
    }

    /// Inserts `[start, start + size)` into the free list, merging neighbours.
    ///
    /// # Safety
    /// The range must be owned by the heap, free, GRANULE-aligned and sized.
    unsafe fn release(&mut self, start: usize, size: usize) {
        let end = start + size;
        let mut prev: *mut FreeBlock = ptr::null_mut();
        let mut next = self.head;
        // SAFETY: the list holds valid free blocks (module invariant); the
        // new block's memory is ours (caller's contract) and large enough for
        // a header.
        unsafe {
            while !next.is_null() && (next as usize) < start {
                prev = next;
                next = (*next).next;
            }
            let new = start as *mut FreeBlock;
            new.write(FreeBlock { size, next });
            if !next.is_null() && end == next as usize {
                (*new).size += (*next).size;
                (*new).next = (*next).next;
            }
            if prev.is_null() {
                self.head = new;
            } else if prev as usize + (*prev).size == start {
                (*prev).size += (*new).size;
                (*prev).next = (*new).next;
            } else {
                (*prev).next = new;
            }
        }
    }
}

/// A [`Heap`] behind a spin lock: put one in a `static` and mark it
/// `#[global_allocator]`, then call [`LockedHeap::init`] once at boot.
pub struct LockedHeap(SpinLock<Heap>);

impl LockedHeap {
    /// A heap with no memory yet.
    pub const fn empty() -> Self {
        LockedHeap(SpinLock::new(Heap::empty()))
    }

    /// Gives the heap `[start, end)`.
    ///
    /// # Safety
    /// As for [`Heap::init`].
    pub unsafe fn init(&self, start: usize, end: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { self.0.lock().init(start, end) };
    }

    /// Bytes the heap was given, bytes free now, free blocks.
    pub fn stats(&self) -> (usize, usize, usize) {
        let heap = self.0.lock();
        let (free, blocks) = heap.free();
        (heap.capacity(), free, blocks)
    }
}

// SAFETY: `allocate` returns null or a block of at least `layout.size()`
// bytes aligned to `layout.align()` that no other live allocation overlaps
// (module invariants); `dealloc` is only called by the allocator API with a
// pointer and layout from `alloc`.
unsafe impl GlobalAlloc for LockedHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0.lock().allocate(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with `layout`.
        unsafe { self.0.lock().deallocate(ptr, layout) };
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::boxed::Box;
    use std::vec::Vec;

    const ARENA: usize = 64 * 1024;

    #[repr(C, align(4096))]
    struct Arena([u8; ARENA]);

    fn heap_over(arena: &mut Arena) -> Heap {
        let mut heap = Heap::empty();
        let start = arena.0.as_mut_ptr() as usize;
        // SAFETY: the arena is ours for the whole test and outlives the heap's use.
        unsafe { heap.init(start, start + ARENA) };
        heap
    }

    #[test]
    fn allocates_aligned_disjoint_blocks_and_merges_them_back() {
        let mut arena = Box::new(Arena([0; ARENA]));
        let mut heap = heap_over(&mut arena);
        assert_eq!(heap.free(), (ARENA, 1));

        let mut seed = 0x1234_5678_u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut live: Vec<(usize, Layout, u8)> = Vec::new();
        for round in 0..5000u32 {
            if live.len() < 40 && rand() % 3 != 0 {
                let size = (rand() % 700) as usize + 1;
                let align = 1usize << (rand() % 10);
                let layout = Layout::from_size_align(size, align).unwrap();
                let p = heap.allocate(layout);
                if p.is_null() {
                    continue;
                }
                let addr = p as usize;
                assert_eq!(addr % align, 0);
                let base = arena.0.as_ptr() as usize;
                assert!(addr >= base && addr + size <= base + ARENA);
                for (other, ol, _) in &live {
                    assert!(addr + size <= *other || *other + ol.size() <= addr);
                }
                let tag = round as u8;
                // SAFETY: `p` is a fresh allocation of `size` bytes.
                unsafe { p.write_bytes(tag, size) };
                live.push((addr, layout, tag));
            } else if !live.is_empty() {
                let (addr, layout, tag) = live.swap_remove((rand() as usize) % live.len());
                // SAFETY: still allocated; nobody else wrote it.
                let bytes =
                    unsafe { core::slice::from_raw_parts(addr as *const u8, layout.size()) };
                assert!(bytes.iter().all(|&b| b == tag), "allocation overwritten");
                // SAFETY: allocated with this layout, not used again.
                unsafe { heap.deallocate(addr as *mut u8, layout) };
            }
        }
        for (addr, layout, _) in live.drain(..) {
            // SAFETY: allocated with this layout, not used again.
            unsafe { heap.deallocate(addr as *mut u8, layout) };
        }
        assert_eq!(heap.free(), (ARENA, 1), "everything merged back");
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let mut arena = Box::new(Arena([0; ARENA]));
        let mut heap = heap_over(&mut arena);
        let big = Layout::from_size_align(ARENA + 1, 8).unwrap();
        assert!(heap.allocate(big).is_null());
        let all = Layout::from_size_align(ARENA, 4096).unwrap();
        let p = heap.allocate(all);
        assert!(!p.is_null());
        assert!(heap.allocate(Layout::new::<u8>()).is_null());
        // SAFETY: allocated just above with this layout.
        unsafe { heap.deallocate(p, all) };
        assert_eq!(heap.free(), (ARENA, 1));
        assert!(Heap::empty().allocate(Layout::new::<u64>()).is_null());
    }

    #[test]
    fn page_aligned_allocation_leaves_a_usable_front_piece() {
        let mut arena = Box::new(Arena([0; ARENA]));
        let mut heap = heap_over(&mut arena);
        let small = heap.allocate(Layout::new::<u64>());
        let page = Layout::from_size_align(4096, 4096).unwrap();
        let p = heap.allocate(page);
        assert_eq!(p as usize % 4096, 0);
        assert_eq!(heap.free().1, 2, "front piece and tail");
        let again = heap.allocate(Layout::new::<u64>());
        assert_eq!(
            again as usize,
            small as usize + GRANULE,
            "front piece reused"
        );
        // SAFETY: each was allocated with the layout given here.
        unsafe {
            heap.deallocate(p, page);
            heap.deallocate(small, Layout::new::<u64>());
            heap.deallocate(again, Layout::new::<u64>());
        }
        assert_eq!(heap.free(), (ARENA, 1));
    }
}
