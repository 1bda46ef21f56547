//! Running one case: build (or reuse) the kernel binaries, make each boot's
//! ISO in the case's own temporary directory, boot them in QEMU in turn under
//! the harness (on the case's own copy of the data disk, if it has one), then
//! run the case's host check on that disk.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use image::datadisk;
use image::kernel::{self, Binaries};
use image::{iso, paths, prereq, process};

use crate::cases::{Backend, Case};
use crate::harness::{self, Transcript};
use image::bochs::BochsOptions;

/// The kernel binaries, built once per process.
pub fn binaries() -> Result<Binaries, String> {
    static BUILT: OnceLock<Result<Binaries, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| kernel::build().map_err(|error| format!("{error:#}")))
        .clone()
}

/// The master data disk, built once per process (`target/qemu-tests/data-disk.img`,
/// replaced atomically, so parallel test processes never see half of one).
/// Cases never boot it: each gets a copy ([`data_disk_copy`]).
pub fn data_disk_master() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let path = paths::target_dir().join("qemu-tests").join("data-disk.img");
            datadisk::build(&path)
                .map(|disk| disk.path)
                .map_err(|error| format!("could not build the data disk: {error:#}"))
        })
        .clone()
}

/// A fresh copy of the master data disk in `dir` (sparse), for one case run.
pub fn data_disk_copy(dir: &Path) -> Result<PathBuf, String> {
    let master = data_disk_master()?;
    let copy = dir.join("data-disk.img");
    datadisk::sparse_copy(&master, &copy)
        .map_err(|error| format!("could not copy the data disk: {error:#}"))?;
    Ok(copy)
}

/// Reads `len` bytes at virtual offset `offset` of VHD file `vhd` (e.g.
/// `image::datadisk::ALPHA`) on the data disk `disk`, through the capctl
/// binary (`capctl vol get`, then `capctl disk read`): for host checks.
pub fn read_vhd(disk: &Path, vhd: &str, offset: u64, len: u64) -> Result<Vec<u8>, String> {
    datadisk::read_vhd(disk, vhd, offset, len).map_err(|error| format!("{error:#}"))
}

/// Runs `case` against freshly built kernel binaries.
pub fn run(case: &Case) -> Result<Vec<Transcript>, String> {
    let missing = prereq::missing(prereq::IMAGE_PACKAGES);
    if !missing.is_empty() {
        return Err(format!(
            "missing packages: {} (`cargo image test` installs them)",
            missing.join(" ")
        ));
    }
    run_with(case, &binaries()?)
}

