//! `capctl disk ...`: create, inspect, check, read, write, convert and
//! merge virtual hard disks.
//!
//! Invariant: commands that write open only the files they change for
//! writing (a differencing disk's parents stay read-only, except the one
//! parent a merge writes into).

use crate::Output;
use crate::image::{Disk, Format, chain_paths, format_id, new_unique_id, parse_size, vhd_now};
use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use serde_json::json;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vhd::{DEFAULT_BLOCK_SIZE, NewDisk, ParentLocation, Severity, Vhd};

/// The kind of disk to create or convert to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// VHD with all space allocated up front (best performance, like Hyper-V "Fixed size").
    Fixed,
    /// VHD that grows as data is written (Hyper-V "Dynamically expanding").
    Dynamic,
    /// VHD holding only changes against --parent (Hyper-V "Differencing").
    Differencing,
    /// Raw image: the disk's bytes, nothing else.
    Raw,
}

#[derive(Subcommand)]
pub enum DiskCommand {
    /// Create a new disk image.
    ///
    /// Examples: `capctl disk create web.vhd --size 40G`,
    /// `capctl disk create web-diff.vhd --type differencing --parent web.vhd`.
    Create {
        /// The new file (must not exist).
        path: PathBuf,
        /// Disk type.
        #[arg(long = "type", value_enum, default_value = "dynamic")]
        kind: Kind,
        /// Virtual size, e.g. 512M, 40G, 2T (not for differencing disks).
        #[arg(long)]
        size: Option<String>,
        /// Parent disk of a differencing disk.
        #[arg(long)]
        parent: Option<PathBuf>,
        /// Block size of dynamic and differencing disks (default 2M, as Hyper-V).
        #[arg(long)]
        block_size: Option<String>,
        /// Record only the relative parent locator (`.\NAME`), no absolute
        /// host path: for disks that move with their parent, e.g. onto a
        /// volume. The parent must be in the child's directory.
        #[arg(long, requires = "parent")]
        relative_only: bool,
    },
    /// Show a disk's type, size, allocation, identity and parent chain.
    Info {
        /// The disk image.
        path: PathBuf,
        /// How to read the file.
        #[arg(long, value_enum, default_value = "auto")]
        format: Format,
    },
    /// Validate a disk and its parents; exits 1 if anything is damaged.
    Check {
        /// The disk image.
        path: PathBuf,
        /// How to read the file.
        #[arg(long, value_enum, default_value = "auto")]
        format: Format,
    },
    /// Read bytes of the virtual disk (as the virtual machine sees them).
    Read {
        /// The disk image.
        path: PathBuf,
        /// First byte to read.
        #[arg(long, default_value = "0")]
        offset: String,
        /// Bytes to read (default: to the end).
        #[arg(long)]
        length: Option<String>,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// How to read the file.
        #[arg(long, value_enum, default_value = "auto")]
        format: Format,
    },
    /// Write bytes into the virtual disk, from a file or standard input.
    Write {
        /// The disk image.
        path: PathBuf,
        /// First byte to write.
        #[arg(long, default_value = "0")]
        offset: String,
        /// Read the data from this file instead of standard input.
        #[arg(long, short)]
        input: Option<PathBuf>,
        /// How to read the file.
        #[arg(long, value_enum, default_value = "auto")]
        format: Format,
    },
    /// Copy a disk into a new image of another type (a differencing chain is flattened).
    Convert {
        /// Source image.
        source: PathBuf,
        /// New image (must not exist).
        target: PathBuf,
        /// Type of the new image.
        #[arg(long = "type", value_enum)]
        kind: Kind,
        /// Block size of a dynamic target (default 2M).
        #[arg(long)]
        block_size: Option<String>,
        /// How to read the source.
        #[arg(long, value_enum, default_value = "auto")]
        format: Format,
    },
    /// Merge a differencing disk into its parent (like Hyper-V "Merge").
    ///
    /// The parent then holds the child's data; the child is left unchanged
    /// and may be deleted.
    Merge {
        /// The differencing disk.
        path: PathBuf,
    },
}

