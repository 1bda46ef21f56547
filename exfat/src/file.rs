//! Files and directories as the caller sees them: listing, creating, opening,
//! reading, writing, resizing, renaming, removing, and extent maps.
//!
//! Invariants: a file's clusters are contiguous (NoFatChain) whenever the
//! volume has room for that, and otherwise linked in the FAT; bytes between
//! the valid data length and the data length read as zeros and are zeroed
//! on disk before the valid data length moves past them; the entry set is
//! rewritten after the data it describes.

use crate::device::BlockDevice;
use crate::dir::{Dir, Found};
use crate::entry::{ATTR_ARCHIVE, EntrySet, FLAG_ALLOC_POSSIBLE, FLAG_NO_FAT_CHAIN, Timestamp};
use crate::error::{Error, Result};
use crate::volume::{END_OF_CHAIN, Run, Volume, run_clusters};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

/// What a directory listing says about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name.
    pub name: String,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Size in bytes (the data length).
    pub size: u64,
    /// Bytes of valid data (the rest reads as zeros: preallocated).
    pub valid_length: u64,
    /// Whether its clusters are contiguous without a FAT chain.
    pub contiguous: bool,
    /// Last modification time.
    pub modified: Timestamp,
}

fn to_entry(set: &EntrySet) -> DirEntry {
    DirEntry {
        name: char::decode_utf16(set.name.iter().copied())
            .map(|c| c.unwrap_or('?'))
            .collect(),
        is_dir: set.is_dir(),
        size: set.data_length,
        valid_length: set.valid_length,
        contiguous: set.no_fat_chain(),
        modified: Timestamp::decode(set.modified),
    }
}

/// An open file: where its entry set is and where its data is.
#[derive(Debug, Clone)]
pub struct File {
    dir: Dir,
    index: u32,
    set: EntrySet,
    runs: Vec<Run>,
}

impl File {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.set.data_length
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.set.data_length == 0
    }

    /// Bytes of valid data.
    pub fn valid_length(&self) -> u64 {
        self.set.valid_length
    }

    /// Whether the data is one contiguous run without a FAT chain.
    pub fn is_contiguous(&self) -> bool {
        self.set.no_fat_chain()
    }
}

/// One contiguous piece of a file on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Offset within the file.
    pub file_offset: u64,
    /// Byte offset on the volume's device.
    pub device_offset: u64,
    /// Length in bytes (whole clusters; the last may pass the file's end).
    pub length: u64,
}

impl<D: BlockDevice> Volume<D> {
    /// List a directory (`""` or `"/"` is the root).
    pub fn list(&mut self, path: &str) -> Result<Vec<DirEntry>> {
        let dir = match self.resolve(path)? {
            (root, None) => root,
            (dir, Some(found)) => self.subdir(&dir, &found)?,
        };
        let data = self.read_dir(&dir)?;
        Ok(self.scan(&data)?.iter().map(|f| to_entry(&f.set)).collect())
    }

    /// Describe one file or directory.
    pub fn stat(&mut self, path: &str) -> Result<DirEntry> {
        match self.resolve(path)? {
            (_, Some(found)) => Ok(to_entry(&found.set)),
            (_, None) => Err(Error::InvalidArgument("the root directory has no entry")),
        }
    }

    /// Create a directory.
    pub fn create_dir(&mut self, path: &str) -> Result<()> {
        let (mut dir, name) = self.resolve_parent(path)?;
        if self.find(&dir, &name)?.is_some() {
            return Err(Error::AlreadyExists);
        }
        let set = self.new_dir_set(name, dir.first_cluster)?;
        let first = set.first_cluster;
        if let Err(e) = self.insert_set(&mut dir, &set) {
            self.mark(first, 1, false)?;
            return Err(e);
        }
        Ok(())
    }

    /// Create an empty file (the name must not exist).
    pub fn create(&mut self, path: &str) -> Result<File> {
        let (mut dir, name) = self.resolve_parent(path)?;
        if self.find(&dir, &name)?.is_some() {
            return Err(Error::AlreadyExists);
        }
        let now = self.now.encode();
        let set = EntrySet {
            attributes: ATTR_ARCHIVE,
            created: now,
            modified: now,
            accessed: now,
            stream_flags: FLAG_ALLOC_POSSIBLE,
            valid_length: 0,
            first_cluster: 0,
            data_length: 0,
            name,
            extra: Vec::new(),
        };
        let index = self.insert_set(&mut dir, &set)?;
        Ok(File {
            dir,
            index,
            set,
            runs: Vec::new(),
        })
    }

