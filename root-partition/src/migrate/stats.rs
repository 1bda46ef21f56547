//! What a migration did: one entry per pre-copy pass, the blackout, totals
//! and the outcome, printed as stable `migration: ` lines for the serial
//! console and as one line of JSON.
//!
//! # Invariants
//! Text lines start with `migration: ` followed by a fixed word (`pass`,
//! `stop`, `blackout`, `total`, `aborted`) and `key=value` fields whose
//! names never change; the JSON keys are documented in `docs/migration.md`.

use crate::migrate::engine::Phase;
use crate::migrate::policy::StopReason;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// One pre-copy pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassStats {
    /// Pass number (1 = the full copy).
    pub pass: u32,
    /// Pages sent (zero pages included).
    pub pages: u64,
    /// Stream bytes sent.
    pub bytes: u64,
    /// Time from the pass's start to the dirty fetch at its end.
    pub duration_ns: u64,
    /// Dirty pages found at the end of the pass (what the next pass, or the
    /// blackout, must send).
    pub dirty_pages: u64,
}

impl PassStats {
    /// Measured dirty rate: distinct pages dirtied per second of the pass.
    pub fn dirty_rate(&self) -> u64 {
        if self.duration_ns == 0 {
            return 0;
        }
        (u128::from(self.dirty_pages) * 1_000_000_000 / u128::from(self.duration_ns))
            .min(u128::from(u64::MAX)) as u64
    }
}

/// Why a migration was abandoned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortReason {
    /// [`crate::migrate::Control::proceed`] said no.
    Requested,
    /// The source failed (its error, formatted).
    Source(String),
    /// The transport failed (its error, formatted).
    Transport(String),
    /// The stream could not be encoded (a bug or an impossible source).
    Format(ipc::migration::FormatError),
}

impl fmt::Display for AbortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbortReason::Requested => f.write_str("requested"),
            AbortReason::Source(e) => write!(f, "source error: {e}"),
            AbortReason::Transport(e) => write!(f, "transport error: {e}"),
            AbortReason::Format(e) => write!(f, "format error: {e:?}"),
        }
    }
}

/// How the migration ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Outcome {
    /// Not finished yet.
    #[default]
    Running,
    /// The whole stream was sent; the source is paused, for the caller to
    /// destroy once the destination runs (or resume if it does not).
    Completed,
    /// Abandoned: the source runs again; the caller destroys the destination.
    Aborted {
        /// Where.
        phase: Phase,
        /// Why.
        reason: AbortReason,
    },
}

/// Everything measured during one migration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Guest memory in bytes (pages × 4096).
    pub memory_bytes: u64,
    /// The pre-copy passes.
    pub passes: Vec<PassStats>,
    /// Why pre-copy stopped (`None` if it never did).
    pub stop: Option<StopReason>,
    /// The blackout the policy predicted when it stopped.
    pub predicted_blackout_ns: u64,
    /// Pages sent while paused.
    pub blackout_pages: u64,
    /// Stream bytes sent while paused (pages, vCPUs, devices, `End`).
    pub blackout_bytes: u64,
    /// Time paused, from `pause` to the `End` record sent.
    pub blackout_ns: u64,
    /// The clock's tick count over the blackout (guest instructions under
    /// QEMU `-icount`, or TSC ticks; 0 if the clock has none).
    pub blackout_ticks: u64,
    /// Stream bytes in all.
    pub total_bytes: u64,
    /// Time from start to end (or abort).
    pub total_ns: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// The highest auto-converge throttle used (percent of time paused).
    pub throttle_percent: u8,
}

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

fn us(ns: u64) -> u64 {
    ns / 1_000
}

impl Stats {
    /// Total bytes over guest memory, in thousandths (1000 = one copy).
    pub fn ratio_milli(&self) -> u64 {
        if self.memory_bytes == 0 {
            return 0;
        }
        (u128::from(self.total_bytes) * 1000 / u128::from(self.memory_bytes))
            .min(u128::from(u64::MAX)) as u64
    }

