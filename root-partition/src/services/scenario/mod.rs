//! Running a scenario of `boot.cfg` ([`run`]): each [`Action`] in order —
//! start a child, pause and resume it, add and remove disks while it runs,
//! migrate it live, save it to a file and restore it, stop it gracefully,
//! wait until its heartbeat is lost, destroy or forget it — then watch
//! every child until it ends. Each step prints the lines the QEMU tests
//! look for (`ipc::markers` and the root's own lines).
//!
//! What is done through hypercalls alone is `crate::partition::control`'s,
//! over the [`Kernel`]; what needs the root's devices and buses (a new
//! child with its bus and disks, the disks of a running child, the bus
//! counters, a migration or a save that carries the bus along) is behind
//! [`ScenarioMachine`], which the binary implements with its modules.
//!
//! # Invariants
//! - The first failing action ends the scenario with its [`Failure`];
//!   the children already started are left as they are.
//! - Every wait ends: on what it waits for, on the child stopping, or on
//!   its deadline on the [`Kernel`]'s clock.

use alloc::string::String;
use core::cell::RefCell;

use ipc::hypercall::{Call, Name};
use ipc::markers;
use vsp::bus::{Heartbeat, ShutdownState};

use crate::config::{AbortAt, Action, ChildSpec, Scenario};
use crate::hv::Kernel;
use crate::migrate::Stats;
use crate::partition::control::{self, Buses};
use crate::partition::{Child, Failure, MAX_CHILDREN, Root, place};
use crate::say;
use crate::services::migration::quick::Placement;
use crate::services::migration::{MigrateError, report};
use crate::services::vm::machine::Partitions;

#[cfg(test)]
mod tests;

/// What a scenario needs of the root beyond hypercalls: its buses (as the
/// waits serve them, [`Buses`]), new children, their disks and bus
/// counters, and the migrations that carry a child's bus along.
pub trait ScenarioMachine: Partitions {
    /// Signals received from child slot `index`'s `to_root` port.
    fn signals(&self, index: usize) -> u32;
    /// Frames child `index`'s network adapter received.
    fn frames_received(&self, index: usize) -> u64;
    /// Requests child `index`'s storage controller completed.
    fn storage_served(&self, index: usize) -> u64;
    /// Live-migrates `child` (bus `index`) to a new partition at `base`;
    /// on success `child` describes the destination.
    fn live(
        &mut self,
        root: &Root,
        child: &mut Child,
        index: usize,
        base: u64,
        abort: Option<AbortAt>,
    ) -> Result<Stats, MigrateError>;
}

