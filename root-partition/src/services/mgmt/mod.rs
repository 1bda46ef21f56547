//! The management network: the root's own TCP/IP stack (`smoltcp`) on the
//! management NIC, at a static address.
//!
//! Until the management API (issue 16) it serves one thing: the node's
//! status on TCP port [`STATUS_PORT`] — on connect, a header line
//! (`capvisor node: N VMs`) and one line per VM (`NAME STATE`), then the
//! connection closes ([`StatusServer`]).
//!
//! # Invariants
//! The service never blocks: each poll moves what the interface has, and
//! the loop sleeps until the NIC's next interrupt or smoltcp's next timer.

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt::Write;

use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

pub mod api;
pub mod conn;
pub mod http;
pub mod server;

use crate::node::{Poll, Service};

/// The TCP port of the node's status.
pub const STATUS_PORT: u16 = 7100;

/// Connections the status port takes at once (and sockets in TIME-WAIT).
const LISTENERS: usize = 4;

/// What the management network shows of the VMs: `(name, state)`, kept up
/// to date by the VM service ([`crate::services::vm::service::VmService`]).
pub type StatusBoard = Rc<RefCell<Vec<(String, String)>>>;

/// The status text for `board`: a header line, then `NAME STATE` per VM.
pub fn status_text(board: &[(String, String)]) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "capvisor node: {} VMs", board.len());
    for (name, state) in board {
        let _ = writeln!(text, "{name} {state}");
    }
    text
}

/// The stack's clock from the node's (nanoseconds).
pub fn instant(now_ns: u64) -> Instant {
    Instant::from_micros(i64::try_from(now_ns / 1000).unwrap_or(i64::MAX))
}

/// Where the management NIC sits on its network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addressing {
    /// The NIC's MAC address.
    pub mac: EthernetAddress,
    /// The node's address.
    pub address: Ipv4Address,
    /// The prefix length of its network.
    pub prefix: u8,
    /// The default gateway.
    pub gateway: Ipv4Address,
}

/// The root's interface on the management NIC `nic` at `at`: its address
/// and its default route; `now_ns` is the node's clock.
pub fn interface<D: Device>(nic: &mut D, at: Addressing, now_ns: u64) -> Result<Interface, String> {
    let config = Config::new(HardwareAddress::Ethernet(at.mac));
    let mut iface = Interface::new(config, nic, instant(now_ns));
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(at.address), at.prefix));
    });
    iface
        .routes_mut()
        .add_default_ipv4_route(at.gateway)
        .map_err(|e| alloc::format!("default route: {e:?}"))?;
    Ok(iface)
}

/// The status service on the management NIC `D`.
pub struct StatusServer<D: Device> {
    nic: D,
    iface: Interface,
    sockets: SocketSet<'static>,
    /// The listening sockets, each with whether its connection has its
    /// reply (a socket that closed waits out TIME-WAIT while the others
    /// take the next clients).
    status: [(SocketHandle, bool); LISTENERS],
    board: StatusBoard,
    /// Connections answered.
    pub served: u64,
}

fn listener() -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 1024]),
        tcp::SocketBuffer::new(vec![0; 8192]),
    )
}

impl<D: Device> StatusServer<D> {
    /// The stack on `nic` at `at`, listening on [`STATUS_PORT`], showing
    /// `board`; `now_ns` is the node's clock.
    pub fn new(
        mut nic: D,
        at: Addressing,
        board: StatusBoard,
        now_ns: u64,
    ) -> Result<Self, String> {
        let iface = interface(&mut nic, at, now_ns)?;
        let mut sockets = SocketSet::new(vec![]);
        let mut status = [(SocketHandle::default(), false); LISTENERS];
        for (handle, _) in &mut status {
            *handle = sockets.add(listener());
            sockets
                .get_mut::<tcp::Socket<'_>>(*handle)
                .listen(STATUS_PORT)
                .map_err(|e| alloc::format!("listen: {e:?}"))?;
        }
        Ok(StatusServer {
            nic,
            iface,
            sockets,
            status,
            board,
            served: 0,
        })
    }

    /// The NIC (to take its interrupts).
    pub fn nic(&mut self) -> &mut D {
        &mut self.nic
    }
}

impl<D: Device> Service for StatusServer<D> {
    fn name(&self) -> &'static str {
        "management"
    }

    fn poll(&mut self, now: u64, _events: u64) -> Poll {
        let changed = self
            .iface
            .poll(instant(now), &mut self.nic, &mut self.sockets);
        let reply = status_text(&self.board.borrow());
        let mut busy = changed != PollResult::None;
        for (handle, answered) in &mut self.status {
            let socket = self.sockets.get_mut::<tcp::Socket<'_>>(*handle);
            if socket.is_active() && socket.can_send() && !*answered {
                let _ = socket.send_slice(reply.as_bytes());
                socket.close();
                *answered = true;
                self.served += 1;
                busy = true;
            }
            if !socket.is_open() {
                // Closed (or never opened): listen for the next client.
                socket.abort();
                let _ = socket.listen(STATUS_PORT);
                *answered = false;
            }
        }
        if busy {
            return Poll::Busy;
        }
        // smoltcp's own timers (retransmission, TIME-WAIT).
        match self.iface.poll_delay(instant(now), &self.sockets) {
            Some(delay) if delay.total_micros() == 0 => Poll::Busy,
            Some(delay) => Poll::Idle(Some(now.saturating_add(delay.total_micros() * 1000))),
            None => Poll::Idle(None),
        }
    }
}

#[cfg(test)]
mod tests;
