//! The node's event loop: the root partition as a long-running node.
//!
//! Services (the VMBus host, the virtual switch, the VM manager, later the
//! cluster) each own their state and are polled in turn with the events
//! that arrived; when none of them has work, the loop asks each to arm
//! its signals (a ring's interrupt unmasked, a device's interrupt
//! acknowledged), takes the earliest deadline any of them named, and
//! sleeps until an event or that deadline. The sleep is race-free by
//! contract of [`Platform::sleep`]: an event raised after the loop last
//! looked ends the sleep at once (the real platform checks with
//! interrupts off and sleeps with `STI; HLT`).
//!
//! # Invariants
//! - The loop never sleeps while a service reported work in this round,
//!   nor while arming found work already waiting (a ring that filled
//!   between the last poll and the unmask).
//! - A deadline in the past never sleeps: the due service is polled first.
//! - Everything here is safe, allocation-free per round, and host-tested
//!   over a fake platform; `main.rs` supplies the real one.

pub mod options;

/// Event bits: what woke the node (set by interrupt handlers, taken once).
pub mod event {
    /// A VMBus port signal from a child.
    pub const VMBUS: u64 = 1 << 0;
    /// A device interrupt (disk, NIC).
    pub const DEVICE: u64 = 1 << 1;
    /// A kernel timer fired.
    pub const TIMER: u64 = 1 << 2;
    /// A child signalled the root outside VMBus (its to-root port).
    pub const CHILD: u64 = 1 << 3;
    /// Anything else (an interrupt the node has no bit for).
    pub const OTHER: u64 = 1 << 63;
}

/// What the loop needs of the machine.
pub trait Platform {
    /// Monotonic time in nanoseconds.
    fn now_ns(&mut self) -> u64;
    /// Takes (and clears) the event bits raised since the last call.
    fn take_events(&mut self) -> u64;
    /// Sleeps until an event is raised or `deadline` (ns, [`Self::now_ns`]'s
    /// clock) passes; `None`: until an event. Returns at once if an event
    /// was raised since the last [`Self::take_events`].
    fn sleep(&mut self, deadline: Option<u64>);
}

/// What a service said after a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// It did work and may have more: poll again before sleeping.
    Busy,
    /// Nothing to do until an event, or until the deadline (ns) if any.
    Idle(Option<u64>),
    /// The node is to stop (e.g. power off was asked for).
    Stop,
}

/// One of the node's services.
pub trait Service {
    /// A short name for reports.
    fn name(&self) -> &'static str;
    /// Does a bounded amount of work given the events of this round.
    fn poll(&mut self, now_ns: u64, events: u64) -> Poll;
    /// The loop is about to sleep: arm whatever wakes this service
    /// (unmask ring signals). Returns true if work is already waiting, in
    /// which case the loop does not sleep.
    fn arm(&mut self) -> bool {
        false
    }
}

/// The loop's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Rounds (one poll of every service).
    pub rounds: u64,
    /// Rounds in which some service was busy.
    pub busy_rounds: u64,
    /// Sleeps (calls to [`Platform::sleep`]).
    pub sleeps: u64,
    /// Sleeps skipped because arming found work waiting.
    pub armed_with_work: u64,
    /// Sleeps that ended by deadline with no event.
    pub timeouts: u64,
}

/// How the loop waits when idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Sleep until an event or a deadline (the node's normal mode).
    Sleep,
    /// Never sleep: poll round after round (the peer of the idle
    /// benchmark, and what the root did before it was a node).
    Poll,
}

/// Runs `services` until one says [`Poll::Stop`]; returns the counters.
pub fn run<P: Platform>(platform: &mut P, services: &mut [&mut dyn Service], mode: Mode) -> Stats {
    let mut stats = Stats::default();
    let mut events = platform.take_events();
    loop {
        let mut slept = false;
        match round(platform, services, events, &mut stats) {
            Round::Stop => return stats,
            Round::Busy => {}
            Round::Idle(deadline) => {
                if mode == Mode::Sleep {
                    // Arm every service (not just until the first with work:
                    // each must leave polling mode before a sleep).
                    let waiting = services.iter_mut().fold(false, |any, s| s.arm() | any);
                    if waiting {
                        stats.armed_with_work += 1;
                    } else if deadline.is_none_or(|d| d > platform.now_ns()) {
                        stats.sleeps += 1;
                        platform.sleep(deadline);
                        slept = true;
                    }
                }
            }
        }
        events = platform.take_events();
        if slept && events == 0 {
            stats.timeouts += 1;
        }
    }
}

enum Round {
    Busy,
    Idle(Option<u64>),
    Stop,
}

/// Polls every service once.
fn round<P: Platform>(
    platform: &mut P,
    services: &mut [&mut dyn Service],
    events: u64,
    stats: &mut Stats,
) -> Round {
    stats.rounds += 1;
    let now = platform.now_ns();
    let mut busy = false;
    let mut deadline: Option<u64> = None;
    for s in services.iter_mut() {
        match s.poll(now, events) {
            Poll::Stop => return Round::Stop,
            Poll::Busy => busy = true,
            Poll::Idle(d) => {
                deadline = match (deadline, d) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }
    if busy {
        stats.busy_rounds += 1;
        Round::Busy
    } else {
        Round::Idle(deadline)
    }
}

#[cfg(test)]
mod tests;