    /// Open an existing file.
    pub fn open(&mut self, path: &str) -> Result<File> {
        let (dir, found) = self.resolve(path)?;
        let Some(Found { index, set }) = found else {
            return Err(Error::IsADirectory);
        };
        if set.is_dir() {
            return Err(Error::IsADirectory);
        }
        let runs = self.file_runs(&set)?;
        Ok(File {
            dir,
            index,
            set,
            runs,
        })
    }

    fn file_runs(&mut self, set: &EntrySet) -> Result<Vec<Run>> {
        if set.data_length == 0 {
            return Ok(Vec::new());
        }
        if set.no_fat_chain() {
            self.contiguous(set.first_cluster, set.data_length)
        } else {
            self.chain(set.first_cluster, Some(set.data_length))
        }
    }

    /// Read from `offset`; returns the bytes read (short at end of file).
    pub fn read(&mut self, file: &File, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let len = file.set.data_length;
        if offset >= len {
            return Ok(0);
        }
        let n = (len - offset).min(buf.len() as u64) as usize;
        let valid = file.set.valid_length;
        let mut done = 0usize;
        while done < n {
            let pos = offset + done as u64;
            if pos >= valid {
                buf[done..n].fill(0);
                break;
            }
            let (at, room) = self
                .locate(&file.runs, pos)
                .ok_or(Error::Corrupt("file shorter than its length"))?;
            let k = (room.min(valid - pos) as usize).min(n - done);
            self.dev.read_at(at, &mut buf[done..done + k])?;
            done += k;
        }
        Ok(n)
    }

