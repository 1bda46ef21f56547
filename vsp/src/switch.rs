//! The root's virtual switch: an L2 learning switch over `PORTS` ports —
//! port [`EXTERNAL_PORT`] is the physical NIC, ports `1..PORTS` the
//! children's synthetic NICs — with a bounded ingress queue per port and
//! fair round-robin draining. Pure logic: no rings, no hypervisor; the
//! root feeds frames in ([`Switch::enqueue`], or [`Ingress`] as the
//! network provider's [`FrameSink`]) and [`Switch::drain`] hands each
//! frame to the caller's delivery function per destination port.
//!
//! # Invariants
//! - The switch's view of every child port is explicit: its MAC is
//!   assigned by the root ([`Switch::set_port_mac`], moved with
//!   [`Switch::move_mac`] for migration), never learned. A frame from a
//!   child port whose source MAC is not the port's own, or from the
//!   external port carrying a child's MAC, is dropped
//!   ([`DropReason::Spoofed`]). Only MACs nobody owns are learned.
//! - A frame reaches a port only if it fits that port's MTU (Ethernet
//!   header excluded); every frame not delivered somewhere is counted
//!   under exactly one [`DropReason`] on the port it was dropped at.
//! - [`Switch::drain`] takes at most [`QUANTUM`] frames from each port's
//!   queue per pass, starting one port further each pass: a port that
//!   floods only fills its own queue (drops counted as
//!   [`DropReason::QueueFull`] on it) and cannot take the others' share.
//! - No allocation; the queues are fixed arrays (`PORTS * DEPTH` frames of
//!   [`MAX_FRAME`] bytes) — put the switch in a static or a box.

use ipc::vmbus::network::{HEADER_BYTES, MAX_FRAME, Mac, destination, source};

use crate::network::FrameSink;

/// The port of the physical NIC.
pub const EXTERNAL_PORT: usize = 0;
/// Most ports of a switch (destination sets are `u64` masks).
pub const MAX_PORTS: usize = 64;
/// Learned addresses remembered (least recently seen evicted first).
pub const LEARNED: usize = 64;
/// Frames taken from one port's queue per [`Switch::drain`] pass.
pub const QUANTUM: usize = 4;
/// The MTU a port starts with.
pub const DEFAULT_PORT_MTU: u16 = ipc::vmbus::network::DEFAULT_MTU;

/// Why a frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DropReason {
    /// A source MAC that is not the port's own (child port), or a child's
    /// MAC arriving on the external port.
    Spoofed = 0,
    /// Shorter than an Ethernet header.
    Runt = 1,
    /// Larger than the MTU of the port it came from or was going to.
    Oversize = 2,
    /// A multicast source address.
    Malformed = 3,
    /// The port's ingress queue was full.
    QueueFull = 4,
    /// The destination could not take it (no receive buffer posted).
    NoBuffer = 5,
    /// From or to a port that is down.
    PortDown = 6,
    /// The destination is the port it came from.
    SamePort = 7,
}

/// Number of [`DropReason`] values.
pub const DROP_REASONS: usize = 8;

impl DropReason {
    /// Every reason, in discriminant order.
    pub const ALL: [DropReason; DROP_REASONS] = [
        DropReason::Spoofed,
        DropReason::Runt,
        DropReason::Oversize,
        DropReason::Malformed,
        DropReason::QueueFull,
        DropReason::NoBuffer,
        DropReason::PortDown,
        DropReason::SamePort,
    ];
}

/// Counters of one port. "rx" is what the port sent into the switch,
/// "tx" what the switch delivered to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Frames that came in from the port (dropped ones included).
    pub rx_frames: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames delivered to the port.
    pub tx_frames: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Frames dropped at this port, by reason (index `DropReason as usize`).
    pub drops: [u64; DROP_REASONS],
}

