//! Fuzz target: the root's network device (`vsp::network` behind
//! `vsp::bus`) after a real handshake opened the network channel, fed
//! arbitrary child packets (any kind, flags, transaction id, payload) and
//! structured ones with arbitrary offsets, lengths and flags (single
//! messages, `Negotiate`, `SendBatch` and `PostReceiveBatch` of up to
//! `MAX_BATCH` entries), frames the
//! child writes into its send area, frames the root delivers, link
//! changes and service passes, with the child's sends going through the
//! virtual switch (`vsp::switch`) and back to the child.
//! Invariants: the root never panics; every frame the provider hands to
//! the switch has the child's MAC as source and a length within the MTU;
//! the switch never counts a spoofed frame from the child's port; mapped
//! ranges stay inside the child and never overlap; pages never mapped
//! are never written; shutting down unmaps everything.
#![no_main]

use std::cell::RefCell;
use std::sync::atomic::AtomicU64;

use ipc::vmbus::control::{NETWORK_CLASS, OpenStatus};
use ipc::vmbus::memory::{AtomicRingMemory, RingMemory};
use ipc::vmbus::network::{
    Batch, BufferEntry, FrameEntry, GuestMessage, MAX_BATCH, MAX_FRAME, Mac, source,
};
use ipc::vmbus::packet;
use ipc::vmbus::ring::{self, Consumer, Producer, Recv};
use libfuzzer_sys::fuzz_target;
use vsp::bus::{ChildBus, FrameSink, NetworkConfig, Platform};
use vsp::switch::{DropReason, Switch};

const PAGE: usize = 4096;
const PAGES: usize = 48;
/// Pages 40..48 hold a pattern; unless mapped, they never change.
const CANARY: usize = 40;
const MAC: Mac = Mac([0x02, 0x63, 0x76, 0, 0, 1]);
const OTHER: Mac = Mac([0x02, 0x63, 0x76, 0, 0, 2]);
const MTU: u16 = 9000;

struct Fake<'a> {
    memory: AtomicRingMemory<'a>,
    mapped: Vec<(u64, u32)>,
    canary_mapped: bool,
}

impl<'a> Fake<'a> {
    fn range(&mut self, gpa: u64, pages: u32) -> Result<AtomicRingMemory<'a>, OpenStatus> {
        let start = usize::try_from(gpa).map_err(|_| OpenStatus::BadRange)?;
        let len = pages as usize * PAGE;
        if start % PAGE != 0 || start < 4 * PAGE || start.checked_add(len).is_none_or(|e| e > PAGES * PAGE) {
            return Err(OpenStatus::BadRange);
        }
        let end = gpa + len as u64;
        for &(g, p) in &self.mapped {
            assert!(end <= g || g + u64::from(p) * PAGE as u64 <= gpa, "overlapping mappings");
        }
        if start + len > CANARY * PAGE {
            self.canary_mapped = true;
        }
        self.mapped.push((gpa, pages));
        let (_, rest) = self.memory.split_at(start);
        Ok(rest.split_at(len).0)
    }
}

impl<'a> Platform for Fake<'a> {
    type Memory = AtomicRingMemory<'a>;
    fn map(&mut self, gpa: u64, pages: u32, outbound: u32) -> Result<(Self::Memory, Self::Memory), OpenStatus> {
        Ok(self.range(gpa, pages)?.split_at(outbound as usize * PAGE))
    }
    fn unmap(&mut self, gpa: u64, pages: u32) {
        let before = self.mapped.len();
        self.mapped.retain(|m| *m != (gpa, pages));
        assert_eq!(before, self.mapped.len() + 1, "unmap of something not mapped");
    }
    fn map_buffer(&mut self, gpa: u64, pages: u32) -> Result<Self::Memory, OpenStatus> {
        self.range(gpa, pages)
    }
    fn ports(&mut self, _: u32) -> Result<(u64, u64), OpenStatus> {
        Ok((1, 2))
    }
    fn signal(&mut self, _: Option<u32>) {}
}

/// The provider's sink: checks every frame, then feeds switch port 1.
struct Checked<'s> {
    switch: &'s mut Switch<3, 4>,
}

