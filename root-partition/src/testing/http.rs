//! A client stack for HTTP tests: any number of connections to the
//! node's API port over the in-memory wire, and the statuses of what came
//! back.

use std::vec;
use std::vec::Vec;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

use super::wire::End;
use crate::services::mgmt::instant;
use crate::services::mgmt::server::API_PORT;

/// The node's address in these tests.
pub const NODE: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
/// The clients' address (also the node's gateway).
pub const CLIENT: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);

/// One client connection: what it still has to send, what it got.
pub struct Peer {
    handle: SocketHandle,
    /// What it still has to send.
    pub out: Vec<u8>,
    /// What it received.
    pub got: Vec<u8>,
    /// The server closed (or reset) the connection.
    pub closed: bool,
    /// Never closes its side (a client that keeps a finished connection
    /// half-open).
    pub hold: bool,
}

/// A client stack with any number of connections to the node.
pub struct Clients {
    nic: End,
    iface: Interface,
    sockets: SocketSet<'static>,
    /// The connections, by index.
    pub peers: Vec<Peer>,
    next_port: u16,
}

impl Clients {
    /// The stack on `nic`.
    pub fn new(mut nic: End) -> Clients {
        let mac = EthernetAddress([2, 0, 0, 0, 0, 2]);
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ethernet(mac)),
            &mut nic,
            instant(0),
        );
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(CLIENT), 24));
        });
        Clients {
            nic,
            iface,
            sockets: SocketSet::new(vec![]),
            peers: Vec::new(),
            next_port: 40_000,
        }
    }

    /// A new connection sending `bytes`; its index.
    pub fn connect(&mut self, bytes: &[u8]) -> usize {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 64 * 1024]),
            tcp::SocketBuffer::new(vec![0; 16 * 1024]),
        );
        socket
            .connect(
                self.iface.context(),
                (IpAddress::Ipv4(NODE), API_PORT),
                self.next_port,
            )
            .unwrap();
        self.next_port += 1;
        self.peers.push(Peer {
            handle: self.sockets.add(socket),
            out: bytes.to_vec(),
            got: Vec::new(),
            closed: false,
            hold: false,
        });
        self.peers.len() - 1
    }

    /// Moves what can move at `now`.
    pub fn poll(&mut self, now: u64) {
        self.iface
            .poll(instant(now), &mut self.nic, &mut self.sockets);
        for p in &mut self.peers {
            let s = self.sockets.get_mut::<tcp::Socket<'_>>(p.handle);
            if s.can_send() && !p.out.is_empty() {
                let n = s.send_slice(&p.out).unwrap();
                p.out.drain(..n);
            }
            while s.can_recv() {
                let _ = s.recv(|d| {
                    p.got.extend_from_slice(d);
                    (d.len(), ())
                });
            }
            if !p.closed && !s.may_recv() && s.state() != tcp::State::SynSent {
                p.closed = true;
                if !p.hold {
                    s.close();
                }
            }
        }
    }
}

/// The statuses of the answers in `bytes` (all complete ones).
pub fn statuses(mut bytes: &[u8]) -> Vec<u16> {
    let mut all = Vec::new();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut r = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = r.parse(bytes) else {
            return all;
        };
        let length: usize = r
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map(|h| core::str::from_utf8(h.value).unwrap().parse().unwrap())
            .unwrap_or(0);
        if bytes.len() < n + length {
            return all;
        }
        all.push(r.code.unwrap());
        bytes = &bytes[n + length..];
    }
}
