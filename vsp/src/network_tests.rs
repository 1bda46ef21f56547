//! Host tests of the network device: the root's bus (`vsp`) against the
//! child's client (`vsc::network`) over one "child memory" of atomics;
//! the root's side of the wire is a collecting sink, or the switch core
//! joining several children. Hostile children are played by sending raw
//! packets or writing into that memory directly.

extern crate std;

use core::cell::RefCell;
use core::sync::atomic::AtomicU64;
use std::boxed::Box;
use std::string::String;
use std::vec::Vec;

use ipc::vmbus::control::{CONTROL_RING_PAGES, ControlMessage, NETWORK_CLASS, OpenStatus};
use ipc::vmbus::memory::{AtomicRingMemory, RingMemory};
use ipc::vmbus::network::{
    FLAG_CHECKSUM_NOT_COMPUTED, FLAG_CHECKSUM_VERIFIED, GrantStatus, GuestMessage, HostMessage,
    MAX_POSTED, Mac, Status,
};
use ipc::vmbus::packet::{self, KIND_MESSAGE};
use ipc::vmbus::ring::{self, Consumer, Producer, Recv, WRITE_INDEX};
use vsc::bus::{GuestBus, RingPages};
use vsc::network::{NetworkClient, NetworkClientError, NetworkEvent};

use super::*;
use crate::bus::{ChildBus, Event};
use crate::switch::{DropReason, Switch};

const PAGE: usize = 4096;
/// Child memory: control channel at pages 0..4, network rings at 8..14
/// (3 pages each way), buffer region at 32..96 (16 send pages, 48
/// receive pages); pages from 8 on are grantable.
const PAGES: usize = 100;
const RINGS: RingPages = RingPages {
    gpa: 8 * PAGE as u64,
    pages: 6,
    outbound_pages: 3,
};
const REGION_GPA: u64 = 32 * PAGE as u64;
const REGION_PAGES: u32 = 64;
const SEND_PAGES: u32 = 16;
const REGION_BYTES: usize = REGION_PAGES as usize * PAGE;
const SEND_BYTES: usize = SEND_PAGES as usize * PAGE;
const PATIENCE: u64 = 1000;
const MAC_A: Mac = Mac([0x02, 0x63, 0x76, 0, 0, 1]);
const MAC_B: Mac = Mac([0x02, 0x63, 0x76, 0, 0, 2]);
const MAC_C: Mac = Mac([0x02, 0x63, 0x76, 0, 0, 3]);
const HOST: Mac = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

struct Fake<'a> {
    memory: AtomicRingMemory<'a>,
    mapped: Vec<(u64, u32)>,
    signals: u64,
}

impl<'a> Fake<'a> {
    fn range(&self, gpa: u64, pages: u32) -> Result<AtomicRingMemory<'a>, OpenStatus> {
        let start = usize::try_from(gpa).map_err(|_| OpenStatus::BadRange)?;
        let len = pages as usize * PAGE;
        if !start.is_multiple_of(PAGE)
            || start < 8 * PAGE
            || start.checked_add(len).is_none_or(|e| e > PAGES * PAGE)
        {
            return Err(OpenStatus::BadRange);
        }
        let (_, rest) = self.memory.split_at(start);
        Ok(rest.split_at(len).0)
    }
}

impl<'a> Platform for Fake<'a> {
    type Memory = AtomicRingMemory<'a>;

    fn map(
        &mut self,
        gpa: u64,
        pages: u32,
        outbound_pages: u32,
    ) -> Result<(Self::Memory, Self::Memory), OpenStatus> {
        let rings = self.range(gpa, pages)?;
        self.mapped.push((gpa, pages));
        Ok(rings.split_at(outbound_pages as usize * PAGE))
    }

    fn unmap(&mut self, gpa: u64, pages: u32) {
        let before = self.mapped.len();
        self.mapped.retain(|m| *m != (gpa, pages));
        assert_eq!(
            before,
            self.mapped.len() + 1,
            "unmap of {gpa:#x} not mapped"
        );
    }

    fn map_buffer(&mut self, gpa: u64, pages: u32) -> Result<Self::Memory, OpenStatus> {
        let memory = self.range(gpa, pages)?;
        self.mapped.push((gpa, pages));
        Ok(memory)
    }

    fn ports(&mut self, offer_id: u32) -> Result<(u64, u64), OpenStatus> {
        Ok((100 + u64::from(offer_id), 200 + u64::from(offer_id)))
    }

    fn signal(&mut self, offer_id: Option<u32>) {
        if offer_id == Some(NETWORK_OFFER) {
            self.signals += 1;
        }
    }
}

/// The root's end of the wire in single-child tests: collects frames.
struct Collect<'v> {
    frames: &'v mut Vec<(Vec<u8>, u8)>,
    accept: bool,
}

impl FrameSink for Collect<'_> {
    fn frame(&mut self, frame: &[u8], flags: u8) -> bool {
        if self.accept {
            self.frames.push((frame.to_vec(), flags));
        }
        self.accept
    }
}

struct Root<'a> {
    bus: ChildBus<AtomicRingMemory<'a>>,
    platform: Fake<'a>,
    scratch: Vec<u8>,
    /// Frames the child sent (single-child tests).
    sent: Vec<(Vec<u8>, u8)>,
    /// Whether the collecting sink accepts frames.
    accept: bool,
    log: Vec<String>,
}

struct World<'a> {
    root: RefCell<Root<'a>>,
    memory: AtomicRingMemory<'a>,
}

fn log_event(log: &mut Vec<String>, e: Event<'_>) {
    log.push(match e {
        Event::Line(text) => std::format!("line {text}"),
        Event::Opened(c) => std::format!("opened {c}"),
        Event::Closed(c, why) => std::format!("closed {c}: {why}"),
        Event::Integration(e) => std::format!("integration {e:?}"),
    })
}

impl<'a> World<'a> {
    fn new(memory: AtomicRingMemory<'a>, config: Option<NetworkConfig>) -> Self {
        let (control, _) = memory.split_at(2 * CONTROL_RING_PAGES as usize * PAGE);
        let (out, inb) = control.split_at(CONTROL_RING_PAGES as usize * PAGE);
        ring::initialize(&out).unwrap();
        ring::initialize(&inb).unwrap();
        let mut bus = ChildBus::new(out, inb).unwrap();
        bus.set_network(config);
        World {
            root: RefCell::new(Root {
                bus,
                platform: Fake {
                    memory,
                    mapped: Vec::new(),
                    signals: 0,
                },
                scratch: std::vec![0; ipc::vmbus::network::MAX_FRAME as usize],
                sent: Vec::new(),
                accept: true,
                log: Vec::new(),
            }),
            memory,
        }
    }

    /// One pass of the control channel and the network channel, frames
    /// into the collecting sink.
    fn service(&self) -> usize {
        let mut root = self.root.borrow_mut();
        let Root {
            bus,
            platform,
            scratch,
            sent,
            accept,
            log,
        } = &mut *root;
        let mut handled = bus.service(platform, &mut crate::storage::NoLuns, &mut [], |e| {
            log_event(log, e)
        });
        let mut sink = Collect {
            frames: sent,
            accept: *accept,
        };
        handled += bus.service_network(platform, &mut sink, scratch, |e| log_event(log, e));
        handled
    }