/// Runs `scenario` to its end: its actions in order, then a watch of
/// every child until it ends.
pub fn run<K: Kernel, M: ScenarioMachine>(
    k: &K,
    m: &mut M,
    root: &Root,
    scenario: &Scenario,
) -> Result<(), Failure> {
    let mut children: [Option<Child>; MAX_CHILDREN] = [None; MAX_CHILDREN];
    let mut freed: Option<(Name, u64)> = None;
    let khz = u64::from(root.tsc_khz);
    for action in scenario.actions() {
        match action {
            Action::Start(spec) => {
                let index = free_slot(&children)?;
                let child = m.start(root, &spec, index, &children)?;
                if let Some((old, base)) = freed.take()
                    && base == child.base
                {
                    say!(
                        k,
                        "{}",
                        markers::MemoryReused {
                            new: spec.name.as_str(),
                            old: old.as_str()
                        }
                    );
                }
                children[index] = Some(child);
                if spec.workload() == "dirty" {
                    dirty_check(k, m, &child, index)?;
                }
            }
            Action::Pause(name) => {
                let child = control::find(&children, name)?;
                control::pause_check(k, m, &child)?;
            }
            Action::Resume(name) => {
                let child = control::find(&children, name)?;
                control::resume_check(k, m, &child)?;
            }
            Action::HotAdd {
                child,
                disk,
                lun,
                after,
            } => {
                let index = control::position(&children, child)?;
                wait_served(k, m, &children, index, after)?;
                m.add_disk(index, lun, disk.as_str()).map_err(|e| {
                    say!(k, "root: hot add of {} failed: {e}", disk.as_str());
                    Failure::Check("hot add")
                })?;
            }
            Action::HotRemove { child, lun, after } => {
                let index = control::position(&children, child)?;
                wait_served(k, m, &children, index, after)?;
                m.remove_disk(index, lun).map_err(|e| {
                    say!(k, "root: hot remove of LUN {lun} failed: {e}");
                    Failure::Check("hot remove")
                })?;
            }
            Action::Migrate {
                child,
                after_frames,
                after_requests,
                after_ms,
                abort,
            } => {
                let index = control::position(&children, child)?;
                wait_frames(k, m, index, after_frames);
                wait_served(k, m, &children, index, after_requests)?;
                control::let_time_pass(k, m, after_ms * khz);
                let mut moved = children[index].ok_or(Failure::Missing("child"))?;
                let base = place(root, &children, moved.spec.memory).ok_or(Failure::NoMemory)?;
                let name = child.as_str();
                say!(
                    k,
                    "root: migrating {name} (live, {} MiB) to memory at {base:#x}",
                    moved.spec.memory >> 20
                );
                match m.live(root, &mut moved, index, base, abort) {
                    Ok(stats) => {
                        report(k, name, &stats);
                        say!(
                            k,
                            "root: {name} migrated: running from {base:#x}, source destroyed"
                        );
                        children[index] = Some(moved);
                    }
                    Err(MigrateError::Aborted(stats)) => {
                        report(k, name, &stats);
                        say!(k, "root: migration of {name} aborted: the source runs on");
                    }
                    Err(e) => {
                        say!(
                            k,
                            "root: migration of {name} failed: {e:?}; the source runs on"
                        );
                        if abort.is_none() {
                            return Err(Failure::Check("migration"));
                        }
                    }
                }
                // The child checks its memory on this signal.
                if let Some(port) = moved.from_root {
                    let _ = k.call(&Call::PortSignal { port });
                }
            }
            Action::Save {
                child,
                file,
                after_requests,
                after_ms,
            } => {
                let index = control::position(&children, child)?;
                wait_served(k, m, &children, index, after_requests)?;
                control::let_time_pass(k, m, after_ms * khz);
                let saved = children[index].ok_or(Failure::Missing("child"))?;
                let (name, path) = (child.as_str(), alloc::format!("/{}", file.as_str()));
                match m.save(root, &saved, index, &path) {
                    Ok((stats, bytes)) => {
                        report(k, name, &stats);
                        // Its bus state is in the file: never served again here.
                        m.forget(index);
                        control::destroy(k, &saved)?;
                        children[index] = None;
                        say!(
                            k,
                            "root: {name} saved to {} ({bytes} bytes, {} ms paused) and stopped",
                            file.as_str(),
                            stats.blackout_ns / 1_000_000
                        );
                    }
                    Err(e) => {
                        say!(k, "root: saving {name} failed: {e:?}; it runs on");
                        return Err(Failure::Check("save"));
                    }
                }
            }
            Action::Restore {
                child,
                file,
                after_ms,
            } => {
                control::let_time_pass(k, m, after_ms * khz);
                let index = free_slot(&children)?;
                let path = alloc::format!("/{}", file.as_str());
                let memory = m.saved_memory(&path).map_err(|e| {
                    say!(k, "root: {} cannot be restored: {e:?}", file.as_str());
                    Failure::Check("restore")
                })?;
                let base = place(root, &children, memory).ok_or(Failure::NoMemory)?;
                let at = Placement {
                    base,
                    index,
                    image_span: m.image_span(),
                };
                // Its priority and affinity: the scenario's for it.
                let spec = scenario
                    .actions()
                    .find_map(|a| match a {
                        Action::Start(s) if s.name == child => Some(s),
                        _ => None,
                    })
                    .unwrap_or(ChildSpec::new(child));
                match m.restore(root, &path, at, &spec) {
                    Ok(restored) if restored.spec.name == child => {
                        say!(
                            k,
                            "root: {} restored from {} into memory at {base:#x}",
                            child.as_str(),
                            file.as_str()
                        );
                        // The child checks its memory on this signal.
                        if let Some(port) = restored.from_root {
                            let _ = k.call(&Call::PortSignal { port });
                        }
                        children[index] = Some(restored);
                    }
                    Ok(other) => {
                        say!(
                            k,
                            "root: {} holds {}, not {}",
                            file.as_str(),
                            other.spec.name.as_str(),
                            child.as_str()
                        );
                        return Err(Failure::Check("restore"));
                    }
                    Err(e) => {
                        say!(k, "root: restoring {} failed: {e:?}", file.as_str());
                        return Err(Failure::Check("restore"));
                    }
                }
            }
            Action::Stop {
                child,
                timeout_ms,
                after_requests,
                after_ms,
            } => {
                let index = control::position(&children, child)?;
                wait_served(k, m, &children, index, after_requests)?;
                control::let_time_pass(k, m, after_ms * khz);
                let stopped = children[index].take().ok_or(Failure::Missing("child"))?;
                control::stop(k, m, root, &stopped, index, timeout_ms)?;
                freed = Some((child, stopped.base));
            }
            Action::Lost { child, within_ms } => {
                let index = control::position(&children, child)?;
                wait_lost(k, m, index, within_ms.saturating_mul(khz)).inspect_err(|_| {
                    say!(
                        k,
                        "root: {} still answers heartbeats after {within_ms} ms",
                        child.as_str()
                    );
                })?;
            }
            Action::Destroy(name) => {
                let index = control::position(&children, name)?;
                let child = children[index].take().ok_or(Failure::Missing("child"))?;
                // Its ring pages leave the root's address space with it.
                m.detach(index);
                control::destroy(k, &child)?;
                say!(
                    k,
                    "{}",
                    markers::ChildDestroyed {
                        name: name.as_str(),
                        mib: (child.pages * 4096) >> 20
                    }
                );
                freed = Some((name, child.base));
            }
            Action::Forget(name) => {
                let index = control::position(&children, name)?;
                let child = children[index].take().ok_or(Failure::Missing("child"))?;
                m.detach(index);
                control::forget(k, root, &child)?;
                say!(
                    k,
                    "{}",
                    markers::OrphanDestroyed {
                        name: name.as_str(),
                        mib: (child.pages * 4096) >> 20
                    }
                );
                freed = Some((name, child.base));
            }
        }
    }
    control::watch(k, m, &mut children)
}

