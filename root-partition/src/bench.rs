//! The null-hypercall round trip, measured by the root partition with the
//! time-stamp counter (instructions under QEMU `-icount shift=0`).

use ipc::hypercall::Call;
use ipc::markers::HypercallRoundTrip;

const BATCHES: u32 = 20;
const CALLS: u32 = 1000;

/// Makes `BATCHES` batches of `CALLS` null hypercalls; reports the cheapest
/// batch's cost per call (timer interrupts inflate the others).
pub fn null_hypercall() -> HypercallRoundTrip {
    let mut best = u64::MAX;
    for _ in 0..BATCHES {
        let start = partition_rt::rdtsc();
        for _ in 0..CALLS {
            let _ = partition_rt::hypercall(&Call::Null);
        }
        let ticks = partition_rt::rdtsc().wrapping_sub(start);
        best = best.min(ticks / CALLS as u64);
    }
    HypercallRoundTrip {
        instructions: best,
        batches: BATCHES,
        calls: CALLS,
    }
}
