//! The API server over a wire to a client stack, both smoltcp: several
//! clients at once, a slow-loris client beside a good one, a flood of
//! malformed requests beside a good one.

use alloc::format;
use alloc::string::String;

use smoltcp::wire::EthernetAddress;

use super::*;
use crate::services::mgmt::conn;
use crate::services::mgmt::http::{Request, Response};
use crate::testing::http::{CLIENT, Clients, NODE, statuses};
use crate::testing::wire::{End, wire};

const MS: u64 = 1_000_000;

/// Answers every request `200 {"path":P}`; counts what it saw.
#[derive(Default)]
struct Count {
    handled: u64,
    refused: Vec<u16>,
}

impl Handler for Count {
    fn handle(&mut self, request: &Request, _now_ns: u64) -> Response {
        self.handled += 1;
        Response::json(
            200,
            format!("{{\"path\":\"{}\"}}", request.path).into_bytes(),
        )
    }

    fn events(&mut self, after: u64, _out: &mut Vec<u8>, _max: usize) -> u64 {
        after
    }

    fn refused_input(&mut self, status: u16) {
        self.refused.push(status);
    }
}

fn server(nic: End) -> ApiServer<End> {
    let at = Addressing {
        mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
        address: NODE,
        prefix: 24,
        gateway: CLIENT,
    };
    ApiServer::new(nic, at, 0).unwrap()
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: node\r\n\r\n").into_bytes()
}

/// Runs both ends 1 ms at a time from `now` until `done` (failing after
/// `limit_ms`); the time it ended.
fn run(
    s: &mut ApiServer<End>,
    h: &mut Count,
    c: &mut Clients,
    mut now: u64,
    limit_ms: u64,
    mut done: impl FnMut(&mut Clients, u64) -> bool,
) -> u64 {
    let end = now + limit_ms * MS;
    while now < end {
        let _ = s.poll(now, h);
        c.poll(now);
        if done(c, now) {
            return now;
        }
        now += MS;
    }
    panic!("not done within {limit_ms} ms");
}

#[test]
fn several_clients_are_served_at_once() {
    let (a, b) = wire();
    let mut s = server(a);
    let mut h = Count::default();
    let mut c = Clients::new(b);
    for i in 0..CONNECTIONS {
        // Each pipelines three requests, the last closing its connection.
        let mut r = get(&format!("/c{i}/1"));
        r.extend(get(&format!("/c{i}/2")));
        r.extend(format!("GET /c{i}/3 HTTP/1.1\r\nConnection: close\r\n\r\n").into_bytes());
        c.connect(&r);
    }
    let end = run(&mut s, &mut h, &mut c, 0, 5_000, |c, _| {
        c.peers.iter().all(|p| p.closed)
    });
    for p in &c.peers {
        assert_eq!(statuses(&p.got), [200, 200, 200]);
        let text = String::from_utf8_lossy(&p.got);
        assert!(text.contains("Connection: close"));
    }
    assert_eq!(h.handled, 3 * CONNECTIONS as u64);
    assert_eq!(s.accepted(), CONNECTIONS as u64);
    // Every socket listens again soon (no linger when the client closes
    // too): as many clients once more.
    let mut end = end;
    for _ in 0..20 {
        let _ = s.poll(end, &mut h);
        c.poll(end);
        end += MS;
    }
    assert_eq!(s.open(), 0);
    let first = c.peers.len();
    for i in 0..CONNECTIONS {
        let r = format!("GET /again{i} HTTP/1.1\r\nConnection: close\r\n\r\n");
        c.connect(r.as_bytes());
    }
    run(&mut s, &mut h, &mut c, end, 5_000, |c, _| {
        c.peers[first..].iter().all(|p| p.closed)
    });
    for p in &c.peers[first..] {
        assert_eq!(
            statuses(&p.got),
            [200],
            "{:?}",
            String::from_utf8_lossy(&p.got)
        );
    }
    assert_eq!(s.accepted(), 2 * CONNECTIONS as u64);
}

#[test]
fn a_slow_loris_client_does_not_stop_another_being_served() {
    let (a, b) = wire();
    let mut s = server(a);
    let mut h = Count::default();
    let mut c = Clients::new(b);
    let slow = c.connect(b"GET / HTTP/1.1\r\n");
    let good = c.connect(&get("/good/0"));
    let drip = b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut sent = 0;
    let mut asked = 1;
    let end = run(&mut s, &mut h, &mut c, 0, 15_000, |c, now| {
        // One byte a second from the slow client.
        if now % 1000 == 0 && sent < drip.len() {
            c.peers[slow].out.push(drip[sent]);
            sent += 1;
        }
        // The good one asks again as soon as it has its answer.
        if statuses(&c.peers[good].got).len() == asked && asked < 100 {
            let r = get(&format!("/good/{asked}"));
            c.peers[good].out.extend(r);
            asked += 1;
        }
        c.peers[slow].closed && asked == 100 && statuses(&c.peers[good].got).len() == 100
    });
    assert!(statuses(&c.peers[good].got).iter().all(|&s| s == 200));
    assert_eq!(statuses(&c.peers[slow].got), [408]);
    assert_eq!(h.refused, [408]);
    assert_eq!(h.handled, 100);
    assert!(
        (10_000 * MS..11_000 * MS).contains(&end),
        "the slow client was cut at 10 s: {end}"
    );
    assert!(!c.peers[good].closed);
}

