//! `cargo image bench`: the null-hypercall round trip in instructions, on
//! both backends.
//!
//! Boots the ISO with `scenario=idle bench=hypercall` on one processor: AMD
//! SVM under QEMU `-icount shift=0`, Intel VMX under Bochs; on both the
//! time-stamp counter advances by one per instruction executed. The root
//! partition reports the round trip as it sees it (guest view: the call
//! instruction, the microkernel's path, the VM entry and the loop), the
//! microkernel reports its own path from the VM exit to the next VM entry.
//! Both are counts that do not depend on the host machine's speed.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bochs::BochsOptions;
use crate::kernel::Binaries;
use crate::qemu::QemuOptions;
use crate::{iso, kernel, prereq, process};

/// The kernel command line of the measurement.
pub const CMDLINE: &str = "scenario=idle bench=hypercall";
/// How long one measurement may take.
const LIMIT: Duration = Duration::from_secs(300);

/// Runs the measurement on both backends; prints and returns the `bench:`
/// lines, each prefixed with its backend (`svm:`, `vmx:`).
pub fn hypercall() -> Result<Vec<String>> {
    prereq::ensure_image_prerequisites()?;
    prereq::ensure_packages(prereq::BOCHS_PACKAGES)?;
    let binaries = kernel::build()?;
    let mut lines = run_one("svm", &binaries, false)?;
    lines.extend(run_one("vmx", &binaries, true)?);
    Ok(lines)
}

fn run_one(backend: &str, binaries: &Binaries, bochs: bool) -> Result<Vec<String>> {
    let scratch = tempfile::Builder::new()
        .prefix("capvisor-bench-")
        .tempdir()?;
    let iso_path = scratch.path().join("capvisor.iso");
    let cmdline = if bochs {
        format!("{CMDLINE} {}", ipc::markers::POWEROFF_ON_EXIT)
    } else {
        CMDLINE.to_owned()
    };
    iso::make(binaries, &cmdline, &iso_path)?;
    let mut cmd = if bochs {
        BochsOptions {
            cpus: 1,
            ..Default::default()
        }
        .command(&iso_path, scratch.path())?
    } else {
        let options = QemuOptions {
            smp: 1,
            extra_args: vec!["-icount".to_owned(), "shift=0".to_owned()],
            ..QemuOptions::default()
        };
        options.command(&iso_path, scratch.path())?
    };
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null());
    let shown = process::display(&cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start {shown}"))?;
    let stdout = child.stdout.take().context("the emulator has no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    let deadline = Instant::now() + LIMIT;
    let mut lines = Vec::new();
    let status = loop {
        while let Ok(line) = rx.try_recv() {
            lines.push(line);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`{shown}` did not finish within {LIMIT:?}; serial:\n{}",
                lines.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(200));
    while let Ok(line) = rx.try_recv() {
        lines.push(line);
    }
    let bench: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("bench: "))
        .map(|l| {
            format!(
                "{backend}: {}",
                l[l.find("bench: ").unwrap_or(0)..].trim_end_matches('\r')
            )
        })
        .collect();
    let success = ipc::markers::RunEnded(ipc::exit::ExitCode::Success).to_string();
    let ended = lines.iter().any(|l| l.contains(&success));
    // Bochs exits with 1 whatever happened; QEMU with the kernel's code.
    let status_ok = bochs || status.code() == Some(ipc::exit::ExitCode::Success.qemu_status());
    if !ended || !status_ok || bench.len() < 2 {
        bail!(
            "the {backend} measurement failed ({status}); serial:\n{}",
            lines.join("\n")
        );
    }
    for line in &bench {
        println!("{line}");
    }
    Ok(bench)
}
