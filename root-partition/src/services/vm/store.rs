//! Where VM definitions live: a small trait over the data volume's files
//! ([`Store`]), implemented for the exFAT volume (the root's own, and the
//! image `capctl` opens) and for memory ([`MemStore`], tests and
//! simulations), and the loading of every definition in [`VM_FOLDER`].
//!
//! # Invariants
//! - A definition is replaced by [`replace`] in this order: write
//!   `NAME.json.tmp`, flush, remove `NAME.json`, rename the temporary file
//!   to `NAME.json`, flush. exFAT's rename refuses an existing target, so
//!   the remove comes first. A crash leaves either the old file (and maybe
//!   an unfinished `.tmp`, which [`load_all`] deletes) or only a complete
//!   `.tmp` (which [`load_all`] renames into place): never a half-written
//!   definition under its real name.
//! - [`load_all`] never fails because of one file: a damaged, hostile,
//!   oversized or duplicate definition is reported with its path and
//!   reason and skipped; the others load.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt;

use exfat::Volume;
use vhd::BlockDevice;

use super::definition::{self, MAX_DEFINITION_BYTES, VM_FOLDER, VmDefinition};
use crate::disks::SharedVolume;

/// Suffix of a definition being written.
pub const TEMP_SUFFIX: &str = ".tmp";

/// A file-store operation's failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// No such file or folder.
    NotFound,
    /// The file is larger than the caller's limit.
    TooLarge {
        /// Its size in bytes.
        size: u64,
    },
    /// The volume failed (its message).
    Io(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound => write!(f, "no such file or folder"),
            StoreError::TooLarge { size } => write!(f, "file of {size} bytes is too large"),
            StoreError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for StoreError {}

/// One entry of a folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreEntry {
    /// Its name (no folder).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Whether it is a folder.
    pub is_dir: bool,
}

/// The data volume's files, as the VM manager uses them. Paths are
/// absolute (`/vms/alpha.json`).
pub trait Store {
    /// The entries of folder `dir`; an absent folder is empty.
    fn list(&mut self, dir: &str) -> Result<Vec<StoreEntry>, StoreError>;
    /// The whole file at `path`, refused with [`StoreError::TooLarge`] if
    /// it is longer than `limit` bytes.
    fn read(&mut self, path: &str, limit: usize) -> Result<Vec<u8>, StoreError>;
    /// Creates the file `path` (replacing an existing one) holding `data`.
    /// Not atomic: see [`replace`].
    fn write(&mut self, path: &str, data: &[u8]) -> Result<(), StoreError>;
    /// Renames `from` to `to`, which must not exist.
    fn rename(&mut self, from: &str, to: &str) -> Result<(), StoreError>;
    /// Removes a file ([`StoreError::NotFound`] if absent).
    fn remove(&mut self, path: &str) -> Result<(), StoreError>;
    /// Creates folder `path` if it does not exist.
    fn create_dir(&mut self, path: &str) -> Result<(), StoreError>;
    /// Whether a file or folder `path` exists.
    fn exists(&mut self, path: &str) -> Result<bool, StoreError>;
    /// Makes everything written so far durable.
    fn flush(&mut self) -> Result<(), StoreError>;
}

