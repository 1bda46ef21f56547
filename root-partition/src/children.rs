//! Running a scenario: preparing, creating and starting children through
//! hypercalls, pausing, resuming and destroying them, the dirty-logging
//! check, and watching every child until it ends.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use ipc::boot::BootInfo;
use ipc::child::{CHILD_EVENT_VECTOR, ChildBootInfo};
use ipc::elf::Image;
use ipc::hypercall::{Call, Name, Rights, SlotHandle, Status, StopReason, run_state};
use ipc::markers;
use ipc::vcpu_state::VcpuState;
use partition_rt::hypercall;
use root_partition::config::{Action, ChildSpec, Scenario};
use root_partition::layout::{Layout, STACK_BYTES, STACK_TOP};

use crate::hal;
pub use root_partition::partition::{
    Child, Failure, MAX_CHILDREN, Root, discover, handle, heap_range, place,
};

/// Vector of the first child's `to_root` port on the root's vCPU.
const TO_ROOT_VECTOR: u8 = 0x80;

/// Signals received from each child slot's `to_root` port.
static SIGNALS: [AtomicU32; MAX_CHILDREN] = [const { AtomicU32::new(0) }; MAX_CHILDREN];
/// Each child slot's `to_root` port (raw slot handle), to re-arm it.
static TO_ROOT_PORTS: [AtomicU64; MAX_CHILDREN] = [const { AtomicU64::new(0) }; MAX_CHILDREN];

fn on_signal(vector: u8) {
    let index = vector.wrapping_sub(TO_ROOT_VECTOR) as usize;
    if let (Some(counter), Some(port)) = (SIGNALS.get(index), TO_ROOT_PORTS.get(index)) {
        counter.fetch_add(1, Ordering::AcqRel);
        if let Ok(slot) = SlotHandle::from_raw(port.load(Ordering::Acquire)) {
            let _ = hypercall(&Call::Acknowledge { slot });
        }
    }
}

macro_rules! println {
    ($($arg:tt)*) => {
        partition_rt::console::print_line(format_args!($($arg)*))
    };
}

/// Makes a hypercall (through the scratch page when the microkernel writes
/// into the caller's memory); a failure names the call.
pub fn call(what: &'static str, c: Call) -> Result<[u64; 3], Failure> {
    use root_partition::hv::Kernel;
    hal::kernel::HwKernel
        .any_call(&c)
        .map_err(|s| Failure::Call(what, s))
}

/// Installs the handlers of every child's `to_root` vector and of every
/// VMBus vector.
pub fn install_handlers() {
    for i in 0..MAX_CHILDREN {
        let _ = partition_rt::set_interrupt_handler(TO_ROOT_VECTOR + i as u8, on_signal);
    }
    crate::vmbus::install_handlers();
}

