//! capvisor's microkernel, the parts that need no hardware: memory-map
//! handling, the frame allocator, page-table building and walking (host
//! paging and nested paging), ELF loading, VMCB layout and intercept bitmaps.
//!
//! The binary (`main.rs`) adds the hardware layer under `arch/`; everything
//! here is safe Rust with host unit tests.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod cap;
pub mod chipset;
pub mod kernel;
pub mod machine;
pub mod memory;
pub mod object;
pub mod paging;
pub mod processor;
pub mod sched;
pub mod svm;
pub mod vmx;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

/// Size of a small page / frame.
pub const PAGE_SIZE: u64 = 4096;
/// Size of a large (2 MiB) page.
pub const LARGE_PAGE_SIZE: u64 = 2 * 1024 * 1024;

/// Rounds `value` up to a multiple of `align` (a power of two); `None` on overflow.
pub const fn align_up(value: u64, align: u64) -> Option<u64> {
    match value.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// Rounds `value` down to a multiple of `align` (a power of two).
pub const fn align_down(value: u64, align: u64) -> u64 {
    value & !(align - 1)
}
