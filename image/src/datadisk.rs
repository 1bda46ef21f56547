//! The data disk: a raw image whose whole extent is one exFAT volume (no
//! partition table) holding the VHD files the root partition's storage
//! service serves to children. `cargo image run` attaches it as a
//! virtio-blk PCI disk; QEMU tests that ask for one get a private copy.
//!
//! # Invariants
//! The image is made only by running the `capctl` binary (`vol format`,
//! `disk create`, `disk write`, `vol put`, `vol check`), built once per
//! process with `cargo build --release -p capctl`, so the disk is exactly
//! what an administrator would make by hand. It is built in a staging
//! directory next to its destination and renamed into place last: a reader
//! never sees a half-made disk. Apart from the VHD unique ids, the volume
//! serial and timestamps, the contents are the same every time (no host
//! path is recorded: differencing disks carry relative parent locators only).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
use ipc::workload::{BASE_PATTERN_LEN, base_pattern_byte};

use crate::{paths, process};

/// Size of the image (and of the exFAT volume, which fills it).
pub const SIZE: u64 = 256 << 20;
/// The volume label.
pub const LABEL: &str = "CAPVISOR";

/// Dynamic 32 MiB, empty.
pub const ALPHA: &str = "alpha.vhd";
/// Dynamic 32 MiB, its first [`BASE_PATTERN_LEN`] bytes hold
/// [`ipc::workload::base_pattern_byte`]; parent of [`BETA`] and [`GAMMA`].
pub const BASE: &str = "base.vhd";
/// Differencing, parent [`BASE`].
pub const BETA: &str = "beta.vhd";
/// Differencing, parent [`BASE`].
pub const GAMMA: &str = "gamma.vhd";
/// Dynamic 16 MiB, empty: a disk to hot-add.
pub const EXTRA: &str = "extra.vhd";
/// Dynamic 8 MiB, empty: the hostile child's own disk.
pub const EVIL: &str = "evil.vhd";
/// Fixed 32 MiB: the benchmark's disk.
pub const BENCH: &str = "bench.vhd";

/// How a VHD on the data disk is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VhdKind {
    /// All space allocated up front.
    Fixed,
    /// Grows as it is written.
    Dynamic,
    /// Records only what differs from this parent (a file in the same
    /// directory; the child's relative locator is `.\NAME`).
    Differencing(&'static str),
}

/// One VHD file at the root of the volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VhdFile {
    /// File name (the volume root is its directory).
    pub name: &'static str,
    /// How it is made.
    pub kind: VhdKind,
    /// Virtual size in bytes (a differencing disk's is its parent's).
    pub size: u64,
    /// Leading bytes written with [`base_pattern_byte`] (0: none).
    pub pattern: u64,
}

const MIB: u64 = 1 << 20;

/// Every file on the data disk, parents before their children.
///
/// A differencing disk records only the relative locator `.\PARENT` (and the
/// parent's name): the chain resolves wherever the files sit together.
pub const FILES: [VhdFile; 7] = [
    VhdFile {
        name: ALPHA,
        kind: VhdKind::Dynamic,
        size: 32 * MIB,
        pattern: 0,
    },
    VhdFile {
        name: BASE,
        kind: VhdKind::Dynamic,
        size: 32 * MIB,
        pattern: BASE_PATTERN_LEN,
    },
    VhdFile {
        name: BETA,
        kind: VhdKind::Differencing(BASE),
        size: 32 * MIB,
        pattern: 0,
    },
    VhdFile {
        name: GAMMA,
        kind: VhdKind::Differencing(BASE),
        size: 32 * MIB,
        pattern: 0,
    },
    VhdFile {
        name: EXTRA,
        kind: VhdKind::Dynamic,
        size: 16 * MIB,
        pattern: 0,
    },
    VhdFile {
        name: EVIL,
        kind: VhdKind::Dynamic,
        size: 8 * MIB,
        pattern: 0,
    },
    VhdFile {
        name: BENCH,
        kind: VhdKind::Fixed,
        size: 32 * MIB,
        pattern: 0,
    },
];

/// The entry of [`FILES`] named `name`.
pub fn file(name: &str) -> Option<&'static VhdFile> {
    FILES.iter().find(|f| f.name == name)
}

