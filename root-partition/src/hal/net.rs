//! The root's network interface: a virtio-net PCI device with its
//! interrupt (MSI-X, or its line, shared with the disk's on QEMU's `pc`
//! machine) taken through an interrupt capability (`crate::hal::virtio`), under
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

use ipc::boot::BootInfo;
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, Ipv4Address};
use virtio_drivers::device::net::{RxBuffer, VirtIONet};
use virtio_drivers::transport::DeviceType;
use virtio_drivers::transport::pci::PciTransport;

use root_partition::services::mgmt::Addressing;
use root_partition::services::network::ping::Pinger;

use crate::hal::dma::RootHal;
use crate::hal::virtio;

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
/// How long the self-test waits for the gateway's reply.
const PATIENCE_NS: u64 = 10_000_000_000;

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
    /// Interrupts taken so far (the handler takes each: `crate::hal::virtio`).
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

/// The node's clock.
fn now_ns() -> u64 {
    use root_partition::hv::Kernel;
    crate::hal::kernel::HwKernel.now_ns()
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
    let mac = EthernetAddress(net.nic.mac_address());
    let at = Addressing {
        mac,
        address: ADDRESS,
        prefix: 24,
        gateway: GATEWAY,
    };
    let mut pinger = Pinger::new(net, at, now_ns(), PATIENCE_NS)?;
    loop {
        match pinger.poll(net, now_ns()) {
            Some(Ok(())) => {
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
            Some(Err(e)) => return Err(format!("{e}, {} interrupts", net.take_interrupts())),
            None => {}
        }
        let seen = net.take_interrupts();
        for _ in 0..100_000 {
            if net.take_interrupts() != seen || net.nic.can_recv() {
                break;
            }
            core::hint::spin_loop();
        }
    }
}
