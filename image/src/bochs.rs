//! Booting the ISO on Bochs: Intel VMX with EPT, VPID and EPT A/D flags
//! (the `corei7_skylake_x` model; see PLATFORMS.md), headless.
//!
//! Bochs's Debian build has no `nogui` display: it gets the RFB display
//! (which never waits for a viewer), starts at its debugger prompt (answered
//! by an rc file with `c` and `quit`), writes COM1 to our stdout, and turns a
//! triple fault into a logged panic with a CPU dump. Its exit status is 1
//! even on success: callers decide by the serial console (the microkernel
//! prints `capvisor: run ended: ...` last and powers off through ACPI when
//! its command line holds `poweroff-on-exit`).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

/// The Bochs binary.
pub const BOCHS: &str = "bochs";

/// The Bochs machine to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BochsOptions {
    /// Processors.
    pub cpus: u32,
    /// RAM in MiB.
    pub megs: u32,
    /// CPU model (one with VMX, EPT, VPID and EPT A/D).
    pub model: String,
}

impl Default for BochsOptions {
    fn default() -> Self {
        BochsOptions {
            cpus: 2,
            megs: 512,
            model: "corei7_skylake_x".to_owned(),
        }
    }
}

impl BochsOptions {
    /// The bochsrc that boots `iso`, logging to `log`.
    pub fn config(&self, iso: &Path, log: &Path) -> String {
        let mut rc = String::new();
        let _ = writeln!(rc, "megs: {}", self.megs);
        let _ = writeln!(
            rc,
            "cpu: model={}, count={}, ips=100000000, reset_on_triple_fault=0",
            self.model, self.cpus
        );
        let _ = writeln!(rc, "romimage: file=/usr/share/bochs/BIOS-bochs-latest");
        let _ = writeln!(rc, "vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest");
        let _ = writeln!(
            rc,
            "ata0-master: type=cdrom, path={}, status=inserted",
            iso.display()
        );
        let _ = writeln!(rc, "boot: cdrom");
        let _ = writeln!(rc, "display_library: rfb, options=\"timeout=0\"");
        let _ = writeln!(rc, "com1: enabled=1, mode=file, dev=/dev/stdout");
        let _ = writeln!(rc, "speaker: enabled=0");
        // Keep Bochs away from the host's sound system: with ALSA and no
        // sound card its mixer thread aborts the emulator at start
        // (`*** buffer overflow detected ***`), as seen on a fresh machine.
        let _ = writeln!(
            rc,
            "sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy"
        );
        let _ = writeln!(rc, "log: {}", log.display());
        let _ = writeln!(rc, "panic: action=fatal");
        let _ = writeln!(rc, "error: action=report");
        let _ = writeln!(rc, "info: action=ignore");
        rc
    }

    /// The command that boots `iso`, with its files in `scratch`.
    pub fn command(&self, iso: &Path, scratch: &Path) -> Result<Command> {
        let rc = scratch.join("bochsrc");
        let script = scratch.join("bochs-commands");
        std::fs::write(&rc, self.config(iso, &scratch.join("bochs.log")))
            .with_context(|| format!("could not write {}", rc.display()))?;
        std::fs::write(&script, "c\nquit\n")
            .with_context(|| format!("could not write {}", script.display()))?;
        let mut cmd = Command::new(BOCHS);
        cmd.arg("-q").arg("-f").arg(&rc).arg("-rc").arg(&script);
        Ok(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_boots_the_iso_headless_with_serial_on_stdout() {
        let rc = BochsOptions {
            cpus: 2,
            ..BochsOptions::default()
        }
        .config(Path::new("/x/c.iso"), Path::new("/x/log"));
        assert!(rc.contains("cpu: model=corei7_skylake_x, count=2,"));
        assert!(rc.contains("path=/x/c.iso"));
        assert!(rc.contains("com1: enabled=1, mode=file, dev=/dev/stdout"));
        assert!(rc.contains("display_library: rfb"));
        assert!(rc.contains("reset_on_triple_fault=0"));
        assert!(
            rc.contains("sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy"),
            "Bochs must not touch the host's sound system"
        );
    }
}
