//! The root's VMBus service: one [`ChildBus`] per child (the control
//! channel in pages the root chose, the console the child opens), the
//! [`Platform`] that maps granted child pages into the root and makes the
//! ports, and the loop body every wait of the root runs ([`service_all`]).
//!
//! # Granting pages
//! The root holds a capability on each child's memory object (MAP, READ,
//! WRITE). A child "grants" ring pages by naming them in an `Open`; the
//! root checks the range lies in the child's heap
//! ([`Layout::grantable`]) and maps exactly those pages into itself with
//! `MemoryMap` in the child's *window*: `shared_window.start + index ×
//! 128 MiB + child GPA` (the boot page's shared window: guest-physical
//! space the root's page tables identity-map and its SLAT leaves empty),
//! and reads and writes the rings there. Closing unmaps
//! them; destroying the child removes them. Because the window does not
//! depend on where the child's memory lies, a migrated child's shared
//! pages are mapped again at the same addresses ([`move_child`]) and the
//! bus, its rings and regions go on unchanged. (If the root's RAM reaches
//! the windows, pages are mapped at their host-physical address instead
//! and migration is refused.)
//!
//! # Integration services
//! Every child is offered the integration services (heartbeat, shutdown;
//! `vsp::integration`). [`service_all`] drives them on the root's clock
//! (the time-stamp counter, [`set_clock`]): a heartbeat to every child
//! each second, and `root: NAME heartbeat lost after N missed` once a
//! child that answered stops answering for five (unless the kernel
//! reports it halted: it ended). For the node: [`heartbeat_state`],
//! [`request_shutdown`] and [`shutdown_state`], by child index.
//!
//! # Invariants
//! The root touches a child's ring pages only while they are mapped: a
//! bus is dropped (and its pages unmapped) before its child is destroyed.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use ipc::child::CHILD_VMBUS_VECTOR;
use ipc::hypercall::{Call, Name, Rights, SlotHandle};
use ipc::markers;
use ipc::vmbus::control::{CONTROL_RING_PAGES, OpenStatus};
use ipc::vmbus::integration::ShutdownReason;
use ipc::vmbus::network::{MAX_FRAME, Mac};
use ipc::vmbus::ring;
use partition_rt::SharedRingMemory;
use partition_rt::hypercall;
use partition_rt::sync::SpinLock;
use root_partition::disks::{LunError, Luns};
use root_partition::layout::Layout;
use vsp::bus::{
    ChannelName, ChildBus, DropFrames, Event, Heartbeat, IntegrationEvent, Platform, ShutdownError,
    ShutdownState,
};
use vsp::network::{NETWORK_OFFER, NetworkConfig};
use vsp::storage::{STORAGE_OFFER, StorageBackend};
use vsp::switch::Switch;

use crate::children::MAX_CHILDREN;
use crate::storage::DataDisk;

/// Vector of the first child's control channel on the root's vCPU; child
/// `i`'s channel `c` (0 = control, 1 + offer id) uses `BASE + 4 i + c`.
pub const VMBUS_VECTOR_BASE: u8 = 0xa0;
/// Channels per child (control + offers).
pub const CHANNELS: usize = 5;

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

macro_rules! println {
    ($($arg:tt)*) => {
        partition_rt::console::print_line(format_args!($($arg)*))
    };
}

/// What the root needs to act for one child.
pub struct RootPlatform {
    /// The root's own partition (CONTROL): where granted pages are mapped.
    pub root: SlotHandle,
    /// The root's vCPU (ports from the child are bound to it).
    pub root_vcpu: SlotHandle,
    /// The child.
    pub partition: SlotHandle,
    /// The child's memory object (MAP, READ, WRITE).
    pub memory: SlotHandle,
    /// The child's vCPU 0 (ports to the child are bound to it).
    pub vcpu0: SlotHandle,
    /// Host-physical base of the child's memory.
    pub base: u64,
    /// The child's layout.
    pub layout: Layout,
    /// Child index (for vectors).
    pub index: usize,
    /// The root's end of each channel's root-to-child port.
    pub to_child: [Option<SlotHandle>; CHANNELS],
    /// The child's pages mapped into the root now: (GPA, pages).
    pub shared: Vec<(u64, u64)>,
}

/// Bytes of one child's window: its shared pages must lie below this GPA.
const WINDOW_BYTES: u64 = 128 << 20;
/// Where the windows start (`BootInfo::shared_window`; 0: no windows).
static WINDOW_BASE: AtomicU64 = AtomicU64::new(0);

/// Takes the windows from the boot page's shared window, if it holds one
/// per child.
pub fn choose_windows(shared: ipc::boot::PhysRange) {
    let fits = shared.start != 0 && shared.len() >= MAX_CHILDREN as u64 * WINDOW_BYTES;
    WINDOW_BASE.store(if fits { shared.start } else { 0 }, Ordering::Release);
}

