//! The control protocol: postcard messages on the control channel, whose
//! rings the root placed in the child's memory (boot page
//! `vmbus_control`). The child speaks first.
//!
//! ```text
//! child                          root
//! Version{1,0}          ->
//!                       <-       VersionResponse{accepted, 1, 0}
//! RequestOffers         ->
//!                       <-       Offer{..} per device, then AllOffersDelivered
//! Open{offer, gpa, ..}  ->       (root checks and maps the pages, makes ports)
//!                       <-       OpenResult{offer, status, ports}
//! Close{offer}          ->       (root unmaps, forgets the channel)
//!                       <-       Rescind{offer} (device gone: child closes)
//! ```
//!
//! # Invariants
//! [`HostControl`] accepts exactly the sequences above: any message out of
//! order, for an unknown offer, or with a bad range is a
//! [`ProtocolError`] and the root closes the control channel (and with it
//! every channel of that child). It never panics on any input.

use serde::{Deserialize, Serialize};

/// Protocol version this code speaks.
pub const VERSION_MAJOR: u16 = 1;
/// Minor version.
pub const VERSION_MINOR: u16 = 0;
/// Most offers a root makes to one child.
pub const MAX_OFFERS: usize = 4;
/// Pages of the control channel: a ring of [`CONTROL_RING_PAGES`] each way.
pub const CONTROL_CHANNEL_PAGES: u64 = 2 * CONTROL_RING_PAGES;
/// Pages of each control ring (control page + data).
pub const CONTROL_RING_PAGES: u64 = 2;
/// Largest ring a child may grant for one direction (pages, control page included).
pub const MAX_RING_PAGES: u32 = 64;

/// A 16-byte class or instance identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guid(pub [u8; 16]);

/// Device class of the console (`ipc::vmbus::console`).
pub const CONSOLE_CLASS: Guid = Guid(*b"capvisor-console");

/// Device class of the storage controller (`ipc::vmbus::storage`).
pub const STORAGE_CLASS: Guid = Guid(*b"capvisor-storage");

/// Device class of the network device (`ipc::vmbus::network`).
pub const NETWORK_CLASS: Guid = Guid(*b"capvisor-network");

/// Device class of the integration services, heartbeat and shutdown
/// (`ipc::vmbus::integration`).
pub const INTEGRATION_CLASS: Guid = Guid(*b"capvisor-integr.");

/// Properties of an offered device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferProperties {
    /// Largest payload the provider accepts in one packet.
    pub max_payload: u32,
    /// Device-specific flags (0 for the console).
    pub flags: u32,
}

/// A device the root offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Channel number the child names when opening (0..MAX_OFFERS).
    pub offer_id: u32,
    /// What kind of device.
    pub class: Guid,
    /// Which one.
    pub instance: Guid,
    /// Its properties.
    pub properties: OfferProperties,
}

/// Outcome of an `Open`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpenStatus {
    /// Open: the ports are valid.
    Opened,
    /// The pages are not acceptable (outside the child's memory, overlapping
    /// its boot area, too many).
    BadRange,
    /// The root ran out of something (ports, vectors).
    NoResources,
}

