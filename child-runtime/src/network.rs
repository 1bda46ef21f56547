//! The child's network adapter: opens the root's network offer on pages
//! of its heap, grants its frame region, negotiates the MTU and learns the
//! MAC the root assigned (`docs/devices/network.md`), and puts `smoltcp`
//! on it ([`Adapter`] is a `phy::Device`).
//!
//! # Invariants
//! Waits are bounded by [`WAIT_PATIENCE`]; the wait sleeps in HLT after
//! checking the inbound ring, so a signal between the check and the sleep
//! ends the sleep at once. Once started, the adapter masks the root's
//! signals (it polls) and asks for one only in [`Adapter::wait`], before
//! the check.

use alloc::vec;
use alloc::vec::Vec;

use ipc::child::ChildBootInfo;
use ipc::vmbus::control::NETWORK_CLASS;
use ipc::vmbus::memory::RingMemory;
use ipc::vmbus::network::Mac;
use ipc::vmbus::ring::{self, Consumer, Producer};
use partition_rt::SharedRingMemory;
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use vsc::bus::{BusError, RingPages};
use vsc::network::{NetworkClient, NetworkClientError};

use crate::arch;
use crate::vmbus::{self, NETWORK_SIGNAL, WAIT_PATIENCE};

/// Pages of each ring (control page + data).
const RING_PAGES: u32 = 9;
/// Pages of the frame region: half to send from, half to receive into.
const REGION_PAGES: u32 = 48;

/// Why the adapter could not be opened.
// The fields are read through `Debug` when the failure is printed.
#[allow(dead_code)]
#[derive(Debug)]
pub enum OpenError {
    /// Out of heap, or a ring unusable.
    Memory,
    /// The control bus is not connected.
    NoBus,
    /// The control protocol failed.
    Bus(BusError),
    /// Grant, MTU negotiation or posting failed.
    Client(NetworkClientError),
}

/// The open adapter.
pub struct Adapter {
    client: NetworkClient<SharedRingMemory>,
    inbound: SharedRingMemory,
    mtu: u16,
    mac: Mac,
    frame: Vec<u8>,
}

fn signal() {
    vmbus::signal(NETWORK_SIGNAL);
}

impl Adapter {
    /// Opens the network offer and starts the adapter at `mtu` (or what
    /// the root allows).
    pub fn open(info: &ChildBootInfo, mtu: u16) -> Result<Adapter, OpenError> {
        let pages = 2 * RING_PAGES;
        let gpa = arch::alloc_ring_pages(u64::from(pages)).ok_or(OpenError::Memory)?;
        let rings =
            arch::ring_memory(info, gpa, u64::from(pages) * 4096).ok_or(OpenError::Memory)?;
        let (out, inb) = rings.split_at(RING_PAGES as usize * 4096);
        ring::initialize(&out).map_err(|_| OpenError::Memory)?;
        ring::initialize(&inb).map_err(|_| OpenError::Memory)?;
        let inbound = arch::ring_memory(
            info,
            gpa + u64::from(RING_PAGES) * 4096,
            u64::from(RING_PAGES) * 4096,
        )
        .ok_or(OpenError::Memory)?;
        let opened = vmbus::with_bus(|bus| {
            bus.open(
                NETWORK_CLASS,
                RingPages {
                    gpa,
                    pages,
                    outbound_pages: RING_PAGES,
                },
                vmbus::signal_control,
                vmbus::wait,
                WAIT_PATIENCE,
            )
        })
        .ok_or(OpenError::NoBus)?
        .map_err(OpenError::Bus)?;
        vmbus::set_ports(NETWORK_SIGNAL, opened.signal_port, opened.event_port);
        let region_gpa =
            arch::alloc_ring_pages(u64::from(REGION_PAGES)).ok_or(OpenError::Memory)?;
        let region = arch::ring_memory(info, region_gpa, u64::from(REGION_PAGES) * 4096)
            .ok_or(OpenError::Memory)?;
        let mut client = NetworkClient::new(
            Producer::new(out).map_err(|_| OpenError::Memory)?,
            Consumer::new(inb).map_err(|_| OpenError::Memory)?,
            region,
            region_gpa,
            REGION_PAGES,
            REGION_PAGES / 2,
        );
        let mut adapter_wait = WaitState { seen: 0 };
        // Grant, batch messages (`Negotiate`), MTU, then every receive
        // slot posted (in batches).
        client
            .grant(signal, || adapter_wait.wait(&inbound), WAIT_PATIENCE)
            .map_err(OpenError::Client)?;
        client
            .negotiate(signal, || adapter_wait.wait(&inbound), WAIT_PATIENCE)
            .map_err(OpenError::Client)?;
        let (mtu, mac) = client
            .init(mtu, signal, || adapter_wait.wait(&inbound), WAIT_PATIENCE)
            .map_err(OpenError::Client)?;
        client.post_all(signal).map_err(OpenError::Client)?;
        // Poll while busy: the root signals only once the adapter asked
        // for it, just before it sleeps (`Adapter::wait`).
        client.set_polling(true).map_err(OpenError::Client)?;
        let frame = vec![0; client.max_frame()];
        Ok(Adapter {
            client,
            inbound,
            mtu,
            mac,
            frame,
        })
    }

