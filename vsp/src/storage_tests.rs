//! Host tests of the storage controller: the root's bus (`vsp`) against the
//! child's client (`vsc::storage`) over one "child memory" of atomics,
//! with RAM disks behind it; hostile children are played by sending raw
//! packets or writing into that memory directly.

extern crate std;

use core::cell::RefCell;
use core::sync::atomic::AtomicU64;
use std::string::String;
use std::vec::Vec;

use ipc::vmbus::control::{CONTROL_RING_PAGES, ControlMessage, OpenStatus, STORAGE_CLASS};
use ipc::vmbus::memory::{AtomicRingMemory, RingMemory};
use ipc::vmbus::packet::{self, KIND_MESSAGE};
use ipc::vmbus::ring::{self, Consumer, Producer, Recv, WRITE_INDEX};
use ipc::vmbus::storage::{
    Completion, Detail, GrantStatus, GuestMessage, HostMessage, MAX_TRANSFER_SECTORS, Op, Request,
    Status,
};
use vsc::bus::{GuestBus, RingPages};
use vsc::storage::{StorageClient, StorageClientError, StorageEvent};

use super::*;
use crate::bus::{ChildBus, Event};

const PAGE: usize = 4096;
/// Child memory: control channel at pages 0..4, storage rings at 8..14
/// (3 pages each way), buffer region at 32..48; pages from 8 on are grantable.
const PAGES: usize = 64;
const RINGS: RingPages = RingPages {
    gpa: 8 * PAGE as u64,
    pages: 6,
    outbound_pages: 3,
};
const REGION_GPA: u64 = 32 * PAGE as u64;
const REGION_PAGES: u32 = 16;
const REGION_BYTES: usize = REGION_PAGES as usize * PAGE;
/// Small, so large requests go through it in several chunks.
const BOUNCE: usize = 16 * 1024;
const PATIENCE: u64 = 1000;

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
        if offer_id == Some(STORAGE_OFFER) {
            self.signals += 1;
        }
    }
}

/// RAM disks: LUN n is `disks[n]`; every call is logged.
#[derive(Clone, Default)]
struct RamDisks {
    disks: Vec<Option<Vec<u8>>>,
    read_only: u64,
    flushes: Vec<u32>,
    calls: usize,
}

impl RamDisks {
    fn new(luns: &[(u8, u64)]) -> Self {
        let mut d = RamDisks {
            disks: std::vec![None; 64],
            flushes: std::vec![0; 64],
            ..Default::default()
        };
        for &(lun, sectors) in luns {
            // Distinct content per LUN and sector.
            d.disks[usize::from(lun)] = Some(
                (0..sectors as usize * 512)
                    .map(|i| (i / 512 + 7 * usize::from(lun)) as u8 ^ (i as u8))
                    .collect(),
            );
        }
        d
    }

    fn disk(&mut self, lun: u8) -> Result<&mut Vec<u8>, BackendError> {
        self.calls += 1;
        self.disks
            .get_mut(usize::from(lun))
            .and_then(Option::as_mut)
            .ok_or(BackendError::NoSuchLun)
    }
}

