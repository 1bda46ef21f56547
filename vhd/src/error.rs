//! Every way opening, reading, writing or merging a VHD can fail.
//!
//! Each variant names what was wrong in terms an administrator can act on;
//! hostile files map to one of these, never to a panic.

use crate::device::IoError;
use core::fmt;

/// A VHD operation's failure.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The underlying device failed.
    Io(IoError),
    /// The file is shorter than the structures it must hold.
    TooSmall {
        /// The file's length in bytes.
        len: u64,
    },
    /// No `conectix` footer at the end of the file (nor a valid copy at its start).
    NoFooter,
    /// The footer's checksum does not match its contents.
    FooterChecksum {
        /// Checksum stored in the file.
        stored: u32,
        /// Checksum computed over the footer.
        computed: u32,
    },
    /// The footer's file format version is not 1.0.
    UnsupportedVersion(u32),
    /// The footer names a disk type other than fixed (2), dynamic (3) or differencing (4).
    UnsupportedDiskType(u32),
    /// A structure field holds an impossible value.
    Malformed(&'static str),
    /// No `cxsparse` dynamic header where the footer points.
    NoDynamicHeader,
    /// The dynamic header's checksum does not match its contents.
    HeaderChecksum {
        /// Checksum stored in the file.
        stored: u32,
        /// Checksum computed over the header.
        computed: u32,
    },
    /// The block size is not a power of two between 512 bytes and 256 MiB.
    BadBlockSize(u32),
    /// The virtual size is zero, not a multiple of 512, or beyond the format's limit.
    BadSize(u64),
    /// The block allocation table does not fit in the file or cannot cover the disk.
    BadTable(&'static str),
    /// A block allocation table entry points outside the file's data area.
    BlockOutOfFile {
        /// The block's index.
        block: u32,
        /// Byte offset the entry points at.
        offset: u64,
    },
    /// Two blocks, or a block and the file's metadata, share bytes.
    BlockOverlap {
        /// The block's index.
        block: u32,
    },
    /// An access past the end of the virtual disk.
    OutOfRange {
        /// First byte of the access.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// The virtual disk's size.
        size: u64,
    },
    /// A write to a disk opened read-only.
    ReadOnly,
    /// A differencing disk was read or written before its parent was attached.
    NoParent,
    /// The operation needs a differencing disk.
    NotDifferencing,
    /// The parent's unique id (or size) is not the one the child records.
    ParentMismatch(&'static str),
    /// The parent chain refers back to a disk already in it.
    ParentLoop,
    /// The parent chain is deeper than [`crate::MAX_CHAIN_DEPTH`].
    ChainTooDeep,
    /// A parent locator is malformed or names no file that could be opened.
    BadLocator(&'static str),
    /// The file would grow past what a block allocation table can address.
    FileFull,
    /// A caller-supplied argument is invalid.
    InvalidArgument(&'static str),
}

impl From<IoError> for Error {
    fn from(e: IoError) -> Self {
        Error::Io(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::TooSmall { len } => write!(f, "file too small for a VHD ({len} bytes)"),
            Error::NoFooter => write!(f, "not a VHD: no 'conectix' footer at the end of the file"),
            Error::FooterChecksum { stored, computed } => write!(
                f,
                "VHD footer checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            Error::UnsupportedVersion(v) => write!(f, "unsupported VHD format version {v:#010x}"),
            Error::UnsupportedDiskType(t) => write!(f, "unsupported VHD disk type {t}"),
            Error::Malformed(what) => write!(f, "malformed VHD: {what}"),
            Error::NoDynamicHeader => {
                write!(
                    f,
                    "malformed VHD: no 'cxsparse' dynamic header at the footer's data offset"
                )
            }
            Error::HeaderChecksum { stored, computed } => write!(
                f,
                "VHD dynamic header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            Error::BadBlockSize(s) => write!(f, "unsupported VHD block size {s}"),
            Error::BadSize(s) => write!(f, "invalid VHD virtual size {s} bytes"),
            Error::BadTable(what) => write!(f, "malformed VHD block allocation table: {what}"),
            Error::BlockOutOfFile { block, offset } => write!(
                f,
                "VHD block {block} points at byte {offset}, outside the file's data area"
            ),
            Error::BlockOverlap { block } => {
                write!(
                    f,
                    "VHD block {block} overlaps another block or the file's metadata"
                )
            }
            Error::OutOfRange { offset, len, size } => write!(
                f,
                "access of {len} bytes at {offset} is past the end of the {size}-byte disk"
            ),
            Error::ReadOnly => write!(f, "the disk is open read-only"),
            Error::NoParent => write!(f, "differencing disk has no parent attached"),
            Error::NotDifferencing => write!(f, "not a differencing disk"),
            Error::ParentMismatch(what) => write!(f, "parent does not match the child: {what}"),
            Error::ParentLoop => write!(f, "the parent chain loops back on itself"),
            Error::ChainTooDeep => {
                write!(
                    f,
                    "the parent chain is deeper than {}",
                    crate::MAX_CHAIN_DEPTH
                )
            }
            Error::BadLocator(what) => write!(f, "parent locator: {what}"),
            Error::FileFull => write!(f, "the VHD file cannot grow further (2 TiB BAT limit)"),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
        }
    }
}

impl core::error::Error for Error {}

/// Shorthand for results in this crate.
pub type Result<T> = core::result::Result<T, Error>;
