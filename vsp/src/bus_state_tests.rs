//! Host tests of quick migration of the root's side of a bus: a child
//! (`vsc` clients) with the console, storage and network channels open
//! over one "child memory" of atomics; the root's bus is saved, encoded,
//! decoded, dropped, and restored over the same memory with a fresh
//! platform, and the child carries on. Plus every [`RestoreError`], the
//! codec's refusals, and restores of random and mutated bytes.

extern crate std;

use core::cell::RefCell;
use core::sync::atomic::AtomicU64;
use std::string::String;
use std::vec::Vec;

use ipc::vmbus::control::{
    CONSOLE_CLASS, CONTROL_RING_PAGES, ChannelState, HostState, NETWORK_CLASS, OpenStatus,
    STORAGE_CLASS,
};
use ipc::vmbus::memory::{AtomicRingMemory, RingMemory};
use ipc::vmbus::network::{Mac, Status as NetStatus};
use ipc::vmbus::ring::{self, Consumer, Producer, RingError, WRITE_INDEX};
use ipc::vmbus::storage::{Op, Request, Status};
use vsc::bus::{GuestBus, RingPages};
use vsc::console::ConsoleClient;
use vsc::network::NetworkClient;
use vsc::storage::{StorageClient, StorageEvent};

use super::*;
use crate::bus::{ChildBus, DeliverError, Event, FrameSink, Platform};
use crate::storage::{BackendError, StorageBackend};

const PAGE: usize = 4096;
/// Child memory: control 0..4; console rings 8..20, storage rings
/// 20..26, network rings 26..32, storage region 32..48, network region
/// 48..112 (16 send pages). Pages from 8 on are grantable.
const PAGES: usize = 128;
const CONSOLE: RingPages = RingPages {
    gpa: 8 * PAGE as u64,
    pages: 12,
    outbound_pages: 10,
};
const STORAGE: RingPages = RingPages {
    gpa: 20 * PAGE as u64,
    pages: 6,
    outbound_pages: 3,
};
const NETWORK: RingPages = RingPages {
    gpa: 26 * PAGE as u64,
    pages: 6,
    outbound_pages: 3,
};
const STORAGE_REGION: (u64, u32) = (32 * PAGE as u64, 16);
const NET_REGION: (u64, u32, u32) = (48 * PAGE as u64, 64, 16);
const MAC: Mac = Mac([0x02, 0x63, 0x76, 0, 0, 1]);
const PEER: Mac = Mac([0x02, 0x63, 0x76, 0, 0, 2]);
const PATIENCE: u64 = 1000;
const SECTORS: u64 = 256;

/// The root's hypervisor side: maps slices of the child's memory and
/// checks what the bus asks of it.
struct Fake<'a> {
    memory: AtomicRingMemory<'a>,
    mapped: Vec<(u64, u32)>,
    /// Signals by channel: control, console, storage, network.
    signals: [u64; 4],
    ports_made: u32,
    /// A GPA whose mapping is refused.
    refuse: Option<u64>,
    /// A GPA whose buffer mapping comes back one page short.
    short: Option<u64>,
}

impl<'a> Fake<'a> {
    fn new(memory: AtomicRingMemory<'a>) -> Self {
        Fake {
            memory,
            mapped: Vec::new(),
            signals: [0; 4],
            ports_made: 0,
            refuse: None,
            short: None,
        }
    }

    fn range(&mut self, gpa: u64, pages: u32) -> Result<AtomicRingMemory<'a>, OpenStatus> {
        let start = usize::try_from(gpa).map_err(|_| OpenStatus::BadRange)?;
        let len = pages as usize * PAGE;
        if self.refuse == Some(gpa)
            || !start.is_multiple_of(PAGE)
            || start < 8 * PAGE
            || start.checked_add(len).is_none_or(|e| e > PAGES * PAGE)
        {
            return Err(OpenStatus::BadRange);
        }
        let end = gpa + len as u64;
        for &(g, p) in &self.mapped {
            assert!(
                end <= g || g + u64::from(p) * PAGE as u64 <= gpa,
                "overlapping mappings"
            );
        }
        self.mapped.push((gpa, pages));
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
        Ok(self
            .range(gpa, pages)?
            .split_at(outbound_pages as usize * PAGE))
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
        if self.short == Some(gpa) {
            return Ok(memory.split_at(memory.len() - PAGE).0);
        }
        Ok(memory)
    }

    fn ports(&mut self, offer_id: u32) -> Result<(u64, u64), OpenStatus> {
        self.ports_made += 1;
        Ok((100 + u64::from(offer_id), 200 + u64::from(offer_id)))
    }

    fn signal(&mut self, offer_id: Option<u32>) {
        self.signals[offer_id.map_or(0, |o| o as usize + 1)] += 1;
    }
}

/// LUN 0: a RAM disk.
struct Disk(Vec<u8>);

impl StorageBackend for Disk {
    fn capacity(&mut self, lun: u8) -> Option<u64> {
        (lun == 0).then_some(SECTORS)
    }
    fn read(&mut self, _: u8, lba: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        let at = lba as usize * 512;
        buf.copy_from_slice(&self.0[at..at + buf.len()]);
        Ok(())
    }
    fn write(&mut self, _: u8, lba: u64, buf: &[u8]) -> Result<(), BackendError> {
        let at = lba as usize * 512;
        self.0[at..at + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self, _: u8) -> Result<(), BackendError> {
        Ok(())
    }
}

struct Collect<'v>(&'v mut Vec<Vec<u8>>);