/// Where child `index` (memory at host-physical `base`) has its shared
/// pages in the root, and the GPA limit of what can be shared.
pub fn window_of(index: usize, base: u64) -> (u64, u64) {
    match WINDOW_BASE.load(Ordering::Acquire) {
        0 => (base, u64::MAX),
        start => (start + index as u64 * WINDOW_BYTES, WINDOW_BYTES),
    }
}

fn call(c: Call) -> Result<[u64; 3], OpenStatus> {
    hypercall(&c).map_err(|_| OpenStatus::NoResources)
}

fn slot(raw: u64) -> Result<SlotHandle, OpenStatus> {
    SlotHandle::from_raw(raw).map_err(|_| OpenStatus::NoResources)
}

impl RootPlatform {
    /// Maps child pages `[gpa, gpa + pages)` into the child's window in the root.
    fn map_pages(&mut self, gpa: u64, pages: u64) -> Result<SharedRingMemory, OpenStatus> {
        let (window, limit) = window_of(self.index, self.base);
        let end = gpa.checked_add(pages * 4096).ok_or(OpenStatus::BadRange)?;
        if end > limit {
            return Err(OpenStatus::BadRange);
        }
        let memory = crate::hal::map_rings(self.root, self.memory, gpa / 4096, window + gpa, pages)
            .map_err(|_| OpenStatus::BadRange)?;
        self.shared.push((gpa, pages));
        Ok(memory)
    }

    /// Makes a port pair for channel `channel` (0 = control): returns the
    /// child's slots (signal, event).
    pub fn make_ports(&mut self, channel: usize) -> Result<(SlotHandle, SlotHandle), OpenStatus> {
        self.make_ports_at(channel, None)
    }

    /// As [`RootPlatform::make_ports`], the child's copies going into the
    /// slots `at` (signal, event) when given (a restored child's saved
    /// handles), else into the lowest free slots.
    pub fn make_ports_at(
        &mut self,
        channel: usize,
        at: Option<(SlotHandle, SlotHandle)>,
    ) -> Result<(SlotHandle, SlotHandle), OpenStatus> {
        let give =
            |port: SlotHandle, rights: Rights, at: Option<SlotHandle>, target: SlotHandle| {
                let c = match at {
                    Some(at) => Call::CapDelegateAt {
                        slot: port,
                        target,
                        rights,
                        at,
                    },
                    None => Call::CapDelegate {
                        slot: port,
                        target,
                        rights,
                    },
                };
                slot(call(c)?[0])
            };
        let vector = self.index * CHANNELS + channel;
        if channel >= CHANNELS || vector >= PORTS.len() {
            return Err(OpenStatus::NoResources);
        }
        let from_child = slot(call(Call::PortCreate)?[0])?;
        PORTS[vector].store(from_child.raw(), Ordering::Release);
        SIGNALS[vector].store(0, Ordering::Release);
        call(Call::PortBind {
            port: from_child,
            vcpu: self.root_vcpu,
            vector: VMBUS_VECTOR_BASE + vector as u8,
        })?;
        let signal = give(from_child, Rights::SIGNAL, at.map(|a| a.0), self.partition)?;
        let to_child = slot(call(Call::PortCreate)?[0])?;
        call(Call::PortBind {
            port: to_child,
            vcpu: self.vcpu0,
            vector: CHILD_VMBUS_VECTOR + channel as u8,
        })?;
        let event = give(to_child, Rights::BIND, at.map(|a| a.1), self.partition)?;
        self.to_child[channel] = Some(to_child);
        Ok((signal, event))
    }
}

impl Platform for RootPlatform {
    type Memory = SharedRingMemory;

    fn map(
        &mut self,
        gpa: u64,
        pages: u32,
        outbound_pages: u32,
    ) -> Result<(SharedRingMemory, SharedRingMemory), OpenStatus> {
        if !self.layout.grantable(gpa, u64::from(pages)) {
            return Err(OpenStatus::BadRange);
        }
        let memory = self.map_pages(gpa, u64::from(pages))?;
        Ok(memory.split_at(outbound_pages as usize * 4096))
    }

    fn unmap(&mut self, gpa: u64, pages: u32) {
        let (window, _) = window_of(self.index, self.base);
        let _ = hypercall(&Call::MemoryUnmap {
            partition: self.root,
            gpa: window + gpa,
            pages: u64::from(pages),
        });
        self.shared.retain(|&(g, _)| g != gpa);
    }

    fn map_buffer(&mut self, gpa: u64, pages: u32) -> Result<SharedRingMemory, OpenStatus> {
        if !self.layout.grantable(gpa, u64::from(pages)) {
            return Err(OpenStatus::BadRange);
        }
        self.map_pages(gpa, u64::from(pages))
    }

    fn ports(&mut self, offer_id: u32) -> Result<(u64, u64), OpenStatus> {
        let (signal, event) = self.make_ports(1 + offer_id as usize)?;
        Ok((signal.raw(), event.raw()))
    }

