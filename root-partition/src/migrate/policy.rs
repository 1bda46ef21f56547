//! When pre-copy stops: after each pass the engine asks [`Policy::decide`]
//! whether to copy dirty pages again or to pause the child and copy the rest
//! (stop-and-copy).
//!
//! # Invariants
//! `decide` is a pure function of the policy and the passes so far; it never
//! returns `Continue` once `max_passes` passes have run or nothing is dirty.

use crate::migrate::stats::PassStats;

/// The stop-and-copy policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Most pre-copy passes (pass 1 is the full copy). Default 10.
    pub max_passes: u32,
    /// The blackout the operator accepts: stop once the predicted
    /// blackout fits and another pass would not halve it. Default 50 ms.
    pub downtime_budget_ns: u64,
    /// Stop early (`NotConverging`) when a pass leaves more than
    /// `100 - min_progress_percent` % of the previous pass's dirty pages
    /// dirty. 0 (the default) disables the rule: only the budget and the
    /// pass limit stop pre-copy, as issue 9 specifies.
    pub min_progress_percent: u32,
    /// Fixed blackout cost added to every prediction (pause, vCPU and
    /// device state, the destination's resume). Default 1 ms.
    pub blackout_overhead_ns: u64,
    /// Auto-converge: the share of time the child is held paused once a
    /// pass (after the first) left at least half of what it sent dirty —
    /// the child dirties memory about as fast as the link carries it —
    /// in percent. 0 turns throttling off. Default 20.
    pub throttle_initial_percent: u8,
    /// Added after every further pass that does not halve. Default 10.
    pub throttle_step_percent: u8,
    /// The most. Default 90.
    pub throttle_max_percent: u8,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_passes: 10,
            downtime_budget_ns: 50_000_000,
            min_progress_percent: 0,
            blackout_overhead_ns: 1_000_000,
            throttle_initial_percent: 20,
            throttle_step_percent: 10,
            throttle_max_percent: 90,
        }
    }
}

/// Why pre-copy stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// No page was dirty after the last pass.
    AllSent,
    /// The dirty pages left fit the downtime budget.
    FitsBudget,
    /// `max_passes` passes ran.
    PassLimit,
    /// Passes stopped shrinking the dirty set (`min_progress_percent`).
    NotConverging,
}

impl StopReason {
    /// Stable lower-case name (text and JSON).
    pub fn name(self) -> &'static str {
        match self {
            StopReason::AllSent => "all_sent",
            StopReason::FitsBudget => "fits_budget",
            StopReason::PassLimit => "pass_limit",
            StopReason::NotConverging => "not_converging",
        }
    }
}

/// The decision after a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// `None`: run another pass; `Some`: stop and copy.
    pub stop: Option<StopReason>,
    /// The blackout predicted if the engine stopped now.
    pub predicted_blackout_ns: u64,
}

impl Policy {
    /// The throttle for the next pass, given the passes so far and the
    /// throttle now (auto-converge): unchanged while passes halve the
    /// dirty set (pass 1, which sends everything, never counts).
    pub fn throttle(&self, passes: &[PassStats], now: u8) -> u8 {
        let Some(last) = passes.last() else {
            return now;
        };
        if self.throttle_initial_percent == 0
            || last.pass < 2
            || u128::from(last.dirty_pages) * 2 < u128::from(last.pages)
        {
            return now;
        }
        let next = if now == 0 {
            self.throttle_initial_percent
        } else {
            now.saturating_add(self.throttle_step_percent)
        };
        next.min(self.throttle_max_percent).min(99)
    }
}

impl Policy {
    /// Estimated time to send one page, from the throughput measured over
    /// all passes so far (bytes sent over time spent); 0 before any page.
    pub fn ns_per_page(passes: &[PassStats]) -> u64 {
        let (pages, ns) = passes.iter().fold((0u128, 0u128), |(p, t), s| {
            (p + u128::from(s.pages), t + u128::from(s.duration_ns))
        });
        if pages == 0 {
            0
        } else {
            (ns.div_ceil(pages)).min(u128::from(u64::MAX)) as u64
        }
    }

    /// The blackout predicted for `dirty` pages given the passes so far.
    pub fn predict_blackout_ns(&self, passes: &[PassStats], dirty: u64) -> u64 {
        Self::ns_per_page(passes)
            .saturating_mul(dirty)
            .saturating_add(self.blackout_overhead_ns)
    }