/// One control message (either direction; see the module table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlMessage {
    /// Child: the version it speaks.
    Version {
        /// Major version.
        major: u16,
        /// Minor version.
        minor: u16,
    },
    /// Root: whether the version is accepted, and the root's own.
    VersionResponse {
        /// Accepted.
        accepted: bool,
        /// Root's major version.
        major: u16,
        /// Root's minor version.
        minor: u16,
    },
    /// Child: send me your offers.
    RequestOffers,
    /// Root: one device.
    Offer(Offer),
    /// Root: no more offers follow.
    AllOffersDelivered,
    /// Child: open channel `offer_id` with rings in the child's pages
    /// `[gpa, gpa + pages * 4096)`: the first `outbound_pages` hold the
    /// child-to-root ring, the rest the root-to-child ring.
    Open {
        /// The offer.
        offer_id: u32,
        /// Child guest-physical address of the first page.
        gpa: u64,
        /// Pages in all.
        pages: u32,
        /// Pages of the child-to-root ring.
        outbound_pages: u32,
    },
    /// Root: the outcome; on success the child's capability slots (raw
    /// `SlotHandle`) for the port it signals and the port it receives on.
    OpenResult {
        /// The offer.
        offer_id: u32,
        /// Outcome.
        status: OpenStatus,
        /// The port the child signals (child slot), when opened.
        signal_port: u64,
        /// The port the root signals, bound in the child (child slot), when opened.
        event_port: u64,
    },
    /// Child: close channel `offer_id`.
    Close {
        /// The offer.
        offer_id: u32,
    },
    /// Root: the device is gone; the child must stop using the channel.
    Rescind {
        /// The offer.
        offer_id: u32,
    },
}

/// Why the root closes a control channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// A message not allowed in the current state.
    OutOfOrder,
    /// A version the root does not speak.
    BadVersion,
    /// An offer id the root never offered.
    UnknownOffer(u32),
    /// Open of a channel already open (or being opened).
    AlreadyOpen(u32),
    /// Close of a channel that is not open.
    NotOpen(u32),
    /// A message only the root may send.
    WrongDirection,
    /// Ring page counts that cannot hold two rings.
    BadRingPages,
}

impl core::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProtocolError::OutOfOrder => write!(f, "control message out of order"),
            ProtocolError::BadVersion => write!(f, "unsupported protocol version"),
            ProtocolError::UnknownOffer(id) => write!(f, "unknown offer {id}"),
            ProtocolError::AlreadyOpen(id) => write!(f, "offer {id} already open"),
            ProtocolError::NotOpen(id) => write!(f, "offer {id} not open"),
            ProtocolError::WrongDirection => write!(f, "root-only control message"),
            ProtocolError::BadRingPages => write!(f, "bad ring page counts"),
        }
    }
}

/// Where the root's side of a control channel stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostState {
    /// Waiting for `Version`.
    AwaitVersion,
    /// Version agreed, waiting for `RequestOffers`.
    AwaitRequest,
    /// Offers sent: `Open` and `Close` allowed.
    Ready,
}

/// State of one offered channel on the root's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelState {
    /// Offered, not open.
    Offered,
    /// Open.
    Open,
}

/// What the root must do after a message was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostAction {
    /// Nothing beyond sending the replies.
    None,
    /// Check the range, map the pages, make ports, then call
    /// [`HostControl::opened`] and send its reply.
    Open {
        /// The offer.
        offer_id: u32,
        /// Child guest-physical address.
        gpa: u64,
        /// Pages in all.
        pages: u32,
        /// Pages of the child-to-root ring.
        outbound_pages: u32,
    },
    /// Tear the channel down (unmap, drop ports).
    Close {
        /// The offer.
        offer_id: u32,
    },
}

/// The root's side of a child's control channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostControl {
    state: HostState,
    offers: [Option<(Offer, ChannelState)>; MAX_OFFERS],
}

impl HostControl {
    /// A control channel that will offer `offers` (at most [`MAX_OFFERS`],
    /// the rest ignored); offer ids are their positions.
    pub fn new(offers: &[(Guid, Guid, OfferProperties)]) -> Self {
        let mut table = [None; MAX_OFFERS];
        for (i, (class, instance, properties)) in offers.iter().take(MAX_OFFERS).enumerate() {
            table[i] = Some((
                Offer {
                    offer_id: i as u32,
                    class: *class,
                    instance: *instance,
                    properties: *properties,
                },
                ChannelState::Offered,
            ));
        }
        HostControl {
            state: HostState::AwaitVersion,
            offers: table,
        }
    }