    fn signal(&mut self, offer_id: Option<u32>) {
        let channel = offer_id.map_or(0, |o| 1 + o as usize);
        if let Some(Some(port)) = self.to_child.get(channel) {
            let _ = hypercall(&Call::PortSignal { port: *port });
        }
    }
}

/// One child's bus.
pub struct Bus {
    name: Name,
    bus: ChildBus<SharedRingMemory>,
    platform: RootPlatform,
    /// The disks of its storage controller (none without a data volume).
    disks: Option<Luns<DataDisk>>,
    /// Bounce buffer of its storage requests (identity mapped: the disk
    /// driver reads and writes it directly).
    bounce: Vec<u8>,
}

static BUSES: SpinLock<[Option<Bus>; MAX_CHILDREN]> = SpinLock::new([const { None }; MAX_CHILDREN]);

/// Sets up child `index`'s control channel, before the child runs: maps
/// its pages into the root, initialises both rings, makes the ports.
/// Returns the child's (signal, event) slots for its boot page.
pub fn attach(
    name: Name,
    mut platform: RootPlatform,
) -> Result<(SlotHandle, SlotHandle), OpenStatus> {
    let control = platform.layout.vmbus_control();
    let memory = platform.map_pages(control.start, control.len() / 4096)?;
    let (outbound, inbound) = memory.split_at(CONTROL_RING_PAGES as usize * 4096);
    ring::initialize(&outbound).map_err(|_| OpenStatus::BadRange)?;
    ring::initialize(&inbound).map_err(|_| OpenStatus::BadRange)?;
    let ports = platform.make_ports(0)?;
    let mut bus = ChildBus::new(outbound, inbound).map_err(|_| OpenStatus::BadRange)?;
    // A NIC on the switch's port for this child, with a MAC of the root's choosing.
    bus.set_network(child_port(platform.index));
    // The root services every bus in a loop while children run (and sleeps
    // only inside disk requests, during a service pass): storage requests
    // and network packets need no signal.
    bus.set_storage_polling(true);
    bus.set_network_polling(true);
    // One network signal decision per service pass (`service_all`).
    bus.set_network_deferred_signals(true);
    let disks = crate::storage::volume().map(|v| Luns::new(&v));
    install(name, bus, platform, disks);
    Ok(ports)
}

/// Makes `bus` child `platform.index`'s, with its disks (and a bounce
/// buffer for them).
fn install(
    name: Name,
    bus: ChildBus<SharedRingMemory>,
    platform: RootPlatform,
    disks: Option<Luns<DataDisk>>,
) {
    let index = platform.index;
    let bounce = if disks.is_some() {
        vec![0; vsp::storage::BOUNCE_BYTES]
    } else {
        Vec::new()
    };
    BUSES.lock()[index] = Some(Bus {
        name,
        bus,
        platform,
        disks,
        bounce,
    });
}

/// What a bus reports: console lines, channels opened and closed.
fn on_event(name: Name) -> impl FnMut(Event<'_>) {
    move |event: Event<'_>| match event {
        Event::Line(line) => println!(
            "{}",
            markers::ChildConsoleLine {
                child: name.as_str(),
                line
            }
        ),
        Event::Opened(ChannelName::Console) => {
            println!("{}", markers::ConsoleOpened(name.as_str()))
        }
        Event::Opened(ChannelName::Storage) => {
            println!("{}", markers::StorageOpened(name.as_str()))
        }
        Event::Opened(ChannelName::Control | ChannelName::Network | ChannelName::Integration)
        | Event::Integration(_) => {}
        Event::Closed(channel, reason) => println!(
            "{}",
            markers::ChannelClosed {
                child: name.as_str(),
                channel: &channel,
                reason: &reason
            }
        ),
    }
}

/// Services a child's control channel, console and storage once.
fn service_bus(entry: &mut Bus) -> usize {
    let (backend, bounce): (&mut dyn StorageBackend, &mut [u8]) = match entry.disks.as_mut() {
        Some(disks) => (disks, &mut entry.bounce),
        None => (&mut vsp::storage::NoLuns, &mut []),
    };
    entry
        .bus
        .service(&mut entry.platform, backend, bounce, on_event(entry.name))
}

/// Reads a batch of the child's network packets: its frames go into its
/// switch port's queue (without a switch, its NIC is not configured, so
/// `Init` is `Unavailable`). Signals wait for [`flush_network`].
fn service_net(entry: &mut Bus) -> usize {
    let mut on = on_event(entry.name);
    let port = 1 + entry.platform.index;
    let mut state = SWITCH.lock();
    let SwitchState { switch, scratch } = &mut *state;
    match scratch.as_mut() {
        Some(scratch) => {
            let handled = entry.bus.service_network(
                &mut entry.platform,
                &mut switch.ingress(port),
                scratch,
                &mut on,
            );
            // The port carries what the child negotiated.
            if let Some(mtu) = entry.bus.network_mtu()
                && switch.port_mtu(port) != Some(mtu)
            {
                let _ = switch.set_port_mtu(port, mtu);
            }
            handled
        }
        None => entry
            .bus
            .service_network(&mut entry.platform, &mut DropFrames, &mut [], &mut on),
    }
}

