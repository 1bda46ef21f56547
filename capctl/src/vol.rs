//! `capctl vol ...`: format exFAT volume images and move files (VHDs above
//! all) in and out of them.
//!
//! Invariant: every command that changes a volume flushes it (clearing its
//! dirty flag) before reporting success.

use crate::Output;
use crate::image::{exfat_now, parse_size};
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use exfat::{FormatOptions, Volume};
use serde_json::json;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum VolCommand {
    /// Format an image file (created if missing) as an exFAT volume.
    ///
    /// Example: `capctl vol format vms.img --size 200G --label VMS`.
    Format {
        /// The volume image.
        image: PathBuf,
        /// Volume size, e.g. 64G (default: the existing file's size).
        #[arg(long)]
        size: Option<String>,
        /// Cluster size, e.g. 4K, 32K, 1M (default by size, as Windows picks).
        #[arg(long)]
        cluster_size: Option<String>,
        /// Volume label (up to 11 characters).
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List a directory of the volume.
    Ls {
        /// The volume image.
        image: PathBuf,
        /// Directory inside the volume.
        #[arg(default_value = "/")]
        path: String,
    },
    /// Copy a host file into the volume (stored contiguously when space allows).
    Put {
        /// The volume image.
        image: PathBuf,
        /// File on this host.
        source: PathBuf,
        /// Path inside the volume (parent directories are created).
        target: String,
        /// Replace the target if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Copy a file out of the volume to this host.
    Get {
        /// The volume image.
        image: PathBuf,
        /// Path inside the volume.
        source: String,
        /// File on this host (must not exist).
        target: PathBuf,
    },
    /// Remove a file or an empty directory from the volume.
    Rm {
        /// The volume image.
        image: PathBuf,
        /// Path inside the volume.
        path: String,
    },
    /// Create a directory in the volume.
    Mkdir {
        /// The volume image.
        image: PathBuf,
        /// Path inside the volume.
        path: String,
    },
    /// Check the volume's structures; exits 1 if anything is damaged.
    Check {
        /// The volume image.
        image: PathBuf,
    },
}

/// Mounts the exFAT image `image` (read-write if `writable`), its clock set to now.
pub(crate) fn mount(image: &Path, writable: bool) -> Result<Volume<File>> {
    let file = OpenOptions::new()
        .read(true)
        .write(writable)
        .open(image)
        .with_context(|| format!("cannot open {}", image.display()))?;
    let mut vol = Volume::mount(file).with_context(|| format!("{}", image.display()))?;
    vol.set_time(exfat_now());
    Ok(vol)
}

pub fn run(cmd: VolCommand, out: &Output) -> Result<ExitCode> {
    match cmd {
        VolCommand::Format {
            image,
            size,
            cluster_size,
            label,
        } => {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&image)
                .with_context(|| format!("cannot open {}", image.display()))?;
            let size = match size {
                Some(s) => parse_size(&s)?,
                None if file.metadata()?.len() > 0 => 0,
                None => bail!("--size is required for a new image"),
            };
            let cluster_size = match cluster_size {
                Some(c) => Some(u32::try_from(parse_size(&c)?).context("cluster size too large")?),
                None => None,
            };
            let serial = (crate::image::unix_now() as u32) ^ std::process::id().rotate_left(16);
            let options = FormatOptions {
                size,
                cluster_size,
                label,
                serial,
            };
            let vol = Volume::format(file, &options)?;
            let (total, cluster) = (vol.total_bytes(), vol.cluster_size());
            vol.into_device()?;
            out.result(
                &format!(
                    "formatted {}: exFAT, {total} bytes in {cluster}-byte clusters",
                    image.display()
                ),
                json!({ "image": image, "capacity": total, "cluster_size": cluster }),
            );
        }
        VolCommand::Ls { image, path } => {
            let mut vol = mount(&image, false)?;
            let entries = vol.list(&path)?;
            let text: Vec<String> = entries
                .iter()
                .map(|e| {
                    let t = e.modified;
                    format!(
                        "{} {:>14} {:04}-{:02}-{:02} {:02}:{:02} {}{}",
                        if e.is_dir { 'd' } else { '-' },
                        e.size,
                        t.year,
                        t.month,
                        t.day,
                        t.hour,
                        t.minute,
                        e.name,
                        if e.is_dir { "/" } else { "" }
                    )
                })
                .collect();
            out.result(
                &text.join("\n"),
                json!({ "path": path, "entries": entries.iter().map(|e| json!({
                    "name": e.name, "directory": e.is_dir, "size": e.size,
                    "valid_length": e.valid_length, "contiguous": e.contiguous,
                })).collect::<Vec<_>>() }),
            );
        }
        VolCommand::Put {
            image,
            source,
            target,
            force,
        } => put(&image, &source, &target, force, out)?,
        VolCommand::Get {
            image,
            source,
            target,
        } => {
            let mut vol = mount(&image, false)?;
            let file = vol.open(&source)?;
            let mut sink = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)
                .with_context(|| format!("cannot create {}", target.display()))?;
            let bar = out.progress(file.len(), "copying");
            let mut buf = vec![0u8; 1 << 20];
            let mut pos = 0u64;
            while pos < file.len() {
                let n = vol.read(&file, pos, &mut buf)?;
                sink.write_all(&buf[..n])?;
                pos += n as u64;
                bar.set_position(pos);
            }
            sink.sync_all()?;
            bar.finish_and_clear();
            out.result(
                &format!("copied {pos} bytes to {}", target.display()),
                json!({ "bytes": pos }),
            );
        }
        VolCommand::Rm { image, path } => {
            let mut vol = mount(&image, true)?;
            vol.remove(&path)?;
            vol.flush()?;
            out.result(&format!("removed {path}"), json!({ "removed": path }));
        }
        VolCommand::Mkdir { image, path } => {
            let mut vol = mount(&image, true)?;
            vol.create_dir(&path)?;
            vol.flush()?;
            out.result(&format!("created {path}/"), json!({ "created": path }));
        }
        VolCommand::Check { image } => {
            let mut vol = mount(&image, false)?;
            let report = vol.check()?;
            let ok = report.is_clean();
            let mut text = format!(
                "{}: {} ({} files, {} directories, {} of {} bytes free)",
                image.display(),
                if ok { "ok" } else { "DAMAGED" },
                report.files,
                report.directories,
                vol.free_bytes(),
                vol.total_bytes()
            );
            for e in &report.errors {
                text += &format!("\n  error: {e}");
            }
            for w in &report.warnings {
                text += &format!("\n  warning: {w}");
            }
            out.result(
                &text,
                json!({ "ok": ok, "errors": report.errors, "warnings": report.warnings,
                "files": report.files, "directories": report.directories }),
            );
            if !ok {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn put(image: &Path, source: &Path, target: &str, force: bool, out: &Output) -> Result<()> {
    let mut input =
        File::open(source).with_context(|| format!("cannot open {}", source.display()))?;
    let len = input.metadata()?.len();
    let mut vol = mount(image, true)?;
    // Create missing parent directories.
    let parts: Vec<&str> = target.split('/').filter(|p| !p.is_empty()).collect();
    let mut prefix = String::new();
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        prefix = format!("{prefix}/{part}");
        match vol.create_dir(&prefix) {
            Ok(()) | Err(exfat::Error::AlreadyExists) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create {prefix}")),
        }
    }
    if force {
        match vol.remove(target) {
            Ok(()) | Err(exfat::Error::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut file = vol
        .create(target)
        .with_context(|| format!("cannot create {target}"))?;
    // Allocate the whole file first so it is contiguous when the volume has room.
    vol.set_len(&mut file, len)?;
    let bar = out.progress(len, "copying");
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        let n = (len - pos).min(buf.len() as u64) as usize;
        input.read_exact(&mut buf[..n])?;
        vol.write(&mut file, pos, &buf[..n])?;
        pos += n as u64;
        bar.set_position(pos);
    }
    vol.flush()?;
    bar.finish_and_clear();
    out.result(
        &format!(
            "copied {len} bytes to {target}{}",
            if file.is_contiguous() {
                " (contiguous)"
            } else {
                ""
            }
        ),
        json!({ "target": target, "bytes": len, "contiguous": file.is_contiguous() }),
    );
    Ok(())
}