impl PortCounters {
    /// Drops for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Drops for every reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// Where a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// To one port.
    Unicast(usize),
    /// To every port in the mask (bit `n` = port `n`; possibly none).
    Flood(u64),
    /// Nowhere (counted).
    Drop(DropReason),
}

/// Why a port operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchError {
    /// No such port.
    NoSuchPort,
    /// The operation is for child ports only.
    ExternalPort,
    /// Multicast or zero: a port cannot own it.
    NotAssignable,
    /// Another port owns that MAC (or the target port owns one already).
    MacInUse,
    /// The port owns no MAC.
    NoMac,
    /// An MTU outside `MIN_MTU..=MAX_MTU`.
    BadMtu,
}

#[derive(Clone, Copy, Debug)]
struct Port {
    mac: Option<Mac>,
    mtu: u16,
    up: bool,
}

#[derive(Clone, Copy, Debug)]
struct Learned {
    mac: Mac,
    port: usize,
    seen: u64,
}

/// Ports, counters and the learning table: everything [`Switch::forward`] decides with.
struct Table<const PORTS: usize> {
    ports: [Port; PORTS],
    counters: [PortCounters; PORTS],
    learned: [Option<Learned>; LEARNED],
    clock: u64,
}

/// One queued frame.
struct Slot {
    len: u16,
    flags: u8,
    data: [u8; MAX_FRAME as usize],
}

/// One port's ingress queue (FIFO).
struct Queue<const DEPTH: usize> {
    slots: [Slot; DEPTH],
    head: usize,
    count: usize,
}

/// The virtual switch (see the module docs).
pub struct Switch<const PORTS: usize, const DEPTH: usize> {
    table: Table<PORTS>,
    queues: [Queue<DEPTH>; PORTS],
    /// The port the next drain pass starts with.
    next: usize,
}

impl<const PORTS: usize> Table<PORTS> {
    fn port(&self, port: usize) -> Result<&Port, SwitchError> {
        self.ports.get(port).ok_or(SwitchError::NoSuchPort)
    }

    fn owner(&self, mac: Mac) -> Option<usize> {
        self.ports.iter().position(|p| p.mac == Some(mac))
    }

    fn forget(&mut self, mac: Mac) {
        for entry in &mut self.learned {
            if entry.is_some_and(|e| e.mac == mac) {
                *entry = None;
            }
        }
    }

    fn learn(&mut self, mac: Mac, port: usize) {
        self.clock += 1;
        let clock = self.clock;
        if let Some(e) = self.learned.iter_mut().flatten().find(|e| e.mac == mac) {
            e.port = port;
            e.seen = clock;
            return;
        }
        let slot = match self.learned.iter().position(Option::is_none) {
            Some(free) => free,
            // Evict the least recently seen.
            None => (0..LEARNED)
                .min_by_key(|&i| self.learned[i].map_or(0, |e| e.seen))
                .unwrap_or(0),
        };
        self.learned[slot] = Some(Learned {
            mac,
            port,
            seen: clock,
        });
    }

    fn lookup(&self, mac: Mac) -> Option<usize> {
        self.owner(mac).or_else(|| {
            self.learned
                .iter()
                .flatten()
                .find(|e| e.mac == mac)
                .map(|e| e.port)
        })
    }

    fn drop_at(&mut self, port: usize, reason: DropReason) -> Decision {
        if let Some(c) = self.counters.get_mut(port) {
            c.drops[reason as usize] += 1;
        }
        Decision::Drop(reason)
    }

    /// Whether a frame of `len` bytes fits `port`'s MTU.
    fn fits(&self, port: usize, len: usize) -> bool {
        len <= usize::from(self.ports[port].mtu) + HEADER_BYTES as usize
    }

    /// The port a unicast frame is for, if its destination is known (no
    /// other check, no counting: a look before [`Table::forward`]).
    fn unicast_port(&self, frame: &[u8]) -> Option<usize> {
        let dst = destination(frame)?;
        if dst.is_multicast() {
            return None;
        }
        self.lookup(dst)
    }

