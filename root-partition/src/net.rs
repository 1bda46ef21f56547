//! The root's network interface: a virtio-net PCI device with its
//! interrupt (MSI-X, or its line, shared with the disk's on QEMU's `pc`
//! machine) taken through an interrupt capability (`crate::virtio`), under
//! `smoltcp` with a static address on the management network (QEMU user
//! networking: 10.0.2.15/24, gateway 10.0.2.2).
//!
//! Today the root uses it for one self-test (`selftest=network`): it
//! resolves the gateway and pings it, which proves transmit, receive and
//! the interrupt path end to end. The virtual switch and the children's
//! network adapters come with the rest of the network work.
//!
//! # Invariants
//! Every wait is bounded by a count of time-stamp cycles; a network that
//! never answers ends the test with an error line, never a hang.

use alloc::format;
use alloc::string::String;
use alloc::vec;

use ipc::boot::BootInfo;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::icmp;
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, Ipv4Address,
};
use virtio_drivers::device::net::{RxBuffer, VirtIONet};
use virtio_drivers::transport::DeviceType;
use virtio_drivers::transport::pci::PciTransport;

use crate::hal::dma::RootHal;
use crate::virtio;

/// The vector the first NIC's interrupt arrives on; NIC `n` (from 0) on
/// `VECTOR + n`.
pub const VECTOR: u8 = 0x79;
/// How the NICs are named in messages, by index.
const NAMES: [&str; 4] = ["NIC", "NIC 2", "NIC 3", "NIC 4"];
/// The root's address on the management network.
pub const ADDRESS: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
/// The management network's gateway (QEMU's user networking host side).
pub const GATEWAY: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
/// Receive buffer length: a 1500-byte frame and the virtio header.
const BUFFER: usize = 2048;
/// Descriptors per queue.
const QUEUE: usize = 16;
/// How long the self-test waits, in time-stamp cycles (a few seconds on
/// any machine QEMU runs on).
const PATIENCE: u64 = 20_000_000_000;

type Nic = VirtIONet<RootHal, PciTransport, QUEUE>;

/// The NIC once found (the switch's port 0 while children run).
static NIC: partition_rt::sync::SpinLock<Option<Network>> = partition_rt::sync::SpinLock::new(None);

/// The NICs after the first: started, on their interrupts, kept for the
/// root's management network (the first is the virtual switch's uplink).
static MORE_NICS: partition_rt::sync::SpinLock<alloc::vec::Vec<Network>> =
    partition_rt::sync::SpinLock::new(alloc::vec::Vec::new());

/// Finds the NICs and keeps them; says whether there is one. Every NIC
/// gets its interrupt; the first is the switch's uplink, the others wait
/// for the management network's stack.
pub fn start(info: &BootInfo) -> Result<bool, String> {
    let Some(first) = probe_nth(info, 0)? else {
        return Ok(false);
    };
    *NIC.lock() = Some(first);
    for (nth, name) in NAMES.iter().enumerate().skip(1) {
        match probe_nth(info, nth) {
            Ok(Some(net)) => MORE_NICS.lock().push(net),
            Ok(None) => break,
            Err(e) => partition_rt::console::print_line(format_args!(
                "root partition: {name} unusable: {e}"
            )),
        }
    }
    Ok(true)
}

/// Takes the management NIC (the second one) for the root's own stack.
pub fn take_management_nic() -> Option<Network> {
    let mut more = MORE_NICS.lock();
    (!more.is_empty()).then(|| more.remove(0))
}

/// The management network's address and gateway (QEMU user networking).
pub fn management_address() -> (Ipv4Address, Ipv4Address) {
    (ADDRESS, GATEWAY)
}

impl Network {
    /// The device's MAC address.
    pub fn mac(&self) -> EthernetAddress {
        EthernetAddress(self.nic.mac_address())
    }
}

/// Frames waiting in the NIC: each given to `take` (at most `max`).
pub fn receive(max: usize, mut take: impl FnMut(&[u8])) -> usize {
    let mut nic = NIC.lock();
    let Some(net) = nic.as_mut() else {
        return 0;
    };
    net.take_interrupts();
    let mut n = 0;
    while n < max && net.nic.can_recv() {
        let Ok(buffer) = net.nic.receive() else {
            break;
        };
        take(buffer.packet());
        let _ = net.nic.recycle_rx_buffer(buffer);
        n += 1;
    }
    n
}

/// Sends one frame out of the NIC; whether it went.
pub fn send(frame: &[u8]) -> bool {
    let mut nic = NIC.lock();
    let Some(net) = nic.as_mut() else {
        return false;
    };
    if frame.len() > BUFFER - 16 {
        return false;
    }
    let mut buffer = net.nic.new_tx_buffer(frame.len());
    buffer.packet_mut().copy_from_slice(frame);
    net.nic.send(buffer).is_ok()
}

/// The NIC and its interrupt.
pub struct Network {
    nic: Nic,
    /// Its interrupt; `None` when polled (an edge-triggered line another
    /// device holds).
    irq: Option<virtio::DeviceInterrupt>,
    /// Its global system interrupt.
    pub gsi: u32,
}

impl Network {
    /// Interrupts taken so far (the handler takes each: `crate::virtio`).
    fn take_interrupts(&mut self) -> u64 {
        self.irq.map_or(0, |irq| irq.count())
    }
}

