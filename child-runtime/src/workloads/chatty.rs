//! Workload `chatty`: vCPU 0 prints many console lines as fast as the
//! console takes them (the VMBus console test), then a summary.
//!
//! # Invariants
//! Lines are numbered 1..=n in order ([`ChattyLine`]); the last line is
//! [`ChattyDone`]. Other vCPUs halt at once.

use ipc::child::ChildBootInfo;
use ipc::workload::{CHATTY_DEFAULT_LINES, ChattyDone, ChattyLine};
use partition_rt::println;

/// Runs on every vCPU.
pub fn run(info: &ChildBootInfo, vcpu: u32) -> ! {
    if vcpu != 0 {
        partition_rt::halt_forever()
    }
    let of = match info.args[0] {
        0 => CHATTY_DEFAULT_LINES,
        n => n,
    };
    for seq in 1..=of {
        println!("{}", ChattyLine { seq, of });
    }
    let (lines, signals) = crate::vmbus::console_stats().unwrap_or((0, 0));
    println!("{}", ChattyDone { lines, signals });
    partition_rt::halt_forever()
}
