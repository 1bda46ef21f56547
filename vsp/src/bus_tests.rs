//! Host tests of the root's side of a child's bus against the child's
//! side (`vsc`), both over one "child memory" of atomics; hostile children
//! are played by writing into that memory directly.

extern crate std;

use core::cell::RefCell;
use core::sync::atomic::AtomicU64;
use std::string::{String, ToString};
use std::vec::Vec;

use ipc::vmbus::control::{CONTROL_RING_PAGES, ControlMessage};
use ipc::vmbus::memory::AtomicRingMemory;
use ipc::vmbus::ring::{self, WRITE_INDEX};
use vsc::bus::{GuestBus, RingPages};
use vsc::console::ConsoleClient;

use super::*;

const PAGE: usize = 4096;
/// Child memory: control channel at page 0..4, console at 8..20.
const PAGES: usize = 32;

struct Fake<'a> {
    memory: AtomicRingMemory<'a>,
    mapped: Vec<(u64, u32)>,
    signals: [u64; 2],
}

impl<'a> Platform for Fake<'a> {
    type Memory = AtomicRingMemory<'a>;

    fn map(
        &mut self,
        gpa: u64,
        pages: u32,
        outbound_pages: u32,
    ) -> Result<(Self::Memory, Self::Memory), OpenStatus> {
        let start = gpa as usize;
        let len = pages as usize * PAGE;
        if !start.is_multiple_of(PAGE) || start < 8 * PAGE || start + len > PAGES * PAGE {
            return Err(OpenStatus::BadRange);
        }
        self.mapped.push((gpa, pages));
        let (_, rest) = self.memory.split_at(start);
        let (rings, _) = rest.split_at(len);
        Ok(rings.split_at(outbound_pages as usize * PAGE))
    }

    fn unmap(&mut self, gpa: u64, pages: u32) {
        self.mapped.retain(|m| *m != (gpa, pages));
    }

    fn map_buffer(&mut self, gpa: u64, pages: u32) -> Result<Self::Memory, OpenStatus> {
        let (memory, _) = self.map(gpa, pages, pages)?;
        Ok(memory)
    }

    fn ports(&mut self, offer_id: u32) -> Result<(u64, u64), OpenStatus> {
        Ok((100 + u64::from(offer_id), 200 + u64::from(offer_id)))
    }

    fn signal(&mut self, offer_id: Option<u32>) {
        self.signals[offer_id.map_or(0, |_| 1)] += 1;
    }
}

fn control_rings(memory: AtomicRingMemory<'_>) -> (AtomicRingMemory<'_>, AtomicRingMemory<'_>) {
    let (control, _) = memory.split_at(2 * CONTROL_RING_PAGES as usize * PAGE);
    let (out, inb) = control.split_at(CONTROL_RING_PAGES as usize * PAGE);
    ring::initialize(&out).unwrap();
    ring::initialize(&inb).unwrap();
    (out, inb)
}

fn console_rings(memory: AtomicRingMemory<'_>) -> (AtomicRingMemory<'_>, AtomicRingMemory<'_>) {
    let (_, rest) = memory.split_at(8 * PAGE);
    let (rings, _) = rest.split_at(12 * PAGE);
    let (out, inb) = rings.split_at(10 * PAGE);
    ring::initialize(&out).unwrap();
    ring::initialize(&inb).unwrap();
    (out, inb)
}

const CONSOLE_PAGES: RingPages = RingPages {
    gpa: 8 * PAGE as u64,
    pages: 12,
    outbound_pages: 10,
};

struct World<'a> {
    root: RefCell<(ChildBus<AtomicRingMemory<'a>>, Fake<'a>, Vec<String>)>,
}

impl<'a> World<'a> {
    fn new(memory: AtomicRingMemory<'a>) -> Self {
        let (out, inb) = control_rings(memory);
        World {
            root: RefCell::new((
                ChildBus::new(out, inb).unwrap(),
                Fake {
                    memory,
                    mapped: Vec::new(),
                    signals: [0; 2],
                },
                Vec::new(),
            )),
        }
    }