    fn forward(&mut self, src_port: usize, frame: &[u8]) -> Decision {
        let Some(port) = self.ports.get(src_port).copied() else {
            return Decision::Drop(DropReason::PortDown);
        };
        let counters = &mut self.counters[src_port];
        counters.rx_frames += 1;
        counters.rx_bytes += frame.len() as u64;
        if !port.up {
            return self.drop_at(src_port, DropReason::PortDown);
        }
        let (Some(dst), Some(src)) = (destination(frame), source(frame)) else {
            return self.drop_at(src_port, DropReason::Runt);
        };
        if frame.len() < HEADER_BYTES as usize {
            return self.drop_at(src_port, DropReason::Runt);
        }
        if !self.fits(src_port, frame.len()) {
            return self.drop_at(src_port, DropReason::Oversize);
        }
        if src.is_multicast() {
            return self.drop_at(src_port, DropReason::Malformed);
        }
        let spoofed = if src_port == EXTERNAL_PORT {
            self.owner(src).is_some()
        } else {
            port.mac != Some(src)
        };
        if spoofed {
            return self.drop_at(src_port, DropReason::Spoofed);
        }
        if src_port == EXTERNAL_PORT {
            self.learn(src, src_port);
        }
        if !dst.is_multicast()
            && let Some(to) = self.lookup(dst)
        {
            if to == src_port {
                return self.drop_at(src_port, DropReason::SamePort);
            }
            if !self.ports[to].up {
                return self.drop_at(to, DropReason::PortDown);
            }
            if !self.fits(to, frame.len()) {
                return self.drop_at(to, DropReason::Oversize);
            }
            return Decision::Unicast(to);
        }
        // Broadcast, multicast, unknown unicast: every other port that is up
        // and whose MTU the frame fits.
        let mut mask = 0u64;
        for to in 0..PORTS {
            if to == src_port || !self.ports[to].up {
                continue;
            }
            if self.fits(to, frame.len()) {
                mask |= 1 << to;
            } else {
                self.counters[to].drops[DropReason::Oversize as usize] += 1;
            }
        }
        Decision::Flood(mask)
    }
}

impl Slot {
    const EMPTY: Slot = Slot {
        len: 0,
        flags: 0,
        data: [0; MAX_FRAME as usize],
    };
}

impl<const DEPTH: usize> Queue<DEPTH> {
    const EMPTY: Self = Queue {
        slots: [const { Slot::EMPTY }; DEPTH],
        head: 0,
        count: 0,
    };
}

impl<const PORTS: usize, const DEPTH: usize> Default for Switch<PORTS, DEPTH> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const PORTS: usize, const DEPTH: usize> Switch<PORTS, DEPTH> {
    const SIZES: () = assert!(PORTS >= 1 && PORTS <= MAX_PORTS && DEPTH >= 1);

    /// A switch with every port down, without MACs, at [`DEFAULT_PORT_MTU`].
    pub const fn new() -> Self {
        let () = Self::SIZES;
        Switch {
            table: Table {
                ports: [Port {
                    mac: None,
                    mtu: DEFAULT_PORT_MTU,
                    up: false,
                }; PORTS],
                counters: [PortCounters {
                    rx_frames: 0,
                    rx_bytes: 0,
                    tx_frames: 0,
                    tx_bytes: 0,
                    drops: [0; DROP_REASONS],
                }; PORTS],
                learned: [None; LEARNED],
                clock: 0,
            },
            queues: [const { Queue::EMPTY }; PORTS],
            next: 0,
        }
    }

    /// Brings `port` up (frames flow) or down (its queue is emptied, frames
    /// to it dropped).
    pub fn set_port_up(&mut self, port: usize, up: bool) -> Result<(), SwitchError> {
        self.table.port(port)?;
        self.table.ports[port].up = up;
        if !up {
            let q = &mut self.queues[port];
            q.head = 0;
            q.count = 0;
        }
        Ok(())
    }

