//! The tally the hostile workloads (`hostile`, `greedy`, `instructions`)
//! keep: one [`HostileCheck`] line per check, counted once, and the
//! [`HostileSummary`] they end with. Each workload adds its own ways of
//! judging an outcome in an `impl Checks` block of its own module.

use core::fmt;

use ipc::workload::{HostileCheck, HostileSummary};
use partition_rt::println;

/// Checks passed and failed so far.
pub struct Checks {
    passed: u32,
    failed: u32,
}

impl Checks {
    /// No checks yet.
    pub fn new() -> Self {
        Checks {
            passed: 0,
            failed: 0,
        }
    }

    /// Prints the check's line and counts it: passed when `failure` is None.
    pub fn record(&mut self, check: &str, failure: Option<fmt::Arguments<'_>>) {
        if failure.is_none() {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        println!("{}", HostileCheck { check, failure });
    }

    /// Counts the checks of `expected` that never ran (a setup step failed
    /// and took them along) as failed; returns how many ran.
    pub fn complete(&mut self, expected: u32) -> u32 {
        let ran = self.passed + self.failed;
        self.failed += expected.saturating_sub(ran);
        ran
    }

    /// Checks passed and failed.
    pub fn counts(&self) -> (u32, u32) {
        (self.passed, self.failed)
    }

    /// The summary line of every check recorded.
    pub fn summary(&self) -> HostileSummary {
        HostileSummary {
            passed: self.passed,
            failed: self.failed,
        }
    }
}
