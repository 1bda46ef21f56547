//! Host tests of the ring: wrap-around at every offset, two real threads
//! with random sizes and checksums, signalling rules, hostile indices.

extern crate std;

use core::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::vec::Vec;

use super::*;
use crate::vmbus::memory::AtomicRingMemory;
use crate::vmbus::packet::KIND_MESSAGE;

fn words(data_bytes: usize) -> Vec<AtomicU64> {
    (0..(CONTROL_BYTES + data_bytes) / 8)
        .map(|_| AtomicU64::new(0))
        .collect()
}

fn pair(
    mem: &[AtomicU64],
) -> (
    Producer<AtomicRingMemory<'_>>,
    Consumer<AtomicRingMemory<'_>>,
) {
    let m = AtomicRingMemory::new(mem);
    initialize(&m).unwrap();
    (Producer::new(m).unwrap(), Consumer::new(m).unwrap())
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn fill(seq: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    (0..len).map(|_| rng.next() as u8).collect()
}

#[test]
fn packets_wrap_at_every_offset() {
    let mem = words(256);
    let (mut tx, mut rx) = pair(&mem);
    let mut buf = [0u8; MAX_PAYLOAD];
    // Walk the write index through every 8-byte offset with every payload
    // size up to the largest that fits, so headers and payloads straddle
    // the end of the data area in every possible way.
    let mut seq = 0u64;
    for start in (0..256).step_by(8) {
        for len in 0..=232usize {
            // Move both indices to `start` with a filler packet first.
            let here = tx.write;
            let gap = (start + 256 - here as usize) % 256;
            if gap >= HEADER_BYTES {
                let filler = fill(seq, gap - HEADER_BYTES);
                assert_eq!(
                    tx.send(KIND_MESSAGE, 0, seq, &filler),
                    Ok(Sent::Written { signal: true })
                );
                let got = rx.try_recv(&mut buf).unwrap();
                assert!(matches!(got, Recv::Packet(p) if p.payload == &filler[..]));
            } else if gap != 0 {
                continue;
            }
            seq += 1;
            let data = fill(seq, len);
            assert_eq!(
                tx.send(KIND_MESSAGE, 1, seq, &data),
                Ok(Sent::Written { signal: true })
            );
            match rx.try_recv(&mut buf).unwrap() {
                Recv::Packet(p) => {
                    assert_eq!(p.payload, &data[..], "start {start} len {len}");
                    assert_eq!(p.header.transaction_id.get(), seq);
                    assert_eq!(p.header.flags.get(), 1);
                }
                other => panic!("start {start} len {len}: {other:?}"),
            }
            assert!(matches!(rx.try_recv(&mut buf), Ok(Recv::Empty { .. })));
        }
    }
}

#[test]
fn a_full_ring_keeps_one_slot_and_asks_for_a_signal() {
    let mem = words(128);
    let (mut tx, mut rx) = pair(&mem);
    let mut buf = [0u8; 256];
    // 5 packets of 24 bytes = 120 bytes: the sixth does not fit (8 stay free).
    for i in 0..5 {
        let signal = i == 0;
        assert_eq!(
            tx.send(KIND_MESSAGE, 0, i, &[i as u8; 8]),
            Ok(Sent::Written { signal })
        );
    }
    assert_eq!(tx.send(KIND_MESSAGE, 0, 5, &[5; 8]), Ok(Sent::Full));
    assert_eq!(tx.memory().load_u32_acquire(PENDING_SEND_SIZE), 24);
    // Draining signals the producer once, when the ring runs empty.
    for _ in 0..5 {
        assert!(matches!(rx.try_recv(&mut buf), Ok(Recv::Packet(_))));
    }
    assert_eq!(
        rx.try_recv(&mut buf),
        Ok(Recv::Empty {
            signal_producer: true
        })
    );
    assert_eq!(
        rx.try_recv(&mut buf),
        Ok(Recv::Empty {
            signal_producer: false
        })
    );
    assert_eq!(tx.memory().load_u32_acquire(PENDING_SEND_SIZE), 0);
    assert_eq!(
        tx.send(KIND_MESSAGE, 0, 5, &[5; 8]),
        Ok(Sent::Written { signal: true })
    );
    // Too large for the ring at all: an error, not "full".
    assert_eq!(
        tx.send(KIND_MESSAGE, 0, 6, &[0; 120]),
        Err(RingError::PayloadTooLarge(120))
    );
}

#[test]
fn signals_only_on_empty_to_non_empty_and_not_while_masked() {
    let mem = words(4096);
    let (mut tx, mut rx) = pair(&mem);
    let mut buf = [0u8; 64];
    assert_eq!(
        tx.send(KIND_MESSAGE, 0, 0, b"a"),
        Ok(Sent::Written { signal: true })
    );
    assert_eq!(
        tx.send(KIND_MESSAGE, 0, 1, b"b"),
        Ok(Sent::Written { signal: false })
    );
    assert!(matches!(rx.try_recv(&mut buf), Ok(Recv::Packet(_))));
    assert_eq!(
        tx.send(KIND_MESSAGE, 0, 2, b"c"),
        Ok(Sent::Written { signal: false })
    );
    while let Ok(Recv::Packet(_)) = rx.try_recv(&mut buf) {}
    rx.mask_interrupts();
    assert_eq!(
        tx.send(KIND_MESSAGE, 0, 3, b"d"),
        Ok(Sent::Written { signal: false })
    );
    assert_eq!(rx.unmask_interrupts(), Ok(false));
    while let Ok(Recv::Packet(_)) = rx.try_recv(&mut buf) {}
    assert_eq!(rx.unmask_interrupts(), Ok(true));
    assert_eq!(
        tx.send(KIND_MESSAGE, 0, 4, b"e"),
        Ok(Sent::Written { signal: true })
    );
}

#[test]
fn hostile_indices_and_lengths_are_errors() {
    let mem = words(256);
    let m = AtomicRingMemory::new(&mem);
    let (mut tx, mut rx) = pair(&mem);
    let mut buf = [0u8; 64];
    // Write index out of range, unaligned.
    for bad in [256u32, 4, u32::MAX, 0x8000_0000] {
        m.store_u32_release(WRITE_INDEX, bad);
        assert_eq!(
            rx.try_recv(&mut buf),
            Err(RingError::WriteIndexOutOfRange(bad))
        );
    }
    // A header claiming more than the ring holds.
    let mem = words(256);
    let m = AtomicRingMemory::new(&mem);
    let (mut tx2, mut rx2) = pair(&mem);
    tx2.send(KIND_MESSAGE, 0, 0, &[1; 16]).unwrap();
    m.write(CONTROL_BYTES + 4, &100u32.to_le_bytes());
    assert_eq!(rx2.try_recv(&mut buf), Err(RingError::BadPacketLength(100)));
    m.write(CONTROL_BYTES + 4, &u32::MAX.to_le_bytes());
    assert_eq!(
        rx2.try_recv(&mut buf),
        Err(RingError::BadPacketLength(u32::MAX))
    );
    // Longer than the receiver's buffer.
    m.write(CONTROL_BYTES + 4, &16u32.to_le_bytes());
    assert_eq!(
        rx2.try_recv(&mut buf[..8]),
        Err(RingError::BadPacketLength(16))
    );
    // A write index that leaves less than a header.
    let mem = words(256);
    let m = AtomicRingMemory::new(&mem);
    let (_, mut rx3) = pair(&mem);
    m.store_u32_release(WRITE_INDEX, 8);
    assert_eq!(rx3.try_recv(&mut buf), Err(RingError::BadPacketLength(8)));
    // The producer side: a read index out of range.
    m.store_u32_release(READ_INDEX, 12);
    assert!(Producer::new(m).is_err());
    let _ = tx.send(KIND_MESSAGE, 0, 0, &[0; 8]);
    let mem4 = words(256);
    let m4 = AtomicRingMemory::new(&mem4);
    let (mut tx4, _) = pair(&mem4);
    m4.store_u32_release(READ_INDEX, 1000);
    assert_eq!(
        tx4.send(KIND_MESSAGE, 0, 0, &[0; 8]),
        Err(RingError::ReadIndexOutOfRange(1000))
    );
    // Bad layouts.
    let tiny = words(8);
    assert_eq!(
        initialize(&AtomicRingMemory::new(&tiny)),
        Err(RingError::BadLayout)
    );
    assert!(Consumer::new(AtomicRingMemory::new(&tiny[..10])).is_err());
}

/// Two threads, random sizes, a checksum over everything; every payload
/// carries its sequence number and is checked byte for byte.
#[test]
fn two_threads_random_sizes_checksums() {
    const MESSAGES: u64 = 20_000;
    let mem: Arc<Vec<AtomicU64>> = Arc::new(words(8192));
    initialize(&AtomicRingMemory::new(&mem)).unwrap();
    let tx_mem = Arc::clone(&mem);
    let producer = std::thread::spawn(move || {
        let mut tx = Producer::new(AtomicRingMemory::new(&tx_mem)).unwrap();
        let mut rng = Rng(42);
        let mut sum = 0u64;
        let mut fulls = 0u64;
        for seq in 0..MESSAGES {
            let len = (rng.next() % 600) as usize;
            let data = fill(seq, len);
            sum = data
                .iter()
                .fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(b as u64));
            loop {
                match tx.send(KIND_MESSAGE, 0, seq, &data).unwrap() {
                    Sent::Written { .. } => break,
                    Sent::Full => {
                        fulls += 1;
                        std::thread::yield_now();
                    }
                }
            }
        }
        (sum, fulls)
    });
    let mut rx = Consumer::new(AtomicRingMemory::new(&mem)).unwrap();
    let mut buf = [0u8; MAX_PAYLOAD];
    let mut sum = 0u64;
    let mut seq = 0u64;
    while seq < MESSAGES {
        match rx.try_recv(&mut buf).unwrap() {
            Recv::Packet(p) => {
                assert_eq!(p.header.transaction_id.get(), seq);
                assert_eq!(p.payload, &fill(seq, p.payload.len())[..]);
                sum = p
                    .payload
                    .iter()
                    .fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(b as u64));
                seq += 1;
            }
            Recv::Empty { .. } => std::hint::spin_loop(),
        }
    }
    let (sent_sum, _fulls) = producer.join().unwrap();
    assert_eq!(sum, sent_sum);
    assert!(matches!(rx.try_recv(&mut buf), Ok(Recv::Empty { .. })));
}

