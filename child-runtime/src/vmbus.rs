//! The child's VMBus: it connects to the root over the control channel
//! named in its boot page, opens the console on pages of its own heap and
//! sends every console line there (`partition_rt`'s line sink). Lines
//! before that, or after the console broke, fall back to `DebugWrite`
//! (which the microkernel refuses without `debug-console`).
//!
//! # Invariants
//! Waits are bounded (yields counted by a patience): a root that stops
//! reading costs time, never a hang. The control bus and the console
//! client each live behind their own lock; the console lock is only taken
//! inside the line sink (under the console lock, interrupts off).

use core::sync::atomic::{AtomicU64, Ordering};

use ipc::child::{CHILD_VMBUS_VECTOR, ChildBootInfo};
use ipc::hypercall::{Call, SlotHandle};
use ipc::vmbus::control::{CONSOLE_CLASS, CONTROL_RING_PAGES};
use ipc::vmbus::ring::{self, Consumer, Producer};
use partition_rt::SharedRingMemory;
use partition_rt::sync::SpinLock;
use vsc::bus::{BusError, GuestBus, RingPages};
use vsc::console::ConsoleClient;

use crate::arch;

/// Pages of the console's child-to-root ring (control page + 8 data pages).
pub const CONSOLE_OUT_PAGES: u32 = 9;
/// Pages of the console's root-to-child ring.
pub const CONSOLE_IN_PAGES: u32 = 2;
/// Yields a wait may take before giving up.
const PATIENCE: u64 = 2_000_000;

static BUS: SpinLock<Option<GuestBus<SharedRingMemory>>> = SpinLock::new(None);
static CONSOLE: SpinLock<Option<ConsoleClient<SharedRingMemory>>> = SpinLock::new(None);
/// Channels the child uses: control, console, storage, network, integration.
const CHANNELS: usize = 5;
/// Raw slots: the signal port of each channel (control, console,
/// storage, network, integration), then the event port of each (to acknowledge).
static PORTS: [AtomicU64; 2 * CHANNELS] = [const { AtomicU64::new(u64::MAX) }; 2 * CHANNELS];
const CONTROL_SIGNAL: usize = 0;
const CONSOLE_SIGNAL: usize = 1;
/// The storage channel's signal port.
pub const STORAGE_SIGNAL: usize = 2;
/// The network channel's signal port.
pub const NETWORK_SIGNAL: usize = 3;
/// The integration channel's signal port.
pub const INTEGRATION_SIGNAL: usize = 4;
/// Where the console rings are (for the `vmbus-hostile` workload).
static CONSOLE_GPA: AtomicU64 = AtomicU64::new(0);
/// Signals from the root (any VMBus vector).
static EVENTS: AtomicU64 = AtomicU64::new(0);

/// Signals the root on the channel whose signal port is `PORTS[which]`.
pub fn signal(which: usize) {
    if let Ok(port) = SlotHandle::from_raw(PORTS[which].load(Ordering::Acquire)) {
        let _ = partition_rt::hypercall(&Call::PortSignal { port });
    }
}

/// The wait of every VMBus loop: yield the processor.
pub fn wait() {
    let _ = partition_rt::hypercall(&Call::Yield);
}

/// Counts a signal from the root and acknowledges its port (the handler
/// of every VMBus vector, or its first step).
pub fn on_event(vector: u8) {
    EVENTS.fetch_add(1, Ordering::AcqRel);
    let which = CHANNELS + vector.wrapping_sub(CHILD_VMBUS_VECTOR) as usize;
    if let Some(port) = PORTS.get(which)
        && let Ok(slot) = SlotHandle::from_raw(port.load(Ordering::Acquire))
    {
        let _ = partition_rt::hypercall(&Call::Acknowledge { slot });
    }
}

/// The line sink: one console line over VMBus; `false` sends it the old way.
fn sink(line: &[u8]) -> bool {
    let mut console = CONSOLE.lock();
    let Some(client) = console.as_mut() else {
        return false;
    };
    match client.write_line(line, || signal(CONSOLE_SIGNAL), wait, PATIENCE) {
        Ok(()) => true,
        Err(_) => {
            // The channel is gone: stop using it.
            *console = None;
            false
        }
    }
}

/// Why the console could not be opened.
// The fields are read through `Debug` when the failure is printed.
#[allow(dead_code)]
#[derive(Debug)]
pub enum StartError {
    /// The boot page names no control channel.
    NoControlChannel,
    /// A ring is unusable or out of memory.
    Memory,
    /// The control protocol failed.
    Bus(BusError),
}

