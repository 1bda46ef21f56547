//! Microsoft VHD images ("Virtual Hard Disk Image Format Specification"):
//! fixed, dynamic and differencing disks, `no_std` + `alloc`.
//!
//! All I/O goes through [`BlockDevice`], so the same code runs on host files
//! (`std` feature), on files of an exFAT volume inside the root partition,
//! and on memory in tests and fuzzing.
//!
//! Invariants: every structure read from a file (footer, dynamic header,
//! block allocation table, sector bitmaps, parent locators) is validated
//! before use, and a malformed or hostile file yields an [`Error`], never a
//! panic or an access outside the file or the caller's buffers. After every
//! [`Vhd::flush`] the file ends in a valid footer and its table and bitmaps
//! describe exactly the data written.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod bytes;
mod chain;
mod check;
mod create;
mod device;
mod disk;
mod error;
mod footer;
mod header;
mod locator;
mod open;

pub use chain::{ChainAccess, MAX_CHAIN_DEPTH, ParentResolver};
pub use check::{Finding, Severity};
pub use create::NewDisk;
pub use device::{BlockDevice, IoError, MemDevice};
pub use disk::Vhd;
pub use error::{Error, Result};
pub use footer::{
    CREATOR_APP, CURRENT_SIZE_CREATORS, DiskType, FOOTER_SIZE, Footer, Geometry, MAX_DISK_SIZE,
};
pub use header::{DEFAULT_BLOCK_SIZE, DynamicHeader, HEADER_SIZE, ParentLocator, Platform};
pub use locator::{MAX_LOCATOR_BYTES, ParentLocation};

/// Seconds between the Unix epoch and the VHD epoch (2000-01-01 00:00:00 UTC).
pub const VHD_EPOCH_UNIX: u64 = 946_684_800;