    /// The root's loop body: service the bus once, logging what happened.
    fn service(&self) -> usize {
        let mut root = self.root.borrow_mut();
        let (bus, platform, log) = &mut *root;
        bus.service(platform, &mut crate::storage::NoLuns, &mut [], |e| {
            log.push(match e {
                Event::Line(text) => std::format!("line {text}"),
                Event::Opened(c) => std::format!("opened {c}"),
                Event::Closed(c, why) => std::format!("closed {c}: {why}"),
                Event::Integration(e) => std::format!("integration {e:?}"),
            })
        })
    }

    fn log(&self) -> Vec<String> {
        self.root.borrow().2.clone()
    }
}

fn guest(memory: AtomicRingMemory<'_>) -> GuestBus<AtomicRingMemory<'_>> {
    let (control, _) = memory.split_at(2 * CONTROL_RING_PAGES as usize * PAGE);
    let (out, inb) = control.split_at(CONTROL_RING_PAGES as usize * PAGE);
    GuestBus::new(
        ring::Producer::new(out).unwrap(),
        ring::Consumer::new(inb).unwrap(),
    )
}

fn memory_words() -> Vec<AtomicU64> {
    (0..PAGES * PAGE / 8).map(|_| AtomicU64::new(0)).collect()
}

/// Connects and opens the console; returns the child's console client.
fn open_console<'a>(
    world: &World<'a>,
    memory: AtomicRingMemory<'a>,
) -> ConsoleClient<AtomicRingMemory<'a>> {
    let mut bus = guest(memory);
    bus.connect(
        || {},
        || {
            world.service();
        },
        100,
    )
    .unwrap();
    let (out, inb) = console_rings(memory);
    let opened = bus
        .open(
            CONSOLE_CLASS,
            CONSOLE_PAGES,
            || {},
            || {
                world.service();
            },
            100,
        )
        .unwrap();
    assert_eq!((opened.signal_port, opened.event_port), (100, 200));
    ConsoleClient::new(
        ring::Producer::new(out).unwrap(),
        ring::Consumer::new(inb).unwrap(),
    )
}

#[test]
fn lines_arrive_in_order_with_few_signals() {
    let words = memory_words();
    let memory = AtomicRingMemory::new(&words);
    let world = World::new(memory);
    let mut console = open_console(&world, memory);
    let mut signals = 0u64;
    for i in 0..10_000u32 {
        let line = std::format!("console line {i}");
        console
            .write_line(
                line.as_bytes(),
                || signals += 1,
                || {
                    world.service();
                },
                1000,
            )
            .unwrap();
        // The root looks now and then, as a busy root would.
        if i % 97 == 0 {
            world.service();
        }
    }
    while world.service() > 0 {}
    let log = world.log();
    assert_eq!(log[0], "opened console");
    let lines: Vec<&String> = log.iter().filter(|l| l.starts_with("line ")).collect();
    assert_eq!(lines.len(), 10_000);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(**l, std::format!("line console line {i}"));
    }
    let stats = world.root.borrow().0.console_stats();
    assert_eq!((stats.lines, stats.out_of_sequence), (10_000, 0));
    assert!(signals < 200, "{signals} signals for 10000 lines");
    assert_eq!(signals, console.signals());
}

#[test]
fn a_corrupted_console_ring_closes_only_the_console() {
    let words = memory_words();
    let memory = AtomicRingMemory::new(&words);
    let world = World::new(memory);
    let mut console = open_console(&world, memory);
    console.write_line(b"fine", || {}, || {}, 0).unwrap();
    world.service();
    // The child scribbles a write index past the end of its ring.
    let (out, _) = console_rings_view(memory);
    out.store_u32_release(WRITE_INDEX, 0x7fff_fff8);
    world.service();
    let log = world.log();
    assert!(log.contains(&"line fine".to_string()));
    assert_eq!(
        log.last().unwrap(),
        "closed console: ring: write index 0x7ffffff8 out of range"
    );
    let root = world.root.borrow();
    assert!(!root.0.console_open());
    assert!(root.0.control_open(), "the control channel stays");
    assert!(root.1.mapped.is_empty(), "the console pages are unmapped");
    drop(root);
    // The child is told: the next control message it reads is a rescind.
    let (_, inb) = control_view(memory);
    let mut rx = ring::Consumer::new(inb).unwrap();
    let mut buf = [0u8; 256];
    let mut last = None;
    while let Ok(Recv::Packet(p)) = rx.try_recv(&mut buf) {
        last = Some(packet::decode::<ControlMessage>(&p).unwrap());
    }
    assert_eq!(last, Some(ControlMessage::Rescind { offer_id: 0 }));
}

