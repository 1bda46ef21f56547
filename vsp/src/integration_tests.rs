//! Host tests of the integration services: the root's provider
//! (`ChildBus::integration_poll`, `request_shutdown`) against the child's
//! client (`vsc::integration`), both over one "child memory" of atomics,
//! on a clock the test moves; hostile children write the ring directly.

extern crate std;

use core::sync::atomic::AtomicU64;
use std::string::String;
use std::vec::Vec;

use ipc::vmbus::control::{CONTROL_RING_PAGES, INTEGRATION_CLASS, OpenStatus};
use ipc::vmbus::integration::{IntegrationMessage, ShutdownReason};
use ipc::vmbus::memory::AtomicRingMemory;
use ipc::vmbus::ring::{self, Consumer, Producer};
use vsc::bus::{GuestBus, RingPages};
use vsc::integration::{IntegrationClient, IntegrationClientError, ShutdownAnswer};

use crate::bus::*;
use crate::bus_state::BusState;

const PAGE: usize = 4096;
const PAGES: usize = 16;
/// The integration rings: pages 8..12 (2 out, 2 in).
const RINGS: RingPages = RingPages {
    gpa: 8 * PAGE as u64,
    pages: 4,
    outbound_pages: 2,
};
const SECOND: u64 = 1_000_000_000;

struct Fake<'a> {
    memory: AtomicRingMemory<'a>,
    mapped: Vec<(u64, u32)>,
    signals: u64,
}

impl<'a> Platform for Fake<'a> {
    type Memory = AtomicRingMemory<'a>;

    fn map(
        &mut self,
        gpa: u64,
        pages: u32,
        outbound_pages: u32,
    ) -> Result<(Self::Memory, Self::Memory), OpenStatus> {
        let (start, len) = (gpa as usize, pages as usize * PAGE);
        if start < 8 * PAGE || start + len > PAGES * PAGE {
            return Err(OpenStatus::BadRange);
        }
        self.mapped.push((gpa, pages));
        let (_, rest) = self.memory.split_at(start);
        Ok(rest
            .split_at(len)
            .0
            .split_at(outbound_pages as usize * PAGE))
    }

    fn unmap(&mut self, gpa: u64, pages: u32) {
        self.mapped.retain(|m| *m != (gpa, pages));
    }

    fn map_buffer(&mut self, _gpa: u64, _pages: u32) -> Result<Self::Memory, OpenStatus> {
        Err(OpenStatus::BadRange)
    }

    fn ports(&mut self, offer_id: u32) -> Result<(u64, u64), OpenStatus> {
        Ok((100 + u64::from(offer_id), 200 + u64::from(offer_id)))
    }

    fn signal(&mut self, offer_id: Option<u32>) {
        if offer_id == Some(INTEGRATION_OFFER) {
            self.signals += 1;
        }
    }
}

type Memory<'a> = AtomicRingMemory<'a>;

struct Root<'a> {
    bus: ChildBus<Memory<'a>>,
    platform: Fake<'a>,
    log: Vec<String>,
}

