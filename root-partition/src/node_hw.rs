//! The node on the machine: the real [`Platform`] of the root's event loop
//! (`root_partition::node`) and the services that drive the hardware and
//! the children. Booted when the kernel command line names no scenario.
//!
//! Command-line words (test fixtures and the benchmark's peer):
//! - `node.run-for=SECONDS`: stop the node after that long (the children
//!   are destroyed, the root powers off); without it the node runs until
//!   it is told to power off.
//! - `node.poll`: never sleep (the loop polls round after round), the
//!   behaviour of the root before it was a node: the idle benchmark's peer.

use ipc::boot::BootInfo;
use ipc::markers;
use root_partition::node::{self, Mode, Platform, Poll, Service};

macro_rules! println {
    ($($arg:tt)*) => {
        partition_rt::console::print_line(format_args!($($arg)*))
    };
}

/// The machine: time from the time-stamp counter, events from the
/// partition's interrupt count, sleep in `STI; HLT`.
struct Machine {
    tsc_khz: u64,
    seen: u64,
}

impl Machine {
    fn ns(&self, tsc: u64) -> u64 {
        (u128::from(tsc) * 1_000_000 / u128::from(self.tsc_khz.max(1))) as u64
    }
}

impl Platform for Machine {
    fn now_ns(&mut self) -> u64 {
        self.ns(partition_rt::rdtsc())
    }

    fn take_events(&mut self) -> u64 {
        let now = partition_rt::interrupts::taken();
        if now == self.seen {
            return 0;
        }
        self.seen = now;
        node::event::OTHER
    }

    fn sleep(&mut self, deadline: Option<u64>) {
        let seen = self.seen;
        match deadline {
            // Checked with interrupts off, slept with STI; HLT: an
            // interrupt after the check ends the HLT.
            None => partition_rt::wait_until(|| partition_rt::interrupts::taken() != seen),
            // No timer of the root's yet: give the processor away until the
            // deadline or an interrupt.
            Some(deadline) => loop {
                if partition_rt::interrupts::taken() != seen || self.now_ns() >= deadline {
                    break;
                }
                let _ = partition_rt::hypercall(&ipc::hypercall::Call::Yield);
            },
        }
    }
}

/// Serves every child's VMBus and the virtual switch.
struct Vmbus;

impl Service for Vmbus {
    fn name(&self) -> &'static str {
        "vmbus"
    }
    fn poll(&mut self, _now: u64, _events: u64) -> Poll {
        if crate::vmbus::service_all() > 0 {
            Poll::Busy
        } else {
            Poll::Idle(None)
        }
    }
}

/// Stops the node at a deadline (`node.run-for`).
struct StopAt {
    deadline: Option<u64>,
}

impl Service for StopAt {
    fn name(&self) -> &'static str {
        "stop"
    }
    fn poll(&mut self, now: u64, _events: u64) -> Poll {
        match self.deadline {
            Some(d) if now >= d => Poll::Stop,
            d => Poll::Idle(d),
        }
    }
}

/// Boots the node and runs it until it stops; returns to power off.
pub fn run(info: &BootInfo) {
    let words = || info.cmdline().split_whitespace();
    let mode = if words().any(|w| w == "node.poll") {
        Mode::Poll
    } else {
        Mode::Sleep
    };
    let run_for = words().find_map(|w| w.strip_prefix("node.run-for=")?.parse::<u64>().ok());
    let tsc_khz = u64::from(info.tsc_khz);
    if tsc_khz == 0 {
        println!("root partition: node: no time-stamp counter frequency in the boot page");
        return;
    }
    crate::vmbus::choose_windows(info.shared_window);
    crate::children::install_handlers();
    partition_rt::enable_interrupts();
    let mut machine = Machine {
        tsc_khz,
        seen: partition_rt::interrupts::taken(),
    };
    let start = machine.now_ns();
    let mut stop = StopAt {
        deadline: run_for.map(|s| start + s * 1_000_000_000),
    };
    println!(
        "{} (mode {}, {})",
        markers::NODE_UP,
        match mode {
            Mode::Sleep => "sleep",
            Mode::Poll => "poll",
        },
        match run_for {
            Some(s) => alloc::format!("stopping after {s} s"),
            None => alloc::string::String::from("running until told to power off"),
        }
    );
    let stats = node::run(&mut machine, &mut [&mut Vmbus, &mut stop], mode);
    let ran_ms = (machine.now_ns() - start) / 1_000_000;
    println!(
        "root partition: node stopped after {ran_ms} ms: {} rounds, {} busy, {} sleeps ({} ended by deadline)",
        stats.rounds, stats.busy_rounds, stats.sleeps, stats.timeouts
    );
}
