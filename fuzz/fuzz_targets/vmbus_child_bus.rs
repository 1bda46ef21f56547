//! Fuzz target: the root's whole side of a child's VMBus (`vsp::bus`)
//! against a child that writes arbitrary bytes into its control and
//! console ring pages between the root's service passes, after a real
//! handshake opened the console.
//! Invariants: the root never panics, never maps anything outside the
//! child's memory, and once it reported a channel closed it reads nothing
//! more from it (a closed control channel reports no more lines).
#![no_main]

use std::sync::atomic::AtomicU64;

use ipc::vmbus::control::{CONSOLE_CLASS, OpenStatus};
use ipc::vmbus::memory::{AtomicRingMemory, RingMemory};
use ipc::vmbus::ring::{self, Consumer, Producer};
use libfuzzer_sys::fuzz_target;
use vsp::bus::{ChannelName, ChildBus, Event, Platform};

const PAGE: usize = 4096;
const PAGES: usize = 24;

struct Fake<'a> {
    memory: AtomicRingMemory<'a>,
}

impl<'a> Platform for Fake<'a> {
    type Memory = AtomicRingMemory<'a>;
    fn map(&mut self, gpa: u64, pages: u32, outbound: u32) -> Result<(Self::Memory, Self::Memory), OpenStatus> {
        let start = usize::try_from(gpa).map_err(|_| OpenStatus::BadRange)?;
        let len = pages as usize * PAGE;
        if start % PAGE != 0 || start < 4 * PAGE || start.checked_add(len).is_none_or(|e| e > PAGES * PAGE) {
            return Err(OpenStatus::BadRange);
        }
        let (_, rest) = self.memory.split_at(start);
        let (rings, _) = rest.split_at(len);
        Ok(rings.split_at(outbound as usize * PAGE))
    }
    fn unmap(&mut self, _: u64, _: u32) {}
    fn map_buffer(&mut self, gpa: u64, pages: u32) -> Result<Self::Memory, OpenStatus> {
        self.map(gpa, pages, pages).map(|(memory, _)| memory)
    }
    fn ports(&mut self, _: u32) -> Result<(u64, u64), OpenStatus> {
        Ok((1, 2))
    }
    fn signal(&mut self, _: Option<u32>) {}
}

/// One service pass; `closed` remembers that the control channel closed.
fn serve<'a>(
    bus: &mut ChildBus<AtomicRingMemory<'a>>,
    platform: &mut Fake<'a>,
    closed: &std::cell::Cell<bool>,
) {
    bus.service(platform, &mut vsp::storage::NoLuns, &mut [], |e| match e {
        Event::Closed(ChannelName::Control, _) => closed.set(true),
        Event::Line(_) => assert!(!closed.get(), "a line after the control channel closed"),
        _ => {}
    });
}

fuzz_target!(|input: &[u8]| {
    let words: Vec<AtomicU64> = (0..PAGES * PAGE / 8).map(|_| AtomicU64::new(0)).collect();
    let memory = AtomicRingMemory::new(&words);
    let (control, _) = memory.split_at(4 * PAGE);
    let (c_out, c_in) = control.split_at(2 * PAGE);
    ring::initialize(&c_out).unwrap();
    ring::initialize(&c_in).unwrap();
    let mut bus = ChildBus::new(c_out, c_in).unwrap();
    let mut platform = Fake { memory };
    // A well-behaved child opens its console on pages 8..20 first.
    let (_, rest) = memory.split_at(8 * PAGE);
    let (console, _) = rest.split_at(12 * PAGE);
    let (k_out, k_in) = console.split_at(10 * PAGE);
    ring::initialize(&k_out).unwrap();
    ring::initialize(&k_in).unwrap();
    let mut guest = vsc::bus::GuestBus::new(Producer::new(c_out).unwrap(), Consumer::new(c_in).unwrap());
    let closed = std::cell::Cell::new(false);
    let cell = std::cell::RefCell::new((&mut bus, &mut platform));
    let step = || {
        let mut b = cell.borrow_mut();
        let (bus, platform) = &mut *b;
        serve(bus, platform, &closed);
    };
    if guest.connect(|| {}, step, 50).is_err() {
        return;
    }
    let pages = vsc::bus::RingPages { gpa: 8 * PAGE as u64, pages: 12, outbound_pages: 10 };
    if guest.open(CONSOLE_CLASS, pages, || {}, step, 50).is_err() {
        return;
    }
    // Now the child turns hostile: each chunk writes bytes somewhere in its
    // ring pages (control or console), then the root serves once.
    let (bus, platform) = cell.into_inner();
    for chunk in input.chunks(12) {
        if chunk.len() < 4 {
            break;
        }
        let target = if chunk[0] & 1 == 0 { c_out } else { k_out };
        let at = usize::from(u16::from_le_bytes([chunk[1], chunk[2]])) % target.len();
        let bytes = &chunk[3..];
        let end = (at + bytes.len()).min(target.len());
        target.write(at, &bytes[..end - at]);
        serve(bus, platform, &closed);
    }
});
