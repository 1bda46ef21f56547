//! The pre-copy engine: sends a running partition's memory pass after pass
//! with dirty logging, then pauses it and sends the rest with its vCPU and
//! device state, as one [`ipc::migration`] stream.
//!
//! Generic over where pages come from ([`Source`]: hypercalls on bare
//! metal, a fake or a model on the host), where bytes go ([`Transport`]),
//! time ([`Clock`]) and the operator ([`Control`]).
//!
//! # Invariants
//! - On `Err` the source is left as found: dirty logging off and, if the
//!   engine paused it, resumed. The caller destroys the destination.
//! - On `Ok` the stream ended with `End`, dirty logging is off and the
//!   source stays paused: the caller destroys it once the destination runs,
//!   or resumes it if the destination cannot start.
//! - Every page of `0..pages` is sent in pass 1, and every page dirtied
//!   after it was last read is sent again (by a later pass or in the
//!   blackout), so the destination ends with the paused source's memory.

use crate::migrate::policy::Policy;
use crate::migrate::stats::{AbortReason, Outcome, PassStats, Stats};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use ipc::migration::{
    DeviceKind, Encoder, Header, MAX_PAGES_PER_RECORD, MAX_RECORD, MAX_VCPU_STATE,
    PAGES_DATA_OFFSET, Record, pages_record_len,
};

/// Bytes in a guest page.
pub const PAGE: usize = 4096;
/// Bitmap words per `fetch_dirty` call: 32,768 pages, what one `DirtyFetch`
/// hypercall covers (one page of bitmap).
pub const DIRTY_WORDS_PER_CALL: usize = 512;
/// Pages sent between two [`Control::proceed`] calls.
pub const PAGES_PER_CONTROL: u64 = 1024;

/// The `device_states` callback's refusal: the engine failed to send (it
/// keeps its own error); the source should stop and return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Halt;

/// The `device_states` callback: (kind, instance, state bytes).
pub type DeviceOut<'a> = dyn FnMut(DeviceKind, u8, &[u8]) -> Result<(), Halt> + 'a;

/// The partition being migrated.
pub trait Source {
    /// The source's error.
    type Error: core::fmt::Debug;
    /// Guest pages: `0..pages`, page `n` at guest-physical `n * 4096`.
    fn pages(&self) -> u64;
    /// vCPUs.
    fn vcpus(&self) -> u16;
    /// Turns dirty-page logging on or off.
    fn log_dirty(&mut self, on: bool) -> Result<(), Self::Error>;
    /// Fetches and clears the dirty bits of pages `[first, first +
    /// bits.len() * 64)`: bit `n` of `bits[w]` is page `first + 64 * w + n`.
    /// `bits.len()` is at most [`DIRTY_WORDS_PER_CALL`]; bits past the last
    /// page are ignored.
    fn fetch_dirty(&mut self, first: u64, bits: &mut [u64]) -> Result<(), Self::Error>;
    /// Reads a page's contents.
    fn read_page(&mut self, page: u64, buf: &mut [u8; PAGE]) -> Result<(), Self::Error>;
    /// Stops every vCPU.
    fn pause(&mut self) -> Result<(), Self::Error>;
    /// Runs the vCPUs again (only after `pause`, when aborting).
    fn resume(&mut self) -> Result<(), Self::Error>;
    /// Writes vCPU `index`'s state (while paused) into `buf`
    /// ([`MAX_VCPU_STATE`] bytes); returns the bytes used (1 or more).
    fn vcpu_state(&mut self, index: u16, buf: &mut [u8]) -> Result<usize, Self::Error>;
    /// Hands every device's state (while paused) to `out` as (kind,
    /// instance, bytes). If `out` returns [`Halt`], stop and return.
    fn device_states(&mut self, out: &mut DeviceOut<'_>) -> Result<(), Self::Error>;
    /// Holds the vCPUs paused for `percent` % of the time from now on
    /// (auto-converge; 0: run freely). The engine sets 0 again before it
    /// pauses the child and when it aborts. Default: not supported, no-op.
    fn throttle(&mut self, percent: u8) -> Result<(), Self::Error> {
        let _ = percent;
        Ok(())
    }
}

/// Where the encoded stream goes.
pub trait Transport {
    /// The transport's error.
    type Error: core::fmt::Debug;
    /// Sends stream bytes (one whole record, or the header, per call).
    fn send(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
    /// `true` for a link model that needs only record sizes (the
    /// simulator): the engine then neither reads nor encodes page contents
    /// (so sees no zero page) and calls [`Transport::send_sized`] for each
    /// `Pages` record instead of `send`. Everything else is unchanged.
    fn sizes_only(&self) -> bool {
        false
    }
    /// Accounts for a `Pages` record of `len` bytes carrying `pages` pages
    /// (only called when [`Transport::sizes_only`]).
    fn send_sized(&mut self, len: usize, pages: u64) -> Result<(), Self::Error> {
        let _ = (len, pages);
        Ok(())
    }
}

/// Time.
pub trait Clock {
    /// Nanoseconds since any fixed point.
    fn now_ns(&mut self) -> u64;
    /// A finer count for the blackout (guest instructions under `-icount`,
    /// TSC ticks); 0 when there is none.
    fn ticks(&mut self) -> u64 {
        0
    }
}

/// Where the engine is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Header sent, dirty logging being turned on.
    Setup,
    /// Pre-copy pass `pass` (1 = the full copy) while the child runs.
    Precopy {
        /// Pass number.
        pass: u32,
    },
    /// The child is paused (or about to be): last pages, vCPUs, devices.
    Blackout,
    /// Everything is sent; only `End` remains (the last chance to abort).
    Handover,
}

impl Phase {
    /// Stable lower-case name (text and JSON).
    pub fn name(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Precopy { .. } => "precopy",
            Phase::Blackout => "blackout",
            Phase::Handover => "handover",
        }
    }
}

