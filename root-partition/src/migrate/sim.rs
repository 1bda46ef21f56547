//! The migration simulator: a [`Model`] of a child and a link, driving the
//! same [`migrate`] the root partition runs, on a simulated clock.
//!
//! # The model
//! - Time advances only when the engine sends: a record of `b` bytes
//!   carrying `p` pages costs `b / link_bytes_per_s + p * per_page_ns`
//!   (wire time plus the root's per-page work, serialised). Dirty fetches,
//!   pausing and state records of no page cost only their wire time.
//! - While the child runs with dirty logging on, it makes
//!   `dirty_rate_pages_per_s` page writes per second, each to a uniformly
//!   random page of a working set of `working_set_pages` pages spread
//!   evenly over memory. After `n` writes a clean working-set page is still
//!   clean with probability `(1 - 1/W)^n`, so the dirty count moves to
//!   `W - (W - d) * (1 - 1/W)^n` (the expected value, rounded; for large `W`
//!   this is the saturation `W * (1 - e^(-n/W))`). The power is computed by
//!   squaring, so the model needs no `exp` and builds without `std`.
//!   Which pages become dirty is deterministic: a cursor walks the working
//!   set and marks the next clean pages.
//! - The model has no page contents and no zero pages: the link only
//!   measures sizes ([`Transport::sizes_only`]), so a 64 GiB child costs a
//!   bitmap of 2 MiB and no page data.
//!
//! # Invariants
//! Dirty pages always lie in the working set; writes stop while paused.

use crate::migrate::engine::{
    Aborted, Clock, DeviceOut, NoAbort, PAGE, Source, Transport, migrate,
};
use crate::migrate::policy::Policy;
use crate::migrate::stats::Stats;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use ipc::migration::{DeviceKind, VCPU_STATE_BYTES};

/// A child and a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Model {
    /// Guest memory in bytes (rounded down to whole pages).
    pub memory_bytes: u64,
    /// Page writes per second while running.
    pub dirty_rate_pages_per_s: u64,
    /// Pages the writes go to (clamped to the memory's pages).
    pub working_set_pages: u64,
    /// Link bandwidth in bytes per second.
    pub link_bytes_per_s: u64,
    /// The root's cost per page sent (read, copy, checksum), in ns.
    pub per_page_ns: u64,
    /// vCPUs (their states are sent in the blackout).
    pub vcpus: u16,
}

impl Model {
    /// Guest pages.
    pub fn pages(&self) -> u64 {
        self.memory_bytes / PAGE as u64
    }
}

struct State {
    model: Model,
    now_ns: u64,
    /// Bytes put on the link so far; time is derived from it exactly.
    link_bytes: u64,
    link_ns: u64,
    paused: bool,
    logging: bool,
    /// Auto-converge: percent of the time the vCPUs are held paused (the
    /// model's guest dirties that much less).
    throttle: u8,
    dirty: Vec<u64>,
    dirty_count: u64,
    /// Time up to which writes were applied.
    writes_until: u64,
    /// Fractional writes carried over, in page·ns units (rate × ns).
    carry: u128,
    cursor: u64,
    stride: u64,
    working_set: u64,
}

impl State {
    /// Applies the writes made since the last call.
    fn catch_up(&mut self) {
        let elapsed = self.now_ns.saturating_sub(self.writes_until);
        self.writes_until = self.now_ns;
        if self.paused || !self.logging || self.working_set == 0 {
            return;
        }
        self.carry += u128::from(self.model.dirty_rate_pages_per_s)
            * u128::from(elapsed)
            * u128::from(100 - self.throttle.min(100))
            / 100;
        let writes = (self.carry / 1_000_000_000) as u64;
        self.carry %= 1_000_000_000;
        if writes == 0 {
            return;
        }
        let w = self.working_set;
        let clean = w - self.dirty_count;
        let keep = pow(1.0 - 1.0 / w as f64, writes);
        let still_clean = (clean as f64 * keep + 0.5) as u64;
        let mut add = clean.saturating_sub(still_clean.min(clean));
        while add > 0 {
            let page = self.cursor * self.stride;
            self.cursor = (self.cursor + 1) % w;
            let (word, bit) = ((page / 64) as usize, page % 64);
            if let Some(slot) = self.dirty.get_mut(word)
                && *slot & (1 << bit) == 0
            {
                *slot |= 1 << bit;
                self.dirty_count += 1;
                add -= 1;
            }
        }
    }