    /// One pass with frames into switch port `port`.
    fn service_into<const P: usize, const D: usize>(
        &self,
        switch: &mut Switch<P, D>,
        port: usize,
    ) -> usize {
        let mut root = self.root.borrow_mut();
        let Root {
            bus,
            platform,
            scratch,
            log,
            ..
        } = &mut *root;
        let mut handled = bus.service(platform, &mut crate::storage::NoLuns, &mut [], |e| {
            log_event(log, e)
        });
        handled += bus.service_network(platform, &mut switch.ingress(port), scratch, |e| {
            log_event(log, e)
        });
        handled
    }

    fn deliver(&self, frame: &[u8], flags: u8) -> Result<(), DeliverError> {
        let mut root = self.root.borrow_mut();
        let Root {
            bus, platform, log, ..
        } = &mut *root;
        bus.network_deliver(platform, frame, flags, |e| log_event(log, e))
    }

    fn set_link(&self, up: bool) {
        let mut root = self.root.borrow_mut();
        let Root {
            bus, platform, log, ..
        } = &mut *root;
        bus.network_link(platform, up, |e| log_event(log, e));
    }

    fn stats(&self) -> NetworkStats {
        self.root.borrow().bus.network_stats()
    }

    fn sent(&self) -> Vec<(Vec<u8>, u8)> {
        core::mem::take(&mut self.root.borrow_mut().sent)
    }

    fn log(&self) -> Vec<String> {
        self.root.borrow().log.clone()
    }

    fn region(&self) -> AtomicRingMemory<'a> {
        let (_, rest) = self.memory.split_at(REGION_GPA as usize);
        rest.split_at(REGION_BYTES).0
    }

    fn network_rings(&self) -> (AtomicRingMemory<'a>, AtomicRingMemory<'a>) {
        let (_, rest) = self.memory.split_at(RINGS.gpa as usize);
        let (rings, _) = rest.split_at(RINGS.pages as usize * PAGE);
        rings.split_at(RINGS.outbound_pages as usize * PAGE)
    }

    fn control(&self) -> GuestBus<AtomicRingMemory<'a>> {
        let (control, _) = self.memory.split_at(2 * CONTROL_RING_PAGES as usize * PAGE);
        let (out, inb) = control.split_at(CONTROL_RING_PAGES as usize * PAGE);
        GuestBus::new(Producer::new(out).unwrap(), Consumer::new(inb).unwrap())
    }

    /// Connects the control channel and opens the network channel on
    /// freshly initialised rings.
    fn open(&self) {
        let mut bus = self.control();
        bus.connect(
            || {},
            || {
                self.service();
            },
            100,
        )
        .unwrap();
        let (out, inb) = self.network_rings();
        ring::initialize(&out).unwrap();
        ring::initialize(&inb).unwrap();
        let opened = bus
            .open(
                NETWORK_CLASS,
                RINGS,
                || {},
                || {
                    self.service();
                },
                100,
            )
            .unwrap();
        assert_eq!(opened.offer.offer_id, NETWORK_OFFER);
        assert_eq!((opened.signal_port, opened.event_port), (102, 202));
    }

    /// The child's network client (channel open, nothing granted).
    fn client(&self) -> NetworkClient<AtomicRingMemory<'a>> {
        let (out, inb) = self.network_rings();
        NetworkClient::new(
            Producer::new(out).unwrap(),
            Consumer::new(inb).unwrap(),
            self.region(),
            REGION_GPA,
            REGION_PAGES,
            SEND_PAGES,
        )
    }

    /// Opened, granted, initialised at `mtu`, receive buffers posted (and
    /// taken by the root), the link event read.
    fn started(&self, mtu: u16) -> NetworkClient<AtomicRingMemory<'a>> {
        self.open();
        let mut client = self.client();
        client.start(mtu, || {}, || self.pump(), PATIENCE).unwrap();
        // Up to 64 posts fill one batch; the next pass sees the ring empty.
        self.service();
        self.service();
        assert_eq!(
            client.poll(|| {}),
            Ok(Some(NetworkEvent::Link { up: true }))
        );
        client
    }

    fn pump(&self) {
        self.service();
    }

    /// Raw access to the network rings (child side), for hostile packets.
    fn raw(
        &self,
    ) -> (
        Producer<AtomicRingMemory<'a>>,
        Consumer<AtomicRingMemory<'a>>,
    ) {
        let (out, inb) = self.network_rings();
        (Producer::new(out).unwrap(), Consumer::new(inb).unwrap())
    }
}

fn words() -> Vec<AtomicU64> {
    (0..PAGES * PAGE / 8).map(|_| AtomicU64::new(0)).collect()
}

fn config(mac: Mac, mtu: u16) -> Option<NetworkConfig> {
    Some(NetworkConfig { mac, mtu })
}

fn frame(dst: Mac, src: Mac, len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(29) ^ seed ^ (i >> 7) as u8)
        .collect();
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    f
}

/// Reads every packet the root sent on the raw inbound ring.
fn drain(rx: &mut Consumer<AtomicRingMemory<'_>>) -> Vec<(u64, HostMessage)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    while let Ok(Recv::Packet(p)) = rx.try_recv(&mut buf) {
        out.push((
            p.header.transaction_id.get(),
            packet::decode::<HostMessage>(&p).unwrap(),
        ));
    }
    out
}

fn raw_send(tx: &mut Producer<AtomicRingMemory<'_>>, tid: u64, message: &GuestMessage) {
    let mut scratch = [0u8; 64];
    let bytes = packet::encode(message, &mut scratch).unwrap();
    assert!(matches!(
        tx.send(KIND_MESSAGE, 0, tid, bytes).unwrap(),
        ring::Sent::Written { .. }
    ));
}

/// Grants the region through the raw rings.
fn raw_grant(
    world: &World<'_>,
    tx: &mut Producer<AtomicRingMemory<'_>>,
    rx: &mut Consumer<AtomicRingMemory<'_>>,
) {
    let grant = GuestMessage::GrantBuffers {
        gpa: REGION_GPA,
        pages: REGION_PAGES,
        send_pages: SEND_PAGES,
    };
    raw_send(tx, 0, &grant);
    world.service();
    let got = drain(rx);
    assert!(got.contains(&(
        0,
        HostMessage::BuffersGranted {
            status: GrantStatus::Granted
        }
    )));
}

/// `Init` at 1500 through the raw rings (answer and link state read).
fn raw_init(
    world: &World<'_>,
    tx: &mut Producer<AtomicRingMemory<'_>>,
    rx: &mut Consumer<AtomicRingMemory<'_>>,
) {
    raw_send(
        tx,
        0,
        &GuestMessage::Init {
            mtu: 1500,
            mac: Mac::ZERO,
        },
    );
    world.service();
    let got = drain(rx);
    assert!(got.contains(&(0, HostMessage::LinkState { up: true })));
}

/// Every event the client has now.
fn events(client: &mut NetworkClient<AtomicRingMemory<'_>>) -> Vec<NetworkEvent> {
    let mut out = Vec::new();
    while let Some(e) = client.poll(|| {}).unwrap() {
        out.push(e);
    }
    out
}

