//! The child's integration services (`docs/vmbus.md`, "Integration
//! services"): opened at boot like the console; heartbeats are answered
//! from the channel's interrupt (when the workload runs with interrupts
//! on, or sleeps) and from [`stop_requested`], which workloads call at
//! their own pace; a shutdown request sets a stop flag the workloads
//! check, and [`finish`] ends the shutdown (`ShutdownDone`, a structured
//! line, `CLI; HLT`).
//!
//! # Invariants
//! The client lives behind one lock that the interrupt handler and
//! [`stop_requested`] only *try*: whoever holds it serves the channel,
//! the other goes on, so no vCPU ever waits for it in an interrupt
//! handler. Nothing here waits for the root.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ipc::child::{CHILD_VMBUS_VECTOR, ChildBootInfo};
use ipc::vmbus::control::INTEGRATION_CLASS;
use ipc::vmbus::ring::{self, Consumer, Producer};
use ipc::workload::ShutdownComplete;
use partition_rt::SharedRingMemory;
use partition_rt::println;
use partition_rt::sync::SpinLock;
use vsc::bus::{BusError, RingPages};
use vsc::integration::{IntegrationClient, ShutdownAnswer};

use crate::arch;
use crate::vmbus::{self, INTEGRATION_SIGNAL, WAIT_PATIENCE};

/// Pages of each ring (control page + 1 data page).
const RING_PAGES: u32 = 2;
/// The offer id of the integration services (`vsp::integration`).
const OFFER: u8 = 3;

static CLIENT: SpinLock<Option<IntegrationClient<SharedRingMemory>>> = SpinLock::new(None);
/// The root asked for a shutdown and the runtime accepted.
static STOP: AtomicBool = AtomicBool::new(false);
/// Shutdown requests are ignored (workload `hang`, mode stubborn).
static IGNORE: AtomicBool = AtomicBool::new(false);
/// Someone is ending the shutdown (only one vCPU reports it).
static FINISHING: AtomicBool = AtomicBool::new(false);
/// Time-stamp counter at boot, and its ticks per millisecond.
static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
static TSC_KHZ: AtomicU64 = AtomicU64::new(0);

/// Why the channel could not be opened.
// The fields are read through `Debug` when the failure is printed.
#[allow(dead_code)]
#[derive(Debug)]
pub enum OpenError {
    /// Out of heap, or a ring unusable.
    Memory,
    /// The control bus is not connected.
    NoBus,
    /// The control protocol failed.
    Bus(BusError),
}

/// Opens the integration channel (vCPU 0, at boot, after the console).
pub fn open(info: &ChildBootInfo) -> Result<(), OpenError> {
    BOOT_TSC.store(partition_rt::rdtsc(), Ordering::Release);
    TSC_KHZ.store(info.tsc_khz, Ordering::Release);
    let pages = 2 * RING_PAGES;
    let gpa = arch::alloc_ring_pages(u64::from(pages)).ok_or(OpenError::Memory)?;
    let rings = arch::ring_memory(info, gpa, u64::from(pages) * 4096).ok_or(OpenError::Memory)?;
    let (out, inb) = rings.split_at(RING_PAGES as usize * 4096);
    ring::initialize(&out).map_err(|_| OpenError::Memory)?;
    ring::initialize(&inb).map_err(|_| OpenError::Memory)?;
    let opened = vmbus::with_bus(|bus| {
        bus.open(
            INTEGRATION_CLASS,
            RingPages {
                gpa,
                pages,
                outbound_pages: RING_PAGES,
            },
            vmbus::signal_control,
            vmbus::wait,
            WAIT_PATIENCE,
        )
    })
    .ok_or(OpenError::NoBus)?
    .map_err(OpenError::Bus)?;
    vmbus::set_ports(INTEGRATION_SIGNAL, opened.signal_port, opened.event_port);
    let client = IntegrationClient::new(
        Producer::new(out).map_err(|_| OpenError::Memory)?,
        Consumer::new(inb).map_err(|_| OpenError::Memory)?,
    );
    *CLIENT.lock() = Some(client);
    let _ = partition_rt::set_interrupt_handler(CHILD_VMBUS_VECTOR + 1 + OFFER, on_interrupt);
    Ok(())
}

/// The channel's interrupt: acknowledge, then serve the channel.
fn on_interrupt(vector: u8) {
    vmbus::on_event(vector);
    serve();
}

fn uptime_ms() -> u64 {
    match TSC_KHZ.load(Ordering::Acquire) {
        0 => 0,
        khz => partition_rt::rdtsc().wrapping_sub(BOOT_TSC.load(Ordering::Acquire)) / khz,
    }
}

/// Answers what the root sent, if nobody else is doing it now.
fn serve() {
    let Some(mut client) = CLIENT.try_lock() else {
        return;
    };
    let Some(c) = client.as_mut() else {
        return;
    };
    let answer = |_, _| {
        if IGNORE.load(Ordering::Acquire) {
            ShutdownAnswer::Ignore
        } else {
            STOP.store(true, Ordering::Release);
            ShutdownAnswer::Accept
        }
    };
    if c.poll(uptime_ms(), answer, || vmbus::signal(INTEGRATION_SIGNAL))
        .is_err()
    {
        // The channel is broken: stop using it.
        *client = None;
    }
}

/// Serves the channel (answers heartbeats) and tells whether the root
/// asked for a shutdown. Workloads call it at their own pace; it costs a
/// few loads when nothing came.
pub fn stop_requested() -> bool {
    serve();
    STOP.load(Ordering::Acquire)
}

/// Shutdown requests are ignored from now on (workload `hang`).
pub fn ignore_shutdowns() {
    IGNORE.store(true, Ordering::Release);
}

/// Ends an accepted shutdown: the first caller prints
/// [`ShutdownComplete`] (`flushed`: its disks were flushed) and reports
/// `ShutdownDone`; every caller halts with interrupts off (the kernel
/// reports the partition halted once all its vCPUs are).
pub fn finish(flushed: bool) -> ! {
    if !FINISHING.swap(true, Ordering::AcqRel) {
        println!("{}", ShutdownComplete { flushed });
        partition_rt::arch::without_interrupts(|| {
            if let Some(c) = CLIENT.lock().as_mut() {
                let _ = c.done(|| vmbus::signal(INTEGRATION_SIGNAL));
            }
        });
    }
    partition_rt::halt_forever()
}