pub fn run(cmd: DiskCommand, out: &Output) -> Result<ExitCode> {
    match cmd {
        DiskCommand::Create {
            path,
            kind,
            size,
            parent,
            block_size,
            relative_only,
        } => create(
            &path,
            kind,
            size.as_deref(),
            parent.as_deref(),
            block_size.as_deref(),
            relative_only,
            out,
        ),
        DiskCommand::Info { path, format } => info(&path, format, out),
        DiskCommand::Check { path, format } => check(&path, format, out),
        DiskCommand::Read {
            path,
            offset,
            length,
            output,
            format,
        } => read(
            &path,
            &offset,
            length.as_deref(),
            output.as_deref(),
            format,
            out,
        ),
        DiskCommand::Write {
            path,
            offset,
            input,
            format,
        } => write(&path, &offset, input.as_deref(), format, out),
        DiskCommand::Convert {
            source,
            target,
            kind,
            block_size,
            format,
        } => convert(&source, &target, kind, block_size.as_deref(), format, out),
        DiskCommand::Merge { path } => merge(&path, out),
    }
}

fn new_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

fn block_size(text: Option<&str>) -> Result<u32> {
    match text {
        None => Ok(DEFAULT_BLOCK_SIZE),
        Some(t) => u32::try_from(parse_size(t)?).context("block size too large"),
    }
}

fn create(
    path: &Path,
    kind: Kind,
    size: Option<&str>,
    parent: Option<&Path>,
    block: Option<&str>,
    relative_only: bool,
    out: &Output,
) -> Result<ExitCode> {
    let spec = |size: u64| -> Result<NewDisk> {
        Ok(NewDisk {
            size,
            block_size: block_size(block)?,
            unique_id: new_unique_id()?,
            timestamp: vhd_now(),
        })
    };
    let size_of = || -> Result<u64> {
        let Some(s) = size else {
            bail!("--size is required for a {kind:?} disk")
        };
        parse_size(s)
    };
    if kind != Kind::Differencing && parent.is_some() {
        bail!("--parent is only for --type differencing");
    }
    let result = match kind {
        Kind::Raw => {
            let file = new_file(path)?;
            file.set_len(size_of()?)?;
            file.metadata()?.len()
        }
        Kind::Fixed => Vhd::create_fixed(new_file(path)?, &spec(size_of()?)?)?.size(),
        Kind::Dynamic => Vhd::create_dynamic(new_file(path)?, &spec(size_of()?)?)?.size(),
        Kind::Differencing => {
            let Some(parent) = parent else {
                bail!("--parent is required for a differencing disk")
            };
            if size.is_some() {
                bail!("a differencing disk has its parent's size; drop --size");
            }
            let file =
                File::open(parent).with_context(|| format!("cannot open {}", parent.display()))?;
            let parent_disk =
                Vhd::open_read_only(file).with_context(|| format!("{}", parent.display()))?;
            let absolute = std::fs::canonicalize(parent)?;
            let name = absolute
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let child_dir = std::fs::canonicalize(
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new(".")),
            )?;
            let mut locations = Vec::new();
            if absolute.parent() == Some(child_dir.as_path()) {
                locations.push(ParentLocation::relative(&format!(".\\{name}")));
            } else if relative_only {
                bail!(
                    "--relative-only needs the parent in the child's directory ({})",
                    child_dir.display()
                );
            }
            if !relative_only {
                locations.push(ParentLocation::absolute(&absolute.to_string_lossy()));
            }
            let disk = spec(parent_disk.size())?;
            let file = new_file(path)?;
            Vhd::create_differencing(file, &parent_disk, &name, &locations, &disk)?.size()
        }
    };
    out.result(
        &format!("created {} ({:?}, {} bytes)", path.display(), kind, result),
        json!({ "path": path, "type": format!("{kind:?}").to_lowercase(), "size": result }),
    );
    Ok(ExitCode::SUCCESS)
}