/// The signal decision of the child's network channel for the pass.
fn flush_network(entry: &mut Bus) {
    let name = entry.name;
    entry
        .bus
        .network_flush(&mut entry.platform, |e| print_event(name, e));
}

/// Time-stamp counter ticks per millisecond (0: not set yet).
static TSC_KHZ: AtomicU64 = AtomicU64::new(0);

/// Gives the integration services their clock: the time-stamp counter at
/// `tsc_khz` ticks per millisecond (the boot page's figure).
pub fn set_clock(tsc_khz: u64) {
    TSC_KHZ.store(tsc_khz, Ordering::Release);
}

/// Nanoseconds of the root's clock (the time-stamp counter; 2 GHz
/// assumed before [`set_clock`]).
fn now_ns() -> u64 {
    let khz = match TSC_KHZ.load(Ordering::Acquire) {
        0 => 2_000_000,
        k => k,
    };
    (u128::from(partition_rt::rdtsc()) * 1_000_000 / u128::from(khz)) as u64
}

/// Whether the kernel reports `partition` halted (every vCPU stopped).
fn halted(partition: SlotHandle) -> bool {
    matches!(
        hypercall(&Call::PartitionStatus { partition }),
        Ok(s) if s[0] == ipc::hypercall::run_state::STOPPED
    )
}

/// The integration channel's turn: replies read, heartbeat sent when due;
/// a lost heartbeat is reported unless the child halted (it ended).
fn service_integration(entry: &mut Bus, now: u64) -> usize {
    let name = entry.name;
    let partition = entry.platform.partition;
    entry
        .bus
        .integration_poll(&mut entry.platform, now, |event| match event {
            Event::Integration(IntegrationEvent::HeartbeatLost { missed }) => {
                if !halted(partition) {
                    println!(
                        "{}",
                        markers::HeartbeatLost {
                            child: name.as_str(),
                            missed
                        }
                    );
                }
            }
            Event::Integration(IntegrationEvent::HeartbeatBack) => {
                println!("root: {} heartbeat back", name.as_str());
            }
            other => print_event(name, other),
        })
}

/// What the root knows of child `index`'s heartbeat (`None`: no such bus).
pub fn heartbeat_state(index: usize) -> Option<Heartbeat> {
    BUSES
        .lock()
        .get(index)
        .and_then(Option::as_ref)
        .map(|e| e.bus.heartbeat())
}

/// Whether any child has a bus now (its heartbeats are due every second).
pub fn any_bus() -> bool {
    BUSES.lock().iter().any(Option::is_some)
}

/// Asks child `index` to shut down (end its workload, flush its disks,
/// halt) within `deadline_ms`; follow it with [`shutdown_state`]. The
/// caller turns the child off if it is not `Done` and halted in time
/// (`TimedOut` comes by itself once the limit passed), refused, or this
/// fails (`NotOpen`: no such child or no integration channel).
pub fn request_shutdown(index: usize, deadline_ms: u32) -> Result<(), ShutdownError> {
    let mut buses = BUSES.lock();
    let entry = buses
        .get_mut(index)
        .and_then(Option::as_mut)
        .ok_or(ShutdownError::NotOpen)?;
    let name = entry.name;
    entry.bus.request_shutdown(
        &mut entry.platform,
        ShutdownReason::Stop,
        deadline_ms,
        now_ns(),
        |e| print_event(name, e),
    )
}

/// Where child `index`'s shutdown stands (`None`: no such bus).
pub fn shutdown_state(index: usize) -> Option<ShutdownState> {
    BUSES
        .lock()
        .get(index)
        .and_then(Option::as_ref)
        .map(|e| e.bus.shutdown_state())
}

/// One whole service of a child's bus (its own, signals included).
fn service_one(entry: &mut Bus) -> usize {
    let handled = service_bus(entry) + service_net(entry);
    flush_network(entry);
    handled
}

/// The virtual switch: port 0 is the root's NIC, port `1 + i` child `i`;
/// 8 frames queued per port.
pub type RootSwitch = Switch<{ 1 + MAX_CHILDREN }, 8>;
/// The largest MTU a child may negotiate: jumbo frames between children;
/// its switch port takes the MTU it negotiated (a frame larger than a
/// port's MTU is dropped there and counted). The uplink stays at 1500.
pub const CHILD_MTU: u16 = ipc::vmbus::network::MAX_MTU;

/// The switch (a static: at ~650 KiB it would not fit the root's stack on
/// its way to the heap) and its scratch frame, which exists once the root
/// has a NIC and the switch is in use.
struct SwitchState {
    switch: RootSwitch,
    scratch: Option<Vec<u8>>,
}

static SWITCH: SpinLock<SwitchState> = SpinLock::new(SwitchState {
    switch: RootSwitch::new(),
    scratch: None,
});

