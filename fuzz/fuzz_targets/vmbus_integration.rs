//! Fuzz target: the integration services' decoder and the root's provider
//! behind it (`vsp::integration` through `vsp::bus`). After a real
//! handshake opened the channel, the input is a script: each step either
//! sends an arbitrary payload (or an arbitrary well-formed message) on
//! the child's ring, asks for a shutdown with an arbitrary time limit,
//! or moves the clock, then the root polls.
//! Invariants: decoding never panics, a decoded message re-encodes to
//! itself; the provider never panics whatever the child sends or the
//! clock does; once it reported the channel closed it reports no change
//! of heartbeat or shutdown any more; `Done` only follows `Acknowledged`.
#![no_main]

use std::sync::atomic::AtomicU64;

use ipc::vmbus::control::{INTEGRATION_CLASS, OpenStatus};
use ipc::vmbus::integration::{IntegrationMessage, ShutdownReason};
use ipc::vmbus::memory::AtomicRingMemory;
use ipc::vmbus::packet::{self, KIND_MESSAGE};
use ipc::vmbus::ring::{self, Consumer, Producer};
use libfuzzer_sys::fuzz_target;
use vsp::bus::{ChannelName, ChildBus, Event, IntegrationEvent, Platform, ShutdownState};

const PAGE: usize = 4096;
const PAGES: usize = 12;

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
        Ok(rest.split_at(len).0.split_at(outbound as usize * PAGE))
    }
    fn unmap(&mut self, _: u64, _: u32) {}
    fn map_buffer(&mut self, _: u64, _: u32) -> Result<Self::Memory, OpenStatus> {
        Err(OpenStatus::BadRange)
    }
    fn ports(&mut self, _: u32) -> Result<(u64, u64), OpenStatus> {
        Ok((1, 2))
    }
    fn signal(&mut self, _: Option<u32>) {}
}

fn message(bytes: &[u8]) -> IntegrationMessage {
    let n = u64::from_le_bytes(bytes.get(1..9).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]));
    match bytes.first().copied().unwrap_or(0) % 6 {
        0 => IntegrationMessage::HeartbeatReply { sequence: n % 8, uptime_ms: n },
        1 => IntegrationMessage::ShutdownAck { accepted: n & 1 == 0 },
        2 => IntegrationMessage::ShutdownDone,
        3 => IntegrationMessage::Heartbeat { sequence: n },
        4 => IntegrationMessage::ShutdownRequest { reason: ShutdownReason::Stop, deadline_ms: n as u32 },
        _ => IntegrationMessage::HeartbeatReply { sequence: n, uptime_ms: 0 },
    }
}

fuzz_target!(|input: &[u8]| {
    // The decoder alone.
    if let Ok(m) = postcard::from_bytes::<IntegrationMessage>(input) {
        let _ = m.check();
        let mut scratch = [0u8; 64];
        let bytes = packet::encode(&m, &mut scratch).expect("a decoded message re-encodes");
        assert_eq!(postcard::from_bytes::<IntegrationMessage>(bytes).ok(), Some(m));
    }
    let words: Vec<AtomicU64> = (0..PAGES * PAGE / 8).map(|_| AtomicU64::new(0)).collect();
    let memory = AtomicRingMemory::new(&words);
    let (control, _) = memory.split_at(4 * PAGE);
    let (c_out, c_in) = control.split_at(2 * PAGE);
    ring::initialize(&c_out).unwrap();
    ring::initialize(&c_in).unwrap();
    let bus = std::cell::RefCell::new(ChildBus::new(c_out, c_in).unwrap());
    let platform = std::cell::RefCell::new(Fake { memory });
    let step = || {
        bus.borrow_mut().service(&mut *platform.borrow_mut(), &mut vsp::storage::NoLuns, &mut [], |_| {});
    };
    let mut guest = vsc::bus::GuestBus::new(Producer::new(c_out).unwrap(), Consumer::new(c_in).unwrap());
    guest.connect(|| {}, step, 50).unwrap();
    let (_, rest) = memory.split_at(4 * PAGE);
    let (rings, _) = rest.split_at(4 * PAGE);
    let (i_out, i_in) = rings.split_at(2 * PAGE);
    ring::initialize(&i_out).unwrap();
    ring::initialize(&i_in).unwrap();
    let pages = vsc::bus::RingPages { gpa: 4 * PAGE as u64, pages: 4, outbound_pages: 2 };
    guest.open(INTEGRATION_CLASS, pages, || {}, step, 50).unwrap();
    let mut bus = bus.into_inner();
    let mut platform = platform.into_inner();
    let mut child = Producer::new(i_out).unwrap();
    let mut from_root = Consumer::new(i_in).unwrap();
    let mut now = 0u64;
    let mut closed = false;
    let mut last = ShutdownState::Idle;
    for chunk in input.chunks(10) {
        let Some((&op, rest)) = chunk.split_first() else { break };
        match op % 5 {
            0 => {
                let _ = child.send(KIND_MESSAGE, 0, 0, rest);
            }
            1 | 2 => {
                let mut scratch = [0u8; 64];
                let _ = child.send_message(0, 0, &message(rest), &mut scratch);
            }
            3 => {
                let ms = u32::from_le_bytes(rest.get(..4).and_then(|b| b.try_into().ok()).unwrap_or([0; 4]));
                let _ = bus.request_shutdown(&mut platform, ShutdownReason::Stop, ms, now, |_| {});
            }
            _ => {
                let by = u64::from_le_bytes(rest.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]));
                now = now.saturating_add(by >> 20);
            }
        }
        bus.integration_poll(&mut platform, now, |e| match e {
            Event::Closed(ChannelName::Integration, _) => closed = true,
            Event::Integration(e) => {
                assert!(!closed, "a change after the channel closed: {e:?}");
                if let IntegrationEvent::Shutdown(ShutdownState::Done) = e {
                    assert_eq!(last, ShutdownState::Acknowledged);
                }
                if let IntegrationEvent::Shutdown(s) = e {
                    last = s;
                }
            }
            _ => {}
        });
        // The root's heartbeats are read, so its ring never fills for good.
        let mut buf = [0u8; 64];
        while let Ok(ring::Recv::Packet(_)) = from_root.try_recv(&mut buf) {}
    }
});
