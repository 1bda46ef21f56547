//! Host tests of the virtual switch: learning, flooding, anti-spoofing,
//! MTU per port (jumbo frames), fairness under a flood, MAC moves.

extern crate std;

use std::boxed::Box;
use std::vec::Vec;

use super::*;
use crate::network::FrameSink;

const A: Mac = Mac([2, 0, 0, 0, 0, 0xa]);
const B: Mac = Mac([2, 0, 0, 0, 0, 0xb]);
const C: Mac = Mac([2, 0, 0, 0, 0, 0xc]);
/// A host on the external network.
const X: Mac = Mac([0x52, 0x54, 0, 0, 0, 1]);
const Y: Mac = Mac([0x52, 0x54, 0, 0, 0, 2]);

type Small = Switch<4, 8>;

/// External port 0 and children 1 (A), 2 (B), 3 (C), all up at 1500.
fn switch() -> Box<Small> {
    let mut s = Box::new(Small::new());
    for port in 0..4 {
        s.set_port_up(port, true).unwrap();
    }
    s.set_port_mac(1, Some(A)).unwrap();
    s.set_port_mac(2, Some(B)).unwrap();
    s.set_port_mac(3, Some(C)).unwrap();
    s
}

fn frame(dst: Mac, src: Mac, len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ seed ^ (i >> 8) as u8)
        .collect();
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f
}

/// Drains until empty; every delivery as (port, frame).
fn drain_all<const P: usize, const D: usize>(s: &mut Switch<P, D>) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    while s.drain(|port, f, _| {
        out.push((port, f.to_vec()));
        true
    }) > 0
    {}
    out
}

#[test]
fn unknown_unicast_floods_then_learned_addresses_go_straight() {
    let mut s = switch();
    // A child to an unknown external host: flooded to every other port.
    let to_x = frame(X, A, 100, 1);
    assert_eq!(s.forward(1, &to_x), Decision::Flood(0b1101));
    // The host answers from outside: A is a child's assigned MAC, so
    // unicast to port 1 without learning; X is learned on port 0.
    assert_eq!(s.forward(0, &frame(A, X, 60, 2)), Decision::Unicast(1));
    assert_eq!(s.learned(X), Some(0));
    assert_eq!(s.forward(1, &to_x), Decision::Unicast(0));
    assert_eq!(s.forward(2, &frame(X, B, 60, 3)), Decision::Unicast(0));
    // Child to child by assigned MAC.
    assert_eq!(s.forward(2, &frame(C, B, 60, 4)), Decision::Unicast(3));
    // External to external (both outside): not sent back.
    assert_eq!(
        s.forward(0, &frame(X, Y, 60, 5)),
        Decision::Drop(DropReason::SamePort)
    );
    assert_eq!(s.counters(0).dropped(DropReason::SamePort), 1);
    // Children's MACs are never learned.
    assert_eq!(s.learned(A), None);
    assert_eq!(s.learned(B), None);
}

#[test]
fn broadcast_and_multicast_flood_to_every_other_port_that_is_up() {
    let mut s = switch();
    let multicast = Mac([0x01, 0, 0x5e, 0, 0, 0xfb]);
    assert_eq!(
        s.forward(2, &frame(Mac::BROADCAST, B, 64, 0)),
        Decision::Flood(0b1011)
    );
    assert_eq!(
        s.forward(0, &frame(multicast, X, 64, 0)),
        Decision::Flood(0b1110)
    );
    s.set_port_up(3, false).unwrap();
    assert_eq!(
        s.forward(1, &frame(Mac::BROADCAST, A, 64, 0)),
        Decision::Flood(0b0101)
    );
    // Unicast to a port that is down: dropped, counted there.
    assert_eq!(
        s.forward(1, &frame(C, A, 64, 0)),
        Decision::Drop(DropReason::PortDown)
    );
    assert_eq!(s.counters(3).dropped(DropReason::PortDown), 1);
    // Through the queues: a broadcast reaches each other port once, intact.
    let b = frame(Mac::BROADCAST, A, 300, 9);
    s.enqueue(1, &b, 0).unwrap();
    let got = drain_all(&mut *s);
    assert_eq!(got, [(0, b.clone()), (2, b.clone())]);
    assert_eq!(s.counters(2).tx_frames, 1);
    assert_eq!(s.counters(2).tx_bytes, 300);
    assert_eq!(s.counters(1).rx_frames, 3);
}

