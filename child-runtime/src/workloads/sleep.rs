//! Workload `sleep` (`ipc::workload::SLEEP`): vCPU 0 sleeps on a kernel
//! timer instead of spinning, and checks each wake-up against its TSC.
//!
//! # Invariants
//! - Every check prints exactly one [`SleepCheck`] line and counts once in
//!   the [`SleepSummary`], printed before the workload halts.
//! - A check passes only if the wake-up came at or after its deadline on
//!   the kernel's clock (read from this vCPU's TSC, the same formula as
//!   the kernel's) and at most [`SLEEP_LATE_LIMIT_MS`] after it.

use core::fmt;

use ipc::child::ChildBootInfo;
use ipc::workload::{
    SLEEP_CHECK_NAMES, SLEEP_LATE_LIMIT_MS, SLEEP_VECTOR, SleepCheck, SleepSummary,
};
use partition_rt::{Sleeper, halt_forever, println};

const MS: u64 = 1_000_000;

/// Checks passed and failed.
#[derive(Default)]
struct Tally {
    passed: u32,
    failed: u32,
}

impl Tally {
    fn record(&mut self, check: &str, outcome: Result<u64, fmt::Arguments<'_>>) {
        if outcome.is_ok() {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        println!("{}", SleepCheck { check, outcome });
    }

    /// Judges a wake-up at `woke` for `deadline` (both ns on the kernel's clock).
    fn woke(&mut self, check: &str, deadline: u64, woke: u64) {
        let limit = deadline + SLEEP_LATE_LIMIT_MS * MS;
        if woke < deadline {
            let early = (deadline - woke) / 1000;
            self.record(
                check,
                Err(format_args!("woke {early} us before its deadline")),
            );
        } else if woke > limit {
            let late = (woke - deadline) / 1000;
            self.record(
                check,
                Err(format_args!(
                    "woke {late} us after its deadline (limit {SLEEP_LATE_LIMIT_MS} ms)"
                )),
            );
        } else {
            self.record(check, Ok((woke - deadline) / 1000));
        }
    }
}

/// Runs on every vCPU.
pub fn run(info: &ChildBootInfo, vcpu: u32) -> ! {
    if vcpu != 0 {
        halt_forever()
    }
    let mut tally = Tally::default();
    match sleepers(info) {
        Ok((sleeper, other)) => checks(&mut tally, &sleeper, &other, info.args[0]),
        Err(why) => tally.record("setup", Err(format_args!("{why}"))),
    }
    let ran = tally.passed + tally.failed;
    tally.failed += (SLEEP_CHECK_NAMES.len() as u32).saturating_sub(ran);
    println!(
        "{}",
        SleepSummary {
            passed: tally.passed,
            failed: tally.failed
        }
    );
    halt_forever()
}

/// Two timers on ports bound to [`SLEEP_VECTOR`] and the next vector.
fn sleepers(info: &ChildBootInfo) -> Result<(Sleeper, Sleeper), &'static str> {
    let vcpu =
        super::instructions::own_vcpu(info.self_slot).ok_or("no capability on its own vCPU")?;
    let one = Sleeper::new(vcpu, SLEEP_VECTOR, info.tsc_khz).map_err(|_| "first timer refused")?;
    let two =
        Sleeper::new(vcpu, SLEEP_VECTOR + 1, info.tsc_khz).map_err(|_| "second timer refused")?;
    Ok((one, two))
}

fn checks(tally: &mut Tally, s: &Sleeper, other: &Sleeper, delay_ms: u64) {
    // A first sleep, not a check: the checks start after it.
    if delay_ms > 0 && s.sleep_ns(delay_ms * MS).is_err() {
        tally.record("setup", Err(format_args!("the first sleep was refused")));
    }
    let [one, ten, hundred, absolute, periodic, timeout, signal] = SLEEP_CHECK_NAMES;
    for (check, ms) in [(one, 1), (ten, 10), (hundred, 100)] {
        match s.sleep_ns(ms * MS) {
            Ok(deadline) => tally.woke(check, deadline, s.now_ns()),
            Err(e) => tally.record(check, Err(format_args!("{e:?}"))),
        }
    }

    // An absolute deadline: 50 ms from this vCPU's reading of the clock.
    let deadline = s.now_ns() + 50 * MS;
    match s.set_at(deadline).and_then(|_| s.wait_signal()) {
        Ok(()) => tally.woke(absolute, deadline, s.now_ns()),
        Err(e) => tally.record(absolute, Err(format_args!("{e:?}"))),
    }

    // Periodic: fire k comes no earlier than the first deadline + k periods.
    let outcome = (|| -> Result<(u64, u64, u64), ipc::hypercall::Status> {
        let first = s.start_periodic(20 * MS, 20 * MS)?;
        let mut worst = (0u64, first, first);
        for k in 0..5 {
            s.wait_signal()?;
            let now = s.now_ns();
            let due = first + k * 20 * MS;
            let late = now.saturating_sub(due);
            if now < due || late >= worst.0 {
                worst = (late, due, now);
            }
            if now < due {
                break;
            }
        }
        s.cancel()?;
        Ok(worst)
    })();
    match outcome {
        Ok((_, due, woke)) => tally.woke(periodic, due, woke),
        Err(e) => tally.record(periodic, Err(format_args!("{e:?}"))),
    }

    // A wait whose condition never holds ends with its timeout.
    let start = s.now_ns();
    match s.wait_until_or_timeout(30 * MS, || false) {
        Ok(false) => tally.woke(timeout, start + 30 * MS, s.now_ns()),
        Ok(true) => tally.record(timeout, Err(format_args!("the condition held?"))),
        Err(e) => tally.record(timeout, Err(format_args!("{e:?}"))),
    }

    // A wait with a 10 s timeout ends when the other timer's signal comes.
    let outcome = other.set_in(20 * MS).and_then(|due| {
        Ok((
            due,
            s.wait_until_or_timeout(10_000 * MS, || other.signalled())?,
        ))
    });
    match outcome {
        Ok((due, true)) => {
            let woke = s.now_ns();
            let _ = other.acknowledge();
            tally.woke(signal, due, woke);
        }
        Ok((_, false)) => tally.record(signal, Err(format_args!("timed out after 10 s"))),
        Err(e) => tally.record(signal, Err(format_args!("{e:?}"))),
    }
}