#[test]
fn mtu_negotiation_and_the_assigned_mac() {
    // (port MTU, asked, accepted)
    for (port, asked, accepted) in [
        (9000, 9000, 9000),
        (9000, 1500, 1500),
        (1500, 9000, 1500),
        (9000, u16::MAX, 9000),
        (9000, 576, 576),
    ] {
        let w = words();
        let world = World::new(AtomicRingMemory::new(&w), config(MAC_A, port));
        world.open();
        let mut client = world.client();
        let pump = || world.pump();
        client.grant(|| {}, pump, PATIENCE).unwrap();
        assert_eq!(
            client.init(asked, || {}, pump, PATIENCE),
            Ok((accepted, MAC_A)),
            "{port} {asked}"
        );
        assert_eq!(client.mtu(), accepted);
        assert_eq!(client.mac(), Some(MAC_A));
        assert_eq!(world.root.borrow().bus.network_mtu(), Some(accepted));
        let slot = (u32::from(accepted) + 14).next_multiple_of(64) as usize;
        assert_eq!(
            client.slots(),
            (
                (SEND_BYTES / slot).min(64),
                ((REGION_BYTES - SEND_BYTES) / slot).min(64)
            )
        );
        // A second Init is refused, the first answer kept.
        assert_eq!(
            client.init(1500, || {}, pump, PATIENCE),
            Err(NetworkClientError::Status(Status::AlreadyInitialized))
        );
        assert_eq!(client.mtu(), accepted);
        assert_eq!(events(&mut client), [NetworkEvent::Link { up: true }]);
    }
    // Too small an MTU, and a root without a port for this child.
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), config(MAC_A, 9000));
    world.open();
    let mut client = world.client();
    assert_eq!(
        client.init(575, || {}, || world.pump(), PATIENCE),
        Err(NetworkClientError::Status(Status::BadMtu))
    );
    // Then a good one still works.
    assert_eq!(
        client.init(1500, || {}, || world.pump(), PATIENCE),
        Ok((1500, MAC_A))
    );
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), None);
    world.open();
    let mut client = world.client();
    assert_eq!(
        client.init(1500, || {}, || world.pump(), PATIENCE),
        Err(NetworkClientError::Status(Status::Unavailable))
    );
    assert_eq!(world.stats().inits, 1);
}

#[test]
fn frames_of_64_1500_and_9000_bytes_round_trip_byte_for_byte() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), config(MAC_A, 9000));
    let mut client = world.started(9000);
    assert_eq!(world.root.borrow().bus.network_posted(), client.posted());
    assert_eq!(client.posted(), (REGION_BYTES - SEND_BYTES) / 9024);
    for (len, seed) in [(64, 1u8), (1514, 2), (9014, 3), (14, 4)] {
        // Child to root.
        let out = frame(HOST, MAC_A, len, seed);
        let tag = client
            .send(&out, FLAG_CHECKSUM_NOT_COMPUTED, || {})
            .unwrap();
        world.service();
        assert_eq!(world.sent(), [(out.clone(), FLAG_CHECKSUM_NOT_COMPUTED)]);
        assert_eq!(
            events(&mut client),
            [NetworkEvent::SendComplete {
                tag,
                status: Status::Ok
            }]
        );
        // Root to child.
        let back = frame(MAC_A, HOST, len, seed ^ 0xff);
        world.deliver(&back, FLAG_CHECKSUM_VERIFIED).unwrap();
        let mut got = std::vec![0u8; 9014];
        let (n, flags) = client.receive_frame(&mut got, || {}).unwrap().unwrap();
        assert_eq!((n, flags), (len, FLAG_CHECKSUM_VERIFIED));
        assert!(got[..n] == back[..], "{len}-byte frame differs");
        // The buffer went back to the root.
        world.service();
        assert_eq!(world.root.borrow().bus.network_posted(), client.posted());
    }
    let stats = world.stats();
    assert_eq!((stats.sends, stats.received), (4, 4));
    assert_eq!(stats.send_bytes, 64 + 1514 + 9014 + 14);
    assert_eq!(stats.receive_bytes, stats.send_bytes);
    assert_eq!(stats.errors(), 0);
    assert_eq!(client.stats().received, 4);
    assert_eq!(world.log(), ["opened network"]);
}

#[test]
fn many_sends_per_signal_and_one_signal_back_per_batch() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), config(MAC_A, 1500));
    let mut client = world.started(1500);
    let (send_slots, _) = client.slots();
    assert_eq!(send_slots, SEND_BYTES / 1536);
    let root_signals = world.root.borrow().platform.signals;
    let mut child_signals = 0;
    let frames: Vec<Vec<u8>> = (0..send_slots)
        .map(|i| frame(Mac::BROADCAST, MAC_A, 60 + i * 35, i as u8))
        .collect();
    let mut tags = Vec::new();
    for f in &frames {
        tags.push(client.send(f, 0, || child_signals += 1).unwrap());
    }
    assert_eq!(child_signals, 1, "one signal for the whole burst");
    assert_eq!(
        client.send(&frames[0], 0, || {}),
        Err(NetworkClientError::Busy),
        "every slot is in flight"
    );
    assert_eq!(world.service(), send_slots);
    assert_eq!(world.root.borrow().platform.signals - root_signals, 1);
    let sent: Vec<Vec<u8>> = world.sent().into_iter().map(|(f, _)| f).collect();
    assert_eq!(sent, frames, "in order, byte for byte");
    let mut done: Vec<u64> = events(&mut client)
        .into_iter()
        .map(|e| match e {
            NetworkEvent::SendComplete {
                tag,
                status: Status::Ok,
            } => tag,
            other => panic!("{other:?}"),
        })
        .collect();
    done.sort_unstable();
    tags.sort_unstable();
    assert_eq!(done, tags);
    assert_eq!(client.in_flight(), 0);
    // Root to child: a burst of frames, one signal.
    let before = world.root.borrow().platform.signals;
    for i in 0..20 {
        world
            .deliver(&frame(MAC_A, HOST, 100 + i, i as u8), 0)
            .unwrap();
    }
    assert_eq!(world.root.borrow().platform.signals - before, 1);
    let mut buf = [0u8; 1514];
    for i in 0..20 {
        let (n, _) = client.receive_frame(&mut buf, || {}).unwrap().unwrap();
        assert_eq!(buf[..n], frame(MAC_A, HOST, 100 + i, i as u8)[..]);
    }
    assert_eq!(world.stats().batches, 4, "grant, init, posts, sends");
}