/// The first free child slot.
fn free_slot(children: &[Option<Child>]) -> Result<usize, Failure> {
    children
        .iter()
        .position(Option::is_none)
        .ok_or(Failure::NoMemory)
}

/// Runs the dirty-logging check on child `index`, counting its signals
/// between the bus services the waits make.
fn dirty_check<K: Kernel, M: ScenarioMachine>(
    k: &K,
    m: &mut M,
    child: &Child,
    index: usize,
) -> Result<(), Failure> {
    let m = RefCell::new(m);
    control::dirty_check(k, &mut Shared(&m), child, || m.borrow().signals(index))
}

/// A machine shared between the waits' bus services and their condition.
struct Shared<'a, 'm, M>(&'a RefCell<&'m mut M>);

impl<M: ScenarioMachine> Buses for Shared<'_, '_, M> {
    fn service_all(&mut self) -> usize {
        self.0.borrow_mut().service_all()
    }
    fn drain(&mut self, index: usize) {
        self.0.borrow_mut().drain(index);
    }
    fn request_shutdown(&mut self, index: usize, timeout_ms: u32) -> Result<(), String> {
        self.0.borrow_mut().request_shutdown(index, timeout_ms)
    }
    fn shutdown_state(&mut self, index: usize) -> Option<ShutdownState> {
        self.0.borrow_mut().shutdown_state(index)
    }
    fn detach(&mut self, index: usize) {
        self.0.borrow_mut().detach(index);
    }
}

/// Waits until child `index`'s network adapter received `frames`,
/// serving every bus meanwhile.
fn wait_frames<K: Kernel, M: ScenarioMachine>(k: &K, m: &mut M, index: usize, frames: u64) {
    let m = RefCell::new(m);
    control::wait_serving(k, &mut Shared(&m), || {
        m.borrow().frames_received(index) >= frames
    });
}

/// Serves every bus until child `index`'s storage controller completed
/// `after` requests; fails if the child stops first.
fn wait_served<K: Kernel, M: ScenarioMachine>(
    k: &K,
    m: &mut M,
    children: &[Option<Child>],
    index: usize,
    after: u64,
) -> Result<(), Failure> {
    let child = children[index].ok_or(Failure::Missing("child"))?;
    // Not `wait_serving`: its final drain would not end while a busy
    // child keeps its controller full.
    loop {
        if m.storage_served(index) >= after {
            return Ok(());
        }
        if control::stopped(k, child.partition) {
            return Err(Failure::Check("child stopped before its disk requests"));
        }
        if m.service_all() == 0 {
            let _ = k.call(&Call::Yield);
        }
    }
}

/// Serves every bus until child `index`'s heartbeat is lost; fails when
/// `limit` counter ticks pass first.
fn wait_lost<K: Kernel, M: ScenarioMachine>(
    k: &K,
    m: &mut M,
    index: usize,
    limit: u64,
) -> Result<(), Failure> {
    let start = k.ticks();
    loop {
        let worked = m.service_all();
        if matches!(m.heartbeat_state(index), Some(Heartbeat::Unresponsive(_))) {
            return Ok(());
        }
        if k.ticks().wrapping_sub(start) > limit {
            return Err(Failure::Check("heartbeat not lost"));
        }
        if worked == 0 {
            let _ = k.call(&Call::Yield);
        }
    }
}