/// A built data disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDisk {
    /// The raw image.
    pub path: PathBuf,
    /// Its size in bytes ([`SIZE`]).
    pub size: u64,
}

/// Where `cargo image run` keeps its data disk: `target/data-disk.img`.
pub fn default_path() -> PathBuf {
    paths::target_dir().join("data-disk.img")
}

/// The `capctl` binary, built (release) once per process.
pub fn capctl() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let mut cmd = Command::new("cargo");
            cmd.args(["build", "--quiet", "--release", "-p", "capctl"])
                .current_dir(paths::workspace_root());
            process::run(&mut cmd).map_err(|e| format!("{e:#}"))?;
            let path = paths::target_dir().join("release").join("capctl");
            if path.is_file() {
                Ok(path)
            } else {
                Err(format!(
                    "`{}` succeeded but produced no {}",
                    process::display(&cmd),
                    path.display()
                ))
            }
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Runs `capctl ARGS`, capturing its output; an error (with that output) unless it succeeds.
pub fn run_capctl<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Result<Vec<u8>> {
    let mut cmd = Command::new(capctl()?);
    cmd.args(args);
    Ok(process::run_captured(&mut cmd)?.stdout)
}

/// The first `len` bytes of the [`base_pattern_byte`] pattern.
pub fn base_pattern(len: u64) -> Vec<u8> {
    (0..len).map(base_pattern_byte).collect()
}

/// Builds a fresh data disk at `path` (replacing any file there): a sparse
/// [`SIZE`]-byte image formatted as exFAT labelled [`LABEL`], holding
/// [`FILES`] at its root, checked with `capctl vol check`.
pub fn build(path: &Path) -> Result<DataDisk> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    // The staging directory is on the image's file system, so the last step is a rename.
    let staging = tempfile::Builder::new()
        .prefix(".data-disk-")
        .tempdir_in(dir)
        .with_context(|| format!("could not create a staging directory in {}", dir.display()))?;
    let image = staging.path().join("data-disk.img");
    let size = SIZE.to_string();
    run_capctl(&[
        "vol".as_ref(),
        "format".as_ref(),
        image.as_os_str(),
        "--size".as_ref(),
        size.as_ref(),
        "--label".as_ref(),
        LABEL.as_ref(),
    ])?;
    for spec in &FILES {
        let vhd = staging.path().join(spec.name);
        let mut args: Vec<std::ffi::OsString> =
            vec!["disk".into(), "create".into(), vhd.clone().into()];
        match spec.kind {
            VhdKind::Fixed => args.extend(["--type".into(), "fixed".into()]),
            VhdKind::Dynamic => args.extend(["--type".into(), "dynamic".into()]),
            VhdKind::Differencing(parent) => args.extend([
                "--type".into(),
                "differencing".into(),
                "--parent".into(),
                staging.path().join(parent).into(),
                // No absolute locator: the staging directory is gone once the disk is made.
                "--relative-only".into(),
            ]),
        }
        if !matches!(spec.kind, VhdKind::Differencing(_)) {
            args.extend(["--size".into(), spec.size.to_string().into()]);
        }
        run_capctl(&args)?;
        if spec.pattern > 0 {
            let data = staging.path().join(format!("{}.pattern", spec.name));
            fs::write(&data, base_pattern(spec.pattern))
                .with_context(|| format!("could not write {}", data.display()))?;
            run_capctl(&[
                "disk".as_ref(),
                "write".as_ref(),
                vhd.as_os_str(),
                "--offset".as_ref(),
                "0".as_ref(),
                "-i".as_ref(),
                data.as_os_str(),
            ])?;
        }
    }
    for spec in &FILES {
        let vhd = staging.path().join(spec.name);
        run_capctl(&[
            "vol".as_ref(),
            "put".as_ref(),
            image.as_os_str(),
            vhd.as_os_str(),
            spec.name.as_ref(),
        ])?;
    }
    run_capctl(&["vol".as_ref(), "check".as_ref(), image.as_os_str()])?;
    fs::rename(&image, path)
        .with_context(|| format!("could not move {} to {}", image.display(), path.display()))?;
    Ok(DataDisk {
        path: path.to_path_buf(),
        size: SIZE,
    })
}