#[test]
fn hostile_sends_get_errors_and_nothing_reaches_the_wire() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), config(MAC_A, 1500));
    world.open();
    let (mut tx, mut rx) = world.raw();
    let send = |offset, len, flags| GuestMessage::Send { offset, len, flags };
    // Before Init and grant.
    raw_send(&mut tx, 1, &send(0, 64, 0));
    world.service();
    assert_eq!(
        drain(&mut rx),
        [(
            1,
            HostMessage::SendComplete {
                status: Status::NotInitialized
            }
        )]
    );
    raw_init(&world, &mut tx, &mut rx);
    // Initialised but no region.
    raw_send(&mut tx, 2, &send(0, 64, 0));
    world.service();
    assert_eq!(
        drain(&mut rx),
        [(
            2,
            HostMessage::SendComplete {
                status: Status::BadBuffer
            }
        )]
    );
    raw_grant(&world, &mut tx, &mut rx);
    let region = world.region();
    let good = frame(HOST, MAC_A, 1514, 7);
    region.write(0, &good);
    region.write(SEND_BYTES - 64, &frame(HOST, MAC_A, 64, 8));
    region.write(128, &frame(HOST, MAC_B, 64, 9));
    region.write(4096, &frame(HOST, Mac::BROADCAST, 64, 9));
    let area = SEND_BYTES as u32;
    let cases = [
        (send(0, 13, 0), Status::Runt),
        (send(0, 0, 0), Status::Runt),
        (send(0, 1515, 0), Status::TooLong),
        (send(0, u32::MAX, 0), Status::TooLong),
        (send(area - 63, 64, 0), Status::BadBuffer),
        (send(area, 64, 0), Status::BadBuffer),
        (send(u32::MAX - 10, 64, 0), Status::BadBuffer),
        (send(128, 64, 0), Status::SpoofedSource),
        (send(4096, 64, 0), Status::SpoofedSource),
        (send(0, 64, FLAG_CHECKSUM_VERIFIED), Status::BadFlags),
        (send(0, 64, 0x40), Status::BadFlags),
    ];
    for (i, (message, _)) in cases.iter().enumerate() {
        raw_send(&mut tx, 100 + i as u64, message);
    }
    // Undecodable payloads: not postcard, a root message, an unknown kind.
    tx.send(KIND_MESSAGE, 0, 0xdead, &[0xff; 9]).unwrap();
    let mut scratch = [0u8; 64];
    let root_message = packet::encode(&HostMessage::LinkState { up: true }, &mut scratch)
        .unwrap()
        .to_vec();
    tx.send(KIND_MESSAGE, 0, 0xcafe, &root_message).unwrap();
    tx.send(9, 0, 0xf00d, &[0]).unwrap();
    // And the last bytes of the send area, legitimately.
    raw_send(&mut tx, 7, &send(area - 64, 64, 0));
    world.service();
    let got = drain(&mut rx);
    assert_eq!(got.len(), cases.len() + 4);
    for (i, (message, expected)) in cases.iter().enumerate() {
        assert_eq!(
            got[i],
            (
                100 + i as u64,
                HostMessage::SendComplete { status: *expected }
            ),
            "{message:?}"
        );
    }
    let malformed = HostMessage::SendComplete {
        status: Status::Malformed,
    };
    assert_eq!(got[cases.len()], (0xdead, malformed));
    // A root message decodes as some child message or not at all; either
    // way it is answered.
    assert_eq!(got[cases.len() + 1].0, 0xcafe);
    assert_eq!(got[cases.len() + 2], (0xf00d, malformed));
    assert_eq!(
        got[cases.len() + 3],
        (7, HostMessage::SendComplete { status: Status::Ok })
    );
    assert_eq!(
        world.sent(),
        [(frame(HOST, MAC_A, 64, 8), 0)],
        "only the good frame left"
    );
    let stats = world.stats();
    assert_eq!(stats.completed(Status::SpoofedSource), 2);
    assert_eq!(stats.completed(Status::BadBuffer), 4);
    assert!(
        world.root.borrow().bus.network_open(),
        "errors keep the channel"
    );
}

#[test]
fn hostile_receive_buffers_come_back_with_errors() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), config(MAC_A, 1500));
    world.open();
    let (mut tx, mut rx) = world.raw();
    let post = |offset, len| GuestMessage::PostReceive { offset, len };
    let returned = |offset, status| HostMessage::Receive {
        status,
        offset,
        len: 0,
        flags: 0,
    };
    // Before Init.
    raw_send(&mut tx, 1, &post(0, 1514));
    world.service();
    assert_eq!(drain(&mut rx), [(1, returned(0, Status::NotInitialized))]);
    raw_grant(&world, &mut tx, &mut rx);
    raw_init(&world, &mut tx, &mut rx);
    let receive_area = (REGION_BYTES - SEND_BYTES) as u32;
    let cases = [
        (post(0, 1513), Status::BadBuffer),
        (post(0, 13), Status::BadBuffer),
        (post(receive_area - 1513, 1514), Status::BadBuffer),
        (post(u32::MAX, 1514), Status::BadBuffer),
        (post(0, u32::MAX), Status::BadBuffer),
    ];
    for (i, (m, _)) in cases.iter().enumerate() {
        raw_send(&mut tx, 10 + i as u64, m);
    }
    // MAX_POSTED good ones, then one too many.
    for i in 0..=MAX_POSTED as u32 {
        raw_send(&mut tx, 1000 + u64::from(i), &post(i * 1536, 1514));
    }
    world.service();
    world.service();
    let got: Vec<(u64, HostMessage)> = drain(&mut rx)
        .into_iter()
        .filter(|(_, m)| matches!(m, HostMessage::Receive { .. }))
        .collect();
    for (i, (m, expected)) in cases.iter().enumerate() {
        let GuestMessage::PostReceive { offset, .. } = m else {
            unreachable!()
        };
        assert_eq!(got[i], (10 + i as u64, returned(*offset, *expected)));
    }
    assert_eq!(
        got[cases.len()],
        (
            1000 + MAX_POSTED as u64,
            returned(MAX_POSTED as u32 * 1536, Status::TooManyPosted)
        )
    );
    assert_eq!(got.len(), cases.len() + 1);
    assert_eq!(world.root.borrow().bus.network_posted(), MAX_POSTED);
    // Frames fill the posted buffers in order, at their offsets, tagged.
    let region = world.region();
    let before: Vec<u8> = {
        let mut b = std::vec![0u8; REGION_BYTES];
        region.read(0, &mut b);
        b
    };
    let f = frame(MAC_A, HOST, 1514, 3);
    world.deliver(&f, 0).unwrap();
    world.deliver(&f[..100], 0).unwrap();
    assert_eq!(
        drain(&mut rx),
        [
            (
                1000,
                HostMessage::Receive {
                    status: Status::Ok,
                    offset: 0,
                    len: 1514,
                    flags: 0
                }
            ),
            (
                1001,
                HostMessage::Receive {
                    status: Status::Ok,
                    offset: 1536,
                    len: 100,
                    flags: 0
                }
            )
        ]
    );
    let mut after = std::vec![0u8; REGION_BYTES];
    region.read(0, &mut after);
    let at = SEND_BYTES;
    assert!(after[at..at + 1514] == f[..]);
    assert!(after[at + 1536..at + 1636] == f[..100]);
    // Nothing else in the region changed.
    assert!(after[..at] == before[..at]);
    assert!(after[at + 1514..at + 1536] == before[at + 1514..at + 1536]);
    assert!(after[at + 1636..] == before[at + 1636..]);
}

#[test]
fn frames_without_receive_buffers_are_dropped_and_counted() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), config(MAC_A, 1500));
    // Not open yet.
    let f = frame(MAC_A, HOST, 64, 0);
    assert_eq!(world.deliver(&f, 0), Err(DeliverError::NotReady));
    world.open();
    let mut client = world.client();
    client.grant(|| {}, || world.pump(), PATIENCE).unwrap();
    assert_eq!(world.deliver(&f, 0), Err(DeliverError::NotReady));
    client.init(1500, || {}, || world.pump(), PATIENCE).unwrap();
    assert_eq!(world.deliver(&f, 0), Err(DeliverError::NoReceiveBuffer));
    assert_eq!(world.deliver(&f[..13], 0), Err(DeliverError::BadLength));
    assert_eq!(
        world.deliver(&frame(MAC_A, HOST, 1515, 0), 0),
        Err(DeliverError::BadLength)
    );
    let stats = world.stats();
    assert_eq!(
        (stats.not_ready, stats.no_buffer, stats.bad_length),
        (2, 1, 2)
    );
    // Post, then it flows; once they are used up, drops again.
    let posted = client.post_all(|| {}).unwrap();
    world.service();
    for i in 0..posted {
        world.deliver(&frame(MAC_A, HOST, 64, i as u8), 0).unwrap();
    }
    assert_eq!(world.deliver(&f, 0), Err(DeliverError::NoReceiveBuffer));
    assert_eq!(world.stats().no_buffer, 2);
    assert_eq!(world.stats().received, posted as u64);
}

