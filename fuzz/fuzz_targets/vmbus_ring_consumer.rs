//! Fuzz target: the ring consumer (and producer) over arbitrary ring memory.
//! Invariants: whatever the control page and data area hold, and however
//! the "peer" changes them between calls, the ring code never panics and
//! never touches memory outside the ring (the memory below asserts every
//! access is in range and aligned); every packet it returns fits the
//! buffer and the bytes that were in the ring.
#![no_main]

use std::sync::atomic::AtomicU64;

use ipc::vmbus::memory::{AtomicRingMemory, RingMemory};
use ipc::vmbus::ring::{
    CONTROL_BYTES, Consumer, FEATURES, INTERRUPT_MASK, PENDING_SEND_SIZE, Producer, READ_INDEX,
    Recv, WRITE_INDEX,
};
use libfuzzer_sys::fuzz_target;

/// Ring memory that fails the run on any access the ring code should never make.
struct Strict<'a>(AtomicRingMemory<'a>);

impl RingMemory for Strict<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn load_u32_acquire(&self, offset: usize) -> u32 {
        assert!(offset % 4 == 0 && offset + 4 <= CONTROL_BYTES, "index load at {offset}");
        self.0.load_u32_acquire(offset)
    }
    fn store_u32_release(&self, offset: usize, value: u32) {
        assert!(offset % 4 == 0 && offset + 4 <= CONTROL_BYTES, "index store at {offset}");
        self.0.store_u32_release(offset, value)
    }
    fn read(&self, offset: usize, buf: &mut [u8]) {
        assert!(offset >= CONTROL_BYTES && offset + buf.len() <= self.len(), "read {offset}+{}", buf.len());
        self.0.read(offset, buf)
    }
    fn write(&self, offset: usize, data: &[u8]) {
        assert!(offset >= CONTROL_BYTES && offset + data.len() <= self.len(), "write {offset}+{}", data.len());
        self.0.write(offset, data)
    }
}

const DATA: usize = 512;

fuzz_target!(|input: &[u8]| {
    let words: Vec<AtomicU64> = (0..(CONTROL_BYTES + DATA) / 8).map(|_| AtomicU64::new(0)).collect();
    let raw = AtomicRingMemory::new(&words);
    // The first 20 bytes are the control page's fields (write index, read
    // index, interrupt mask, pending-send size, features), then the data
    // area, then a script of peer actions.
    const FIELDS: [usize; 5] = [WRITE_INDEX, READ_INDEX, INTERRUPT_MASK, PENDING_SEND_SIZE, FEATURES];
    let (control, rest) = input.split_at(input.len().min(20));
    for (chunk, offset) in control.chunks(4).zip(FIELDS) {
        let mut b = [0u8; 4];
        b[..chunk.len()].copy_from_slice(chunk);
        raw.store_u32_release(offset, u32::from_le_bytes(b));
    }
    let (data, script) = rest.split_at(rest.len().min(DATA));
    raw.write(CONTROL_BYTES, data);
    let Ok(mut rx) = Consumer::new(Strict(raw)) else {
        return;
    };
    let mut buf = [0u8; 256];
    for step in script.chunks(6) {
        match step[0] % 4 {
            // The peer pokes a control word.
            0 if step.len() >= 6 => {
                let offset = FIELDS[step[1] as usize % 5];
                let value = u32::from_le_bytes([step[2], step[3], step[4], step[5]]);
                raw.store_u32_release(offset, value);
            }
            // The peer scribbles in the data area.
            1 if step.len() >= 6 => {
                let at = CONTROL_BYTES + usize::from(u16::from_le_bytes([step[1], step[2]])) % DATA;
                raw.write(at, &step[3..(3 + (DATA + CONTROL_BYTES - at).min(3))]);
            }
            // A well-behaved producer attached now sends something.
            2 => {
                if let Ok(mut tx) = Producer::new(Strict(raw)) {
                    let len = step.get(1).copied().unwrap_or(0) as usize;
                    let _ = tx.send(1, 0, 7, &vec![0xab; len]);
                }
            }
            _ => {}
        }
        match rx.try_recv(&mut buf) {
            Ok(Recv::Packet(p)) => assert!(p.payload.len() <= 256),
            Ok(Recv::Empty { .. }) => {
                let _ = rx.unmask_interrupts();
            }
            // A closed channel stays closed: stop like the root would.
            Err(_) => return,
        }
    }
});