    /// Sets `port`'s MTU (`MIN_MTU..=MAX_MTU`; Ethernet header excluded).
    pub fn set_port_mtu(&mut self, port: usize, mtu: u16) -> Result<(), SwitchError> {
        self.table.port(port)?;
        if ipc::vmbus::network::negotiate_mtu(mtu, mtu) != Ok(mtu) {
            return Err(SwitchError::BadMtu);
        }
        self.table.ports[port].mtu = mtu;
        Ok(())
    }

    /// Assigns `mac` to child `port` (`None`: takes its MAC away; it can
    /// then send nothing). Learned entries for the MAC are forgotten.
    pub fn set_port_mac(&mut self, port: usize, mac: Option<Mac>) -> Result<(), SwitchError> {
        self.table.port(port)?;
        if port == EXTERNAL_PORT {
            return Err(SwitchError::ExternalPort);
        }
        if let Some(mac) = mac {
            if !mac.is_assignable() {
                return Err(SwitchError::NotAssignable);
            }
            if self.table.owner(mac).is_some_and(|p| p != port) {
                return Err(SwitchError::MacInUse);
            }
            self.table.forget(mac);
        }
        self.table.ports[port].mac = mac;
        Ok(())
    }

    /// `port`'s MAC.
    pub fn port_mac(&self, port: usize) -> Option<Mac> {
        self.table.ports.get(port).and_then(|p| p.mac)
    }

    /// `port`'s MTU.
    pub fn port_mtu(&self, port: usize) -> Option<u16> {
        self.table.ports.get(port).map(|p| p.mtu)
    }

    /// Whether `port` is up.
    pub fn port_up(&self, port: usize) -> bool {
        self.table.ports.get(port).is_some_and(|p| p.up)
    }

    /// Moves child `from`'s MAC to child `to` (which must have none), e.g.
    /// when a child migrates to another port; returns the MAC. Frames to
    /// it go to `to` from now on; announce it with [`Switch::announce`].
    pub fn move_mac(&mut self, from: usize, to: usize) -> Result<Mac, SwitchError> {
        self.table.port(from)?;
        self.table.port(to)?;
        if from == EXTERNAL_PORT || to == EXTERNAL_PORT {
            return Err(SwitchError::ExternalPort);
        }
        let mac = self.table.ports[from].mac.ok_or(SwitchError::NoMac)?;
        if from != to && self.table.ports[to].mac.is_some() {
            return Err(SwitchError::MacInUse);
        }
        self.table.ports[from].mac = None;
        self.table.ports[to].mac = Some(mac);
        self.table.forget(mac);
        Ok(mac)
    }

    /// Queues a gratuitous announcement ([`announcement`]) of `port`'s MAC
    /// as if `port` had sent it: flooded on the next drain, so the external
    /// network relearns where the MAC lives (after [`Switch::move_mac`]).
    pub fn announce(&mut self, port: usize) -> Result<(), SwitchError> {
        self.table.port(port)?;
        let mac = self.table.ports[port].mac.ok_or(SwitchError::NoMac)?;
        let frame = announcement(mac);
        // A full queue drops it (counted), like any frame.
        let _ = self.enqueue(port, &frame, 0);
        Ok(())
    }

    /// Where `frame` from `src_port` goes, learning its source (external
    /// port only) and counting it as received and, if dropped, why.
    /// Delivery counters are the caller's (see [`Switch::drain`]).
    pub fn forward(&mut self, src_port: usize, frame: &[u8]) -> Decision {
        self.table.forward(src_port, frame)
    }

