use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use super::*;

/// A platform whose clock moves only when the node sleeps (to the
/// deadline, or to the next scripted event) and whose events are scripted
/// as (time, bits).
struct FakePlatform {
    now: u64,
    pending: u64,
    script: VecDeque<(u64, u64)>,
    /// (deadline asked for, time slept until).
    sleeps: Vec<(Option<u64>, u64)>,
}

impl FakePlatform {
    fn new(script: &[(u64, u64)]) -> Self {
        Self {
            now: 0,
            pending: 0,
            script: script.iter().copied().collect(),
            sleeps: Vec::new(),
        }
    }
}

impl Platform for FakePlatform {
    fn now_ns(&mut self) -> u64 {
        self.now
    }
    fn take_events(&mut self) -> u64 {
        core::mem::take(&mut self.pending)
    }
    fn sleep(&mut self, deadline: Option<u64>) {
        assert_eq!(self.pending, 0, "slept with an event pending");
        let next_event = self.script.front().map(|&(t, _)| t);
        let wake = match (deadline, next_event) {
            (Some(d), Some(e)) => d.min(e),
            (Some(d), None) => d,
            (None, Some(e)) => e,
            (None, None) => panic!("the node slept forever"),
        };
        self.now = self.now.max(wake);
        while let Some(&(t, bits)) = self.script.front() {
            if t > self.now {
                break;
            }
            self.pending |= bits;
            self.script.pop_front();
        }
        self.sleeps.push((deadline, self.now));
    }
}

/// A service that has `work` units to do (one per poll), gets more on an
/// event in `wakes_on`, may want a periodic tick, stops after `stop_after`
/// ticks, and may find work while arming (`arm_finds` times).
struct Counter {
    work: u32,
    wakes_on: u64,
    per_event: u32,
    period: Option<u64>,
    next_tick: u64,
    ticks: u32,
    stop_after: Option<u32>,
    arm_finds: u32,
    log: Rc<RefCell<Vec<String>>>,
}

impl Counter {
    fn new(log: &Rc<RefCell<Vec<String>>>) -> Self {
        Self {
            work: 0,
            wakes_on: 0,
            per_event: 0,
            period: None,
            next_tick: 0,
            ticks: 0,
            stop_after: None,
            arm_finds: 0,
            log: log.clone(),
        }
    }
}

impl Service for Counter {
    fn name(&self) -> &'static str {
        "counter"
    }
    fn poll(&mut self, now: u64, events: u64) -> Poll {
        if events & self.wakes_on != 0 {
            self.work += self.per_event;
            self.log.borrow_mut().push(format!("event at {now}"));
        }
        if let Some(period) = self.period
            && now >= self.next_tick
        {
            self.ticks += 1;
            self.log.borrow_mut().push(format!("tick at {now}"));
            self.next_tick = now + period;
            if self.stop_after == Some(self.ticks) {
                return Poll::Stop;
            }
        }
        if self.work > 0 {
            self.work -= 1;
            return Poll::Busy;
        }
        Poll::Idle(self.period.map(|_| self.next_tick))
    }
    fn arm(&mut self) -> bool {
        if self.arm_finds > 0 {
            self.arm_finds -= 1;
            self.work += 1;
            return true;
        }
        false
    }
}

#[test]
fn an_idle_node_sleeps_until_its_deadline_and_only_then() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut heartbeat = Counter::new(&log);
    heartbeat.period = Some(1_000_000_000);
    heartbeat.next_tick = 1_000_000_000;
    heartbeat.stop_after = Some(3);
    let mut platform = FakePlatform::new(&[]);
    let stats = run(&mut platform, &mut [&mut heartbeat], Mode::Sleep);
    assert_eq!(
        *log.borrow(),
        [
            "tick at 1000000000",
            "tick at 2000000000",
            "tick at 3000000000"
        ]
    );
    // One sleep per tick, each to the deadline: no busy rounds, no spin.
    assert_eq!(
        platform.sleeps,
        [
            (Some(1_000_000_000), 1_000_000_000),
            (Some(2_000_000_000), 2_000_000_000),
            (Some(3_000_000_000), 3_000_000_000)
        ]
    );
    assert_eq!(stats.sleeps, 3);
    assert_eq!(stats.timeouts, 3);
    assert_eq!(stats.busy_rounds, 0);
    assert_eq!(stats.rounds, 4);
}