#[test]
fn a_child_forging_a_mac_gets_nothing_through() {
    let mut s = switch();
    // A (port 1) pretends to be B, to be C, to be an external host, to be
    // nobody; nothing is delivered, each drop counted on port 1.
    let forged = [
        frame(C, B, 64, 1),
        frame(Mac::BROADCAST, C, 64, 2),
        frame(X, X, 64, 3),
        frame(B, Mac([2, 9, 9, 9, 9, 9]), 64, 4),
    ];
    for f in &forged {
        s.enqueue(1, f, 0).unwrap();
    }
    assert!(drain_all(&mut *s).is_empty(), "a forged frame got through");
    assert_eq!(s.counters(1).dropped(DropReason::Spoofed), 4);
    assert_eq!(s.counters(1).rx_frames, 4);
    for port in [0, 2, 3] {
        assert_eq!(s.counters(port).tx_frames, 0);
    }
    // A forged frame does not teach the switch anything.
    assert_eq!(s.learned(X), None);
    assert_eq!(s.learned(B), None);
    // The external port cannot claim a child's MAC either.
    assert_eq!(
        s.forward(0, &frame(X, A, 64, 5)),
        Decision::Drop(DropReason::Spoofed)
    );
    assert_eq!(s.learned(A), None);
    // A child without a MAC sends nothing.
    s.set_port_mac(3, None).unwrap();
    assert_eq!(
        s.forward(3, &frame(X, C, 64, 6)),
        Decision::Drop(DropReason::Spoofed)
    );
    // Its own MAC works.
    assert_eq!(s.forward(1, &frame(B, A, 64, 7)), Decision::Unicast(2));
}

#[test]
fn runts_and_multicast_sources_are_dropped() {
    let mut s = switch();
    for len in [0, 5, 12, 13] {
        let f = frame(B, A, 14, 0);
        assert_eq!(
            s.forward(1, &f[..len]),
            Decision::Drop(DropReason::Runt),
            "{len}"
        );
    }
    assert_eq!(s.forward(1, &frame(B, A, 14, 0)), Decision::Unicast(2));
    assert_eq!(
        s.forward(0, &frame(B, Mac::BROADCAST, 64, 0)),
        Decision::Drop(DropReason::Malformed)
    );
    assert_eq!(s.counters(1).dropped(DropReason::Runt), 4);
    assert_eq!(s.counters(0).dropped(DropReason::Malformed), 1);
    assert_eq!(
        s.enqueue(1, &std::vec![0; MAX_FRAME as usize + 1], 0),
        Err(DropReason::Oversize)
    );
}

#[test]
fn jumbo_frames_pass_between_jumbo_ports_and_are_dropped_at_1500_ports() {
    let mut s = switch();
    s.set_port_mtu(1, 9000).unwrap();
    s.set_port_mtu(2, 9000).unwrap();
    // Port 3 (C) and the external port stay at 1500.
    let jumbo = frame(B, A, 9014, 0x5a);
    let ordinary = frame(C, A, 1514, 0x33);
    let jumbo_to_c = frame(C, A, 9014, 0x44);
    let jumbo_broadcast = frame(Mac::BROADCAST, A, 4000, 0x11);
    for f in [&jumbo, &ordinary, &jumbo_to_c, &jumbo_broadcast] {
        s.enqueue(1, f, 0).unwrap();
    }
    let got = drain_all(&mut *s);
    // The jumbo unicast arrives intact at B, the ordinary one at C, the
    // jumbo broadcast only at the other jumbo port.
    assert_eq!(
        got,
        [
            (2, jumbo.clone()),
            (3, ordinary.clone()),
            (2, jumbo_broadcast)
        ]
    );
    assert_eq!(got[0].1.len(), 9014);
    // Dropped for C's MTU: the unicast jumbo and the jumbo broadcast; the
    // broadcast also for the external port's.
    assert_eq!(s.counters(3).dropped(DropReason::Oversize), 2);
    assert_eq!(s.counters(0).dropped(DropReason::Oversize), 1);
    assert_eq!(s.counters(2).tx_bytes, 9014 + 4000);
    // A 1500 port cannot send a jumbo frame at all.
    assert_eq!(
        s.forward(3, &frame(B, C, 1515, 0)),
        Decision::Drop(DropReason::Oversize)
    );
    assert_eq!(s.counters(3).dropped(DropReason::Oversize), 3);
    assert_eq!(s.set_port_mtu(1, 9001), Err(SwitchError::BadMtu));
    assert_eq!(s.set_port_mtu(1, 575), Err(SwitchError::BadMtu));
    assert_eq!(s.set_port_mtu(9, 1500), Err(SwitchError::NoSuchPort));
}