/// Starts the switch with the NIC on port 0 (no MAC of its own: the
/// outside world's addresses arrive there).
pub fn start_switch() {
    let mut state = SWITCH.lock();
    let _ = state.switch.set_port_up(0, true);
    state.scratch = Some(vec![0u8; MAX_FRAME as usize]);
}

/// Brings up child `index`'s switch port with its MAC and MTU; the NIC
/// setting for its bus, or `None` without a switch.
fn child_port(index: usize) -> Option<NetworkConfig> {
    let mut state = SWITCH.lock();
    state.scratch.as_ref()?;
    let port = 1 + index;
    let mac = Mac::for_child(index as u16);
    let switch = &mut state.switch;
    let configured = switch.set_port_mac(port, Some(mac)).is_ok()
        && switch.set_port_mtu(port, CHILD_MTU).is_ok()
        && switch.set_port_up(port, true).is_ok();
    configured.then_some(NetworkConfig {
        mac,
        mtu: CHILD_MTU,
    })
}

/// Drain passes per service pass at most (8 queued frames per port, 4
/// taken per port per pass: 2 passes empty a full queue).
const PASSES: usize = 8;

/// Moves frames between the NIC and the children's ports: what the NIC
/// received goes into port 0's queue, then one fair pass delivers every
/// queue (port 0 out of the NIC, the others into each child's posted
/// receive buffers). Called with the buses locked.
fn switch_frames(buses: &mut [Option<Bus>; MAX_CHILDREN]) -> usize {
    let mut state = SWITCH.lock();
    if state.scratch.is_none() {
        return 0;
    }
    let switch = &mut state.switch;
    let received = crate::net::receive(32, |frame| {
        let _ = switch.enqueue(0, frame, 0);
    });
    // Fair passes until the queues are empty (bounded: each pass takes at
    // least one frame, and nothing is added meanwhile).
    // Room: the NIC takes what comes; a child, what it has posted buffers for.
    let mut room = [usize::MAX; 1 + MAX_CHILDREN];
    for (i, bus) in buses.iter().enumerate() {
        room[1 + i] = bus.as_ref().map_or(0, |b| b.bus.network_posted());
    }
    let mut drained = 0;
    for _ in 0..PASSES {
        let taken = switch.drain_within(&mut room, |port, frame, flags| {
            if port == 0 {
                return crate::net::send(frame);
            }
            match buses.get_mut(port - 1).and_then(Option::as_mut) {
                Some(entry) => {
                    let name = entry.name;
                    entry
                        .bus
                        .network_deliver(&mut entry.platform, frame, flags, |e| {
                            print_event(name, e)
                        })
                        .is_ok()
                }
                None => false,
            }
        });
        drained += taken;
        if taken == 0 {
            break;
        }
    }
    received + drained
}

/// Network rounds per service pass at most: each reads a batch of every
/// child's sends (up to its switch port's queue of 8) and switches them;
/// rounds go on while frames move, so one pass carries a whole window of
/// sends (64) and completes them with one signal.
const ROUNDS: usize = 16;

/// Services every child's bus once, then moves frames — children's
/// sends into the switch, the switch out to the NIC and the children's
/// receive buffers — round after round while they come (at most
/// [`ROUNDS`]), then makes each network channel's signal decision once:
/// a child that waits is woken once per pass, however many of its sends
/// completed and frames arrived. Returns the packets and frames handled.
pub fn service_all() -> usize {
    let mut buses = BUSES.lock();
    let mut handled: usize = buses.iter_mut().flatten().map(service_bus).sum();
    let now = now_ns();
    handled += buses
        .iter_mut()
        .flatten()
        .map(|entry| service_integration(entry, now))
        .sum::<usize>();
    for _ in 0..ROUNDS {
        let round =
            buses.iter_mut().flatten().map(service_net).sum::<usize>() + switch_frames(&mut buses);
        handled += round;
        if round == 0 {
            break;
        }
    }
    buses.iter_mut().flatten().for_each(flush_network);
    handled
}

