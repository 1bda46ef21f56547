//! Workload `idle`: every vCPU says it sleeps, then sleeps in `STI; HLT`
//! for ever, taking interrupts (VMBus signals) as they come: the VM a node
//! keeps running without costing the host anything.
//!
//! # Invariants
//! One [`ipc::workload::IDLE_LINE`] per vCPU, then no busy loop: every
//! wait is a HLT with interrupts on.

use ipc::child::ChildBootInfo;
use partition_rt::println;

/// Runs on every vCPU.
pub fn run(_info: &ChildBootInfo, vcpu: u32) -> ! {
    println!("{} (vcpu {vcpu})", ipc::workload::IDLE_LINE);
    loop {
        partition_rt::wait_until(|| false);
    }
}