    /// Decides after the last entry of `passes` (each entry carries the
    /// dirty pages found at its end). Checks in order: all sent, fits the
    /// budget, pass limit, not converging.
    ///
    /// While a pass leaves less than half of what it sent dirty, the next
    /// one will likely
    /// halve the remainder again at a cost below the blackout time it
    /// saves, so pre-copy goes on even inside the budget; the child's
    /// blackout then shrinks to what it dirties during one short pass.
    pub fn decide(&self, passes: &[PassStats]) -> Decision {
        let Some(last) = passes.last() else {
            return Decision {
                stop: None,
                predicted_blackout_ns: 0,
            };
        };
        let dirty = last.dirty_pages;
        let predicted_blackout_ns = self.predict_blackout_ns(passes, dirty);
        let stop = if dirty == 0 {
            Some(StopReason::AllSent)
        } else if predicted_blackout_ns <= self.downtime_budget_ns
            && u128::from(dirty) * 2 >= u128::from(last.pages)
        {
            Some(StopReason::FitsBudget)
        } else if last.pass >= self.max_passes {
            Some(StopReason::PassLimit)
        } else if self.min_progress_percent > 0
            && passes.len() >= 2
            && u128::from(dirty) * 100
                > u128::from(passes[passes.len() - 2].dirty_pages)
                    * u128::from(100u32.saturating_sub(self.min_progress_percent))
        {
            Some(StopReason::NotConverging)
        } else {
            None
        };
        Decision {
            stop,
            predicted_blackout_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn pass(pass: u32, pages: u64, ms: u64, dirty: u64) -> PassStats {
        PassStats {
            pass,
            pages,
            bytes: pages * 4096,
            duration_ns: ms * 1_000_000,
            dirty_pages: dirty,
        }
    }

    #[test]
    fn decisions() {
        let p = Policy::default();
        assert_eq!(p.decide(&[]).stop, None);
        // 1000 pages in 100 ms: 100 us a page.
        let mut h = Vec::from([pass(1, 1000, 100, 0)]);
        assert_eq!(p.decide(&h).stop, Some(StopReason::AllSent));
        h[0].dirty_pages = 400; // 40 ms + 1 ms overhead fits 50 ms...
        let d = p.decide(&h);
        // ... but the pass left fewer than half of its 1000 pages dirty:
        // another pass shrinks the blackout further.
        assert_eq!(d.stop, None);
        assert_eq!(d.predicted_blackout_ns, 41_000_000);
        h.push(pass(2, 400, 40, 250));
        let d = p.decide(&h);
        assert_eq!(
            d.stop,
            Some(StopReason::FitsBudget),
            "250 of 400: not halving"
        );
        assert_eq!(d.predicted_blackout_ns, 26_000_000);
        h.pop();
        h[0].dirty_pages = 600;
        assert_eq!(p.decide(&h).stop, None);
        h.push(pass(2, 600, 60, 590));
        assert_eq!(p.decide(&h).stop, None);
        let strict = Policy {
            min_progress_percent: 10,
            ..p
        };
        assert_eq!(strict.decide(&h).stop, Some(StopReason::NotConverging));
        h[1].dirty_pages = 530;
        assert_eq!(strict.decide(&h).stop, None);
        let two = Policy { max_passes: 2, ..p };
        assert_eq!(two.decide(&h).stop, Some(StopReason::PassLimit));
    }

    #[test]
    fn throttle_rises_only_while_passes_do_not_halve() {
        let p = Policy::default();
        // Pass 1 never throttles, however much it left dirty.
        let mut h = Vec::from([pass(1, 1000, 100, 900)]);
        assert_eq!(p.throttle(&h, 0), 0);
        // Pass 2 halved: none.
        h.push(pass(2, 900, 90, 400));
        assert_eq!(p.throttle(&h, 0), 0);
        // Pass 3 did not: 20 %, then +10 % a pass up to 90 %.
        h.push(pass(3, 400, 40, 390));
        assert_eq!(p.throttle(&h, 0), 20);
        assert_eq!(p.throttle(&h, 20), 30);
        assert_eq!(p.throttle(&h, 85), 90);
        assert_eq!(p.throttle(&h, 90), 90);
        let off = Policy {
            throttle_initial_percent: 0,
            ..p
        };
        assert_eq!(off.throttle(&h, 0), 0);
    }
}