/// Drains child `index`'s bus (it stopped), prints its console summary if
/// it opened one, and keeps the bus (its pages stay mapped until destroy).
pub fn drain(index: usize) {
    let mut buses = BUSES.lock();
    // Bounded: a stopped child adds nothing, so this ends when its rings
    // are empty. The switch forwards meanwhile: while the child's port
    // queue is full its provider reads no more sends (back-pressure), so
    // without forwarding its last frames would stay unread.
    for _ in 0..100_000 {
        let Some(Some(entry)) = buses.get_mut(index) else {
            return;
        };
        let own = service_one(entry);
        let queued = SWITCH.lock().switch.queued(1 + index);
        if own == 0 && queued == 0 {
            break;
        }
        switch_frames(&mut buses);
        buses.iter_mut().flatten().for_each(flush_network);
    }
    let Some(Some(entry)) = buses.get_mut(index) else {
        return;
    };
    let stats = entry.bus.console_stats();
    let signals = u64::from(SIGNALS[index * CHANNELS + 1].load(Ordering::Acquire));
    let child = entry.name.as_str();
    if stats.lines > 0 {
        println!(
            "{}",
            markers::ConsoleSummary {
                child,
                lines: stats.lines,
                out_of_sequence: stats.out_of_sequence,
                signals,
            }
        );
    }
    if stats.lines >= 100 && signals * markers::LINES_PER_SIGNAL < stats.lines {
        println!("{}", markers::SignalsSuppressed(child));
    }
    let storage = entry.bus.storage_stats();
    if storage.requests > 0 {
        println!(
            "{}",
            markers::StorageSummary {
                child,
                requests: storage.requests,
                errors: storage.errors(),
                signals: u64::from(
                    SIGNALS[index * CHANNELS + 1 + STORAGE_OFFER as usize].load(Ordering::Acquire)
                ),
            }
        );
    }
    let network = entry.bus.network_stats();
    if network.sends > 0 || network.received > 0 {
        let port = SWITCH.lock().switch.counters(1 + index);
        println!(
            "{}",
            markers::NetworkSummary {
                child,
                sent: network.sends,
                refused_spoofed: network.completed(ipc::vmbus::network::Status::SpoofedSource),
                delivered: network.received,
                switch_spoofed: port.dropped(vsp::switch::DropReason::Spoofed),
                queue_full: port.dropped(vsp::switch::DropReason::QueueFull),
                signals: u64::from(
                    SIGNALS[index * CHANNELS + 1 + NETWORK_OFFER as usize].load(Ordering::Acquire),
                ),
                signals_to: network.signals_to_child,
            }
        );
        println!(
            "{}",
            markers::NetworkMessages {
                child,
                from_child: network.packets_from_child,
                to_child: network.packets_to_child,
                frames: network.sends + network.received,
            }
        );
    }
    if let Some(disks) = entry.disks.as_mut()
        && let Err(e) = disks.flush_all()
    {
        println!("root: {child} storage: flushing its disks failed: {e:?}");
    }
}

/// Why a disk could not be attached or removed.
// The fields are read through `Debug` when the failure is printed.
#[allow(dead_code)]
#[derive(Debug)]
pub enum DiskError {
    /// No such child bus.
    NoChild,
    /// The root has no data volume.
    NoVolume,
    /// The LUN table refused.
    Lun(LunError),
}

fn print_event(name: Name, event: Event<'_>) {
    if let Event::Closed(channel, reason) = event {
        println!(
            "{}",
            markers::ChannelClosed {
                child: name.as_str(),
                channel: &channel,
                reason: &reason
            }
        );
    }
}

/// Puts `file` on child `index`'s controller as `lun`; `hot` tells a
/// running child (`LunAdded`).
pub fn add_disk(index: usize, lun: u8, file: &str, hot: bool) -> Result<u64, DiskError> {
    let mut buses = BUSES.lock();
    let entry = buses
        .get_mut(index)
        .and_then(Option::as_mut)
        .ok_or(DiskError::NoChild)?;
    let disks = entry.disks.as_mut().ok_or(DiskError::NoVolume)?;
    let sectors = disks
        .attach(lun, &alloc::format!("/{file}"))
        .map_err(DiskError::Lun)?;
    let name = entry.name;
    if hot {
        entry
            .bus
            .lun_added(&mut entry.platform, lun, sectors, |e| print_event(name, e));
    }
    println!(
        "{}",
        markers::LunAttached {
            child: name.as_str(),
            lun,
            file,
            sectors,
            hot
        }
    );
    Ok(sectors)
}

/// Takes `lun` off child `index`'s running controller: the child is told,
/// requests still queued for it complete `Removed`, and the disk is
/// flushed and closed.
pub fn remove_disk(index: usize, lun: u8) -> Result<(), DiskError> {
    let mut buses = BUSES.lock();
    let entry = buses
        .get_mut(index)
        .and_then(Option::as_mut)
        .ok_or(DiskError::NoChild)?;
    let name = entry.name;
    entry
        .bus
        .lun_removed(&mut entry.platform, lun, |e| print_event(name, e));
    let disks = entry.disks.as_mut().ok_or(DiskError::NoVolume)?;
    let file = disks.detach(lun).map_err(DiskError::Lun)?;
    println!(
        "{}",
        markers::LunRemoved {
            child: name.as_str(),
            lun,
            file: file.trim_start_matches('/'),
            served: entry.bus.storage_stats().completions,
        }
    );
    Ok(())
}

/// Storage requests child `index`'s controller has completed.
pub fn storage_served(index: usize) -> u64 {
    BUSES
        .lock()
        .get(index)
        .and_then(Option::as_ref)
        .map_or(0, |e| e.bus.storage_stats().completions)
}

/// The pages of child `index` mapped into the root now: (GPA, pages). The
/// root writes them (rings, buffers) without the child's dirty log seeing
/// it, so a migration sends them again while the child is paused.
pub fn shared_pages(index: usize) -> Vec<(u64, u64)> {
    BUSES
        .lock()
        .get(index)
        .and_then(Option::as_ref)
        .map_or_else(Vec::new, |e| e.platform.shared.clone())
}