impl StorageBackend for RamDisks {
    fn capacity(&mut self, lun: u8) -> Option<u64> {
        let disk = self.disks.get(usize::from(lun))?.as_ref()?;
        Some(disk.len() as u64 / 512)
    }
    fn read_only(&mut self, lun: u8) -> bool {
        self.read_only & (1 << lun) != 0
    }
    fn read(&mut self, lun: u8, lba: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        let disk = self.disk(lun)?;
        let at = lba as usize * 512;
        buf.copy_from_slice(&disk[at..at + buf.len()]);
        Ok(())
    }
    fn write(&mut self, lun: u8, lba: u64, buf: &[u8]) -> Result<(), BackendError> {
        let disk = self.disk(lun)?;
        let at = lba as usize * 512;
        disk[at..at + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self, lun: u8) -> Result<(), BackendError> {
        self.disk(lun)?;
        self.flushes[usize::from(lun)] += 1;
        Ok(())
    }
}

struct Root<'a> {
    bus: ChildBus<AtomicRingMemory<'a>>,
    platform: Fake<'a>,
    disks: RamDisks,
    bounce: Vec<u8>,
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
    fn new(memory: AtomicRingMemory<'a>, disks: RamDisks) -> Self {
        let (control, _) = memory.split_at(2 * CONTROL_RING_PAGES as usize * PAGE);
        let (out, inb) = control.split_at(CONTROL_RING_PAGES as usize * PAGE);
        ring::initialize(&out).unwrap();
        ring::initialize(&inb).unwrap();
        World {
            root: RefCell::new(Root {
                bus: ChildBus::new(out, inb).unwrap(),
                platform: Fake {
                    memory,
                    mapped: Vec::new(),
                    signals: 0,
                },
                disks,
                bounce: std::vec![0; BOUNCE],
                log: Vec::new(),
            }),
            memory,
        }
    }

    fn service(&self) -> usize {
        let mut root = self.root.borrow_mut();
        let Root {
            bus,
            platform,
            disks,
            bounce,
            log,
        } = &mut *root;
        bus.service(platform, disks, bounce, |e| log_event(log, e))
    }

    fn add_lun(&self, lun: u8, sectors: u64) {
        let mut root = self.root.borrow_mut();
        let Root {
            bus,
            platform,
            disks,
            log,
            ..
        } = &mut *root;
        disks.disks[usize::from(lun)] = Some(std::vec![0xa5; sectors as usize * 512]);
        bus.lun_added(platform, lun, sectors, |e| log_event(log, e));
    }

    fn remove_lun(&self, lun: u8) {
        let mut root = self.root.borrow_mut();
        let Root {
            bus,
            platform,
            disks,
            log,
            ..
        } = &mut *root;
        bus.lun_removed(platform, lun, |e| log_event(log, e));
        disks.disks[usize::from(lun)] = None;
    }

    fn disks(&self) -> RamDisks {
        self.root.borrow().disks.clone()
    }

    fn stats(&self) -> StorageStats {
        self.root.borrow().bus.storage_stats()
    }

    fn log(&self) -> Vec<String> {
        self.root.borrow().log.clone()
    }

    fn region(&self) -> AtomicRingMemory<'a> {
        let (_, rest) = self.memory.split_at(REGION_GPA as usize);
        rest.split_at(REGION_BYTES).0
    }

    fn storage_rings(&self) -> (AtomicRingMemory<'a>, AtomicRingMemory<'a>) {
        let (_, rest) = self.memory.split_at(RINGS.gpa as usize);
        let (rings, _) = rest.split_at(RINGS.pages as usize * PAGE);
        rings.split_at(RINGS.outbound_pages as usize * PAGE)
    }

    /// Connects the control channel and opens the storage channel on
    /// freshly initialised rings; returns the child's control bus.
    fn open(&self) -> GuestBus<AtomicRingMemory<'a>> {
        let (control, _) = self.memory.split_at(2 * CONTROL_RING_PAGES as usize * PAGE);
        let (out, inb) = control.split_at(CONTROL_RING_PAGES as usize * PAGE);
        let mut bus = GuestBus::new(Producer::new(out).unwrap(), Consumer::new(inb).unwrap());
        bus.connect(
            || {},
            || {
                self.service();
            },
            100,
        )
        .unwrap();
        let (out, inb) = self.storage_rings();
        ring::initialize(&out).unwrap();
        ring::initialize(&inb).unwrap();
        let opened = bus
            .open(
                STORAGE_CLASS,
                RINGS,
                || {},
                || {
                    self.service();
                },
                100,
            )
            .unwrap();
        assert_eq!(opened.offer.offer_id, STORAGE_OFFER);
        assert_eq!((opened.signal_port, opened.event_port), (101, 201));
        bus
    }

    /// The child's storage client, not yet granted.
    fn client(&self) -> StorageClient<AtomicRingMemory<'a>> {
        let (out, inb) = self.storage_rings();
        StorageClient::new(
            Producer::new(out).unwrap(),
            Consumer::new(inb).unwrap(),
            self.region(),
            REGION_GPA,
            REGION_PAGES,
        )
    }

    /// Opened and granted.
    fn granted_client(&self) -> StorageClient<AtomicRingMemory<'a>> {
        self.open();
        let mut client = self.client();
        client.grant(|| {}, || self.pump(), PATIENCE).unwrap();
        client
    }

    fn pump(&self) {
        self.service();
    }

    /// Raw access to the storage rings (child side), for hostile packets.
    fn raw(
        &self,
    ) -> (
        Producer<AtomicRingMemory<'a>>,
        Consumer<AtomicRingMemory<'a>>,
    ) {
        let (out, inb) = self.storage_rings();
        (Producer::new(out).unwrap(), Consumer::new(inb).unwrap())
    }
}

