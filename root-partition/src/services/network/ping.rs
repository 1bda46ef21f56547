//! One ICMP echo to the gateway through the root's own stack (`smoltcp`),
//! as a step-able check: [`Pinger::poll`] moves the stack and says when
//! the reply came or the patience ran out.

use alloc::format;
use alloc::string::String;
use alloc::vec;

use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::phy::{ChecksumCapabilities, Device};
use smoltcp::socket::icmp;
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpAddress};

use crate::services::mgmt::{Addressing, instant, interface};

/// The echo's identifier.
const IDENT: u16 = 0xc0de;
/// The echo's payload (the reply must carry it back).
const PAYLOAD: &[u8] = b"capvisor root ping";

/// An echo request on its way.
pub struct Pinger {
    at: Addressing,
    iface: Interface,
    sockets: SocketSet<'static>,
    socket: SocketHandle,
    sent: bool,
    give_up: u64,
}

impl Pinger {
    /// A stack on `nic` at `at` that pings the gateway, giving up
    /// `patience_ns` after `now_ns`.
    pub fn new<D: Device>(
        nic: &mut D,
        at: Addressing,
        now_ns: u64,
        patience_ns: u64,
    ) -> Result<Self, String> {
        let iface = interface(nic, at, now_ns)?;
        let socket = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
        );
        let mut sockets = SocketSet::new(vec![]);
        let socket = sockets.add(socket);
        sockets
            .get_mut::<icmp::Socket<'_>>(socket)
            .bind(icmp::Endpoint::Ident(IDENT))
            .map_err(|e| format!("icmp bind: {e:?}"))?;
        Ok(Pinger {
            at,
            iface,
            sockets,
            socket,
            sent: false,
            give_up: now_ns.saturating_add(patience_ns),
        })
    }

    /// Moves the stack: `Some(Ok(()))` once the gateway's reply is in,
    /// `Some(Err(..))` when it is not by the deadline or the stack failed,
    /// `None` while waiting.
    pub fn poll<D: Device>(&mut self, nic: &mut D, now_ns: u64) -> Option<Result<(), String>> {
        let checksum = ChecksumCapabilities::default();
        self.iface.poll(instant(now_ns), nic, &mut self.sockets);
        let gateway = IpAddress::Ipv4(self.at.gateway);
        let socket = self.sockets.get_mut::<icmp::Socket<'_>>(self.socket);
        if !self.sent && socket.can_send() {
            let repr = Icmpv4Repr::EchoRequest {
                ident: IDENT,
                seq_no: 1,
                data: PAYLOAD,
            };
            match socket.send(repr.buffer_len(), gateway) {
                Ok(buffer) => {
                    repr.emit(&mut Icmpv4Packet::new_unchecked(buffer), &checksum);
                    self.sent = true;
                }
                Err(e) => return Some(Err(format!("icmp send: {e:?}"))),
            }
        }
        while socket.can_recv() {
            let (bytes, from) = match socket.recv() {
                Ok(r) => r,
                Err(e) => return Some(Err(format!("icmp recv: {e:?}"))),
            };
            let Ok(packet) = Icmpv4Packet::new_checked(bytes) else {
                continue;
            };
            if let Ok(Icmpv4Repr::EchoReply { ident, data, .. }) =
                Icmpv4Repr::parse(&packet, &checksum)
                && ident == IDENT
                && data == PAYLOAD
                && from == gateway
            {
                return Some(Ok(()));
            }
        }
        (now_ns >= self.give_up).then(|| {
            Err(format!(
                "no echo reply from {} (sent: {})",
                self.at.gateway, self.sent
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use smoltcp::iface::Config;
    use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address};

    use super::*;
    use crate::testing::wire::{End, wire};

    const NODE: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
    const GATEWAY: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);

    fn at() -> Addressing {
        Addressing {
            mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
            address: NODE,
            prefix: 24,
            gateway: GATEWAY,
        }
    }

    /// A gateway: a stack at `address` (smoltcp answers echoes itself).
    fn gateway(nic: &mut End, address: Ipv4Address) -> Interface {
        let mac = EthernetAddress([2, 0, 0, 0, 0, 2]);
        let mut iface =
            Interface::new(Config::new(HardwareAddress::Ethernet(mac)), nic, instant(0));
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(address), 24));
        });
        iface
    }

    fn run(gateway_address: Ipv4Address) -> (Result<(), String>, u64) {
        let (mut a, mut b) = wire();
        let mut gw = gateway(&mut b, gateway_address);
        let mut none = SocketSet::new(vec![]);
        let mut p = Pinger::new(&mut a, at(), 0, 2_000_000_000).unwrap();
        let mut now = 0;
        loop {
            if let Some(r) = p.poll(&mut a, now) {
                return (r, now);
            }
            gw.poll(instant(now), &mut b, &mut none);
            now += 1_000_000;
        }
    }

    #[test]
    fn the_gateway_answers() {
        let (r, now) = run(GATEWAY);
        assert_eq!(r, Ok(()));
        assert!(now < 100_000_000, "answered at once, not at the deadline");
    }

    #[test]
    fn no_gateway_no_reply_by_the_deadline() {
        let (r, now) = run(Ipv4Address::new(10, 0, 2, 3));
        assert!(
            r.unwrap_err()
                .starts_with("no echo reply from 10.0.2.2 (sent: true)")
        );
        assert_eq!(now, 2_000_000_000);
    }
}
