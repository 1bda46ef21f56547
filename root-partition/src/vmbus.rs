//! The root's VMBus service on the machine: the interrupt handlers of the
//! VMBus vectors and their pending bits ([`install_handlers`]), and a thin
//! adapter over the library's host
//! (`root_partition::services::vmbus::VmbusHost`, where the buses, the
//! platform that maps granted child pages, the integration services, the
//! switch rounds, disks and save/restore/move live) with the real kernel
//! ([`HwKernel`]), the data volume, the NIC as the switch's uplink and the
//! switch in a static. The functions keep the signatures the rest of the
//! binary calls them with, by child index.
//!
//! # Invariants
//! The root touches a child's ring pages only while they are mapped: a
//! bus is dropped (and its pages unmapped) before its child is destroyed.
//! The host is behind one lock; nothing it calls (the NIC, the volume)
//! calls back into this module.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use ipc::hypercall::{Call, Name, SlotHandle};
use ipc::vmbus::control::OpenStatus;
use partition_rt::hypercall;
use partition_rt::sync::{SpinGuard, SpinLock};
use root_partition::services::vmbus::{
    self as host, Grant, RootSwitch, Signals, Uplink, VmbusHost,
};
use vsp::bus::{Heartbeat, ShutdownError, ShutdownState};

pub use root_partition::services::vmbus::{
    CHANNELS, DiskError, MovedChild, RestoreBusError, VMBUS_VECTOR_BASE,
};

use crate::children::MAX_CHILDREN;
use crate::hal::kernel::HwKernel;
use crate::storage::DataDisk;

/// Interrupts received per (child, channel).
static SIGNALS: [AtomicU32; MAX_CHILDREN * CHANNELS] =
    [const { AtomicU32::new(0) }; MAX_CHILDREN * CHANNELS];
/// The root's port behind each (child, channel) vector, to acknowledge.
static PORTS: [AtomicU64; MAX_CHILDREN * CHANNELS] =
    [const { AtomicU64::new(u64::MAX) }; MAX_CHILDREN * CHANNELS];

fn on_signal(vector: u8) {
    let index = vector.wrapping_sub(VMBUS_VECTOR_BASE) as usize;
    if let (Some(counter), Some(port)) = (SIGNALS.get(index), PORTS.get(index)) {
        counter.fetch_add(1, Ordering::AcqRel);
        if let Ok(slot) = SlotHandle::from_raw(port.load(Ordering::Acquire)) {
            let _ = hypercall(&Call::Acknowledge { slot });
        }
    }
}

/// Installs the interrupt handlers of every VMBus vector.
pub fn install_handlers() {
    for i in 0..MAX_CHILDREN * CHANNELS {
        let _ = partition_rt::set_interrupt_handler(VMBUS_VECTOR_BASE + i as u8, on_signal);
    }
}

/// The handlers' pending bits, as the host sees them.
#[derive(Clone, Copy, Default)]
pub struct HwSignals;

impl Signals for HwSignals {
    fn bind(&self, slot: usize, port: SlotHandle) {
        if let (Some(p), Some(s)) = (PORTS.get(slot), SIGNALS.get(slot)) {
            p.store(port.raw(), Ordering::Release);
            s.store(0, Ordering::Release);
        }
    }
    fn port(&self, slot: usize) -> Option<SlotHandle> {
        SlotHandle::from_raw(PORTS.get(slot)?.load(Ordering::Acquire)).ok()
    }
    fn count(&self, slot: usize) -> u64 {
        SIGNALS
            .get(slot)
            .map_or(0, |s| u64::from(s.load(Ordering::Acquire)))
    }
}

/// The root's NIC (`crate::hal::net`) as the switch's uplink.
#[derive(Clone, Copy, Default)]
pub struct NicUplink;

impl Uplink for NicUplink {
    fn receive(&self, max: usize, take: &mut dyn FnMut(&[u8])) -> usize {
        crate::hal::net::receive(max, take)
    }
    fn send(&self, frame: &[u8]) -> bool {
        crate::hal::net::send(frame)
    }
}

/// The switch (a static: at ~650 KiB it would not fit the root's stack on
/// its way to the heap); the host holds its lock for good.
static SWITCH: SpinLock<RootSwitch> = SpinLock::new(RootSwitch::new());

/// The host on the machine.
type Host = VmbusHost<HwKernel, DataDisk, NicUplink, HwSignals, SpinGuard<'static, RootSwitch>>;

/// The host (transitional: one static until the node owns it).
static HOST: SpinLock<Option<Host>> = SpinLock::new(None);

/// Runs `f` with the host, made on first use.
fn with<T>(f: impl FnOnce(&mut Host) -> T) -> T {
    let mut host = HOST.lock();
    let host =
        host.get_or_insert_with(|| VmbusHost::new(HwKernel, NicUplink, HwSignals, SWITCH.lock()));
    f(host)
}

/// What the root needs to act for one child: the library's [`Grant`].
pub type RootPlatform = Grant;

/// Makes a port pair for channel `channel` (0 = control) of `platform`'s
/// child, the child's copies going into the slots `at` (signal, event)
/// when given (a restored child's saved handles), else into the lowest
/// free slots: the child's slots (signal, event).
pub fn make_ports_at(
    platform: &mut RootPlatform,
    channel: usize,
    at: Option<(SlotHandle, SlotHandle)>,
) -> Result<(SlotHandle, SlotHandle), OpenStatus> {
    platform.make_ports_at(&HwKernel, &HwSignals, channel, at)
}

