//! Running one case: build (or reuse) the kernel binaries, make the case's ISO
//! in its own temporary directory, boot it in QEMU under the harness.

use std::sync::OnceLock;

use image::kernel::{self, Binaries};
use image::{iso, prereq, process};

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

/// Runs `case` against freshly built kernel binaries.
pub fn run(case: &Case) -> Result<Transcript, String> {
    let missing = prereq::missing(prereq::IMAGE_PACKAGES);
    if !missing.is_empty() {
        return Err(format!(
            "missing packages: {} (`cargo image test` installs them)",
            missing.join(" ")
        ));
    }
    run_with(case, &binaries()?)
}

/// Runs `case` booting `binaries`.
pub fn run_with(case: &Case, binaries: &Binaries) -> Result<Transcript, String> {
    let scratch = tempfile::Builder::new()
        .prefix(&format!("capvisor-{}-", case.name))
        .tempdir()
        .map_err(|error| format!("could not create a scratch directory: {error}"))?;
    let iso_path = scratch.path().join("capvisor.iso");
    iso::make(binaries, &case.cmdline, &iso_path).map_err(|error| format!("{error:#}"))?;
    let cmd = match case.backend {
        Backend::Svm => case.machine.command(&iso_path, scratch.path()),
        Backend::Vmx => BochsOptions {
            cpus: case.machine.smp,
            ..BochsOptions::default()
        }
        .command(&iso_path, scratch.path()),
    }
    .map_err(|error| format!("{error:#}"))?;
    let shown = process::display(&cmd);
    let transcript = harness::run(cmd, &case.markers, case.exit, case.limits)
        .map_err(|failure| format!("case {} failed\ncommand: {shown}\n{failure}", case.name))?;
    if let Some(line) = transcript
        .serial
        .iter()
        .find(|line| case.forbidden.iter().any(|f| line.contains(f.as_str())))
    {
        return Err(format!(
            "case {} failed\ncommand: {shown}\na forbidden line appeared: {line:?}\n--- serial ---\n{}",
            case.name,
            transcript.serial.join("\n")
        ));
    }
    Ok(transcript)
}