    fn advance(&mut self, bytes: u64, pages: u64) {
        self.catch_up();
        self.link_bytes += bytes;
        let link_ns = (u128::from(self.link_bytes) * 1_000_000_000
            / u128::from(self.model.link_bytes_per_s.max(1)))
        .min(u128::from(u64::MAX)) as u64;
        let wire = link_ns.saturating_sub(self.link_ns);
        self.link_ns = link_ns;
        self.now_ns = self
            .now_ns
            .saturating_add(wire)
            .saturating_add(pages.saturating_mul(self.model.per_page_ns));
    }
}

/// `x^n` by squaring (no `std` needed).
fn pow(mut x: f64, mut n: u64) -> f64 {
    let mut r = 1.0;
    while n > 0 {
        if n & 1 == 1 {
            r *= x;
        }
        x *= x;
        n >>= 1;
    }
    r
}

/// A running model: implements [`Source`], [`Transport`] and [`Clock`]
/// through `&Sim` so one model can play all three.
pub struct Sim {
    state: RefCell<State>,
}

/// Errors the model never makes (the types need one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Never;

impl Sim {
    /// A model at time 0, nothing dirty.
    pub fn new(model: Model) -> Sim {
        let pages = model.pages();
        let working_set = model.working_set_pages.min(pages);
        Sim {
            state: RefCell::new(State {
                model,
                now_ns: 0,
                link_bytes: 0,
                link_ns: 0,
                paused: false,
                throttle: 0,
                logging: false,
                dirty: vec![0; pages.div_ceil(64) as usize],
                dirty_count: 0,
                writes_until: 0,
                carry: 0,
                cursor: 0,
                stride: pages.checked_div(working_set).unwrap_or(1).max(1),
                working_set,
            }),
        }
    }

    /// Whether the model is paused now.
    pub fn paused(&self) -> bool {
        self.state.borrow().paused
    }
}

impl Source for &Sim {
    type Error = Never;
    fn pages(&self) -> u64 {
        self.state.borrow().model.pages()
    }
    fn vcpus(&self) -> u16 {
        self.state.borrow().model.vcpus
    }
    fn log_dirty(&mut self, on: bool) -> Result<(), Never> {
        let mut s = self.state.borrow_mut();
        s.catch_up();
        s.logging = on;
        Ok(())
    }
    fn fetch_dirty(&mut self, first: u64, bits: &mut [u64]) -> Result<(), Never> {
        let mut s = self.state.borrow_mut();
        s.catch_up();
        let start = (first / 64) as usize;
        for (i, out) in bits.iter_mut().enumerate() {
            if let Some(w) = s.dirty.get_mut(start + i) {
                *out = core::mem::take(w);
                s.dirty_count -= u64::from(out.count_ones());
            }
        }
        Ok(())
    }
    fn read_page(&mut self, page: u64, buf: &mut [u8; PAGE]) -> Result<(), Never> {
        // Only used if the link is not sizes-only: any non-zero content.
        buf[..8].copy_from_slice(&(page | 1 << 63).to_le_bytes());
        Ok(())
    }
    fn pause(&mut self) -> Result<(), Never> {
        let mut s = self.state.borrow_mut();
        s.catch_up();
        s.paused = true;
        Ok(())
    }
    fn resume(&mut self) -> Result<(), Never> {
        let mut s = self.state.borrow_mut();
        s.catch_up();
        s.paused = false;
        Ok(())
    }
    fn vcpu_state(&mut self, _index: u16, buf: &mut [u8]) -> Result<usize, Never> {
        Ok(VCPU_STATE_BYTES.min(buf.len()))
    }
    fn device_states(&mut self, out: &mut DeviceOut<'_>) -> Result<(), Never> {
        // A console's few bytes of state.
        let _ = out(DeviceKind::Console, 0, &[0; 64]);
        Ok(())
    }
    fn throttle(&mut self, percent: u8) -> Result<(), Never> {
        let mut s = self.state.borrow_mut();
        s.catch_up();
        s.throttle = percent;
        Ok(())
    }
}

