//! `cargo image bench`: the null-hypercall round trip in instructions.
//!
//! Boots the ISO with `scenario=idle bench=hypercall` on one processor under
//! QEMU `-icount shift=0`, where the time-stamp counter advances by one per
//! instruction executed. The root partition reports the round trip as it
//! sees it (guest view: VMMCALL, the microkernel's path, VMRUN and the loop),
//! the microkernel reports its own path from #VMEXIT to the next VMRUN.
//! Both are counts that do not depend on the host machine's speed.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::qemu::QemuOptions;
use crate::{iso, kernel, prereq, process};

/// The kernel command line of the measurement.
pub const CMDLINE: &str = "scenario=idle bench=hypercall";
/// How long the measurement may take.
const LIMIT: Duration = Duration::from_secs(180);

/// Runs the measurement; prints the `bench:` lines and returns them.
pub fn hypercall() -> Result<Vec<String>> {
    prereq::ensure_image_prerequisites()?;
    let binaries = kernel::build()?;
    let scratch = tempfile::Builder::new()
        .prefix("capvisor-bench-")
        .tempdir()?;
    let iso_path = scratch.path().join("capvisor.iso");
    iso::make(&binaries, CMDLINE, &iso_path)?;
    let options = QemuOptions {
        smp: 1,
        extra_args: vec!["-icount".to_owned(), "shift=0".to_owned()],
        ..QemuOptions::default()
    };
    let mut cmd = options.command(&iso_path, scratch.path())?;
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null());
    let shown = process::display(&cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start {shown}"))?;
    let stdout = child.stdout.take().context("QEMU has no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
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
    std::thread::sleep(Duration::from_millis(100));
    while let Ok(line) = rx.try_recv() {
        lines.push(line);
    }
    let bench: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("bench: "))
        .cloned()
        .collect();
    if status.code() != Some(ipc::exit::ExitCode::Success.qemu_status()) || bench.len() < 2 {
        bail!(
            "the measurement failed ({status}); serial:\n{}",
            lines.join("\n")
        );
    }
    for line in &bench {
        println!("{}", line.trim_start_matches("[root] "));
    }
    Ok(bench)
}
