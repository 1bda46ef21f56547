//! Booting an ISO interactively (`cargo image run`): the emulator gets the
//! terminal, its serial console is our stdout, and Ctrl-C stops it.
//!
//! # Invariants
//! Only the emulator process this module started is ever signalled, by its PID.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::process;
use crate::qemu::{Outcome, QemuOptions};

/// An emulator that can boot the ISO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Emulator {
    /// QEMU: AMD SVM + NPT under TCG (or KVM where the host nests).
    Qemu(QemuOptions),
    /// Bochs: Intel VMX + EPT.
    Bochs(crate::bochs::BochsOptions),
}

/// How an interactive run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    /// What the exit status means.
    pub outcome: Outcome,
    /// Whether Ctrl-C stopped the run.
    pub interrupted: bool,
}

/// PID of the running emulator (0 when none), for the Ctrl-C handler.
static CHILD_PID: AtomicI32 = AtomicI32::new(0);
/// Set by the Ctrl-C handler.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn on_interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
    let pid = CHILD_PID.load(Ordering::SeqCst);
    if pid > 0 {
        // SIGTERM, not SIGKILL: QEMU then restores the terminal it put in raw mode.
        // A failure means the process is already gone, which is what we wanted.
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

impl Emulator {
    /// An error unless this emulator can boot capvisor yet (checked before building anything).
    pub fn ensure_supported(&self) -> Result<()> {
        match self {
            Emulator::Qemu(_) => Ok(()),
            Emulator::Bochs(_) => crate::prereq::ensure_packages(crate::prereq::BOCHS_PACKAGES),
        }
    }
}

/// Boots `iso` with inherited stdio and waits for the emulator to end.
pub fn boot(emulator: &Emulator, iso: &Path) -> Result<Finished> {
    emulator.ensure_supported()?;
    let scratch = tempfile::Builder::new()
        .prefix("capvisor-run-")
        .tempdir()
        .context("could not create a scratch directory")?;
    let mut cmd = match emulator {
        Emulator::Qemu(options) => options.command(iso, scratch.path())?,
        Emulator::Bochs(options) => options.command(iso, scratch.path())?,
    };
    eprintln!("+ {}", process::display(&cmd));
    ctrlc::set_handler(on_interrupt).context("could not install the Ctrl-C handler")?;
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{}`", process::display(&cmd)))?;
    CHILD_PID.store(i32::try_from(child.id()).unwrap_or(0), Ordering::SeqCst);
    let status = child.wait().context("could not wait for QEMU");
    CHILD_PID.store(0, Ordering::SeqCst);
    let status = status?;
    Ok(Finished {
        outcome: Outcome::of(status),
        interrupted: INTERRUPTED.load(Ordering::SeqCst),
    })
}