    /// The MAC the root assigned.
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// The negotiated MTU.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// Sends one raw frame, waiting (bounded) for a send slot; the tag.
    pub fn send_frame(&mut self, frame: &[u8]) -> Result<u64, NetworkClientError> {
        let mut last = NetworkClientError::Timeout;
        for _ in 0..WAIT_PATIENCE {
            match self.client.send(frame, 0, signal) {
                Err(e @ (NetworkClientError::Busy | NetworkClientError::Full)) => {
                    last = e;
                    // Completions free slots; frames for us are taken and dropped.
                    while self
                        .client
                        .receive_frame(&mut self.frame, signal)?
                        .is_some()
                    {}
                    if self.client.in_flight() > 0 {
                        self.wait();
                    }
                }
                other => return other,
            }
        }
        Err(last)
    }

    /// Gives the root the frames [`Adapter::send_frame`] queued (sends
    /// go out in batches; a poll, a wait or a full batch sends them too).
    pub fn flush(&mut self) -> Result<(), NetworkClientError> {
        self.client.flush_sends(signal)
    }

    /// The next frame for this child, copied into `out` (at most its first
    /// `out.len()` bytes), its buffer posted again: the frame's length.
    pub fn receive(&mut self, out: &mut [u8]) -> Result<Option<usize>, NetworkClientError> {
        Ok(self.client.receive_frame(out, signal)?.map(|(len, _)| len))
    }

    /// Sleeps until the root signals, unless a packet already waits: asks
    /// for the root's signal first, and stops asking once awake (while it
    /// works, the adapter polls and the root need not signal).
    pub fn wait(&mut self) {
        // Whatever is queued goes to the root before the sleep.
        let _ = self.client.flush_sends(signal);
        if self.client.arm_signal() == Ok(true) {
            WaitState { seen: 0 }.wait(&self.inbound);
        }
        let _ = self.client.set_polling(true);
    }
}

/// The sleep of the adapter's waits.
struct WaitState {
    seen: u64,
}

impl WaitState {
    fn wait(&mut self, inbound: &SharedRingMemory) {
        self.seen = vmbus::events();
        let waiting = || {
            inbound.load_u32_acquire(ring::WRITE_INDEX)
                != inbound.load_u32_acquire(ring::READ_INDEX)
        };
        if waiting() {
            return;
        }
        let seen = self.seen;
        partition_rt::wait_until(|| vmbus::events() != seen || waiting());
    }
}

/// A received frame (copied out of the region, whose buffer is posted again).
pub struct Rx(Vec<u8>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

/// Room to send one frame.
pub struct Tx<'a>(&'a mut NetworkClient<SharedRingMemory>);

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let result = f(&mut frame);
        // Waits (bounded) for a send slot; a frame that cannot go is lost,
        // as on a wire, and TCP sends it again.
        for _ in 0..1000 {
            match self.0.send(&frame, 0, signal) {
                Err(NetworkClientError::Busy | NetworkClientError::Full) => {
                    let _ = self.0.poll(signal);
                    vmbus::wait();
                }
                _ => break,
            }
        }
        // One frame at a time from smoltcp: out at once.
        let _ = self.0.flush_sends(signal);
        result
    }
}

impl Device for Adapter {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Rx, Tx<'_>)> {
        let (len, _flags) = self.client.receive_frame(&mut self.frame, signal).ok()??;
        let frame = self.frame[..len.min(self.frame.len())].to_vec();
        Some((Rx(frame), Tx(&mut self.client)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.client))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.max_transmission_unit = usize::from(self.mtu) + 14;
        caps.medium = Medium::Ethernet;
        caps
    }
}
