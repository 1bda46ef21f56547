//! Benchmark: capvisor's VMBus ring against the `rtrb` crate, two real
//! threads on shared memory. capvisor's side includes the whole packet
//! path: postcard-encode a message (sequence number + bytes) into a
//! scratch buffer, copy it into the ring behind its header, then read,
//! length-check and postcard-decode it on the other thread, checking the
//! sequence number. rtrb moves a `{ seq, [u8; N] }` value through its
//! queue (no framing), sized to hold the same bytes as the ring. Both
//! consumers read every byte they receive (a checksum), as a real one would.
//!
//! Prints, for 64-byte and 1500-byte messages, messages per second of both
//! and the ratio (capvisor / rtrb; above 1.0 means faster) — capvisor once
//! with the signal decision (a full barrier) after every message
//! (`Producer::send`) and once with one decision per [`BATCH`] messages
//! (`send_deferred` + `flush`) — then the ping-pong round-trip latency of
//! both (a decision per message). Each figure is the best of [`RUNS`] runs.

use std::hint::black_box;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use ipc::vmbus::memory::AtomicRingMemory;
use ipc::vmbus::packet::{self, Bytes, MAX_PAYLOAD};
use ipc::vmbus::ring::{CONTROL_BYTES, Consumer, Producer, Recv, Sent, initialize};
use serde::{Deserialize, Serialize};

const RUNS: usize = 3;
/// Data area of every ring (and the bytes rtrb's queue holds).
const RING_BYTES: usize = 64 << 10;

#[derive(Serialize, Deserialize)]
struct Message<'a> {
    seq: u64,
    #[serde(borrow)]
    bytes: Bytes<'a>,
}

fn ring_words() -> Vec<AtomicU64> {
    let words: Vec<AtomicU64> = (0..(CONTROL_BYTES + RING_BYTES) / 8)
        .map(|_| AtomicU64::new(0))
        .collect();
    initialize(&AtomicRingMemory::new(&words)).expect("ring layout");
    words
}

/// Sends one message, waiting while the ring is full. `batch`: leave the
/// signal decision to a later [`Producer::flush`] (every [`BATCH`] messages).
fn send(
    tx: &mut Producer<AtomicRingMemory<'_>>,
    seq: u64,
    bytes: &[u8],
    scratch: &mut [u8],
    batch: bool,
) {
    let message = Message {
        seq,
        bytes: Bytes(bytes),
    };
    let Ok(payload) = packet::encode(&message, scratch) else {
        panic!("message too large")
    };
    loop {
        let sent = if batch {
            tx.send_deferred(packet::KIND_MESSAGE, 0, seq, payload)
        } else {
            tx.send(packet::KIND_MESSAGE, 0, seq, payload)
        };
        match sent.expect("send") {
            Sent::Written { .. } => break,
            Sent::Full => {
                // Decide on what is out before waiting.
                black_box(tx.flush().expect("flush"));
                std::hint::spin_loop();
            }
        }
    }
    if batch && seq % BATCH == BATCH - 1 {
        black_box(tx.flush().expect("flush"));
    }
}

/// Messages per signal decision in the batched runs.
const BATCH: u64 = 32;

/// Receives one message, checks its sequence number and returns the sum of
/// its bytes (a consumer reads what it is sent).
fn receive(rx: &mut Consumer<AtomicRingMemory<'_>>, expected: u64, buf: &mut [u8]) -> u64 {
    loop {
        match rx.try_recv(buf).expect("receive") {
            Recv::Packet(p) => {
                let m: Message<'_> = packet::decode(&p).expect("decode");
                assert_eq!(m.seq, expected);
                return checksum(m.bytes.0);
            }
            Recv::Empty { .. } => std::hint::spin_loop(),
        }
    }
}

fn capvisor_throughput(size: usize, messages: u64, batch: bool) -> Duration {
    let words = ring_words();
    let data = vec![0x5au8; size];
    std::thread::scope(|s| {
        let start = Instant::now();
        s.spawn(|| {
            let mut tx = Producer::new(AtomicRingMemory::new(&words)).expect("producer");
            let mut scratch = [0u8; MAX_PAYLOAD];
            for seq in 0..messages {
                send(&mut tx, seq, &data, &mut scratch, batch);
            }
            black_box(tx.flush().expect("flush"));
        });
        let mut rx = Consumer::new(AtomicRingMemory::new(&words)).expect("consumer");
        // A polling consumer masks its interrupt (no signals wanted).
        rx.mask_interrupts();
        let mut buf = [0u8; MAX_PAYLOAD];
        let mut sum = 0u64;
        for seq in 0..messages {
            sum += receive(&mut rx, seq, &mut buf);
        }
        black_box(sum);
        start.elapsed()
    })
}

/// The sum of the bytes (both consumers read every byte they get).
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().map(|&b| u64::from(b)).sum()
}

struct Fixed<const N: usize> {
    seq: u64,
    bytes: [u8; N],
}

