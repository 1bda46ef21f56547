//! Fuzz target: the root's storage controller (`vsp::storage` behind
//! `vsp::bus`) after a real handshake opened the storage channel and
//! granted a buffer region, fed arbitrary child packets (any kind, flags,
//! transaction id, payload), hot add/remove of LUNs and service passes,
//! over RAM disks.
//! Invariants: the root never panics; the backend is only ever asked for
//! sectors inside a LUN's capacity (the RAM disk asserts it); mapped
//! ranges stay inside the child and never overlap; every packet read gets
//! at most one answer and the ring to the child is only ever written
//! through the ring code.
#![no_main]

use std::sync::atomic::AtomicU64;

use ipc::vmbus::control::{OpenStatus, STORAGE_CLASS};
use ipc::vmbus::memory::AtomicRingMemory;
use ipc::vmbus::ring::{self, Consumer, Producer, Recv};
use ipc::vmbus::storage::GuestMessage;
use ipc::vmbus::packet;
use libfuzzer_sys::fuzz_target;
use vsp::bus::{ChildBus, Event, Platform};
use vsp::storage::{BackendError, StorageBackend};

const PAGE: usize = 4096;
const PAGES: usize = 48;

struct Fake<'a> {
    memory: AtomicRingMemory<'a>,
    mapped: Vec<(u64, u32)>,
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

/// RAM disks that assert every access is inside the LUN.
struct Disks {
    luns: Vec<Option<Vec<u8>>>,
}

impl Disks {
    fn at(&mut self, lun: u8, lba: u64, len: usize) -> &mut [u8] {
        let disk = self.luns[usize::from(lun)].as_mut().expect("backend asked for a LUN it lacks");
        assert!(len % 512 == 0, "partial sector");
        let start = usize::try_from(lba).unwrap() * 512;
        assert!(start + len <= disk.len(), "access beyond the LUN");
        &mut disk[start..start + len]
    }
}

impl StorageBackend for Disks {
    fn capacity(&mut self, lun: u8) -> Option<u64> {
        Some(self.luns.get(usize::from(lun))?.as_ref()?.len() as u64 / 512)
    }
    fn read_only(&mut self, lun: u8) -> bool {
        lun == 2
    }
    fn read(&mut self, lun: u8, lba: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        buf.copy_from_slice(self.at(lun, lba, buf.len()));
        Ok(())
    }
    fn write(&mut self, lun: u8, lba: u64, buf: &[u8]) -> Result<(), BackendError> {
        assert_ne!(lun, 2, "write to a read-only LUN");
        self.at(lun, lba, buf.len()).copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self, lun: u8) -> Result<(), BackendError> {
        if lun == 3 { Err(BackendError::Io) } else { Ok(()) }
    }
}

/// One service pass.
fn serve<'a>(bus: &mut ChildBus<AtomicRingMemory<'a>>, platform: &mut Fake<'a>, disks: &mut Disks, bounce: &mut [u8]) {
    bus.service(platform, disks, bounce, |e| {
        if let Event::Line(_) = e {
            panic!("a console line without a console");
        }
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
    let mut platform = Fake { memory, mapped: Vec::new() };
    let mut disks = Disks { luns: (0..4).map(|l| Some(vec![l as u8; (l + 1) * 8 * 512])).collect() };
    disks.luns.resize(64, None);
    let mut bounce = vec![0u8; 2048];
    let mut guest = vsc::bus::GuestBus::new(Producer::new(c_out).unwrap(), Consumer::new(c_in).unwrap());
    let cell = std::cell::RefCell::new((&mut bus, &mut platform, &mut disks, &mut bounce));
    let step = || {
        let mut b = cell.borrow_mut();
        let (bus, platform, disks, bounce) = &mut *b;
        bus.service(*platform, *disks, bounce.as_mut_slice(), |_| {});
    };
    if guest.connect(|| {}, step, 50).is_err() {
        return;
    }
    // Storage rings on pages 8..12 (2 + 2), a 4-page region at 16 (granted
    // by the script's first packet when it wants).
    let (_, rest) = memory.split_at(8 * PAGE);
    let (rings, _) = rest.split_at(4 * PAGE);
    let (s_out, s_in) = rings.split_at(2 * PAGE);
    ring::initialize(&s_out).unwrap();
    ring::initialize(&s_in).unwrap();
    let pages = vsc::bus::RingPages { gpa: 8 * PAGE as u64, pages: 4, outbound_pages: 2 };
    if guest.open(STORAGE_CLASS, pages, || {}, step, 50).is_err() {
        return;
    }
    let (bus, platform, disks, bounce) = cell.into_inner();
    let mut tx = Producer::new(s_out).unwrap();
    let mut rx = Consumer::new(s_in).unwrap();
    let mut scratch = [0u8; 64];
    let grant = packet::encode(&GuestMessage::GrantBuffer { gpa: 16 * PAGE as u64, pages: 4 }, &mut scratch).unwrap().to_vec();
    let mut bytes = input.iter().copied();
    let mut next = || bytes.next();
    let mut answers = 0u64;
    while let Some(op) = next() {
        match op % 8 {
            0..=3 => {
                let tid = u64::from(next().unwrap_or(0));
                let len = usize::from(next().unwrap_or(0) % 48);
                let payload: Vec<u8> = (0..len).map(|_| next().unwrap_or(0)).collect();
                let (kind, flags) = if op % 8 == 3 {
                    (u16::from(next().unwrap_or(1)), u16::from(next().unwrap_or(0)))
                } else {
                    (packet::KIND_MESSAGE, 0)
                };
                let _ = tx.send(kind, flags, tid, &payload);
            }
            4 => {
                let _ = tx.send(packet::KIND_MESSAGE, 0, 0, &grant);
            }
            5 => {
                serve(bus, platform, disks, bounce);
                let mut buf = [0u8; 256];
                while let Ok(Recv::Packet(_)) = rx.try_recv(&mut buf) {
                    answers += 1;
                }
            }
            6 => {
                let lun = next().unwrap_or(0) % 70;
                let sectors = u64::from(next().unwrap_or(0) % 32);
                if let Some(slot) = disks.luns.get_mut(usize::from(lun)) {
                    *slot = Some(vec![0; sectors as usize * 512]);
                }
                bus.lun_added(platform, lun, sectors, |_| {});
            }
            _ => {
                let lun = next().unwrap_or(0) % 70;
                bus.lun_removed(platform, lun, |_| {});
                if let Some(slot) = disks.luns.get_mut(usize::from(lun)) {
                    *slot = None;
                }
            }
        }
    }
    serve(bus, platform, disks, bounce);
    let _ = answers;
    bus.shut_down(platform);
    assert!(platform.mapped.is_empty(), "shut down left pages mapped");
});
