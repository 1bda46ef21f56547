//! The management plane (`docs/management.md`): the root's own TCP/IP
//! stack (`smoltcp`) on the management NIC at a static address
//! ([`interface`]), the HTTP/1.1 layer ([`conn`], [`server`]), the
//! management API behind it ([`api`]), and the node service that joins
//! them to the VMs ([`node`]).
//!
//! # Invariants
//! Nothing here blocks: each poll moves what the interface has, and the
//! loop sleeps until the NIC's next interrupt or the next timer.

use alloc::string::String;

use smoltcp::iface::{Config, Interface};
use smoltcp::phy::Device;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

pub mod api;
pub mod conn;
pub mod http;
pub mod node;
pub mod server;

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