fn rtrb_throughput<const N: usize>(messages: u64) -> Duration {
    let (mut tx, mut rx) = rtrb::RingBuffer::<Fixed<N>>::new(RING_BYTES / (N + 8));
    std::thread::scope(|s| {
        let start = Instant::now();
        s.spawn(move || {
            for seq in 0..messages {
                let mut item = Fixed {
                    seq,
                    bytes: [0x5au8; N],
                };
                loop {
                    match tx.push(item) {
                        Ok(()) => break,
                        Err(rtrb::PushError::Full(back)) => {
                            item = back;
                            std::hint::spin_loop();
                        }
                    }
                }
            }
        });
        let mut sum = 0u64;
        for seq in 0..messages {
            let item = loop {
                match rx.pop() {
                    Ok(item) => break item,
                    Err(_) => std::hint::spin_loop(),
                }
            };
            assert_eq!(item.seq, seq);
            sum += checksum(&item.bytes);
        }
        black_box(sum);
        start.elapsed()
    })
}

fn capvisor_ping_pong(rounds: u64) -> Duration {
    let (ping, pong) = (ring_words(), ring_words());
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut rx = Consumer::new(AtomicRingMemory::new(&ping)).expect("consumer");
            rx.mask_interrupts();
            let mut tx = Producer::new(AtomicRingMemory::new(&pong)).expect("producer");
            let (mut buf, mut scratch) = ([0u8; 256], [0u8; 256]);
            for seq in 0..rounds {
                receive(&mut rx, seq, &mut buf);
                send(&mut tx, seq, &[1; 8], &mut scratch, false);
            }
        });
        let mut tx = Producer::new(AtomicRingMemory::new(&ping)).expect("producer");
        let mut rx = Consumer::new(AtomicRingMemory::new(&pong)).expect("consumer");
        rx.mask_interrupts();
        let (mut buf, mut scratch) = ([0u8; 256], [0u8; 256]);
        let start = Instant::now();
        for seq in 0..rounds {
            send(&mut tx, seq, &[1; 8], &mut scratch, false);
            receive(&mut rx, seq, &mut buf);
        }
        start.elapsed()
    })
}

fn rtrb_ping_pong(rounds: u64) -> Duration {
    let (mut ping_tx, mut ping_rx) = rtrb::RingBuffer::<Fixed<8>>::new(1024);
    let (mut pong_tx, mut pong_rx) = rtrb::RingBuffer::<Fixed<8>>::new(1024);
    std::thread::scope(|s| {
        s.spawn(move || {
            for seq in 0..rounds {
                let item = loop {
                    if let Ok(item) = ping_rx.pop() {
                        break item;
                    }
                    std::hint::spin_loop();
                };
                assert_eq!(item.seq, seq);
                while pong_tx.push(Fixed { seq, bytes: [1; 8] }).is_err() {
                    std::hint::spin_loop();
                }
            }
        });
        let start = Instant::now();
        for seq in 0..rounds {
            while ping_tx.push(Fixed { seq, bytes: [1; 8] }).is_err() {
                std::hint::spin_loop();
            }
            let item = loop {
                if let Ok(item) = pong_rx.pop() {
                    break item;
                }
                std::hint::spin_loop();
            };
            assert_eq!(item.seq, seq);
        }
        start.elapsed()
    })
}

fn best(mut f: impl FnMut() -> Duration) -> Duration {
    (0..RUNS).map(|_| f()).min().unwrap_or_default()
}

fn rate(messages: u64, d: Duration) -> f64 {
    messages as f64 / d.as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (e.g. `cargo test
    // --benches`) runs a short smoke version.
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { 1 } else { 100 };
    println!(
        "vmbus ring vs rtrb (two threads, best of {RUNS}; capvisor includes postcard framing)"
    );
    for (size, messages) in [(64usize, 4_000_000u64), (1500, 1_000_000)] {
        let messages = messages / scale;
        let ours = best(|| capvisor_throughput(size, messages, false));
        let batched = best(|| capvisor_throughput(size, messages, true));
        let theirs = match size {
            64 => best(|| rtrb_throughput::<64>(messages)),
            _ => best(|| rtrb_throughput::<1500>(messages)),
        };
        let (a, b, c) = (
            rate(messages, ours),
            rate(messages, batched),
            rate(messages, theirs),
        );
        println!(
            "  {size:>4}-byte messages: rtrb {:>6.2} M msg/s; capvisor {:>6.2} M msg/s (ratio {:.2}) \
             with a signal decision per message, {:>6.2} M msg/s (ratio {:.2}) per {BATCH}",
            c / 1e6,
            a / 1e6,
            a / c,
            b / 1e6,
            b / c
        );
    }
    let rounds = 200_000 / scale;
    let ours = best(|| capvisor_ping_pong(rounds));
    let theirs = best(|| rtrb_ping_pong(rounds));
    let per = |d: Duration| d.as_nanos() as f64 / rounds as f64;
    println!(
        "  ping-pong round trip: capvisor {:.0} ns, rtrb {:.0} ns, ratio (rtrb / capvisor) {:.2}",
        per(ours),
        per(theirs),
        per(theirs) / per(ours)
    );
}
