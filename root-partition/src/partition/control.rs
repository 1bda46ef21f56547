//! What the root does to a built child through hypercalls alone: find it,
//! destroy it, forget it (the kernel tears the orphan down), pause and
//! resume it with a check that its vCPUs stay put or move, the
//! dirty-logging check, stop it gracefully or turn it off, and watch
//! every child until it ends. The waits run on the [`Kernel`]'s clock and
//! serve the root's buses meanwhile through a [`Buses`].

use alloc::string::String;

use ipc::hypercall::{Call, Name, SlotHandle, Status, StopReason, run_state};
use ipc::markers;
use ipc::vcpu_state::VcpuState;
use vsp::bus::ShutdownState;

use super::build::call;
use super::{Child, Failure, Root};
use crate::hv::Kernel;
use crate::say;

/// How long the root waits for an orphan's teardown.
pub const ORPHAN_WAIT_MS: u64 = 5_000;

/// About 50 ms at the time-stamp counter rates QEMU and real machines use.
pub const A_WHILE: u64 = 100_000_000;

/// The children's buses (VMBus), as the waits here serve them.
pub trait Buses {
    /// Serves every bus once; the work done (0: none).
    fn service_all(&mut self) -> usize;
    /// Prints what child `index` said (before it ended).
    fn drain(&mut self, index: usize);
    /// Asks child `index` to shut down within `timeout_ms`; why it cannot
    /// be asked (no integration channel).
    fn request_shutdown(&mut self, index: usize, timeout_ms: u32) -> Result<(), String>;
    /// How child `index`'s shutdown request stands (`None`: no channel).
    fn shutdown_state(&mut self, index: usize) -> Option<ShutdownState>;
    /// Forgets child `index`'s bus before it is destroyed (its last lines
    /// first).
    fn detach(&mut self, index: usize);
}

/// The index of the child called `name`.
pub fn position(children: &[Option<Child>], name: Name) -> Result<usize, Failure> {
    children
        .iter()
        .position(|c| c.is_some_and(|c| c.spec.name == name))
        .ok_or(Failure::Missing("child"))
}

/// The child called `name`.
pub fn find(children: &[Option<Child>], name: Name) -> Result<Child, Failure> {
    children
        .iter()
        .flatten()
        .copied()
        .find(|c| c.spec.name == name)
        .ok_or(Failure::Missing("child"))
}

/// Whether `partition` has stopped (halted, faulted or destroyed).
pub fn stopped<K: Kernel>(k: &K, partition: SlotHandle) -> bool {
    matches!(
        k.call(&Call::PartitionStatus { partition }),
        Ok(s) if s[0] == run_state::STOPPED
    )
}

/// Destroys a child: its memory goes back to the root.
pub fn destroy<K: Kernel>(k: &K, child: &Child) -> Result<(), Failure> {
    call(
        k,
        "destroy",
        Call::PartitionDestroy {
            partition: child.partition,
        },
    )
    .map(|_| ())
}

/// Deletes the root's capabilities on a running child (its partition
/// last) and waits, at most [`ORPHAN_WAIT_MS`], until the microkernel has
/// destroyed the orphan: the root's capability on the child's memory goes
/// stale with the memory object.
pub fn forget<K: Kernel>(k: &K, root: &Root, child: &Child) -> Result<(), Failure> {
    for vcpu in child.vcpus.iter().flatten() {
        call(k, "delete vcpu", Call::CapDelete { slot: *vcpu })?;
    }
    call(
        k,
        "delete partition",
        Call::CapDelete {
            slot: child.partition,
        },
    )?;
    let deadline = k
        .ticks()
        .saturating_add(u64::from(root.tsc_khz) * ORPHAN_WAIT_MS);
    loop {
        match k.call(&Call::CapRevoke { slot: child.memory }) {
            Err(Status::StaleSlot) => return Ok(()),
            Ok(_) if k.ticks() < deadline => {
                let _ = k.call(&Call::Yield);
            }
            Ok(_) => return Err(Failure::Check("the orphan was not destroyed")),
            Err(s) => return Err(Failure::Call("revoke", s)),
        }
    }
}