fn words() -> Vec<AtomicU64> {
    (0..PAGES * PAGE / 8).map(|_| AtomicU64::new(0)).collect()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed ^ (i >> 9) as u8)
        .collect()
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

fn request(lun: u8, op: Op, lba: u64, sectors: u32, buffer_offset: u32) -> Request {
    Request {
        lun,
        op,
        lba,
        sectors,
        buffer_offset,
    }
}

#[test]
fn write_read_flush_round_trip() {
    let w = words();
    let world = World::new(
        AtomicRingMemory::new(&w),
        RamDisks::new(&[(0, 2048), (1, 64)]),
    );
    let mut client = world.granted_client();
    let lun1_before = world.disks().disks[1].clone();
    let pump = || world.pump();
    // Small write at an odd LBA, read back.
    let data = pattern(3 * 512, 1);
    client.write(0, 5, &data, || {}, pump, PATIENCE).unwrap();
    let mut back = std::vec![0u8; 3 * 512];
    client.read(0, 5, &mut back, || {}, pump, PATIENCE).unwrap();
    assert_eq!(back, data);
    assert_eq!(
        &world.disks().disks[0].as_ref().unwrap()[5 * 512..8 * 512],
        &data[..]
    );
    // 300 KiB: more than MAX_TRANSFER, the region and the bounce buffer.
    let big = pattern(600 * 512, 2);
    client.write(0, 1000, &big, || {}, pump, PATIENCE).unwrap();
    let mut back = std::vec![0u8; big.len()];
    client
        .read(0, 1000, &mut back, || {}, pump, PATIENCE)
        .unwrap();
    assert!(back == big, "large read differs");
    let disk = world.disks().disks[0].clone().unwrap();
    assert!(disk[1000 * 512..1600 * 512] == big[..]);
    // The sectors around are untouched (initial content).
    let fresh = RamDisks::new(&[(0, 2048)]).disks[0].clone().unwrap();
    assert_eq!(disk[..5 * 512], fresh[..5 * 512]);
    assert_eq!(disk[8 * 512..1000 * 512], fresh[8 * 512..1000 * 512]);
    assert_eq!(disk[1600 * 512..], fresh[1600 * 512..]);
    client.flush(0, || {}, pump, PATIENCE).unwrap();
    assert_eq!(world.disks().flushes[0], 1);
    assert_eq!(world.disks().disks[1], lun1_before, "other LUN untouched");
    let stats = world.stats();
    // 2 small + 2 * ceil(600 sectors / 128 per 64 KiB region chunk) + flush.
    assert_eq!(stats.requests, 2 + 2 * 5 + 1);
    assert_eq!(stats.completions, stats.requests);
    assert_eq!(stats.completed(Status::Ok), stats.requests);
    assert_eq!(stats.errors(), 0);
    assert_eq!(world.log(), ["opened storage"]);
}

