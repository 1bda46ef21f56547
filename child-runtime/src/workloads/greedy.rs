//! Workload `greedy`: a child that tries to take more than it was given —
//! kernel memory (ports created and deleted without end, then as many as
//! it can hold) or processor time (vCPUs on itself above its priority
//! ceiling, spinning with interrupts off). Modes and lines as documented
//! at `ipc::workload::GREEDY`.
//!
//! # Invariants
//! - Every check prints exactly one [`HostileCheck`] line and counts once
//!   in the [`HostileSummary`], printed before the workload halts.
//! - Only vCPU 0 runs the attacks; the vCPUs it creates spin in
//!   `arch::hog_vcpu_start`'s hog and halt.

use alloc::vec::Vec;

use super::checks::Checks;
use ipc::child::ChildBootInfo;
use ipc::hypercall::{Call, MAX_PRIORITY, SlotHandle, Status};
use ipc::workload::{GREEDY_CPU, GREEDY_MEMORY, GREEDY_ROUNDS, GreedySpun};
use partition_rt::{halt_forever, hypercall, println};

use crate::arch;

fn port_create() -> Result<SlotHandle, Status> {
    let [raw, ..] = hypercall(&Call::PortCreate)?;
    SlotHandle::from_raw(raw)
}

fn delete(slot: SlotHandle) -> Result<(), Status> {
    hypercall(&Call::CapDelete { slot }).map(|_| ())
}

/// Runs on every vCPU.
pub fn run(info: &ChildBootInfo, vcpu: u32) -> ! {
    if vcpu != 0 {
        halt_forever()
    }
    let mut checks = Checks::new();
    match info.args[0] {
        GREEDY_MEMORY => memory(&mut checks),
        GREEDY_CPU => processor_time(info, &mut checks),
        other => checks.record("mode", Some(format_args!("unknown greedy mode {other}"))),
    }
    println!("{}", checks.summary());
    halt_forever()
}

/// Ports without end, then as many as the kernel gives.
fn memory(checks: &mut Checks) {
    let mut failure = None;
    for round in 0..GREEDY_ROUNDS {
        if let Err(e) = port_create().and_then(delete) {
            failure = Some((round, e));
            break;
        }
    }
    match failure {
        None => checks.record("create and delete a port 20000 times", None),
        Some((round, e)) => checks.record(
            "create and delete a port 20000 times",
            Some(format_args!("round {round}: {e:?}")),
        ),
    }
    // Then hold as many as it can: the kernel must refuse with a status.
    let mut held = Vec::new();
    let refusal = loop {
        match port_create() {
            Ok(port) => held.push(port),
            Err(e) => break e,
        }
        if held.len() > 4096 {
            break Status::Success;
        }
    };
    match refusal {
        Status::OutOfMemory => checks.record("ports beyond the quota are refused", None),
        other => checks.record(
            "ports beyond the quota are refused",
            Some(format_args!(
                "after {} ports: {other:?}, want OutOfMemory",
                held.len()
            )),
        ),
    }
    let deleted = held.iter().all(|&p| delete(p).is_ok());
    checks.record(
        "every held port deleted",
        (!deleted).then(|| format_args!("a delete failed")),
    );
    match port_create() {
        Ok(_) => checks.record("a port again after deleting", None),
        Err(e) => checks.record("a port again after deleting", Some(format_args!("{e:?}"))),
    }
}

/// vCPUs above the ceiling, then every vCPU it may have spinning with
/// interrupts off.
fn processor_time(info: &ChildBootInfo, checks: &mut Checks) {
    let ticks = info.tsc_khz.saturating_mul(info.args[1]);
    let until = partition_rt::rdtsc().saturating_add(ticks);
    let create = |priority: u8| -> Result<SlotHandle, Status> {
        let (rip, rsp, cr3) = arch::hog_vcpu_start().ok_or(Status::OutOfMemory)?;
        let [raw, ..] = hypercall(&Call::VcpuCreate {
            partition: info.self_slot,
            rip,
            rsp,
            cr3,
            arg: until,
            flags: u64::from(priority),
        })?;
        SlotHandle::from_raw(raw)
    };
    // The root gave it no priority above 0 (scenario `hogcpu`).
    let above = create(MAX_PRIORITY);
    let mut hogs = Vec::new();
    match above {
        Err(Status::InvalidArgument) => {
            checks.record("a vcpu above the priority ceiling is refused", None)
        }
        Err(e) => checks.record(
            "a vcpu above the priority ceiling is refused",
            Some(format_args!("got {e:?}, want InvalidArgument")),
        ),
        Ok(slot) => {
            checks.record(
                "a vcpu above the priority ceiling is refused",
                Some(format_args!("created at priority {MAX_PRIORITY}")),
            );
            hogs.push((slot, MAX_PRIORITY));
        }
    }
    // As many more as the kernel gives, at the highest priority it takes.
    let mut priority = hogs.first().map_or(MAX_PRIORITY, |h| h.1);
    loop {
        match create(priority) {
            Ok(slot) => hogs.push((slot, priority)),
            Err(Status::InvalidArgument) if priority > 0 && hogs.is_empty() => priority -= 1,
            Err(_) => break,
        }
    }
    let started = hogs
        .iter()
        .filter(|(slot, _)| hypercall(&Call::VcpuStart { vcpu: *slot }).is_ok())
        .count();
    checks.record(
        "extra vcpus created and started",
        (started == 0 || started != hogs.len())
            .then(|| format_args!("started some but not all, or none")),
    );
    // vCPU 0 spins too, interrupts off, until the same deadline.
    partition_rt::disable_interrupts();
    while partition_rt::rdtsc() < until {
        core::hint::spin_loop();
    }
    partition_rt::enable_interrupts();
    println!(
        "{}",
        GreedySpun {
            vcpus: started as u32 + 1,
            priority
        }
    );
}