/// The data disk at `path`, built first when there is no file there;
/// also says whether it was built.
pub fn ensure(path: &Path) -> Result<(DataDisk, bool)> {
    if path.is_file() {
        let size = fs::metadata(path)?.len();
        return Ok((
            DataDisk {
                path: path.to_path_buf(),
                size,
            },
            false,
        ));
    }
    build(path).map(|disk| (disk, true))
}

/// Copies `from` to `to` (replaced if present), leaving holes where `from`
/// reads as zeros, so a 256 MiB image with a few MiB of data costs a few MiB.
pub fn sparse_copy(from: &Path, to: &Path) -> Result<()> {
    let mut source = File::open(from).with_context(|| format!("cannot open {}", from.display()))?;
    let len = source.metadata()?.len();
    let mut sink = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(to)
        .with_context(|| format!("cannot create {}", to.display()))?;
    let mut buf = vec![0u8; 64 << 10];
    let mut pos = 0u64;
    while pos < len {
        let n = (len - pos).min(buf.len() as u64) as usize;
        source
            .read_exact(&mut buf[..n])
            .with_context(|| format!("cannot read {}", from.display()))?;
        if buf[..n].iter().any(|&b| b != 0) {
            sink.seek(SeekFrom::Start(pos))?;
            sink.write_all(&buf[..n])
                .with_context(|| format!("cannot write {}", to.display()))?;
        }
        pos += n as u64;
    }
    sink.set_len(len)?;
    sink.sync_all()?;
    Ok(())
}

/// Copies the file `name` out of the volume `image` into `dir` (as
/// `dir/name`) with `capctl vol get`, together with its parents as [`FILES`]
/// records them, so `capctl disk` can open the chain there.
pub fn extract(image: &Path, name: &str, dir: &Path) -> Result<PathBuf> {
    let mut wanted = vec![name];
    while let Some(VhdKind::Differencing(parent)) =
        wanted.last().and_then(|n| file(n)).map(|spec| spec.kind)
    {
        wanted.push(parent);
    }
    for each in wanted {
        let out = dir.join(each);
        if out.exists() {
            continue;
        }
        run_capctl(&[
            "vol".as_ref(),
            "get".as_ref(),
            image.as_os_str(),
            each.as_ref(),
            out.as_os_str(),
        ])?;
    }
    Ok(dir.join(name))
}