fn info(path: &Path, format: Format, out: &Output) -> Result<ExitCode> {
    let file_size = std::fs::metadata(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .len();
    let disk = Disk::open(path, format, false, false)?;
    let Disk::Vhd(d) = disk else {
        out.result(
            &format!("{}: raw image, {} bytes", path.display(), file_size),
            json!({ "path": path, "format": "raw", "virtual_size": file_size, "file_size": file_size }),
        );
        return Ok(ExitCode::SUCCESS);
    };
    let footer = d.footer();
    let mut value = json!({
        "path": path,
        "format": "vhd",
        "type": d.disk_type().name(),
        "virtual_size": d.size(),
        "file_size": file_size,
        "unique_id": format_id(&footer.unique_id),
        "creator": String::from_utf8_lossy(&footer.creator_app).trim_end_matches('\0'),
        "geometry": [footer.geometry.cylinders, footer.geometry.heads, footer.geometry.sectors_per_track],
        "footer_recovered": d.footer_recovered(),
    });
    let mut text = format!(
        "{}\n  format:       VHD ({})\n  virtual size: {} bytes\n  file size:    {} bytes\n  unique id:    {}\n  creator:      {}",
        path.display(),
        d.disk_type().name(),
        d.size(),
        file_size,
        value["unique_id"].as_str().unwrap_or_default(),
        value["creator"].as_str().unwrap_or_default(),
    );
    if let (Some(h), Some((blocks, used))) = (d.header(), d.block_usage()) {
        value["block_size"] = json!(h.block_size);
        value["blocks"] = json!(blocks);
        value["blocks_allocated"] = json!(used);
        text += &format!(
            "\n  block size:   {} bytes\n  blocks:       {used} of {blocks} allocated",
            h.block_size
        );
    }
    if d.footer_recovered() {
        text += "\n  warning:      damaged footer; recovered from the copy at the start";
    }
    if d.parent().is_some() {
        let parents = chain_paths(path)?;
        text += &format!(
            "\n  parent chain: {}",
            parents
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" -> ")
        );
        value["parents"] = json!(parents);
    }
    out.result(&text, value);
    Ok(ExitCode::SUCCESS)
}

