//! Composing QEMU command lines for a boot ISO, and reading QEMU's exit status.
//!
//! # Invariants
//! The command line always has `-serial stdio -display none -no-reboot`, so the
//! serial console is QEMU's stdout and a reset ends the run instead of looping.
//! With `debug_exit`, the kernel's exit code comes back through
//! `isa-debug-exit` at [`ipc::exit::DEBUG_EXIT_PORT`].

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::str::FromStr;

use anyhow::{Context, Result, anyhow, bail};
use ipc::exit::{DEBUG_EXIT_PORT, ExitCode, from_qemu_status};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";
/// OVMF firmware code (Debian `ovmf`, 4 MiB flash layout).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// OVMF variable-store template matching [`OVMF_CODE`].
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// OVMF as one image (older Debian layout), used when the split files are absent.
pub const OVMF_COMBINED: &str = "/usr/share/ovmf/OVMF.fd";

/// QEMU's accelerator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation (emulates SVM + NPT; the project's machines have no other way).
    #[default]
    Tcg,
    /// Hardware virtualization (needs nested virtualization on the host).
    Kvm,
}

impl Accel {
    /// The name QEMU's `-accel` takes.
    pub const fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

impl FromStr for Accel {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "tcg" => Ok(Accel::Tcg),
            "kvm" => Ok(Accel::Kvm),
            other => Err(anyhow!(
                "unknown accelerator {other:?} (expected tcg or kvm)"
            )),
        }
    }
}

/// The firmware that boots the ISO.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS (QEMU's default).
    #[default]
    Bios,
    /// OVMF (UEFI).
    Uefi,
}

/// The OVMF files found on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ovmf {
    /// Code (read-only flash) plus a variable-store template to copy.
    Split {
        /// Firmware code.
        code: PathBuf,
        /// Variable-store template (never written: each run gets a copy).
        vars: PathBuf,
    },
    /// One image loaded with `-bios`.
    Combined(PathBuf),
}

/// The OVMF firmware installed here, if any (split files preferred).
pub fn find_ovmf() -> Option<Ovmf> {
    let (code, vars) = (Path::new(OVMF_CODE), Path::new(OVMF_VARS));
    if code.is_file() && vars.is_file() {
        return Some(Ovmf::Split {
            code: code.to_path_buf(),
            vars: vars.to_path_buf(),
        });
    }
    let combined = Path::new(OVMF_COMBINED);
    combined
        .is_file()
        .then(|| Ovmf::Combined(combined.to_path_buf()))
}

/// How to start a machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuOptions {
    /// Processors (`-smp`).
    pub smp: u32,
    /// RAM (`-m`), e.g. `512M`.
    pub memory: String,
    /// CPU model (`-cpu`), e.g. `EPYC` (SVM + NPT).
    pub cpu: String,
    /// Accelerator (`-accel`).
    pub accel: Accel,
    /// BIOS or UEFI.
    pub firmware: Firmware,
    /// Attach `isa-debug-exit`, so the kernel's exit code becomes QEMU's status.
    pub debug_exit: bool,
    /// Pass `-nic none` (otherwise QEMU adds a user-net NIC).
    pub no_nic: bool,
    /// The data disk (a raw image) as a virtio-blk PCI disk, see
    /// [`crate::datadisk`]. With a disk attached, the firmware boots only the
    /// CD-ROM (`-boot order=d`): SeaBIOS would otherwise try the disk first,
    /// and an exFAT boot sector carries the boot signature but no boot code.
    pub data_disk: Option<PathBuf>,
    /// Further arguments, appended last.
    pub extra_args: Vec<String>,
}

impl Default for QemuOptions {
    fn default() -> Self {
        QemuOptions {
            smp: 2,
            memory: "512M".to_owned(),
            cpu: "EPYC".to_owned(),
            accel: Accel::Tcg,
            firmware: Firmware::Bios,
            debug_exit: true,
            no_nic: true,
            data_disk: None,
            extra_args: Vec::new(),
        }
    }
}