/// Runs `case` booting `binaries`: one transcript per boot.
pub fn run_with(case: &Case, binaries: &Binaries) -> Result<Vec<Transcript>, String> {
    let scratch = tempfile::Builder::new()
        .prefix(&format!("capvisor-{}-", case.name))
        .tempdir()
        .map_err(|error| format!("could not create a scratch directory: {error}"))?;
    let mut machine = case.machine.clone();
    if case.data_disk {
        if case.backend == Backend::Vmx {
            return Err(format!(
                "case {}: Bochs (VMX) cannot attach the data disk yet",
                case.name
            ));
        }
        machine.data_disk = Some(data_disk_copy(scratch.path())?);
    }
    if let (Some(prepare), Some(disk)) = (case.prepare, machine.data_disk.as_deref()) {
        (prepare.check)(disk).map_err(|e| {
            format!(
                "case {}: preparing the data disk ({}): {e}",
                case.name, prepare.name
            )
        })?;
    }
    // A host client: a free port forwarded to the guest service, and the
    // client started now (it retries until the service listens).
    let mut client = None;
    if let Some(host) = case.host_client {
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|error| format!("no free host port: {error}"))
        };
        let port = free_port()?;
        let mut ports = crate::cases::Ports {
            port,
            uplink: 0,
            data_disk: machine.data_disk.clone(),
        };
        if let Some(uplink) = host.uplink {
            ports.uplink = free_port()?;
            machine.extra_args.extend([
                "-netdev".to_owned(),
                format!("user,id=up,hostfwd=tcp:127.0.0.1:{}-{uplink}", ports.uplink),
                "-device".to_owned(),
                "virtio-net-pci,netdev=up,romfile=".to_owned(),
            ]);
        }
        machine.extra_args.extend([
            "-netdev".to_owned(),
            format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-{}", host.guest),
            "-device".to_owned(),
            "virtio-net-pci,netdev=n0,romfile=".to_owned(),
        ]);
        client = Some((host.name, std::thread::spawn(move || (host.run)(ports))));
    }
    let boots = case.boots();
    let mut transcripts = Vec::new();
    for (index, boot) in boots.iter().enumerate() {
        let which = if boots.len() > 1 {
            format!(
                "case {} failed (boot {} of {})",
                case.name,
                index + 1,
                boots.len()
            )
        } else {
            format!("case {} failed", case.name)
        };
        let iso_path = scratch.path().join(format!("capvisor-{}.iso", index + 1));
        iso::make(binaries, &boot.cmdline, &iso_path)
            .map_err(|error| format!("{which}\n{error:#}"))?;
        let cmd = match case.backend {
            Backend::Svm => machine.command(&iso_path, scratch.path()),
            Backend::Vmx => BochsOptions {
                cpus: machine.smp,
                ..BochsOptions::default()
            }
            .command(&iso_path, scratch.path()),
        }
        .map_err(|error| format!("{error:#}"))?;
        let shown = process::display(&cmd);
        let transcript = harness::run(cmd, &boot.markers, boot.exit, case.limits)
            .map_err(|failure| format!("{which}\ncommand: {shown}\n{failure}"))?;
        if let Some(line) = transcript
            .serial
            .iter()
            .find(|line| case.forbidden.iter().any(|f| line.contains(f.as_str())))
        {
            return Err(format!(
                "{which}\ncommand: {shown}\na forbidden line appeared: {line:?}\n--- serial ---\n{}",
                transcript.serial.join("\n")
            ));
        }
        transcripts.push(transcript);
    }
    if let Some((name, thread)) = client {
        match thread.join() {
            // What the client saw: figures for the test's output.
            Ok(Ok(saw)) => eprintln!("host client {name}: {saw}"),
            Ok(Err(error)) => {
                return Err(format!(
                    "case {} failed: host client {name}: {error}",
                    case.name
                ));
            }
            Err(_) => return Err(format!("case {}: host client {name} panicked", case.name)),
        }
    }
    if let (Some(check), Some(first)) = (case.transcript_check, transcripts.first()) {
        (check.check)(&first.serial).map_err(|error| {
            format!(
                "case {} failed: check {} of the serial output: {error}\n--- serial ---\n{}",
                case.name,
                check.name,
                first.serial.join("\n")
            )
        })?;
    }
    if let Some(check) = case.host_check {
        let disk = machine.data_disk.as_deref().ok_or_else(|| {
            format!(
                "case {}: host check {} without a data disk",
                case.name, check.name
            )
        })?;
        (check.check)(disk).map_err(|error| {
            format!(
                "case {} failed: host check {} of the data disk after the last boot: {error}",
                case.name, check.name
            )
        })?;
    }
    Ok(transcripts)
}

/// `capctl vol check` of the data disk `disk`: an error with capctl's report unless clean.
pub fn check_volume(disk: &Path) -> Result<(), String> {
    datadisk::run_capctl(&["vol".as_ref(), "check".as_ref(), disk.as_os_str()])
        .map(|_| ())
        .map_err(|error| format!("{error:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::{Script, case, machine, on_vmx};
    use crate::harness::ExpectedExit;
    use image::qemu::Firmware;
    use ipc::exit::ExitCode;

    #[test]
    fn bochs_cases_cannot_have_a_data_disk() {
        let svm = case(
            "disk",
            machine(1, "EPYC", Firmware::Bios, true),
            "",
            Script::PowerOff(1),
            ExpectedExit::Kernel(ExitCode::Success),
        )
        .with_data_disk();
        let binaries = kernel::binaries();
        let error = run_with(&on_vmx(&svm, ExitCode::Success), &binaries)
            .expect_err("Bochs has no virtio-blk");
        assert!(error.contains("cannot attach the data disk"), "{error}");
    }

    #[test]
    fn each_copy_is_fresh_and_sparse() {
        use std::os::unix::fs::MetadataExt;
        let (a, b) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
        );
        let first = data_disk_copy(a.path()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&first, b"scribbled").expect("scribble");
        let second = data_disk_copy(b.path()).unwrap_or_else(|e| panic!("{e}"));
        let meta = std::fs::metadata(&second).expect("meta");
        assert_eq!(meta.len(), datadisk::SIZE);
        assert!(
            meta.blocks() * 512 < 96 << 20,
            "{} bytes",
            meta.blocks() * 512
        );
        let data = read_vhd(&second, datadisk::BASE, 0, 4096).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            data.iter()
                .enumerate()
                .all(|(i, &b)| b == ipc::workload::base_pattern_byte(i as u64))
        );
    }
}