    /// The root's side as it stood when [`HostControl::state`] said
    /// `state` and [`HostControl::channel`] said `channels[i]` for offer
    /// `i` (quick migration: a saved child's control channel, rebuilt in
    /// its new partition). `offers` as for [`HostControl::new`]. `None`
    /// if the parts cannot have been saved from a control channel:
    /// `channels` does not name exactly one state per offer, or a channel
    /// is open before the offers were sent.
    pub fn resume(
        offers: &[(Guid, Guid, OfferProperties)],
        state: HostState,
        channels: &[ChannelState],
    ) -> Option<Self> {
        let mut control = HostControl::new(offers);
        let count = control.offers.iter().flatten().count();
        if channels.len() != count {
            return None;
        }
        let open = channels.contains(&ChannelState::Open);
        if open && state != HostState::Ready {
            return None;
        }
        for ((_, slot), saved) in control.offers.iter_mut().flatten().zip(channels) {
            *slot = *saved;
        }
        control.state = state;
        Some(control)
    }

    /// Where it stands.
    pub fn state(&self) -> HostState {
        self.state
    }

    /// State of offer `offer_id`.
    pub fn channel(&self, offer_id: u32) -> Option<ChannelState> {
        self.offers
            .get(offer_id as usize)
            .copied()
            .flatten()
            .map(|(_, s)| s)
    }

    /// The offer `offer_id`.
    pub fn offer(&self, offer_id: u32) -> Option<Offer> {
        self.offers
            .get(offer_id as usize)
            .copied()
            .flatten()
            .map(|(o, _)| o)
    }

    fn slot(&mut self, offer_id: u32) -> Result<&mut (Offer, ChannelState), ProtocolError> {
        self.offers
            .get_mut(offer_id as usize)
            .and_then(Option::as_mut)
            .ok_or(ProtocolError::UnknownOffer(offer_id))
    }

    /// Handles one message from the child; `reply` receives each message to
    /// send back, in order. An error means: close the control channel.
    pub fn handle(
        &mut self,
        message: &ControlMessage,
        mut reply: impl FnMut(ControlMessage),
    ) -> Result<HostAction, ProtocolError> {
        match (*message, self.state) {
            (ControlMessage::Version { major, .. }, HostState::AwaitVersion) => {
                let accepted = major == VERSION_MAJOR;
                reply(ControlMessage::VersionResponse {
                    accepted,
                    major: VERSION_MAJOR,
                    minor: VERSION_MINOR,
                });
                if !accepted {
                    return Err(ProtocolError::BadVersion);
                }
                self.state = HostState::AwaitRequest;
                Ok(HostAction::None)
            }
            (ControlMessage::RequestOffers, HostState::AwaitRequest) => {
                for (offer, _) in self.offers.iter().flatten() {
                    reply(ControlMessage::Offer(*offer));
                }
                reply(ControlMessage::AllOffersDelivered);
                self.state = HostState::Ready;
                Ok(HostAction::None)
            }
            (
                ControlMessage::Open {
                    offer_id,
                    gpa,
                    pages,
                    outbound_pages,
                },
                HostState::Ready,
            ) => {
                let slot = self.slot(offer_id)?;
                if slot.1 != ChannelState::Offered {
                    return Err(ProtocolError::AlreadyOpen(offer_id));
                }
                let inbound = pages.checked_sub(outbound_pages);
                if outbound_pages < 2
                    || inbound.is_none_or(|i| i < 2)
                    || outbound_pages > MAX_RING_PAGES
                    || inbound.is_some_and(|i| i > MAX_RING_PAGES)
                {
                    return Err(ProtocolError::BadRingPages);
                }
                slot.1 = ChannelState::Open;
                Ok(HostAction::Open {
                    offer_id,
                    gpa,
                    pages,
                    outbound_pages,
                })
            }
            (ControlMessage::Close { offer_id }, HostState::Ready) => {
                let slot = self.slot(offer_id)?;
                if slot.1 != ChannelState::Open {
                    return Err(ProtocolError::NotOpen(offer_id));
                }
                slot.1 = ChannelState::Offered;
                Ok(HostAction::Close { offer_id })
            }
            (
                ControlMessage::VersionResponse { .. }
                | ControlMessage::Offer(_)
                | ControlMessage::AllOffersDelivered
                | ControlMessage::OpenResult { .. }
                | ControlMessage::Rescind { .. },
                _,
            ) => Err(ProtocolError::WrongDirection),
            _ => Err(ProtocolError::OutOfOrder),
        }
    }

