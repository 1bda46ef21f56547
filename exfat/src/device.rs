//! The byte-addressed storage an exFAT volume lives on (a disk, a partition, an image file).
//!
//! Invariants every implementation keeps: `read_at` fills the whole buffer or
//! fails (a read past the end is an error, never silent zeros); `write_at`
//! past the current end extends the device, and bytes between the old end and
//! the write read back as zero afterwards; `flush` returns only once every
//! earlier write is durable.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// An I/O failure reported by a [`BlockDevice`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoError {
    message: String,
}

impl IoError {
    /// An error with a human-readable description.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The description given when the error was made.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Byte-addressed storage: a host file, a virtio-blk disk, memory.
pub trait BlockDevice {
    /// Current length in bytes.
    fn size(&mut self) -> Result<u64, IoError>;
    /// Fill `buf` from `offset`; fails if any byte lies past the end.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError>;
    /// Write `buf` at `offset`, extending the device (zero-filled) if needed.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError>;
    /// Make every earlier write durable.
    fn flush(&mut self) -> Result<(), IoError>;
}

impl<T: BlockDevice + ?Sized> BlockDevice for &mut T {
    fn size(&mut self) -> Result<u64, IoError> {
        (**self).size()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        (**self).write_at(offset, buf)
    }
    fn flush(&mut self) -> Result<(), IoError> {
        (**self).flush()
    }
}

/// A device held in memory: tests, fuzzing, building small images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemDevice {
    /// The device's bytes.
    pub data: Vec<u8>,
    /// Largest length the device may grow to (writes past it fail).
    pub limit: u64,
}

impl MemDevice {
    /// A device holding `data` that may grow to 1 GiB.
    pub fn new(data: Vec<u8>) -> Self {
        Self {
            data,
            limit: 1 << 30,
        }
    }
}

impl Default for MemDevice {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl BlockDevice for MemDevice {
    fn size(&mut self) -> Result<u64, IoError> {
        Ok(self.data.len() as u64)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let start = usize::try_from(offset).map_err(|_| IoError::new("read past end"))?;
        let end = start
            .checked_add(buf.len())
            .ok_or_else(|| IoError::new("read past end"))?;
        let src = self
            .data
            .get(start..end)
            .ok_or_else(|| IoError::new("read past end"))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.limit)
            .ok_or_else(|| IoError::new("write past device limit"))?;
        let (start, end) = (offset as usize, end as usize);
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[start..end].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), IoError> {
        Ok(())
    }
}

#[cfg(all(feature = "std", unix))]
impl BlockDevice for std::fs::File {
    fn size(&mut self) -> Result<u64, IoError> {
        self.metadata().map(|m| m.len()).map_err(io_error)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset).map_err(io_error)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, offset).map_err(io_error)
    }

    fn flush(&mut self) -> Result<(), IoError> {
        self.sync_data().map_err(io_error)
    }
}

#[cfg(all(feature = "std", unix))]
fn io_error(e: std::io::Error) -> IoError {
    use alloc::string::ToString;
    IoError::new(e.to_string())
}
