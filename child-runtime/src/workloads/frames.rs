//! Workload `frames`: raw Ethernet frames between children through the
//! root's switch (`ipc::kv` documents the args and lines): a pinger sends
//! frames of a set size to a peer one at a time and checks each echo byte
//! for byte; an echoer sends every frame back to its source.
//!
//! # Invariants
//! Only vCPU 0 works; every wait is bounded (a lost frame ends the pinger
//! with what it counted, never a hang).

use alloc::vec;

use ipc::child::ChildBootInfo;
use ipc::disk::{fill_pattern, pattern_mismatch};
use ipc::kv::{
    FRAMES_ECHO, FRAMES_ETHERTYPE, FRAMES_PING, FRAMES_SINK, FRAMES_STREAM, FramesBench,
    FramesEchoed, FramesServed,
};
use ipc::vmbus::network::{MAX_FRAME, Mac};
use partition_rt::println;

use crate::network::Adapter;
use crate::vmbus::WAIT_PATIENCE;

const HEADER: usize = 14;
/// Times a ping frame is sent before the pinger gives up.
const RETRIES: u32 = 20;
/// Yields a ping waits for its echo before sending it again.
const RETRY_YIELDS: u32 = 20_000;

/// Runs on every vCPU.
pub fn run(info: &ChildBootInfo, vcpu: u32) -> ! {
    if vcpu != 0 {
        partition_rt::halt_forever()
    }
    let [mode, peer, count, size] = info.args;
    let size = (size as usize).clamp(HEADER + 8, MAX_FRAME as usize);
    let mtu = ((size - HEADER) as u16).max(1500);
    let mut adapter = match Adapter::open(info, mtu) {
        Ok(adapter) => adapter,
        Err(e) => {
            println!("frames: no network adapter: {e:?}");
            partition_rt::halt_forever()
        }
    };
    let own = adapter.mac();
    let mut frame = vec![0u8; MAX_FRAME as usize];
    let mut echo = vec![0u8; MAX_FRAME as usize];
    match mode {
        FRAMES_PING => {
            let to = Mac::for_child(peer as u16);
            let mut intact = 0;
            for i in 0..count {
                frame[..6].copy_from_slice(&to.0);
                frame[6..12].copy_from_slice(&own.0);
                frame[12..14].copy_from_slice(&FRAMES_ETHERTYPE);
                fill_pattern(i, 0, &mut frame[HEADER..size]);
                // The echo: same bytes, addresses swapped. A frame can be
                // lost (the peer not listening yet, a full queue): wait a
                // while (yielding, so time passes without a timer), then
                // send it again.
                let mut got = None;
                'tries: for _ in 0..RETRIES {
                    if adapter.send_frame(&frame[..size]).is_err() {
                        break;
                    }
                    for _ in 0..RETRY_YIELDS {
                        match adapter.receive(&mut echo) {
                            Ok(Some(len)) if echo[12..14] == FRAMES_ETHERTYPE => {
                                got = Some(len);
                                break 'tries;
                            }
                            Ok(Some(_)) => {}
                            Ok(None) => crate::vmbus::wait(),
                            Err(_) => break 'tries,
                        }
                    }
                }
                let Some(len) = got else {
                    break;
                };
                if len == size
                    && echo[..6] == own.0
                    && echo[6..12] == to.0
                    && pattern_mismatch(i, 0, &echo[HEADER..size]).is_none()
                {
                    intact += 1;
                }
            }
            println!(
                "{}",
                FramesEchoed {
                    intact,
                    sent: count,
                    size: size as u64,
                    mtu: adapter.mtu()
                }
            );
        }
        FRAMES_ECHO => {
            let (mut echoed, mut largest) = (0u64, 0u64);
            let mut idle = 0u64;
            while echoed < count && idle < WAIT_PATIENCE {
                match adapter.receive(&mut frame) {
                    Ok(Some(len)) if len >= HEADER && frame[12..14] == FRAMES_ETHERTYPE => {
                        idle = 0;
                        let mut back = [0u8; 6];
                        back.copy_from_slice(&frame[6..12]);
                        frame.copy_within(0..6, 6);
                        frame[6..12].copy_from_slice(&own.0);
                        frame[..6].copy_from_slice(&back);
                        if adapter.send_frame(&frame[..len]).is_ok() {
                            echoed += 1;
                            largest = largest.max(len as u64);
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        idle += 1;
                        adapter.wait();
                    }
                    Err(_) => break,
                }
            }
            // The last echoes (sends go out in batches).
            let _ = adapter.flush();
            println!(
                "{}",
                FramesServed {
                    echoed,
                    largest,
                    mtu: adapter.mtu()
                }
            );
        }
        FRAMES_STREAM => {
            let to = Mac::for_child(peer as u16);
            frame[..6].copy_from_slice(&to.0);
            frame[6..12].copy_from_slice(&own.0);
            frame[12..14].copy_from_slice(&FRAMES_ETHERTYPE);
            // Let the receiver open its adapter first.
            for _ in 0..RETRY_YIELDS {
                crate::vmbus::wait();
            }
            let start = partition_rt::rdtsc();
            let mut sent = 0;
            for i in 0..count {
                frame[HEADER..HEADER + 8].copy_from_slice(&i.to_le_bytes());
                if adapter.send_frame(&frame[..size]).is_err() {
                    break;
                }
                sent += 1;
            }
            // The last batch.
            for _ in 0..RETRY_YIELDS {
                if adapter.flush().is_ok() {
                    break;
                }
                adapter.wait();
            }
            let cycles = partition_rt::rdtsc().wrapping_sub(start);
            println!(
                "{}",
                FramesBench {
                    who: "sender",
                    frames: sent,
                    size: size as u64,
                    cycles
                }
            );
        }
        FRAMES_SINK => {
            let (mut received, mut first, mut last, mut idle) = (0u64, 0u64, 0u64, 0u32);
            let mut out_of_order = 0u64;
            // The frame stays where the root delivered it (the receive
            // buffer, as the root's reference delivers into one): only its
            // header and sequence number are read.
            let head = &mut frame[..HEADER + 8];
            while received < count && idle < 10 * RETRY_YIELDS {
                match adapter.receive(head) {
                    Ok(Some(len)) if len == size && head[12..14] == FRAMES_ETHERTYPE => {
                        last = partition_rt::rdtsc();
                        if received == 0 {
                            first = last;
                        }
                        let mut sequence = [0u8; 8];
                        sequence.copy_from_slice(&head[HEADER..]);
                        if u64::from_le_bytes(sequence) != received {
                            out_of_order += 1;
                        }
                        received += 1;
                        idle = 0;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        idle += 1;
                        adapter.wait();
                    }
                    Err(_) => break,
                }
            }
            if out_of_order > 0 {
                println!("frames: {out_of_order} frames out of order");
            }
            println!(
                "{}",
                FramesBench {
                    who: "receiver",
                    frames: received,
                    size: size as u64,
                    cycles: last.wrapping_sub(first)
                }
            );
        }
        _ => println!("frames: unknown mode {mode}"),
    }
    partition_rt::halt_forever()
}