#[test]
fn a_full_ring_to_the_child_drops_frames_and_keeps_the_buffers() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), config(MAC_A, 1500));
    let mut client = world.started(1500);
    let posted = world.root.borrow().bus.network_posted();
    // The child does not read: link changes fill the 8 KiB ring to it
    // (the last one waits in the root, carrying the latest state).
    for i in 0..2000 {
        world.set_link(i % 2 == 1);
    }
    world.set_link(true);
    let f = frame(MAC_A, HOST, 64, 0);
    assert_eq!(world.deliver(&f, 0), Err(DeliverError::RingFull));
    assert_eq!(world.root.borrow().bus.network_posted(), posted);
    assert!(world.stats().ring_full >= 1);
    // The child catches up; the root finishes its link message and frames flow.
    let mut links = 0;
    while let Some(e) = client.poll(|| {}).unwrap() {
        assert!(matches!(e, NetworkEvent::Link { .. }));
        links += 1;
    }
    assert!(links > 10);
    world.service();
    world.deliver(&f, 0).unwrap();
    let mut buf = [0u8; 64];
    let mut found = None;
    while let Some(e) = client.poll(|| {}).unwrap() {
        if let NetworkEvent::Received { offset, len, .. } = e {
            found = Some((offset, len));
        }
    }
    let (offset, len) = found.unwrap();
    assert_eq!(len, 64);
    client.read_frame(offset, &mut buf).unwrap();
    assert_eq!(buf[..], f[..]);
    assert!(client.link_up(), "the last link state was up");
}

#[test]
fn link_state_changes_reach_the_child() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), config(MAC_A, 1500));
    let mut client = world.started(1500);
    world.set_link(false);
    world.set_link(false);
    world.set_link(true);
    assert_eq!(
        events(&mut client),
        [
            NetworkEvent::Link { up: false },
            NetworkEvent::Link { up: true }
        ]
    );
    assert_eq!(world.stats().link_changes, 3, "init, down, up");
}

#[test]
fn grants_outside_the_grantable_range_are_refused() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), config(MAC_A, 1500));
    world.open();
    let (out, inb) = world.network_rings();
    let pump = || world.pump();
    for (gpa, pages, send_pages, expected) in [
        (0, 4, 1, GrantStatus::BadRange),
        (RINGS.gpa + PAGE as u64, 2, 1, GrantStatus::BadRange),
        (
            (PAGES as u64 - 2) * PAGE as u64,
            4,
            1,
            GrantStatus::BadRange,
        ),
        (u64::MAX - 4095, 2, 1, GrantStatus::BadRange),
        (REGION_GPA + 8, 2, 1, GrantStatus::BadRange),
        (REGION_GPA, 0, 0, GrantStatus::BadSize),
        (REGION_GPA, 4, 0, GrantStatus::BadSize),
        (REGION_GPA, 4, 4, GrantStatus::BadSize),
        (REGION_GPA, 100_000, 1, GrantStatus::BadSize),
    ] {
        let mut client = NetworkClient::new(
            Producer::new(out).unwrap(),
            Consumer::new(inb).unwrap(),
            world.region(),
            gpa,
            pages,
            send_pages,
        );
        assert_eq!(
            client.grant(|| {}, pump, PATIENCE),
            Err(NetworkClientError::Refused(expected)),
            "{gpa:#x} {pages} {send_pages}"
        );
    }
    assert_eq!(
        world.root.borrow().platform.mapped,
        [(RINGS.gpa, RINGS.pages)]
    );
    let mut client = world.client();
    client.grant(|| {}, pump, PATIENCE).unwrap();
    assert_eq!(
        client.grant(|| {}, pump, PATIENCE),
        Err(NetworkClientError::Refused(GrantStatus::AlreadyGranted))
    );
    assert_eq!(world.stats().grants, 11);
}

#[test]
fn a_corrupted_network_ring_closes_only_network_and_unmaps_it() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), config(MAC_A, 1500));
    let mut client = world.started(1500);
    client.send(&frame(HOST, MAC_A, 64, 0), 0, || {}).unwrap();
    world.service();
    assert_eq!(
        world.root.borrow().platform.mapped,
        [(RINGS.gpa, RINGS.pages), (REGION_GPA, REGION_PAGES)]
    );
    let (out, _) = world.network_rings();
    out.store_u32_release(WRITE_INDEX, 0x7fff_fff8);
    world.service();
    assert_eq!(
        world.log().last().unwrap(),
        "closed network: ring: write index 0x7ffffff8 out of range"
    );
    {
        let root = world.root.borrow();
        assert!(!root.bus.network_open());
        assert!(root.bus.control_open());
        assert!(root.platform.mapped.is_empty(), "rings and region unmapped");
    }
    // The child is told on the control channel.
    let (control, _) = world
        .memory
        .split_at(2 * CONTROL_RING_PAGES as usize * PAGE);
    let (_, inb) = control.split_at(CONTROL_RING_PAGES as usize * PAGE);
    let mut rx = Consumer::new(inb).unwrap();
    let mut buf = [0u8; 256];
    let mut last = None;
    while let Ok(Recv::Packet(p)) = rx.try_recv(&mut buf) {
        last = Some(packet::decode::<ControlMessage>(&p).unwrap());
    }
    assert_eq!(last, Some(ControlMessage::Rescind { offer_id: 2 }));
    // Delivery and link changes on a closed channel are harmless.
    assert_eq!(
        world.deliver(&frame(MAC_A, HOST, 64, 0), 0),
        Err(DeliverError::NotReady)
    );
    world.set_link(false);
    assert_eq!(world.service(), 0);
}

#[test]
fn closing_the_network_channel_unmaps_rings_and_region() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), config(MAC_A, 1500));
    let _client = world.started(1500);
    world
        .control()
        .send_raw(&ControlMessage::Close { offer_id: 2 }, || {}, || {})
        .unwrap();
    world.service();
    let root = world.root.borrow();
    assert!(!root.bus.network_open());
    assert!(root.platform.mapped.is_empty());
}

#[test]
fn a_sink_that_drops_completes_sends_with_dropped() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), config(MAC_A, 1500));
    let mut client = world.started(1500);
    world.root.borrow_mut().accept = false;
    let tag = client.send(&frame(HOST, MAC_A, 64, 0), 0, || {}).unwrap();
    world.service();
    assert_eq!(
        events(&mut client),
        [NetworkEvent::SendComplete {
            tag,
            status: Status::Dropped
        }]
    );
    assert_eq!(client.stats().send_errors, 1);
}