#[test]
fn many_outstanding_requests_complete_by_tag_with_one_signal_per_batch() {
    let w = words();
    let world = World::new(
        AtomicRingMemory::new(&w),
        RamDisks::new(&[(0, 256), (2, 256)]),
    );
    let mut client = world.granted_client();
    let signals_before = world.root.borrow().platform.signals;
    // 48 writes of one sector each, to distinct region slots and LBAs.
    let mut tags = Vec::new();
    let mut child_signals = 0;
    for i in 0..48u32 {
        client
            .buffer_write(u64::from(i) * 512, &pattern(512, i as u8))
            .unwrap();
        let tag = client
            .submit(request(2, Op::Write, u64::from(i) * 3, 1, i * 512), || {
                child_signals += 1
            })
            .unwrap();
        tags.push(tag);
    }
    assert_eq!(client.outstanding(), 48);
    assert_eq!(child_signals, 1, "one signal for the whole burst");
    // The root handles them all in one pass and signals once.
    assert_eq!(world.service(), 48);
    assert_eq!(world.root.borrow().platform.signals - signals_before, 1);
    let mut done = Vec::new();
    while let Some(e) = client.poll(|| {}).unwrap() {
        match e {
            StorageEvent::Completed { tag, completion } => {
                assert_eq!(
                    completion,
                    Completion {
                        status: Status::Ok,
                        detail: Detail::Transferred { sectors: 1 }
                    }
                );
                done.push(tag);
            }
            other => panic!("{other:?}"),
        }
    }
    done.sort_unstable();
    let mut expected = tags.clone();
    expected.sort_unstable();
    assert_eq!(done, expected);
    assert_eq!(client.outstanding(), 0);
    let disk = world.disks().disks[2].clone().unwrap();
    for i in 0..48usize {
        assert_eq!(
            disk[i * 3 * 512..(i * 3 + 1) * 512],
            pattern(512, i as u8)[..],
            "{i}"
        );
    }
    // Reads back by tag, out of order slots.
    let mut by_tag = std::collections::HashMap::new();
    for i in 0..40u32 {
        let slot = (39 - i) * 512;
        let tag = client
            .submit(request(2, Op::Read, u64::from(i) * 3, 1, slot), || {})
            .unwrap();
        by_tag.insert(tag, (i, slot));
    }
    world.service();
    let mut seen = 0;
    while let Some(StorageEvent::Completed { tag, completion }) = client.poll(|| {}).unwrap() {
        assert_eq!(completion.status, Status::Ok);
        let (i, slot) = by_tag.remove(&tag).unwrap();
        let mut got = [0u8; 512];
        client.buffer_read(u64::from(slot), &mut got).unwrap();
        assert_eq!(got[..], pattern(512, i as u8)[..]);
        seen += 1;
    }
    assert_eq!(seen, 40);
    assert!(by_tag.is_empty());
    assert_eq!(world.stats().batches, 3, "grant, writes, reads");
}

#[test]
fn capacity_inquiry_and_report_luns() {
    let w = words();
    let mut disks = RamDisks::new(&[(0, 100), (3, 7), (63, 1)]);
    disks.read_only = 1 << 3;
    let world = World::new(AtomicRingMemory::new(&w), disks);
    let mut client = world.granted_client();
    let pump = || world.pump();
    assert_eq!(client.capacity(0, || {}, pump, PATIENCE), Ok(100));
    assert_eq!(client.capacity(63, || {}, pump, PATIENCE), Ok(1));
    let inquiry = client.inquiry(3, || {}, pump, PATIENCE).unwrap();
    assert_eq!(
        (inquiry.sectors, inquiry.sector_bytes, inquiry.read_only),
        (7, 512, true)
    );
    assert_eq!(inquiry.max_transfer_sectors, MAX_TRANSFER_SECTORS);
    assert_eq!(
        client.report_luns(|| {}, pump, PATIENCE),
        Ok(1 | 1 << 3 | 1 << 63)
    );
    assert_eq!(
        client.capacity(1, || {}, pump, PATIENCE),
        Err(StorageClientError::Status(Status::NoSuchLun))
    );
    // Read-only LUN: reads work, writes are refused and change nothing.
    let before = world.disks().disks[3].clone();
    let mut sector = [0u8; 512];
    client
        .read(3, 6, &mut sector, || {}, pump, PATIENCE)
        .unwrap();
    assert_eq!(sector[..], before.as_ref().unwrap()[6 * 512..]);
    assert_eq!(
        client.write(3, 0, &[1; 512], || {}, pump, PATIENCE),
        Err(StorageClientError::Status(Status::ReadOnly))
    );
    assert_eq!(world.disks().disks[3], before);
}