    /// Copies `frame` into `src_port`'s ingress queue (switched on the
    /// next [`Switch::drain`]). A frame above [`MAX_FRAME`] is
    /// [`DropReason::Oversize`], a full queue [`DropReason::QueueFull`]
    /// (both counted on `src_port`).
    pub fn enqueue(&mut self, src_port: usize, frame: &[u8], flags: u8) -> Result<(), DropReason> {
        let Some(queue) = self.queues.get_mut(src_port) else {
            return Err(DropReason::PortDown);
        };
        let reason = if !self.table.ports[src_port].up {
            Some(DropReason::PortDown)
        } else if frame.len() > MAX_FRAME as usize {
            Some(DropReason::Oversize)
        } else if queue.count == DEPTH {
            Some(DropReason::QueueFull)
        } else {
            None
        };
        if let Some(reason) = reason {
            let c = &mut self.table.counters[src_port];
            c.rx_frames += 1;
            c.rx_bytes += frame.len() as u64;
            c.drops[reason as usize] += 1;
            return Err(reason);
        }
        let slot = &mut queue.slots[(queue.head + queue.count) % DEPTH];
        slot.data[..frame.len()].copy_from_slice(frame);
        slot.len = frame.len() as u16;
        slot.flags = flags;
        queue.count += 1;
        Ok(())
    }

    /// Room for the next frame of `len` bytes in `src_port`'s ingress
    /// queue, to write it in place and then [`Switch::commit`] it: `None`
    /// if [`Switch::enqueue`] would refuse it (port down, too long, queue
    /// full), which the caller then calls to have the drop counted.
    pub fn reserve(&mut self, src_port: usize, len: usize) -> Option<&mut [u8]> {
        let queue = self.queues.get_mut(src_port)?;
        if !self.table.ports[src_port].up || len > MAX_FRAME as usize || queue.count == DEPTH {
            return None;
        }
        let slot = &mut queue.slots[(queue.head + queue.count) % DEPTH];
        Some(&mut slot.data[..len])
    }

    /// Queues the frame of `len` bytes written into the room
    /// [`Switch::reserve`] gave (as [`Switch::enqueue`] would have); `false`
    /// if there is no such room (nothing is queued).
    pub fn commit(&mut self, src_port: usize, len: usize, flags: u8) -> bool {
        if self.reserve(src_port, len).is_none() {
            return false;
        }
        let queue = &mut self.queues[src_port];
        let slot = &mut queue.slots[(queue.head + queue.count) % DEPTH];
        slot.len = len as u16;
        slot.flags = flags;
        queue.count += 1;
        true
    }

    /// Frames waiting in `port`'s ingress queue.
    pub fn queued(&self, port: usize) -> usize {
        self.queues.get(port).map_or(0, |q| q.count)
    }

