//! The root's VMBus host ([`VmbusHost`]): one [`ChildBus`] per child (the
//! control channel in pages the root chose, the console the child opens),
//! the [`Platform`] that maps granted child pages into the root and makes
//! the ports ([`Grant`] and its borrowed view), the integration services
//! on the root's clock, the virtual switch's rounds, disks added and
//! removed, and a bus saved, restored, forgotten or moved.
//!
//! # Granting pages
//! The root holds a capability on each child's memory object (MAP, READ,
//! WRITE). A child "grants" ring pages by naming them in an `Open`; the
//! root checks the range lies in the child's heap
//! ([`Layout::grantable`]) and maps exactly those pages into itself with
//! `MemoryMap` ([`Kernel::map_rings`]) in the child's *window*:
//! `shared_window.start + index × 128 MiB + child GPA` (the boot page's
//! shared window: guest-physical space the root's page tables
//! identity-map and its SLAT leaves empty), and reads and writes the rings
//! there. Closing unmaps them; destroying the child removes them. Because
//! the window does not depend on where the child's memory lies, a migrated
//! child's shared pages are mapped again at the same addresses
//! ([`VmbusHost::move_child`]) and the bus, its rings and regions go on
//! unchanged. (Without windows, pages are mapped at their host-physical
//! address instead and migration is refused.)
//!
//! # Integration services
//! Every child is offered the integration services (heartbeat, shutdown;
//! `vsp::integration`). [`VmbusHost::service_all`] drives them on the
//! root's clock: a heartbeat to every child each second, and `root: NAME
//! heartbeat lost after N missed` once a child that answered stops
//! answering for five (unless the kernel reports it halted: it ended).
//!
//! # What the host does not own
//! The interrupt handlers and their pending bits stay with the caller
//! ([`Signals`]: which port stands behind each vector, how many signals
//! came); the NIC is reached through an [`Uplink`]; the switch lives where
//! the caller can put ~650 KiB (`S: DerefMut<Target = RootSwitch>`).
//!
//! # Invariants
//! The root touches a child's ring pages only while they are mapped: a
//! bus is dropped (and its pages unmapped) before its child is destroyed.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::ops::DerefMut;

use ipc::child::CHILD_VMBUS_VECTOR;
use ipc::hypercall::{Call, Name, Rights, SlotHandle};
use ipc::markers;
use ipc::vmbus::control::{CONTROL_RING_PAGES, OpenStatus};
use ipc::vmbus::integration::ShutdownReason;
use ipc::vmbus::network::{MAX_FRAME, Mac};
use ipc::vmbus::ring;
use vhd::BlockDevice;
use vsp::bus::{
    ChannelName, ChildBus, DropFrames, Event, Heartbeat, IntegrationEvent, Platform, ShutdownError,
    ShutdownState,
};
use vsp::network::{NETWORK_OFFER, NetworkConfig};
use vsp::storage::{STORAGE_OFFER, StorageBackend};
use vsp::switch::Switch;

use crate::disks::{LunError, Luns, SharedVolume};
use crate::hv::{Kernel, SplitRings};
use crate::layout::Layout;
use crate::partition::MAX_CHILDREN;
use crate::say;

#[cfg(test)]
mod tests;

/// Vector of the first child's control channel on the root's vCPU; child
/// `i`'s channel `c` (0 = control, 1 + offer id) uses `BASE + CHANNELS i + c`.
pub const VMBUS_VECTOR_BASE: u8 = 0xa0;
/// Channels per child (control + offers).
pub const CHANNELS: usize = 5;
/// Bytes of one child's window: its shared pages must lie below this GPA.
pub const WINDOW_BYTES: u64 = 128 << 20;

/// The virtual switch: port 0 is the root's NIC, port `1 + i` child `i`;
/// 8 frames queued per port.
pub type RootSwitch = Switch<{ 1 + MAX_CHILDREN }, 8>;
/// The largest MTU a child may negotiate: jumbo frames between children;
/// its switch port takes the MTU it negotiated (a frame larger than a
/// port's MTU is dropped there and counted). The uplink stays at 1500.
pub const CHILD_MTU: u16 = ipc::vmbus::network::MAX_MTU;

/// Drain passes per service pass at most (8 queued frames per port, 4
/// taken per port per pass: 2 passes empty a full queue).
const PASSES: usize = 8;
/// Network rounds per service pass at most: each reads a batch of every
/// child's sends (up to its switch port's queue of 8) and switches them;
/// rounds go on while frames move, so one pass carries a whole window of
/// sends (64) and completes them with one signal.
const ROUNDS: usize = 16;

/// The interrupt side of the root's ports, which the interrupt handlers
/// own: slot `CHANNELS × child + channel` is vector
/// `VMBUS_VECTOR_BASE + slot`.
pub trait Signals {
    /// `port` (the root's end the child signals) now stands behind `slot`;
    /// its count starts again at zero.
    fn bind(&self, slot: usize, port: SlotHandle);
    /// The port behind `slot`, if any.
    fn port(&self, slot: usize) -> Option<SlotHandle>;
    /// Interrupts received on `slot` since it was bound.
    fn count(&self, slot: usize) -> u64;
}

/// The root's NIC as the switch's port 0.
pub trait Uplink {
    /// Hands up to `max` received frames to `take`; returns how many.
    fn receive(&self, max: usize, take: &mut dyn FnMut(&[u8])) -> usize;
    /// Sends `frame`; whether the NIC took it.
    fn send(&self, frame: &[u8]) -> bool;
}