    /// The root finished an [`HostAction::Open`]: the reply to send. A
    /// failed open returns the channel to `Offered`.
    pub fn opened(
        &mut self,
        offer_id: u32,
        result: Result<(u64, u64), OpenStatus>,
    ) -> ControlMessage {
        let (status, signal_port, event_port) = match result {
            Ok((signal, event)) => (OpenStatus::Opened, signal, event),
            Err(status) => {
                if let Ok(slot) = self.slot(offer_id) {
                    slot.1 = ChannelState::Offered;
                }
                (status, 0, 0)
            }
        };
        ControlMessage::OpenResult {
            offer_id,
            status,
            signal_port,
            event_port,
        }
    }

    /// The root withdraws offer `offer_id` (e.g. the provider failed): the
    /// message to send; the channel is then closed on the root's side.
    pub fn rescind(&mut self, offer_id: u32) -> Option<ControlMessage> {
        let slot = self.slot(offer_id).ok()?;
        slot.1 = ChannelState::Offered;
        Some(ControlMessage::Rescind { offer_id })
    }
}

/// Where the child's side of the control channel stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestState {
    /// `Version` sent, waiting for the answer.
    AwaitVersion,
    /// `RequestOffers` sent, collecting offers.
    CollectingOffers,
    /// Offers known.
    Ready,
}

/// The child's side of the control channel: checks that what the root
/// sends fits what was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestControl {
    state: GuestState,
    offers: [Option<Offer>; MAX_OFFERS],
}

impl Default for GuestControl {
    fn default() -> Self {
        Self::new()
    }
}

impl GuestControl {
    /// A fresh control channel; send [`GuestControl::hello`] first.
    pub const fn new() -> Self {
        GuestControl {
            state: GuestState::AwaitVersion,
            offers: [None; MAX_OFFERS],
        }
    }

    /// The first message.
    pub fn hello(&self) -> ControlMessage {
        ControlMessage::Version {
            major: VERSION_MAJOR,
            minor: VERSION_MINOR,
        }
    }

    /// Where it stands.
    pub fn state(&self) -> GuestState {
        self.state
    }

    /// The first offer of `class`, once offers are known.
    pub fn find(&self, class: Guid) -> Option<Offer> {
        self.offers
            .iter()
            .flatten()
            .find(|o| o.class == class)
            .copied()
    }

    /// Handles one message from the root (see [`GuestEvent`] for what the
    /// caller does next). An error means: the root broke the protocol.
    pub fn handle(&mut self, message: &ControlMessage) -> Result<GuestEvent, ProtocolError> {
        match (*message, self.state) {
            (ControlMessage::VersionResponse { accepted, .. }, GuestState::AwaitVersion) => {
                if !accepted {
                    return Err(ProtocolError::BadVersion);
                }
                self.state = GuestState::CollectingOffers;
                Ok(GuestEvent::Send(ControlMessage::RequestOffers))
            }
            (ControlMessage::Offer(offer), GuestState::CollectingOffers) => {
                let slot = self
                    .offers
                    .get_mut(offer.offer_id as usize)
                    .ok_or(ProtocolError::UnknownOffer(offer.offer_id))?;
                *slot = Some(offer);
                Ok(GuestEvent::Nothing)
            }
            (ControlMessage::AllOffersDelivered, GuestState::CollectingOffers) => {
                self.state = GuestState::Ready;
                Ok(GuestEvent::OffersKnown)
            }
            (
                ControlMessage::OpenResult { .. } | ControlMessage::Rescind { .. },
                GuestState::Ready,
            ) => Ok(GuestEvent::Channel(*message)),
            (
                ControlMessage::Version { .. }
                | ControlMessage::RequestOffers
                | ControlMessage::Open { .. }
                | ControlMessage::Close { .. },
                _,
            ) => Err(ProtocolError::WrongDirection),
            _ => Err(ProtocolError::OutOfOrder),
        }
    }
}