/// Reads `len` bytes at virtual offset `offset` of the VHD `name` on the
/// data disk `image`, as a virtual machine would see them: `capctl vol get`
/// (the file and its parents), then `capctl disk read`.
pub fn read_vhd(image: &Path, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
    let dir = tempfile::Builder::new()
        .prefix("capvisor-vhd-")
        .tempdir()
        .context("could not create a scratch directory")?;
    let vhd = extract(image, name, dir.path())?;
    let data = run_capctl(&[
        "disk".as_ref(),
        "read".as_ref(),
        vhd.as_os_str(),
        "--offset".as_ref(),
        offset.to_string().as_ref(),
        "--length".as_ref(),
        len.to_string().as_ref(),
    ])?;
    if data.len() as u64 != len {
        bail!(
            "capctl disk read returned {} bytes of {name}, not {len}",
            data.len()
        );
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_table_lists_parents_first_and_unique_names() {
        for (i, spec) in FILES.iter().enumerate() {
            assert!(spec.name.ends_with(".vhd"), "{}", spec.name);
            assert!(FILES[..i].iter().all(|f| f.name != spec.name));
            if let VhdKind::Differencing(parent) = spec.kind {
                let at = FILES.iter().position(|f| f.name == parent);
                assert!(at.is_some_and(|at| at < i), "{} before {parent}", spec.name);
                assert_eq!(file(parent).map(|p| p.size), Some(spec.size));
            }
            assert!(spec.pattern <= spec.size);
        }
        let total: u64 = FILES.iter().map(|f| f.size).sum();
        // Every disk fully written (differencing ones too) still fits, with room for metadata.
        assert!(total + 32 * MIB < SIZE, "{total} bytes of disks");
    }

    #[test]
    fn sparse_copy_keeps_data_and_holes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let file = File::create(&a).expect("create");
        file.set_len(64 << 20).expect("set_len");
        std::os::unix::fs::FileExt::write_all_at(&file, b"hello", (32 << 20) + 3).expect("write");
        fs::write(&b, b"old, longer content to be replaced").expect("write b");
        sparse_copy(&a, &b).expect("copy");
        assert_eq!(fs::read(&a).expect("a"), fs::read(&b).expect("b"));
        let blocks = fs::metadata(&b).expect("meta").blocks() * 512;
        assert!(blocks < 1 << 20, "{blocks} bytes allocated");
    }

    /// Builds a real data disk with capctl and reads it back through capctl and fsck.exfat.
    #[test]
    fn build_makes_a_checked_volume_whose_disks_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data.img");
        let disk = build(&path).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(disk.size, SIZE);
        let meta = fs::metadata(&path).expect("meta");
        assert_eq!(meta.len(), SIZE);
        assert!(
            meta.blocks() * 512 < 96 << 20,
            "{} bytes allocated",
            meta.blocks() * 512
        );
        // No staging leftovers next to the image.
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["data.img"]);
        // No host path leaked into the image (locators are UTF-16LE).
        let bytes = fs::read(&path).expect("read image");
        let host: Vec<u8> = dir
            .path()
            .to_string_lossy()
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert!(!bytes.windows(host.len()).any(|w| w == host));

        let p = path.as_os_str();
        run_capctl(&["vol".as_ref(), "check".as_ref(), p]).unwrap_or_else(|e| panic!("{e:#}"));
        let fsck = Path::new("/usr/sbin/fsck.exfat");
        if fsck.is_file() {
            let mut cmd = Command::new(fsck);
            cmd.arg("-n").arg(&path);
            process::run_captured(&mut cmd).unwrap_or_else(|e| panic!("{e:#}"));
        } else {
            eprintln!("fsck.exfat missing (exfatprogs): skipping that check");
        }
        let label = Command::new("blkid")
            .args(["-o", "value", "-s", "LABEL"])
            .arg(&path)
            .output();
        if let Ok(out) = label
            && out.status.success()
        {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), LABEL);
        }

        let listing =
            run_capctl(&["--json".as_ref(), "vol".as_ref(), "ls".as_ref(), p]).expect("vol ls");
        let listing = String::from_utf8_lossy(&listing);
        for spec in &FILES {
            assert!(listing.contains(&format!("\"{}\"", spec.name)), "{listing}");
        }

        let scratch = tempfile::tempdir().expect("tempdir");
        for spec in &FILES {
            let vhd = extract(&path, spec.name, scratch.path()).expect("extract");
            let info = run_capctl(&[
                "--json".as_ref(),
                "disk".as_ref(),
                "info".as_ref(),
                vhd.as_os_str(),
            ])
            .unwrap_or_else(|e| panic!("{e:#}"));
            let info = String::from_utf8_lossy(&info);
            let kind = match spec.kind {
                VhdKind::Fixed => "fixed",
                VhdKind::Dynamic => "dynamic",
                VhdKind::Differencing(_) => "differencing",
            };
            assert!(info.contains(&format!("\"type\":\"{kind}\"")), "{info}");
            assert!(
                info.contains(&format!("\"virtual_size\":{}", spec.size)),
                "{info}"
            );
            if let VhdKind::Differencing(parent) = spec.kind {
                assert!(info.contains(&format!("/{parent}\"")), "{info}");
            }
            run_capctl(&["disk".as_ref(), "check".as_ref(), vhd.as_os_str()])
                .unwrap_or_else(|e| panic!("{e:#}"));
        }

        // The pattern reads back through both differencing children, and stops where it should.
        let pattern = base_pattern(BASE_PATTERN_LEN);
        for name in [BASE, BETA, GAMMA] {
            let data = read_vhd(&path, name, 0, BASE_PATTERN_LEN).expect("read");
            assert!(data == pattern, "{name}: pattern differs");
            let after = read_vhd(&path, name, BASE_PATTERN_LEN, 4096).expect("read");
            assert!(
                after.iter().all(|&b| b == 0),
                "{name}: data after the pattern"
            );
        }
        let odd = read_vhd(&path, BETA, 1000, 24).expect("read");
        assert_eq!(odd, (1000..1024).map(base_pattern_byte).collect::<Vec<_>>());
        assert!(
            read_vhd(&path, ALPHA, 0, 4096)
                .expect("read")
                .iter()
                .all(|&b| b == 0)
        );
    }
}