#[test]
fn a_flood_of_malformed_requests_does_not_stop_a_good_client() {
    let (a, b) = wire();
    let mut s = server(a);
    let mut h = Count::default();
    let mut c = Clients::new(b);
    let good = c.connect(&get("/good/0"));
    let bad: [&[u8]; 5] = [
        b"BLAH\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
    ];
    let mut flooders: Vec<usize> = Vec::new();
    let mut asked = 1;
    run(&mut s, &mut h, &mut c, 0, 30_000, |c, _| {
        // Keep four bad clients connected at any time, 200 in all.
        let open = flooders.iter().filter(|&&i| !c.peers[i].closed).count();
        if open < 4 && flooders.len() < 200 {
            let i = c.connect(bad[flooders.len() % bad.len()]);
            flooders.push(i);
        }
        if statuses(&c.peers[good].got).len() == asked && asked < 50 {
            c.peers[good].out.extend(get(&format!("/good/{asked}")));
            asked += 1;
        }
        flooders.len() == 200
            && flooders.iter().all(|&i| c.peers[i].closed)
            && statuses(&c.peers[good].got).len() == 50
    });
    assert!(statuses(&c.peers[good].got).iter().all(|&s| s == 200));
    for (n, &i) in flooders.iter().enumerate() {
        let expect = [400, 400, 413, 501, 400][n % bad.len()];
        assert_eq!(statuses(&c.peers[i].got), [expect], "bad client {n}");
    }
    assert_eq!(h.refused.len(), 200);
    assert_eq!(h.handled, 50);
    assert_eq!(s.accepted(), 201);
}

#[test]
fn an_idle_server_sleeps_and_an_idle_client_is_let_go() {
    let (a, b) = wire();
    let mut s = server(a);
    let mut h = Count::default();
    assert_eq!(s.poll(0, &mut h), Poll::Idle(None));
    let mut c = Clients::new(b);
    let idle = c.connect(b"");
    let mut now = 0;
    while s.open() == 0 {
        let _ = s.poll(now, &mut h);
        c.poll(now);
        now += MS;
        assert!(now < 1_000 * MS, "never accepted");
    }
    let accepted_at = now - MS;
    for _ in 0..100 {
        let _ = s.poll(now, &mut h);
        c.poll(now);
        now += MS;
    }
    // Nothing to do until the connection's idle timeout.
    let Poll::Idle(Some(wake)) = s.poll(now, &mut h) else {
        panic!("not idle with a deadline");
    };
    assert!(wake > now && wake <= accepted_at + conn::IDLE_TIMEOUT_NS);
    let end = run(
        &mut s,
        &mut h,
        &mut c,
        accepted_at + conn::IDLE_TIMEOUT_NS - 10 * MS,
        1_000,
        |c, _| c.peers[idle].closed,
    );
    assert!(end >= accepted_at + conn::IDLE_TIMEOUT_NS);
    assert!(c.peers[idle].got.is_empty());
    assert!(h.refused.is_empty());
}

#[test]
fn a_new_client_is_served_while_every_socket_lingers() {
    let (a, b) = wire();
    let mut s = server(a);
    let mut h = Count::default();
    let mut c = Clients::new(b);
    // Every socket answers and closes, and no client closes its side: each
    // socket lingers for its client's FIN.
    for i in 0..CONNECTIONS {
        let r = format!("GET /held{i} HTTP/1.1\r\nConnection: close\r\n\r\n");
        let p = c.connect(r.as_bytes());
        c.peers[p].hold = true;
    }
    let now = run(&mut s, &mut h, &mut c, 0, 2_000, |c, _| {
        c.peers.iter().all(|p| p.closed)
    });
    for p in &c.peers {
        assert_eq!(statuses(&p.got), [200]);
    }
    // Well within the linger: a new client is answered all the same.
    let late = c.connect(b"GET /late HTTP/1.1\r\nConnection: close\r\n\r\n");
    let end = run(&mut s, &mut h, &mut c, now, 1_000, |c, _| {
        c.peers[late].closed
    });
    assert!(end < now + LINGER_NS);
    assert_eq!(statuses(&c.peers[late].got), [200]);
}