impl FrameSink for Collect<'_> {
    fn frame(&mut self, frame: &[u8], _: u8) -> bool {
        self.0.push(frame.to_vec());
        true
    }
}

struct Root<'a> {
    bus: ChildBus<AtomicRingMemory<'a>>,
    platform: Fake<'a>,
    disk: Disk,
    frames: Vec<Vec<u8>>,
    log: Vec<String>,
}

struct World<'a> {
    memory: AtomicRingMemory<'a>,
    root: RefCell<Root<'a>>,
}

fn log_event(log: &mut Vec<String>, e: Event<'_>) {
    log.push(match e {
        Event::Line(text) => std::format!("line {text}"),
        Event::Opened(c) => std::format!("opened {c}"),
        Event::Closed(c, why) => std::format!("closed {c}: {why}"),
        Event::Integration(e) => std::format!("integration {e:?}"),
    })
}

fn control_rings(memory: AtomicRingMemory<'_>) -> (AtomicRingMemory<'_>, AtomicRingMemory<'_>) {
    let (control, _) = memory.split_at(2 * CONTROL_RING_PAGES as usize * PAGE);
    control.split_at(CONTROL_RING_PAGES as usize * PAGE)
}

fn rings_of(
    memory: AtomicRingMemory<'_>,
    r: RingPages,
) -> (AtomicRingMemory<'_>, AtomicRingMemory<'_>) {
    let (_, rest) = memory.split_at(r.gpa as usize);
    let (rings, _) = rest.split_at(r.pages as usize * PAGE);
    rings.split_at(r.outbound_pages as usize * PAGE)
}

fn slice(memory: AtomicRingMemory<'_>, gpa: u64, pages: u32) -> AtomicRingMemory<'_> {
    let (_, rest) = memory.split_at(gpa as usize);
    rest.split_at(pages as usize * PAGE).0
}

fn words() -> Vec<AtomicU64> {
    (0..PAGES * PAGE / 8).map(|_| AtomicU64::new(0)).collect()
}

impl<'a> World<'a> {
    /// A fresh bus over freshly initialised control rings.
    fn new(memory: AtomicRingMemory<'a>) -> Self {
        let (out, inb) = control_rings(memory);
        ring::initialize(&out).unwrap();
        ring::initialize(&inb).unwrap();
        let mut bus = ChildBus::new(out, inb).unwrap();
        bus.set_network(Some(NetworkConfig {
            mac: MAC,
            mtu: 1500,
        }));
        Self::with(memory, bus, Fake::new(memory))
    }

    fn with(
        memory: AtomicRingMemory<'a>,
        bus: ChildBus<AtomicRingMemory<'a>>,
        platform: Fake<'a>,
    ) -> Self {
        let disk = Disk(
            (0..SECTORS as usize * 512)
                .map(|i| (i % 251) as u8)
                .collect(),
        );
        World {
            memory,
            root: RefCell::new(Root {
                bus,
                platform,
                disk,
                frames: Vec::new(),
                log: Vec::new(),
            }),
        }
    }

    /// One pass of the root's loop: every channel, frames collected.
    fn service(&self) -> usize {
        let mut root = self.root.borrow_mut();
        let Root {
            bus,
            platform,
            disk,
            frames,
            log,
        } = &mut *root;
        let mut bounce = [0u8; 4096];
        let mut handled = bus.service(platform, disk, &mut bounce, |e| log_event(log, e));
        let mut scratch = std::vec![0u8; ipc::vmbus::network::MAX_FRAME as usize];
        handled += bus.service_network(platform, &mut Collect(frames), &mut scratch, |e| {
            log_event(log, e)
        });
        handled
    }

    fn deliver(&self, frame: &[u8]) -> Result<(), DeliverError> {
        let mut root = self.root.borrow_mut();
        let Root {
            bus, platform, log, ..
        } = &mut *root;
        bus.network_deliver(platform, frame, 0, |e| log_event(log, e))
    }

    fn log(&self) -> Vec<String> {
        core::mem::take(&mut self.root.borrow_mut().log)
    }

    /// The child connects and opens all three devices (rings initialised
    /// by the child, as it does).
    fn open_all(&self) -> GuestBus<AtomicRingMemory<'a>> {
        let (out, inb) = control_rings(self.memory);
        let mut bus = GuestBus::new(Producer::new(out).unwrap(), Consumer::new(inb).unwrap());
        bus.connect(
            || {},
            || {
                self.service();
            },
            100,
        )
        .unwrap();
        for (class, rings) in [
            (CONSOLE_CLASS, CONSOLE),
            (STORAGE_CLASS, STORAGE),
            (NETWORK_CLASS, NETWORK),
        ] {
            let (out, inb) = rings_of(self.memory, rings);
            ring::initialize(&out).unwrap();
            ring::initialize(&inb).unwrap();
            bus.open(
                class,
                rings,
                || {},
                || {
                    self.service();
                },
                100,
            )
            .unwrap();
        }
        bus
    }

    fn console(&self) -> ConsoleClient<AtomicRingMemory<'a>> {
        let (out, inb) = rings_of(self.memory, CONSOLE);
        ConsoleClient::new(Producer::new(out).unwrap(), Consumer::new(inb).unwrap())
    }

    fn storage(&self) -> StorageClient<AtomicRingMemory<'a>> {
        let (out, inb) = rings_of(self.memory, STORAGE);
        let (gpa, pages) = STORAGE_REGION;
        StorageClient::new(
            Producer::new(out).unwrap(),
            Consumer::new(inb).unwrap(),
            slice(self.memory, gpa, pages),
            gpa,
            pages,
        )
    }

    fn network(&self) -> NetworkClient<AtomicRingMemory<'a>> {
        let (out, inb) = rings_of(self.memory, NETWORK);
        let (gpa, pages, send_pages) = NET_REGION;
        NetworkClient::new(
            Producer::new(out).unwrap(),
            Consumer::new(inb).unwrap(),
            slice(self.memory, gpa, pages),
            gpa,
            pages,
            send_pages,
        )
    }
}