/// Runs a scenario to its end.
pub fn run(info: &BootInfo, scenario: &Scenario) -> Result<(), Failure> {
    let root = discover(info)?;
    crate::vmbus::choose_windows(info.shared_window);
    let image_bytes = hal::ram::modules().child_image;
    let image = Image::parse(image_bytes, ipc::boot::PARTITION_IMAGE_BASE, u64::MAX)
        .map_err(Failure::Image)?;
    install_handlers();
    crate::vmbus::set_clock(u64::from(root.tsc_khz));
    partition_rt::enable_interrupts();
    let mut children: [Option<Child>; MAX_CHILDREN] = [None; MAX_CHILDREN];
    let mut freed: Option<(Name, u64)> = None;
    for action in scenario.actions() {
        match action {
            Action::Start(spec) => {
                let index = children
                    .iter()
                    .position(Option::is_none)
                    .ok_or(Failure::NoMemory)?;
                let child = start(&root, &image, &spec, index, &children)?;
                if let Some((old, base)) = freed.take()
                    && base == child.base
                {
                    println!(
                        "{}",
                        markers::MemoryReused {
                            new: spec.name.as_str(),
                            old: old.as_str()
                        }
                    );
                }
                children[index] = Some(child);
                if spec.workload() == "dirty" {
                    dirty_check(&child, index)?;
                }
            }
            Action::Pause(name) => {
                let child = find(&children, name)?;
                pause_check(&child)?;
            }
            Action::Resume(name) => {
                let child = find(&children, name)?;
                resume_check(&child)?;
            }
            Action::HotAdd {
                child,
                disk,
                lun,
                after,
            } => {
                let index = position(&children, child)?;
                wait_served(&children, index, after)?;
                crate::vmbus::add_disk(index, lun, disk.as_str(), true).map_err(|e| {
                    println!("root: hot add of {} failed: {e:?}", disk.as_str());
                    Failure::Check("hot add")
                })?;
            }
            Action::HotRemove { child, lun, after } => {
                let index = position(&children, child)?;
                wait_served(&children, index, after)?;
                crate::vmbus::remove_disk(index, lun).map_err(|e| {
                    println!("root: hot remove of LUN {lun} failed: {e:?}");
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
                let index = position(&children, child)?;
                wait_serving(|| crate::vmbus::frames_received(index) >= after_frames);
                wait_served(&children, index, after_requests)?;
                let_time_pass(after_ms * u64::from(root.tsc_khz));
                let mut moved = children[index].ok_or(Failure::Missing("child"))?;
                let base = place(&root, &children, moved.spec.memory).ok_or(Failure::NoMemory)?;
                let name = child.as_str();
                println!(
                    "root: migrating {name} (live, {} MiB) to memory at {base:#x}",
                    moved.spec.memory >> 20
                );
                match crate::migration::live(&root, &mut moved, index, base, abort) {
                    Ok(stats) => {
                        crate::migration::report(name, &stats);
                        println!("root: {name} migrated: running from {base:#x}, source destroyed");
                        children[index] = Some(moved);
                    }
                    Err(crate::migration::MigrateError::Aborted(stats)) => {
                        crate::migration::report(name, &stats);
                        println!("root: migration of {name} aborted: the source runs on");
                    }
                    Err(e) => {
                        println!("root: migration of {name} failed: {e:?}; the source runs on");
                        if abort.is_none() {
                            return Err(Failure::Check("migration"));
                        }
                    }
                }
                // The child checks its memory on this signal.
                if let Some(port) = moved.from_root {
                    let _ = hypercall(&Call::PortSignal { port });
                }
            }
            Action::Save {
                child,
                file,
                after_requests,
                after_ms,
            } => {
                let index = position(&children, child)?;
                wait_served(&children, index, after_requests)?;
                let_time_pass(after_ms * u64::from(root.tsc_khz));
                let saved = children[index].ok_or(Failure::Missing("child"))?;
                let (name, path) = (child.as_str(), alloc::format!("/{}", file.as_str()));
                match crate::quick::save(&root, &saved, index, &path) {
                    Ok((stats, bytes)) => {
                        crate::migration::report(name, &stats);
                        // Its bus state is in the file: never served again here.
                        crate::vmbus::forget(index);
                        call(
                            "destroy",
                            Call::PartitionDestroy {
                                partition: saved.partition,
                            },
                        )?;
                        children[index] = None;
                        println!(
                            "root: {name} saved to {} ({bytes} bytes, {} ms paused) and stopped",
                            file.as_str(),
                            stats.blackout_ns / 1_000_000
                        );
                    }
                    Err(e) => {
                        println!("root: saving {name} failed: {e:?}; it runs on");
                        return Err(Failure::Check("save"));
                    }
                }
            }
            Action::Restore {
                child,
                file,
                after_ms,
            } => {
                let_time_pass(after_ms * u64::from(root.tsc_khz));
                let index = children
                    .iter()
                    .position(Option::is_none)
                    .ok_or(Failure::NoMemory)?;
                let path = alloc::format!("/{}", file.as_str());
                let memory = crate::quick::saved_memory(&path).map_err(|e| {
                    println!("root: {} cannot be restored: {e:?}", file.as_str());
                    Failure::Check("restore")
                })?;
                let base = place(&root, &children, memory).ok_or(Failure::NoMemory)?;
                let at = crate::quick::Placement {
                    base,
                    index,
                    image_span: image.span(),
                };
                match crate::quick::restore(&root, &path, at) {
                    Ok(restored) if restored.spec.name == child => {
                        println!(
                            "root: {} restored from {} into memory at {base:#x}",
                            child.as_str(),
                            file.as_str()
                        );
                        // The child checks its memory on this signal.
                        if let Some(port) = restored.from_root {
                            let _ = hypercall(&Call::PortSignal { port });
                        }
                        children[index] = Some(restored);
                    }
                    Ok(other) => {
                        println!(
                            "root: {} holds {}, not {}",
                            file.as_str(),
                            other.spec.name.as_str(),
                            child.as_str()
                        );
                        return Err(Failure::Check("restore"));
                    }
                    Err(e) => {
                        println!("root: restoring {} failed: {e:?}", file.as_str());
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
                let index = position(&children, child)?;
                wait_served(&children, index, after_requests)?;
                let_time_pass(after_ms * u64::from(root.tsc_khz));
                let stopped = children[index].take().ok_or(Failure::Missing("child"))?;
                stop(&root, &stopped, index, timeout_ms)?;
                freed = Some((child, stopped.base));
            }
            Action::Lost { child, within_ms } => {
                let index = position(&children, child)?;
                let start = partition_rt::rdtsc();
                let limit = within_ms.saturating_mul(u64::from(root.tsc_khz));
                loop {
                    let worked = crate::vmbus::service_all();
                    if matches!(
                        crate::vmbus::heartbeat_state(index),
                        Some(vsp::bus::Heartbeat::Unresponsive(_))
                    ) {
                        break;
                    }
                    if partition_rt::rdtsc().wrapping_sub(start) > limit {
                        println!(
                            "root: {} still answers heartbeats after {within_ms} ms",
                            child.as_str()
                        );
                        return Err(Failure::Check("heartbeat not lost"));
                    }
                    if worked == 0 {
                        let _ = hypercall(&Call::Yield);
                    }
                }
            }
            Action::Destroy(name) => {
                let index = children
                    .iter()
                    .position(|c| c.is_some_and(|c| c.spec.name == name))
                    .ok_or(Failure::Missing("child"))?;
                let child = children[index].take().ok_or(Failure::Missing("child"))?;
                // Its ring pages leave the root's address space with it.
                crate::vmbus::detach(index);
                call(
                    "destroy",
                    Call::PartitionDestroy {
                        partition: child.partition,
                    },
                )?;
                println!(
                    "{}",
                    markers::ChildDestroyed {
                        name: name.as_str(),
                        mib: (child.pages * 4096) >> 20
                    }
                );
                freed = Some((name, child.base));
            }
            Action::Forget(name) => {
                let index = position(&children, name)?;
                let child = children[index].take().ok_or(Failure::Missing("child"))?;
                crate::vmbus::detach(index);
                forget(&root, &child)?;
                println!(
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
    watch(&mut children)
}

/// Deletes the root's capabilities on a running child (its partition
/// last) and waits, at most [`ORPHAN_WAIT_MS`], until the microkernel has
/// destroyed the orphan: the root's capability on the child's memory goes
/// stale with the memory object.
fn forget(root: &Root, child: &Child) -> Result<(), Failure> {
    for vcpu in child.vcpus.iter().flatten() {
        call("delete vcpu", Call::CapDelete { slot: *vcpu })?;
    }
    call(
        "delete partition",
        Call::CapDelete {
            slot: child.partition,
        },
    )?;
    let deadline = partition_rt::rdtsc().saturating_add(u64::from(root.tsc_khz) * ORPHAN_WAIT_MS);
    loop {
        match hypercall(&Call::CapRevoke { slot: child.memory }) {
            Err(Status::StaleSlot) => return Ok(()),
            Ok(_) if partition_rt::rdtsc() < deadline => {
                let _ = hypercall(&Call::Yield);
            }
            Ok(_) => return Err(Failure::Check("the orphan was not destroyed")),
            Err(s) => return Err(Failure::Call("revoke", s)),
        }
    }
}

/// Stops a child: asks for a graceful shutdown with a time limit of
/// `timeout_ms` and serves until it reported `Done` and the kernel reports
/// it halted; turns it off (destroys it) when the limit passes, it
/// refuses, or it has no integration channel. Either way its bus is
/// drained (its last lines printed) and it is destroyed; the line says
/// which way it went.
fn stop(root: &Root, child: &Child, index: usize, timeout_ms: u32) -> Result<(), Failure> {
    use vsp::bus::ShutdownState;
    let name = child.spec.name.as_str();
    let start = partition_rt::rdtsc();
    let khz = u64::from(root.tsc_khz).max(1);
    let elapsed_ms = || partition_rt::rdtsc().wrapping_sub(start) / khz;
    let halted = || {
        matches!(
            hypercall(&Call::PartitionStatus { partition: child.partition }),
            Ok(s) if s[0] == run_state::STOPPED
        )
    };
    let why = match crate::vmbus::request_shutdown(index, timeout_ms) {
        Err(e) => {
            println!("root: {name}: no shutdown request possible: {e:?}");
            Some("no integration channel")
        }
        Ok(()) => loop {
            let worked = crate::vmbus::service_all();
            match crate::vmbus::shutdown_state(index) {
                Some(ShutdownState::Done) if halted() => break None,
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
                let _ = hypercall(&Call::Yield);
            }
        },
    };
    let ms = elapsed_ms();
    // Its last lines first; its ring pages leave the root with it.
    crate::vmbus::detach(index);
    call(
        "destroy",
        Call::PartitionDestroy {
            partition: child.partition,
        },
    )?;
    match why {
        None => println!("{}", markers::StoppedGracefully { child: name, ms }),
        Some(why) => println!(
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

/// How long the root waits for an orphan's teardown.
const ORPHAN_WAIT_MS: u64 = 5_000;

fn position(children: &[Option<Child>], name: Name) -> Result<usize, Failure> {
    children
        .iter()
        .position(|c| c.is_some_and(|c| c.spec.name == name))
        .ok_or(Failure::Missing("child"))
}

/// Serves every bus until child `index`'s storage controller completed
/// `after` requests; fails if the child stops first.
fn wait_served(children: &[Option<Child>], index: usize, after: u64) -> Result<(), Failure> {
    let child = children[index].ok_or(Failure::Missing("child"))?;
    // Not `wait_serving`: its final drain would not end while a busy
    // child keeps its controller full.
    loop {
        if crate::vmbus::storage_served(index) >= after {
            return Ok(());
        }
        let stopped = matches!(
            hypercall(&Call::PartitionStatus { partition: child.partition }),
            Ok(s) if s[0] == run_state::STOPPED
        );
        if stopped {
            return Err(Failure::Check("child stopped before its disk requests"));
        }
        if crate::vmbus::service_all() == 0 {
            let _ = hypercall(&Call::Yield);
        }
    }
}

fn find(children: &[Option<Child>], name: Name) -> Result<Child, Failure> {
    children
        .iter()
        .flatten()
        .copied()
        .find(|c| c.spec.name == name)
        .ok_or(Failure::Missing("child"))
}

/// Builds, fills and starts child `spec` as slot `index` (its VMBus index)
/// in free memory of the pool: the one partition-construction path of a
/// new child (scenario or node).
pub fn start(
    root: &Root,
    image: &Image<'_>,
    spec: &ChildSpec,
    index: usize,
    children: &[Option<Child>],
) -> Result<Child, Failure> {
    let (span_start, span_end) = image.span();
    let layout = Layout::new(spec.memory, span_start, span_end).map_err(Failure::Layout)?;
    let base = place(root, children, spec.memory).ok_or(Failure::NoMemory)?;
    let pages = spec.memory / 4096;
    // Prepare the memory while it is still the root's.
    let mut lease = hal::ram::lease(base, spec.memory).map_err(|_| Failure::NoMemory)?;
    let memory = lease.bytes();
    let tables = layout.tables();
    memory[..tables.end as usize].fill(0);
    for (gpa, value) in layout.table_entries() {
        memory[gpa as usize..gpa as usize + 8].copy_from_slice(&value.to_le_bytes());
    }
    for seg in image.segments() {
        let at = layout.image_gpa(seg.vaddr) as usize;
        let bytes = image.file_bytes(seg);
        memory[at..at + bytes.len()].copy_from_slice(bytes);
        memory[at + bytes.len()..at + seg.mem_size as usize].fill(0);
    }
    // Create it: the memory leaves the root.
    drop(lease);
    let first_page = (base - root.ram_range.start) / 4096;
    let r = call(
        "create",
        Call::PartitionCreate {
            authority: root.authority,
            memory: root.ram,
            first_page,
            pages,
            name: spec.name,
            ceiling: spec.priority,
        },
    )?;
    let (partition, child_memory, child_self) = (handle(r[0])?, handle(r[1])?, handle(r[2])?);
    let rwx = Rights::READ | Rights::WRITE | Rights::EXECUTE;
    call(
        "map",
        Call::MemoryMap {
            partition,
            memory: child_memory,
            first_page: 1,
            gpa: 0x1000,
            pages: pages - 1,
            access: rwx,
        },
    )?;
    let mut vcpus = [None; 4];
    for (i, slot) in vcpus.iter_mut().enumerate().take(spec.vcpus as usize) {
        let affinity = spec.cpu.map_or(0, |c| c as u64 + i as u64 + 1);
        let flags = spec.priority as u64 | (affinity << 8);
        let rsp = STACK_TOP - i as u64 * STACK_BYTES - 8;
        let r = call(
            "vcpu",
            Call::VcpuCreate {
                partition,
                rip: image.entry,
                rsp,
                cr3: layout.cr3(),
                arg: layout.boot_page(),
                flags,
            },
        )?;
        *slot = Some(handle(r[0])?);
    }
    let vcpu0 = vcpus[0].ok_or(Failure::Missing("vcpu"))?;
    if ipc::workload::binds_own_port(spec.workload()) {
        // It binds a port of its own to its vCPU 0 (the interrupt-window
        // check, a timer's port).
        call(
            "own vcpu",
            Call::CapDelegate {
                slot: vcpu0,
                target: partition,
                rights: Rights::CONTROL,
            },
        )?;
    }
    // Ports: child -> root (bound to the root's vCPU), root -> child (bound to the child's vCPU 0).
    let child_to_root = make_to_root(root, index, partition, None)?;
    let from_root = handle(call("port", Call::PortCreate)?[0])?;
    call(
        "bind",
        Call::PortBind {
            port: from_root,
            vcpu: vcpu0,
            vector: CHILD_EVENT_VECTOR,
        },
    )?;
    let child_from_root = handle(
        call(
            "grant",
            Call::CapDelegate {
                slot: from_root,
                target: partition,
                rights: Rights::BIND,
            },
        )?[0],
    )?;
    let (vmbus_signal, vmbus_event) = crate::vmbus::attach(
        spec.name,
        crate::vmbus::RootPlatform {
            root: root.authority,
            root_vcpu: root.vcpu,
            partition,
            memory: child_memory,
            vcpu0,
            base,
            layout,
            index,
            to_child: [None; crate::vmbus::CHANNELS],
            shared: Vec::new(),
        },
    )
    .map_err(|_| Failure::Check("vmbus control channel"))?;
    for (lun, disk) in spec.disks.iter().enumerate() {
        if let Some(disk) = disk {
            crate::vmbus::add_disk(index, lun as u8, disk.as_str(), false).map_err(|e| {
                println!(
                    "root: {} LUN {lun} ({}): {e:?}",
                    spec.name.as_str(),
                    disk.as_str()
                );
                Failure::Check("disk")
            })?;
        }
    }
    let mut boot = ChildBootInfo {
        name: spec.name,
        vcpu_count: spec.vcpus,
        workload: spec.workload,
        args: spec.args,
        memory_bytes: spec.memory,
        heap: layout.heap,
        stack_top: STACK_TOP,
        stack_bytes: STACK_BYTES,
        self_slot: child_self,
        to_root: Some(child_to_root),
        from_root: Some(child_from_root),
        vmbus_control: layout.vmbus_control(),
        vmbus_signal: Some(vmbus_signal),
        vmbus_event: Some(vmbus_event),
        tsc_khz: u64::from(root.tsc_khz),
    };
    boot.workload = spec.workload;
    hal::scratch::with(|s| {
        s.page_mut().copy_from_slice(&boot.to_page());
        s.call(&Call::MemoryWrite {
            partition,
            gpa: layout.boot_page(),
            buffer: s.address(),
        })
    })
    .map_err(|e| Failure::Call("boot page", e))?;
    if spec.workload() == "dirty" {
        call(
            "dirty log",
            Call::DirtyLog {
                partition,
                enable: true,
            },
        )?;
    }
    for vcpu in vcpus.iter().flatten() {
        call("start", Call::VcpuStart { vcpu: *vcpu })?;
    }
    println!(
        "{}",
        markers::ChildStarted {
            name: spec.name.as_str(),
            vcpus: spec.vcpus,
            mib: spec.memory >> 20,
            base
        }
    );
    Ok(Child {
        spec: *spec,
        partition,
        memory: child_memory,
        vcpus,
        base,
        pages,
        ended: false,
        from_root: Some(from_root),
    })
}

/// Child slot `index`'s `to_root` port (the root's raw handle).
pub fn to_root_port(index: usize) -> u64 {
    TO_ROOT_PORTS
        .get(index)
        .map_or(u64::MAX, |p| p.load(Ordering::Acquire))
}

/// Makes child slot `index`'s `to_root` port (bound to the root's vCPU)
/// and gives `partition` a SIGNAL copy, in slot `at` if given; returns
/// the child's handle.
pub fn make_to_root(
    root: &Root,
    index: usize,
    partition: SlotHandle,
    at: Option<SlotHandle>,
) -> Result<SlotHandle, Failure> {
    let to_root = handle(call("port", Call::PortCreate)?[0])?;
    SIGNALS[index].store(0, Ordering::Release);
    TO_ROOT_PORTS[index].store(to_root.raw(), Ordering::Release);
    call(
        "bind",
        Call::PortBind {
            port: to_root,
            vcpu: root.vcpu,
            vector: TO_ROOT_VECTOR + index as u8,
        },
    )?;
    let grant = match at {
        Some(at) => Call::CapDelegateAt {
            slot: to_root,
            target: partition,
            rights: Rights::SIGNAL,
            at,
        },
        None => Call::CapDelegate {
            slot: to_root,
            target: partition,
            rights: Rights::SIGNAL,
        },
    };
    handle(call("grant", grant)?[0])
}

/// Where a vCPU is: its instruction pointer and general registers (the
/// instruction pointer alone can stay the same while a loop runs, as TCG
/// only stops a vCPU at the head of a translated block).
fn position_of(vcpu: SlotHandle) -> Result<(u64, [u64; 16]), Failure> {
    let state = hal::scratch::with(|s| {
        s.call(&Call::VcpuGetState {
            vcpu,
            buffer: s.address(),
        })?;
        Ok(VcpuState::from_page(s.page()))
    })
    .map_err(|e| Failure::Call("state", e))?;
    Ok((state.rip, state.gprs))
}

/// Yields `yields` times, serving every child's VMBus in between; as long
/// as there is VMBus work, it is done first and the yields wait.
fn let_others_run(yields: u32) {
    let mut left = yields;
    while left > 0 {
        if crate::vmbus::service_all() == 0 {
            let _ = hypercall(&Call::Yield);
            left -= 1;
        }
    }
}

/// Lets time pass (about `cycles` time-stamp counter ticks), yielding and
/// serving every child's VMBus meanwhile.
fn let_time_pass(cycles: u64) {
    let start = partition_rt::rdtsc();
    while partition_rt::rdtsc().wrapping_sub(start) < cycles {
        if crate::vmbus::service_all() == 0 {
            let _ = hypercall(&Call::Yield);
        }
    }
}

/// Waits until `done`, serving every child's VMBus meanwhile, and once
/// more after it (what a child printed before signalling comes first).
fn wait_serving(mut done: impl FnMut() -> bool) {
    loop {
        let worked = crate::vmbus::service_all();
        if done() {
            while crate::vmbus::service_all() > 0 {}
            return;
        }
        if worked == 0 {
            let _ = hypercall(&Call::Yield);
        }
    }
}

/// About 50 ms at the time-stamp counter rates QEMU and real machines use.
const A_WHILE: u64 = 100_000_000;

/// Pauses every vCPU of a child and checks that their state stays put.
fn pause_check(child: &Child) -> Result<(), Failure> {
    let vcpu = child.vcpus[0].ok_or(Failure::Missing("vcpu"))?;
    for v in child.vcpus.iter().flatten() {
        call("pause", Call::VcpuPause { vcpu: *v })?;
    }
    let before = position_of(vcpu)?;
    let_time_pass(A_WHILE);
    let after = position_of(vcpu)?;
    if before != after {
        return Err(Failure::Check("a paused vCPU moved"));
    }
    println!("{}", markers::ChildPaused(child.spec.name.as_str()));
    Ok(())
}

/// Resumes a paused child and checks that it runs again.
fn resume_check(child: &Child) -> Result<(), Failure> {
    let vcpu = child.vcpus[0].ok_or(Failure::Missing("vcpu"))?;
    let before = position_of(vcpu)?;
    for v in child.vcpus.iter().flatten() {
        call("resume", Call::VcpuResume { vcpu: *v })?;
    }
    for _ in 0..50 {
        let_time_pass(A_WHILE);
        call("pause", Call::VcpuPause { vcpu })?;
        let now = position_of(vcpu)?;
        call("resume", Call::VcpuResume { vcpu })?;
        if now != before {
            println!("{}", markers::ChildResumed(child.spec.name.as_str()));
            return Ok(());
        }
    }
    Err(Failure::Check("a resumed vCPU did not move"))
}

/// The dirty-logging check (see the `dirty` workload): wait for "ready",
/// clear the log, tell the child to write, wait for "done", and compare.
fn dirty_check(child: &Child, index: usize) -> Result<(), Failure> {
    let name = child.spec.name.as_str();
    let wait_for = |n: u32| wait_serving(|| SIGNALS[index].load(Ordering::Acquire) >= n);
    wait_for(1);
    let window = child.spec.args[0];
    let fetch = || -> Result<u64, Failure> {
        hal::scratch::with(|s| {
            s.call(&Call::DirtyFetch {
                partition: child.partition,
                first_gpa: window,
                pages: 64,
                buffer: s.address(),
            })?;
            let mut word = [0u8; 8];
            word.copy_from_slice(&s.page()[..8]);
            Ok(u64::from_le_bytes(word))
        })
        .map_err(|e| Failure::Call("fetch", e))
    };
    fetch()?; // Clear whatever the child touched while starting.
    call(
        "event",
        Call::PortSignal {
            port: child.from_root.ok_or(Failure::Missing("port"))?,
        },
    )?;
    wait_for(2);
    let dirty = fetch()?;
    if dirty != child.spec.args[1] {
        println!(
            "root: dirty log of {name}: got {dirty:#x}, expected {:#x}",
            child.spec.args[1]
        );
        return Err(Failure::Check("dirty log mismatch"));
    }
    println!(
        "{}",
        markers::DirtyLogMatches {
            name,
            pages: dirty.count_ones()
        }
    );
    if fetch()? != 0 {
        return Err(Failure::Check("dirty log not cleared"));
    }
    println!("{}", markers::DirtyLogCleared(name));
    Ok(())
}

/// Waits until every child has ended, reporting each.
fn watch(children: &mut [Option<Child>]) -> Result<(), Failure> {
    loop {
        let mut running = 0;
        for (index, slot) in children.iter_mut().enumerate() {
            let Some(child) = slot.as_mut().filter(|c| !c.ended) else {
                continue;
            };
            let s = call(
                "status",
                Call::PartitionStatus {
                    partition: child.partition,
                },
            )?;
            if s[0] == run_state::STOPPED {
                child.ended = true;
                // Print what it said before it stopped.
                crate::vmbus::drain(index);
                let reason = StopReason::from_raw(s[1]).unwrap_or(StopReason::UnhandledExit);
                println!(
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
            println!("{}", markers::ALL_CHILDREN_ENDED);
            return Ok(());
        }
        let_others_run(20);
    }
}
