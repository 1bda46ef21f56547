//! The virtio driver's view of memory: the root's guest-physical addresses
//! are host-physical ones (its nested page tables are the identity) and
//! its page tables identity-map everything below the top of RAM and
//! 4 GiB, so a buffer's address is the address the device uses, and a
//! device register's physical address is where the root reaches it.
//!
//! DMA memory comes from the root's heap (identity mapped, page aligned,
//! zeroed). Buffers handed to a device must lie in the identity map (the
//! heap or the stack), not in the root's image, which is linked high.

use core::alloc::Layout;
use core::ptr::NonNull;

use virtio_drivers::{BufferDirection, Hal, PhysAddr};

/// Lowest address of the root's high image mapping (not identity).
const IMAGE_BASE: u64 = ipc::boot::PARTITION_IMAGE_BASE;

/// The root's hardware abstraction for virtio drivers.
pub struct RootHal;

fn layout(pages: usize) -> Layout {
    // 4096 is a power of two and `pages * 4096` cannot overflow for any
    // queue the driver asks for (a few pages).
    Layout::from_size_align(pages.max(1) * 4096, 4096).unwrap_or(Layout::new::<[u8; 4096]>())
}

fn physical(address: usize) -> PhysAddr {
    let address = address as u64;
    assert!(
        address < IMAGE_BASE,
        "DMA buffer at {address:#x} lies in the root's image, outside the identity map"
    );
    address
}

// SAFETY: every pointer returned is identity mapped (guest-physical =
// host-physical = virtual), so the device and the driver see the same bytes;
// allocations come from the global heap and are zeroed and page aligned.
unsafe impl Hal for RootHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc::alloc_zeroed(layout(pages)) };
        let Some(ptr) = NonNull::new(ptr) else {
            alloc::alloc::handle_alloc_error(layout(pages))
        };
        (physical(ptr.as_ptr() as usize), ptr)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: the caller passes what `dma_alloc` returned for `pages`.
        unsafe { alloc::alloc::dealloc(vaddr.as_ptr(), layout(pages)) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        // BARs below 4 GiB are identity mapped; a zero address is no BAR.
        NonNull::new(paddr as usize as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        physical(buffer.as_ptr() as *mut u8 as usize)
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// One zeroed page of the root's DMA memory that a device may write at
/// any time (the fw_cfg DMA self-test's descriptor and target): reached
/// only with volatile accesses, never through a Rust reference.
pub struct DevicePage {
    ptr: NonNull<u8>,
}

impl DevicePage {
    /// A fresh page (leaked: a device may still write it after use).
    pub fn new() -> Self {
        let (_, ptr) = RootHal::dma_alloc(1, BufferDirection::Both);
        DevicePage { ptr }
    }

    /// The (identity-mapped) address of byte `offset` of the page.
    pub fn address(&self, offset: usize) -> u64 {
        self.ptr.as_ptr() as u64 + (offset.min(4095)) as u64
    }

    /// Writes `bytes` at `offset` (clipped to the page).
    pub fn write(&mut self, offset: usize, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            let at = offset.saturating_add(i);
            if at >= 4096 {
                break;
            }
            // SAFETY: `at` lies inside the page this value owns (checked),
            // which no Rust reference covers; volatile because a device
            // writes it too.
            unsafe { core::ptr::write_volatile(self.ptr.as_ptr().add(at), *b) };
        }
    }

    /// Reads four bytes at `offset` (zeros past the page).
    pub fn read4(&self, offset: usize) -> [u8; 4] {
        [0, 1, 2, 3].map(|i| {
            let at = offset.saturating_add(i);
            if at >= 4096 {
                return 0;
            }
            // SAFETY: as for `write`.
            unsafe { core::ptr::read_volatile(self.ptr.as_ptr().add(at)) }
        })
    }
}