fn frame(dst: Mac, src: Mac, len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ seed)
        .collect();
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f
}

/// The child's three clients, after opening, granting, `Init` and
/// posting.
struct Child<'a> {
    _control: GuestBus<AtomicRingMemory<'a>>,
    console: ConsoleClient<AtomicRingMemory<'a>>,
    storage: StorageClient<AtomicRingMemory<'a>>,
    network: NetworkClient<AtomicRingMemory<'a>>,
}

/// Opens everything, moves some traffic: 5 console lines, a storage
/// write, the network started (buffers posted, link read), a frame each
/// way.
fn started<'a>(world: &World<'a>) -> Child<'a> {
    let control = world.open_all();
    assert_eq!(
        world.log(),
        ["opened console", "opened storage", "opened network"]
    );
    let mut console = world.console();
    for i in 0..5 {
        let line = std::format!("before {i}");
        console
            .write_line(line.as_bytes(), || {}, || {}, PATIENCE)
            .unwrap();
    }
    let mut storage = world.storage();
    storage
        .grant(
            || {},
            || {
                world.service();
            },
            PATIENCE,
        )
        .unwrap();
    let data: Vec<u8> = (0..1024).map(|i| (i * 7) as u8).collect();
    storage
        .write(
            0,
            10,
            &data,
            || {},
            || {
                world.service();
            },
            PATIENCE,
        )
        .unwrap();
    let mut network = world.network();
    network
        .start(
            1500,
            || {},
            || {
                world.service();
            },
            PATIENCE,
        )
        .unwrap();
    world.service();
    world.service();
    let mut buf = std::vec![0u8; 1514];
    assert_eq!(network.receive_frame(&mut buf, || {}), Ok(None));
    world.deliver(&frame(MAC, PEER, 100, 1)).unwrap();
    assert_eq!(network.receive_frame(&mut buf, || {}), Ok(Some((100, 0))));
    network.send(&frame(PEER, MAC, 200, 2), 0, || {}).unwrap();
    world.service();
    assert_eq!(world.root.borrow().frames.len(), 1);
    let log = world.log();
    assert_eq!(log.len(), 5, "{log:?}");
    Child {
        _control: control,
        console,
        storage,
        network,
    }
}