/// Two threads with the full sleep/wake protocol: the consumer unmasks and
/// "sleeps" (waits for a signal count to change); the producer signals
/// only when told to. No wake-up may be lost, or the test hangs.
#[test]
fn no_lost_wakeups_between_threads() {
    use core::sync::atomic::{AtomicU64 as Counter, Ordering as O};
    const MESSAGES: u64 = 50_000;
    let mem: Arc<Vec<AtomicU64>> = Arc::new(words(1024));
    initialize(&AtomicRingMemory::new(&mem)).unwrap();
    let to_consumer = Arc::new(Counter::new(0));
    let to_producer = Arc::new(Counter::new(0));
    let (tx_mem, tc, tp) = (
        Arc::clone(&mem),
        Arc::clone(&to_consumer),
        Arc::clone(&to_producer),
    );
    let producer = std::thread::spawn(move || {
        let mut tx = Producer::new(AtomicRingMemory::new(&tx_mem)).unwrap();
        for seq in 0..MESSAGES {
            loop {
                let seen = tp.load(O::Acquire);
                match tx.send(KIND_MESSAGE, 0, seq, &seq.to_le_bytes()).unwrap() {
                    Sent::Written { signal } => {
                        if signal {
                            tc.fetch_add(1, O::AcqRel);
                        }
                        break;
                    }
                    Sent::Full => {
                        while tp.load(O::Acquire) == seen {
                            std::thread::yield_now();
                        }
                    }
                }
            }
        }
    });
    let mut rx = Consumer::new(AtomicRingMemory::new(&mem)).unwrap();
    let mut buf = [0u8; 64];
    let mut seq = 0;
    while seq < MESSAGES {
        let seen = to_consumer.load(O::Acquire);
        match rx.try_recv(&mut buf).unwrap() {
            Recv::Packet(p) => {
                assert_eq!(p.payload, &seq.to_le_bytes());
                seq += 1;
            }
            Recv::Empty { signal_producer } => {
                if signal_producer {
                    to_producer.fetch_add(1, O::AcqRel);
                }
                if rx.unmask_interrupts().unwrap() {
                    while to_consumer.load(O::Acquire) == seen {
                        std::thread::yield_now();
                    }
                }
            }
        }
    }
    producer.join().unwrap();
    let signals = to_consumer.load(O::Acquire);
    assert!(signals <= MESSAGES);
}

