//! Directories: reading their entries, finding names, adding, rewriting and
//! removing file entry sets, growing a directory, and resolving paths.
//!
//! Invariants: a directory's bytes are read whole (at most 256 MiB) and
//! every entry set in it is validated before any is used or changed; a
//! change writes only the entries of one set; a set is only rewritten in
//! place if the entry at its position still is the set that was read.

use crate::device::BlockDevice;
use crate::entry::{
    ATTR_DIRECTORY, ENTRY_SIZE, EntrySet, FLAG_ALLOC_POSSIBLE, TYPE_BITMAP, TYPE_END, TYPE_FILE,
    TYPE_LABEL, TYPE_UPCASE, encode_name,
};
use crate::error::{Error, Result};
use crate::volume::{Run, Volume, run_clusters};
use alloc::boxed::Box;
use alloc::vec::Vec;

/// Where a directory's data is, and where its own entry set is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dir {
    pub(crate) first_cluster: u32,
    pub(crate) no_fat_chain: bool,
    pub(crate) data_length: u64,
    /// The parent directory and the index of this directory's set in it (None: root).
    pub(crate) parent: Option<(Box<Dir>, u32)>,
}

/// A directory's bytes and the clusters they came from.
pub(crate) struct DirData {
    pub(crate) bytes: Vec<u8>,
    pub(crate) runs: Vec<Run>,
}

/// A file entry set found in a directory.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub(crate) index: u32,
    pub(crate) set: EntrySet,
}

impl<D: BlockDevice> Volume<D> {
    pub(crate) fn root(&mut self) -> Result<Dir> {
        let runs = self.chain(self.boot.root_cluster, None)?;
        Ok(Dir {
            first_cluster: self.boot.root_cluster,
            no_fat_chain: false,
            data_length: run_clusters(&runs) * self.cluster_size(),
            parent: None,
        })
    }

    pub(crate) fn dir_runs(&mut self, dir: &Dir) -> Result<Vec<Run>> {
        if dir.parent.is_none() {
            self.chain(dir.first_cluster, None)
        } else if dir.no_fat_chain {
            self.contiguous(dir.first_cluster, dir.data_length)
        } else {
            self.chain(dir.first_cluster, Some(dir.data_length))
        }
    }

    pub(crate) fn read_dir(&mut self, dir: &Dir) -> Result<DirData> {
        let runs = self.dir_runs(dir)?;
        let bytes = self.read_runs(&runs, dir.data_length)?;
        Ok(DirData { bytes, runs })
    }

    /// Every file entry set in a directory, validated.
    pub(crate) fn scan(&self, data: &DirData) -> Result<Vec<Found>> {
        let count = data.bytes.len() / ENTRY_SIZE;
        let mut found = Vec::new();
        let mut i = 0usize;
        while i < count {
            let t = data.bytes[i * ENTRY_SIZE];
            let secondary = usize::from(data.bytes[i * ENTRY_SIZE + 1]);
            match t {
                TYPE_END => break,
                _ if t & 0x80 == 0 => i += 1,
                TYPE_FILE => {
                    let set = EntrySet::decode(&data.bytes[i * ENTRY_SIZE..])?;
                    found.push(Found {
                        index: i as u32,
                        set,
                    });
                    i += 1 + secondary;
                }
                TYPE_BITMAP | TYPE_UPCASE | TYPE_LABEL => i += 1,
                _ if t & 0x40 != 0 => {
                    return Err(Error::Corrupt("secondary entry without a primary"));
                }
                _ => i += 1 + secondary,
            }
        }
        Ok(found)
    }

    pub(crate) fn find(&mut self, dir: &Dir, name: &[u16]) -> Result<Option<Found>> {
        let data = self.read_dir(dir)?;
        let hash = self.upcase.name_hash(name);
        Ok(self.scan(&data)?.into_iter().find(|f| {
            self.upcase.name_hash(&f.set.name) == hash && self.upcase.names_equal(&f.set.name, name)
        }))
    }

    /// The directory a set describes.
    pub(crate) fn subdir(&self, parent: &Dir, found: &Found) -> Result<Dir> {
        if !found.set.is_dir() {
            return Err(Error::NotADirectory);
        }
        if found.set.data_length == 0 || !self.boot.in_heap(found.set.first_cluster) {
            return Err(Error::Corrupt("directory without clusters"));
        }
        Ok(Dir {
            first_cluster: found.set.first_cluster,
            no_fat_chain: found.set.no_fat_chain(),
            data_length: found.set.data_length,
            parent: Some((Box::new(parent.clone()), found.index)),
        })
    }

    /// Resolve a path to its containing directory and its entry set (None for the root).
    pub(crate) fn resolve(&mut self, path: &str) -> Result<(Dir, Option<Found>)> {
        let mut dir = self.root()?;
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let Some((last, parents)) = parts.split_last() else {
            return Ok((dir, None));
        };
        for part in parents {
            let name = encode_name(part)?;
            let found = self.find(&dir, &name)?.ok_or(Error::NotFound)?;
            dir = self.subdir(&dir, &found)?;
        }
        let name = encode_name(last)?;
        let found = self.find(&dir, &name)?.ok_or(Error::NotFound)?;
        Ok((dir, Some(found)))
    }

    /// Resolve the directory that will hold `path`'s last component.
    pub(crate) fn resolve_parent(&mut self, path: &str) -> Result<(Dir, Vec<u16>)> {
        let trimmed = path.trim_end_matches('/');
        let (parent, name) = match trimmed.rfind('/') {
            Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
            None => ("", trimmed),
        };
        let name = encode_name(name)?;
        let dir = match self.resolve(parent)? {
            (root, None) => root,
            (dir, Some(found)) => self.subdir(&dir, &found)?,
        };
        Ok((dir, name))
    }