/// The console rings without re-initialising them.
fn console_rings_view(
    memory: AtomicRingMemory<'_>,
) -> (AtomicRingMemory<'_>, AtomicRingMemory<'_>) {
    let (_, rest) = memory.split_at(8 * PAGE);
    let (rings, _) = rest.split_at(12 * PAGE);
    rings.split_at(10 * PAGE)
}

fn control_view(memory: AtomicRingMemory<'_>) -> (AtomicRingMemory<'_>, AtomicRingMemory<'_>) {
    let (control, _) = memory.split_at(2 * CONTROL_RING_PAGES as usize * PAGE);
    control.split_at(CONTROL_RING_PAGES as usize * PAGE)
}

#[test]
fn bad_lengths_and_bad_messages_close_the_console() {
    for attack in 0..3 {
        let words = memory_words();
        let memory = AtomicRingMemory::new(&words);
        let world = World::new(memory);
        let _console = open_console(&world, memory);
        let (out, _) = console_rings_view(memory);
        let mut tx = ring::Producer::new(out).unwrap();
        let mut scratch = [0u8; 512];
        match attack {
            // A header claiming 4000 bytes of payload in a 16-byte packet.
            0 => {
                tx.send(packet::KIND_MESSAGE, 0, 0, &[0; 8]).unwrap();
                out.write(ring::CONTROL_BYTES + 4, &4000u32.to_le_bytes());
            }
            // Garbage instead of postcard.
            1 => {
                tx.send(packet::KIND_MESSAGE, 0, 0, &[0xff; 9]).unwrap();
            }
            // Input flows the wrong way.
            _ => {
                tx.send_message(
                    0,
                    0,
                    &ConsoleMessage::Input {
                        bytes: packet::Bytes(b"x"),
                    },
                    &mut scratch,
                )
                .unwrap();
            }
        }
        world.service();
        let log = world.log();
        let last = log.last().unwrap();
        assert!(last.starts_with("closed console: "), "{attack}: {last}");
        assert!(world.root.borrow().0.control_open());
    }
}

#[test]
fn out_of_order_control_messages_close_the_control_channel() {
    let words = memory_words();
    let memory = AtomicRingMemory::new(&words);
    let world = World::new(memory);
    let mut bus = guest(memory);
    // Open before any version.
    bus.send_raw(
        &ControlMessage::Open {
            offer_id: 0,
            gpa: CONSOLE_PAGES.gpa,
            pages: 12,
            outbound_pages: 10,
        },
        || {},
        || {},
    )
    .unwrap();
    world.service();
    assert_eq!(
        world.log().last().unwrap(),
        "closed control: protocol: control message out of order"
    );
    assert!(!world.root.borrow().0.control_open());
    // Nothing more is read.
    bus.send_raw(&ControlMessage::RequestOffers, || {}, || {})
        .unwrap();
    assert_eq!(world.service(), 0);
}

#[test]
fn pages_outside_the_child_are_refused() {
    let words = memory_words();
    let memory = AtomicRingMemory::new(&words);
    let world = World::new(memory);
    let mut bus = guest(memory);
    bus.connect(
        || {},
        || {
            world.service();
        },
        100,
    )
    .unwrap();
    let bad = RingPages {
        gpa: 0,
        ..CONSOLE_PAGES
    };
    assert_eq!(
        bus.open(
            CONSOLE_CLASS,
            bad,
            || {},
            || {
                world.service();
            },
            100
        ),
        Err(vsc::bus::BusError::Refused(OpenStatus::BadRange))
    );
    // The offer can be opened properly afterwards.
    console_rings(memory);
    assert!(
        bus.open(
            CONSOLE_CLASS,
            CONSOLE_PAGES,
            || {},
            || {
                world.service();
            },
            100
        )
        .is_ok()
    );
}