impl FrameSink for Checked<'_> {
    fn frame(&mut self, frame: &[u8], flags: u8) -> bool {
        assert_eq!(source(frame), Some(MAC), "a spoofed frame left the provider");
        assert!((14..=usize::from(MTU) + 14).contains(&frame.len()), "frame length {}", frame.len());
        self.switch.ingress(1).frame(frame, flags)
    }
}

fn pattern(i: usize) -> u8 {
    (i as u8).wrapping_mul(31) ^ (i >> 8) as u8
}

fuzz_target!(|input: &[u8]| {
    let words: Vec<AtomicU64> = (0..PAGES * PAGE / 8).map(|_| AtomicU64::new(0)).collect();
    let memory = AtomicRingMemory::new(&words);
    let canary: Vec<u8> = (0..(PAGES - CANARY) * PAGE).map(pattern).collect();
    memory.write(CANARY * PAGE, &canary);
    let (control, _) = memory.split_at(4 * PAGE);
    let (c_out, c_in) = control.split_at(2 * PAGE);
    ring::initialize(&c_out).unwrap();
    ring::initialize(&c_in).unwrap();
    let mut bus = ChildBus::new(c_out, c_in).unwrap();
    bus.set_network(Some(NetworkConfig { mac: MAC, mtu: MTU }));
    let mut platform = Fake { memory, mapped: Vec::new(), canary_mapped: false };
    let mut guest = vsc::bus::GuestBus::new(Producer::new(c_out).unwrap(), Consumer::new(c_in).unwrap());
    let cell = RefCell::new((&mut bus, &mut platform));
    let step = || {
        let mut b = cell.borrow_mut();
        let (bus, platform) = &mut *b;
        bus.service(*platform, &mut vsp::storage::NoLuns, &mut [], |_| {});
    };
    if guest.connect(|| {}, step, 50).is_err() {
        return;
    }
    // Network rings on pages 8..12 (2 + 2); the region at 16..32, 4 send
    // pages and 12 receive pages (granted when the script wants).
    let (_, rest) = memory.split_at(8 * PAGE);
    let (rings, _) = rest.split_at(4 * PAGE);
    let (n_out, n_in) = rings.split_at(2 * PAGE);
    ring::initialize(&n_out).unwrap();
    ring::initialize(&n_in).unwrap();
    let pages = vsc::bus::RingPages { gpa: 8 * PAGE as u64, pages: 4, outbound_pages: 2 };
    if guest.open(NETWORK_CLASS, pages, || {}, step, 50).is_err() {
        return;
    }
    let (bus, platform) = cell.into_inner();
    let mut switch: Box<Switch<3, 4>> = Box::default();
    for port in 0..3 {
        switch.set_port_up(port, true).unwrap();
    }
    switch.set_port_mac(1, Some(MAC)).unwrap();
    switch.set_port_mac(2, Some(OTHER)).unwrap();
    switch.set_port_mtu(1, MTU).unwrap();
    let mut tx = Producer::new(n_out).unwrap();
    let mut rx = Consumer::new(n_in).unwrap();
    let region = {
        let (_, rest) = memory.split_at(16 * PAGE);
        rest.split_at(16 * PAGE).0
    };
    let mut scratch_frame = vec![0u8; MAX_FRAME as usize];
    let mut bytes = input.iter().copied();
    let mut next = || bytes.next().unwrap_or(0);
    let mut op_count = 0;
    while op_count < input.len() {
        op_count += 1;
        let op = next();
        let mut scratch = [0u8; 512];
        match op % 10 {
            0..=1 => {
                let tid = u64::from(next());
                // Up to 255 bytes: single messages and batches.
                let len = usize::from(next());
                let payload: Vec<u8> = (0..len).map(|_| next()).collect();
                let (kind, flags) = if op % 10 == 1 {
                    (u16::from(next()), u16::from(next()))
                } else {
                    (packet::KIND_MESSAGE, 0)
                };
                let _ = tx.send(kind, flags, tid, &payload);
            }
            2..=4 => {
                let word = |a: u8, b: u8| u32::from(a) << 8 | u32::from(b);
                let message = match op % 10 {
                    2 => GuestMessage::Send {
                        offset: word(next(), next()) * (u32::from(next() % 4) + 1),
                        len: word(next(), next()) >> (next() % 8),
                        flags: next() % 4,
                    },
                    3 => GuestMessage::PostReceive {
                        offset: word(next(), next()) * 4,
                        len: word(next(), next()) >> (next() % 4),
                    },
                    _ => match next() % 6 {
                        0 => GuestMessage::GrantBuffers { gpa: 16 * PAGE as u64, pages: 16, send_pages: 4 },
                        1 => GuestMessage::GrantBuffers {
                            gpa: u64::from(next()) * PAGE as u64,
                            pages: u32::from(next()),
                            send_pages: u32::from(next()),
                        },
                        2 => GuestMessage::Init { mtu: u16::from(next()) << 6, mac: Mac([next(); 6]) },
                        3 => GuestMessage::Negotiate { version: u16::from(next() % 4) },
                        4 => {
                            // Up to MAX_BATCH frames, each like a `Send`.
                            let mut entries = Batch::new();
                            for _ in 0..next() % (MAX_BATCH as u8 + 1) {
                                let _ = entries.push(FrameEntry {
                                    offset: word(next(), next()) * (u32::from(next() % 4) + 1),
                                    len: word(next(), next()) >> (next() % 8),
                                    flags: next() % 4,
                                });
                            }
                            GuestMessage::SendBatch { entries }
                        }
                        _ => {
                            let mut entries = Batch::new();
                            for _ in 0..next() % (MAX_BATCH as u8 + 1) {
                                let _ = entries.push(BufferEntry {
                                    offset: word(next(), next()) * 4,
                                    len: word(next(), next()) >> (next() % 4),
                                });
                            }
                            GuestMessage::PostReceiveBatch { entries }
                        }
                    },
                };
                let encoded = packet::encode(&message, &mut scratch).unwrap();
                let _ = tx.send(packet::KIND_MESSAGE, 0, u64::from(next()), encoded);
            }
            5 => {
                // The child writes a frame into its send area (its own MAC
                // or a forged one).
                let at = usize::from(next()) * 64;
                let len = usize::from(next()) * 40;
                let src = if next() % 4 == 0 { OTHER } else { MAC };
                let mut frame: Vec<u8> = (0..len.max(14)).map(|i| pattern(i + at)).collect();
                frame[..6].copy_from_slice(&[OTHER, MAC, Mac::BROADCAST][usize::from(next() % 3)].0);
                frame[6..12].copy_from_slice(&src.0);
                region.write(at.min(4 * PAGE), &frame[..frame.len().min(4 * PAGE - at.min(4 * PAGE))]);
            }
            6 | 7 => {
                bus.service(platform, &mut vsp::storage::NoLuns, &mut [], |_| {});
                bus.service_network(platform, &mut Checked { switch: &mut switch }, &mut scratch_frame, |_| {});
                let mut to_child = 0;
                switch.drain(|port, frame, flags| match port {
                    1 => {
                        to_child += 1;
                        bus.network_deliver(platform, frame, flags, |_| {}).is_ok()
                    }
                    _ => true,
                });
                let mut buf = [0u8; 256];
                if op % 10 == 6 {
                    while let Ok(Recv::Packet(_)) = rx.try_recv(&mut buf) {}
                }
            }
            8 => {
                // The outside (port 0) or the other child (port 2) sends.
                let len = usize::from(next()) * 40;
                let mut frame: Vec<u8> = (0..len.max(12)).map(pattern).collect();
                frame[..6].copy_from_slice(&[MAC, Mac::BROADCAST, OTHER][usize::from(next() % 3)].0);
                let host = next();
                if host % 4 != 0 {
                    frame[6..12].copy_from_slice(&[0x52, 0x54, 0, 0, 0, host]);
                }
                let port = if next() % 2 == 0 { 0 } else { 2 };
                let _ = switch.enqueue(port, &frame, next() % 4);
            }
            _ => {
                bus.network_link(platform, next() % 2 == 0, |_| {});
            }
        }
        assert_eq!(switch.counters(1).dropped(DropReason::Spoofed), 0);
    }
    bus.service_network(platform, &mut Checked { switch: &mut switch }, &mut scratch_frame, |_| {});
    bus.shut_down(platform);
    assert!(platform.mapped.is_empty(), "shut down left pages mapped");
    if !platform.canary_mapped {
        let mut after = vec![0u8; canary.len()];
        memory.read(CANARY * PAGE, &mut after);
        assert!(after == canary, "a page never mapped was written");
    }
});
