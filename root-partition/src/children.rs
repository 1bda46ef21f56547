//! Running a scenario (`run`, the `boot.cfg` interpreter) and the thin
//! adapters the rest of the binary uses: a new child built through the
//! library's one construction path (`root_partition::partition::build`)
//! with its bus attached (`start`), the `to_root` ports and their
//! interrupt handlers, and the children's VMBus as the library's waits
//! serve it (`VmBuses`). Pausing, resuming, stopping, destroying and
//! watching children are `root_partition::partition::control`'s.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use ipc::boot::BootInfo;
use ipc::elf::Image;
use ipc::hypercall::{Call, Name, SlotHandle};
use ipc::markers;
use partition_rt::hypercall;
use root_partition::config::{Action, ChildSpec, Scenario};

use crate::hal;
use crate::hal::kernel::HwKernel;
use root_partition::partition::control::{self, Buses};
use root_partition::partition::{self, Purpose, build};
pub use root_partition::partition::{
    Child, Failure, MAX_CHILDREN, Root, discover, heap_range, place,
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
                    control::dirty_check(&HwKernel, &mut VmBuses, &child, || {
                        SIGNALS[index].load(Ordering::Acquire)
                    })?;
                }
            }
            Action::Pause(name) => {
                let child = control::find(&children, name)?;
                control::pause_check(&HwKernel, &mut VmBuses, &child)?;
            }
            Action::Resume(name) => {
                let child = control::find(&children, name)?;
                control::resume_check(&HwKernel, &mut VmBuses, &child)?;
            }
            Action::HotAdd {
                child,
                disk,
                lun,
                after,
            } => {
                let index = control::position(&children, child)?;
                wait_served(&children, index, after)?;
                crate::vmbus::add_disk(index, lun, disk.as_str(), true).map_err(|e| {
                    println!("root: hot add of {} failed: {e:?}", disk.as_str());
                    Failure::Check("hot add")
                })?;
            }
            Action::HotRemove { child, lun, after } => {
                let index = control::position(&children, child)?;
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
                let index = control::position(&children, child)?;
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
                let index = control::position(&children, child)?;
                wait_served(&children, index, after_requests)?;
                let_time_pass(after_ms * u64::from(root.tsc_khz));
                let saved = children[index].ok_or(Failure::Missing("child"))?;
                let (name, path) = (child.as_str(), alloc::format!("/{}", file.as_str()));
                match crate::quick::save(&root, &saved, index, &path) {
                    Ok((stats, bytes)) => {
                        crate::migration::report(name, &stats);
                        // Its bus state is in the file: never served again here.
                        crate::vmbus::forget(index);
                        control::destroy(&HwKernel, &saved)?;
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
                // Its priority and affinity: the scenario's for it.
                let spec = scenario
                    .actions()
                    .find_map(|a| match a {
                        Action::Start(s) if s.name == child => Some(s),
                        _ => None,
                    })
                    .unwrap_or(ChildSpec::new(child));
                match crate::quick::restore(&root, &path, at, &spec) {
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
                let index = control::position(&children, child)?;
                wait_served(&children, index, after_requests)?;
                let_time_pass(after_ms * u64::from(root.tsc_khz));
                let stopped = children[index].take().ok_or(Failure::Missing("child"))?;
                control::stop(&HwKernel, &mut VmBuses, &root, &stopped, index, timeout_ms)?;
                freed = Some((child, stopped.base));
            }
            Action::Lost { child, within_ms } => {
                let index = control::position(&children, child)?;
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
                control::destroy(&HwKernel, &child)?;
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
                let index = control::position(&children, name)?;
                let child = children[index].take().ok_or(Failure::Missing("child"))?;
                crate::vmbus::detach(index);
                control::forget(&HwKernel, &root, &child)?;
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
    control::watch(&HwKernel, &mut VmBuses, &mut children)
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
        if control::stopped(&HwKernel, child.partition) {
            return Err(Failure::Check("child stopped before its disk requests"));
        }
        if crate::vmbus::service_all() == 0 {
            let _ = hypercall(&Call::Yield);
        }
    }
}

/// Builds, fills and starts child `spec` as slot `index` (its VMBus index)
/// in free memory of the pool: a new child (scenario or node) through the
/// one construction path (`partition::build`), then its bus, its disks,
/// its boot page and its vCPUs started.
pub fn start(
    root: &Root,
    image: &Image<'_>,
    spec: &ChildSpec,
    index: usize,
    children: &[Option<Child>],
) -> Result<Child, Failure> {
    let base = place(root, children, spec.memory).ok_or(Failure::NoMemory)?;
    let purpose = Purpose::New {
        image,
        to_root_vector: TO_ROOT_VECTOR + index as u8,
    };
    let built = partition::build(&HwKernel, root, spec, base, purpose)?;
    let to_root = built.to_root.ok_or(Failure::Missing("port"))?;
    SIGNALS[index].store(0, Ordering::Release);
    TO_ROOT_PORTS[index].store(to_root.root.raw(), Ordering::Release);
    let started = (|| {
        let layout = built.layout.ok_or(Failure::Missing("layout"))?;
        let vcpu0 = built.vcpus[0].ok_or(Failure::Missing("vcpu"))?;
        let vmbus = crate::vmbus::attach(
            spec.name,
            crate::vmbus::RootPlatform {
                root: root.authority,
                root_vcpu: root.vcpu,
                partition: built.partition,
                memory: built.memory,
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
        let boot = build::boot_page(root, spec, &built, vmbus)?;
        build::launch(&HwKernel, spec, &built, &boot)
    })();
    if let Err(e) = started {
        crate::vmbus::detach(index);
        let _ = partition::control::destroy(&HwKernel, &built.child(spec));
        return Err(e);
    }
    Ok(built.child(spec))
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
    let vector = TO_ROOT_VECTOR + index as u8;
    let ports = build::make_to_root(&HwKernel, root, vector, partition, at)?;
    SIGNALS[index].store(0, Ordering::Release);
    TO_ROOT_PORTS[index].store(ports.root.raw(), Ordering::Release);
    Ok(ports.child)
}

/// The children's VMBus, as the library's waits serve it.
pub struct VmBuses;

impl Buses for VmBuses {
    fn service_all(&mut self) -> usize {
        crate::vmbus::service_all()
    }
    fn drain(&mut self, index: usize) {
        crate::vmbus::drain(index);
    }
    fn request_shutdown(&mut self, index: usize, timeout_ms: u32) -> Result<(), String> {
        crate::vmbus::request_shutdown(index, timeout_ms).map_err(|e| alloc::format!("{e:?}"))
    }
    fn shutdown_state(&mut self, index: usize) -> Option<vsp::bus::ShutdownState> {
        crate::vmbus::shutdown_state(index)
    }
    fn detach(&mut self, index: usize) {
        crate::vmbus::detach(index);
    }
}

/// Lets time pass (about `cycles` time-stamp counter ticks), yielding and
/// serving every child's VMBus meanwhile.
fn let_time_pass(cycles: u64) {
    control::let_time_pass(&HwKernel, &mut VmBuses, cycles);
}

/// Waits until `done`, serving every child's VMBus meanwhile, and once
/// more after it (what a child printed before signalling comes first).
fn wait_serving(done: impl FnMut() -> bool) {
    control::wait_serving(&HwKernel, &mut VmBuses, done);
}