#[test]
fn a_restored_bus_carries_on_where_the_saved_one_stopped() {
    let w = words();
    let memory = AtomicRingMemory::new(&w);
    let world = World::new(memory);
    let mut child = started(&world);
    // Left in the rings for the restored root: a console line and a
    // storage read, neither read by the root yet.
    child
        .console
        .write_line(b"pending line", || {}, || {}, PATIENCE)
        .unwrap();
    let tag = child
        .storage
        .submit(
            Request {
                lun: 0,
                op: Op::Read,
                lba: 10,
                sectors: 2,
                buffer_offset: 4096,
            },
            || {},
        )
        .unwrap();
    let (console_before, storage_before, network_before, posted) = {
        let root = world.root.borrow();
        (
            root.bus.console_stats(),
            root.bus.storage_stats(),
            root.bus.network_stats(),
            root.bus.network_posted(),
        )
    };
    assert_eq!(console_before.lines, 5);
    assert!(posted > 1, "buffers posted before the save: {posted}");

    let state = world.root.borrow().bus.save();
    assert_eq!(state.check(), Ok(()));
    let mut bytes = [0u8; MAX_ENCODED];
    let n = state.encode(&mut bytes).unwrap();
    assert_eq!(bytes[0], FORMAT_VERSION);
    let decoded = BusState::decode(&bytes[..n]).unwrap();
    assert_eq!(decoded, state);
    // The old partition goes away: its bus and its mappings with it.
    let Root { disk, frames, .. } = world.root.into_inner();
    assert_eq!(frames.len(), 1);

    // The new partition: the same memory, control rings mapped but not
    // initialised, a platform that has mapped nothing.
    let mut platform = Fake::new(memory);
    let (out, inb) = control_rings(memory);
    let bus = ChildBus::restore(&decoded, out, inb, &mut platform).unwrap();
    assert_eq!(platform.ports_made, 0, "restore makes no ports");
    assert_eq!(platform.signals, [0; 4], "restore signals nothing");
    let mut mapped = platform.mapped.clone();
    mapped.sort();
    assert_eq!(
        mapped,
        [
            (CONSOLE.gpa, CONSOLE.pages),
            (STORAGE.gpa, STORAGE.pages),
            (NETWORK.gpa, NETWORK.pages),
            (STORAGE_REGION.0, STORAGE_REGION.1),
            (NET_REGION.0, NET_REGION.1),
        ]
    );
    assert_eq!(bus.save(), state, "restored as saved");
    assert!(bus.control_open() && bus.console_open() && bus.storage_open());
    assert!(bus.network_open());
    assert_eq!(bus.network_posted(), posted);
    assert_eq!(bus.network_mtu(), Some(1500));
    assert_eq!(bus.console_stats(), console_before);
    assert_eq!(bus.storage_stats(), storage_before);
    assert_eq!(bus.network_stats(), network_before);
    let world = World::with(memory, bus, platform);
    world.root.borrow_mut().disk = disk;

    // The pending storage read is served.
    world.service();
    let event = child.storage.poll(|| {}).unwrap();
    let Some(StorageEvent::Completed { tag: t, completion }) = event else {
        panic!("no completion: {event:?}");
    };
    assert_eq!((t, completion.status), (tag, Status::Ok));
    let mut back = [0u8; 1024];
    child.storage.buffer_read(4096, &mut back).unwrap();
    let data: Vec<u8> = (0..1024).map(|i| (i * 7) as u8).collect();
    assert_eq!(&back[..], &data[..]);
    // The console goes on in sequence.
    assert_eq!(world.log(), ["line pending line"]);
    for i in 0..3 {
        let line = std::format!("after {i}");
        child
            .console
            .write_line(line.as_bytes(), || {}, || {}, PATIENCE)
            .unwrap();
    }
    world.service();
    assert_eq!(
        world.log(),
        ["line after 0", "line after 1", "line after 2"]
    );
    let console = world.root.borrow().bus.console_stats();
    assert_eq!(console.lines, 9);
    assert_eq!(console.out_of_sequence, 0);
    // A frame lands in a buffer posted before the save.
    let mut buf = std::vec![0u8; 1514];
    let sent = frame(MAC, PEER, 300, 3);
    world.deliver(&sent).unwrap();
    assert_eq!(world.root.borrow().bus.network_posted(), posted - 1);
    assert_eq!(
        child.network.receive_frame(&mut buf, || {}),
        Ok(Some((300, 0)))
    );
    assert_eq!(&buf[..300], &sent[..]);
    // And the child's sends still go out.
    child
        .network
        .send(&frame(PEER, MAC, 400, 4), 0, || {})
        .unwrap();
    world.service();
    assert_eq!(world.root.borrow().frames.len(), 1);
    while let Ok(Some(event)) = child.network.poll(|| {}) {
        if let vsc::network::NetworkEvent::SendComplete { status, .. } = event {
            assert_eq!(status, NetStatus::Ok);
        }
    }
    // The counters went on from the saved values.
    let root = world.root.borrow();
    let storage = root.bus.storage_stats();
    assert_eq!(storage.requests, storage_before.requests + 1);
    assert_eq!(storage.completions, storage_before.completions + 1);
    let network = root.bus.network_stats();
    assert_eq!(network.received, network_before.received + 1);
    assert_eq!(network.sends, network_before.sends + 1);
    assert!(world.root.borrow().log.is_empty());
    drop(root);
    // Shutting down unmaps exactly what restore mapped.
    let mut root = world.root.borrow_mut();
    let Root { bus, platform, .. } = &mut *root;
    bus.shut_down(platform);
    assert!(platform.mapped.is_empty());
}

#[test]
fn a_closed_control_channel_and_closed_devices_restore_closed() {
    let w = words();
    let memory = AtomicRingMemory::new(&w);
    let world = World::new(memory);
    // Nothing happened yet: a bus before the child's `Version`.
    let state = world.root.borrow().bus.save();
    assert_eq!(state.control.host, HostState::AwaitVersion);
    let mut platform = Fake::new(memory);
    let (out, inb) = control_rings(memory);
    let bus = ChildBus::restore(&state, out, inb, &mut platform).unwrap();
    assert!(bus.control_open() && !bus.console_open());
    assert!(platform.mapped.is_empty());
    // A closed control channel restores closed (its rings not even looked at).
    let mut state = state;
    state.control.link = None;
    memory.store_u32_release(WRITE_INDEX, 3);
    let bus = ChildBus::restore(&state, out, inb, &mut platform).unwrap();
    assert!(!bus.control_open());
}

/// The state of a started child's bus (everything open, granted,
/// initialised, buffers posted) and the memory it was saved over.
fn saved(memory: AtomicRingMemory<'_>) -> BusState {
    let world = World::new(memory);
    let _child = started(&world);
    let mut root = world.root.borrow_mut();
    // Storage polling, so that it is in the state.
    root.bus.set_storage_polling(true);
    root.bus.save()
}