#[test]
fn hot_add_then_use() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), RamDisks::new(&[(0, 16)]));
    let mut client = world.granted_client();
    let pump = || world.pump();
    assert_eq!(
        client.read(5, 0, &mut [0; 512], || {}, pump, PATIENCE),
        Err(StorageClientError::Status(Status::NoSuchLun))
    );
    world.add_lun(5, 32);
    assert_eq!(
        client.poll(|| {}),
        Ok(Some(StorageEvent::LunAdded {
            lun: 5,
            sectors: 32
        }))
    );
    assert_eq!(client.poll(|| {}), Ok(None));
    let data = pattern(2 * 512, 9);
    client.write(5, 30, &data, || {}, pump, PATIENCE).unwrap();
    let mut back = [0u8; 1024];
    client
        .read(5, 30, &mut back, || {}, pump, PATIENCE)
        .unwrap();
    assert_eq!(back[..], data[..]);
    assert_eq!(client.report_luns(|| {}, pump, PATIENCE), Ok(1 | 1 << 5));
    assert_eq!(world.stats().notices, 1);
}

#[test]
fn hot_remove_completes_queued_requests_with_removed() {
    let w = words();
    let world = World::new(
        AtomicRingMemory::new(&w),
        RamDisks::new(&[(0, 16), (1, 16)]),
    );
    let mut client = world.granted_client();
    let lun0 = world.disks().disks[0].clone();
    // Queued, not yet seen by the root: 4 on LUN 1, one on LUN 0, one on a
    // LUN that never existed.
    let mut removed_tags = Vec::new();
    for i in 0..4u32 {
        removed_tags.push(
            client
                .submit(request(1, Op::Write, u64::from(i), 1, i * 512), || {})
                .unwrap(),
        );
    }
    let ok_tag = client
        .submit(request(0, Op::Read, 2, 1, 8192), || {})
        .unwrap();
    let never = client.submit(request(9, Op::Read, 0, 1, 0), || {}).unwrap();
    world.remove_lun(1);
    world.service();
    let mut events = Vec::new();
    while let Some(e) = client.poll(|| {}).unwrap() {
        events.push(e);
    }
    assert_eq!(events.len(), 7);
    // The notice comes first (filed per LUN, delivered before completions).
    assert_eq!(events[0], StorageEvent::LunRemoved { lun: 1 });
    for e in &events[1..] {
        let StorageEvent::Completed { tag, completion } = e else {
            panic!("{e:?}");
        };
        let expected = if removed_tags.contains(tag) {
            Status::Removed
        } else if *tag == never {
            Status::NoSuchLun
        } else {
            assert_eq!(*tag, ok_tag);
            Status::Ok
        };
        assert_eq!(completion.status, expected, "{tag}");
    }
    assert_eq!(world.disks().disks[0], lun0);
    let pump = || world.pump();
    assert_eq!(client.report_luns(|| {}, pump, PATIENCE), Ok(1));
    // Added back: usable again.
    world.add_lun(1, 4);
    client
        .write(1, 3, &[7; 512], || {}, pump, PATIENCE)
        .unwrap();
    assert_eq!(
        client.poll(|| {}),
        Ok(Some(StorageEvent::LunAdded { lun: 1, sectors: 4 }))
    );
    assert_eq!(
        world.disks().disks[1].as_ref().unwrap()[3 * 512..],
        [7; 512]
    );
    assert_eq!(world.stats().completed(Status::Removed), 4);
}

