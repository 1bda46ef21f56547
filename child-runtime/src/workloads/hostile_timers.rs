//! Workload `hostile-timers` (`ipc::workload::HOSTILE_TIMERS`): vCPU 0
//! abuses kernel timers — first a flood up to its quota with every timer
//! firing at the minimum period, then ports it may not signal, absurd
//! deadlines and periods, a copy without CONTROL, a timer whose port is
//! gone, 5,000 create/delete rounds — each a
//! named check with the outcome the ABI documents; then it halts normally.
//!
//! # Invariants
//! - Every check prints exactly one [`HostileCheck`] line and counts once
//!   in the [`HostileSummary`], printed before the workload halts.
//! - Nothing here harms the child itself: it deletes only capabilities it
//!   created here.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use super::checks::Checks;
use ipc::child::ChildBootInfo;
use ipc::hypercall::timer::{ABSOLUTE, MAX_DEADLINE_NS, MIN_PERIOD_NS};
use ipc::hypercall::{Call, Results, Rights, SlotHandle, Status};
use ipc::workload::{HOSTILE_TIMER_CHECKS, HOSTILE_TIMERS_DEFAULT_FLOOD_MS, HOSTILE_TIMERS_VECTOR};
use partition_rt::{halt_forever, hypercall, println, wait_until};

/// Interrupts taken from the flood's port.
static TAKEN: AtomicU64 = AtomicU64::new(0);

fn on_flood(_vector: u8) {
    TAKEN.fetch_add(1, Ordering::SeqCst);
}

impl Checks {
    /// Passes if `got` is the error `want`.
    fn refusal(&mut self, check: &str, got: Result<Results, Status>, want: Status) {
        match got {
            Err(status) if status == want => self.record(check, None),
            other => self.record(check, Some(format_args!("got {other:?}, want {want:?}"))),
        }
    }
}

fn handle(results: Result<Results, Status>) -> Result<SlotHandle, Status> {
    SlotHandle::from_raw(results?[0])
}

fn timer_create(port: SlotHandle) -> Result<SlotHandle, Status> {
    handle(hypercall(&Call::TimerCreate { port }))
}

fn set(timer: SlotHandle, deadline: u64, period: u64, flags: u64) -> Result<Results, Status> {
    hypercall(&Call::TimerSet {
        timer,
        deadline,
        period,
        flags,
    })
}

fn delete(slot: SlotHandle) -> Result<(), Status> {
    hypercall(&Call::CapDelete { slot }).map(|_| ())
}

/// Runs on every vCPU.
pub fn run(info: &ChildBootInfo, vcpu: u32) -> ! {
    if vcpu != 0 {
        halt_forever()
    }
    let mut checks = Checks::new();
    match setup(info) {
        Ok((port, timer)) => attacks(&mut checks, info, port, timer),
        Err(why) => checks.record("setup", Some(format_args!("{why}"))),
    }
    let ran = checks.complete(HOSTILE_TIMER_CHECKS);
    if ran != HOSTILE_TIMER_CHECKS {
        println!("hostile: FAILED: ran {ran} checks of {HOSTILE_TIMER_CHECKS}");
    }
    println!("{}", checks.summary());
    halt_forever()
}

/// A port of its own bound to [`HOSTILE_TIMERS_VECTOR`], and a timer on it.
fn setup(info: &ChildBootInfo) -> Result<(SlotHandle, SlotHandle), &'static str> {
    let vcpu =
        super::instructions::own_vcpu(info.self_slot).ok_or("no capability on its own vCPU")?;
    partition_rt::set_interrupt_handler(HOSTILE_TIMERS_VECTOR, on_flood)
        .map_err(|_| "vector reserved")?;
    let port = handle(hypercall(&Call::PortCreate)).map_err(|_| "PortCreate failed")?;
    hypercall(&Call::PortBind {
        port,
        vcpu,
        vector: HOSTILE_TIMERS_VECTOR,
    })
    .map_err(|_| "PortBind failed")?;
    let timer = timer_create(port).map_err(|_| "TimerCreate failed")?;
    Ok((port, timer))
}