impl Transport for &Sim {
    type Error = Never;
    fn send(&mut self, bytes: &[u8]) -> Result<(), Never> {
        self.state.borrow_mut().advance(bytes.len() as u64, 0);
        Ok(())
    }
    fn sizes_only(&self) -> bool {
        true
    }
    fn send_sized(&mut self, len: usize, pages: u64) -> Result<(), Never> {
        self.state.borrow_mut().advance(len as u64, pages);
        Ok(())
    }
}

impl Clock for &Sim {
    fn now_ns(&mut self) -> u64 {
        self.state.borrow().now_ns
    }
}

/// Runs [`migrate`] on `model` with `policy` and no abort.
pub fn simulate(model: &Model, policy: &Policy) -> Result<Stats, Aborted> {
    let sim = Sim::new(*model);
    let (mut src, mut link, mut clock) = (&sim, &sim, &sim);
    migrate(&mut src, &mut link, &mut clock, &mut NoAbort, policy, "sim")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::StopReason;

    const GIB: u64 = 1 << 30;

    fn model(memory: u64, rate: u64, ws: u64, link: u64) -> Model {
        Model {
            memory_bytes: memory,
            dirty_rate_pages_per_s: rate,
            working_set_pages: ws,
            link_bytes_per_s: link,
            per_page_ns: 250,
            vcpus: 2,
        }
    }

    #[test]
    fn idle_child_needs_one_pass() {
        let s = simulate(&model(GIB, 0, 0, 125_000_000), &Policy::default()).expect("ok");
        assert_eq!(s.passes.len(), 1);
        assert_eq!(s.stop, Some(StopReason::AllSent));
        assert_eq!(s.passes[0].pages, GIB / 4096);
        assert!(s.ratio_milli() >= 1000);
        assert_eq!(s.blackout_pages, 0);
        // 1 GiB over 1 Gb/s: a bit over 8.6 s.
        assert!(
            (8_500_000_000..9_500_000_000).contains(&s.total_ns),
            "{}",
            s.total_ns
        );
    }

    #[test]
    fn light_load_fits_the_budget() {
        let m = model(GIB, 256, GIB / 4096, 1_250_000_000);
        let s = simulate(&m, &Policy::default()).expect("ok");
        assert!(s.passes.len() <= 3, "{s}");
        assert!(matches!(
            s.stop,
            Some(StopReason::FitsBudget | StopReason::AllSent)
        ));
        assert!(s.blackout_ns <= 50_000_000, "{s}");
    }

    #[test]
    fn heavy_load_hits_the_pass_limit() {
        let m = model(GIB, 400_000, 65_536, 125_000_000);
        let s = simulate(&m, &Policy::default()).expect("ok");
        assert_eq!(s.passes.len(), 10, "{s}");
        assert_eq!(s.stop, Some(StopReason::PassLimit));
        // The hot set saturates: every later pass resends most of it.
        assert!(s.passes[1].pages > 60_000, "{s}");
        assert!(s.blackout_pages > 30_000, "{s}");
        // The predicted blackout is the measured one to within 10 %.
        let (p, b) = (s.predicted_blackout_ns, s.blackout_ns);
        assert!(p.abs_diff(b) * 10 <= b, "predicted {p} measured {b}");
    }

    #[test]
    fn saturation_matches_the_formula() {
        // 1000 writes into 1000 pages: 1 - e^-1 = 63.2 % dirty.
        let sim = Sim::new(model(64 << 20, 1_000, 1_000, 1));
        {
            let mut s = sim.state.borrow_mut();
            s.logging = true;
            s.now_ns = 1_000_000_000;
            s.catch_up();
            assert!((630..=634).contains(&s.dirty_count), "{}", s.dirty_count);
        }
    }
}
