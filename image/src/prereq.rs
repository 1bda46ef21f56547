//! Host prerequisites: the Debian packages and cargo tools `cargo image` needs,
//! found by looking for their files, installed when we are root on Debian.
//!
//! # Invariants
//! Nothing is installed unless something is missing, and every install is said
//! on stderr first. When we cannot install, the error holds the exact command to run.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::kernel::KERNEL_TARGET;
use crate::{process, qemu};

/// How to tell that a package is installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A program on `PATH` (or in `/usr/sbin`, `/sbin`).
    Binary(&'static str),
    /// A directory the package installs.
    Dir(&'static str),
    /// The OVMF firmware ([`qemu::find_ovmf`]).
    Ovmf,
}

/// A Debian package and how to see that it is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// Debian package name.
    pub package: &'static str,
    /// What shows it is installed.
    pub probe: Probe,
}

const fn needs(package: &'static str, probe: Probe) -> Requirement {
    Requirement { package, probe }
}

/// What building and booting the ISO needs.
pub const IMAGE_PACKAGES: &[Requirement] = &[
    needs("qemu-system-x86", Probe::Binary(qemu::QEMU)),
    needs("qemu-utils", Probe::Binary("qemu-img")),
    needs("grub-common", Probe::Binary("grub-mkrescue")),
    needs("grub-pc-bin", Probe::Dir("/usr/lib/grub/i386-pc")),
    needs("grub-efi-amd64-bin", Probe::Dir("/usr/lib/grub/x86_64-efi")),
    needs("xorriso", Probe::Binary("xorriso")),
    needs("mtools", Probe::Binary("mformat")),
    needs("ovmf", Probe::Ovmf),
    // `cargo image run` prints an `nc` command for the demo VM's service.
    needs("netcat-openbsd", Probe::Binary("nc")),
];

/// What booting on Bochs (the Intel VMX backend) needs.
pub const BOCHS_PACKAGES: &[Requirement] = &[
    needs("bochs", Probe::Binary("bochs")),
    needs("bochsbios", Probe::Dir("/usr/share/bochs")),
    needs("vgabios", Probe::Dir("/usr/share/vgabios")),
];

/// What only the test suite needs (file-system and VHD oracles, Bochs).
pub const TEST_PACKAGES: &[Requirement] = &[
    needs("bochs", Probe::Binary("bochs")),
    needs("bochsbios", Probe::Dir("/usr/share/bochs")),
    needs("vgabios", Probe::Dir("/usr/share/vgabios")),
    needs("dosfstools", Probe::Binary("mkfs.fat")),
    needs("exfatprogs", Probe::Binary("mkfs.exfat")),
    needs("libvhdi-utils", Probe::Binary("vhdiinfo")),
];

/// The package QEMU comes in; its install needs version pinning (see [`install_commands`]).
const QEMU_PACKAGE: &str = "qemu-system-x86";

/// Finds a program on `PATH`, then in the system binary directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

impl Requirement {
    /// Whether the package's files are there.
    pub fn is_met(&self) -> bool {
        match self.probe {
            Probe::Binary(name) => find_program(name).is_some(),
            Probe::Dir(dir) => Path::new(dir).is_dir(),
            Probe::Ovmf => qemu::find_ovmf().is_some(),
        }
    }
}

/// The packages of `requirements` that are missing.
pub fn missing(requirements: &[Requirement]) -> Vec<&'static str> {
    requirements
        .iter()
        .filter(|r| !r.is_met())
        .map(|r| r.package)
        .collect()
}

/// The `apt-get` commands that install `packages`. When QEMU itself is among
/// them, `qemu-utils` and `qemu-block-extra` are pinned to the version the
/// repositories offer for QEMU (`candidate`): a newer `qemu-utils` from
/// backports otherwise makes apt refuse with "held broken packages".
pub fn install_commands(packages: &[&str], qemu_candidate: Option<&str>) -> Vec<Vec<String>> {
    let mut install: Vec<String> = ["apt-get", "install", "-y"].map(String::from).to_vec();
    let pinned = packages
        .contains(&QEMU_PACKAGE)
        .then_some(qemu_candidate)
        .flatten();
    if pinned.is_some() {
        install.push("--allow-downgrades".to_owned());
    }
    for package in packages {
        if pinned.is_some() && *package == "qemu-utils" {
            continue;
        }
        install.push((*package).to_owned());
    }
    if let Some(version) = pinned {
        install.push(format!("qemu-utils={version}"));
        install.push(format!("qemu-block-extra={version}"));
    }
    vec![vec!["apt-get".to_owned(), "update".to_owned()], install]
}

/// The `Candidate:` version in `apt-cache policy` output, if there is one.
pub fn parse_candidate(policy: &str) -> Option<String> {
    policy
        .lines()
        .find_map(|line| line.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|version| !version.is_empty() && *version != "(none)")
        .map(str::to_owned)
}

fn qemu_candidate() -> Result<String> {
    let output = process::run_captured(Command::new("apt-cache").args(["policy", QEMU_PACKAGE]))?;
    parse_candidate(&String::from_utf8_lossy(&output.stdout))
        .with_context(|| format!("apt-cache offers no version of {QEMU_PACKAGE}"))
}

fn installed_version(package: &str) -> Option<String> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .output()
        .ok()?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !version.is_empty()).then_some(version)
}

fn is_debian() -> bool {
    Path::new("/etc/debian_version").is_file() && find_program("apt-get").is_some()
}