    /// Writes the statistics as one line of JSON (no newline).
    pub fn write_json(&self, out: &mut impl fmt::Write) -> fmt::Result {
        write!(out, "{{\"memory_bytes\":{},\"passes\":[", self.memory_bytes)?;
        for (i, p) in self.passes.iter().enumerate() {
            if i > 0 {
                out.write_char(',')?;
            }
            write!(
                out,
                "{{\"pass\":{},\"pages\":{},\"bytes\":{},\"duration_ns\":{},\"dirty_pages\":{},\"dirty_rate_pages_per_s\":{}}}",
                p.pass,
                p.pages,
                p.bytes,
                p.duration_ns,
                p.dirty_pages,
                p.dirty_rate()
            )?;
        }
        out.write_str("],\"stop\":")?;
        match self.stop {
            Some(s) => write!(out, "\"{}\"", s.name())?,
            None => out.write_str("null")?,
        }
        write!(
            out,
            ",\"throttle_percent\":{},\"predicted_blackout_ns\":{},\"blackout_pages\":{},\"blackout_bytes\":{},\"blackout_ns\":{},\"blackout_ticks\":{},\"total_bytes\":{},\"total_ns\":{},\"outcome\":",
            self.throttle_percent,
            self.predicted_blackout_ns,
            self.blackout_pages,
            self.blackout_bytes,
            self.blackout_ns,
            self.blackout_ticks,
            self.total_bytes,
            self.total_ns
        )?;
        match &self.outcome {
            Outcome::Running => out.write_str("\"running\"")?,
            Outcome::Completed => out.write_str("\"completed\"")?,
            Outcome::Aborted { phase, reason } => {
                write!(out, "\"aborted\",\"phase\":\"{}\"", phase.name())?;
                if let Phase::Precopy { pass } = phase {
                    write!(out, ",\"pass\":{pass}")?;
                }
                out.write_str(",\"reason\":\"")?;
                let mut text = String::new();
                let _ = fmt::write(&mut text, format_args!("{reason}"));
                for c in text.chars() {
                    match c {
                        '"' => out.write_str("\\\"")?,
                        '\\' => out.write_str("\\\\")?,
                        c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32)?,
                        c => out.write_char(c)?,
                    }
                }
                out.write_char('"')?;
            }
        }
        out.write_char('}')
    }
}

/// The serial-console form: one `migration: pass N ...` line per pass, then
/// `stop`, `blackout` and `total` lines (or `aborted`).
impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.passes {
            writeln!(
                f,
                "migration: pass {} pages={} bytes={} ms={} dirty={} dirty_rate={}/s",
                p.pass,
                p.pages,
                p.bytes,
                ms(p.duration_ns),
                p.dirty_pages,
                p.dirty_rate()
            )?;
        }
        if let Some(s) = self.stop {
            writeln!(
                f,
                "migration: stop reason={} predicted_blackout_us={} throttle={}%",
                s.name(),
                us(self.predicted_blackout_ns),
                self.throttle_percent
            )?;
        }
        if self.outcome == Outcome::Completed {
            writeln!(
                f,
                "migration: blackout pages={} bytes={} us={} ticks={}",
                self.blackout_pages,
                self.blackout_bytes,
                us(self.blackout_ns),
                self.blackout_ticks
            )?;
        }
        if let Outcome::Aborted { phase, reason } = &self.outcome {
            writeln!(
                f,
                "migration: aborted phase={} reason={reason}",
                phase.name()
            )?;
        }
        let r = self.ratio_milli();
        write!(
            f,
            "migration: total bytes={} ratio={}.{:03} ms={} outcome={}",
            self.total_bytes,
            r / 1000,
            r % 1000,
            ms(self.total_ns),
            match self.outcome {
                Outcome::Running => "running",
                Outcome::Completed => "completed",
                Outcome::Aborted { .. } => "aborted",
            }
        )
    }
}
