//! Workload `spin`: every vCPU busy-loops and reports progress, to show
//! that vCPUs sharing processors all move forward.
//!
//! # Invariants
//! Each vCPU prints [`SpinProgress`] for steps 1..=steps in order, each
//! after `iterations` loop turns, then halts. Arguments as documented at
//! `ipc::workload::SPIN`.

use ipc::child::ChildBootInfo;
use ipc::workload::{SPIN_DEFAULT_ITERATIONS, SPIN_DEFAULT_STEPS, SpinProgress};
use partition_rt::println;

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
        }
        println!("{}", SpinProgress { vcpu, step });
    }
    partition_rt::halt_forever()
}