    /// A sink that feeds `port`'s ingress queue (for the network provider).
    pub fn ingress(&mut self, port: usize) -> Ingress<'_, PORTS, DEPTH> {
        Ingress { switch: self, port }
    }

    /// One fair pass: takes up to [`QUANTUM`] frames from each port's
    /// queue in turn (starting one port further than the last pass),
    /// forwards each and calls `deliver(port, frame, flags)` for every
    /// destination; `deliver` returns whether the port took the frame
    /// (`false`: counted as [`DropReason::NoBuffer`] on it). Returns the
    /// frames taken from the queues.
    pub fn drain(&mut self, deliver: impl FnMut(usize, &[u8], u8) -> bool) -> usize {
        self.drain_within(&mut [usize::MAX; PORTS], deliver)
    }

    /// As [`Switch::drain`], with back-pressure: `room[p]` is how many
    /// frames port `p` can take now (a child's posted receive buffers). A
    /// unicast frame for a port without room stays at the head of its
    /// queue (that queue waits for the next pass) instead of being dropped;
    /// each frame delivered to a port uses one of its room. Flooded frames
    /// go where there is room and are dropped elsewhere, as in `drain`.
    pub fn drain_within(
        &mut self,
        room: &mut [usize; PORTS],
        mut deliver: impl FnMut(usize, &[u8], u8) -> bool,
    ) -> usize {
        let start = self.next;
        self.next = (self.next + 1) % PORTS;
        let mut taken = 0;
        for i in 0..PORTS {
            let src = (start + i) % PORTS;
            for _ in 0..QUANTUM {
                let queue = &self.queues[src];
                if queue.count == 0 {
                    break;
                }
                let index = queue.head;
                let slot = &self.queues[src].slots[index];
                let frame = &slot.data[..usize::from(slot.len)];
                // A unicast frame for a full port waits at the head.
                if let Some(to) = self.table.unicast_port(frame)
                    && to != src
                    && room[to] == 0
                {
                    break;
                }
                let queue = &mut self.queues[src];
                queue.head = (queue.head + 1) % DEPTH;
                queue.count -= 1;
                taken += 1;
                let slot = &self.queues[src].slots[index];
                let frame = &slot.data[..usize::from(slot.len)];
                let table = &mut self.table;
                let mask = match table.forward(src, frame) {
                    Decision::Unicast(to) => 1u64 << to,
                    Decision::Flood(mask) => mask,
                    Decision::Drop(_) => 0,
                };
                for (to, left) in room.iter_mut().enumerate() {
                    if mask & (1 << to) == 0 {
                        continue;
                    }
                    let c = &mut table.counters[to];
                    if *left == 0 {
                        c.drops[DropReason::NoBuffer as usize] += 1;
                        continue;
                    }
                    *left -= 1;
                    if deliver(to, frame, slot.flags) {
                        c.tx_frames += 1;
                        c.tx_bytes += frame.len() as u64;
                    } else {
                        c.drops[DropReason::NoBuffer as usize] += 1;
                    }
                }
            }
        }
        taken
    }

    /// `port`'s counters (zeros for a port that does not exist).
    pub fn counters(&self, port: usize) -> PortCounters {
        self.table.counters.get(port).copied().unwrap_or_default()
    }

    /// The port a MAC was learned on (external addresses only).
    pub fn learned(&self, mac: Mac) -> Option<usize> {
        self.table
            .learned
            .iter()
            .flatten()
            .find(|e| e.mac == mac)
            .map(|e| e.port)
    }
}

/// A [`FrameSink`] into one port's ingress queue.
pub struct Ingress<'s, const PORTS: usize, const DEPTH: usize> {
    switch: &'s mut Switch<PORTS, DEPTH>,
    port: usize,
}

impl<const PORTS: usize, const DEPTH: usize> FrameSink for Ingress<'_, PORTS, DEPTH> {
    fn frame(&mut self, frame: &[u8], flags: u8) -> bool {
        self.switch.enqueue(self.port, frame, flags).is_ok()
    }

    fn has_room(&self) -> bool {
        self.switch.queued(self.port) < DEPTH
    }

    fn place(&mut self, len: usize) -> Option<&mut [u8]> {
        self.switch.reserve(self.port, len)
    }

    fn commit(&mut self, len: usize, flags: u8) -> bool {
        self.switch.commit(self.port, len, flags)
    }
}

/// Bytes of an [`announcement`] (the Ethernet minimum without FCS).
pub const ANNOUNCEMENT_BYTES: usize = 60;

/// A gratuitous announcement of `mac`: a broadcast RARP request
/// (EtherType 0x8035, "reverse request", sender and target `mac`, no IP),
/// which needs no IP address and makes every switch on the way relearn
/// the MAC's port — what hypervisors send after moving a VM.
pub fn announcement(mac: Mac) -> [u8; ANNOUNCEMENT_BYTES] {
    let mut f = [0u8; ANNOUNCEMENT_BYTES];
    f[0..6].copy_from_slice(&Mac::BROADCAST.0);
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&[0x80, 0x35]);
    // Hardware Ethernet, protocol IPv4, lengths 6 and 4, op 3.
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 3]);
    f[22..28].copy_from_slice(&mac.0);
    f[32..38].copy_from_slice(&mac.0);
    f
}

#[cfg(test)]
#[path = "switch_tests.rs"]
mod tests;
