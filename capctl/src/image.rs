//! Disk images as capctl opens them: VHD (any type, with its parent chain)
//! or raw, plus the host-side helpers the library leaves to its caller
//! (parent file lookup, unique ids, clocks, size parsing).
//!
//! Invariant: a path is treated as raw only when asked to, or when it is
//! neither named `.vhd` nor ends in a VHD footer, so a damaged VHD is
//! reported as damaged rather than read as raw bytes.

use anyhow::{Context, Result, anyhow, bail};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use vhd::{ChainAccess, ParentLocation, ParentResolver, Platform, Vhd};

/// A virtual disk: a VHD (with its parents attached) or a raw image.
pub enum Disk {
    /// A VHD file.
    Vhd(Box<Vhd<File>>),
    /// A raw image file and its size.
    Raw(File, u64),
}

/// How to interpret an image file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `.vhd` name or VHD footer: VHD; otherwise raw.
    Auto,
    /// Always VHD.
    Vhd,
    /// Always raw.
    Raw,
}

impl Disk {
    /// Open an image (`writable_parent` is for merging).
    pub fn open(
        path: &Path,
        format: Format,
        writable: bool,
        writable_parent: bool,
    ) -> Result<Disk> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if is_vhd(path, &file, format)? {
            let access = ChainAccess {
                writable,
                writable_parent,
            };
            let mut resolver = FileResolver::new(path);
            let disk = Vhd::open_chain(file, access, &mut resolver)
                .with_context(|| format!("{}", path.display()))?;
            Ok(Disk::Vhd(Box::new(disk)))
        } else {
            let len = file.metadata()?.len();
            Ok(Disk::Raw(file, len))
        }
    }

    /// Virtual size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Disk::Vhd(d) => d.size(),
            Disk::Raw(_, len) => *len,
        }
    }

    /// Read at a virtual offset.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match self {
            Disk::Vhd(d) => Ok(d.read_at(offset, buf)?),
            Disk::Raw(f, len) => {
                if offset
                    .checked_add(buf.len() as u64)
                    .is_none_or(|end| end > *len)
                {
                    bail!("read past the end of the {len}-byte image");
                }
                Ok(std::os::unix::fs::FileExt::read_exact_at(f, buf, offset)?)
            }
        }
    }

    /// Write at a virtual offset.
    pub fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        match self {
            Disk::Vhd(d) => Ok(d.write_at(offset, buf)?),
            Disk::Raw(f, len) => {
                if offset
                    .checked_add(buf.len() as u64)
                    .is_none_or(|end| end > *len)
                {
                    bail!("write past the end of the {len}-byte image");
                }
                Ok(std::os::unix::fs::FileExt::write_all_at(f, buf, offset)?)
            }
        }
    }

    /// Flush to stable storage.
    pub fn flush(&mut self) -> Result<()> {
        match self {
            Disk::Vhd(d) => Ok(d.flush()?),
            Disk::Raw(f, _) => Ok(f.sync_data()?),
        }
    }
}

fn is_vhd(path: &Path, file: &File, format: Format) -> Result<bool> {
    match format {
        Format::Vhd => return Ok(true),
        Format::Raw => return Ok(false),
        Format::Auto => {}
    }
    let named = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("vhd"));
    let len = file.metadata()?.len();
    let mut cookie = [0u8; 8];
    let footer = len >= 512
        && std::os::unix::fs::FileExt::read_exact_at(file, &mut cookie, len - 512).is_ok()
        && &cookie == b"conectix";
    Ok(named || footer)
}

/// Finds parents next to their children, by the locators a child records.
pub struct FileResolver {
    /// Files opened so far, top first.
    chain: Vec<PathBuf>,
}

impl FileResolver {
    /// A resolver for the chain whose top disk is `top`.
    pub fn new(top: &Path) -> Self {
        Self {
            chain: vec![top.to_path_buf()],
        }
    }

    fn candidates(&self, depth: usize, locations: &[ParentLocation], name: &str) -> Vec<PathBuf> {
        let child = self.chain.get(depth).cloned().unwrap_or_default();
        let dir = child.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut out = Vec::new();
        for loc in locations {
            let unix = loc.path.replace('\\', "/");
            match loc.platform {
                Platform::RelativeWindows => out.push(dir.join(unix.trim_start_matches("./"))),
                _ => {
                    if unix.starts_with('/') {
                        out.push(PathBuf::from(&unix));
                    }
                    if let Some(base) = unix.rsplit('/').next() {
                        out.push(dir.join(base));
                    }
                }
            }
        }
        if let Some(base) = name
            .replace('\\', "/")
            .rsplit('/')
            .next()
            .filter(|b| !b.is_empty())
        {
            out.push(dir.join(base));
        }
        out
    }
}

impl ParentResolver<File> for FileResolver {
    fn open_parent(
        &mut self,
        depth: usize,
        locations: &[ParentLocation],
        name: &str,
    ) -> vhd::Result<File> {
        for path in self.candidates(depth, locations, name) {
            if let Ok(file) = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .or_else(|_| File::open(&path))
            {
                self.chain.truncate(depth + 1);
                self.chain.push(path);
                return Ok(file);
            }
        }
        Err(vhd::Error::BadLocator(
            "parent file not found next to the child or at its recorded paths",
        ))
    }
}

/// The parent file names a chain resolved to, top's parent first.
pub fn chain_paths(top: &Path) -> Result<Vec<PathBuf>> {
    let file = File::open(top)?;
    let mut resolver = FileResolver::new(top);
    Vhd::open_chain(file, ChainAccess::default(), &mut resolver)?;
    Ok(resolver.chain.into_iter().skip(1).collect())
}

/// 16 random bytes shaped as a version 4 UUID.
pub fn new_unique_id() -> Result<[u8; 16]> {
    let mut id = [0u8; 16];
    let mut f = File::open("/dev/urandom").context("cannot read /dev/urandom")?;
    std::io::Read::read_exact(&mut f, &mut id)?;
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    Ok(id)
}

/// Format a unique id the way Windows shows GUIDs.
pub fn format_id(id: &[u8; 16]) -> String {
    let h: Vec<String> = id.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Now, in VHD time (seconds since 2000-01-01 UTC).
pub fn vhd_now() -> u32 {
    unix_now().saturating_sub(vhd::VHD_EPOCH_UNIX) as u32
}

/// Now as an exFAT timestamp (UTC).
pub fn exfat_now() -> exfat::Timestamp {
    let secs = unix_now();
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as u16;
    exfat::Timestamp {
        year,
        month,
        day,
        hour: (rem / 3600) as u8,
        minute: (rem / 60 % 60) as u8,
        second: (rem % 60) as u8,
    }
}

/// Parse a size such as `4096`, `512K`, `10M`, `20G`, `1T` (binary units; `iB`/`B` suffixes allowed).
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        Some('T' | 't') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| anyhow!("invalid size '{text}' (use e.g. 512M, 20G)"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| anyhow!("size '{text}' is too large"))
}