#[test]
fn hostile_requests_get_errors_and_touch_nothing() {
    let w = words();
    let world = World::new(
        AtomicRingMemory::new(&w),
        RamDisks::new(&[(0, 64), (1, 64)]),
    );
    let mut client = world.granted_client();
    let region_fill = pattern(REGION_BYTES, 0x5a);
    client.buffer_write(0, &region_fill).unwrap();
    let disks_before = world.disks();
    let calls_before = disks_before.calls;
    let region_end = REGION_BYTES as u32;
    let cases = [
        (request(64, Op::Read, 0, 1, 0), Status::NoSuchLun),
        (request(200, Op::Write, 0, 1, 0), Status::NoSuchLun),
        (request(7, Op::Write, 0, 1, 0), Status::NoSuchLun),
        (request(0, Op::Read, 64, 1, 0), Status::OutOfRange),
        (request(0, Op::Write, 63, 2, 0), Status::OutOfRange),
        (request(1, Op::Write, u64::MAX, 2, 0), Status::OutOfRange),
        (
            request(0, Op::Read, 0, 1, region_end - 511),
            Status::BadBuffer,
        ),
        (request(0, Op::Write, 0, 1, u32::MAX), Status::BadBuffer),
        (
            request(0, Op::Read, 0, 64, region_end - 64 * 512 + 1),
            Status::BadBuffer,
        ),
        (
            request(0, Op::Write, 0, MAX_TRANSFER_SECTORS + 1, 0),
            Status::TooLarge,
        ),
        (request(0, Op::Read, 0, u32::MAX, 0), Status::TooLarge),
        (request(7, Op::Flush, 0, 0, 0), Status::NoSuchLun),
        (request(99, Op::Capacity, 0, 0, 0), Status::NoSuchLun),
    ];
    for (r, expected) in cases {
        assert_eq!(
            client.request(r, || {}, || world.pump(), PATIENCE),
            Err(StorageClientError::Status(expected)),
            "{r:?}"
        );
    }
    let after = world.disks();
    assert_eq!(after.disks, disks_before.disks, "no disk changed");
    assert_eq!(after.flushes, disks_before.flushes);
    assert_eq!(after.calls, calls_before, "the backend was never called");
    let mut region = std::vec![0u8; REGION_BYTES];
    client.buffer_read(0, &mut region).unwrap();
    assert!(region == region_fill, "the region is unchanged");
    let stats = world.stats();
    assert_eq!(stats.errors(), cases.len() as u64);
    assert_eq!(stats.completed(Status::BadBuffer), 3);
    assert!(
        world.root.borrow().bus.storage_open(),
        "errors keep the channel"
    );
}

#[test]
fn data_requests_without_a_grant_are_bad_buffer() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), RamDisks::new(&[(0, 8)]));
    world.open();
    let mut client = world.client();
    let pump = || world.pump();
    let before = world.disks();
    assert_eq!(
        client.write(0, 0, &[1; 512], || {}, pump, PATIENCE),
        Err(StorageClientError::Status(Status::BadBuffer))
    );
    assert_eq!(
        client.read(0, 0, &mut [0; 512], || {}, pump, PATIENCE),
        Err(StorageClientError::Status(Status::BadBuffer))
    );
    assert_eq!(world.disks().disks, before.disks);
    // Ops without data work without a region.
    assert_eq!(client.capacity(0, || {}, pump, PATIENCE), Ok(8));
    client.grant(|| {}, pump, PATIENCE).unwrap();
    client
        .write(0, 0, &[1; 512], || {}, pump, PATIENCE)
        .unwrap();
    assert_eq!(world.disks().disks[0].as_ref().unwrap()[..512], [1; 512]);
}