/// The partition a child's bus now serves (after a migration's handover).
#[derive(Clone, Copy, Debug)]
pub struct MovedChild {
    /// The new partition (CONTROL).
    pub partition: SlotHandle,
    /// Its memory object (MAP, READ, WRITE).
    pub memory: SlotHandle,
    /// Its vCPU 0.
    pub vcpu0: SlotHandle,
    /// Host-physical base of its memory.
    pub base: u64,
}

/// Hands child `index`'s bus over to the partition it migrated to: its
/// shared pages are mapped again at the same window addresses from the
/// new memory (so rings, regions and the bus state go on unchanged), and
/// every channel's root-to-child port delivers to the new vCPU 0. Needs
/// windows. On failure the old mappings are back and nothing changed.
pub fn move_child(index: usize, to: MovedChild) -> Result<(), OpenStatus> {
    let mut buses = BUSES.lock();
    let entry = buses
        .get_mut(index)
        .and_then(Option::as_mut)
        .ok_or(OpenStatus::NoResources)?;
    let platform = &mut entry.platform;
    if WINDOW_BASE.load(Ordering::Acquire) == 0 {
        return Err(OpenStatus::NoResources);
    }
    let (window, _) = window_of(platform.index, platform.base);
    let remap = |memory: SlotHandle, ranges: &[(u64, u64)]| -> Result<(), OpenStatus> {
        for &(gpa, pages) in ranges {
            let _ = hypercall(&Call::MemoryUnmap {
                partition: platform.root,
                gpa: window + gpa,
                pages,
            });
            call(Call::MemoryMap {
                partition: platform.root,
                memory,
                first_page: gpa / 4096,
                gpa: window + gpa,
                pages,
                access: Rights::READ | Rights::WRITE,
            })?;
        }
        Ok(())
    };
    let shared = platform.shared.clone();
    if let Err(e) = remap(to.memory, &shared) {
        // Back to the old memory: every range, whatever failed.
        let _ = remap(platform.memory, &shared);
        return Err(e);
    }
    for (channel, port) in platform.to_child.iter().enumerate() {
        if let Some(port) = port {
            call(Call::PortBind {
                port: *port,
                vcpu: to.vcpu0,
                vector: CHILD_VMBUS_VECTOR + channel as u8,
            })?;
        }
    }
    platform.partition = to.partition;
    platform.memory = to.memory;
    platform.vcpu0 = to.vcpu0;
    platform.base = to.base;
    Ok(())
}

/// The root's ports of child `index`'s channels: (channel, the port the
/// child signals, the port the root signals), raw handles.
pub fn channel_ports(index: usize) -> Vec<(usize, u64, u64)> {
    let buses = BUSES.lock();
    let Some(entry) = buses.get(index).and_then(Option::as_ref) else {
        return Vec::new();
    };
    entry
        .platform
        .to_child
        .iter()
        .enumerate()
        .filter_map(|(channel, to)| {
            let from = PORTS
                .get(index * CHANNELS + channel)?
                .load(Ordering::Acquire);
            to.map(|to| (channel, from, to.raw()))
        })
        .collect()
}

/// The root's side of child `index`'s bus as saved-state bytes
/// (`vsp::bus_state`), and its disks (LUN, file path).
pub fn save_bus(index: usize, out: &mut [u8]) -> Option<(usize, Vec<(u8, String)>)> {
    let buses = BUSES.lock();
    let entry = buses.get(index).and_then(Option::as_ref)?;
    let len = entry.bus.save().encode(out).ok()?;
    let luns = entry.disks.as_ref().map_or_else(Vec::new, |d| {
        d.present()
            .filter_map(|lun| Some((lun, String::from(d.path(lun)?))))
            .collect()
    });
    Some((len, luns))
}

/// Forgets child `index`'s bus without serving it again (its state was
/// saved with what its rings hold): disks flushed and closed, switch port
/// down, pages unmapped.
pub fn forget(index: usize) {
    let mut buses = BUSES.lock();
    if let Some(slot) = buses.get_mut(index)
        && let Some(mut entry) = slot.take()
    {
        if let Some(disks) = entry.disks.as_mut() {
            let _ = disks.flush_all();
        }
        {
            let mut state = SWITCH.lock();
            let port = 1 + index;
            let _ = state.switch.set_port_up(port, false);
            let _ = state.switch.set_port_mac(port, None);
        }
        for (gpa, pages) in entry.platform.shared.clone() {
            entry.platform.unmap(gpa, pages as u32);
        }
    }
}

/// Why a saved bus could not be restored.
// The fields are read through `Debug` when the failure is printed.
#[allow(dead_code)]
#[derive(Debug)]
pub enum RestoreBusError {
    /// The saved bytes do not decode.
    Decode(vsp::bus_state::DecodeError),
    /// The control channel's pages could not be mapped.
    Map(OpenStatus),
    /// The state does not fit the child's memory.
    Restore(vsp::bus_state::RestoreError),
    /// A saved disk could not be opened again.
    Disk(u8, LunError),
}