/// The operator: asked before each pass, every [`PAGES_PER_CONTROL`] pages,
/// before pausing, while paused and before `End`.
pub trait Control {
    /// `false` aborts the migration.
    fn proceed(&mut self, phase: Phase) -> bool;
}

/// A [`Control`] that never aborts.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAbort;

impl Control for NoAbort {
    fn proceed(&mut self, _: Phase) -> bool {
        true
    }
}

/// A failed migration: the source runs again (see the module invariants).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aborted {
    /// Where it failed.
    pub phase: Phase,
    /// Why.
    pub reason: AbortReason,
    /// If turning dirty logging off or resuming the source failed too.
    pub cleanup_error: Option<String>,
    /// What was measured until then (`outcome` is `Aborted`).
    pub stats: Box<Stats>,
}

/// Migrates `src` into `t` as a live stream named `name` (see the module
/// doc). Returns the statistics, or [`Aborted`] with the source running.
pub fn migrate<S: Source, T: Transport, C: Clock, K: Control>(
    src: &mut S,
    t: &mut T,
    clock: &mut C,
    ctl: &mut K,
    policy: &Policy,
    name: &str,
) -> Result<Stats, Aborted> {
    migrate_with_flags(src, t, clock, ctl, policy, name, 0)
}

/// [`migrate`] with header flags (e.g.
/// [`FLAG_SAVED_STATE`](ipc::migration::FLAG_SAVED_STATE) when the stream
/// goes to a saved-state file rather than another node).
pub fn migrate_with_flags<S: Source, T: Transport, C: Clock, K: Control>(
    src: &mut S,
    t: &mut T,
    clock: &mut C,
    ctl: &mut K,
    policy: &Policy,
    name: &str,
    flags: u16,
) -> Result<Stats, Aborted> {
    let start = clock.now_ns();
    let pages = src.pages();
    let mut run = Run {
        src,
        t,
        clock,
        ctl,
        policy,
        enc: Encoder::new(),
        buf: vec![0u8; MAX_RECORD],
        dirty: Vec::new(),
        pages,
        phase: Phase::Setup,
        paused: false,
        logging: false,
        stats: Stats {
            memory_bytes: pages.saturating_mul(PAGE as u64),
            ..Stats::default()
        },
        sent_pages: 0,
        throttle: 0,
        since_control: 0,
        batch_first: 0,
        batch_n: 0,
        zero_first: 0,
        zero_n: 0,
    };
    let result = run.go(name, flags);
    let now = run.clock.now_ns();
    run.stats.total_ns = now.saturating_sub(start);
    match result {
        Ok(()) => {
            run.stats.outcome = Outcome::Completed;
            Ok(run.stats)
        }
        Err(reason) => {
            let mut cleanup_error = None;
            if run.throttle != 0
                && let Err(e) = run.src.throttle(0)
            {
                cleanup_error = Some(format!("throttle off: {e:?}"));
            }
            if run.logging
                && let Err(e) = run.src.log_dirty(false)
            {
                cleanup_error = Some(format!("dirty log off: {e:?}"));
            }
            if run.paused
                && let Err(e) = run.src.resume()
            {
                cleanup_error = Some(format!("resume: {e:?}"));
            }
            run.stats.outcome = Outcome::Aborted {
                phase: run.phase,
                reason: reason.clone(),
            };
            Err(Aborted {
                phase: run.phase,
                reason,
                cleanup_error,
                stats: Box::new(run.stats),
            })
        }
    }
}

