//! Workload `idle`: every vCPU says it sleeps, then sleeps in `STI; HLT`
//! until the root asks for a shutdown, taking interrupts (VMBus signals,
//! the integration services' heartbeats) as they come: the VM a node
//! keeps running without costing the host anything.
//!
//! # Invariants
//! One [`ipc::workload::IDLE_LINE`] per vCPU, then no busy loop. vCPU 0
//! (which takes every VMBus interrupt) waits in HLT with interrupts on;
//! each wake-up looks at the integration channel, and a shutdown request
//! ends the workload (`integration::finish`). Other vCPUs halt with
//! interrupts off at once (no interrupt would ever wake them to see a
//! shutdown, and the kernel reports the partition halted only when every
//! vCPU is).

use ipc::child::ChildBootInfo;
use partition_rt::println;

use crate::integration;

/// Runs on every vCPU.
pub fn run(_info: &ChildBootInfo, vcpu: u32) -> ! {
    println!("{} (vcpu {vcpu})", ipc::workload::IDLE_LINE);
    if vcpu != 0 {
        partition_rt::halt_forever()
    }
    partition_rt::wait_until(integration::stop_requested);
    integration::finish(false)
}
