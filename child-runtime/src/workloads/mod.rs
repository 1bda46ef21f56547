//! The workloads the child runtime can run, one module each, chosen by the
//! name in the boot page (`ipc::workload` documents names, args and lines).
//!
//! # Invariants
//! Every workload ends by halting its vCPU (`CLI; HLT`); none returns.

use ipc::child::ChildBootInfo;
use ipc::workload;

mod chatty;
mod checks;
mod dirty;
mod disk;
mod frames;
mod greedy;
mod hang;
mod hello;
mod hostile;
mod hostile_timers;
mod idle;
mod instructions;
mod kv;
mod memdirty;
mod netflood;
mod sleep;
mod spin;
mod vmbus_hostile;

/// Whether the runtime has a workload called `name`.
pub fn exists(name: &str) -> bool {
    workload::ALL.contains(&name)
        || name == ipc::disk::DISK
        || name == ipc::kv::KV
        || name == ipc::kv::NETFLOOD
        || name == ipc::kv::FRAMES
        || name == ipc::memdirty::MEMDIRTY
}

/// Runs the boot page's workload on this vCPU.
pub fn run(info: &ChildBootInfo, vcpu: u32) -> ! {
    match info.workload() {
        workload::HELLO => hello::run(info, vcpu),
        workload::IDLE => idle::run(info, vcpu),
        workload::SPIN => spin::run(info, vcpu),
        workload::DIRTY => dirty::run(info, vcpu),
        workload::HOSTILE => hostile::run(info, vcpu),
        workload::CHATTY => chatty::run(info, vcpu),
        workload::VMBUS_HOSTILE => vmbus_hostile::run(info, vcpu),
        workload::GREEDY => greedy::run(info, vcpu),
        workload::INSTRUCTIONS => instructions::run(info, vcpu),
        workload::HANG => hang::run(info, vcpu),
        workload::SLEEP => sleep::run(info, vcpu),
        workload::HOSTILE_TIMERS => hostile_timers::run(info, vcpu),
        ipc::disk::DISK => disk::run(info, vcpu),
        ipc::kv::KV => kv::run(info, vcpu),
        ipc::kv::NETFLOOD => netflood::run(info, vcpu),
        ipc::kv::FRAMES => frames::run(info, vcpu),
        ipc::memdirty::MEMDIRTY => memdirty::run(info, vcpu),
        // `exists` was checked at boot.
        _ => partition_rt::halt_forever(),
    }
}