/// Three children on one switch: A (port 1) and B (port 2) at 9000, C
/// (port 3) at 1500; port 0 (external) is up, and its frames collected.
#[test]
fn children_exchange_frames_through_the_switch() {
    let memories: Vec<Vec<AtomicU64>> = (0..3).map(|_| words()).collect();
    let children = [(MAC_A, 9000), (MAC_B, 9000), (MAC_C, 1500)];
    let worlds: Vec<World<'_>> = memories
        .iter()
        .zip(children)
        .map(|(m, (mac, mtu))| World::new(AtomicRingMemory::new(m), config(mac, mtu)))
        .collect();
    let mut switch: Box<Switch<4, 16>> = Box::default();
    switch.set_port_up(0, true).unwrap();
    for (i, (mac, mtu)) in children.into_iter().enumerate() {
        let port = i + 1;
        switch.set_port_up(port, true).unwrap();
        switch.set_port_mac(port, Some(mac)).unwrap();
        switch.set_port_mtu(port, mtu).unwrap();
    }
    let mut clients: Vec<_> = worlds
        .iter()
        .zip(children)
        .map(|(w, (_, mtu))| w.started(mtu))
        .collect();
    let external: RefCell<Vec<Vec<u8>>> = RefCell::new(Vec::new());
    // One root loop: every bus into the switch, then the switch out.
    let round = |switch: &mut Switch<4, 16>| {
        for (i, w) in worlds.iter().enumerate() {
            w.service_into(switch, i + 1);
        }
        while switch.drain(|port, frame, flags| {
            if port == 0 {
                external.borrow_mut().push(frame.to_vec());
                true
            } else {
                worlds[port - 1].deliver(frame, flags).is_ok()
            }
        }) > 0
        {}
    };
    let mut buf = std::vec![0u8; 9014];
    // A to B: a jumbo frame, intact.
    let jumbo = frame(MAC_B, MAC_A, 9014, 0x77);
    clients[0].send(&jumbo, 0, || {}).unwrap();
    round(&mut switch);
    let (n, _) = clients[1].receive_frame(&mut buf, || {}).unwrap().unwrap();
    assert!(buf[..n] == jumbo[..], "jumbo frame differs");
    // B answers with an ordinary frame.
    let reply = frame(MAC_A, MAC_B, 1514, 0x78);
    clients[1].send(&reply, 0, || {}).unwrap();
    round(&mut switch);
    let (n, _) = clients[0].receive_frame(&mut buf, || {}).unwrap().unwrap();
    assert!(buf[..n] == reply[..]);
    // A jumbo to C (1500) is dropped at C's port, counted; an ordinary one passes.
    clients[0]
        .send(&frame(MAC_C, MAC_A, 9014, 1), 0, || {})
        .unwrap();
    let to_c = frame(MAC_C, MAC_A, 1514, 2);
    clients[0].send(&to_c, 0, || {}).unwrap();
    round(&mut switch);
    let (n, _) = clients[2].receive_frame(&mut buf, || {}).unwrap().unwrap();
    assert!(buf[..n] == to_c[..]);
    assert_eq!(clients[2].receive_frame(&mut buf, || {}).unwrap(), None);
    assert_eq!(switch.counters(3).dropped(DropReason::Oversize), 1);
    // A broadcast from C reaches A, B and the outside.
    let hello = frame(Mac::BROADCAST, MAC_C, 342, 3);
    clients[2].send(&hello, 0, || {}).unwrap();
    round(&mut switch);
    for client in &mut clients[..2] {
        let (n, _) = client.receive_frame(&mut buf, || {}).unwrap().unwrap();
        assert!(buf[..n] == hello[..]);
    }
    assert_eq!(*external.borrow(), [hello]);
    // C forging A's MAC: refused at the provider, nothing reaches the switch.
    let rx_before = switch.counters(3).rx_frames;
    let tag = clients[2]
        .send(&frame(MAC_B, MAC_A, 64, 4), 0, || {})
        .unwrap();
    round(&mut switch);
    let completions: Vec<NetworkEvent> = events(&mut clients[2])
        .into_iter()
        .filter(|e| matches!(e, NetworkEvent::SendComplete { tag: t, .. } if *t == tag))
        .collect();
    assert_eq!(
        completions,
        [NetworkEvent::SendComplete {
            tag,
            status: Status::SpoofedSource
        }]
    );
    assert_eq!(switch.counters(3).rx_frames, rx_before);
    assert_eq!(clients[1].receive_frame(&mut buf, || {}).unwrap(), None);
    assert_eq!(worlds[2].stats().completed(Status::SpoofedSource), 1);
    // B without receive buffers: frames to it are dropped and counted
    // (switch: NoBuffer on port 2; provider: no_buffer).
    let posted = worlds[1].root.borrow().bus.network_posted();
    for i in 0..posted + 3 {
        clients[0]
            .send_waiting_for_slot(
                &frame(MAC_B, MAC_A, 64, i as u8),
                0,
                || {},
                || round(&mut switch),
                PATIENCE,
            )
            .unwrap();
    }
    round(&mut switch);
    assert_eq!(switch.counters(2).dropped(DropReason::NoBuffer), 3);
    assert_eq!(worlds[1].stats().no_buffer, 3);
    let mut got = 0;
    while clients[1].receive_frame(&mut buf, || {}).unwrap().is_some() {
        got += 1;
    }
    assert_eq!(got, posted);
}

#[test]
fn the_client_refuses_answers_it_did_not_ask_for() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), config(MAC_A, 1500));
    let mut client = world.started(1500);
    // The root is idle now: play a hostile root on the inbound ring.
    let (_, inb) = world.network_rings();
    let mut root = Producer::new(inb).unwrap();
    let mut scratch = [0u8; 64];
    let mut hostile = |tid: u64, message: HostMessage| {
        let bytes = packet::encode(&message, &mut scratch).unwrap();
        root.send(KIND_MESSAGE, 0, tid, bytes).unwrap();
    };
    // A completion for a send never made.
    hostile(12345, HostMessage::SendComplete { status: Status::Ok });
    assert_eq!(client.poll(|| {}), Err(NetworkClientError::BadMessage));
    // A frame in buffer 0 at another offset, longer than the slot, and
    // for a buffer tag that does not exist.
    let receive = |offset, len| HostMessage::Receive {
        status: Status::Ok,
        offset,
        len,
        flags: 0,
    };
    hostile(1 << 32, receive(64, 64));
    assert_eq!(client.poll(|| {}), Err(NetworkClientError::BadMessage));
    hostile(1 << 32, receive(0, 1537));
    assert_eq!(client.poll(|| {}), Err(NetworkClientError::BadMessage));
    hostile((1 << 32) + 9999, receive(0, 64));
    assert_eq!(client.poll(|| {}), Err(NetworkClientError::BadMessage));
    // A good one is still accepted; the same buffer twice is not.
    hostile(1 << 32, receive(0, 64));
    assert_eq!(
        client.poll(|| {}),
        Ok(Some(NetworkEvent::Received {
            offset: 0,
            len: 64,
            flags: 0
        }))
    );
    hostile(1 << 32, receive(0, 64));
    assert_eq!(client.poll(|| {}), Err(NetworkClientError::BadMessage));
    // Reading a slot that was not filled is refused.
    let mut buf = [0u8; 64];
    assert_eq!(
        client.read_frame(1536, &mut buf),
        Err(NetworkClientError::BadLength)
    );
    assert_eq!(client.read_frame(0, &mut buf), Ok(()));
    assert_eq!(
        client.read_frame(7, &mut buf),
        Err(NetworkClientError::BadLength)
    );
}