/// Connects to the root and opens the console (vCPU 0, at boot).
pub fn start(info: &ChildBootInfo) -> Result<(), StartError> {
    let control = info.vmbus_control;
    let (Some(signal_port), Some(event_port)) = (info.vmbus_signal, info.vmbus_event) else {
        return Err(StartError::NoControlChannel);
    };
    PORTS[CONTROL_SIGNAL].store(signal_port.raw(), Ordering::Release);
    PORTS[CHANNELS].store(event_port.raw(), Ordering::Release);
    for channel in 0..CHANNELS as u8 {
        let _ = partition_rt::set_interrupt_handler(CHILD_VMBUS_VECTOR + channel, on_event);
    }
    let memory = arch::ring_memory(info, control.start, control.len()).ok_or(StartError::Memory)?;
    let (out, inb) = memory.split_at(CONTROL_RING_PAGES as usize * 4096);
    let mut bus = GuestBus::new(
        Producer::new(out).map_err(|_| StartError::Memory)?,
        Consumer::new(inb).map_err(|_| StartError::Memory)?,
    );
    bus.connect(|| signal(CONTROL_SIGNAL), wait, PATIENCE)
        .map_err(StartError::Bus)?;
    let pages = CONSOLE_OUT_PAGES + CONSOLE_IN_PAGES;
    let gpa = arch::alloc_ring_pages(u64::from(pages)).ok_or(StartError::Memory)?;
    let rings = arch::ring_memory(info, gpa, u64::from(pages) * 4096).ok_or(StartError::Memory)?;
    let (out, inb) = rings.split_at(CONSOLE_OUT_PAGES as usize * 4096);
    ring::initialize(&out).map_err(|_| StartError::Memory)?;
    ring::initialize(&inb).map_err(|_| StartError::Memory)?;
    let opened = bus
        .open(
            CONSOLE_CLASS,
            RingPages {
                gpa,
                pages,
                outbound_pages: CONSOLE_OUT_PAGES,
            },
            || signal(CONTROL_SIGNAL),
            wait,
            PATIENCE,
        )
        .map_err(StartError::Bus)?;
    PORTS[CONSOLE_SIGNAL].store(opened.signal_port, Ordering::Release);
    PORTS[CHANNELS + 1].store(opened.event_port, Ordering::Release);
    CONSOLE_GPA.store(gpa, Ordering::Release);
    let client = ConsoleClient::new(
        Producer::new(out).map_err(|_| StartError::Memory)?,
        Consumer::new(inb).map_err(|_| StartError::Memory)?,
    );
    *CONSOLE.lock() = Some(client);
    *BUS.lock() = Some(bus);
    partition_rt::console::set_line_sink(Some(sink));
    Ok(())
}

/// The console channel's port slots (signal, event), once it is open.
pub fn console_ports() -> [Option<SlotHandle>; 2] {
    [CONSOLE_SIGNAL, CHANNELS + 1]
        .map(|i| SlotHandle::from_raw(PORTS[i].load(Ordering::Acquire)).ok())
}

/// The integration channel's port slots (signal, event), once it is open.
pub fn integration_ports() -> [Option<SlotHandle>; 2] {
    [INTEGRATION_SIGNAL, CHANNELS + INTEGRATION_SIGNAL]
        .map(|i| SlotHandle::from_raw(PORTS[i].load(Ordering::Acquire)).ok())
}

/// Lines sent and signals sent on the console, if it is open.
pub fn console_stats() -> Option<(u64, u64)> {
    partition_rt::arch::without_interrupts(|| {
        CONSOLE.lock().as_ref().map(|c| (c.lines(), c.signals()))
    })
}

/// The console's child-to-root ring memory (a second view, for the
/// `vmbus-hostile` workload's attacks).
pub fn console_ring(info: &ChildBootInfo) -> Option<SharedRingMemory> {
    let gpa = CONSOLE_GPA.load(Ordering::Acquire);
    (gpa != 0)
        .then(|| arch::ring_memory(info, gpa, u64::from(CONSOLE_OUT_PAGES) * 4096))
        .flatten()
}

/// The control channel's child-to-root ring memory (a second view).
pub fn control_ring(info: &ChildBootInfo) -> Option<SharedRingMemory> {
    arch::ring_memory(info, info.vmbus_control.start, CONTROL_RING_PAGES * 4096)
}

/// Signals the root on the control channel.
pub fn signal_control() {
    signal(CONTROL_SIGNAL);
}

/// Signals the root on the console channel.
pub fn signal_console() {
    signal(CONSOLE_SIGNAL);
}

/// Signals received from the root on any channel so far.
pub fn events() -> u64 {
    EVENTS.load(Ordering::Acquire)
}

/// Records the storage channel's ports (signal, event) once it is open.
pub fn set_storage_ports(signal_port: u64, event_port: u64) {
    set_ports(STORAGE_SIGNAL, signal_port, event_port);
}

/// Records channel `which`'s ports (signal, event) once it is open.
pub fn set_ports(which: usize, signal_port: u64, event_port: u64) {
    PORTS[which].store(signal_port, Ordering::Release);
    PORTS[CHANNELS + which].store(event_port, Ordering::Release);
}

/// Yield budget of every VMBus wait.
pub const WAIT_PATIENCE: u64 = PATIENCE;

/// Runs `f` on the control bus, if connected.
pub fn with_bus<R>(f: impl FnOnce(&mut GuestBus<SharedRingMemory>) -> R) -> Option<R> {
    BUS.lock().as_mut().map(f)
}

/// Yields once (the waits of this module).
pub fn yield_now() {
    wait();
}
