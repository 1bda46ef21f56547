//! Every way an exFAT operation can fail.
//!
//! Corruption found on disk is reported as [`Error::Corrupt`] with what was
//! wrong; an operation that meets corruption stops before writing anything.

use crate::device::IoError;
use core::fmt;

/// An exFAT operation's failure.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The underlying device failed.
    Io(IoError),
    /// Not an exFAT volume (no `EXFAT   ` boot sector).
    NotExfat,
    /// On-disk structures are inconsistent; nothing was written.
    Corrupt(&'static str),
    /// No such file or directory.
    NotFound,
    /// The name already exists in the directory.
    AlreadyExists,
    /// A path component that must be a directory is a file.
    NotADirectory,
    /// The operation needs a file but found a directory.
    IsADirectory,
    /// The directory is not empty.
    DirectoryNotEmpty,
    /// A name is empty, too long (over 255 UTF-16 units) or holds a forbidden character.
    InvalidName,
    /// No free clusters (or directory entries) left.
    NoSpace,
    /// The file would exceed what the volume can address.
    FileTooLarge,
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
            Error::NotExfat => write!(f, "not an exFAT volume"),
            Error::Corrupt(what) => write!(f, "volume is corrupt: {what}"),
            Error::NotFound => write!(f, "no such file or directory"),
            Error::AlreadyExists => write!(f, "the name already exists"),
            Error::NotADirectory => write!(f, "not a directory"),
            Error::IsADirectory => write!(f, "is a directory"),
            Error::DirectoryNotEmpty => write!(f, "directory not empty"),
            Error::InvalidName => write!(f, "invalid file name"),
            Error::NoSpace => write!(f, "no space left on the volume"),
            Error::FileTooLarge => write!(f, "file too large"),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
        }
    }
}

impl core::error::Error for Error {}

/// Shorthand for results in this crate.
pub type Result<T> = core::result::Result<T, Error>;