impl QemuOptions {
    /// The arguments for booting `iso`; UEFI firmware flash is given as `firmware`.
    pub fn args(&self, iso: &Path, firmware: Option<&FirmwareFiles>) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |words: &[&str]| args.extend(words.iter().map(OsString::from));
        push(&["-accel", self.accel.name(), "-cpu", &self.cpu]);
        push(&["-smp", &self.smp.to_string(), "-m", &self.memory]);
        match firmware {
            Some(FirmwareFiles::Flash { code, vars }) => {
                args.push("-drive".into());
                args.push(flash_drive(0, code, true));
                args.push("-drive".into());
                args.push(flash_drive(1, vars, false));
            }
            Some(FirmwareFiles::Bios(image)) => {
                args.push("-bios".into());
                args.push(image.into());
            }
            None => {}
        }
        args.push("-cdrom".into());
        args.push(iso.into());
        let mut push = |words: &[&str]| args.extend(words.iter().map(OsString::from));
        push(&["-serial", "stdio", "-display", "none", "-no-reboot"]);
        if self.debug_exit {
            push(&[
                "-device",
                &format!("isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04"),
            ]);
        }
        if self.no_nic {
            push(&["-nic", "none"]);
        }
        if let Some(disk) = &self.data_disk {
            push(&["-boot", "order=d", "-drive"]);
            args.push(data_drive(disk));
            let mut push = |words: &[&str]| args.extend(words.iter().map(OsString::from));
            push(&["-device", "virtio-blk-pci,drive=data"]);
        }
        args.extend(self.extra_args.iter().map(OsString::from));
        args
    }

    /// A QEMU command booting `iso`. For UEFI, a private copy of the OVMF
    /// variable store is made in `scratch`, which must outlive the QEMU process.
    pub fn command(&self, iso: &Path, scratch: &Path) -> Result<Command> {
        let firmware = match self.firmware {
            Firmware::Bios => None,
            Firmware::Uefi => Some(FirmwareFiles::prepare(scratch)?),
        };
        let mut cmd = Command::new(QEMU);
        cmd.args(self.args(iso, firmware.as_ref()));
        Ok(cmd)
    }
}

fn flash_drive(unit: u32, file: &Path, readonly: bool) -> OsString {
    let mut spec = OsString::from(format!("if=pflash,format=raw,unit={unit},"));
    if readonly {
        spec.push("readonly=on,");
    }
    // QEMU's option syntax doubles commas inside values.
    spec.push("file=");
    spec.push(file.to_string_lossy().replace(',', ",,"));
    spec
}

/// The `-drive` value of the data disk (legacy INTx interrupts left on).
fn data_drive(file: &Path) -> OsString {
    let mut spec = OsString::from("file=");
    spec.push(file.to_string_lossy().replace(',', ",,"));
    spec.push(",format=raw,if=none,id=data,cache=writeback");
    spec
}

/// UEFI firmware files for one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FirmwareFiles {
    /// Read-only code flash plus this run's writable copy of the variable store.
    Flash {
        /// Firmware code.
        code: PathBuf,
        /// This run's variable store.
        vars: PathBuf,
    },
    /// One image for `-bios`.
    Bios(PathBuf),
}

impl FirmwareFiles {
    /// Finds OVMF and copies its variable store into `scratch`.
    pub fn prepare(scratch: &Path) -> Result<Self> {
        match find_ovmf() {
            Some(Ovmf::Split { code, vars }) => {
                let copy = scratch.join("OVMF_VARS.fd");
                fs::copy(&vars, &copy).with_context(|| {
                    format!("could not copy {} to {}", vars.display(), copy.display())
                })?;
                Ok(FirmwareFiles::Flash { code, vars: copy })
            }
            Some(Ovmf::Combined(image)) => Ok(FirmwareFiles::Bios(image)),
            None => bail!(
                "no OVMF firmware ({OVMF_CODE} + {OVMF_VARS}, or {OVMF_COMBINED}); \
                 install the Debian package `ovmf`"
            ),
        }
    }
}

/// What a QEMU exit status means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel wrote this code to `isa-debug-exit`.
    Kernel(ExitCode),
    /// QEMU exited on its own with this status (0: guest power-off, or stopped by a signal it handles).
    Qemu(i32),
    /// QEMU was killed by a signal.
    Killed,
}

impl Outcome {
    /// Classifies QEMU's exit status.
    pub fn of(status: ExitStatus) -> Self {
        match status.code() {
            Some(code) => from_qemu_status(code).map_or(Outcome::Qemu(code), Outcome::Kernel),
            None => Outcome::Killed,
        }
    }