/// Where child `index` (memory at host-physical `base`) has its shared
/// pages in the root, and the GPA limit of what can be shared, given the
/// windows' start (0: no windows).
pub fn window_of(window_base: u64, index: usize, base: u64) -> (u64, u64) {
    match window_base {
        0 => (base, u64::MAX),
        start => (start + index as u64 * WINDOW_BYTES, WINDOW_BYTES),
    }
}

/// What the root holds to act for one child's bus.
#[derive(Clone, Debug)]
pub struct Grant {
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
    /// Child index (for vectors and windows).
    pub index: usize,
    /// The root's end of each channel's root-to-child port.
    pub to_child: [Option<SlotHandle>; CHANNELS],
    /// The child's pages mapped into the root now: (GPA, pages).
    pub shared: Vec<(u64, u64)>,
}

fn call<K: Kernel>(k: &K, c: Call) -> Result<[u64; 3], OpenStatus> {
    k.call(&c).map_err(|_| OpenStatus::NoResources)
}

fn slot(raw: u64) -> Result<SlotHandle, OpenStatus> {
    SlotHandle::from_raw(raw).map_err(|_| OpenStatus::NoResources)
}

impl Grant {
    /// Makes a port pair for channel `channel` (0 = control), the child's
    /// copies going into the slots `at` (signal, event) when given (a
    /// restored child's saved handles), else into the lowest free slots.
    /// Returns the child's slots (signal, event).
    pub fn make_ports_at<K: Kernel>(
        &mut self,
        k: &K,
        signals: &dyn Signals,
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
                slot(call(k, c)?[0])
            };
        let vector = self.index * CHANNELS + channel;
        if channel >= CHANNELS || vector >= MAX_CHILDREN * CHANNELS {
            return Err(OpenStatus::NoResources);
        }
        let from_child = slot(call(k, Call::PortCreate)?[0])?;
        signals.bind(vector, from_child);
        call(
            k,
            Call::PortBind {
                port: from_child,
                vcpu: self.root_vcpu,
                vector: VMBUS_VECTOR_BASE + vector as u8,
            },
        )?;
        let signal = give(from_child, Rights::SIGNAL, at.map(|a| a.0), self.partition)?;
        let to_child = slot(call(k, Call::PortCreate)?[0])?;
        call(
            k,
            Call::PortBind {
                port: to_child,
                vcpu: self.vcpu0,
                vector: CHILD_VMBUS_VECTOR + channel as u8,
            },
        )?;
        let event = give(to_child, Rights::BIND, at.map(|a| a.1), self.partition)?;
        self.to_child[channel] = Some(to_child);
        Ok((signal, event))
    }
}

/// A [`Grant`] with the kernel and the windows: the [`Platform`] a bus is
/// serviced with.
struct Live<'a, K> {
    k: &'a K,
    signals: &'a dyn Signals,
    window_base: u64,
    grant: &'a mut Grant,
}

impl<K: Kernel> Live<'_, K> {
    /// Maps child pages `[gpa, gpa + pages)` into the child's window in the root.
    fn map_pages(&mut self, gpa: u64, pages: u64) -> Result<K::Rings, OpenStatus> {
        let g = &mut *self.grant;
        let (window, limit) = window_of(self.window_base, g.index, g.base);
        let end = pages
            .checked_mul(4096)
            .and_then(|b| gpa.checked_add(b))
            .ok_or(OpenStatus::BadRange)?;
        if end > limit {
            return Err(OpenStatus::BadRange);
        }
        let memory = self
            .k
            .map_rings(g.root, g.memory, gpa / 4096, window + gpa, pages)
            .map_err(|_| OpenStatus::BadRange)?;
        g.shared.push((gpa, pages));
        Ok(memory)
    }
}

impl<K: Kernel> Platform for Live<'_, K> {
    type Memory = K::Rings;

    fn map(
        &mut self,
        gpa: u64,
        pages: u32,
        outbound_pages: u32,
    ) -> Result<(K::Rings, K::Rings), OpenStatus> {
        if !self.grant.layout.grantable(gpa, u64::from(pages)) {
            return Err(OpenStatus::BadRange);
        }
        let memory = self.map_pages(gpa, u64::from(pages))?;
        Ok(memory.split_at(outbound_pages as usize * 4096))
    }

    fn unmap(&mut self, gpa: u64, pages: u32) {
        let g = &mut *self.grant;
        let (window, _) = window_of(self.window_base, g.index, g.base);
        let _ = self.k.call(&Call::MemoryUnmap {
            partition: g.root,
            gpa: window + gpa,
            pages: u64::from(pages),
        });
        g.shared.retain(|&(s, _)| s != gpa);
    }

    fn map_buffer(&mut self, gpa: u64, pages: u32) -> Result<K::Rings, OpenStatus> {
        if !self.grant.layout.grantable(gpa, u64::from(pages)) {
            return Err(OpenStatus::BadRange);
        }
        self.map_pages(gpa, u64::from(pages))
    }

    fn ports(&mut self, offer_id: u32) -> Result<(u64, u64), OpenStatus> {
        let (signal, event) =
            self.grant
                .make_ports_at(self.k, self.signals, 1 + offer_id as usize, None)?;
        Ok((signal.raw(), event.raw()))
    }

    fn signal(&mut self, offer_id: Option<u32>) {
        let channel = offer_id.map_or(0, |o| 1 + o as usize);
        if let Some(Some(port)) = self.grant.to_child.get(channel) {
            let _ = self.k.call(&Call::PortSignal { port: *port });
        }
    }
}

