//! Running a scenario (`run`: the library's `boot.cfg` interpreter,
//! `root_partition::services::scenario`, over this root's [`Machine`])
//! and the thin adapters the rest of the binary uses: a new child built through the
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
use ipc::hypercall::{Call, SlotHandle};
use partition_rt::hypercall;
use root_partition::config::{AbortAt, ChildSpec, Scenario};
use root_partition::migrate::Stats;
use root_partition::services::migration::MigrateError;
use root_partition::services::scenario::{self, ScenarioMachine};

use crate::hal;
use crate::hal::kernel::HwKernel;
use crate::node_vms::Parts;
use root_partition::partition::control::Buses;
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

/// Runs a scenario to its end: the library's interpreter
/// (`root_partition::services::scenario::run`) over this root's machine.
pub fn run(info: &BootInfo, scenario: &Scenario) -> Result<(), Failure> {
    let root = discover(info)?;
    crate::vmbus::choose_windows(info.shared_window);
    let image_bytes = hal::ram::modules().child_image;
    let image = Image::parse(image_bytes, ipc::boot::PARTITION_IMAGE_BASE, u64::MAX)
        .map_err(Failure::Image)?;
    install_handlers();
    crate::vmbus::set_clock(u64::from(root.tsc_khz));
    partition_rt::enable_interrupts();
    scenario::run(&HwKernel, &mut Parts { image }, &root, scenario)
}

/// What a scenario needs of this root beyond the node's [`Parts`].
impl ScenarioMachine for Parts {
    fn signals(&self, index: usize) -> u32 {
        SIGNALS[index].load(Ordering::Acquire)
    }
    fn frames_received(&self, index: usize) -> u64 {
        crate::vmbus::frames_received(index)
    }
    fn storage_served(&self, index: usize) -> u64 {
        crate::vmbus::storage_served(index)
    }
    fn live(
        &mut self,
        root: &Root,
        child: &mut Child,
        index: usize,
        base: u64,
        abort: Option<AbortAt>,
    ) -> Result<Stats, MigrateError> {
        crate::migration::live(root, child, index, base, abort)
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