/// Where a vCPU is: its instruction pointer and general registers (the
/// instruction pointer alone can stay the same while a loop runs, as TCG
/// only stops a vCPU at the head of a translated block).
pub fn position_of<K: Kernel>(k: &K, vcpu: SlotHandle) -> Result<(u64, [u64; 16]), Failure> {
    let state = k
        .scratch(|s| {
            let buffer = s.address();
            s.call(&Call::VcpuGetState { vcpu, buffer })?;
            Ok(VcpuState::from_page(s.page()))
        })
        .map_err(|e| Failure::Call("state", e))?;
    Ok((state.rip, state.gprs))
}

/// Yields `yields` times, serving the buses in between; as long as there
/// is bus work, it is done first and the yields wait.
pub fn let_others_run<K: Kernel>(k: &K, buses: &mut impl Buses, yields: u32) {
    let mut left = yields;
    while left > 0 {
        if buses.service_all() == 0 {
            let _ = k.call(&Call::Yield);
            left -= 1;
        }
    }
}

/// Lets time pass (about `ticks` counter ticks), yielding and serving the
/// buses meanwhile.
pub fn let_time_pass<K: Kernel>(k: &K, buses: &mut impl Buses, ticks: u64) {
    let start = k.ticks();
    while k.ticks().wrapping_sub(start) < ticks {
        if buses.service_all() == 0 {
            let _ = k.call(&Call::Yield);
        }
    }
}

/// Waits until `done`, serving the buses meanwhile, and once more after
/// it (what a child printed before signalling comes first).
pub fn wait_serving<K: Kernel>(k: &K, buses: &mut impl Buses, mut done: impl FnMut() -> bool) {
    loop {
        let worked = buses.service_all();
        if done() {
            while buses.service_all() > 0 {}
            return;
        }
        if worked == 0 {
            let _ = k.call(&Call::Yield);
        }
    }
}

/// Pauses every vCPU of a child and checks that their state stays put.
pub fn pause_check<K: Kernel>(k: &K, buses: &mut impl Buses, child: &Child) -> Result<(), Failure> {
    let vcpu = child.vcpus[0].ok_or(Failure::Missing("vcpu"))?;
    for v in child.vcpus.iter().flatten() {
        call(k, "pause", Call::VcpuPause { vcpu: *v })?;
    }
    let before = position_of(k, vcpu)?;
    let_time_pass(k, buses, A_WHILE);
    let after = position_of(k, vcpu)?;
    if before != after {
        return Err(Failure::Check("a paused vCPU moved"));
    }
    say!(k, "{}", markers::ChildPaused(child.spec.name.as_str()));
    Ok(())
}

/// Resumes a paused child and checks that it runs again.
pub fn resume_check<K: Kernel>(
    k: &K,
    buses: &mut impl Buses,
    child: &Child,
) -> Result<(), Failure> {
    let vcpu = child.vcpus[0].ok_or(Failure::Missing("vcpu"))?;
    let before = position_of(k, vcpu)?;
    for v in child.vcpus.iter().flatten() {
        call(k, "resume", Call::VcpuResume { vcpu: *v })?;
    }
    for _ in 0..50 {
        let_time_pass(k, buses, A_WHILE);
        call(k, "pause", Call::VcpuPause { vcpu })?;
        let now = position_of(k, vcpu)?;
        call(k, "resume", Call::VcpuResume { vcpu })?;
        if now != before {
            say!(k, "{}", markers::ChildResumed(child.spec.name.as_str()));
            return Ok(());
        }
    }
    Err(Failure::Check("a resumed vCPU did not move"))
}