/// One child's bus.
struct Bus<M: ipc::vmbus::memory::RingMemory, D: BlockDevice> {
    name: Name,
    bus: ChildBus<M>,
    grant: Grant,
    /// The disks of its storage controller (none without a data volume).
    disks: Option<Luns<D>>,
    /// Bounce buffer of its storage requests.
    bounce: Vec<u8>,
    /// Its last console lines ([`CONSOLE_TAIL_LINES`]), for the
    /// management API's `vm console`.
    console: ConsoleTail,
}

/// Console lines a bus keeps (the oldest go first).
pub const CONSOLE_TAIL_LINES: usize = 200;

/// A child's last console lines (each at most the console protocol's
/// `MAX_LINE` bytes: the bus's decoder refuses longer ones).
#[derive(Default)]
struct ConsoleTail(alloc::collections::VecDeque<String>);

impl ConsoleTail {
    fn push(&mut self, line: &str) {
        if self.0.len() >= CONSOLE_TAIL_LINES {
            self.0.pop_front();
        }
        self.0.push_back(String::from(line));
    }
}

/// Why a disk could not be attached or removed.
#[derive(Debug)]
pub enum DiskError {
    /// No such child bus.
    NoChild,
    /// The root has no data volume.
    NoVolume,
    /// The LUN table refused.
    Lun(LunError),
}

/// Why a saved bus could not be restored.
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

/// The switch's scratch frame, once the root has a NIC and the switch is
/// in use, and the switch.
struct Net<S> {
    switch: S,
    scratch: Option<Vec<u8>>,
}

/// The root's VMBus host: the buses by child index, the switch, the
/// windows and the clock.
pub struct VmbusHost<K: Kernel, D: BlockDevice, U, G, S> {
    kernel: K,
    uplink: U,
    signals: G,
    net: Net<S>,
    window_base: u64,
    tsc_khz: u64,
    /// By child index, [`MAX_CHILDREN`] of them (on the heap: the root's
    /// stack is 64 KiB).
    buses: Vec<Option<Bus<K::Rings, D>>>,
}

/// What a bus reports: console lines, channels opened and closed.
fn on_event<'a, K: Kernel>(
    k: &'a K,
    name: Name,
    tail: &'a mut ConsoleTail,
) -> impl FnMut(Event<'_>) + 'a {
    move |event: Event<'_>| match event {
        Event::Line(line) => {
            tail.push(line);
            say!(
                k,
                "{}",
                markers::ChildConsoleLine {
                    child: name.as_str(),
                    line
                }
            )
        }
        Event::Opened(ChannelName::Console) => {
            say!(k, "{}", markers::ConsoleOpened(name.as_str()))
        }
        Event::Opened(ChannelName::Storage) => {
            say!(k, "{}", markers::StorageOpened(name.as_str()))
        }
        Event::Opened(ChannelName::Control | ChannelName::Network | ChannelName::Integration)
        | Event::Integration(_) => {}
        Event::Closed(channel, reason) => say!(
            k,
            "{}",
            markers::ChannelClosed {
                child: name.as_str(),
                channel: &channel,
                reason: &reason
            }
        ),
    }
}

fn print_event<K: Kernel>(k: &K, name: Name, event: Event<'_>) {
    if let Event::Closed(channel, reason) = event {
        say!(
            k,
            "{}",
            markers::ChannelClosed {
                child: name.as_str(),
                channel: &channel,
                reason: &reason
            }
        );
    }
}

/// Whether the kernel reports `partition` halted (every vCPU stopped).
fn halted<K: Kernel>(k: &K, partition: SlotHandle) -> bool {
    matches!(
        k.call(&Call::PartitionStatus { partition }),
        Ok(s) if s[0] == ipc::hypercall::run_state::STOPPED
    )
}

/// The parts of a host one bus's service needs, borrowed apart from the
/// bus table.
struct Ctx<'a, K, S> {
    k: &'a K,
    signals: &'a dyn Signals,
    window_base: u64,
    net: &'a mut Net<S>,
}

