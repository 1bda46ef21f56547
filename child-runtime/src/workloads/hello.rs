//! Workload `hello`: every vCPU says hello, then halts.
//!
//! # Invariants
//! One line per vCPU ([`VcpuHello`]), then `CLI; HLT`.

use ipc::child::ChildBootInfo;
use ipc::workload::VcpuHello;
use partition_rt::println;

/// Runs on every vCPU.
pub fn run(info: &ChildBootInfo, vcpu: u32) -> ! {
    println!(
        "{}",
        VcpuHello {
            vcpu,
            of: info.vcpu_count
        }
    );
    partition_rt::halt_forever()
}
