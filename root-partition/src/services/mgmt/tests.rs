//! The status service over a wire to a client stack, both smoltcp.

use smoltcp::socket::tcp;

use super::*;
use crate::testing::wire::{End, wire};

const NODE: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
const CLIENT: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);

/// A client stack that connects to the node's status port and collects
/// what it sends until it closes.
struct Client {
    nic: End,
    iface: Interface,
    sockets: SocketSet<'static>,
    socket: SocketHandle,
    got: Vec<u8>,
}

impl Client {
    fn new(mut nic: End, port: u16) -> Client {
        let mac = EthernetAddress([2, 0, 0, 0, 0, 2]);
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ethernet(mac)),
            &mut nic,
            instant(0),
        );
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(CLIENT), 24));
        });
        let mut sockets = SocketSet::new(vec![]);
        let socket = sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 1024]),
            tcp::SocketBuffer::new(vec![0; 8192]),
        ));
        sockets
            .get_mut::<tcp::Socket<'_>>(socket)
            .connect(iface.context(), (IpAddress::Ipv4(NODE), STATUS_PORT), port)
            .unwrap();
        Client {
            nic,
            iface,
            sockets,
            socket,
            got: Vec::new(),
        }
    }

    /// Polls; true once the server closed and everything was read.
    fn poll(&mut self, now: u64) -> bool {
        self.iface
            .poll(instant(now), &mut self.nic, &mut self.sockets);
        let s = self.sockets.get_mut::<tcp::Socket<'_>>(self.socket);
        while s.can_recv() {
            let _ = s.recv(|d| {
                self.got.extend_from_slice(d);
                (d.len(), ())
            });
        }
        if !s.may_recv() && s.state() != tcp::State::SynSent {
            s.close();
            return true;
        }
        false
    }
}

fn server(nic: End, board: StatusBoard) -> StatusServer<End> {
    let at = Addressing {
        mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
        address: NODE,
        prefix: 24,
        gateway: CLIENT,
    };
    StatusServer::new(nic, at, board, 0).unwrap()
}

/// Runs server and client until the client has its answer (or 10 s of
/// simulated time pass).
fn exchange(s: &mut StatusServer<End>, c: &mut Client, start: u64) -> (String, u64) {
    let mut now = start;
    for _ in 0..10_000 {
        let _ = s.poll(now, 0);
        if c.poll(now) {
            return (String::from_utf8(std::mem::take(&mut c.got)).unwrap(), now);
        }
        now += 1_000_000;
    }
    panic!(
        "no answer within 10 s: got {:?}",
        String::from_utf8_lossy(&c.got)
    );
}

#[test]
fn a_client_reads_the_status_of_every_vm() {
    let (a, b) = wire();
    let board = StatusBoard::default();
    board.borrow_mut().extend([
        ("alpha".into(), "Running".into()),
        ("beta".into(), "Saved".into()),
    ]);
    let mut s = server(a, board.clone());
    let mut c = Client::new(b, 40_000);
    let (text, _) = exchange(&mut s, &mut c, 0);
    assert_eq!(text, "capvisor node: 2 VMs\nalpha Running\nbeta Saved\n");
    assert_eq!(s.served, 1);
}

#[test]
fn the_next_client_sees_the_board_as_it_is_then() {
    let (a, b) = wire();
    let board = StatusBoard::default();
    let mut s = server(a, board.clone());
    let mut c = Client::new(b, 40_001);
    let (text, now) = exchange(&mut s, &mut c, 0);
    assert_eq!(text, "capvisor node: 0 VMs\n");
    board.borrow_mut().push(("gamma".into(), "Starting".into()));
    let mut c2 = Client::new(c.nic, 40_002);
    let (text, _) = exchange(&mut s, &mut c2, now + 1_000_000);
    assert_eq!(text, "capvisor node: 1 VMs\ngamma Starting\n");
    assert_eq!(s.served, 2);
}

#[test]
fn an_idle_server_sleeps_without_a_deadline() {
    let (a, _b) = wire();
    let mut s = server(a, StatusBoard::default());
    assert_eq!(s.poll(0, 0), Poll::Idle(None));
}