/// What the child does after a control message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestEvent {
    /// Nothing.
    Nothing,
    /// Send this.
    Send(ControlMessage),
    /// Every offer is known ([`GuestControl::find`]).
    OffersKnown,
    /// An `OpenResult` or `Rescind` for the caller.
    Channel(ControlMessage),
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn console_offer() -> (Guid, Guid, OfferProperties) {
        (
            CONSOLE_CLASS,
            Guid([1; 16]),
            OfferProperties {
                max_payload: 256,
                flags: 0,
            },
        )
    }

    /// Runs the whole handshake between both state machines.
    #[test]
    fn host_and_guest_agree() {
        let mut host = HostControl::new(&[console_offer()]);
        let mut guest = GuestControl::new();
        let mut to_host = std::vec![guest.hello()];
        let mut opened = None;
        while let Some(m) = to_host.pop() {
            let mut replies = Vec::new();
            let action = host.handle(&m, |r| replies.push(r)).unwrap();
            if let HostAction::Open { offer_id, .. } = action {
                replies.push(host.opened(offer_id, Ok((7, 9))));
            }
            for r in replies {
                match guest.handle(&r).unwrap() {
                    GuestEvent::Send(m) => to_host.push(m),
                    GuestEvent::OffersKnown => {
                        let offer = guest.find(CONSOLE_CLASS).unwrap();
                        to_host.push(ControlMessage::Open {
                            offer_id: offer.offer_id,
                            gpa: 0x20_0000,
                            pages: 4,
                            outbound_pages: 2,
                        });
                    }
                    GuestEvent::Channel(m) => opened = Some(m),
                    GuestEvent::Nothing => {}
                }
            }
        }
        assert_eq!(
            opened,
            Some(ControlMessage::OpenResult {
                offer_id: 0,
                status: OpenStatus::Opened,
                signal_port: 7,
                event_port: 9
            })
        );
        assert_eq!(host.channel(0), Some(ChannelState::Open));
        assert_eq!(
            host.handle(&ControlMessage::Close { offer_id: 0 }, |_| {}),
            Ok(HostAction::Close { offer_id: 0 })
        );
        assert_eq!(host.channel(0), Some(ChannelState::Offered));
    }

    #[test]
    fn resume_rebuilds_a_saved_control_channel() {
        let offers = [console_offer(), console_offer()];
        let mut host = HostControl::new(&offers);
        host.handle(&ControlMessage::Version { major: 1, minor: 0 }, |_| {})
            .unwrap();
        host.handle(&ControlMessage::RequestOffers, |_| {}).unwrap();
        let open = ControlMessage::Open {
            offer_id: 1,
            gpa: 0x20_0000,
            pages: 4,
            outbound_pages: 2,
        };
        host.handle(&open, |_| {}).unwrap();
        host.opened(1, Ok((1, 2)));
        let channels = [host.channel(0).unwrap(), host.channel(1).unwrap()];
        let resumed = HostControl::resume(&offers, host.state(), &channels).unwrap();
        assert_eq!(resumed, host);
        // It goes on from there: offer 1 is open, offer 0 may be opened.
        let mut again = resumed.clone();
        assert_eq!(
            again.handle(&open, |_| {}),
            Err(ProtocolError::AlreadyOpen(1))
        );
        assert_eq!(
            again.handle(&ControlMessage::Close { offer_id: 1 }, |_| {}),
            Ok(HostAction::Close { offer_id: 1 })
        );
        // Inconsistent parts are refused.
        use ChannelState::{Offered, Open};
        assert!(HostControl::resume(&offers, HostState::Ready, &[Open]).is_none());
        assert!(HostControl::resume(&offers, HostState::Ready, &[Open, Open, Open]).is_none());
        assert!(HostControl::resume(&offers, HostState::AwaitRequest, &[Offered, Open]).is_none());
        assert!(HostControl::resume(&offers, HostState::AwaitVersion, &[Offered; 2]).is_some());
    }

    #[test]
    fn out_of_order_and_bad_messages_are_errors() {
        let open = ControlMessage::Open {
            offer_id: 0,
            gpa: 0,
            pages: 4,
            outbound_pages: 2,
        };
        let mut host = HostControl::new(&[console_offer()]);
        assert_eq!(host.handle(&open, |_| {}), Err(ProtocolError::OutOfOrder));
        assert_eq!(
            host.handle(&ControlMessage::RequestOffers, |_| {}),
            Err(ProtocolError::OutOfOrder)
        );
        assert_eq!(
            host.handle(&ControlMessage::AllOffersDelivered, |_| {}),
            Err(ProtocolError::WrongDirection)
        );
        assert_eq!(
            host.handle(&ControlMessage::Version { major: 9, minor: 0 }, |_| {}),
            Err(ProtocolError::BadVersion)
        );
        let mut host = HostControl::new(&[console_offer()]);
        host.handle(&GuestControl::new().hello(), |_| {}).unwrap();
        host.handle(&ControlMessage::RequestOffers, |_| {}).unwrap();
        for (bad, err) in [
            (
                ControlMessage::Open {
                    offer_id: 3,
                    gpa: 0,
                    pages: 4,
                    outbound_pages: 2,
                },
                ProtocolError::UnknownOffer(3),
            ),
            (
                ControlMessage::Open {
                    offer_id: 0,
                    gpa: 0,
                    pages: 3,
                    outbound_pages: 2,
                },
                ProtocolError::BadRingPages,
            ),
            (
                ControlMessage::Open {
                    offer_id: 0,
                    gpa: 0,
                    pages: 1,
                    outbound_pages: 2,
                },
                ProtocolError::BadRingPages,
            ),
            (
                ControlMessage::Open {
                    offer_id: 0,
                    gpa: 0,
                    pages: u32::MAX,
                    outbound_pages: 2,
                },
                ProtocolError::BadRingPages,
            ),
            (
                ControlMessage::Close { offer_id: 0 },
                ProtocolError::NotOpen(0),
            ),
            (ControlMessage::RequestOffers, ProtocolError::OutOfOrder),
        ] {
            assert_eq!(host.clone().handle(&bad, |_| {}), Err(err), "{bad:?}");
        }
        assert!(host.handle(&open, |_| {}).is_ok());
        assert_eq!(
            host.handle(&open, |_| {}),
            Err(ProtocolError::AlreadyOpen(0))
        );
    }

    #[test]
    fn messages_round_trip_through_postcard() {
        let mut buf = [0u8; 128];
        for m in [
            GuestControl::new().hello(),
            ControlMessage::Offer(Offer {
                offer_id: 1,
                class: CONSOLE_CLASS,
                instance: Guid([2; 16]),
                properties: OfferProperties {
                    max_payload: 9,
                    flags: 1,
                },
            }),
            ControlMessage::Open {
                offer_id: 0,
                gpa: u64::MAX,
                pages: 4,
                outbound_pages: 2,
            },
        ] {
            let bytes = postcard::to_slice(&m, &mut buf).unwrap();
            assert_eq!(postcard::from_bytes::<ControlMessage>(bytes).unwrap(), m);
        }
    }
}