    /// Write at `offset`, growing the file as needed.
    pub fn write(&mut self, file: &mut File, offset: u64, data: &[u8]) -> Result<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(Error::FileTooLarge)?;
        if end > file.set.data_length {
            self.resize(file, end)?;
        }
        if data.is_empty() {
            return Ok(());
        }
        self.begin_change()?;
        if offset > file.set.valid_length {
            let (from, to) = (file.set.valid_length, offset);
            self.zero_range(file, from, to)?;
        }
        self.write_runs(&file.runs.clone(), offset, data)?;
        let valid = file.set.valid_length.max(end);
        let now = self.now.encode();
        self.store(file, |set| {
            set.valid_length = valid;
            set.modified = now;
        })
    }

    fn write_runs(&mut self, runs: &[Run], offset: u64, data: &[u8]) -> Result<()> {
        let mut done = 0usize;
        while done < data.len() {
            let (at, room) = self
                .locate(runs, offset + done as u64)
                .ok_or(Error::Corrupt("file shorter than its length"))?;
            let k = (room as usize).min(data.len() - done);
            self.dev.write_at(at, &data[done..done + k])?;
            done += k;
        }
        Ok(())
    }

    fn zero_range(&mut self, file: &File, from: u64, to: u64) -> Result<()> {
        let zeros = vec![0u8; 64 * 1024];
        let mut pos = from;
        while pos < to {
            let k = (to - pos).min(zeros.len() as u64) as usize;
            self.write_runs(&file.runs.clone(), pos, &zeros[..k])?;
            pos += k as u64;
        }
        Ok(())
    }

    fn store(&mut self, file: &mut File, change: impl FnOnce(&mut EntrySet)) -> Result<()> {
        let first = file.set.first_cluster;
        let mut wanted = file.set.clone();
        change(&mut wanted);
        let dir = file.dir.clone();
        file.set = self.update_set(&dir, file.index, first, |set| {
            set.valid_length = wanted.valid_length;
            set.data_length = wanted.data_length;
            set.first_cluster = wanted.first_cluster;
            set.stream_flags = wanted.stream_flags;
            set.modified = wanted.modified;
        })?;
        Ok(())
    }

    /// Set the file's size. Growing allocates (contiguously when possible)
    /// without writing: the new bytes read as zeros (exFAT preallocation,
    /// data length past valid data length). Shrinking frees clusters.
    pub fn set_len(&mut self, file: &mut File, len: u64) -> Result<()> {
        self.resize(file, len)
    }

    fn resize(&mut self, file: &mut File, len: u64) -> Result<()> {
        let cs = self.cluster_size();
        let need = len.div_ceil(cs);
        if need > u64::from(self.boot.cluster_count) {
            return Err(Error::NoSpace);
        }
        let need = need as u32;
        let have = run_clusters(&file.runs) as u32;
        self.begin_change()?;
        let old_first = file.set.first_cluster;
        let mut flags = file.set.stream_flags | FLAG_ALLOC_POSSIBLE;
        let mut runs = file.runs.clone();
        if need > have {
            let extra = need - have;
            let contiguous_now = have == 0 || file.set.stream_flags & FLAG_NO_FAT_CHAIN != 0;
            let near = runs.last().map(|&(s, n)| s + n).unwrap_or(self.hint);
            let new = self.allocate(extra, near)?;
            let joins =
                matches!((runs.last(), new.as_slice()), (Some(&(s, n)), [(t, _)]) if s + n == *t);
            if contiguous_now && new.len() == 1 && (have == 0 || joins) {
                match runs.last_mut() {
                    Some(last) => last.1 += new[0].1,
                    None => runs = new,
                }
                flags |= FLAG_NO_FAT_CHAIN;
            } else {
                for run in new {
                    match runs.last_mut() {
                        Some(last) if last.0 + last.1 == run.0 => last.1 += run.1,
                        _ => runs.push(run),
                    }
                }
                flags &= !FLAG_NO_FAT_CHAIN;
                self.write_chain(&runs)?;
            }
        } else if need < have {
            let mut keep = need;
            let mut kept: Vec<Run> = Vec::new();
            for &(s, n) in &runs {
                if keep >= n {
                    kept.push((s, n));
                    keep -= n;
                } else {
                    if keep > 0 {
                        kept.push((s, keep));
                    }
                    self.mark(s + keep, n - keep, false)?;
                    keep = 0;
                }
            }
            if flags & FLAG_NO_FAT_CHAIN == 0
                && let Some(&(s, n)) = kept.last()
            {
                self.fat_set(s + n - 1, END_OF_CHAIN)?;
            }
            runs = kept;
        }
        if runs.is_empty() {
            flags &= !FLAG_NO_FAT_CHAIN;
        }
        let first = runs.first().map(|r| r.0).unwrap_or(0);
        let valid = file.set.valid_length.min(len);
        let now = self.now.encode();
        file.set.first_cluster = old_first;
        let result = self.store(file, |set| {
            set.first_cluster = first;
            set.data_length = len;
            set.valid_length = valid;
            set.stream_flags = flags;
            set.modified = now;
        });
        if result.is_ok() {
            file.runs = runs;
        }
        result
    }

    /// Where the file's bytes are on the device, in file order.
    pub fn extents(&self, file: &File) -> Vec<Extent> {
        let cs = self.cluster_size();
        let mut pos = 0u64;
        file.runs
            .iter()
            .map(|&(s, n)| {
                let e = Extent {
                    file_offset: pos,
                    device_offset: self.boot.cluster_offset(s),
                    length: u64::from(n) * cs,
                };
                pos += e.length;
                e
            })
            .collect()
    }

    /// Remove a file or an empty directory.
    pub fn remove(&mut self, path: &str) -> Result<()> {
        let (dir, found) = self.resolve(path)?;
        let found = found.ok_or(Error::InvalidArgument("cannot remove the root directory"))?;
        let runs = if found.set.is_dir() {
            let sub = self.subdir(&dir, &found)?;
            let data = self.read_dir(&sub)?;
            if !self.scan(&data)?.is_empty() {
                return Err(Error::DirectoryNotEmpty);
            }
            data.runs
        } else {
            self.file_runs(&found.set)?
        };
        self.remove_set(&dir, found.index)?;
        for (s, n) in runs {
            self.mark(s, n, false)?;
        }
        Ok(())
    }

    /// Rename or move a file or directory (the target must not exist).
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let (src_dir, found) = self.resolve(from)?;
        let found = found.ok_or(Error::InvalidArgument("cannot rename the root directory"))?;
        let (mut dst_dir, name) = self.resolve_parent(to)?;
        if found.set.is_dir() {
            // Refuse to move a directory into itself: walk the target's parents.
            let mut cursor = Some(dst_dir.clone());
            while let Some(d) = cursor {
                if d.first_cluster == found.set.first_cluster {
                    return Err(Error::InvalidArgument(
                        "cannot move a directory into itself",
                    ));
                }
                cursor = d.parent.map(|(p, _)| *p);
            }
        }
        if let Some(existing) = self.find(&dst_dir, &name)? {
            let same = dst_dir == src_dir && existing.index == found.index;
            if !same {
                return Err(Error::AlreadyExists);
            }
        }
        let mut set = found.set.clone();
        set.name = name;
        self.remove_set(&src_dir, found.index)?;
        self.insert_set(&mut dst_dir, &set)?;
        Ok(())
    }
}