#[test]
fn deferred_signals_wake_the_child_once_per_pass() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), config(MAC_A, 1500));
    let mut client = world.started(1500);
    world
        .root
        .borrow_mut()
        .bus
        .set_network_deferred_signals(true);
    let signals = || world.root.borrow().platform.signals;
    let flush = || {
        let mut root = world.root.borrow_mut();
        let Root {
            bus, platform, log, ..
        } = &mut *root;
        bus.network_flush(platform, |e| log_event(log, e));
    };
    // The child sleeps (asks for signals) with nothing to read.
    assert_eq!(client.arm_signal(), Ok(true));
    let before = signals();
    let tags: Vec<u64> = (0..10)
        .map(|i| {
            client
                .send(&frame(Mac::BROADCAST, MAC_A, 100, i), 0, || {})
                .unwrap()
        })
        .collect();
    // Completions published, frames delivered: no signal until the flush.
    assert_eq!(world.service(), 10);
    for i in 0..10 {
        world.deliver(&frame(MAC_A, HOST, 200, i), 0).unwrap();
    }
    assert_eq!(signals(), before, "nothing signalled before the flush");
    flush();
    assert_eq!(signals(), before + 1, "one signal for the whole pass");
    flush();
    assert_eq!(signals(), before + 1, "nothing new: no signal");
    let got = events(&mut client);
    let completed = got
        .iter()
        .filter(|e| matches!(e, NetworkEvent::SendComplete { tag, status: Status::Ok } if tags.contains(tag)))
        .count();
    let received = got
        .iter()
        .filter(|e| matches!(e, NetworkEvent::Received { len: 200, .. }))
        .count();
    assert_eq!((completed, received), (10, 10));
    // A child that polls (signals masked) is never signalled.
    client.set_polling(true).unwrap();
    world.deliver(&frame(MAC_A, HOST, 60, 1), 0).unwrap();
    flush();
    assert_eq!(signals(), before + 1);
    // Without deferral, a delivery into an empty ring of a sleeping child signals at once.
    world
        .root
        .borrow_mut()
        .bus
        .set_network_deferred_signals(false);
    let _ = events(&mut client);
    assert_eq!(client.arm_signal(), Ok(true));
    world.deliver(&frame(MAC_A, HOST, 60, 2), 0).unwrap();
    assert_eq!(signals(), before + 2);
}

#[test]
fn arming_the_signal_reports_a_packet_that_already_waits() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), config(MAC_A, 1500));
    let mut client = world.started(1500);
    client.set_polling(true).unwrap();
    let before = world.root.borrow().platform.signals;
    world.deliver(&frame(MAC_A, HOST, 64, 9), 0).unwrap();
    assert_eq!(world.root.borrow().platform.signals, before, "masked");
    assert_eq!(
        client.arm_signal(),
        Ok(false),
        "a frame waits: do not sleep"
    );
    assert!(
        client
            .receive_frame(&mut [0u8; 64], || {})
            .unwrap()
            .is_some()
    );
    assert_eq!(client.arm_signal(), Ok(true));
}

/// A sink that offers its own memory for each frame (as the switch's
/// ingress does) and records what it was given.
struct InPlace {
    room: Vec<u8>,
    committed: Vec<(Vec<u8>, u8)>,
    full: bool,
    refused: Vec<Vec<u8>>,
}

impl FrameSink for InPlace {
    fn frame(&mut self, frame: &[u8], _: u8) -> bool {
        self.refused.push(frame.to_vec());
        false
    }

    fn place(&mut self, len: usize) -> Option<&mut [u8]> {
        if self.full {
            return None;
        }
        self.room.get_mut(..len)
    }

    fn commit(&mut self, len: usize, flags: u8) -> bool {
        self.committed.push((self.room[..len].to_vec(), flags));
        true
    }
}

#[test]
fn frames_go_straight_into_the_sinks_memory_and_are_checked_there() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), config(MAC_A, 1500));
    let mut client = world.started(1500);
    let mut sink = InPlace {
        room: std::vec![0; 9014],
        committed: Vec::new(),
        full: false,
        refused: Vec::new(),
    };
    let pass = |sink: &mut InPlace| {
        let mut root = world.root.borrow_mut();
        let Root {
            bus,
            platform,
            scratch,
            log,
            ..
        } = &mut *root;
        bus.service_network(platform, sink, scratch, |e| log_event(log, e))
    };
    let good = frame(MAC_B, MAC_A, 1514, 5);
    let forged = frame(MAC_B, MAC_C, 1514, 6);
    let good_tag = client
        .send(&good, FLAG_CHECKSUM_NOT_COMPUTED, || {})
        .unwrap();
    let forged_tag = client.send(&forged, 0, || {}).unwrap();
    assert_eq!(pass(&mut sink), 2);
    assert_eq!(sink.committed, [(good.clone(), FLAG_CHECKSUM_NOT_COMPUTED)]);
    assert!(sink.refused.is_empty());
    let done = events(&mut client);
    assert!(done.contains(&NetworkEvent::SendComplete {
        tag: good_tag,
        status: Status::Ok
    }));
    assert!(done.contains(&NetworkEvent::SendComplete {
        tag: forged_tag,
        status: Status::SpoofedSource
    }));
    // A sink without room in place gets the frame the ordinary way.
    sink.full = true;
    let tag = client.send(&good, 0, || {}).unwrap();
    assert_eq!(pass(&mut sink), 1);
    assert_eq!(sink.refused, [good]);
    assert!(events(&mut client).contains(&NetworkEvent::SendComplete {
        tag,
        status: Status::Dropped
    }));
}

impl<'a> World<'a> {
    /// A client that negotiated the batch messages.
    fn started_batched(&self, mtu: u16) -> NetworkClient<AtomicRingMemory<'a>> {
        self.open();
        let mut client = self.client();
        client.grant(|| {}, || self.pump(), PATIENCE).unwrap();
        assert_eq!(
            client.negotiate(|| {}, || self.pump(), PATIENCE),
            Ok(ipc::vmbus::network::VERSION_BATCH)
        );
        client.init(mtu, || {}, || self.pump(), PATIENCE).unwrap();
        client.post_all(|| {}).unwrap();
        self.service();
        assert_eq!(
            client.poll(|| {}),
            Ok(Some(NetworkEvent::Link { up: true }))
        );
        client
    }
}

