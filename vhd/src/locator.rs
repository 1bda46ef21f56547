//! Parent locators: decoding the paths a differencing disk records for its
//! parent, encoding new ones, and attaching a parent.
//!
//! Invariants: locator data is read only from inside the file and only up to
//! [`MAX_LOCATOR_BYTES`]; a parent is attached only if its unique id and
//! size are the ones the child records.

use crate::device::BlockDevice;
use crate::disk::Vhd;
use crate::error::{Error, Result};
use crate::footer::DiskType;
use crate::header::Platform;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

/// Longest locator data read from a file.
pub const MAX_LOCATOR_BYTES: u32 = 64 * 1024;

/// One place a differencing disk says its parent can be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentLocation {
    /// Kind of path.
    pub platform: Platform,
    /// The path, decoded.
    pub path: String,
}

impl ParentLocation {
    /// A Windows path relative to the child's folder (`W2ru`), e.g. `.\base.vhd`.
    pub fn relative(path: &str) -> Self {
        Self {
            platform: Platform::RelativeWindows,
            path: path.into(),
        }
    }

    /// An absolute path (`W2ku`).
    pub fn absolute(path: &str) -> Self {
        Self {
            platform: Platform::AbsoluteWindows,
            path: path.into(),
        }
    }

    pub(crate) fn platform_code(&self) -> u32 {
        match self.platform {
            Platform::RelativeWindows => u32::from_be_bytes(*b"W2ru"),
            Platform::AbsoluteWindows => u32::from_be_bytes(*b"W2ku"),
            Platform::LegacyWindows => u32::from_be_bytes(*b"Wi2k"),
            Platform::Mac => u32::from_be_bytes(*b"MacX"),
            Platform::Other(code) => code,
            Platform::None => 0,
        }
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let bytes: Vec<u8> = match self.platform {
            Platform::RelativeWindows | Platform::AbsoluteWindows => self
                .path
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect(),
            Platform::Mac | Platform::LegacyWindows => self.path.as_bytes().to_vec(),
            Platform::Other(_) | Platform::None => {
                return Err(Error::InvalidArgument(
                    "parent locators are W2ru, W2ku, Wi2k or MacX",
                ));
            }
        };
        if bytes.is_empty() || bytes.len() > MAX_LOCATOR_BYTES as usize {
            return Err(Error::InvalidArgument("parent path empty or too long"));
        }
        Ok(bytes)
    }
}

impl<D: BlockDevice> Vhd<D> {
    /// The parent locations recorded in a differencing disk, in the order a
    /// resolver should try them: relative, absolute, then legacy entries.
    pub fn parent_locations(&mut self) -> Result<Vec<ParentLocation>> {
        let Some(sparse) = &self.sparse else {
            return Err(Error::NotDifferencing);
        };
        if self.footer.disk_type != DiskType::Differencing {
            return Err(Error::NotDifferencing);
        }
        let locators = sparse.header.locators;
        let mut found = Vec::new();
        for loc in locators {
            let platform = Platform::from_code(loc.platform_code);
            if matches!(platform, Platform::None | Platform::Other(_)) {
                continue;
            }
            if loc.data_length == 0 || loc.data_length > MAX_LOCATOR_BYTES {
                return Err(Error::BadLocator("data length is zero or too large"));
            }
            let end = loc.data_offset.checked_add(u64::from(loc.data_length));
            if end.is_none_or(|end| end > self.footer_offset) || loc.data_offset < 512 {
                return Err(Error::BadLocator("data lies outside the file"));
            }
            let mut data = vec![0u8; loc.data_length as usize];
            self.dev.read_at(loc.data_offset, &mut data)?;
            let path = match platform {
                Platform::RelativeWindows | Platform::AbsoluteWindows => {
                    let units = data
                        .chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]));
                    char::decode_utf16(units)
                        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                        .take_while(|&c| c != '\0')
                        .collect()
                }
                _ => String::from_utf8_lossy(&data).trim_end_matches('\0').into(),
            };
            found.push(ParentLocation { platform, path });
        }
        found.sort_by_key(|l| match l.platform {
            Platform::RelativeWindows => 0,
            Platform::AbsoluteWindows => 1,
            _ => 2,
        });
        Ok(found)
    }

    /// Attach the parent a differencing disk reads through to.
    pub fn attach_parent(&mut self, parent: Vhd<D>) -> Result<()> {
        let Some(sparse) = &self.sparse else {
            return Err(Error::NotDifferencing);
        };
        if self.footer.disk_type != DiskType::Differencing {
            return Err(Error::NotDifferencing);
        }
        if parent.footer.unique_id != sparse.header.parent_unique_id {
            return Err(Error::ParentMismatch(
                "unique id differs from the one recorded",
            ));
        }
        if parent.size != self.size {
            return Err(Error::ParentMismatch("virtual size differs"));
        }
        self.parent = Some(Box::new(parent));
        Ok(())
    }

    /// Detach and return the parent.
    pub fn take_parent(&mut self) -> Option<Vhd<D>> {
        self.parent.take().map(|p| *p)
    }
}
