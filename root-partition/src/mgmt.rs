//! The management network: the root's own TCP/IP stack (`smoltcp`) on the
//! management NIC (the second virtio-net device; the first is the virtual
//! switch's uplink), at 10.0.2.15/24 behind QEMU's user networking.
//!
//! Until the management API (issue 16) it serves one thing: the node's
//! status on TCP port [`STATUS_PORT`] — on connect, one line per VM
//! (`NAME STATE`) after a header line, then the connection closes.
//!
//! # Invariants
//! The service never blocks: each poll moves what the interface has, and
//! the loop sleeps until the NIC's next interrupt.

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use core::cell::RefCell;
use core::fmt::Write;

use root_partition::node::{Poll, Service};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use crate::net::Network;

/// The TCP port of the node's status.
pub const STATUS_PORT: u16 = 7100;

/// What the management network shows of the VMs: `(name, state)`, kept up
/// to date by the VM service (`crate::node_vms::Vms`).
pub type StatusBoard = Rc<RefCell<vec::Vec<(String, String)>>>;

/// The management network as a node service.
pub struct Management {
    net: Network,
    iface: Interface,
    sockets: SocketSet<'static>,
    status: SocketHandle,
    board: StatusBoard,
    /// The reply to the current connection has been queued.
    answered: bool,
    /// Connections answered.
    pub served: u64,
    tsc_khz: u64,
}

fn listener() -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 1024]),
        tcp::SocketBuffer::new(vec![0; 8192]),
    )
}

impl Management {
    /// The stack on `net`, listening on [`STATUS_PORT`].
    pub fn new(mut net: Network, board: StatusBoard, tsc_khz: u64) -> Result<Self, String> {
        let (address, gateway) = crate::net::management_address();
        let config = Config::new(HardwareAddress::Ethernet(net.mac()));
        let mut iface = Interface::new(config, &mut net, crate::net::stack_now());
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(address), 24));
        });
        iface
            .routes_mut()
            .add_default_ipv4_route(gateway)
            .map_err(|e| alloc::format!("default route: {e:?}"))?;
        let mut sockets = SocketSet::new(vec![]);
        let status = sockets.add(listener());
        sockets
            .get_mut::<tcp::Socket<'_>>(status)
            .listen(STATUS_PORT)
            .map_err(|e| alloc::format!("listen: {e:?}"))?;
        Ok(Management {
            net,
            iface,
            sockets,
            status,
            board,
            answered: false,
            served: 0,
            tsc_khz: tsc_khz.max(1),
        })
    }

    fn reply(&self) -> String {
        let board = self.board.borrow();
        let mut text = String::new();
        let _ = writeln!(text, "capvisor node: {} VMs", board.len());
        for (name, state) in board.iter() {
            let _ = writeln!(text, "{name} {state}");
        }
        text
    }
}

impl Service for Management {
    fn name(&self) -> &'static str {
        "management"
    }

    fn poll(&mut self, now: u64, _events: u64) -> Poll {
        let changed = self
            .iface
            .poll(crate::net::stack_now(), &mut self.net, &mut self.sockets);
        let reply = self.reply();
        let socket = self.sockets.get_mut::<tcp::Socket<'_>>(self.status);
        let mut busy = changed != smoltcp::iface::PollResult::None;
        if socket.is_active() && socket.can_send() && !self.answered {
            let _ = socket.send_slice(reply.as_bytes());
            socket.close();
            self.answered = true;
            self.served += 1;
            busy = true;
        }
        if !socket.is_open() {
            // Closed (or never opened): listen for the next client.
            socket.abort();
            let _ = socket.listen(STATUS_PORT);
            self.answered = false;
        }
        if busy {
            return Poll::Busy;
        }
        // smoltcp's own timers (retransmission, TIME-WAIT): its clock
        // counts a microsecond per 1,000 time-stamp cycles.
        match self
            .iface
            .poll_delay(crate::net::stack_now(), &self.sockets)
        {
            Some(delay) if delay.total_micros() == 0 => Poll::Busy,
            Some(delay) => {
                let cycles = delay.total_micros() * 1000;
                Poll::Idle(Some(now + cycles * 1_000_000 / self.tsc_khz))
            }
            None => Poll::Idle(None),
        }
    }
}
