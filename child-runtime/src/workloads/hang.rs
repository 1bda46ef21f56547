//! Workload `hang`: a child whose integration services misbehave
//! (`ipc::workload::HANG` documents the modes).
//!
//! # Invariants
//! Only vCPU 0 works (others halt). Mode silent answers heartbeats for
//! `args[1]` ms (by the time-stamp counter), then spins with interrupts
//! off and never touches the channel again; mode stubborn answers
//! heartbeats for ever and never acts on a shutdown request.

use ipc::child::ChildBootInfo;
use ipc::workload::{HANG_SILENT, HANG_STUBBORN, HangSilent};
use partition_rt::println;

use crate::integration;

/// Runs on every vCPU.
pub fn run(info: &ChildBootInfo, vcpu: u32) -> ! {
    if vcpu != 0 {
        partition_rt::halt_forever()
    }
    let [mode, ms, ..] = info.args;
    if mode == HANG_STUBBORN {
        integration::ignore_shutdowns();
    }
    let start = partition_rt::rdtsc();
    let until = ms.saturating_mul(info.tsc_khz);
    loop {
        integration::stop_requested();
        if mode == HANG_SILENT && partition_rt::rdtsc().wrapping_sub(start) >= until {
            break;
        }
        for _ in 0..1000 {
            partition_rt::pause();
        }
    }
    println!("{}", HangSilent);
    partition_rt::disable_interrupts();
    loop {
        partition_rt::pause();
    }
}