/// The dirty-logging check (see the `dirty` workload): wait for "ready"
/// (`signals()` at 1), clear the log, tell the child to write, wait for
/// "done" (2), and compare with what the child says it wrote.
pub fn dirty_check<K: Kernel>(
    k: &K,
    buses: &mut impl Buses,
    child: &Child,
    signals: impl Fn() -> u32,
) -> Result<(), Failure> {
    let name = child.spec.name.as_str();
    wait_serving(k, buses, || signals() >= 1);
    let window = child.spec.args[0];
    let fetch = || -> Result<u64, Failure> {
        k.scratch(|s| {
            let buffer = s.address();
            s.call(&Call::DirtyFetch {
                partition: child.partition,
                first_gpa: window,
                pages: 64,
                buffer,
            })?;
            let mut word = [0u8; 8];
            word.copy_from_slice(&s.page()[..8]);
            Ok(u64::from_le_bytes(word))
        })
        .map_err(|e| Failure::Call("fetch", e))
    };
    fetch()?; // Clear whatever the child touched while starting.
    call(
        k,
        "event",
        Call::PortSignal {
            port: child.from_root.ok_or(Failure::Missing("port"))?,
        },
    )?;
    wait_serving(k, buses, || signals() >= 2);
    let dirty = fetch()?;
    if dirty != child.spec.args[1] {
        say!(
            k,
            "root: dirty log of {name}: got {dirty:#x}, expected {:#x}",
            child.spec.args[1]
        );
        return Err(Failure::Check("dirty log mismatch"));
    }
    say!(
        k,
        "{}",
        markers::DirtyLogMatches {
            name,
            pages: dirty.count_ones()
        }
    );
    if fetch()? != 0 {
        return Err(Failure::Check("dirty log not cleared"));
    }
    say!(k, "{}", markers::DirtyLogCleared(name));
    Ok(())
}

/// Stops a child (bus `index`): asks for a graceful shutdown with a time
/// limit of `timeout_ms` and serves until it reported `Done` and the
/// kernel reports it halted; turns it off (destroys it) when the limit
/// passes, it refuses, or it has no integration channel. Either way its
/// bus is detached (its last lines printed) and it is destroyed; the line
/// says which way it went.
pub fn stop<K: Kernel>(
    k: &K,
    buses: &mut impl Buses,
    root: &Root,
    child: &Child,
    index: usize,
    timeout_ms: u32,
) -> Result<(), Failure> {
    let name = child.spec.name.as_str();
    let start = k.ticks();
    let khz = u64::from(root.tsc_khz).max(1);
    let elapsed_ms = || k.ticks().wrapping_sub(start) / khz;
    let why = if let Err(e) = buses.request_shutdown(index, timeout_ms) {
        say!(k, "root: {name}: no shutdown request possible: {e}");
        Some("no integration channel")
    } else {
        loop {
            let worked = buses.service_all();
            match buses.shutdown_state(index) {
                Some(ShutdownState::Done) if stopped(k, child.partition) => break None,
                Some(ShutdownState::Refused) => break Some("refused"),
                Some(ShutdownState::TimedOut) => break Some(markers::TIME_LIMIT_PASSED),
                // Done, not halted yet: it has until the limit.
                Some(ShutdownState::Done) if elapsed_ms() > u64::from(timeout_ms) => {
                    break Some(markers::TIME_LIMIT_PASSED);
                }
                Some(_) => {}
                None => break Some("no integration channel"),
            }
            if worked == 0 {
                let _ = k.call(&Call::Yield);
            }
        }
    };
    let ms = elapsed_ms();
    // Its last lines first; its ring pages leave the root with it.
    buses.detach(index);
    destroy(k, child)?;
    match why {
        None => say!(k, "{}", markers::StoppedGracefully { child: name, ms }),
        Some(why) => say!(
            k,
            "{}",
            markers::TurnedOff {
                child: name,
                ms,
                why
            }
        ),
    }
    Ok(())
}

/// Waits until every child has ended, reporting each.
pub fn watch<K: Kernel>(
    k: &K,
    buses: &mut impl Buses,
    children: &mut [Option<Child>],
) -> Result<(), Failure> {
    loop {
        let mut running = 0;
        for (index, slot) in children.iter_mut().enumerate() {
            let Some(child) = slot.as_mut().filter(|c| !c.ended) else {
                continue;
            };
            let s = call(
                k,
                "status",
                Call::PartitionStatus {
                    partition: child.partition,
                },
            )?;
            if s[0] == run_state::STOPPED {
                child.ended = true;
                // Print what it said before it stopped.
                buses.drain(index);
                let reason = StopReason::from_raw(s[1]).unwrap_or(StopReason::UnhandledExit);
                say!(
                    k,
                    "{}",
                    markers::ChildEnded {
                        name: child.spec.name.as_str(),
                        reason,
                        detail: s[2]
                    }
                );
            } else {
                running += 1;
            }
        }
        if running == 0 {
            say!(k, "{}", markers::ALL_CHILDREN_ENDED);
            return Ok(());
        }
        let_others_run(k, buses, 20);
    }
}