impl<K: Kernel, S: DerefMut<Target = RootSwitch>> Ctx<'_, K, S> {
    fn live<'b>(&'b self, grant: &'b mut Grant) -> Live<'b, K> {
        Live {
            k: self.k,
            signals: self.signals,
            window_base: self.window_base,
            grant,
        }
    }

    /// Services a child's control channel, console and storage once.
    fn service_bus<D: BlockDevice>(&self, entry: &mut Bus<K::Rings, D>) -> usize {
        let (backend, bounce): (&mut dyn StorageBackend, &mut [u8]) = match entry.disks.as_mut() {
            Some(disks) => (disks, &mut entry.bounce),
            None => (&mut vsp::storage::NoLuns, &mut []),
        };
        let mut live = self.live(&mut entry.grant);
        entry.bus.service(
            &mut live,
            backend,
            bounce,
            on_event(self.k, entry.name, &mut entry.console),
        )
    }

    /// Reads a batch of the child's network packets: its frames go into
    /// its switch port's queue (without a switch, its NIC is not
    /// configured, so `Init` is `Unavailable`). Signals wait for
    /// [`Ctx::flush_network`].
    fn service_net<D: BlockDevice>(&mut self, entry: &mut Bus<K::Rings, D>) -> usize {
        let k = self.k;
        let mut on = on_event(k, entry.name, &mut entry.console);
        let port = 1 + entry.grant.index;
        let mut live = Live {
            k,
            signals: self.signals,
            window_base: self.window_base,
            grant: &mut entry.grant,
        };
        let Net { switch, scratch } = &mut *self.net;
        match scratch.as_mut() {
            Some(scratch) => {
                let handled = entry.bus.service_network(
                    &mut live,
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
                .service_network(&mut live, &mut DropFrames, &mut [], &mut on),
        }
    }

    /// The signal decision of the child's network channel for the pass.
    fn flush_network<D: BlockDevice>(&self, entry: &mut Bus<K::Rings, D>) {
        let (k, name) = (self.k, entry.name);
        let mut live = self.live(&mut entry.grant);
        entry
            .bus
            .network_flush(&mut live, |e| print_event(k, name, e));
    }

    /// One whole service of a child's bus (its own, signals included).
    fn service_one<D: BlockDevice>(&mut self, entry: &mut Bus<K::Rings, D>) -> usize {
        let handled = self.service_bus(entry) + self.service_net(entry);
        self.flush_network(entry);
        handled
    }

    /// The integration channel's turn: replies read, heartbeat sent when
    /// due; a lost heartbeat is reported unless the child halted.
    fn service_integration<D: BlockDevice>(&self, entry: &mut Bus<K::Rings, D>, now: u64) -> usize {
        let (k, name) = (self.k, entry.name);
        let partition = entry.grant.partition;
        let mut live = self.live(&mut entry.grant);
        entry
            .bus
            .integration_poll(&mut live, now, |event| match event {
                Event::Integration(IntegrationEvent::HeartbeatLost { missed }) => {
                    if !halted(k, partition) {
                        say!(
                            k,
                            "{}",
                            markers::HeartbeatLost {
                                child: name.as_str(),
                                missed
                            }
                        );
                    }
                }
                Event::Integration(IntegrationEvent::HeartbeatBack) => {
                    say!(k, "root: {} heartbeat back", name.as_str());
                }
                other => print_event(k, name, other),
            })
    }

    /// Moves frames between the NIC and the children's ports: what the
    /// NIC received goes into port 0's queue, then fair passes deliver
    /// every queue (port 0 out of the NIC, the others into each child's
    /// posted receive buffers).
    fn switch_frames<D: BlockDevice>(
        &mut self,
        uplink: &dyn Uplink,
        buses: &mut [Option<Bus<K::Rings, D>>],
    ) -> usize {
        if self.net.scratch.is_none() {
            return 0;
        }
        let k = self.k;
        let (signals, window_base) = (self.signals, self.window_base);
        let switch = &mut *self.net.switch;
        let received = uplink.receive(32, &mut |frame| {
            let _ = switch.enqueue(0, frame, 0);
        });
        // Room: the NIC takes what comes; a child, what it has posted
        // buffers for. Bounded: each pass takes at least one frame, and
        // nothing is added meanwhile.
        let mut room = [usize::MAX; 1 + MAX_CHILDREN];
        for (i, bus) in buses.iter().enumerate() {
            room[1 + i] = bus.as_ref().map_or(0, |b| b.bus.network_posted());
        }
        let mut drained = 0;
        for _ in 0..PASSES {
            let taken = switch.drain_within(&mut room, |port, frame, flags| {
                if port == 0 {
                    return uplink.send(frame);
                }
                match buses.get_mut(port - 1).and_then(Option::as_mut) {
                    Some(entry) => {
                        let name = entry.name;
                        let mut live = Live {
                            k,
                            signals,
                            window_base,
                            grant: &mut entry.grant,
                        };
                        entry
                            .bus
                            .network_deliver(&mut live, frame, flags, |e| print_event(k, name, e))
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

    /// Takes child `index`'s switch port down.
    fn port_down(&mut self, index: usize) {
        let port = 1 + index;
        let _ = self.net.switch.set_port_up(port, false);
        let _ = self.net.switch.set_port_mac(port, None);
    }
}

impl<K, D, U, G, S> VmbusHost<K, D, U, G, S>
where
    K: Kernel,
    D: BlockDevice,
    U: Uplink,
    G: Signals,
    S: DerefMut<Target = RootSwitch>,
{
    /// A host without buses, windows or a started switch, over `switch`
    /// (a fresh [`RootSwitch`]).
    pub fn new(kernel: K, uplink: U, signals: G, switch: S) -> Self {
        VmbusHost {
            kernel,
            uplink,
            signals,
            net: Net {
                switch,
                scratch: None,
            },
            window_base: 0,
            tsc_khz: 0,
            buses: (0..MAX_CHILDREN).map(|_| None).collect(),
        }
    }

    /// The kernel it calls.
    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    /// The interrupt side it binds ports to.
    pub fn signals(&self) -> &G {
        &self.signals
    }

    #[allow(clippy::type_complexity)]
    fn split(&mut self) -> (Ctx<'_, K, S>, &U, &mut [Option<Bus<K::Rings, D>>]) {
        (
            Ctx {
                k: &self.kernel,
                signals: &self.signals,
                window_base: self.window_base,
                net: &mut self.net,
            },
            &self.uplink,
            &mut self.buses,
        )
    }

    /// Takes the windows from the boot page's shared window, if it holds
    /// one per child.
    pub fn choose_windows(&mut self, shared: ipc::boot::PhysRange) {
        let fits = shared.start != 0 && shared.len() >= MAX_CHILDREN as u64 * WINDOW_BYTES;
        self.window_base = if fits { shared.start } else { 0 };
    }

    /// Where child `index` (memory at host-physical `base`) has its shared
    /// pages in the root, and the GPA limit of what can be shared.
    pub fn window_of(&self, index: usize, base: u64) -> (u64, u64) {
        window_of(self.window_base, index, base)
    }

    /// Gives the integration services their clock: the time-stamp counter
    /// at `tsc_khz` ticks per millisecond (the boot page's figure).
    pub fn set_clock(&mut self, tsc_khz: u64) {
        self.tsc_khz = tsc_khz;
    }

    /// Nanoseconds of the root's clock (the kernel's counter at the rate
    /// of [`VmbusHost::set_clock`], else the kernel's, else 2 GHz).
    pub fn now_ns(&self) -> u64 {
        let khz = match (self.tsc_khz, self.kernel.tsc_khz()) {
            (0, 0) => 2_000_000,
            (0, k) | (k, _) => k,
        };
        ipc::hypercall::timer::clock_ns(self.kernel.ticks(), khz)
    }

    /// Starts the switch with the NIC on port 0 (no MAC of its own: the
    /// outside world's addresses arrive there).
    pub fn start_switch(&mut self) {
        let _ = self.net.switch.set_port_up(0, true);
        self.net.scratch = Some(vec![0u8; MAX_FRAME as usize]);
    }

    /// Brings up child `index`'s switch port with its MAC and MTU; the NIC
    /// setting for its bus, or `None` without a switch.
    fn child_port(&mut self, index: usize) -> Option<NetworkConfig> {
        self.net.scratch.as_ref()?;
        let port = 1 + index;
        let mac = Mac::for_child(index as u16);
        let switch = &mut self.net.switch;
        let configured = switch.set_port_mac(port, Some(mac)).is_ok()
            && switch.set_port_mtu(port, CHILD_MTU).is_ok()
            && switch.set_port_up(port, true).is_ok();
        configured.then_some(NetworkConfig {
            mac,
            mtu: CHILD_MTU,
        })
    }

    fn map_control(&mut self, grant: &mut Grant) -> Result<K::Rings, OpenStatus> {
        let control = grant.layout.vmbus_control();
        let (ctx, _, _) = self.split();
        ctx.live(grant)
            .map_pages(control.start, control.len() / 4096)
    }

    /// Makes child `grant.index`'s bus `bus`, with its disks (and a
    /// bounce buffer for them).
    fn install(
        &mut self,
        name: Name,
        bus: ChildBus<K::Rings>,
        grant: Grant,
        disks: Option<Luns<D>>,
    ) {
        let bounce = if disks.is_some() {
            vec![0; vsp::storage::BOUNCE_BYTES]
        } else {
            Vec::new()
        };
        let index = grant.index;
        if let Some(slot) = self.buses.get_mut(index) {
            *slot = Some(Bus {
                name,
                bus,
                grant,
                disks,
                bounce,
                console: ConsoleTail::default(),
            });
        }
    }

    /// Sets up child `grant.index`'s control channel, before the child
    /// runs: maps its pages into the root, initialises both rings, makes
    /// the ports; its disks come from `volume`. Returns the child's
    /// (signal, event) slots for its boot page.
    pub fn attach(
        &mut self,
        name: Name,
        mut grant: Grant,
        volume: Option<&SharedVolume<D>>,
    ) -> Result<(SlotHandle, SlotHandle), OpenStatus> {
        if grant.index >= MAX_CHILDREN {
            return Err(OpenStatus::NoResources);
        }
        let memory = self.map_control(&mut grant)?;
        let (outbound, inbound) = memory.split_at(CONTROL_RING_PAGES as usize * 4096);
        ring::initialize(&outbound).map_err(|_| OpenStatus::BadRange)?;
        ring::initialize(&inbound).map_err(|_| OpenStatus::BadRange)?;
        let ports = grant.make_ports_at(&self.kernel, &self.signals, 0, None)?;
        let mut bus = ChildBus::new(outbound, inbound).map_err(|_| OpenStatus::BadRange)?;
        // A NIC on the switch's port for this child, with a MAC of the root's choosing.
        bus.set_network(self.child_port(grant.index));
        // The root services every bus in a loop while children run (and
        // sleeps only inside disk requests, during a service pass):
        // storage requests and network packets need no signal.
        bus.set_storage_polling(true);
        bus.set_network_polling(true);
        // One network signal decision per service pass (`service_all`).
        bus.set_network_deferred_signals(true);
        let disks = volume.map(Luns::new);
        self.install(name, bus, grant, disks);
        Ok(ports)
    }

    /// Services every child's bus once, then moves frames — children's
    /// sends into the switch, the switch out to the NIC and the children's
    /// receive buffers — round after round while they come (at most
    /// `ROUNDS`), then makes each network channel's signal decision once:
    /// a child that waits is woken once per pass, however many of its
    /// sends completed and frames arrived. Returns the packets and frames
    /// handled.
    pub fn service_all(&mut self) -> usize {
        let now = self.now_ns();
        let (mut ctx, uplink, buses) = self.split();
        let mut handled: usize = buses.iter_mut().flatten().map(|e| ctx.service_bus(e)).sum();
        handled += buses
            .iter_mut()
            .flatten()
            .map(|entry| ctx.service_integration(entry, now))
            .sum::<usize>();
        for _ in 0..ROUNDS {
            let own = buses
                .iter_mut()
                .flatten()
                .map(|e| ctx.service_net(e))
                .sum::<usize>();
            let round = own + ctx.switch_frames(uplink, buses);
            handled += round;
            if round == 0 {
                break;
            }
        }
        buses
            .iter_mut()
            .flatten()
            .for_each(|e| ctx.flush_network(e));
        handled
    }

    /// Drains child `index`'s bus (it stopped), prints its console summary
    /// if it opened one, and keeps the bus (its pages stay mapped until
    /// destroy).
    pub fn drain(&mut self, index: usize) {
        let (mut ctx, uplink, buses) = self.split();
        // Bounded: a stopped child adds nothing, so this ends when its
        // rings are empty. The switch forwards meanwhile: while the child's
        // port queue is full its provider reads no more sends
        // (back-pressure), so without forwarding its last frames would stay
        // unread.
        for _ in 0..100_000 {
            let Some(Some(entry)) = buses.get_mut(index) else {
                return;
            };
            let own = ctx.service_one(entry);
            let queued = ctx.net.switch.queued(1 + index);
            if own == 0 && queued == 0 {
                break;
            }
            ctx.switch_frames(uplink, buses);
            buses
                .iter_mut()
                .flatten()
                .for_each(|e| ctx.flush_network(e));
        }
        let Some(Some(entry)) = buses.get_mut(index) else {
            return;
        };
        let k = ctx.k;
        let signals = |channel: usize| ctx.signals.count(index * CHANNELS + channel);
        let stats = entry.bus.console_stats();
        let console_signals = signals(1);
        let child = entry.name.as_str();
        if stats.lines > 0 {
            say!(
                k,
                "{}",
                markers::ConsoleSummary {
                    child,
                    lines: stats.lines,
                    out_of_sequence: stats.out_of_sequence,
                    signals: console_signals,
                }
            );
        }
        if stats.lines >= 100 && console_signals * markers::LINES_PER_SIGNAL < stats.lines {
            say!(k, "{}", markers::SignalsSuppressed(child));
        }
        let storage = entry.bus.storage_stats();
        if storage.requests > 0 {
            say!(
                k,
                "{}",
                markers::StorageSummary {
                    child,
                    requests: storage.requests,
                    errors: storage.errors(),
                    signals: signals(1 + STORAGE_OFFER as usize),
                }
            );
        }
        let network = entry.bus.network_stats();
        if network.sends > 0 || network.received > 0 {
            let port = ctx.net.switch.counters(1 + index);
            say!(
                k,
                "{}",
                markers::NetworkSummary {
                    child,
                    sent: network.sends,
                    refused_spoofed: network.completed(ipc::vmbus::network::Status::SpoofedSource),
                    delivered: network.received,
                    switch_spoofed: port.dropped(vsp::switch::DropReason::Spoofed),
                    queue_full: port.dropped(vsp::switch::DropReason::QueueFull),
                    signals: signals(1 + NETWORK_OFFER as usize),
                    signals_to: network.signals_to_child,
                }
            );
            say!(
                k,
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
            say!(k, "root: {child} storage: flushing its disks failed: {e:?}");
        }
    }

    fn entry_ref(&self, index: usize) -> Option<&Bus<K::Rings, D>> {
        self.buses.get(index).and_then(Option::as_ref)
    }

    /// What the root knows of child `index`'s heartbeat (`None`: no such bus).
    pub fn heartbeat_state(&self, index: usize) -> Option<Heartbeat> {
        self.entry_ref(index).map(|e| e.bus.heartbeat())
    }

    /// Child `index`'s last console lines, oldest first (empty: no such bus).
    pub fn console_tail(&self, index: usize) -> Vec<String> {
        self.entry_ref(index)
            .map(|e| e.console.0.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether any child has a bus now (its heartbeats are due every second).
    pub fn any_bus(&self) -> bool {
        self.buses.iter().any(Option::is_some)
    }

    /// Asks child `index` to shut down (end its workload, flush its disks,
    /// halt) within `deadline_ms`; follow it with
    /// [`VmbusHost::shutdown_state`]. `NotOpen`: no such child or no
    /// integration channel.
    pub fn request_shutdown(
        &mut self,
        index: usize,
        deadline_ms: u32,
    ) -> Result<(), ShutdownError> {
        let now = self.now_ns();
        let (ctx, _, buses) = self.split();
        let entry = buses
            .get_mut(index)
            .and_then(Option::as_mut)
            .ok_or(ShutdownError::NotOpen)?;
        let (k, name) = (ctx.k, entry.name);
        let mut live = ctx.live(&mut entry.grant);
        entry
            .bus
            .request_shutdown(&mut live, ShutdownReason::Stop, deadline_ms, now, |e| {
                print_event(k, name, e)
            })
    }

    /// Where child `index`'s shutdown stands (`None`: no such bus).
    pub fn shutdown_state(&self, index: usize) -> Option<ShutdownState> {
        self.entry_ref(index).map(|e| e.bus.shutdown_state())
    }

    /// Puts `file` on child `index`'s controller as `lun`; `hot` tells a
    /// running child (`LunAdded`). Returns the disk's sectors.
    pub fn add_disk(
        &mut self,
        index: usize,
        lun: u8,
        file: &str,
        hot: bool,
    ) -> Result<u64, DiskError> {
        let (ctx, _, buses) = self.split();
        let entry = buses
            .get_mut(index)
            .and_then(Option::as_mut)
            .ok_or(DiskError::NoChild)?;
        let disks = entry.disks.as_mut().ok_or(DiskError::NoVolume)?;
        let sectors = disks
            .attach(lun, &alloc::format!("/{file}"))
            .map_err(DiskError::Lun)?;
        let (k, name) = (ctx.k, entry.name);
        if hot {
            let mut live = ctx.live(&mut entry.grant);
            entry
                .bus
                .lun_added(&mut live, lun, sectors, |e| print_event(k, name, e));
        }
        say!(
            k,
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

    /// Takes `lun` off child `index`'s running controller: the child is
    /// told, requests still queued for it complete `Removed`, and the disk
    /// is flushed and closed.
    pub fn remove_disk(&mut self, index: usize, lun: u8) -> Result<(), DiskError> {
        let (ctx, _, buses) = self.split();
        let entry = buses
            .get_mut(index)
            .and_then(Option::as_mut)
            .ok_or(DiskError::NoChild)?;
        let (k, name) = (ctx.k, entry.name);
        {
            let mut live = ctx.live(&mut entry.grant);
            entry
                .bus
                .lun_removed(&mut live, lun, |e| print_event(k, name, e));
        }
        let disks = entry.disks.as_mut().ok_or(DiskError::NoVolume)?;
        let file = disks.detach(lun).map_err(DiskError::Lun)?;
        say!(
            k,
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
    pub fn storage_served(&self, index: usize) -> u64 {
        self.entry_ref(index)
            .map_or(0, |e| e.bus.storage_stats().completions)
    }

    /// The pages of child `index` mapped into the root now: (GPA, pages).
    /// The root writes them (rings, buffers) without the child's dirty log
    /// seeing it, so a migration sends them again while the child is
    /// paused.
    pub fn shared_pages(&self, index: usize) -> Vec<(u64, u64)> {
        self.entry_ref(index)
            .map_or_else(Vec::new, |e| e.grant.shared.clone())
    }

    /// Hands child `index`'s bus over to the partition it migrated to: its
    /// shared pages are mapped again at the same window addresses from the
    /// new memory (so rings, regions and the bus state go on unchanged),
    /// and every channel's root-to-child port delivers to the new vCPU 0.
    /// Needs windows. On failure the old mappings are back and nothing
    /// changed.
    pub fn move_child(&mut self, index: usize, to: MovedChild) -> Result<(), OpenStatus> {
        let window_base = self.window_base;
        let k = &self.kernel;
        let entry = self
            .buses
            .get_mut(index)
            .and_then(Option::as_mut)
            .ok_or(OpenStatus::NoResources)?;
        let grant = &mut entry.grant;
        if window_base == 0 {
            return Err(OpenStatus::NoResources);
        }
        let (window, _) = window_of(window_base, grant.index, grant.base);
        let root = grant.root;
        let remap = |memory: SlotHandle, ranges: &[(u64, u64)]| -> Result<(), OpenStatus> {
            for &(gpa, pages) in ranges {
                let _ = k.call(&Call::MemoryUnmap {
                    partition: root,
                    gpa: window + gpa,
                    pages,
                });
                call(
                    k,
                    Call::MemoryMap {
                        partition: root,
                        memory,
                        first_page: gpa / 4096,
                        gpa: window + gpa,
                        pages,
                        access: Rights::READ | Rights::WRITE,
                    },
                )?;
            }
            Ok(())
        };
        let shared = grant.shared.clone();
        if let Err(e) = remap(to.memory, &shared) {
            // Back to the old memory: every range, whatever failed.
            let _ = remap(grant.memory, &shared);
            return Err(e);
        }
        for (channel, port) in grant.to_child.iter().enumerate() {
            if let Some(port) = port {
                call(
                    k,
                    Call::PortBind {
                        port: *port,
                        vcpu: to.vcpu0,
                        vector: CHILD_VMBUS_VECTOR + channel as u8,
                    },
                )?;
            }
        }
        grant.partition = to.partition;
        grant.memory = to.memory;
        grant.vcpu0 = to.vcpu0;
        grant.base = to.base;
        Ok(())
    }

    /// The root's ports of child `index`'s channels: (channel, the port
    /// the child signals, the port the root signals), raw handles.
    pub fn channel_ports(&self, index: usize) -> Vec<(usize, u64, u64)> {
        let Some(entry) = self.entry_ref(index) else {
            return Vec::new();
        };
        entry
            .grant
            .to_child
            .iter()
            .enumerate()
            .filter_map(|(channel, to)| {
                let from = self
                    .signals
                    .port(index * CHANNELS + channel)
                    .map_or(u64::MAX, |p| p.raw());
                to.map(|to| (channel, from, to.raw()))
            })
            .collect()
    }

    /// The root's side of child `index`'s bus as saved-state bytes
    /// (`vsp::bus_state`), and its disks (LUN, file path).
    pub fn save_bus(&self, index: usize, out: &mut [u8]) -> Option<(usize, Vec<(u8, String)>)> {
        let entry = self.entry_ref(index)?;
        let len = entry.bus.save().encode(out).ok()?;
        let luns = entry.disks.as_ref().map_or_else(Vec::new, |d| {
            d.present()
                .filter_map(|lun| Some((lun, String::from(d.path(lun)?))))
                .collect()
        });
        Some((len, luns))
    }

    /// Forgets child `index`'s bus without serving it again (its state was
    /// saved with what its rings hold): disks flushed and closed, switch
    /// port down, pages unmapped.
    pub fn forget(&mut self, index: usize) {
        let (mut ctx, _, buses) = self.split();
        if let Some(slot) = buses.get_mut(index)
            && let Some(mut entry) = slot.take()
        {
            if let Some(disks) = entry.disks.as_mut() {
                let _ = disks.flush_all();
            }
            ctx.port_down(index);
            let mut live = ctx.live(&mut entry.grant);
            for (gpa, pages) in live.grant.shared.clone() {
                live.unmap(gpa, pages as u32);
            }
        }
    }

    /// Rebuilds child `grant.index`'s bus from saved bytes over its
    /// (restored) memory: the control rings are attached as they are,
    /// every open channel mapped again, the NIC keeps its saved MAC on the
    /// child's switch port, and the saved disks are opened again at their
    /// LUNs from `volume`. On failure nothing stays mapped or open.
    pub fn restore_bus(
        &mut self,
        name: Name,
        mut grant: Grant,
        saved: &[u8],
        luns: &[(u8, String)],
        volume: Option<&SharedVolume<D>>,
    ) -> Result<(), RestoreBusError> {
        if grant.index >= MAX_CHILDREN {
            return Err(RestoreBusError::Map(OpenStatus::NoResources));
        }
        let state = vsp::bus_state::BusState::decode(saved).map_err(RestoreBusError::Decode)?;
        // The disks first: a refusal leaves nothing mapped.
        let mut disks = volume.map(Luns::new);
        for (lun, path) in luns {
            let d = disks
                .as_mut()
                .ok_or(RestoreBusError::Disk(*lun, LunError::NoSuchLun))?;
            d.attach(*lun, path)
                .map_err(|e| RestoreBusError::Disk(*lun, e))?;
        }
        let control = grant.layout.vmbus_control();
        let memory = self.map_control(&mut grant).map_err(RestoreBusError::Map)?;
        let (outbound, inbound) = memory.split_at(CONTROL_RING_PAGES as usize * 4096);
        let (ctx, _, _) = self.split();
        let mut live = ctx.live(&mut grant);
        let bus = match ChildBus::restore(&state, outbound, inbound, &mut live) {
            Ok(bus) => bus,
            Err(e) => {
                live.unmap(control.start, (control.len() / 4096) as u32);
                return Err(RestoreBusError::Restore(e));
            }
        };
        let port = 1 + grant.index;
        if let Some(config) = bus.network_config() {
            let switch = &mut ctx.net.switch;
            let _ = switch.set_port_mac(port, Some(config.mac));
            let _ = switch.set_port_mtu(port, bus.network_mtu().unwrap_or(config.mtu));
            let _ = switch.set_port_up(port, true);
        }
        self.install(name, bus, grant, disks);
        Ok(())
    }

    /// Announces child `index`'s MAC from its switch port (after a
    /// migration: peers and the uplink learn where it is now).
    pub fn announce(&mut self, index: usize) {
        let _ = self.net.switch.announce(1 + index);
    }

    /// Frames delivered to child `index`'s network adapter so far.
    pub fn frames_received(&self, index: usize) -> u64 {
        self.entry_ref(index)
            .map_or(0, |e| e.bus.network_stats().received)
    }

    /// Forgets child `index`'s bus before the child is destroyed: served
    /// until quiet, disks flushed, switch port down, channels shut and the
    /// control pages unmapped.
    pub fn detach(&mut self, index: usize) {
        let (mut ctx, _, buses) = self.split();
        if let Some(slot) = buses.get_mut(index)
            && let Some(mut entry) = slot.take()
        {
            for _ in 0..100_000 {
                if ctx.service_one(&mut entry) == 0 {
                    break;
                }
            }
            if let Some(disks) = entry.disks.as_mut() {
                let _ = disks.flush_all();
            }
            ctx.port_down(index);
            let mut live = ctx.live(&mut entry.grant);
            entry.bus.shut_down(&mut live);
            let control = live.grant.layout.vmbus_control();
            live.unmap(control.start, (control.len() / 4096) as u32);
        }
    }

    /// The network benchmark's reference: pushes `frames` frames of `size`
    /// bytes from child 0's port to child 1's through the same switch,
    /// each delivered by a copy into a receive buffer, without VMBus;
    /// returns the counter ticks taken. `None` without a switch (or if a
    /// frame was lost).
    pub fn bench_switch(&mut self, frames: u64, size: usize) -> Option<u64> {
        self.net.scratch.as_ref()?;
        let switch = &mut *self.net.switch;
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
        let start = self.kernel.ticks();
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
        let cycles = self.kernel.ticks().wrapping_sub(start);
        (moved == frames).then_some(cycles)
    }
}