struct Run<'a, S, T, C, K> {
    src: &'a mut S,
    t: &'a mut T,
    clock: &'a mut C,
    ctl: &'a mut K,
    policy: &'a Policy,
    enc: Encoder,
    /// One record: pages are read straight into it.
    buf: Vec<u8>,
    /// Pages to send next (bit n of word w = page 64w + n).
    dirty: Vec<u64>,
    pages: u64,
    phase: Phase,
    paused: bool,
    logging: bool,
    stats: Stats,
    sent_pages: u64,
    /// The auto-converge throttle in force (percent).
    throttle: u8,
    since_control: u64,
    /// Pages of the `Pages` record being built.
    batch_first: u64,
    batch_n: usize,
    /// The run of zero pages being built.
    zero_first: u64,
    zero_n: u64,
}

fn src_err<E: core::fmt::Debug>(e: E) -> AbortReason {
    AbortReason::Source(format!("{e:?}"))
}

fn t_err<E: core::fmt::Debug>(e: E) -> AbortReason {
    AbortReason::Transport(format!("{e:?}"))
}

impl<S: Source, T: Transport, C: Clock, K: Control> Run<'_, S, T, C, K> {
    fn check(&mut self) -> Result<(), AbortReason> {
        if self.ctl.proceed(self.phase) {
            Ok(())
        } else {
            Err(AbortReason::Requested)
        }
    }

    fn send_buf(&mut self, n: usize) -> Result<(), AbortReason> {
        self.t.send(&self.buf[..n]).map_err(t_err)?;
        self.stats.total_bytes += n as u64;
        Ok(())
    }

    fn send_record(&mut self, r: &Record<'_>) -> Result<(), AbortReason> {
        let n = self
            .enc
            .record(r, &mut self.buf)
            .map_err(AbortReason::Format)?;
        self.sent_pages += r.pages();
        self.send_buf(n)
    }

    fn go(&mut self, name: &str, flags: u16) -> Result<(), AbortReason> {
        self.check()?;
        let h = Header::new(self.pages, self.src.vcpus(), flags, name);
        let n = self
            .enc
            .header(&h, &mut self.buf)
            .map_err(AbortReason::Format)?;
        self.send_buf(n)?;
        self.src.log_dirty(true).map_err(src_err)?;
        self.logging = true;

        // Pass 1 sends every page: start from a full bitmap.
        let words = self.pages.div_ceil(64) as usize;
        self.dirty = vec![u64::MAX; words];
        self.mask_tail();
        let mut pass = 1u32;
        loop {
            self.phase = Phase::Precopy { pass };
            self.check()?;
            let t0 = self.clock.now_ns();
            let (p0, b0) = (self.sent_pages, self.stats.total_bytes);
            self.send_record(&Record::PassMark {
                pass: pass.min(u32::from(u16::MAX)) as u16,
            })?;
            self.send_dirty()?;
            self.dirty.iter_mut().for_each(|w| *w = 0);
            let dirty_pages = self.fetch_all()?;
            let t1 = self.clock.now_ns();
            self.stats.passes.push(PassStats {
                pass,
                pages: self.sent_pages - p0,
                bytes: self.stats.total_bytes - b0,
                duration_ns: t1.saturating_sub(t0),
                dirty_pages,
            });
            let d = self.policy.decide(&self.stats.passes);
            if let Some(stop) = d.stop {
                self.stats.stop = Some(stop);
                self.stats.predicted_blackout_ns = d.predicted_blackout_ns;
                break;
            }
            let throttle = self.policy.throttle(&self.stats.passes, self.throttle);
            if throttle != self.throttle {
                self.src.throttle(throttle).map_err(src_err)?;
                self.throttle = throttle;
                self.stats.throttle_percent = self.stats.throttle_percent.max(throttle);
            }
            pass += 1;
        }
        if self.throttle != 0 {
            self.src.throttle(0).map_err(src_err)?;
            self.throttle = 0;
        }

        self.phase = Phase::Blackout;
        self.check()?;
        let (b0, k0) = (self.clock.now_ns(), self.clock.ticks());
        let (p0, bytes0) = (self.sent_pages, self.stats.total_bytes);
        self.src.pause().map_err(src_err)?;
        self.paused = true;
        self.check()?;
        self.fetch_all()?;
        self.src.log_dirty(false).map_err(src_err)?;
        self.logging = false;
        self.send_dirty()?;
        let mut state = vec![0u8; MAX_VCPU_STATE];
        for index in 0..self.src.vcpus() {
            let n = self.src.vcpu_state(index, &mut state).map_err(src_err)?;
            let bytes = state
                .get(..n)
                .ok_or_else(|| AbortReason::Source(format!("vCPU {index} state of {n} bytes")))?;
            self.send_record(&Record::Vcpu {
                index,
                state: bytes,
            })?;
        }
        self.check()?;
        let mut failed = None;
        let mut src_result = Ok(());
        {
            let Run {
                src,
                enc,
                t,
                buf,
                stats,
                ..
            } = self;
            let mut out = |kind: DeviceKind, instance: u8, bytes: &[u8]| {
                let r = Record::Device {
                    kind,
                    instance,
                    state: bytes,
                };
                let sent = enc
                    .record(&r, buf)
                    .map_err(AbortReason::Format)
                    .and_then(|n| {
                        t.send(&buf[..n]).map_err(t_err)?;
                        stats.total_bytes += n as u64;
                        Ok(())
                    });
                sent.map_err(|e| {
                    failed = Some(e);
                    Halt
                })
            };
            if let Err(e) = src.device_states(&mut out) {
                src_result = Err(src_err(e));
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        src_result?;
        self.phase = Phase::Handover;
        self.check()?;
        let n = self.enc.end(&mut self.buf).map_err(AbortReason::Format)?;
        self.send_buf(n)?;
        self.stats.blackout_ns = self.clock.now_ns().saturating_sub(b0);
        self.stats.blackout_ticks = self.clock.ticks().saturating_sub(k0);
        self.stats.blackout_pages = self.sent_pages - p0;
        self.stats.blackout_bytes = self.stats.total_bytes - bytes0;
        Ok(())
    }

    /// Clears bitmap bits past the last page.
    fn mask_tail(&mut self) {
        let rem = self.pages % 64;
        if rem != 0
            && let Some(last) = self.dirty.last_mut()
        {
            *last &= (1u64 << rem) - 1;
        }
    }

    /// Fetches (and clears) the source's dirty bits into the bitmap (OR);
    /// returns how many pages the bitmap now marks.
    fn fetch_all(&mut self) -> Result<u64, AbortReason> {
        let mut tmp = [0u64; DIRTY_WORDS_PER_CALL];
        for (i, chunk) in self.dirty.chunks_mut(DIRTY_WORDS_PER_CALL).enumerate() {
            let bits = &mut tmp[..chunk.len()];
            bits.iter_mut().for_each(|w| *w = 0);
            let first = (i * DIRTY_WORDS_PER_CALL * 64) as u64;
            self.src.fetch_dirty(first, bits).map_err(src_err)?;
            chunk.iter_mut().zip(bits.iter()).for_each(|(d, b)| *d |= b);
        }
        self.mask_tail();
        Ok(self.dirty.iter().map(|w| u64::from(w.count_ones())).sum())
    }

    /// Sends every page the bitmap marks and clears it.
    fn send_dirty(&mut self) -> Result<(), AbortReason> {
        let sized = self.t.sizes_only();
        for w in 0..self.dirty.len() {
            let mut bits = core::mem::take(&mut self.dirty[w]);
            while bits != 0 {
                let start = bits.trailing_zeros();
                let run = (bits >> start).trailing_ones();
                bits &= if start + run >= 64 {
                    0
                } else {
                    !(((1u64 << run) - 1) << start)
                };
                let first = w as u64 * 64 + u64::from(start);
                if sized {
                    self.sized_run(first, u64::from(run))?;
                } else {
                    for page in first..first + u64::from(run) {
                        self.page(page)?;
                    }
                }
            }
        }
        self.flush_batch()?;
        self.flush_zero()
    }

    fn control_every(&mut self, pages: u64) -> Result<(), AbortReason> {
        self.since_control += pages;
        if self.since_control >= PAGES_PER_CONTROL {
            self.since_control = 0;
            self.check()?;
        }
        Ok(())
    }

    /// Adds a run of pages to the batch without reading them (sizes only).
    fn sized_run(&mut self, mut first: u64, mut n: u64) -> Result<(), AbortReason> {
        while n > 0 {
            if self.batch_n > 0 && self.batch_first + self.batch_n as u64 != first {
                self.flush_batch()?;
            }
            if self.batch_n == 0 {
                self.batch_first = first;
            }
            let take = ((MAX_PAGES_PER_RECORD - self.batch_n) as u64).min(n);
            self.batch_n += take as usize;
            first += take;
            n -= take;
            self.control_every(take)?;
            if self.batch_n == MAX_PAGES_PER_RECORD {
                self.flush_batch()?;
            }
        }
        Ok(())
    }

    /// Reads one page into the batch (or the zero run).
    fn page(&mut self, page: u64) -> Result<(), AbortReason> {
        self.control_every(1)?;
        if self.batch_n > 0
            && (self.batch_n == MAX_PAGES_PER_RECORD
                || self.batch_first + self.batch_n as u64 != page)
        {
            self.flush_batch()?;
        }
        let at = PAGES_DATA_OFFSET + self.batch_n * PAGE;
        let slot: &mut [u8; PAGE] = self
            .buf
            .get_mut(at..at + PAGE)
            .and_then(|s| s.try_into().ok())
            .ok_or(AbortReason::Format(
                ipc::migration::FormatError::BufferTooSmall { need: at + PAGE },
            ))?;
        self.src.read_page(page, slot).map_err(src_err)?;
        if slot.iter().all(|&b| b == 0) {
            if self.zero_n > 0 && self.zero_first + self.zero_n == page {
                self.zero_n += 1;
            } else {
                self.flush_zero()?;
                self.zero_first = page;
                self.zero_n = 1;
            }
        } else {
            if self.batch_n == 0 {
                self.batch_first = page;
            }
            self.batch_n += 1;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<(), AbortReason> {
        let count = self.batch_n;
        if count == 0 {
            return Ok(());
        }
        self.batch_n = 0;
        if self.t.sizes_only() {
            let len = pages_record_len(count);
            self.t.send_sized(len, count as u64).map_err(t_err)?;
            self.stats.total_bytes += len as u64;
        } else {
            let n = self
                .enc
                .pages_in_place(self.batch_first, count as u16, &mut self.buf)
                .map_err(AbortReason::Format)?;
            self.send_buf(n)?;
        }
        self.sent_pages += count as u64;
        Ok(())
    }

    fn flush_zero(&mut self) -> Result<(), AbortReason> {
        if self.zero_n == 0 {
            return Ok(());
        }
        let r = Record::ZeroPages {
            first_page: self.zero_first,
            count: self.zero_n,
        };
        self.zero_n = 0;
        // Encode after the batch's page slots so pending pages survive.
        let mut small = [0u8; 32];
        let n = self
            .enc
            .record(&r, &mut small)
            .map_err(AbortReason::Format)?;
        self.t.send(&small[..n]).map_err(t_err)?;
        self.stats.total_bytes += n as u64;
        self.sent_pages += r.pages();
        Ok(())
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
