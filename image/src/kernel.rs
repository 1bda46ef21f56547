//! Building the bare-metal binaries: the microkernel and the two partition images.
//!
//! # Invariants
//! The build command is the one documented in the README:
//! `cargo build --release --target x86_64-unknown-none -p microkernel -p root-partition -p child-runtime`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};

use crate::{paths, process};

/// The target every binary that runs on the machine is built for.
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";
/// The packages (and binaries) that make up a boot image.
pub const PACKAGES: [&str; 3] = ["microkernel", "root-partition", "child-runtime"];

/// The built ELF files GRUB loads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binaries {
    /// The multiboot2 microkernel.
    pub microkernel: PathBuf,
    /// The root partition ELF (first module).
    pub root_partition: PathBuf,
    /// The child runtime ELF (second module).
    pub child_runtime: PathBuf,
    /// The boot configuration the root partition reads (third module).
    pub boot_config: PathBuf,
}

/// The `cargo` arguments after the subcommand that select the kernel binaries
/// (`--release --target x86_64-unknown-none -p microkernel -p ...`).
pub fn selection_args() -> Vec<&'static str> {
    let mut args = vec!["--release", "--target", KERNEL_TARGET];
    for package in PACKAGES {
        args.extend(["-p", package]);
    }
    args
}

/// Where cargo puts the release binaries for [`KERNEL_TARGET`].
pub fn release_dir() -> PathBuf {
    paths::target_dir().join(KERNEL_TARGET).join("release")
}

/// The binaries' paths, whether or not they have been built.
pub fn binaries() -> Binaries {
    let dir = release_dir();
    Binaries {
        microkernel: dir.join(PACKAGES[0]),
        root_partition: dir.join(PACKAGES[1]),
        child_runtime: dir.join(PACKAGES[2]),
        boot_config: paths::workspace_root()
            .join("root-partition")
            .join("boot.cfg"),
    }
}

/// Builds the three binaries (release, [`KERNEL_TARGET`]) and returns their paths.
/// Cargo's own output goes to stderr.
pub fn build() -> Result<Binaries> {
    let mut cmd = Command::new("cargo");
    cmd.arg("build")
        .args(selection_args())
        .current_dir(paths::workspace_root());
    process::run(&mut cmd)?;
    let built = binaries();
    for path in [
        &built.microkernel,
        &built.root_partition,
        &built.child_runtime,
        &built.boot_config,
    ] {
        if !path.is_file() {
            bail!(
                "`{}` succeeded but produced no {}: is that package a binary crate yet?",
                process::display(&cmd),
                path.display()
            );
        }
    }
    Ok(built)
}
