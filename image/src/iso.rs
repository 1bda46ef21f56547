//! Making the boot ISO: a hybrid BIOS + UEFI GRUB image (`grub-mkrescue`) whose
//! only menu entry loads the microkernel with multiboot2 and the two partition
//! images as modules.
//!
//! # Invariants
//! The kernel command line is checked before it is written into `grub.cfg`:
//! only characters GRUB passes through literally are accepted, so a command line
//! can never add or alter a GRUB command.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::kernel::Binaries;
use crate::process;

/// Characters allowed in a kernel command line besides ASCII letters and digits.
const CMDLINE_PUNCTUATION: &str = " -_=.,:/+@%";

/// Checks that `cmdline` only holds characters GRUB passes through literally.
pub fn check_cmdline(cmdline: &str) -> Result<()> {
    if let Some(bad) = cmdline
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !CMDLINE_PUNCTUATION.contains(*c))
    {
        bail!(
            "kernel command line {cmdline:?} holds {bad:?}; only ASCII letters, digits and \
             {CMDLINE_PUNCTUATION:?} are allowed"
        );
    }
    Ok(())
}

/// The `grub.cfg` for a kernel command line (already checked by [`check_cmdline`]).
///
/// GRUB boots the only entry at once, shows no menu, and stays off the serial
/// port (its terminal is the console), so the serial log starts with the kernel.
pub fn grub_cfg(cmdline: &str) -> String {
    let cmdline = cmdline.trim();
    let multiboot = if cmdline.is_empty() {
        String::new()
    } else {
        format!(" {cmdline}")
    };
    format!(
        "set timeout=0\n\
         set timeout_style=hidden\n\
         set default=0\n\
         if [ \"${{grub_platform}}\" = efi ]; then insmod all_video; fi\n\
         \n\
         menuentry \"capvisor\" {{\n\
         \x20   multiboot2 /boot/microkernel{multiboot}\n\
         \x20   module2 /boot/root-partition root-partition\n\
         \x20   module2 /boot/child-runtime child-runtime\n\
         \x20   module2 /boot/boot.cfg boot-config\n\
         \x20   boot\n\
         }}\n"
    )
}

/// Writes a hybrid BIOS + UEFI ISO to `out` that boots `binaries` with `cmdline`.
pub fn make(binaries: &Binaries, cmdline: &str, out: &Path) -> Result<()> {
    check_cmdline(cmdline)?;
    let staging = tempfile::Builder::new()
        .prefix("capvisor-iso-")
        .tempdir()
        .context("could not create a staging directory for the ISO")?;
    let boot = staging.path().join("boot");
    fs::create_dir_all(boot.join("grub"))
        .with_context(|| format!("could not create {}", boot.display()))?;
    for (source, name) in [
        (&binaries.microkernel, "microkernel"),
        (&binaries.root_partition, "root-partition"),
        (&binaries.child_runtime, "child-runtime"),
        (&binaries.boot_config, "boot.cfg"),
    ] {
        fs::copy(source, boot.join(name))
            .with_context(|| format!("could not copy {} into the ISO", source.display()))?;
    }
    fs::write(boot.join("grub").join("grub.cfg"), grub_cfg(cmdline))
        .context("could not write grub.cfg")?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("could not create {}", parent.display()))?;
    }
    let mut cmd = Command::new("grub-mkrescue");
    cmd.arg("-o").arg(out).arg(staging.path());
    process::run_captured(&mut cmd)?;
    if !out.is_file() {
        bail!("`{}` wrote no {}", process::display(&cmd), out.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_rejects_grub_syntax() {
        assert!(check_cmdline("").is_ok());
        assert!(check_cmdline("selftest=read-hypervisor-frame log=debug").is_ok());
        for bad in ["a; reboot", "$root", "x\nboot", "\"quoted\"", "a{b}", "é"] {
            assert!(check_cmdline(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn grub_cfg_boots_the_kernel_with_its_modules() {
        let cfg = grub_cfg("selftest=read-hypervisor-frame");
        assert!(cfg.contains("set timeout=0\n"));
        assert!(cfg.contains("set default=0\n"));
        assert!(cfg.contains("    multiboot2 /boot/microkernel selftest=read-hypervisor-frame\n"));
        assert!(cfg.contains("    module2 /boot/root-partition root-partition\n"));
        assert!(cfg.contains("    module2 /boot/child-runtime child-runtime\n"));
        assert!(cfg.contains("    boot\n}\n"));
        assert!(grub_cfg("  ").contains("    multiboot2 /boot/microkernel\n"));
    }
}