#[test]
fn grants_outside_the_grantable_range_are_refused() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), RamDisks::new(&[(0, 8)]));
    world.open();
    let (out, inb) = world.storage_rings();
    let pump = || world.pump();
    for (gpa, pages, expected) in [
        // The control channel's pages (not grantable).
        (0, 4, GrantStatus::BadRange),
        // The storage channel's own rings.
        (RINGS.gpa + PAGE as u64, 2, GrantStatus::BadRange),
        // Past the end of the child.
        ((PAGES as u64 - 2) * PAGE as u64, 4, GrantStatus::BadRange),
        (u64::MAX - 4095, 1, GrantStatus::BadRange),
        (REGION_GPA + 8, 1, GrantStatus::BadRange),
        (REGION_GPA, 0, GrantStatus::BadSize),
        (REGION_GPA, 100_000, GrantStatus::BadSize),
    ] {
        let mut client = StorageClient::new(
            Producer::new(out).unwrap(),
            Consumer::new(inb).unwrap(),
            world.region(),
            gpa,
            pages,
        );
        assert_eq!(
            client.grant(|| {}, pump, PATIENCE),
            Err(StorageClientError::Refused(expected)),
            "{gpa:#x} {pages}"
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
        Err(StorageClientError::Refused(GrantStatus::AlreadyGranted))
    );
    assert_eq!(world.stats().grants, 9);
}

#[test]
fn undecodable_payloads_get_malformed_with_their_transaction_id() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), RamDisks::new(&[(0, 8)]));
    world.open();
    let (mut tx, mut rx) = world.raw();
    // Not postcard, trailing bytes, an unknown packet kind, a root message.
    tx.send(KIND_MESSAGE, 0, 0xdead, &[0xff; 9]).unwrap();
    let mut scratch = [0u8; 64];
    let good = packet::encode(
        &GuestMessage::Request(request(0, Op::Capacity, 0, 0, 0)),
        &mut scratch,
    )
    .unwrap()
    .to_vec();
    let mut trailing = good.clone();
    trailing.push(0);
    tx.send(KIND_MESSAGE, 0, 0xbeef, &trailing).unwrap();
    tx.send(7, 0, 0xf00d, &good).unwrap();
    let root_message = packet::encode(&HostMessage::LunRemoved { lun: 1 }, &mut scratch)
        .unwrap()
        .to_vec();
    tx.send(KIND_MESSAGE, 0, 0xcafe, &root_message).unwrap();
    tx.send(KIND_MESSAGE, 0, 42, &good).unwrap();
    world.service();
    let malformed = HostMessage::Completion(Completion::error(Status::Malformed));
    let got = drain(&mut rx);
    assert_eq!(got[0], (0xdead, malformed));
    assert_eq!(got[1], (0xbeef, malformed));
    assert_eq!(got[2], (0xf00d, malformed));
    // A root message decodes as some child message or not at all; either
    // way it is answered, and the channel stays open.
    assert_eq!(got[3].0, 0xcafe);
    assert_eq!(
        got[4],
        (
            42,
            HostMessage::Completion(Completion {
                status: Status::Ok,
                detail: Detail::Capacity { sectors: 8 }
            })
        )
    );
    assert_eq!(got.len(), 5);
    assert!(world.root.borrow().bus.storage_open());
    assert!(world.stats().completed(Status::Malformed) >= 3);
}

#[test]
fn a_full_completion_ring_stalls_the_root_without_losing_answers() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), RamDisks::new(&[(0, 8)]));
    world.open();
    let (mut tx, mut rx) = world.raw();
    let mut scratch = [0u8; 64];
    let capacity = packet::encode(
        &GuestMessage::Request(request(0, Op::Capacity, 0, 0, 0)),
        &mut scratch,
    )
    .unwrap()
    .to_vec();
    // Far more requests than completions fit in the root-to-child ring;
    // the child does not read while it sends.
    let mut sent = 0u64;
    let mut fulls = 0;
    let mut got = Vec::new();
    while sent < 2000 {
        match tx.send(KIND_MESSAGE, 0, sent, &capacity).unwrap() {
            ring::Sent::Written { .. } => sent += 1,
            ring::Sent::Full => {
                // More passes than the answers fit: the root fills the
                // ring to the child, then stops reading requests.
                for _ in 0..8 {
                    world.service();
                }
                fulls += 1;
                // Only now and then the child reads its answers.
                if fulls % 3 == 0 {
                    got.extend(drain(&mut rx));
                }
            }
        }
    }
    for _ in 0..100 {
        world.service();
        got.extend(drain(&mut rx));
    }
    assert_eq!(got.len(), 2000);
    for (i, (tid, m)) in got.iter().enumerate() {
        assert_eq!(*tid, i as u64);
        assert_eq!(
            *m,
            HostMessage::Completion(Completion {
                status: Status::Ok,
                detail: Detail::Capacity { sectors: 8 }
            })
        );
    }
    let stats = world.stats();
    assert_eq!((stats.requests, stats.completions), (2000, 2000));
    assert!(fulls > 5, "{fulls}");
}