#[test]
fn batches_carry_sixteen_frames_per_message_each_way() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), config(MAC_A, 1500));
    let mut client = world.started_batched(1500);
    let (send_slots, receive_slots) = client.slots();
    assert_eq!(world.root.borrow().bus.network_posted(), receive_slots);
    // Posting every receive slot took ceil(n / 16) messages (plus grant,
    // negotiate, init).
    let packets_before = world.stats().batches;
    let frames: Vec<Vec<u8>> = (0..send_slots)
        .map(|i| frame(Mac::BROADCAST, MAC_A, 60 + i * 35, i as u8))
        .collect();
    let mut tags = Vec::new();
    for f in &frames {
        tags.push(client.send(f, 0, || {}).unwrap());
    }
    client.flush_sends(|| {}).unwrap();
    assert_eq!(
        world.service(),
        send_slots.div_ceil(16),
        "one packet per 16 sends"
    );
    let sent: Vec<Vec<u8>> = world.sent().into_iter().map(|(f, _)| f).collect();
    assert_eq!(sent, frames, "in order, byte for byte");
    let mut done: Vec<u64> = events(&mut client)
        .into_iter()
        .map(|e| match e {
            NetworkEvent::SendComplete {
                tag,
                status: Status::Ok,
            } => tag,
            other => panic!("{other:?}"),
        })
        .collect();
    done.sort_unstable();
    tags.sort_unstable();
    assert_eq!(done, tags);
    assert_eq!(client.in_flight(), 0);
    assert_eq!(world.stats().sends, send_slots as u64);
    assert_eq!(world.stats().completions, send_slots as u64);
    assert!(world.stats().batches > packets_before);
    // Root to child: 20 frames announced in two `ReceiveBatch`es (16, then
    // 4 at the flush), read, then their buffers posted again in batches.
    for i in 0..20 {
        world
            .deliver(&frame(MAC_A, HOST, 100 + i, i as u8), 0)
            .unwrap();
    }
    {
        let mut root = world.root.borrow_mut();
        let Root { bus, platform, .. } = &mut *root;
        bus.network_flush(platform, |_| {});
    }
    let mut buf = [0u8; 1514];
    for i in 0..20 {
        let (n, _) = client.receive_frame(&mut buf, || {}).unwrap().unwrap();
        assert_eq!(buf[..n], frame(MAC_A, HOST, 100 + i, i as u8)[..]);
    }
    assert_eq!(client.receive_frame(&mut buf, || {}), Ok(None));
    assert_eq!(client.posted(), receive_slots, "all posted again");
    world.service();
    assert_eq!(world.root.borrow().bus.network_posted(), receive_slots);
    assert_eq!(world.stats().received, 20);
    assert_eq!(world.stats().errors(), 0);
}

#[test]
fn hostile_batches_are_checked_entry_by_entry() {
    use ipc::vmbus::network::{Batch, BufferEntry, FrameEntry};
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), config(MAC_A, 1500));
    let _client = world.started_batched(1500);
    let (mut tx, mut rx) = world.raw();
    let _ = drain(&mut rx);
    // A good frame, a spoofed one, one outside the send area, a runt, bad flags.
    let good = frame(Mac::BROADCAST, MAC_A, 100, 1);
    let spoofed = frame(Mac::BROADCAST, MAC_B, 100, 2);
    let region = world.region();
    region.write(0, &good);
    region.write(2048, &spoofed);
    let mut entries = Batch::new();
    for e in [
        FrameEntry {
            offset: 0,
            len: 100,
            flags: 0,
        },
        FrameEntry {
            offset: 2048,
            len: 100,
            flags: 0,
        },
        FrameEntry {
            offset: u32::MAX - 10,
            len: 100,
            flags: 0,
        },
        FrameEntry {
            offset: 0,
            len: 13,
            flags: 0,
        },
        FrameEntry {
            offset: 0,
            len: 100,
            flags: 0x80,
        },
    ] {
        entries.push(e).unwrap();
    }
    raw_send(&mut tx, 77, &GuestMessage::SendBatch { entries });
    // An empty batch is malformed.
    raw_send(
        &mut tx,
        78,
        &GuestMessage::SendBatch {
            entries: Batch::new(),
        },
    );
    // A receive batch with one bad buffer posts nothing.
    let mut buffers = Batch::new();
    buffers
        .push(BufferEntry {
            offset: 0,
            len: 1536,
        })
        .unwrap();
    buffers
        .push(BufferEntry {
            offset: u32::MAX,
            len: 1536,
        })
        .unwrap();
    raw_send(
        &mut tx,
        79,
        &GuestMessage::PostReceiveBatch { entries: buffers },
    );
    let posted = world.root.borrow().bus.network_posted();
    world.service();
    assert_eq!(world.root.borrow().bus.network_posted(), posted);
    let sent: Vec<Vec<u8>> = world.sent().into_iter().map(|(f, _)| f).collect();
    assert_eq!(sent, [good], "only the good frame reaches the wire");
    let mut statuses = Batch::new();
    for s in [
        Status::Ok,
        Status::SpoofedSource,
        Status::BadBuffer,
        Status::Runt,
        Status::BadFlags,
    ] {
        statuses.push(s).unwrap();
    }
    assert_eq!(
        drain(&mut rx),
        [
            (77, HostMessage::SendCompleteBatch { statuses }),
            (
                78,
                HostMessage::SendComplete {
                    status: Status::Malformed
                }
            ),
            (
                79,
                HostMessage::Receive {
                    status: Status::BadBuffer,
                    offset: 0,
                    len: 0,
                    flags: 0
                }
            ),
        ]
    );
}

#[test]
fn batches_before_negotiation_are_malformed() {
    use ipc::vmbus::network::{Batch, FrameEntry};
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), config(MAC_A, 1500));
    let _client = world.started(1500);
    let (mut tx, mut rx) = world.raw();
    let _ = drain(&mut rx);
    let mut entries = Batch::new();
    entries
        .push(FrameEntry {
            offset: 0,
            len: 100,
            flags: 0,
        })
        .unwrap();
    raw_send(&mut tx, 5, &GuestMessage::SendBatch { entries });
    world.service();
    assert!(world.sent().is_empty());
    assert_eq!(
        drain(&mut rx),
        [(
            5,
            HostMessage::SendComplete {
                status: Status::Malformed
            }
        )]
    );
}

#[test]
fn a_batch_larger_than_the_port_queue_waits_and_loses_nothing() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), config(MAC_A, 1500));
    let mut switch: Box<Switch<2, 4>> = Box::default();
    for port in 0..2 {
        switch.set_port_up(port, true).unwrap();
    }
    switch.set_port_mac(1, Some(MAC_A)).unwrap();
    let mut client = world.started_batched(1500);
    let frames: Vec<Vec<u8>> = (0..16)
        .map(|i| frame(HOST, MAC_A, 100 + i, i as u8))
        .collect();
    let tags: Vec<u64> = frames
        .iter()
        .map(|f| client.send(f, 0, || {}).unwrap())
        .collect();
    // A full batch goes out at once; a single send behind it.
    assert_eq!(client.queued_sends(), 0);
    let last = frame(HOST, MAC_A, 300, 99);
    client.send(&last, 0, || {}).unwrap();
    client.flush_sends(|| {}).unwrap();
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut passes = 0;
    let mut done = Vec::new();
    while done.len() < 17 {
        passes += 1;
        assert!(passes < 20, "stuck");
        world.service_into(&mut switch, 1);
        let state = world.root.borrow().bus.save();
        let pending = state.network.channel.unwrap().pending_send;
        if let Some(p) = pending {
            // Four per pass (the queue), the rest kept, nothing read behind it.
            assert_eq!(p.entries.len(), 16);
            assert_eq!(p.statuses.len() % 4, 0);
            assert_eq!(world.stats().sends as usize, p.statuses.len());
        }
        while switch.drain(|_, f, _| {
            out.push(f.to_vec());
            true
        }) > 0
        {}
        while let Some(e) = client.poll(|| {}).unwrap() {
            match e {
                NetworkEvent::SendComplete {
                    tag,
                    status: Status::Ok,
                } => done.push(tag),
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(passes, 5, "16 frames four at a time, then the single send");
    let mut expected = frames.clone();
    expected.push(last);
    assert_eq!(out, expected, "in order, none dropped");
    assert_eq!(done[..16], tags[..]);
    assert_eq!(switch.counters(1).rx_frames, 17);
}
