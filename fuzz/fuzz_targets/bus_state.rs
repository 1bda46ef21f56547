//! Fuzz target: a saved bus state (quick migration) read back from
//! arbitrary bytes. The input is decoded (`vsp::bus_state::BusState`);
//! if it decodes, it is restored over a fake child memory and platform
//! (`vsp::bus::ChildBus::restore`), and a restored bus is run a little:
//! service passes, a frame delivered, a flush, a hot-added LUN, a link
//! change, shut down.
//! Invariants: nothing panics; restore either fails with nothing left
//! mapped or maps non-overlapping ranges inside the child; restore makes
//! no ports; the restored bus saves exactly the state it was restored
//! from; nothing unmaps what is not mapped; pages never mapped are
//! never written; shutting down unmaps everything.
#![no_main]

use std::sync::atomic::AtomicU64;

use ipc::vmbus::control::OpenStatus;
use ipc::vmbus::memory::{AtomicRingMemory, RingMemory};
use ipc::vmbus::network::{MAX_FRAME, Mac};
use libfuzzer_sys::fuzz_target;
use vsp::bus::{BusState, ChildBus, DropFrames, Platform};

const PAGE: usize = 4096;
/// The seed's layout: control 0..4, rings 8..32, regions 32..112.
const PAGES: usize = 128;
/// Pages 112..128 hold a pattern; unless mapped, they never change.
const CANARY: usize = 112;
const MAC: Mac = Mac([0x02, 0x63, 0x76, 0, 0, 1]);

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
        panic!("restore made a port");
    }
    fn signal(&mut self, _: Option<u32>) {}
}

fn pattern(i: usize) -> u8 {
    (i as u8).wrapping_mul(31) ^ (i >> 8) as u8
}

fuzz_target!(|input: &[u8]| {
    let Ok(state) = BusState::decode(input) else {
        return;
    };
    // Zeroed rings are valid empty rings: every saved channel inside the
    // memory can be attached.
    let words: Vec<AtomicU64> = (0..PAGES * PAGE / 8).map(|_| AtomicU64::new(0)).collect();
    let memory = AtomicRingMemory::new(&words);
    let canary: Vec<u8> = (0..(PAGES - CANARY) * PAGE).map(pattern).collect();
    memory.write(CANARY * PAGE, &canary);
    let (control, _) = memory.split_at(4 * PAGE);
    let (c_out, c_in) = control.split_at(2 * PAGE);
    let mut platform = Fake { memory, mapped: Vec::new(), canary_mapped: false };
    let mut bus = match ChildBus::restore(&state, c_out, c_in, &mut platform) {
        Ok(bus) => bus,
        Err(_) => {
            assert!(platform.mapped.is_empty(), "a failed restore left pages mapped");
            return;
        }
    };
    assert_eq!(bus.save(), state, "restored differently from the saved state");
    let mut disk = vsp::storage::NoLuns;
    let mut bounce = [0u8; 4096];
    let mut scratch = vec![0u8; MAX_FRAME as usize];
    let mut frame = vec![0u8; 1514];
    frame[..6].copy_from_slice(&MAC.0);
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 9]);
    for round in 0..2u8 {
        bus.service(&mut platform, &mut disk, &mut bounce, |_| {});
        bus.service_network(&mut platform, &mut DropFrames, &mut scratch, |_| {});
        let _ = bus.network_deliver(&mut platform, &frame[..60 + usize::from(round) * 1400], 0, |_| {});
        bus.network_flush(&mut platform, |_| {});
        bus.lun_added(&mut platform, round, 64, |_| {});
        bus.lun_removed(&mut platform, 63, |_| {});
        bus.network_link(&mut platform, round == 1, |_| {});
    }
    let _ = bus.save();
    bus.shut_down(&mut platform);
    assert!(platform.mapped.is_empty(), "shut down left pages mapped");
    if !platform.canary_mapped {
        let mut now = vec![0u8; canary.len()];
        memory.read(CANARY * PAGE, &mut now);
        assert!(now == canary, "unmapped pages were written");
    }
});