#[test]
fn a_corrupted_storage_ring_closes_only_storage_and_unmaps_it() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), RamDisks::new(&[(0, 8)]));
    let mut client = world.granted_client();
    assert_eq!(
        world.root.borrow().platform.mapped,
        [(RINGS.gpa, RINGS.pages), (REGION_GPA, REGION_PAGES)]
    );
    client
        .capacity(0, || {}, || world.pump(), PATIENCE)
        .unwrap();
    let (out, _) = world.storage_rings();
    out.store_u32_release(WRITE_INDEX, 0x7fff_fff8);
    world.service();
    assert_eq!(
        world.log().last().unwrap(),
        "closed storage: ring: write index 0x7ffffff8 out of range"
    );
    let root = world.root.borrow();
    assert!(!root.bus.storage_open());
    assert!(root.bus.control_open());
    assert!(root.platform.mapped.is_empty(), "rings and region unmapped");
    drop(root);
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
    assert_eq!(last, Some(ControlMessage::Rescind { offer_id: 1 }));
    // Hot-plug calls on a closed channel are harmless.
    world.add_lun(2, 4);
    world.remove_lun(2);
    assert_eq!(world.service(), 0);
}

#[test]
fn closing_the_storage_channel_unmaps_rings_and_region() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), RamDisks::new(&[(0, 8)]));
    let _client = world.granted_client();
    let mut bus = {
        let (control, _) = world
            .memory
            .split_at(2 * CONTROL_RING_PAGES as usize * PAGE);
        let (out, inb) = control.split_at(CONTROL_RING_PAGES as usize * PAGE);
        GuestBus::new(Producer::new(out).unwrap(), Consumer::new(inb).unwrap())
    };
    bus.send_raw(&ControlMessage::Close { offer_id: 1 }, || {}, || {})
        .unwrap();
    world.service();
    let root = world.root.borrow();
    assert!(!root.bus.storage_open());
    assert!(root.platform.mapped.is_empty());
}

#[test]
fn a_polling_root_is_never_signalled_and_still_serves_everything() {
    let w = words();
    let world = World::new(AtomicRingMemory::new(&w), RamDisks::new(&[(0, 256)]));
    let mut client = world.granted_client();
    world.root.borrow_mut().bus.set_storage_polling(true);
    let mut child_signals = 0;
    for round in 0..5u32 {
        // A burst into the empty ring: a root that is not polling would be
        // signalled once per burst.
        for i in 0..4u32 {
            client
                .submit(
                    request(0, Op::Read, u64::from(round * 4 + i), 1, i * 512),
                    || child_signals += 1,
                )
                .unwrap();
        }
        assert_eq!(world.service(), 4);
        let mut completed = 0;
        while let Some(e) = client.poll(|| {}).unwrap() {
            assert!(
                matches!(e, StorageEvent::Completed { completion, .. } if completion.status == Status::Ok)
            );
            completed += 1;
        }
        assert_eq!(completed, 4);
    }
    assert_eq!(child_signals, 0, "the child signalled a polling root");
    // Back to signals: the next burst into the empty ring signals once.
    world.root.borrow_mut().bus.set_storage_polling(false);
    assert_eq!(world.service(), 0);
    for i in 0..4u32 {
        client
            .submit(request(0, Op::Read, u64::from(i), 1, i * 512), || {
                child_signals += 1
            })
            .unwrap();
    }
    assert_eq!(child_signals, 1);
    assert_eq!(world.service(), 4);
}
