//! Booting an ISO interactively (`cargo image run`): the emulator gets the
//! terminal, its serial console is our stdout, and Ctrl-C stops it.
//!
//! # Invariants
//! Only the emulator process this module started is ever signalled, by its PID.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;

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

/// Ctrl-C presses seen (the handler only counts; the waiting loop acts).
static INTERRUPTS: AtomicU32 = AtomicU32::new(0);

fn on_interrupt() {
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
}

/// How a run that boots a node ends on Ctrl-C: the node is asked to shut
/// down (its VMs stopped, its volume flushed) and gets `grace` to power
/// off; a second Ctrl-C, or the time running out, stops the emulator.
pub struct Graceful {
    /// Asks the node to shut down (e.g. `capctl node shutdown --no-wait`).
    pub request: Box<dyn Fn() -> Result<()>>,
    /// How long the node has.
    pub grace: Duration,
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

/// Boots `iso` with the terminal's output and waits for the emulator to
/// end. With `graceful` the emulator runs in its own process group with no
/// input (Ctrl-C reaches only this process, which asks the node to shut
/// down); without it the first Ctrl-C stops the emulator.
pub fn boot(emulator: &Emulator, iso: &Path, graceful: Option<Graceful>) -> Result<Finished> {
    emulator.ensure_supported()?;
    let scratch = tempfile::Builder::new()
        .prefix("capvisor-run-")
        .tempdir()
        .context("could not create a scratch directory")?;
    let mut cmd = match emulator {
        Emulator::Qemu(options) => options.command(iso, scratch.path())?,
        Emulator::Bochs(options) => options.command(iso, scratch.path())?,
    };
    if graceful.is_some() {
        cmd.stdin(Stdio::null()).process_group(0);
    }
    eprintln!("+ {}", process::display(&cmd));
    ctrlc::set_handler(on_interrupt).context("could not install the Ctrl-C handler")?;
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{}`", process::display(&cmd)))?;
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
    let mut asked: Option<Instant> = None;
    let mut stopped = false;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .context("could not wait for the emulator")?
        {
            break status;
        }
        let presses = INTERRUPTS.load(Ordering::SeqCst);
        match (&graceful, asked) {
            _ if presses == 0 || stopped => {}
            (Some(g), None) => {
                eprintln!(
                    "interrupted (Ctrl-C): asking the node to shut down (its VMs stopped, its volume flushed); Ctrl-C again to stop QEMU at once"
                );
                if let Err(e) = (g.request)() {
                    eprintln!("the node could not be asked ({e:#}): stopping QEMU");
                    stopped = true;
                }
                asked = Some(Instant::now());
            }
            (Some(g), Some(at)) if presses < 2 && at.elapsed() < g.grace => {}
            _ => stopped = true,
        }
        if stopped {
            // SIGTERM, not SIGKILL: QEMU then restores the terminal it put in raw mode.
            // A failure means the process is already gone, which is what we wanted.
            let _ = kill(pid, Signal::SIGTERM);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Ok(Finished {
        outcome: Outcome::of(status),
        interrupted: INTERRUPTS.load(Ordering::SeqCst) > 0,
    })
}