fn attacks(checks: &mut Checks, info: &ChildBootInfo, port: SlotHandle, timer: SlotHandle) {
    // The flood first, while the children beside it start and work.
    flood(checks, info, port);
    let me = info.self_slot;
    let create = |port| hypercall(&Call::TimerCreate { port });

    // Ports it may not signal.
    let empty = SlotHandle {
        index: 250,
        generation: 0,
    };
    checks.refusal("timer on an empty slot", create(empty), Status::InvalidSlot);
    match handle(hypercall(&Call::PortCreate)) {
        Ok(gone) => {
            let deleted = delete(gone);
            let got = create(gone);
            match deleted {
                Ok(()) => checks.refusal("timer on a deleted port", got, Status::StaleSlot),
                Err(e) => checks.record(
                    "timer on a deleted port",
                    Some(format_args!("setup: delete {e:?}")),
                ),
            }
        }
        Err(e) => checks.record(
            "timer on a deleted port",
            Some(format_args!("setup: PortCreate {e:?}")),
        ),
    }
    checks.refusal(
        "timer on a slot that is not a port",
        create(me),
        Status::WrongType,
    );
    match info.from_root {
        // The root's event port: the child holds it with BIND only.
        Some(roots) => checks.refusal(
            "timer on a port without SIGNAL",
            create(roots),
            Status::InsufficientRights,
        ),
        None => checks.record(
            "timer on a port without SIGNAL",
            Some(format_args!("no port from the root")),
        ),
    }

    // Absurd deadlines, periods and flags.
    let invalid = Status::InvalidArgument;
    checks.refusal("zero deadline", set(timer, 0, 0, 0), invalid);
    checks.refusal(
        "zero absolute deadline",
        set(timer, 0, 0, ABSOLUTE),
        invalid,
    );
    checks.refusal("maximal deadline", set(timer, u64::MAX, 0, 0), invalid);
    checks.refusal(
        "maximal absolute deadline",
        set(timer, u64::MAX, 0, ABSOLUTE),
        invalid,
    );
    checks.refusal(
        "deadline a year and a day away",
        set(timer, MAX_DEADLINE_NS + 1, 0, 0),
        invalid,
    );
    checks.refusal(
        "period below 1 ms",
        set(timer, MIN_PERIOD_NS, MIN_PERIOD_NS - 1, 0),
        invalid,
    );
    checks.refusal(
        "maximal period",
        set(timer, MIN_PERIOD_NS, u64::MAX, 0),
        invalid,
    );
    checks.refusal(
        "unknown timer flags",
        set(timer, MIN_PERIOD_NS, 0, 0x8000_0000_0000_0000),
        invalid,
    );

    // Rights and types.
    let check = "set a timer through a copy without CONTROL";
    match handle(hypercall(&Call::CapDelegate {
        slot: timer,
        target: me,
        rights: Rights::GRANT,
    })) {
        Ok(copy) => {
            checks.refusal(
                check,
                set(copy, MIN_PERIOD_NS, 0, 0),
                Status::InsufficientRights,
            );
            let _ = delete(copy);
        }
        Err(e) => checks.record(check, Some(format_args!("setup: delegate {e:?}"))),
    }
    checks.refusal(
        "set a port as a timer",
        set(port, MIN_PERIOD_NS, 0, 0),
        Status::WrongType,
    );
    let check = "a timer whose port is gone";
    let orphan = handle(hypercall(&Call::PortCreate))
        .and_then(|p| Ok((p, timer_create(p)?)))
        .and_then(|(p, t)| delete(p).map(|_| t));
    match orphan {
        Ok(t) => {
            checks.refusal(check, set(t, MIN_PERIOD_NS, 0, 0), Status::InvalidState);
            let _ = delete(t);
        }
        Err(e) => checks.record(check, Some(format_args!("setup: {e:?}"))),
    }

    let check = "create and delete a timer 5000 times";
    match (0..5000).find_map(|round| {
        timer_create(port)
            .and_then(delete)
            .err()
            .map(|e| (round, e))
    }) {
        None => checks.record(check, None),
        Some((round, e)) => checks.record(check, Some(format_args!("round {round}: {e:?}"))),
    }
}

/// Timers until the kernel refuses one, every one periodic at the
/// minimum period for the flood's duration, then all deleted (the first
/// timer, kept for the checks after, aside).
fn flood(checks: &mut Checks, info: &ChildBootInfo, port: SlotHandle) {
    let mut held = Vec::new();
    let refusal = loop {
        match timer_create(port) {
            Ok(t) => held.push(t),
            Err(e) => break e,
        }
        if held.len() > 4096 {
            break Status::Success;
        }
    };
    let check = "timers beyond the quota are refused";
    match refusal {
        Status::OutOfMemory => checks.record(check, None),
        other => checks.record(
            check,
            Some(format_args!(
                "after {} timers: {other:?}, want OutOfMemory",
                held.len()
            )),
        ),
    }

    let check = "every timer periodic at 1 ms, the kernel keeps up";
    let refused = held
        .iter()
        .filter(|&&t| set(t, MIN_PERIOD_NS, MIN_PERIOD_NS, 0).is_err())
        .count();
    let ms = match info.args[0] {
        0 => HOSTILE_TIMERS_DEFAULT_FLOOD_MS,
        ms => ms,
    };
    let until = partition_rt::rdtsc().saturating_add(info.tsc_khz.saturating_mul(ms));
    while partition_rt::rdtsc() < until {
        // Counted before the acknowledge, which may deliver at once: an
        // interrupt between the two is not missed (the port stays
        // disarmed after it until the next acknowledge).
        let seen = TAKEN.load(Ordering::SeqCst);
        let _ = hypercall(&Call::Acknowledge { slot: port });
        // Sleeps until the flood's next interrupt (or any other).
        wait_until(|| TAKEN.load(Ordering::SeqCst) != seen || partition_rt::rdtsc() >= until);
    }
    let taken = TAKEN.load(Ordering::SeqCst);
    println!(
        "hostile: (timer flood: {} timers for {ms} ms, {taken} interrupts)",
        held.len()
    );
    if refused == 0 && taken > 0 {
        checks.record(check, None);
    } else {
        checks.record(
            check,
            Some(format_args!("{refused} sets refused, {taken} interrupts")),
        );
    }

    let deleted = held.iter().all(|&t| delete(t).is_ok());
    checks.record(
        "every held timer deleted",
        (!deleted).then(|| format_args!("a delete failed")),
    );
    match timer_create(port) {
        Ok(t) => {
            let _ = delete(t);
            checks.record("a timer again after deleting", None)
        }
        Err(e) => checks.record("a timer again after deleting", Some(format_args!("{e:?}"))),
    }
}
