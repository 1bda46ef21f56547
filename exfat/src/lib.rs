//! exFAT volumes (Microsoft "exFAT File System Specification"), `no_std` +
//! `alloc`: format, mount, directories, long names, files with contiguous
//! (NoFatChain) allocation and preallocation, extent maps, and a checker.
//!
//! All I/O goes through [`BlockDevice`], so the same code runs on a
//! virtio-blk disk in the root partition and on image files on the host.
//!
//! Invariants: everything read from the volume (boot region, FAT chains,
//! bitmap, up-case table, directory entries) is validated before use; a
//! malformed volume yields [`Error::Corrupt`] and the operation that found
//! it writes nothing; the boot checksum, entry-set checksums, name hashes
//! and the up-case checksum are always written correct.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod boot;
mod check;
mod device;
mod dir;
mod entry;
mod error;
mod file;
mod format;
mod upcase;
mod volume;

pub use boot::BootSector;
pub use check::CheckReport;
pub use device::{BlockDevice, IoError, MemDevice};
pub use entry::{MAX_NAME, Timestamp};
pub use error::{Error, Result};
pub use file::{DirEntry, Extent, File};
pub use format::FormatOptions;
pub use volume::Volume;