#[test]
fn deferred_sends_decide_once_per_batch() {
    let mem = words(4096);
    let (mut tx, mut rx) = pair(&mem);
    let mut buf = [0u8; 64];
    for i in 0..5u64 {
        assert_eq!(
            tx.send_deferred(KIND_MESSAGE, 0, i, b"x"),
            Ok(Sent::Written { signal: false })
        );
    }
    // The consumer reads two of them at once (no signal needed for that)...
    assert!(matches!(rx.try_recv(&mut buf), Ok(Recv::Packet(_))));
    assert!(matches!(rx.try_recv(&mut buf), Ok(Recv::Packet(_))));
    // ...but it stopped inside the batch with its interrupt unmasked: signal.
    assert_eq!(tx.flush(), Ok(true));
    assert_eq!(tx.flush(), Ok(false), "nothing new");
    while let Ok(Recv::Packet(_)) = rx.try_recv(&mut buf) {}
    // Everything read before the decision: nobody waits for these.
    tx.send_deferred(KIND_MESSAGE, 0, 9, b"y").unwrap();
    assert!(matches!(rx.try_recv(&mut buf), Ok(Recv::Packet(_))));
    assert_eq!(tx.flush(), Ok(false));
    // A consumer behind the batch already has work: no signal.
    tx.send(KIND_MESSAGE, 0, 10, b"z").unwrap();
    tx.send_deferred(KIND_MESSAGE, 0, 11, b"w").unwrap();
    assert_eq!(tx.flush(), Ok(false));
}