fn check(path: &Path, format: Format, out: &Output) -> Result<ExitCode> {
    let disk = Disk::open(path, format, false, false)?;
    let Disk::Vhd(mut d) = disk else {
        out.result(
            &format!("{}: raw image, nothing to check", path.display()),
            json!({ "path": path, "ok": true, "findings": [] }),
        );
        return Ok(ExitCode::SUCCESS);
    };
    let mut findings = Vec::new();
    findings.append(&mut d.check()?);
    let mut cursor = d.take_parent();
    while let Some(mut parent) = cursor {
        findings.extend(parent.check()?.into_iter().map(|mut f| {
            f.message = format!("parent: {}", f.message);
            f
        }));
        cursor = parent.take_parent();
    }
    let ok = !findings.iter().any(|f| f.severity == Severity::Error);
    let text: Vec<String> = findings
        .iter()
        .map(|f| format!("  {:?}: {}", f.severity, f.message))
        .collect();
    out.result(
        &format!("{}: {}{}{}", path.display(), if ok { "ok" } else { "DAMAGED" }, if text.is_empty() { "" } else { "\n" }, text.join("\n")),
        json!({
            "path": path,
            "ok": ok,
            "findings": findings.iter().map(|f| json!({ "severity": format!("{:?}", f.severity).to_lowercase(), "message": f.message })).collect::<Vec<_>>(),
        }),
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn read(
    path: &Path,
    offset: &str,
    length: Option<&str>,
    output: Option<&Path>,
    format: Format,
    out: &Output,
) -> Result<ExitCode> {
    let mut disk = Disk::open(path, format, false, false)?;
    let offset = parse_size(offset)?;
    let length = match length {
        Some(l) => parse_size(l)?,
        None => disk.size().saturating_sub(offset),
    };
    if offset
        .checked_add(length)
        .is_none_or(|end| end > disk.size())
    {
        bail!(
            "range {offset}+{length} is past the end of the {}-byte disk",
            disk.size()
        );
    }
    let mut sink: Box<dyn Write> = match output {
        Some(p) => Box::new(new_file(p)?),
        None => Box::new(std::io::stdout().lock()),
    };
    let bar = if output.is_some() {
        out.progress(length, "reading")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < length {
        let n = (length - done).min(buf.len() as u64) as usize;
        disk.read_at(offset + done, &mut buf[..n])?;
        sink.write_all(&buf[..n])?;
        done += n as u64;
        bar.set_position(done);
    }
    sink.flush()?;
    bar.finish_and_clear();
    if output.is_some() || out.json {
        out.result(&format!("read {length} bytes"), json!({ "read": length }));
    }
    Ok(ExitCode::SUCCESS)
}

fn write(
    path: &Path,
    offset: &str,
    input: Option<&Path>,
    format: Format,
    out: &Output,
) -> Result<ExitCode> {
    let mut disk = Disk::open(path, format, true, false)?;
    let offset = parse_size(offset)?;
    let mut source: Box<dyn Read> = match input {
        Some(p) => Box::new(File::open(p).with_context(|| format!("cannot open {}", p.display()))?),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let mut n = 0;
        while n < buf.len() {
            let k = source.read(&mut buf[n..])?;
            if k == 0 {
                break;
            }
            n += k;
        }
        if n == 0 {
            break;
        }
        disk.write_at(offset + done, &buf[..n])?;
        done += n as u64;
    }
    disk.flush()?;
    out.result(
        &format!("wrote {done} bytes at {offset}"),
        json!({ "written": done, "offset": offset }),
    );
    Ok(ExitCode::SUCCESS)
}

fn convert(
    source: &Path,
    target: &Path,
    kind: Kind,
    block: Option<&str>,
    format: Format,
    out: &Output,
) -> Result<ExitCode> {
    let mut src = Disk::open(source, format, false, false)?;
    let size = src.size();
    if kind == Kind::Differencing {
        bail!("convert makes fixed, dynamic or raw images; use `disk create --type differencing`");
    }
    let spec = NewDisk {
        size,
        block_size: block_size(block)?,
        unique_id: new_unique_id()?,
        timestamp: vhd_now(),
    };
    let mut dst = match kind {
        Kind::Raw => {
            let f = new_file(target)?;
            f.set_len(size)?;
            Disk::Raw(f, size)
        }
        Kind::Fixed => Disk::Vhd(Box::new(Vhd::create_fixed(new_file(target)?, &spec)?)),
        _ => Disk::Vhd(Box::new(Vhd::create_dynamic(new_file(target)?, &spec)?)),
    };
    let bar = out.progress(size, "converting");
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < size {
        let n = (size - done).min(buf.len() as u64) as usize;
        src.read_at(done, &mut buf[..n])?;
        // New targets read as zeros: skipping zero chunks keeps them sparse.
        if buf[..n].iter().any(|&b| b != 0) {
            dst.write_at(done, &buf[..n])?;
        }
        done += n as u64;
        bar.set_position(done);
    }
    dst.flush()?;
    bar.finish_and_clear();
    out.result(
        &format!("converted {} to {} ({:?}, {size} bytes)", source.display(), target.display(), kind),
        json!({ "source": source, "target": target, "type": format!("{kind:?}").to_lowercase(), "size": size }),
    );
    Ok(ExitCode::SUCCESS)
}

fn merge(path: &Path, out: &Output) -> Result<ExitCode> {
    let disk = Disk::open(path, Format::Vhd, false, true)?;
    let Disk::Vhd(mut d) = disk else {
        bail!("not a VHD")
    };
    let (blocks, _) = d.block_usage().unwrap_or((0, 0));
    let bar = out.progress(u64::from(blocks), "merging");
    let copied = d.merge_into_parent(&mut |done, _| bar.set_position(done))?;
    bar.finish_and_clear();
    let parent = chain_paths(path)?.into_iter().next().unwrap_or_default();
    out.result(
        &format!(
            "merged {copied} bytes from {} into {}",
            path.display(),
            parent.display()
        ),
        json!({ "child": path, "parent": parent, "bytes": copied }),
    );
    Ok(ExitCode::SUCCESS)
}