#[test]
fn work_is_done_before_sleeping_and_events_wake_the_right_service() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut vmbus = Counter::new(&log);
    vmbus.wakes_on = event::VMBUS;
    vmbus.per_event = 3;
    let mut clock = Counter::new(&Rc::new(RefCell::new(Vec::new())));
    clock.period = Some(10_000);
    clock.next_tick = 10_000;
    clock.stop_after = Some(2);
    // A VMBus signal at t=5000 (during the first sleep).
    let mut platform = FakePlatform::new(&[(5_000, event::VMBUS)]);
    let stats = run(&mut platform, &mut [&mut vmbus, &mut clock], Mode::Sleep);
    assert_eq!(*log.borrow(), ["event at 5000"]);
    // Slept to the event (deadline 10000 asked), then three busy rounds
    // with no sleep between them, then slept to each of the clock's
    // deadlines.
    assert_eq!(
        platform.sleeps,
        [
            (Some(10_000), 5_000),
            (Some(10_000), 10_000),
            (Some(20_000), 20_000)
        ]
    );
    assert_eq!(stats.busy_rounds, 3);
    assert_eq!(stats.timeouts, 2, "the later sleeps ended by deadline");
}

#[test]
fn work_found_while_arming_is_done_before_any_sleep() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut ring = Counter::new(&log);
    ring.arm_finds = 2;
    let mut clock = Counter::new(&log);
    clock.period = Some(100);
    clock.next_tick = 100;
    clock.stop_after = Some(1);
    let mut platform = FakePlatform::new(&[]);
    let stats = run(&mut platform, &mut [&mut ring, &mut clock], Mode::Sleep);
    assert_eq!(stats.armed_with_work, 2);
    assert_eq!(stats.busy_rounds, 2);
    assert_eq!(platform.sleeps, [(Some(100), 100)]);
}

#[test]
fn a_past_deadline_polls_again_instead_of_sleeping() {
    struct Late {
        polls: u32,
    }
    impl Service for Late {
        fn name(&self) -> &'static str {
            "late"
        }
        fn poll(&mut self, _now: u64, _events: u64) -> Poll {
            self.polls += 1;
            match self.polls {
                // A deadline already in the past (0 < now = 7).
                1 => Poll::Idle(Some(0)),
                _ => Poll::Stop,
            }
        }
    }
    let mut platform = FakePlatform::new(&[]);
    platform.now = 7;
    let mut late = Late { polls: 0 };
    let stats = run(&mut platform, &mut [&mut late], Mode::Sleep);
    assert!(platform.sleeps.is_empty());
    assert_eq!(stats.sleeps, 0);
    assert_eq!(late.polls, 2);
}

#[test]
fn poll_mode_never_sleeps() {
    struct Spin {
        polls: u32,
    }
    impl Service for Spin {
        fn name(&self) -> &'static str {
            "spin"
        }
        fn poll(&mut self, _now: u64, _events: u64) -> Poll {
            self.polls += 1;
            if self.polls == 1000 {
                Poll::Stop
            } else {
                Poll::Idle(None)
            }
        }
    }
    let mut platform = FakePlatform::new(&[]);
    let mut spin = Spin { polls: 0 };
    let stats = run(&mut platform, &mut [&mut spin], Mode::Poll);
    assert_eq!(stats.rounds, 1000);
    assert_eq!(stats.sleeps, 0);
    // The same service in sleep mode would have slept forever: the fake
    // panics on that, so the mode is what kept it awake.
}