/// Removes `path` if it exists.
pub fn remove_if_present<S: Store + ?Sized>(store: &mut S, path: &str) -> Result<(), StoreError> {
    match store.remove(path) {
        Ok(()) | Err(StoreError::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Replaces the file `path` with `data` in the crash-safe order of the
/// module's invariants (its folder is created if missing).
pub fn replace<S: Store + ?Sized>(
    store: &mut S,
    path: &str,
    data: &[u8],
) -> Result<(), StoreError> {
    if let Some((dir, _)) = path.rsplit_once('/')
        && !dir.is_empty()
    {
        store.create_dir(dir)?;
    }
    let temp = format!("{path}{TEMP_SUFFIX}");
    remove_if_present(store, &temp)?;
    store.write(&temp, data)?;
    store.flush()?;
    remove_if_present(store, path)?;
    store.rename(&temp, path)?;
    store.flush()
}

fn exfat_error(e: exfat::Error) -> StoreError {
    match e {
        exfat::Error::NotFound => StoreError::NotFound,
        e => StoreError::Io(e.to_string()),
    }
}

/// The exFAT volume itself (what `capctl` opens).
impl<D: BlockDevice> Store for Volume<D> {
    fn list(&mut self, dir: &str) -> Result<Vec<StoreEntry>, StoreError> {
        match Volume::list(self, dir) {
            Ok(entries) => Ok(entries
                .into_iter()
                .map(|e| StoreEntry {
                    name: e.name,
                    size: e.size,
                    is_dir: e.is_dir,
                })
                .collect()),
            Err(exfat::Error::NotFound) => Ok(Vec::new()),
            Err(e) => Err(exfat_error(e)),
        }
    }

    fn read(&mut self, path: &str, limit: usize) -> Result<Vec<u8>, StoreError> {
        let file = self.open(path).map_err(exfat_error)?;
        if file.len() > limit as u64 {
            return Err(StoreError::TooLarge { size: file.len() });
        }
        let mut data = alloc::vec![0u8; file.len() as usize];
        let n = Volume::read(self, &file, 0, &mut data).map_err(exfat_error)?;
        data.truncate(n);
        Ok(data)
    }

    fn write(&mut self, path: &str, data: &[u8]) -> Result<(), StoreError> {
        remove_if_present(self, path)?;
        let mut file = self.create(path).map_err(exfat_error)?;
        self.set_len(&mut file, data.len() as u64)
            .map_err(exfat_error)?;
        Volume::write(self, &mut file, 0, data).map_err(exfat_error)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), StoreError> {
        Volume::rename(self, from, to).map_err(exfat_error)
    }

    fn remove(&mut self, path: &str) -> Result<(), StoreError> {
        Volume::remove(self, path).map_err(exfat_error)
    }

    fn create_dir(&mut self, path: &str) -> Result<(), StoreError> {
        match Volume::create_dir(self, path) {
            Ok(()) | Err(exfat::Error::AlreadyExists) => Ok(()),
            Err(e) => Err(exfat_error(e)),
        }
    }

    fn exists(&mut self, path: &str) -> Result<bool, StoreError> {
        match self.stat(path) {
            Ok(_) => Ok(true),
            Err(exfat::Error::NotFound) => Ok(false),
            Err(e) => Err(exfat_error(e)),
        }
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        Volume::flush(self).map_err(exfat_error)
    }
}

/// The root's shared data volume (each operation holds its lock).
impl<D: BlockDevice> Store for SharedVolume<D> {
    fn list(&mut self, dir: &str) -> Result<Vec<StoreEntry>, StoreError> {
        Store::list(&mut *self.lock(), dir)
    }
    fn read(&mut self, path: &str, limit: usize) -> Result<Vec<u8>, StoreError> {
        Store::read(&mut *self.lock(), path, limit)
    }
    fn write(&mut self, path: &str, data: &[u8]) -> Result<(), StoreError> {
        Store::write(&mut *self.lock(), path, data)
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), StoreError> {
        Store::rename(&mut *self.lock(), from, to)
    }
    fn remove(&mut self, path: &str) -> Result<(), StoreError> {
        Store::remove(&mut *self.lock(), path)
    }
    fn create_dir(&mut self, path: &str) -> Result<(), StoreError> {
        Store::create_dir(&mut *self.lock(), path)
    }
    fn exists(&mut self, path: &str) -> Result<bool, StoreError> {
        Store::exists(&mut *self.lock(), path)
    }
    fn flush(&mut self) -> Result<(), StoreError> {
        Store::flush(&mut *self.lock())
    }
}

#[derive(Default)]
struct MemFiles {
    files: BTreeMap<String, Vec<u8>>,
    dirs: BTreeSet<String>,
    fail: bool,
    /// Changes that may still succeed before every change fails (a crash).
    budget: Option<u64>,
    writes: u64,
}

/// Files in memory. Clones share the same files, so a "reboot" is a new
/// manager over a clone, and a fake hypervisor can write saved states
/// beside the manager. Folders must exist before files go in them, as on
/// the volume; [`MemStore::set_failing`] makes every change fail,
/// [`MemStore::crash_after`] every change after the next few.
#[derive(Clone, Default)]
pub struct MemStore {
    inner: Rc<RefCell<MemFiles>>,
}

fn parent(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((dir, _)) => dir,
    }
}

impl MemStore {
    /// An empty store (only the root folder).
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later change (write, rename, remove, new folder) fail
    /// with an I/O error, or succeed again.
    pub fn set_failing(&self, fail: bool) {
        self.inner.borrow_mut().fail = fail;
    }

    /// Lets `changes` more changes succeed, then fails every one (a crash
    /// in the middle of a sequence of writes); `None` lifts the limit.
    pub fn crash_after(&self, changes: Option<u64>) {
        self.inner.borrow_mut().budget = changes;
    }

    /// Files written so far (successful [`Store::write`] calls).
    pub fn writes(&self) -> u64 {
        self.inner.borrow().writes
    }

    /// The file at `path`, if present.
    pub fn get(&self, path: &str) -> Option<Vec<u8>> {
        self.inner.borrow().files.get(path).cloned()
    }

    /// Every file's path.
    pub fn paths(&self) -> Vec<String> {
        self.inner.borrow().files.keys().cloned().collect()
    }

    /// Puts a file in place directly (its folders created): for tests
    /// that plant damaged files.
    pub fn plant(&self, path: &str, data: &[u8]) {
        let mut inner = self.inner.borrow_mut();
        let mut dir = parent(path);
        while dir != "/" {
            inner.dirs.insert(dir.to_string());
            dir = parent(dir);
        }
        inner.files.insert(path.to_string(), data.to_vec());
    }

    fn change(&self) -> Result<core::cell::RefMut<'_, MemFiles>, StoreError> {
        let mut inner = self.inner.borrow_mut();
        if inner.fail || inner.budget == Some(0) {
            return Err(StoreError::Io("injected failure".into()));
        }
        if let Some(budget) = &mut inner.budget {
            *budget -= 1;
        }
        Ok(inner)
    }
}

impl MemFiles {
    fn has_dir(&self, dir: &str) -> bool {
        dir == "/" || self.dirs.contains(dir)
    }
}

impl Store for MemStore {
    fn list(&mut self, dir: &str) -> Result<Vec<StoreEntry>, StoreError> {
        let inner = self.inner.borrow();
        let dir = if dir.len() > 1 {
            dir.trim_end_matches('/')
        } else {
            "/"
        };
        let files = inner
            .files
            .iter()
            .filter(|(p, _)| parent(p) == dir)
            .map(|(p, data)| StoreEntry {
                name: p.rsplit('/').next().unwrap_or("").to_string(),
                size: data.len() as u64,
                is_dir: false,
            });
        let dirs = inner
            .dirs
            .iter()
            .filter(|p| parent(p) == dir)
            .map(|p| StoreEntry {
                name: p.rsplit('/').next().unwrap_or("").to_string(),
                size: 0,
                is_dir: true,
            });
        Ok(dirs.chain(files).collect())
    }

    fn read(&mut self, path: &str, limit: usize) -> Result<Vec<u8>, StoreError> {
        let inner = self.inner.borrow();
        let data = inner.files.get(path).ok_or(StoreError::NotFound)?;
        if data.len() > limit {
            return Err(StoreError::TooLarge {
                size: data.len() as u64,
            });
        }
        Ok(data.clone())
    }

    fn write(&mut self, path: &str, data: &[u8]) -> Result<(), StoreError> {
        let mut inner = self.change()?;
        if !inner.has_dir(parent(path)) {
            return Err(StoreError::NotFound);
        }
        inner.files.insert(path.to_string(), data.to_vec());
        inner.writes += 1;
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), StoreError> {
        let mut inner = self.change()?;
        if inner.files.contains_key(to) || inner.dirs.contains(to) {
            return Err(StoreError::Io(format!("{to} already exists")));
        }
        if !inner.has_dir(parent(to)) {
            return Err(StoreError::NotFound);
        }
        let data = inner.files.remove(from).ok_or(StoreError::NotFound)?;
        inner.files.insert(to.to_string(), data);
        Ok(())
    }

    fn remove(&mut self, path: &str) -> Result<(), StoreError> {
        let mut inner = self.change()?;
        inner
            .files
            .remove(path)
            .map(drop)
            .ok_or(StoreError::NotFound)
    }

    fn create_dir(&mut self, path: &str) -> Result<(), StoreError> {
        let mut inner = self.change()?;
        if !inner.has_dir(parent(path)) {
            return Err(StoreError::NotFound);
        }
        inner.dirs.insert(path.to_string());
        Ok(())
    }

    fn exists(&mut self, path: &str) -> Result<bool, StoreError> {
        let inner = self.inner.borrow();
        Ok(inner.files.contains_key(path) || inner.has_dir(path))
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A definition file that was not loaded, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Its path on the volume.
    pub path: String,
    /// Why it was skipped.
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// What [`load_all`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// The definitions loaded, by file name order, each with whether its
    /// saved-state file exists.
    pub loaded: Vec<(VmDefinition, bool)>,
    /// Files skipped, with their reasons.
    pub skipped: Vec<Skipped>,
    /// Interrupted writes found and finished or discarded (their paths,
    /// and what was done).
    pub recovered: Vec<Skipped>,
}

/// Finishes or discards writes a crash interrupted (see the module's
/// invariants).
fn recover<S: Store + ?Sized>(store: &mut S, entries: &[StoreEntry], report: &mut LoadReport) {
    for entry in entries.iter().filter(|e| !e.is_dir) {
        let Some(real) = entry.name.strip_suffix(TEMP_SUFFIX) else {
            continue;
        };
        if !real.ends_with(".json") {
            continue;
        }
        let temp = format!("{VM_FOLDER}/{}", entry.name);
        let target = format!("{VM_FOLDER}/{real}");
        let has_target = entries.iter().any(|e| e.name == real);
        let (result, what) = if has_target {
            (store.remove(&temp), "unfinished write discarded")
        } else {
            (
                store.rename(&temp, &target),
                "finished write moved into place",
            )
        };
        report.recovered.push(Skipped {
            path: temp,
            reason: match result {
                Ok(()) => what.to_string(),
                Err(e) => format!("{what}: failed: {e}"),
            },
        });
    }
}

/// Loads every `*.json` in [`VM_FOLDER`]. A file is skipped (and
/// reported) when it cannot be read, is over the size limit, is not a
/// valid definition, is not named after the VM it defines, or repeats a
/// name or an id of a file loaded before it (files are taken in name
/// order). Only a failure to list the folder is an error.
pub fn load_all<S: Store + ?Sized>(store: &mut S) -> Result<LoadReport, StoreError> {
    let mut report = LoadReport::default();
    let entries = store.list(VM_FOLDER)?;
    recover(store, &entries, &mut report);
    let entries = if report.recovered.is_empty() {
        entries
    } else {
        store.list(VM_FOLDER)?
    };
    let mut names: Vec<&StoreEntry> = entries
        .iter()
        .filter(|e| !e.is_dir && e.name.ends_with(".json"))
        .collect();
    names.sort_by(|a, b| a.name.cmp(&b.name));
    for entry in names {
        let path = format!("{VM_FOLDER}/{}", entry.name);
        let skip = |reason: String| Skipped {
            path: path.clone(),
            reason,
        };
        let bytes = match store.read(&path, MAX_DEFINITION_BYTES) {
            Ok(bytes) => bytes,
            Err(StoreError::TooLarge { size }) => {
                report.skipped.push(skip(format!(
                    "file of {size} bytes, at most {MAX_DEFINITION_BYTES}"
                )));
                continue;
            }
            Err(e) => {
                report.skipped.push(skip(format!("cannot read: {e}")));
                continue;
            }
        };
        let def = match definition::decode(&bytes) {
            Ok(def) => def,
            Err(e) => {
                report.skipped.push(skip(e.to_string()));
                continue;
            }
        };
        if entry.name != format!("{}.json", def.name) {
            report.skipped.push(skip(format!(
                "defines VM {:?}, but its file must be named {}.json",
                def.name, def.name
            )));
            continue;
        }
        let clash = report.loaded.iter().find_map(|(other, _)| {
            if other.name.eq_ignore_ascii_case(&def.name) {
                Some(format!(
                    "name {:?} is already defined by {}",
                    def.name,
                    other.path()
                ))
            } else if other.id == def.id {
                Some(format!("id {} is already used by {}", def.id, other.path()))
            } else {
                None
            }
        });
        if let Some(reason) = clash {
            report.skipped.push(skip(reason));
            continue;
        }
        let saved = match store.exists(&def.saved_state_path()) {
            Ok(saved) => saved,
            Err(e) => {
                report
                    .skipped
                    .push(skip(format!("cannot look for its saved state: {e}")));
                continue;
            }
        };
        report.loaded.push((def, saved));
    }
    Ok(report)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