/// Takes the windows from the boot page's shared window, if it holds one
/// per child.
pub fn choose_windows(shared: ipc::boot::PhysRange) {
    with(|h| h.choose_windows(shared));
}

/// Where child `index` (memory at host-physical `base`) has its shared
/// pages in the root, and the GPA limit of what can be shared.
pub fn window_of(index: usize, base: u64) -> (u64, u64) {
    with(|h| h.window_of(index, base))
}

/// Sets up child `index`'s control channel, before the child runs; its
/// disks come from the data volume. Returns the child's (signal, event)
/// slots for its boot page.
pub fn attach(name: Name, platform: RootPlatform) -> Result<(SlotHandle, SlotHandle), OpenStatus> {
    let volume = crate::storage::volume();
    with(|h| h.attach(name, platform, volume.as_ref()))
}

/// Gives the integration services their clock: the time-stamp counter at
/// `tsc_khz` ticks per millisecond (the boot page's figure).
pub fn set_clock(tsc_khz: u64) {
    with(|h| h.set_clock(tsc_khz));
}

/// What the root knows of child `index`'s heartbeat (`None`: no such bus).
pub fn heartbeat_state(index: usize) -> Option<Heartbeat> {
    with(|h| h.heartbeat_state(index))
}

/// Child `index`'s last console lines, oldest first.
pub fn console_tail(index: usize) -> alloc::vec::Vec<alloc::string::String> {
    with(|h| h.console_tail(index))
}

/// Whether any child has a bus now (its heartbeats are due every second).
pub fn any_bus() -> bool {
    with(|h| h.any_bus())
}

/// Asks child `index` to shut down within `deadline_ms`; follow it with
/// [`shutdown_state`].
pub fn request_shutdown(index: usize, deadline_ms: u32) -> Result<(), ShutdownError> {
    with(|h| h.request_shutdown(index, deadline_ms))
}

/// Where child `index`'s shutdown stands (`None`: no such bus).
pub fn shutdown_state(index: usize) -> Option<ShutdownState> {
    with(|h| h.shutdown_state(index))
}

/// The largest MTU a child may negotiate.
#[allow(dead_code)]
pub const CHILD_MTU: u16 = host::CHILD_MTU;

/// Starts the switch with the NIC on port 0.
pub fn start_switch() {
    with(|h| h.start_switch());
}

/// Services every child's bus once and moves frames; returns the packets
/// and frames handled.
pub fn service_all() -> usize {
    with(|h| h.service_all())
}

/// Drains child `index`'s bus (it stopped), prints its summaries, and
/// keeps the bus (its pages stay mapped until destroy).
pub fn drain(index: usize) {
    with(|h| h.drain(index));
}

/// Puts `file` on child `index`'s controller as `lun`; `hot` tells a
/// running child (`LunAdded`).
pub fn add_disk(index: usize, lun: u8, file: &str, hot: bool) -> Result<u64, DiskError> {
    with(|h| h.add_disk(index, lun, file, hot))
}

/// Takes `lun` off child `index`'s running controller.
pub fn remove_disk(index: usize, lun: u8) -> Result<(), DiskError> {
    with(|h| h.remove_disk(index, lun))
}

/// Storage requests child `index`'s controller has completed.
pub fn storage_served(index: usize) -> u64 {
    with(|h| h.storage_served(index))
}

/// The pages of child `index` mapped into the root now: (GPA, pages).
pub fn shared_pages(index: usize) -> Vec<(u64, u64)> {
    with(|h| h.shared_pages(index))
}

/// Hands child `index`'s bus over to the partition it migrated to.
pub fn move_child(index: usize, to: MovedChild) -> Result<(), OpenStatus> {
    with(|h| h.move_child(index, to))
}

/// The root's ports of child `index`'s channels: (channel, the port the
/// child signals, the port the root signals), raw handles.
pub fn channel_ports(index: usize) -> Vec<(usize, u64, u64)> {
    with(|h| h.channel_ports(index))
}

/// The root's side of child `index`'s bus as saved-state bytes, and its
/// disks (LUN, file path).
pub fn save_bus(index: usize, out: &mut [u8]) -> Option<(usize, Vec<(u8, String)>)> {
    with(|h| h.save_bus(index, out))
}

/// Forgets child `index`'s bus without serving it again.
pub fn forget(index: usize) {
    with(|h| h.forget(index));
}

/// Rebuilds child `index`'s bus from saved bytes over its (restored)
/// memory; the saved disks are opened again from the data volume.
pub fn restore_bus(
    name: Name,
    platform: RootPlatform,
    saved: &[u8],
    luns: &[(u8, String)],
) -> Result<(), RestoreBusError> {
    let volume = crate::storage::volume();
    with(|h| h.restore_bus(name, platform, saved, luns, volume.as_ref()))
}

/// Announces child `index`'s MAC from its switch port.
pub fn announce(index: usize) {
    with(|h| h.announce(index));
}

/// Frames delivered to child `index`'s network adapter so far.
pub fn frames_received(index: usize) -> u64 {
    with(|h| h.frames_received(index))
}

/// Forgets child `index`'s bus before the child is destroyed.
pub fn detach(index: usize) {
    with(|h| h.detach(index));
}

/// The network benchmark's reference (see the library's `bench_switch`):
/// counter ticks for `frames` frames of `size` bytes; `None` without a
/// switch.
pub fn bench_switch(frames: u64, size: usize) -> Option<u64> {
    with(|h| h.bench_switch(frames, size))
}