#[test]
fn a_flooding_port_cannot_starve_the_others() {
    let mut s = switch();
    // Everyone sends to the external port; A floods, B and C send a
    // steady trickle. Each round: A fills its queue, B and C add 2 each,
    // then one drain pass.
    // The external host has spoken: frames to it are unicast.
    assert_eq!(s.forward(0, &frame(A, X, 64, 0)), Decision::Unicast(1));
    let mut from = [0u64; 4];
    for round in 0..50u8 {
        for i in 0..20u8 {
            let _ = s.enqueue(1, &frame(X, A, 64, i), 0);
        }
        for i in 0..2u8 {
            s.enqueue(2, &frame(X, B, 64, round ^ i), 0).unwrap();
            s.enqueue(3, &frame(X, C, 64, round ^ i), 0).unwrap();
        }
        s.drain(|port, f, _| {
            assert_eq!(port, 0);
            let src = source(f).unwrap();
            from[match src {
                A => 1,
                B => 2,
                _ => 3,
            }] += 1;
            true
        });
    }
    // B and C got every frame through (2 per pass, below the quantum);
    // A got at most its quantum per pass; the rest of A's flood was
    // dropped at its own queue, never at the others'.
    assert_eq!(from[2], 100);
    assert_eq!(from[3], 100);
    assert_eq!(from[1], 50 * QUANTUM as u64);
    assert_eq!(s.counters(2).total_drops(), 0);
    assert_eq!(s.counters(3).total_drops(), 0);
    assert!(s.counters(1).dropped(DropReason::QueueFull) > 500);
    assert_eq!(s.queued(2), 0);
    assert_eq!(s.queued(1), 8 - QUANTUM, "A refilled its queue each round");
}

#[test]
fn a_destination_without_buffers_counts_drops() {
    let mut s = switch();
    s.enqueue(1, &frame(B, A, 64, 0), 0).unwrap();
    s.enqueue(1, &frame(C, A, 64, 0), 0).unwrap();
    let mut delivered = Vec::new();
    s.drain(|port, _, _| {
        delivered.push(port);
        port != 2
    });
    assert_eq!(delivered, [2, 3]);
    assert_eq!(s.counters(2).dropped(DropReason::NoBuffer), 1);
    assert_eq!(s.counters(2).tx_frames, 0);
    assert_eq!(s.counters(3).tx_frames, 1);
}

#[test]
fn flags_travel_with_the_frame() {
    let mut s = switch();
    s.ingress(1).frame(&frame(B, A, 64, 0), 1);
    let mut flags = Vec::new();
    s.drain(|_, _, f| {
        flags.push(f);
        true
    });
    assert_eq!(flags, [1]);
}

#[test]
fn macs_are_unique_assignable_and_move_between_ports() {
    let mut s = switch();
    assert_eq!(s.set_port_mac(2, Some(A)), Err(SwitchError::MacInUse));
    assert_eq!(
        s.set_port_mac(2, Some(Mac::BROADCAST)),
        Err(SwitchError::NotAssignable)
    );
    assert_eq!(
        s.set_port_mac(2, Some(Mac::ZERO)),
        Err(SwitchError::NotAssignable)
    );
    assert_eq!(s.set_port_mac(0, Some(X)), Err(SwitchError::ExternalPort));
    assert_eq!(s.set_port_mac(4, Some(X)), Err(SwitchError::NoSuchPort));
    assert_eq!(s.set_port_mac(1, Some(A)), Ok(()), "same port again");
    // A migrates from port 1 to port 3 (C's port after C left).
    assert_eq!(s.move_mac(1, 3), Err(SwitchError::MacInUse));
    s.set_port_mac(3, None).unwrap();
    assert_eq!(s.move_mac(1, 3), Ok(A));
    assert_eq!((s.port_mac(1), s.port_mac(3)), (None, Some(A)));
    assert_eq!(s.move_mac(1, 2), Err(SwitchError::NoMac));
    assert_eq!(s.move_mac(0, 2), Err(SwitchError::ExternalPort));
    // Frames to A now go to port 3; port 1 can no longer send as A.
    assert_eq!(s.forward(2, &frame(A, B, 64, 0)), Decision::Unicast(3));
    assert_eq!(
        s.forward(1, &frame(B, A, 64, 0)),
        Decision::Drop(DropReason::Spoofed)
    );
    assert_eq!(s.forward(3, &frame(B, A, 64, 0)), Decision::Unicast(2));
    // The announcement floods A's new home to everyone else.
    s.announce(3).unwrap();
    let got = drain_all(&mut *s);
    let announced = announcement(A);
    assert_eq!(
        got,
        [
            (0, announced.to_vec()),
            (1, announced.to_vec()),
            (2, announced.to_vec())
        ]
    );
    assert_eq!(&announced[12..14], &[0x80, 0x35]);
    assert_eq!(source(&announced), Some(A));
    assert_eq!(s.announce(1), Err(SwitchError::NoMac));
}

#[test]
fn a_mac_learned_outside_moves_to_a_child_that_gets_it_assigned() {
    let mut s = switch();
    s.forward(0, &frame(A, X, 64, 0));
    assert_eq!(s.learned(X), Some(0));
    // The root assigns X to child port 3 (a VM migrated in with it).
    s.set_port_mac(3, Some(X)).unwrap();
    assert_eq!(s.learned(X), None);
    assert_eq!(s.forward(1, &frame(X, A, 64, 0)), Decision::Unicast(3));
}