    /// Write `bytes` (whole entries) at entry `index` of a directory.
    fn write_entries(&mut self, runs: &[Run], index: u32, bytes: &[u8]) -> Result<()> {
        let mut done = 0usize;
        while done < bytes.len() {
            let pos = u64::from(index) * ENTRY_SIZE as u64 + done as u64;
            let (offset, room) = self
                .locate(runs, pos)
                .ok_or(Error::Corrupt("entry past the directory"))?;
            let n = (room as usize).min(bytes.len() - done);
            self.dev.write_at(offset, &bytes[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    /// Add a new entry set to a directory, growing it if needed; returns its index.
    pub(crate) fn insert_set(&mut self, dir: &mut Dir, set: &EntrySet) -> Result<u32> {
        let bytes = set.encode(&self.upcase);
        let need = bytes.len() / ENTRY_SIZE;
        let data = self.read_dir(dir)?;
        self.scan(&data)?;
        let count = data.bytes.len() / ENTRY_SIZE;
        let mut run_start = 0usize;
        let mut run = 0usize;
        let mut slot = None;
        for i in 0..count {
            let t = data.bytes[i * ENTRY_SIZE];
            if t & 0x80 == 0 {
                if run == 0 {
                    run_start = i;
                }
                run += 1;
                if run == need {
                    slot = Some(run_start);
                    break;
                }
                if t == TYPE_END {
                    // Everything after the end marker is free too.
                    if count - run_start >= need {
                        slot = Some(run_start);
                    }
                    break;
                }
            } else {
                run = 0;
            }
        }
        self.begin_change()?;
        let (index, runs) = match slot {
            Some(i) => (i as u32, data.runs),
            None => {
                let start = if run > 0 { run_start } else { count };
                let runs = self.grow_dir(dir, &data.runs)?;
                (start as u32, runs)
            }
        };
        self.write_entries(&runs, index, &bytes)?;
        Ok(index)
    }

    /// Add one zeroed cluster to a directory.
    fn grow_dir(&mut self, dir: &mut Dir, runs: &[Run]) -> Result<Vec<Run>> {
        if dir.data_length + self.cluster_size() > 256 << 20 {
            return Err(Error::NoSpace);
        }
        let last = runs.last().map(|&(s, n)| s + n).unwrap_or(2);
        let new = self.allocate(1, last)?;
        self.zero_runs(&new)?;
        let mut all = runs.to_vec();
        all.extend_from_slice(&new);
        let contiguous = all.len() == 1;
        if !(dir.no_fat_chain && contiguous) {
            self.write_chain(&all)?;
            dir.no_fat_chain = false;
        }
        dir.data_length += self.cluster_size();
        if let Some((parent, index)) = dir.parent.clone() {
            let (len, nfc) = (dir.data_length, dir.no_fat_chain);
            self.update_set(&parent, index, dir.first_cluster, |set| {
                set.data_length = len;
                set.valid_length = len;
                if !nfc {
                    set.stream_flags &= !crate::entry::FLAG_NO_FAT_CHAIN;
                }
            })?;
        }
        Ok(all)
    }

    /// Rewrite the set at `index` (which must still start at `first_cluster`).
    pub(crate) fn update_set(
        &mut self,
        dir: &Dir,
        index: u32,
        first_cluster: u32,
        change: impl FnOnce(&mut EntrySet),
    ) -> Result<EntrySet> {
        let data = self.read_dir(dir)?;
        let at = index as usize * ENTRY_SIZE;
        let mut set = EntrySet::decode(data.bytes.get(at..).unwrap_or(&[]))?;
        if set.first_cluster != first_cluster {
            return Err(Error::Corrupt("entry set changed under an open handle"));
        }
        let before = set.entry_count();
        change(&mut set);
        if set.entry_count() != before {
            return Err(Error::InvalidArgument(
                "entry set size cannot change in place",
            ));
        }
        self.begin_change()?;
        self.write_entries(&data.runs, index, &set.encode(&self.upcase))?;
        Ok(set)
    }

    /// Mark the set at `index` unused.
    pub(crate) fn remove_set(&mut self, dir: &Dir, index: u32) -> Result<()> {
        let data = self.read_dir(dir)?;
        let at = index as usize * ENTRY_SIZE;
        let set = EntrySet::decode(data.bytes.get(at..).unwrap_or(&[]))?;
        let mut bytes = data.bytes[at..at + set.entry_count() * ENTRY_SIZE].to_vec();
        for e in bytes.chunks_exact_mut(ENTRY_SIZE) {
            e[0] &= 0x7F;
        }
        self.begin_change()?;
        self.write_entries(&data.runs, index, &bytes)
    }

    /// A new, empty directory's entry set (one zeroed cluster, FAT chain).
    pub(crate) fn new_dir_set(&mut self, name: Vec<u16>, near: u32) -> Result<EntrySet> {
        self.begin_change()?;
        let runs = self.allocate(1, near)?;
        self.zero_runs(&runs)?;
        self.write_chain(&runs)?;
        let cs = self.cluster_size();
        let now = self.now.encode();
        Ok(EntrySet {
            attributes: ATTR_DIRECTORY,
            created: now,
            modified: now,
            accessed: now,
            stream_flags: FLAG_ALLOC_POSSIBLE,
            valid_length: cs,
            first_cluster: runs[0].0,
            data_length: cs,
            name,
            extra: Vec::new(),
        })
    }
}