/// Restores `state` over `memory` on a fresh platform set up by `setup`;
/// asserts that an error leaves nothing mapped.
fn restore_with(
    memory: AtomicRingMemory<'_>,
    state: &BusState,
    setup: impl FnOnce(&mut Fake<'_>),
) -> Result<(), RestoreError> {
    let mut platform = Fake::new(memory);
    setup(&mut platform);
    let (out, inb) = control_rings(memory);
    let result = ChildBus::restore(state, out, inb, &mut platform).map(|_| ());
    if result.is_err() {
        assert!(
            platform.mapped.is_empty(),
            "left mapped: {:?}",
            platform.mapped
        );
    }
    result
}

fn restore(memory: AtomicRingMemory<'_>, state: &BusState) -> Result<(), RestoreError> {
    restore_with(memory, state, |_| {})
}

#[test]
fn every_inconsistency_is_a_restore_error_and_nothing_stays_mapped() {
    use ChannelName::{Console, Control, Network, Storage};
    let w = words();
    let memory = AtomicRingMemory::new(&w);
    let good = saved(memory);
    assert_eq!(restore(memory, &good), Ok(()));
    let case = |change: &dyn Fn(&mut BusState)| {
        let mut state = good.clone();
        change(&mut state);
        restore(memory, &state)
    };
    fn storage(s: &mut BusState) -> &mut StorageChannelState {
        s.storage.channel.as_mut().unwrap()
    }
    fn network(s: &mut BusState) -> &mut NetworkChannelState {
        s.network.channel.as_mut().unwrap()
    }

    // The control channel's state against the channels.
    assert_eq!(
        case(&|s| s.control.host = HostState::AwaitRequest),
        Err(RestoreError::ControlState)
    );
    assert_eq!(
        case(&|s| s.control.channels[0] = ChannelState::Offered),
        Err(RestoreError::ChannelState(Console))
    );
    assert_eq!(
        case(&|s| s.storage.channel = None),
        Err(RestoreError::ChannelState(Storage))
    );
    assert_eq!(
        case(&|s| {
            s.network.channel = None;
            s.control.channels[2] = ChannelState::Offered;
            s.control.host = HostState::AwaitVersion;
            s.control.channels = [ChannelState::Offered; OFFERS];
            s.console.channel = None;
            s.storage.channel = None;
        }),
        Ok(())
    );
    // Ring page counts, alignment, the end of the address space.
    assert_eq!(
        case(&|s| s.console.channel.as_mut().unwrap().outbound_pages = 1),
        Err(RestoreError::RingPages(Console))
    );
    assert_eq!(
        case(&|s| storage(s).rings.pages = 3 + 65),
        Err(RestoreError::RingPages(Storage))
    );
    assert_eq!(
        case(&|s| network(s).rings.pages = 2),
        Err(RestoreError::RingPages(Network))
    );
    assert_eq!(
        case(&|s| storage(s).rings.gpa += 8),
        Err(RestoreError::Range(Storage))
    );
    assert_eq!(
        case(&|s| network(s).rings.gpa = !4095),
        Err(RestoreError::Range(Network))
    );
    assert_eq!(
        case(&|s| storage(s).region.as_mut().unwrap().gpa = u64::MAX - 4095),
        Err(RestoreError::Range(Storage))
    );
    // Region sizes.
    assert_eq!(
        case(&|s| storage(s).region.as_mut().unwrap().pages = 0),
        Err(RestoreError::RegionSize(Storage))
    );
    assert_eq!(
        case(&|s| storage(s).region.as_mut().unwrap().pages = 1025),
        Err(RestoreError::RegionSize(Storage))
    );
    assert_eq!(
        case(&|s| network(s).region.as_mut().unwrap().send_pages = 64),
        Err(RestoreError::RegionSize(Network))
    );
    // Overlaps: with another channel's pages, and with its own rings.
    assert_eq!(
        case(&|s| network(s).rings.gpa = STORAGE.gpa + 4096),
        Err(RestoreError::Overlap(Network))
    );
    assert_eq!(
        case(&|s| storage(s).region.as_mut().unwrap().gpa = STORAGE.gpa),
        Err(RestoreError::Overlap(Storage))
    );
    assert_eq!(
        case(&|s| network(s).region.as_mut().unwrap().gpa = CONSOLE.gpa),
        Err(RestoreError::Overlap(Network))
    );
    // Link flags.
    assert_eq!(
        case(&|s| s.control.link = Some(LinkFlags {
            masked: false,
            polling: true
        })),
        Err(RestoreError::LinkFlags(Control))
    );
    assert_eq!(
        case(&|s| s.storage.polling = false),
        Err(RestoreError::LinkFlags(Storage))
    );
    assert_eq!(
        case(&|s| s.network.polling = true),
        Err(RestoreError::LinkFlags(Network))
    );
    // Storage notices: beyond MAX_LUNS, twice, out of order.
    let notices = |luns: &[u8]| {
        let mut list = List::new();
        for &lun in luns {
            list.push(LunNotice { lun, added: None }).unwrap();
        }
        list
    };
    assert_eq!(case(&|s| storage(s).notices = notices(&[1, 2, 63])), Ok(()));
    assert_eq!(
        case(&|s| storage(s).notices = notices(&[64])),
        Err(RestoreError::Notice(64))
    );
    assert_eq!(
        case(&|s| storage(s).notices = notices(&[3, 3])),
        Err(RestoreError::Notice(3))
    );
    assert_eq!(
        case(&|s| storage(s).notices = notices(&[5, 4])),
        Err(RestoreError::Notice(4))
    );
    // Network: MTU, posted buffers, a pending link state.
    assert_eq!(
        case(&|s| network(s).mtu = Some(575)),
        Err(RestoreError::Mtu(575))
    );
    assert_eq!(
        case(&|s| network(s).mtu = Some(9001)),
        Err(RestoreError::Mtu(9001))
    );
    assert_eq!(
        case(&|s| network(s).mtu = None),
        Err(RestoreError::PostedBuffer(0))
    );
    assert_eq!(
        case(&|s| network(s).region = None),
        Err(RestoreError::PostedBuffer(0))
    );
    let posted = good.network.channel.unwrap().posted;
    assert!(posted.len() > 2);
    let with_posted = |n: usize, buffer: PostedBuffer| {
        move |s: &mut BusState| {
            let mut list = List::new();
            for (i, p) in posted.as_slice().iter().enumerate() {
                list.push(if i == n { buffer } else { *p }).unwrap();
            }
            network(s).posted = list;
        }
    };
    let receive_bytes = (NET_REGION.1 - NET_REGION.2) * 4096;
    let p = posted.as_slice()[2];
    assert_eq!(
        case(&with_posted(
            2,
            PostedBuffer {
                offset: receive_bytes - 1000,
                ..p
            }
        )),
        Err(RestoreError::PostedBuffer(2))
    );
    assert_eq!(
        case(&with_posted(
            2,
            PostedBuffer {
                offset: u32::MAX - 10,
                ..p
            }
        )),
        Err(RestoreError::PostedBuffer(2))
    );
    assert_eq!(
        case(&with_posted(1, PostedBuffer { len: 1513, ..p })),
        Err(RestoreError::PostedBuffer(1))
    );
    assert_eq!(
        case(&|s| {
            network(s).mtu = None;
            network(s).posted = List::new();
            network(s).link_pending = true;
        }),
        Err(RestoreError::LinkPending)
    );
    // Network protocol version and a pending `SendBatch`.
    let entry = ipc::vmbus::network::FrameEntry {
        offset: 0,
        len: 100,
        flags: 0,
    };
    let pending = |entries: usize, done: usize| {
        let mut p = crate::bus_state::NetworkPendingSend {
            tid: 9,
            entries: ipc::vmbus::network::Batch::new(),
            statuses: ipc::vmbus::network::Batch::new(),
        };
        for _ in 0..entries {
            p.entries.push(entry).unwrap();
        }
        for _ in 0..done {
            p.statuses.push(NetStatus::Ok).unwrap();
        }
        Some(p)
    };
    for version in [0, 3, u16::MAX] {
        assert_eq!(
            case(&|s| network(s).version = version),
            Err(RestoreError::Batch)
        );
    }
    assert_eq!(case(&|s| network(s).version = 2), Ok(()));
    for (version, entries, done) in [(2, 0, 0), (2, 3, 3), (1, 3, 1)] {
        assert_eq!(
            case(&|s| {
                network(s).version = version;
                network(s).pending_send = pending(entries, done);
            }),
            Err(RestoreError::Batch),
            "{version} {entries} {done}"
        );
    }
    assert_eq!(
        case(&|s| {
            network(s).version = 2;
            network(s).pending_send = pending(3, 1);
        }),
        Ok(())
    );

    // The platform refuses, or gives too little: what was mapped before
    // is unmapped (checked by `restore_with`).
    assert_eq!(
        restore_with(memory, &good, |p| p.refuse = Some(NET_REGION.0)),
        Err(RestoreError::Map(Network, OpenStatus::BadRange))
    );
    assert_eq!(
        restore_with(memory, &good, |p| p.refuse = Some(STORAGE.gpa)),
        Err(RestoreError::Map(Storage, OpenStatus::BadRange))
    );
    assert_eq!(
        restore_with(memory, &good, |p| p.short = Some(STORAGE_REGION.0)),
        Err(RestoreError::Map(Storage, OpenStatus::BadRange))
    );
    // Rings in the child's memory that cannot be attached.
    let (net_out, _) = rings_of(memory, NETWORK);
    let before = net_out.load_u32_acquire(WRITE_INDEX);
    net_out.store_u32_release(WRITE_INDEX, 12);
    assert_eq!(
        restore(memory, &good),
        Err(RestoreError::Ring(
            Network,
            RingError::WriteIndexOutOfRange(12)
        ))
    );
    net_out.store_u32_release(WRITE_INDEX, before);
    let (control_out, _) = control_rings(memory);
    let before = control_out.load_u32_acquire(WRITE_INDEX);
    control_out.store_u32_release(WRITE_INDEX, 1 << 20);
    assert_eq!(
        restore(memory, &good),
        Err(RestoreError::ControlRing(RingError::WriteIndexOutOfRange(
            1 << 20
        )))
    );
    control_out.store_u32_release(WRITE_INDEX, before);
    assert_eq!(restore(memory, &good), Ok(()));
    // Every error renders as one line.
    let e = RestoreError::Map(Network, OpenStatus::BadRange);
    assert!(!std::format!("{e}").contains('\n'));
}

#[test]
fn the_codec_refuses_what_it_did_not_write() {
    let w = words();
    let memory = AtomicRingMemory::new(&w);
    let state = saved(memory);
    let mut bytes = [0u8; MAX_ENCODED];
    let n = state.encode(&mut bytes).unwrap();
    assert_eq!(BusState::decode(&bytes[..n]).as_ref(), Ok(&state));
    assert_eq!(BusState::decode(&[]), Err(DecodeError::Empty));
    let mut other = bytes;
    // Version 1 (before batches) is another layout.
    other[0] = 1;
    assert_eq!(BusState::decode(&other[..n]), Err(DecodeError::Version(1)));
    // Version 2 (before the integration channel) too.
    other[0] = 2;
    assert_eq!(BusState::decode(&other[..n]), Err(DecodeError::Version(2)));
    other[0] = 4;
    assert_eq!(BusState::decode(&other[..n]), Err(DecodeError::Version(4)));
    assert_eq!(
        BusState::decode(&bytes[..n + 1]),
        Err(DecodeError::TrailingBytes)
    );
    for cut in 1..n {
        assert_eq!(
            BusState::decode(&bytes[..cut]),
            Err(DecodeError::Malformed),
            "cut at {cut}"
        );
    }
    assert_eq!(
        state.encode(&mut [0u8; 16]),
        Err(EncodeError::BufferTooSmall)
    );
    assert_eq!(state.encode(&mut []), Err(EncodeError::BufferTooSmall));
    // A list longer than its bound does not decode.
    let long = [PostedBuffer::default(); MAX_POSTED + 1];
    let mut buf = [0u8; 1024];
    let encoded = postcard::to_slice(&long[..], &mut buf).unwrap();
    assert!(postcard::from_bytes::<List<PostedBuffer, MAX_POSTED>>(encoded).is_err());
    let encoded = postcard::to_slice(&long[..MAX_POSTED], &mut buf).unwrap();
    let list = postcard::from_bytes::<List<PostedBuffer, MAX_POSTED>>(encoded).unwrap();
    assert_eq!(list.len(), MAX_POSTED);
}

#[test]
fn the_largest_state_fits_max_encoded() {
    let w = words();
    let memory = AtomicRingMemory::new(&w);
    let mut state = saved(memory);
    let flags = LinkFlags {
        masked: true,
        polling: true,
    };
    let rings = RingsState {
        gpa: u64::MAX,
        pages: u32::MAX,
        outbound_pages: u32::MAX,
        link: flags,
    };
    state.control.link = Some(flags);
    let mut notices = List::new();
    for lun in 0..MAX_LUNS as u8 {
        notices
            .push(LunNotice {
                lun,
                added: Some(u64::MAX),
            })
            .unwrap();
    }
    let mut posted = List::new();
    for _ in 0..MAX_POSTED {
        posted
            .push(PostedBuffer {
                tid: u64::MAX,
                offset: u32::MAX,
                len: u32::MAX,
            })
            .unwrap();
    }
    let storage_stats = StorageStats {
        by_status: [u64::MAX; ipc::vmbus::storage::STATUS_COUNT],
        requests: u64::MAX,
        completions: u64::MAX,
        grants: u64::MAX,
        notices: u64::MAX,
        signals_from_child: u64::MAX,
        signals_to_child: u64::MAX,
        batches: u64::MAX,
    };
    state.storage = StorageState {
        channel: Some(StorageChannelState {
            rings,
            region: Some(RegionState {
                gpa: u64::MAX,
                pages: u32::MAX,
            }),
            notices,
            stalled: Some(StorageStalled {
                tid: u64::MAX,
                message: ipc::vmbus::storage::HostMessage::Completion(
                    ipc::vmbus::storage::Completion {
                        status: Status::Ok,
                        detail: ipc::vmbus::storage::Detail::Inquiry(
                            ipc::vmbus::storage::Inquiry {
                                sectors: u64::MAX,
                                sector_bytes: u32::MAX,
                                max_transfer_sectors: u32::MAX,
                                read_only: true,
                            },
                        ),
                    },
                ),
            }),
        }),
        removed: u64::MAX,
        polling: true,
        stats: storage_stats,
    };
    let max = u64::MAX;
    let big_entry = ipc::vmbus::network::FrameEntry {
        offset: u32::MAX,
        len: u32::MAX,
        flags: u8::MAX,
    };
    fn full_batch<T: Copy + Default>(item: T) -> ipc::vmbus::network::Batch<T> {
        let mut b = ipc::vmbus::network::Batch::new();
        while b.push(item).is_ok() {}
        b
    }
    state.network = NetworkState {
        channel: Some(NetworkChannelState {
            rings,
            region: Some(NetworkRegionState {
                gpa: max,
                pages: u32::MAX,
                send_pages: u32::MAX,
            }),
            mtu: Some(u16::MAX),
            posted,
            // The largest reply: a full `ReceiveBatch`.
            stalled: Some(NetworkStalled {
                tid: max,
                message: ipc::vmbus::network::HostMessage::ReceiveBatch {
                    entries: full_batch(big_entry),
                },
            }),
            version: u16::MAX,
            pending_send: Some(crate::bus_state::NetworkPendingSend {
                tid: max,
                entries: full_batch(big_entry),
                statuses: full_batch(NetStatus::TooManyPosted),
            }),
            link_pending: true,
        }),
        config: Some(NetworkConfig {
            mac: Mac([0xff; 6]),
            mtu: u16::MAX,
        }),
        link_up: true,
        polling: true,
        deferred: true,
        stats: NetworkStats {
            sends: max,
            send_bytes: max,
            completions: max,
            by_status: [max; ipc::vmbus::network::STATUS_COUNT],
            received: max,
            receive_bytes: max,
            posted: max,
            no_buffer: max,
            bad_length: max,
            ring_full: max,
            not_ready: max,
            grants: max,
            inits: max,
            link_changes: max,
            signals_from_child: max,
            signals_to_child: max,
            batches: max,
            packets_from_child: max,
            packets_to_child: max,
        },
    };
    state.console.channel = Some(rings);
    state.console.stats = ConsoleStats {
        lines: max,
        out_of_sequence: max,
        signals_to_child: max,
    };
    let mut bytes = [0u8; MAX_ENCODED];
    let n = state.encode(&mut bytes).unwrap();
    assert!(n < MAX_ENCODED, "{n}");
    assert_eq!(BusState::decode(&bytes[..n]), Ok(state));
}

/// xorshift64*: deterministic test randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Decodes `bytes`; if they decode, restores them and runs the bus a
/// little (service, deliver, shut down): `None` if they did not decode,
/// else whether they restored. Never panics; the fake asserts no
/// overlapping mapping and no unmap of anything not mapped.
fn try_bytes(memory: AtomicRingMemory<'_>, bytes: &[u8]) -> Option<bool> {
    let state = BusState::decode(bytes).ok()?;
    let mut platform = Fake::new(memory);
    let (out, inb) = control_rings(memory);
    let Ok(mut bus) = ChildBus::restore(&state, out, inb, &mut platform) else {
        assert!(platform.mapped.is_empty());
        return Some(false);
    };
    let mut disk = Disk(std::vec![0; SECTORS as usize * 512]);
    let mut bounce = [0u8; 4096];
    let mut frames = Vec::new();
    let mut scratch = std::vec![0u8; ipc::vmbus::network::MAX_FRAME as usize];
    for _ in 0..2 {
        bus.service(&mut platform, &mut disk, &mut bounce, |_| {});
        bus.service_network(
            &mut platform,
            &mut Collect(&mut frames),
            &mut scratch,
            |_| {},
        );
        let _ = bus.network_deliver(&mut platform, &frame(MAC, PEER, 1514, 9), 0, |_| {});
        bus.network_flush(&mut platform, |_| {});
        bus.lun_added(&mut platform, 7, 100, |_| {});
    }
    bus.shut_down(&mut platform);
    assert!(platform.mapped.is_empty());
    Some(true)
}

#[test]
fn random_and_mutated_bytes_never_panic() {
    let w = words();
    let memory = AtomicRingMemory::new(&w);
    let good = saved(memory);
    let mut encoded = [0u8; MAX_ENCODED];
    let n = good.encode(&mut encoded).unwrap();
    let snapshot: Vec<u64> = w
        .iter()
        .map(|a| a.load(core::sync::atomic::Ordering::Relaxed))
        .collect();
    let reset = || {
        for (a, v) in w.iter().zip(&snapshot) {
            a.store(*v, core::sync::atomic::Ordering::Relaxed);
        }
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut decoded = 0;
    for _ in 0..3000 {
        let len = (rng.next() % 600) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if let Some(first) = bytes.first_mut() {
            *first = FORMAT_VERSION;
        }
        if try_bytes(memory, &bytes).is_some() {
            decoded += 1;
        }
        reset();
    }
    let (mut mutated, mut restored) = (0, 0);
    for _ in 0..3000 {
        let mut bytes = encoded[..n].to_vec();
        for _ in 0..1 + rng.next() % 4 {
            let at = 1 + (rng.next() as usize) % (n - 1);
            bytes[at] = rng.next() as u8;
        }
        match try_bytes(memory, &bytes) {
            Some(true) => (mutated, restored) = (mutated + 1, restored + 1),
            Some(false) => mutated += 1,
            None => {}
        }
        reset();
    }
    // Many mutations still decode, and many of those restore: restore
    // and the restored bus are exercised, not just the decoder.
    std::eprintln!("decoded: {decoded} random, {mutated} mutated ({restored} restored)");
    assert!(
        mutated > 300 && restored > 100,
        "{mutated} decoded, {restored} restored"
    );
}

#[test]
fn a_stalled_reply_and_pending_notices_go_out_after_a_restore() {
    use ipc::vmbus::ring::Recv;
    use ipc::vmbus::storage::{Completion, HostMessage};
    let w = words();
    let memory = AtomicRingMemory::new(&w);
    let mut state = saved(memory);
    let stalled = HostMessage::Completion(Completion::error(Status::IoError));
    {
        let c = state.storage.channel.as_mut().unwrap();
        c.stalled = Some(StorageStalled {
            tid: 77,
            message: stalled,
        });
        c.notices
            .push(LunNotice {
                lun: 5,
                added: Some(40),
            })
            .unwrap();
    }
    let mut platform = Fake::new(memory);
    let (out, inb) = control_rings(memory);
    let bus = ChildBus::restore(&state, out, inb, &mut platform).unwrap();
    assert_eq!(bus.save(), state);
    let before = bus.storage_stats();
    let world = World::with(memory, bus, platform);
    world.service();
    let (_, storage_in) = rings_of(memory, STORAGE);
    let mut rx = Consumer::new(storage_in).unwrap();
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    while let Ok(Recv::Packet(p)) = rx.try_recv(&mut buf) {
        let message = ipc::vmbus::packet::decode::<HostMessage>(&p).unwrap();
        got.push((p.header.transaction_id.get(), message));
    }
    assert_eq!(
        got,
        [
            (77, stalled),
            (
                0,
                HostMessage::LunAdded {
                    lun: 5,
                    sectors: 40
                }
            )
        ]
    );
    let after = world.root.borrow().bus.storage_stats();
    assert_eq!(after.completions, before.completions + 1);
    assert_eq!(after.notices, before.notices + 1);
    let saved_again = world.root.borrow().bus.save();
    let c = saved_again.storage.channel.unwrap();
    assert!(c.stalled.is_none() && c.notices.is_empty());
}
