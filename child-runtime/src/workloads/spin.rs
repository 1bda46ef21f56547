//! Workload `spin`: every vCPU busy-loops and reports progress, to show
//! that vCPUs sharing processors all move forward.
//!
//! # Invariants
//! Each vCPU prints [`SpinProgress`] for steps 1..=steps in order, each
//! after `iterations` loop turns, then halts. Arguments as documented at
//! `ipc::workload::SPIN`. Every [`CHECK_EVERY`] turns it serves the
//! integration channel (heartbeats) and ends at once when the root asked
//! for a shutdown.

use ipc::child::ChildBootInfo;
use ipc::workload::{SPIN_DEFAULT_ITERATIONS, SPIN_DEFAULT_STEPS, SpinProgress};
use partition_rt::println;

/// Loop turns between two looks at the integration channel.
const CHECK_EVERY: u64 = 1 << 16;

/// Runs on every vCPU.
pub fn run(info: &ChildBootInfo, vcpu: u32) -> ! {
    let steps = match info.args[0] {
        0 => SPIN_DEFAULT_STEPS,
        n => n,
    };
    let iterations = match info.args[1] {
        0 => SPIN_DEFAULT_ITERATIONS,
        n => n,
    };
    for step in 1..=steps {
        let mut turn = 0u64;
        while turn < iterations {
            // Keeps the loop from being folded away.
            turn = core::hint::black_box(turn) + 1;
            if turn.is_multiple_of(CHECK_EVERY) && crate::integration::stop_requested() {
                crate::integration::finish(false)
            }
        }
        println!("{}", SpinProgress { vcpu, step });
    }
    partition_rt::halt_forever()
}