fn record(log: &mut Vec<String>) -> impl FnMut(Event<'_>) + '_ {
    |e| {
        log.push(match e {
            Event::Closed(c, why) => std::format!("closed {c}: {why}"),
            Event::Integration(e) => std::format!("{e:?}"),
            other => std::format!("{other:?}"),
        })
    }
}

impl<'a> Root<'a> {
    fn service(&mut self) {
        let Root { bus, platform, log } = self;
        bus.service(platform, &mut crate::storage::NoLuns, &mut [], record(log));
    }

    fn poll(&mut self, now: u64) -> usize {
        let Root { bus, platform, log } = self;
        bus.integration_poll(platform, now, record(log))
    }

    fn stop(&mut self, ms: u32, now: u64) -> Result<(), ShutdownError> {
        let Root { bus, platform, log } = self;
        bus.request_shutdown(platform, ShutdownReason::Stop, ms, now, record(log))
    }

    fn take_log(&mut self) -> Vec<String> {
        core::mem::take(&mut self.log)
    }
}

fn words() -> Vec<AtomicU64> {
    (0..PAGES * PAGE / 8).map(|_| AtomicU64::new(0)).collect()
}

fn control(memory: Memory<'_>) -> (Memory<'_>, Memory<'_>) {
    let (control, _) = memory.split_at(2 * CONTROL_RING_PAGES as usize * PAGE);
    control.split_at(CONTROL_RING_PAGES as usize * PAGE)
}

fn rings(memory: Memory<'_>) -> (Memory<'_>, Memory<'_>) {
    let (_, rest) = memory.split_at(RINGS.gpa as usize);
    rest.split_at(RINGS.pages as usize * PAGE)
        .0
        .split_at(RINGS.outbound_pages as usize * PAGE)
}

/// A root and a child with the integration channel open.
fn open(memory: Memory<'_>) -> (Root<'_>, IntegrationClient<Memory<'_>>) {
    let (out, inb) = control(memory);
    ring::initialize(&out).unwrap();
    ring::initialize(&inb).unwrap();
    let root = core::cell::RefCell::new(Root {
        bus: ChildBus::new(out, inb).unwrap(),
        platform: Fake {
            memory,
            mapped: Vec::new(),
            signals: 0,
        },
        log: Vec::new(),
    });
    let mut guest = GuestBus::new(Producer::new(out).unwrap(), Consumer::new(inb).unwrap());
    guest
        .connect(|| {}, || root.borrow_mut().service(), 100)
        .unwrap();
    let (tx, rx) = rings(memory);
    ring::initialize(&tx).unwrap();
    ring::initialize(&rx).unwrap();
    let opened = guest
        .open(
            INTEGRATION_CLASS,
            RINGS,
            || {},
            || root.borrow_mut().service(),
            100,
        )
        .unwrap();
    assert_eq!(opened.offer.offer_id, INTEGRATION_OFFER);
    let mut root = root.into_inner();
    assert!(root.bus.integration_open());
    assert_eq!(root.take_log(), ["Opened(Integration)"]);
    let client = IntegrationClient::new(Producer::new(tx).unwrap(), Consumer::new(rx).unwrap());
    (root, client)
}

fn answer(client: &mut IntegrationClient<Memory<'_>>) -> usize {
    client
        .poll(7, |_, _| ShutdownAnswer::Accept, || {})
        .unwrap()
}

#[test]
fn heartbeats_mark_a_child_alive_then_lost_then_back() {
    let w = words();
    let (mut root, mut child) = open(AtomicRingMemory::new(&w));
    assert_eq!(root.bus.heartbeat(), Heartbeat::NoContact);
    // Due at once, then once per period.
    root.poll(0);
    root.poll(SECOND / 2);
    assert_eq!(root.bus.integration_stats().heartbeats, 1);
    assert_eq!(root.platform.signals, 1, "the child's ring was empty");
    assert_eq!(answer(&mut child), 1);
    root.poll(SECOND / 2);
    assert_eq!(root.bus.heartbeat(), Heartbeat::Alive { uptime_ms: 7 });
    let mut now = SECOND;
    for _ in 0..10 {
        root.poll(now);
        answer(&mut child);
        now += SECOND;
    }
    root.poll(now);
    assert_eq!(root.bus.heartbeat(), Heartbeat::Alive { uptime_ms: 7 });
    assert_eq!(root.bus.integration_stats().replies, 11);
    // Silence: a miss per period, lost at MISSED_LIMIT, reported once.
    for missed in 1..=MISSED_LIMIT + 2 {
        now += SECOND;
        root.poll(now);
        let expected = if missed < MISSED_LIMIT {
            Heartbeat::Missed(missed)
        } else {
            Heartbeat::Unresponsive(missed)
        };
        assert_eq!(root.bus.heartbeat(), expected);
    }
    assert_eq!(
        root.take_log(),
        [std::format!("HeartbeatLost {{ missed: {MISSED_LIMIT} }}")]
    );
    // It answers every heartbeat queued meanwhile: back, and alive.
    assert_eq!(answer(&mut child) as u32, MISSED_LIMIT + 3);
    root.poll(now);
    assert_eq!(root.bus.heartbeat(), Heartbeat::Alive { uptime_ms: 7 });
    assert_eq!(root.take_log(), ["HeartbeatBack"]);
    assert!(root.bus.integration_open());
}

#[test]
fn a_graceful_shutdown_goes_requested_acknowledged_done() {
    let w = words();
    let (mut root, mut child) = open(AtomicRingMemory::new(&w));
    assert_eq!(root.bus.shutdown_state(), ShutdownState::Idle);
    assert_eq!(root.stop(0, 0), Err(ShutdownError::BadDeadline));
    assert_eq!(root.stop(600_001, 0), Err(ShutdownError::BadDeadline));
    root.stop(3000, 0).unwrap();
    assert_eq!(root.bus.shutdown_state(), ShutdownState::Requested);
    assert_eq!(root.stop(3000, 0), Err(ShutdownError::AlreadyRequested));
    let mut asked = None;
    child
        .poll(
            0,
            |reason, ms| {
                asked = Some((reason, ms));
                ShutdownAnswer::Accept
            },
            || {},
        )
        .unwrap();
    assert_eq!(asked, Some((ShutdownReason::Stop, 3000)));
    root.poll(SECOND);
    assert_eq!(root.bus.shutdown_state(), ShutdownState::Acknowledged);
    child.done(|| {}).unwrap();
    root.poll(2 * SECOND);
    assert_eq!(root.bus.shutdown_state(), ShutdownState::Done);
    // Done stays done, past the limit too.
    root.poll(10 * SECOND);
    assert_eq!(root.bus.shutdown_state(), ShutdownState::Done);
    assert_eq!(
        root.take_log(),
        ["Shutdown(Acknowledged)", "Shutdown(Done)"]
    );
}

#[test]
fn an_ignored_request_times_out_and_a_refusal_is_reported() {
    let w = words();
    let memory = AtomicRingMemory::new(&w);
    let (mut root, mut child) = open(memory);
    root.stop(2000, 5 * SECOND).unwrap();
    child.poll(0, |_, _| ShutdownAnswer::Ignore, || {}).unwrap();
    root.poll(6 * SECOND);
    assert_eq!(root.bus.shutdown_state(), ShutdownState::Requested);
    root.poll(7 * SECOND);
    assert_eq!(root.bus.shutdown_state(), ShutdownState::TimedOut);
    // A late answer changes nothing and closes nothing (written from
    // here on by hand: the client's own write index is left behind).
    hostile_send(memory, &IntegrationMessage::ShutdownAck { accepted: true });
    hostile_send(memory, &IntegrationMessage::ShutdownDone);
    root.poll(8 * SECOND);
    assert_eq!(root.bus.shutdown_state(), ShutdownState::TimedOut);
    assert!(root.bus.integration_open());
    assert_eq!(root.take_log(), ["Shutdown(TimedOut)"]);
    // Asked again: refused.
    root.stop(1000, 9 * SECOND).unwrap();
    hostile_send(memory, &IntegrationMessage::ShutdownAck { accepted: false });
    root.poll(9 * SECOND);
    assert_eq!(root.bus.shutdown_state(), ShutdownState::Refused);
    assert_eq!(root.take_log(), ["Shutdown(Refused)"]);
}

/// The child's ring, written as a hostile child would.
fn hostile_send(memory: Memory<'_>, message: &IntegrationMessage) {
    let (tx, _) = rings(memory);
    let mut producer = Producer::new(tx).unwrap();
    let mut scratch = [0u8; 64];
    producer.send_message(0, 0, message, &mut scratch).unwrap();
}

#[test]
fn hostile_messages_close_the_channel_with_a_reason() {
    let w = words();
    let memory = AtomicRingMemory::new(&w);
    let cases: [(&[IntegrationMessage], &str); 5] = [
        (
            &[IntegrationMessage::HeartbeatReply {
                sequence: 99,
                uptime_ms: 0,
            }],
            "closed integration: integration: reply to unsent heartbeat 99",
        ),
        (
            &[IntegrationMessage::ShutdownDone],
            "closed integration: integration: shutdown message out of order",
        ),
        (
            &[IntegrationMessage::ShutdownAck { accepted: true }],
            "closed integration: integration: shutdown message out of order",
        ),
        (
            &[IntegrationMessage::Heartbeat { sequence: 1 }],
            "closed integration: integration: message of the other side",
        ),
        (
            &[IntegrationMessage::ShutdownRequest {
                reason: ShutdownReason::Stop,
                deadline_ms: 0,
            }],
            "closed integration: integration: shutdown time limit out of range",
        ),
    ];
    for (messages, expected) in cases {
        for word in &w {
            word.store(0, core::sync::atomic::Ordering::Relaxed);
        }
        let (mut root, _child) = open(memory);
        root.poll(0);
        for m in messages {
            hostile_send(memory, m);
        }
        root.poll(1);
        assert_eq!(root.take_log(), [expected], "{messages:?}");
        assert!(!root.bus.integration_open());
        assert_eq!(root.bus.heartbeat(), Heartbeat::NoContact);
        assert_eq!(root.stop(1000, 2), Err(ShutdownError::NotOpen));
        assert!(root.platform.mapped.is_empty(), "rings unmapped");
        // The control channel survives; the child may open again.
        assert!(root.bus.control_open());
    }
    // Bytes that are not postcard.
    for word in &w {
        word.store(0, core::sync::atomic::Ordering::Relaxed);
    }
    let (mut root, _child) = open(memory);
    let (tx, _) = rings(memory);
    Producer::new(tx)
        .unwrap()
        .send(ipc::vmbus::packet::KIND_MESSAGE, 0, 0, &[0xff, 0xff, 0xff])
        .unwrap();
    root.poll(0);
    assert!(!root.bus.integration_open());
    assert!(root.take_log()[0].starts_with("closed integration: packet:"));
}

#[test]
fn a_child_that_never_answers_is_no_contact_not_lost() {
    let w = words();
    let (mut root, _child) = open(AtomicRingMemory::new(&w));
    for s in 0..20 {
        root.poll(s * SECOND);
    }
    assert_eq!(root.bus.heartbeat(), Heartbeat::NoContact);
    assert!(root.take_log().is_empty());
}

#[test]
fn heartbeats_go_on_after_a_save_and_restore() {
    let w = words();
    let memory = AtomicRingMemory::new(&w);
    let (mut root, mut child) = open(memory);
    for s in 0..3 {
        root.poll(s * SECOND);
        answer(&mut child);
    }
    root.poll(3 * SECOND);
    let state = root.bus.save();
    assert_eq!(state.integration.sequence, 4);
    assert_eq!(state.integration.answered, 3);
    let mut bytes = [0u8; crate::bus_state::MAX_ENCODED];
    let n = state.encode(&mut bytes).unwrap();
    let decoded = BusState::decode(&bytes[..n]).unwrap();
    assert_eq!(decoded, state);
    let mut platform = Fake {
        memory,
        mapped: Vec::new(),
        signals: 0,
    };
    let (out, inb) = control(memory);
    let mut bus = ChildBus::restore(&decoded, out, inb, &mut platform).unwrap();
    assert_eq!(platform.mapped, [(RINGS.gpa, RINGS.pages)]);
    assert_eq!(bus.save(), state);
    assert_eq!(bus.heartbeat(), Heartbeat::Alive { uptime_ms: 7 });
    // The heartbeat sent before the save is answered after it.
    answer(&mut child);
    let mut log = Vec::new();
    bus.integration_poll(&mut platform, 100 * SECOND, record(&mut log));
    assert_eq!(bus.save().integration.answered, 4);
    assert_eq!(bus.save().integration.sequence, 5);
    assert_eq!(bus.heartbeat(), Heartbeat::Alive { uptime_ms: 7 });
    assert!(log.is_empty(), "{log:?}");
    // A saved reply to a heartbeat never sent is refused before mapping.
    let mut bad = state;
    bad.integration.answered = bad.integration.sequence + 1;
    let mut platform = Fake {
        memory,
        mapped: Vec::new(),
        signals: 0,
    };
    assert_eq!(
        ChildBus::restore(&bad, out, inb, &mut platform).err(),
        Some(RestoreError::Heartbeat)
    );
    assert!(platform.mapped.is_empty());
    let _ = IntegrationClientError::Full;
}