/// Finds the `nth` (from 0, below 4) virtio-net device on PCI bus 0,
/// starts it and gives it its interrupt; `Ok(None)` when there is none.
pub fn probe_nth(info: &BootInfo, nth: usize) -> Result<Option<Network>, String> {
    let name = NAMES
        .get(nth)
        .ok_or_else(|| format!("no room for NIC {}", nth + 1))?;
    let Some(virtio::Found {
        transport,
        location,
        gsi,
    }) = virtio::find_nth(DeviceType::Network, nth)?
    else {
        return Ok(None);
    };
    let mut nic =
        Nic::new(transport, BUFFER).map_err(|e| format!("virtio-net at {location}: {e:?}"))?;
    // Without an interrupt (an edge-triggered line another device holds)
    // the NIC runs polled (the root looks at it every service pass) and
    // never raises its line.
    let irq = match virtio::attach(info, location, gsi, VECTOR + nth as u8, name) {
        Ok(irq) => {
            nic.enable_interrupts();
            Some(irq)
        }
        Err(e) => {
            nic.disable_interrupts();
            partition_rt::console::print_line(format_args!(
                "root partition: virtio-net at {location}: {e}: polled, without interrupts"
            ));
            None
        }
    };
    Ok(Some(Network { nic, irq, gsi }))
}

/// A received frame (copied out of the device's buffer, which goes back
/// to the device at once).
pub struct Rx {
    frame: alloc::vec::Vec<u8>,
}

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.frame)
    }
}

/// Room to send one frame.
pub struct Tx<'a>(&'a mut Nic);

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buffer = self.0.new_tx_buffer(len);
        let result = f(buffer.packet_mut());
        // A frame the device refuses is lost, as on a wire.
        let _ = self.0.send(buffer);
        result
    }
}

impl Device for Network {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Rx, Tx<'_>)> {
        if !self.nic.can_recv() {
            return None;
        }
        let buffer: RxBuffer = self.nic.receive().ok()?;
        let frame = buffer.packet().to_vec();
        let _ = self.nic.recycle_rx_buffer(buffer);
        Some((Rx { frame }, Tx(&mut self.nic)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        self.nic.can_send().then_some(Tx(&mut self.nic))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.max_transmission_unit = 1514;
        caps.max_burst_size = Some(1);
        caps.medium = Medium::Ethernet;
        caps
    }
}

fn now() -> Instant {
    // About a microsecond per thousand cycles: smoltcp only needs time to
    // move forward for its ARP and retransmission timers.
    Instant::from_micros((partition_rt::rdtsc() / 1000) as i64)
}

/// `selftest=network`: brings the interface up at [`ADDRESS`], resolves
/// the gateway and pings it; the result line, or why it failed.
pub fn ping_gateway() -> Result<String, String> {
    let mut net = NIC
        .lock()
        .take()
        .ok_or_else(|| String::from("no virtio-net device"))?;
    partition_rt::enable_interrupts();
    let result = ping(&mut net);
    *NIC.lock() = Some(net);
    result
}

fn ping(net: &mut Network) -> Result<String, String> {
    let net = &mut *net;
    let mac = EthernetAddress(net.nic.mac_address());
    let config = Config::new(HardwareAddress::Ethernet(mac));
    let mut iface = Interface::new(config, net, now());
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(ADDRESS), 24));
    });
    iface
        .routes_mut()
        .add_default_ipv4_route(GATEWAY)
        .map_err(|e| format!("default route: {e:?}"))?;
    let socket = icmp::Socket::new(
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
    );
    let mut sockets = SocketSet::new(vec![]);
    let handle = sockets.add(socket);
    const IDENT: u16 = 0xc0de;
    sockets
        .get_mut::<icmp::Socket<'_>>(handle)
        .bind(icmp::Endpoint::Ident(IDENT))
        .map_err(|e| format!("icmp bind: {e:?}"))?;
    let payload = b"capvisor root ping";
    let mut sent = false;
    let start = partition_rt::rdtsc();
    loop {
        iface.poll(now(), net, &mut sockets);
        let socket = sockets.get_mut::<icmp::Socket<'_>>(handle);
        if !sent && socket.can_send() {
            let repr = Icmpv4Repr::EchoRequest {
                ident: IDENT,
                seq_no: 1,
                data: payload,
            };
            let buffer = socket
                .send(repr.buffer_len(), IpAddress::Ipv4(GATEWAY))
                .map_err(|e| format!("icmp send: {e:?}"))?;
            repr.emit(
                &mut Icmpv4Packet::new_unchecked(buffer),
                &DeviceCapabilities::default().checksum,
            );
            sent = true;
        }
        if socket.can_recv() {
            let (bytes, from) = socket.recv().map_err(|e| format!("icmp recv: {e:?}"))?;
            let packet = Icmpv4Packet::new_checked(bytes).map_err(|e| format!("reply: {e:?}"))?;
            let repr = Icmpv4Repr::parse(&packet, &DeviceCapabilities::default().checksum)
                .map_err(|e| format!("reply: {e:?}"))?;
            if let Icmpv4Repr::EchoReply { ident, data, .. } = repr
                && ident == IDENT
                && data == payload
                && from == IpAddress::Ipv4(GATEWAY)
            {
                let taken = net.take_interrupts();
                let line = ipc::markers::NetworkUp {
                    address: &format!("{ADDRESS}"),
                    gateway: &format!("{GATEWAY}"),
                    mac: &format!("{mac}"),
                    gsi: net.gsi,
                    interrupts: taken,
                };
                return Ok(format!("{line}"));
            }
        }
        if partition_rt::rdtsc().wrapping_sub(start) > PATIENCE {
            return Err(format!(
                "no echo reply from {GATEWAY} (sent: {sent}, {} interrupts)",
                net.take_interrupts()
            ));
        }
        // Sleep until the NIC interrupts, but not past the deadline: the
        // device's interrupt is the event; the spin bounds a lost one.
        let seen = net.take_interrupts();
        for _ in 0..100_000 {
            if net.take_interrupts() != seen || net.nic.can_recv() {
                break;
            }
            core::hint::spin_loop();
        }
    }
}