#[test]
fn the_learning_table_evicts_the_least_recently_seen() {
    let mut s = switch();
    let host = |i: usize| Mac([0x52, 0, 0, 0, (i >> 8) as u8, i as u8]);
    for i in 0..LEARNED {
        s.forward(0, &frame(A, host(i), 64, 0));
    }
    // Host 0 seen again: host 1 is now the oldest.
    s.forward(0, &frame(A, host(0), 64, 0));
    s.forward(0, &frame(A, host(LEARNED), 64, 0));
    assert_eq!(s.learned(host(0)), Some(0));
    assert_eq!(s.learned(host(1)), None);
    assert_eq!(s.learned(host(LEARNED)), Some(0));
    // Unknown again: flooded.
    assert_eq!(
        s.forward(1, &frame(host(1), A, 64, 0)),
        Decision::Flood(0b1101)
    );
}

#[test]
fn a_port_going_down_empties_its_queue() {
    let mut s = switch();
    s.enqueue(1, &frame(B, A, 64, 0), 0).unwrap();
    assert_eq!(s.queued(1), 1);
    s.set_port_up(1, false).unwrap();
    assert_eq!(s.queued(1), 0);
    assert_eq!(
        s.enqueue(1, &frame(B, A, 64, 0), 0),
        Err(DropReason::PortDown)
    );
    assert!(drain_all(&mut *s).is_empty());
    for (i, r) in DropReason::ALL.iter().enumerate() {
        assert_eq!(*r as usize, i);
    }
}

#[test]
fn a_unicast_frame_waits_at_the_head_while_its_destination_has_no_room() {
    let mut s = switch();
    // A sends three frames to B; B has room for one now.
    for seed in 0..3 {
        s.enqueue(1, &frame(B, A, 64, seed), 0).unwrap();
    }
    let ingress = s.ingress(1);
    assert!(ingress.has_room(), "3 of 8 queued");
    let mut room = [usize::MAX, usize::MAX, 1, usize::MAX];
    let mut got = Vec::new();
    let taken = s.drain_within(&mut room, |port, f, _| {
        got.push((port, f[20]));
        true
    });
    assert_eq!(taken, 1);
    assert_eq!(got, [(2, frame(B, A, 64, 0)[20])]);
    assert_eq!(s.queued(1), 2, "the rest waits, in order");
    assert_eq!(s.counters(2).dropped(DropReason::NoBuffer), 0);
    // Room again: the next two arrive in order, nothing was lost.
    let mut room = [usize::MAX; 4];
    let taken = s.drain_within(&mut room, |port, f, _| {
        got.push((port, f[20]));
        true
    });
    assert_eq!(taken, 2);
    let expected: Vec<(usize, u8)> = (0..3).map(|seed| (2, frame(B, A, 64, seed)[20])).collect();
    assert_eq!(got, expected);
    assert_eq!(s.queued(1), 0);
    // A full queue says so to the provider.
    for seed in 0..8 {
        s.enqueue(1, &frame(B, A, 64, seed), 0).unwrap();
    }
    assert!(!s.ingress(1).has_room());
}

#[test]
fn frames_written_in_place_are_queued_like_enqueued_ones() {
    let mut sw: Box<Switch<3, 2>> = Box::default();
    for port in 0..3 {
        sw.set_port_up(port, true).unwrap();
    }
    sw.set_port_mac(1, Some(A)).unwrap();
    sw.set_port_mac(2, Some(B)).unwrap();
    let f = frame(B, A, 100, 1);
    // Reserved but not committed: nothing is queued.
    sw.reserve(1, f.len()).unwrap().copy_from_slice(&f);
    assert_eq!(sw.queued(1), 0);
    assert!(sw.commit(1, f.len(), 1));
    let g = frame(B, A, 200, 2);
    sw.reserve(1, g.len()).unwrap().copy_from_slice(&g);
    assert!(sw.commit(1, g.len(), 0));
    // Full queue, too long, unknown port, port down: no room, nothing queued.
    assert!(sw.reserve(1, 60).is_none());
    assert!(!sw.commit(1, 60, 0));
    assert!(sw.reserve(2, MAX_FRAME as usize + 1).is_none());
    assert!(sw.reserve(7, 60).is_none());
    sw.set_port_up(2, false).unwrap();
    assert!(sw.reserve(2, 60).is_none());
    sw.set_port_up(2, true).unwrap();
    let mut got = Vec::new();
    sw.drain(|port, frame, flags| {
        got.push((port, frame.to_vec(), flags));
        true
    });
    assert_eq!(got, [(2, f, 1), (2, g, 0)]);
    assert_eq!(sw.counters(2).tx_frames, 2);
}