/// Makes sure every package of `requirements` is installed: installs the missing
/// ones when root on Debian (saying so), else fails with the command to run.
pub fn ensure_packages(requirements: &[Requirement]) -> Result<()> {
    let absent = missing(requirements);
    if absent.is_empty() {
        return Ok(());
    }
    let is_root = nix::unistd::geteuid().is_root();
    if is_root && is_debian() {
        eprintln!(
            "capvisor needs these packages, installing them: {}",
            absent.join(" ")
        );
        let mut commands = install_commands(&absent, None);
        let update = commands.remove(0);
        run_apt(&update)?;
        let candidate = if absent.contains(&QEMU_PACKAGE) {
            let candidate = qemu_candidate()?;
            if let Some(utils) = installed_version("qemu-utils").filter(|v| *v != candidate) {
                eprintln!(
                    "qemu-utils {utils} is installed but the repositories' QEMU is {candidate}: \
                     pinning qemu-utils and qemu-block-extra to {candidate}"
                );
            }
            Some(candidate)
        } else {
            None
        };
        let install = install_commands(&absent, candidate.as_deref()).remove(1);
        run_apt(&install)?;
        let still = missing(requirements);
        if !still.is_empty() {
            bail!("installed packages but still missing: {}", still.join(" "));
        }
        return Ok(());
    }
    let candidate = if absent.contains(&QEMU_PACKAGE) {
        qemu_candidate().ok()
    } else {
        None
    };
    let sudo = if is_root { "" } else { "sudo " };
    let commands: Vec<String> = install_commands(&absent, candidate.as_deref())
        .into_iter()
        .map(|words| format!("{sudo}{}", words.join(" ")))
        .collect();
    bail!(
        "missing packages: {}\nInstall them (Debian package names) with:\n    {}",
        absent.join(" "),
        commands.join(" && ")
    )
}

fn run_apt(words: &[String]) -> Result<()> {
    eprintln!("+ {}", words.join(" "));
    let mut cmd = Command::new(&words[0]);
    cmd.args(&words[1..])
        .env("DEBIAN_FRONTEND", "noninteractive");
    process::run(&mut cmd)
}

/// Makes sure rustup has the bare-metal target ([`KERNEL_TARGET`]); adds it when missing.
pub fn ensure_rust_target() -> Result<()> {
    if find_program("rustup").is_none() {
        eprintln!("warning: no rustup; assuming the toolchain has {KERNEL_TARGET}");
        return Ok(());
    }
    let root = crate::paths::workspace_root();
    let output = process::run_captured(
        Command::new("rustup")
            .args(["target", "list", "--installed"])
            .current_dir(&root),
    )?;
    if String::from_utf8_lossy(&output.stdout)
        .lines()
        .any(|line| line.trim() == KERNEL_TARGET)
    {
        return Ok(());
    }
    eprintln!("adding the Rust target {KERNEL_TARGET}: rustup target add {KERNEL_TARGET}");
    process::run(
        Command::new("rustup")
            .args(["target", "add", KERNEL_TARGET])
            .current_dir(root),
    )
}

/// Makes sure the cargo subcommand `cargo <subcommand>` (from crate `package`)
/// exists; installs it with `cargo install --locked` when missing.
pub fn ensure_cargo_tool(package: &str, subcommand: &str) -> Result<()> {
    let works = Command::new("cargo")
        .args([subcommand, "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if works {
        return Ok(());
    }
    eprintln!(
        "installing {package} (`cargo {subcommand}` is missing): cargo install --locked {package}"
    );
    process::run(Command::new("cargo").args(["install", "--locked", package]))
}

/// Everything `cargo image iso` and `cargo image run` need.
pub fn ensure_image_prerequisites() -> Result<()> {
    ensure_packages(IMAGE_PACKAGES)?;
    ensure_rust_target()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_is_parsed_from_apt_cache_policy() {
        let policy = "qemu-system-x86:\n  Installed: (none)\n  Candidate: 1:7.2+dfsg-7+deb12u18\n  Version table:\n";
        assert_eq!(
            parse_candidate(policy).as_deref(),
            Some("1:7.2+dfsg-7+deb12u18")
        );
        assert_eq!(parse_candidate("x:\n  Candidate: (none)\n"), None);
        assert_eq!(parse_candidate(""), None);
    }

    #[test]
    fn qemu_install_pins_its_utilities() {
        let commands =
            install_commands(&["qemu-system-x86", "qemu-utils", "xorriso"], Some("1:7.2"));
        assert_eq!(commands[0].join(" "), "apt-get update");
        assert_eq!(
            commands[1].join(" "),
            "apt-get install -y --allow-downgrades qemu-system-x86 xorriso \
             qemu-utils=1:7.2 qemu-block-extra=1:7.2"
        );
        let plain = install_commands(&["xorriso", "mtools"], Some("1:7.2"));
        assert_eq!(plain[1].join(" "), "apt-get install -y xorriso mtools");
    }

    #[test]
    fn probes_look_at_files() {
        assert!(needs("coreutils", Probe::Binary("sh")).is_met());
        assert!(!needs("nothing", Probe::Binary("no-such-program-capvisor")).is_met());
        assert!(needs("root", Probe::Dir("/")).is_met());
        assert_eq!(
            missing(&[needs("nothing", Probe::Dir("/no/such/dir"))]),
            vec!["nothing"]
        );
    }
}