/// The sleep/wake protocol with batched signal decisions: no wake-up lost.
#[test]
fn no_lost_wakeups_with_batches() {
    use core::sync::atomic::{AtomicU64 as Counter, Ordering as O};
    const MESSAGES: u64 = 50_000;
    let mem: Arc<Vec<AtomicU64>> = Arc::new(words(1024));
    initialize(&AtomicRingMemory::new(&mem)).unwrap();
    let to_consumer = Arc::new(Counter::new(0));
    let (tx_mem, tc) = (Arc::clone(&mem), Arc::clone(&to_consumer));
    let producer = std::thread::spawn(move || {
        let mut tx = Producer::new(AtomicRingMemory::new(&tx_mem)).unwrap();
        for seq in 0..MESSAGES {
            loop {
                match tx
                    .send_deferred(KIND_MESSAGE, 0, seq, &seq.to_le_bytes())
                    .unwrap()
                {
                    Sent::Written { .. } => break,
                    Sent::Full => {
                        if tx.flush().unwrap() {
                            tc.fetch_add(1, O::AcqRel);
                        }
                        std::thread::yield_now();
                    }
                }
            }
            if seq % 7 == 6 && tx.flush().unwrap() {
                tc.fetch_add(1, O::AcqRel);
            }
        }
        if tx.flush().unwrap() {
            tc.fetch_add(1, O::AcqRel);
        }
    });
    let mut rx = Consumer::new(AtomicRingMemory::new(&mem)).unwrap();
    let mut buf = [0u8; 64];
    let mut seq = 0;
    while seq < MESSAGES {
        let seen = to_consumer.load(O::Acquire);
        match rx.try_recv(&mut buf).unwrap() {
            Recv::Packet(p) => {
                assert_eq!(p.payload, &seq.to_le_bytes());
                seq += 1;
            }
            Recv::Empty { .. } => {
                if rx.unmask_interrupts().unwrap() {
                    while to_consumer.load(O::Acquire) == seen {
                        std::thread::yield_now();
                    }
                }
            }
        }
    }
    producer.join().unwrap();
}