    /// The status `cargo image run` exits with: 0 success, 1 failure, 2 root fault,
    /// else QEMU's own status (1 if it was killed).
    pub fn tool_status(self) -> i32 {
        match self {
            Outcome::Kernel(ExitCode::Success) => 0,
            Outcome::Kernel(ExitCode::Failure) => 1,
            Outcome::Kernel(ExitCode::RootFault) => 2,
            Outcome::Qemu(code) => code,
            Outcome::Killed => 1,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Kernel(ExitCode::Success) => write!(f, "capvisor exited with Success"),
            Outcome::Kernel(ExitCode::Failure) => {
                write!(
                    f,
                    "capvisor exited with Failure (it refused to start or hit an error)"
                )
            }
            Outcome::Kernel(ExitCode::RootFault) => {
                write!(
                    f,
                    "capvisor exited with RootFault (the root partition was stopped)"
                )
            }
            Outcome::Qemu(0) => write!(
                f,
                "QEMU exited with status 0: the guest powered off (or QEMU was stopped) \
                 without writing an exit code"
            ),
            Outcome::Qemu(code) => write!(
                f,
                "QEMU exited with status {code}, which is not a capvisor exit code \
                 (QEMU itself failed, or the kernel wrote an unknown value)"
            ),
            Outcome::Killed => write!(f, "QEMU was killed by a signal"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn words(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn default_command_line_is_the_documented_one() {
        let args = QemuOptions::default().args(Path::new("/t/capvisor.iso"), None);
        assert_eq!(
            words(&args).join(" "),
            "-accel tcg -cpu EPYC -smp 2 -m 512M -cdrom /t/capvisor.iso -serial stdio \
             -display none -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04 -nic none"
        );
    }

    #[test]
    fn hand_boot_and_uefi_variants() {
        let options = QemuOptions {
            smp: 4,
            debug_exit: false,
            no_nic: false,
            extra_args: vec!["-icount".into(), "shift=0".into()],
            ..QemuOptions::default()
        };
        let flash = FirmwareFiles::Flash {
            code: "/fw/code.fd".into(),
            vars: "/s/v,x.fd".into(),
        };
        let args = words(&options.args(Path::new("a.iso"), Some(&flash)));
        assert_eq!(
            args.join(" "),
            "-accel tcg -cpu EPYC -smp 4 -m 512M \
             -drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/code.fd \
             -drive if=pflash,format=raw,unit=1,file=/s/v,,x.fd \
             -cdrom a.iso -serial stdio -display none -no-reboot -icount shift=0"
        );
    }

    #[test]
    fn the_data_disk_is_a_virtio_blk_pci_drive() {
        let options = QemuOptions {
            data_disk: Some("/t/a,b/data-disk.img".into()),
            extra_args: vec!["-S".into()],
            ..QemuOptions::default()
        };
        let args = words(&options.args(Path::new("c.iso"), None));
        assert_eq!(
            args.join(" "),
            "-accel tcg -cpu EPYC -smp 2 -m 512M -cdrom c.iso -serial stdio \
             -display none -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04 -nic none \
             -boot order=d \
             -drive file=/t/a,,b/data-disk.img,format=raw,if=none,id=data,cache=writeback \
             -device virtio-blk-pci,drive=data -S"
        );
        // One argument per value: the path's comma stays inside the -drive word.
        assert_eq!(
            args.iter().filter(|a| a.starts_with("file=")).count(),
            1,
            "{args:?}"
        );
    }

    #[test]
    fn exit_statuses_map_to_outcomes() {
        let status = |code: i32| ExitStatus::from_raw(code << 8);
        assert_eq!(Outcome::of(status(33)), Outcome::Kernel(ExitCode::Success));
        assert_eq!(Outcome::of(status(35)).tool_status(), 1);
        assert_eq!(Outcome::of(status(37)).tool_status(), 2);
        assert_eq!(Outcome::of(status(0)), Outcome::Qemu(0));
        assert_eq!(Outcome::of(status(3)).tool_status(), 3);
        assert_eq!(Outcome::of(ExitStatus::from_raw(9)), Outcome::Killed);
        assert!("kvm".parse::<Accel>().is_ok() && "hvf".parse::<Accel>().is_err());
    }
}
