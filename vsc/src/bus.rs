//! The child's end of the VMBus control channel: version negotiation,
//! offers, and opening a channel on pages the child chose.
//!
//! # Invariants
//! Every message from the root goes through
//! [`GuestControl`](ipc::vmbus::control::GuestControl); anything it
//! refuses ends the attempt with an error. Waiting is the caller's closure
//! (called with nothing to read), and gives up after `patience` calls.

use ipc::vmbus::control::{
    ControlMessage, GuestControl, GuestEvent, GuestState, Guid, Offer, OpenStatus, ProtocolError,
};
use ipc::vmbus::memory::RingMemory;
use ipc::vmbus::packet;
use ipc::vmbus::ring::{Consumer, Producer, Recv, RingError, Sent};

/// Why connecting failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusError {
    /// A control ring broke.
    Ring(RingError),
    /// The root broke the protocol (or refused the version).
    Protocol(ProtocolError),
    /// A control packet did not decode.
    Malformed,
    /// The root offers no device of the class asked for.
    NoSuchDevice,
    /// The root refused the open.
    Refused(OpenStatus),
    /// No answer in time.
    Timeout,
}

/// An opened channel: the offer and the child's port slots (raw handles).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The device.
    pub offer: Offer,
    /// The port the child signals.
    pub signal_port: u64,
    /// The port the root signals (bound to a vector on vCPU 0).
    pub event_port: u64,
}

/// Pages a child grants for one channel: `[gpa, gpa + pages * 4096)`, the
/// first `outbound_pages` child-to-root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingPages {
    /// Child guest-physical address of the first page.
    pub gpa: u64,
    /// Pages in all.
    pub pages: u32,
    /// Pages of the child-to-root ring.
    pub outbound_pages: u32,
}

/// The control channel, child side.
#[derive(Debug)]
pub struct GuestBus<M: RingMemory> {
    tx: Producer<M>,
    rx: Consumer<M>,
    control: GuestControl,
    /// Signals sent to the root on the control channel.
    pub signals: u64,
}

impl<M: RingMemory> GuestBus<M> {
    /// The control channel over its two rings (root-initialised).
    pub fn new(tx: Producer<M>, rx: Consumer<M>) -> Self {
        GuestBus {
            tx,
            rx,
            control: GuestControl::new(),
            signals: 0,
        }
    }

    fn send(
        &mut self,
        message: &ControlMessage,
        signal: &mut impl FnMut(),
        wait: &mut impl FnMut(),
        patience: &mut u64,
    ) -> Result<(), BusError> {
        let mut scratch = [0u8; 128];
        loop {
            match self
                .tx
                .send_message(0, 0, message, &mut scratch)
                .map_err(BusError::Ring)?
            {
                Sent::Written { signal: s } => {
                    if s {
                        self.signals += 1;
                        signal();
                    }
                    return Ok(());
                }
                Sent::Full => {
                    *patience = patience.checked_sub(1).ok_or(BusError::Timeout)?;
                    wait();
                }
            }
        }
    }

    /// Waits for the next message from the root.
    fn next(
        &mut self,
        signal: &mut impl FnMut(),
        wait: &mut impl FnMut(),
        patience: &mut u64,
    ) -> Result<ControlMessage, BusError> {
        let mut buf = [0u8; 256];
        loop {
            match self.rx.try_recv(&mut buf).map_err(BusError::Ring)? {
                Recv::Packet(p) => return packet::decode(&p).map_err(|_| BusError::Malformed),
                Recv::Empty { signal_producer } => {
                    if signal_producer {
                        signal();
                    }
                    *patience = patience.checked_sub(1).ok_or(BusError::Timeout)?;
                    wait();
                }
            }
        }
    }

    /// Negotiates the version and collects the offers (once).
    pub fn connect(
        &mut self,
        mut signal: impl FnMut(),
        mut wait: impl FnMut(),
        mut patience: u64,
    ) -> Result<(), BusError> {
        if self.control.state() == GuestState::Ready {
            return Ok(());
        }
        let hello = self.control.hello();
        self.send(&hello, &mut signal, &mut wait, &mut patience)?;
        loop {
            let m = self.next(&mut signal, &mut wait, &mut patience)?;
            match self.control.handle(&m).map_err(BusError::Protocol)? {
                GuestEvent::Send(reply) => {
                    self.send(&reply, &mut signal, &mut wait, &mut patience)?
                }
                GuestEvent::OffersKnown => return Ok(()),
                GuestEvent::Nothing => {}
                GuestEvent::Channel(_) => {
                    return Err(BusError::Protocol(ProtocolError::OutOfOrder));
                }
            }
        }
    }

    /// Opens the first device of `class` on the child's pages `rings`,
    /// which the caller has zeroed and initialised as two rings.
    pub fn open(
        &mut self,
        class: Guid,
        rings: RingPages,
        mut signal: impl FnMut(),
        mut wait: impl FnMut(),
        mut patience: u64,
    ) -> Result<Opened, BusError> {
        let offer = self.control.find(class).ok_or(BusError::NoSuchDevice)?;
        let open = ControlMessage::Open {
            offer_id: offer.offer_id,
            gpa: rings.gpa,
            pages: rings.pages,
            outbound_pages: rings.outbound_pages,
        };
        self.send(&open, &mut signal, &mut wait, &mut patience)?;
        loop {
            let m = self.next(&mut signal, &mut wait, &mut patience)?;
            if let GuestEvent::Channel(ControlMessage::OpenResult {
                offer_id,
                status,
                signal_port,
                event_port,
            }) = self.control.handle(&m).map_err(BusError::Protocol)?
                && offer_id == offer.offer_id
            {
                return match status {
                    OpenStatus::Opened => Ok(Opened {
                        offer,
                        signal_port,
                        event_port,
                    }),
                    refused => Err(BusError::Refused(refused)),
                };
            }
        }
    }

    /// Waits until the root rescinds a channel; returns its offer id.
    pub fn wait_for_rescind(
        &mut self,
        mut wait: impl FnMut(),
        mut patience: u64,
    ) -> Result<u32, BusError> {
        loop {
            let m = self.next(&mut || {}, &mut wait, &mut patience)?;
            if let GuestEvent::Channel(ControlMessage::Rescind { offer_id }) =
                self.control.handle(&m).map_err(BusError::Protocol)?
            {
                return Ok(offer_id);
            }
        }
    }

    /// Sends a raw control message (for tests of the root's defences).
    pub fn send_raw(
        &mut self,
        message: &ControlMessage,
        mut signal: impl FnMut(),
        mut wait: impl FnMut(),
    ) -> Result<(), BusError> {
        let mut patience = 1_000_000;
        self.send(message, &mut signal, &mut wait, &mut patience)
    }
}