/// Rebuilds child `index`'s bus from saved bytes over its (restored)
/// memory: the control rings are attached as they are, every open channel
/// mapped again, the NIC keeps its saved MAC on the child's switch port,
/// and the saved disks are opened again at their LUNs.
pub fn restore_bus(
    name: Name,
    mut platform: RootPlatform,
    saved: &[u8],
    luns: &[(u8, String)],
) -> Result<(), RestoreBusError> {
    let state = vsp::bus_state::BusState::decode(saved).map_err(RestoreBusError::Decode)?;
    let control = platform.layout.vmbus_control();
    let memory = platform
        .map_pages(control.start, control.len() / 4096)
        .map_err(RestoreBusError::Map)?;
    let (outbound, inbound) = memory.split_at(CONTROL_RING_PAGES as usize * 4096);
    let bus = match ChildBus::restore(&state, outbound, inbound, &mut platform) {
        Ok(bus) => bus,
        Err(e) => {
            platform.unmap(control.start, (control.len() / 4096) as u32);
            return Err(RestoreBusError::Restore(e));
        }
    };
    let index = platform.index;
    if let Some(config) = bus.network_config() {
        let mut state = SWITCH.lock();
        let port = 1 + index;
        let _ = state.switch.set_port_mac(port, Some(config.mac));
        let _ = state
            .switch
            .set_port_mtu(port, bus.network_mtu().unwrap_or(config.mtu));
        let _ = state.switch.set_port_up(port, true);
    }
    let mut disks = crate::storage::volume().map(|v| Luns::new(&v));
    for (lun, path) in luns {
        let d = disks
            .as_mut()
            .ok_or(RestoreBusError::Disk(*lun, LunError::NoSuchLun))?;
        d.attach(*lun, path)
            .map_err(|e| RestoreBusError::Disk(*lun, e))?;
    }
    install(name, bus, platform, disks);
    Ok(())
}

/// Announces child `index`'s MAC from its switch port (after a migration:
/// peers and the uplink learn where it is now).
pub fn announce(index: usize) {
    let _ = SWITCH.lock().switch.announce(1 + index);
}

/// Frames delivered to child `index`'s network adapter so far.
pub fn frames_received(index: usize) -> u64 {
    BUSES
        .lock()
        .get(index)
        .and_then(Option::as_ref)
        .map_or(0, |e| e.bus.network_stats().received)
}

/// Forgets child `index`'s bus before the child is destroyed.
pub fn detach(index: usize) {
    let mut buses = BUSES.lock();
    if let Some(slot) = buses.get_mut(index)
        && let Some(mut entry) = slot.take()
    {
        for _ in 0..100_000 {
            if service_one(&mut entry) == 0 {
                break;
            }
        }
        if let Some(disks) = entry.disks.as_mut() {
            let _ = disks.flush_all();
        }
        {
            let mut state = SWITCH.lock();
            let port = 1 + index;
            let _ = state.switch.set_port_up(port, false);
            let _ = state.switch.set_port_mac(port, None);
        }
        entry.bus.shut_down(&mut entry.platform);
        let control = entry.platform.layout.vmbus_control();
        entry
            .platform
            .unmap(control.start, (control.len() / 4096) as u32);
    }
}

/// The network benchmark's reference: the root pushes `frames` frames of
/// `size` bytes from child 0's port to child 1's through the same switch,
/// each delivered by a copy into a receive buffer (what a delivery into a
/// child's region costs), without VMBus. `None` without a switch.
pub fn bench_switch(frames: u64, size: usize) -> Option<u64> {
    let mut state = SWITCH.lock();
    state.scratch.as_ref()?;
    let switch = &mut state.switch;
    let (from, to) = (Mac::for_child(0), Mac::for_child(1));
    for (port, mac) in [(1, from), (2, to)] {
        let _ = switch.set_port_mac(port, Some(mac));
        let _ = switch.set_port_up(port, true);
    }
    let mut frame = vec![0u8; size.max(22)];
    frame[..6].copy_from_slice(&to.0);
    frame[6..12].copy_from_slice(&from.0);
    frame[12..14].copy_from_slice(&ipc::kv::FRAMES_ETHERTYPE);
    let mut delivered = vec![0u8; frame.len()];
    let mut moved = 0u64;
    let start = partition_rt::rdtsc();
    for i in 0..frames {
        frame[14..22].copy_from_slice(&i.to_le_bytes());
        let _ = switch.enqueue(1, &frame, 0);
        switch.drain(|port, f, _| {
            if port == 2 {
                delivered[..f.len()].copy_from_slice(f);
                moved += 1;
            }
            true
        });
    }
    let cycles = partition_rt::rdtsc().wrapping_sub(start);
    (moved == frames).then_some(cycles)
}
