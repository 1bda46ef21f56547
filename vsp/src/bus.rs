//! One child's VMBus, the root's side: the control channel (version,
//! offers, open, close), the console channel the child opens, whose
//! lines the root prints as `[<child>] <line>`, the storage controller
//! ([`crate::storage`]) whose disks are the root's [`StorageBackend`], and
//! the network device ([`crate::network`]), whose frames go to a
//! [`FrameSink`] (the root's switch) in [`ChildBus::service_network`] and
//! come back through [`ChildBus::network_deliver`], and the integration
//! services ([`crate::integration`]: heartbeat, shutdown), driven by the
//! caller's clock in [`ChildBus::integration_poll`].
//!
//! # Invariants
//! - Only [`ChildBus::service`] reads the child's rings; each call handles
//!   at most a bounded batch per ring, so one chatty child cannot starve
//!   the others.
//! - Any [`CloseReason`] closes the channel it happened on (unmapping its
//!   pages); a broken control channel closes every channel of the child.
//!   After a close the child's memory is never touched again.
//! - The child pages mapped at any time (console rings, storage rings,
//!   storage buffer region, network rings, network buffer region,
//!   integration rings) never overlap: an open or grant naming pages
//!   already mapped is refused, so one unmap never removes another's pages.
//! - While the root drains a ring its interrupt mask is set; the mask is
//!   cleared (and the ring checked once more) only when it runs empty, so
//!   a busy child signals rarely.

pub use ipc::vmbus::close::{ChannelName, CloseReason};
use ipc::vmbus::console::ConsoleMessage;
use ipc::vmbus::control::{
    CONSOLE_CLASS, ControlMessage, Guid, HostAction, HostControl, INTEGRATION_CLASS, MAX_OFFERS,
    NETWORK_CLASS, OfferProperties, OpenStatus, ProtocolError, STORAGE_CLASS,
};
use ipc::vmbus::integration::ShutdownReason;
use ipc::vmbus::memory::RingMemory;
use ipc::vmbus::packet;
use ipc::vmbus::ring::{Consumer, Producer, Recv, RingError, Sent};
use ipc::vmbus::storage::MAX_MESSAGE;

pub use crate::bus_state::{BusState, DecodeError, EncodeError, RestoreError};
use crate::bus_state::{ConsoleState, ControlState, LinkFlags, OFFERS, RANGES, RingsState};
use crate::integration::Integration;
pub use crate::integration::{
    HEARTBEAT_PERIOD_NS, Heartbeat, INTEGRATION_OFFER, IntegrationEvent, IntegrationStats,
    MISSED_LIMIT, ShutdownError, ShutdownState,
};
use crate::network::Network;
pub use crate::network::{
    DeliverError, DropFrames, FrameSink, NETWORK_OFFER, NetworkConfig, NetworkStats,
};

pub use crate::storage::{STORAGE_OFFER, StorageBackend, StorageStats};
use crate::storage::{Storage, overlaps};

/// Offer id of the console (the first offer).
pub const CONSOLE_OFFER: u32 = 0;
/// Packets handled per ring per [`ChildBus::service`] call.
pub const BATCH: usize = 64;

/// What the root's hypervisor side does for the bus.
pub trait Platform {
    /// Ring memory of a mapped channel.
    type Memory: RingMemory;
    /// Checks the child's pages `[gpa, gpa + pages * 4096)`, maps them for
    /// the root and returns the memory of the child-to-root ring (the
    /// first `outbound_pages`) and of the root-to-child ring.
    fn map(
        &mut self,
        gpa: u64,
        pages: u32,
        outbound_pages: u32,
    ) -> Result<(Self::Memory, Self::Memory), OpenStatus>;
    /// Unmaps what [`Platform::map`] or [`Platform::map_buffer`] mapped at `gpa`.
    fn unmap(&mut self, gpa: u64, pages: u32);
    /// Checks the child's pages `[gpa, gpa + pages * 4096)` of a storage
    /// or network buffer grant (grantable memory of the child), maps them for the
    /// root and returns their memory (`pages * 4096` bytes). The bus
    /// already refused ranges overlapping pages it has mapped.
    fn map_buffer(&mut self, gpa: u64, pages: u32) -> Result<Self::Memory, OpenStatus>;
    /// Makes the two ports of channel `offer_id`: the child's slots (raw)
    /// of the port it signals and of the port it receives on.
    fn ports(&mut self, offer_id: u32) -> Result<(u64, u64), OpenStatus>;
    /// Signals the child on channel `offer_id` (`None`: the control channel).
    fn signal(&mut self, offer_id: Option<u32>);
}

/// What happened during [`ChildBus::service`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A console line from the child.
    Line(&'a str),
    /// A channel opened.
    Opened(ChannelName),
    /// A channel was closed, and why.
    Closed(ChannelName, CloseReason),
    /// The integration services changed state (heartbeat lost or back,
    /// shutdown moved on).
    Integration(IntegrationEvent),
}

pub(crate) struct Link<M: RingMemory> {
    pub(crate) rx: Consumer<M>,
    pub(crate) tx: Producer<M>,
    /// The root's interrupt mask on `rx` is set.
    masked: bool,
    /// The root polls this ring: its mask stays set even when it runs
    /// empty, so the child never signals.
    pub(crate) polling: bool,
}

impl<M: RingMemory> Link<M> {
    pub(crate) fn new(outbound: M, inbound: M) -> Result<Self, RingError> {
        Ok(Link {
            rx: Consumer::new(outbound)?,
            tx: Producer::new(inbound)?,
            masked: false,
            polling: false,
        })
    }

    /// Attaches to a saved channel's rings (indices as they are in memory,
    /// nothing initialised) with the root's saved flags.
    pub(crate) fn attach(outbound: M, inbound: M, flags: LinkFlags) -> Result<Self, RingError> {
        let mut link = Link::new(outbound, inbound)?;
        link.masked = flags.masked;
        link.polling = flags.polling;
        Ok(link)
    }

    /// The root's flags, for saving.
    pub(crate) fn flags(&self) -> LinkFlags {
        LinkFlags {
            masked: self.masked,
            polling: self.polling,
        }
    }

    /// Polls the ring from now on (mask set at once, and kept) or goes
    /// back to signals (the mask is cleared when the ring next runs empty).
    pub(crate) fn set_polling(&mut self, polling: bool) {
        self.polling = polling;
        if polling && !self.masked {
            self.rx.mask_interrupts();
            self.masked = true;
        }
    }
}

struct Console<M: RingMemory> {
    link: Link<M>,
    gpa: u64,
    pages: u32,
    /// Pages of the child-to-root ring (the first of `pages`).
    outbound_pages: u32,
}

/// Counters of a child's console channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConsoleStats {
    /// Lines received.
    pub lines: u64,
    /// Lines whose sequence number (transaction id) was not the next one.
    pub out_of_sequence: u64,
    /// Signals sent to the child.
    pub signals_to_child: u64,
}

/// The root's side of one child's VMBus.
pub struct ChildBus<M: RingMemory> {
    control: Option<Link<M>>,
    host: HostControl,
    console: Option<Console<M>>,
    stats: ConsoleStats,
    storage: Storage<M>,
    network: Network<M>,
    integration: Integration<M>,
}

/// The offers every child gets: the console (offer 0), the storage
/// controller (offer 1), the network device (offer 2) and the
/// integration services (offer 3).
pub fn default_offers() -> [(Guid, Guid, OfferProperties); OFFERS] {
    [
        (
            CONSOLE_CLASS,
            Guid(*b"console-instance"),
            OfferProperties {
                max_payload: 256,
                flags: 0,
            },
        ),
        (
            STORAGE_CLASS,
            Guid(*b"storage-ctrl-000"),
            OfferProperties {
                max_payload: MAX_MESSAGE as u32,
                flags: 0,
            },
        ),
        (
            NETWORK_CLASS,
            Guid(*b"network-nic-0000"),
            OfferProperties {
                max_payload: ipc::vmbus::network::MAX_MESSAGE as u32,
                flags: 0,
            },
        ),
        (
            INTEGRATION_CLASS,
            Guid(*b"integration-0000"),
            OfferProperties {
                max_payload: ipc::vmbus::integration::MAX_MESSAGE as u32,
                flags: 0,
            },
        ),
    ]
}

/// Receive buffer: the largest payload the root accepts from a child.
const RECEIVE_MAX: usize = 512;

impl<M: RingMemory> ChildBus<M> {
    /// A bus over the control channel's rings (root-initialised).
    pub fn new(outbound: M, inbound: M) -> Result<Self, RingError> {
        Ok(ChildBus {
            control: Some(Link::new(outbound, inbound)?),
            host: HostControl::new(&default_offers()),
            console: None,
            stats: ConsoleStats::default(),
            storage: Storage::new(),
            network: Network::new(),
            integration: Integration::new(),
        })
    }

    /// The bus as plain data, for quick migration ([`BusState::encode`]
    /// writes it to the saved file). Call it with the child stopped, after
    /// the last service pass and [`ChildBus::network_flush`] (a signal
    /// decision not yet made is not saved). Ports are not in it: the root
    /// keeps the child's slots and re-binds them itself.
    pub fn save(&self) -> BusState {
        let mut channels = [ipc::vmbus::control::ChannelState::Offered; OFFERS];
        for (id, slot) in channels.iter_mut().enumerate() {
            if let Some(state) = self.host.channel(id as u32) {
                *slot = state;
            }
        }
        BusState {
            control: ControlState {
                link: self.control.as_ref().map(Link::flags),
                host: self.host.state(),
                channels,
            },
            console: ConsoleState {
                channel: self.console.as_ref().map(|c| RingsState {
                    gpa: c.gpa,
                    pages: c.pages,
                    outbound_pages: c.outbound_pages,
                    link: c.link.flags(),
                }),
                stats: self.stats,
            },
            storage: self.storage.save(),
            network: self.network.save(),
            integration: self.integration.save(),
        }
    }

    /// The bus `state` describes, in the child's new partition (same
    /// guest-physical layout, the child's memory restored): over the
    /// control rings the caller mapped at the child's control pages (as
    /// for [`ChildBus::new`], but not initialised: the rings are attached
    /// as they are), with every other open channel's rings and buffer
    /// regions mapped again through `platform` at their saved pages.
    /// Makes no ports (the root re-binds the child's existing ones) and
    /// sends no signal. `state` is foreign input: everything
    /// [`BusState::check`] checks is refused first; on any error nothing
    /// `restore` mapped stays mapped.
    pub fn restore<P: Platform<Memory = M>>(
        state: &BusState,
        control_outbound: M,
        control_inbound: M,
        platform: &mut P,
    ) -> Result<Self, RestoreError> {
        state.check()?;
        let host = HostControl::resume(
            &default_offers(),
            state.control.host,
            &state.control.channels,
        )
        .ok_or(RestoreError::ControlState)?;
        let control = match state.control.link {
            Some(flags) => Some(
                Link::attach(control_outbound, control_inbound, flags)
                    .map_err(RestoreError::ControlRing)?,
            ),
            None => None,
        };
        let mut mapped = [None; RANGES];
        match Self::restore_channels(state, platform, &mut mapped) {
            Ok((console, storage, network, integration)) => Ok(ChildBus {
                control,
                host,
                console,
                stats: state.console.stats,
                storage,
                network,
                integration,
            }),
            Err(e) => {
                for (gpa, pages) in mapped.into_iter().flatten() {
                    platform.unmap(gpa, pages);
                }
                Err(e)
            }
        }
    }

    /// Maps and attaches the saved channels of a checked `state`, noting
    /// each range mapped in `mapped` (the caller unmaps them on error).
    fn restore_channels<P: Platform<Memory = M>>(
        state: &BusState,
        platform: &mut P,
        mapped: &mut [Option<(u64, u32)>; RANGES],
    ) -> Result<Devices<M>, RestoreError> {
        let console = match &state.console.channel {
            Some(r) => Some(Console {
                link: map_rings(platform, ChannelName::Console, r, mapped)?,
                gpa: r.gpa,
                pages: r.pages,
                outbound_pages: r.outbound_pages,
            }),
            None => None,
        };
        let (storage_link, storage_region) = match &state.storage.channel {
            Some(c) => map_channel(
                platform,
                ChannelName::Storage,
                &c.rings,
                c.region.map(|r| (r.gpa, r.pages)),
                mapped,
            )?,
            None => (None, None),
        };
        let (network_link, network_region) = match &state.network.channel {
            Some(c) => map_channel(
                platform,
                ChannelName::Network,
                &c.rings,
                c.region.map(|r| (r.gpa, r.pages)),
                mapped,
            )?,
            None => (None, None),
        };
        let integration_link = match &state.integration.channel {
            Some(r) => Some(map_rings(platform, ChannelName::Integration, r, mapped)?),
            None => None,
        };
        Ok((
            console,
            Storage::restored(&state.storage, storage_link, storage_region),
            Network::restored(&state.network, network_link, network_region),
            Integration::restored(&state.integration, integration_link),
        ))
    }

    /// Storage counters.
    pub fn storage_stats(&self) -> StorageStats {
        self.storage.stats()
    }

    /// Whether the storage channel is open.
    pub fn storage_open(&self) -> bool {
        self.storage.is_open()
    }

    /// Whether the root polls the storage ring (`true`: the child is
    /// asked not to signal, its ring's interrupt mask stays set) or wants a
    /// signal when a request lands in the empty ring (`false`, the
    /// default). A root that services the bus in a loop anyway saves the
    /// child a hypercall and itself an interrupt per request; a root about
    /// to sleep must turn polling off first.
    pub fn set_storage_polling(&mut self, polling: bool) {
        self.storage.set_polling(polling);
    }

    /// Counts a signal from the child on the storage channel (the root's
    /// interrupt handler sees it; this only feeds [`StorageStats`]).
    pub fn storage_signalled(&mut self) {
        crate::bump(&mut self.storage.stats_mut().signals_from_child, 1);
    }

    /// LUN `lun` appeared with `sectors` sectors (the root added it to its
    /// backend first): tells the child (`LunAdded`) if the storage channel
    /// is open; requests for it are served again.
    pub fn lun_added<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
        lun: u8,
        sectors: u64,
        on: impl FnMut(Event<'_>),
    ) {
        let result = self.storage.notify(platform, lun, Some(sectors));
        self.storage_result(platform, result, on);
    }

    /// LUN `lun` is gone: from now on its requests complete `Removed`
    /// (until it is added again), and the child is told (`LunRemoved`).
    /// The root may drop it from its backend after this call.
    pub fn lun_removed<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
        lun: u8,
        on: impl FnMut(Event<'_>),
    ) {
        let result = self.storage.notify(platform, lun, None);
        self.storage_result(platform, result, on);
    }

    /// Gives the child a NIC (`Some`: the MAC the root assigned it and its
    /// switch port's MTU) or none (`None`, the default: `Init` is answered
    /// `Unavailable`). Set it before the child opens the channel: a later
    /// change moves the MAC the child's sends must carry at once, the MTU
    /// only at the next `Init` (of a new channel).
    pub fn set_network(&mut self, config: Option<NetworkConfig>) {
        self.network.set_config(config);
    }

    /// The NIC setting.
    pub fn network_config(&self) -> Option<NetworkConfig> {
        self.network.config()
    }

    /// Whether the network channel is open.
    pub fn network_open(&self) -> bool {
        self.network.is_open()
    }

    /// The MTU the child negotiated (`None` before `Init`).
    pub fn network_mtu(&self) -> Option<u16> {
        self.network.mtu()
    }

    /// Receive buffers the child has posted that the root holds now.
    pub fn network_posted(&self) -> usize {
        self.network.posted()
    }

    /// Network counters.
    pub fn network_stats(&self) -> NetworkStats {
        self.network.stats()
    }

    /// Polls the network ring (`true`) or asks for signals, like
    /// [`ChildBus::set_storage_polling`].
    pub fn set_network_polling(&mut self, polling: bool) {
        self.network.set_polling(polling);
    }

    /// Defers the network channel's signal decisions (`true`): neither
    /// [`ChildBus::service_network`] nor [`ChildBus::network_deliver`]
    /// signals the child any more; the caller calls
    /// [`ChildBus::network_flush`] at the end of each of its passes, so a
    /// pass that completes many sends and delivers many frames costs the
    /// child at most one signal (and the root one `PortSignal`).
    pub fn set_network_deferred_signals(&mut self, deferred: bool) {
        self.network.set_deferred(deferred);
    }

    /// The network channel's signal decision for everything published
    /// since the last one (see [`ChildBus::set_network_deferred_signals`]);
    /// a broken ring closes the channel, reported through `on`.
    pub fn network_flush<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
        on: impl FnMut(Event<'_>),
    ) {
        let result = self.network.flush(platform);
        self.network_result(platform, result, on);
    }

    /// Counts a signal from the child on the network channel.
    pub fn network_signalled(&mut self) {
        crate::bump(&mut self.network.stats_mut().signals_from_child, 1);
    }

    /// Sets the link state (up by default); an initialised child is told
    /// (`LinkState`).
    pub fn network_link<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
        up: bool,
        on: impl FnMut(Event<'_>),
    ) {
        let result = self.network.set_link(platform, up);
        self.network_result(platform, result, on);
    }

    /// Reads what the child sent on the network channel (a bounded batch),
    /// hands each good frame to `sink` (read through `scratch`, which
    /// should hold [`ipc::vmbus::network::MAX_FRAME`] bytes) and answers;
    /// reports a close through `on`. Returns the packets handled. Opening
    /// and closing the channel happen in [`ChildBus::service`].
    pub fn service_network<P: Platform<Memory = M>, S: FrameSink + ?Sized>(
        &mut self,
        platform: &mut P,
        sink: &mut S,
        scratch: &mut [u8],
        on: impl FnMut(Event<'_>),
    ) -> usize {
        let mut handled = 0;
        let [rings, region] = self.storage.mapped();
        let busy = [
            self.console.as_ref().map(|c| (c.gpa, c.pages)),
            rings,
            region,
            self.integration.mapped(),
        ];
        let result = self
            .network
            .service(platform, sink, scratch, &busy, &mut handled);
        self.network_result(platform, result, on);
        handled
    }

    /// Places `frame` (from the switch) into the child's oldest posted
    /// receive buffer and tells it (`Receive`, tagged with the buffer's
    /// `PostReceive`). An error means the frame was dropped (counted in
    /// [`NetworkStats`]); a broken ring also closes the channel.
    pub fn network_deliver<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
        frame: &[u8],
        flags: u8,
        on: impl FnMut(Event<'_>),
    ) -> Result<(), DeliverError> {
        match self.network.deliver(platform, frame, flags) {
            Ok(result) => result,
            Err(reason) => {
                self.network_result(platform, Err(reason), on);
                Err(DeliverError::Closed)
            }
        }
    }

    /// Closes the network channel after `result` failed.
    fn network_result<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
        result: Result<(), CloseReason>,
        mut on: impl FnMut(Event<'_>),
    ) {
        if let Err(reason) = result {
            self.network.close(platform);
            self.rescind(platform, NETWORK_OFFER);
            on(Event::Closed(ChannelName::Network, reason));
        }
    }

    /// Closes the storage channel after `result` failed.
    fn storage_result<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
        result: Result<(), CloseReason>,
        mut on: impl FnMut(Event<'_>),
    ) {
        if let Err(reason) = result {
            self.storage.close(platform);
            self.rescind(platform, STORAGE_OFFER);
            on(Event::Closed(ChannelName::Storage, reason));
        }
    }

    /// Withdraws `offer_id` after its channel broke and tells the child.
    fn rescind<P: Platform<Memory = M>>(&mut self, platform: &mut P, offer_id: u32) {
        let _ = self.host.rescind(offer_id);
        if self
            .reply(platform, &ControlMessage::Rescind { offer_id })
            .is_err()
        {
            self.control = None;
        }
    }

    /// The child pages mapped now (console rings, storage rings and
    /// region, network rings and region, integration rings).
    fn mapped(&self) -> [Option<(u64, u32)>; RANGES] {
        let [rings, region] = self.storage.mapped();
        let [net_rings, net_region] = self.network.mapped();
        [
            self.console.as_ref().map(|c| (c.gpa, c.pages)),
            rings,
            region,
            net_rings,
            net_region,
            self.integration.mapped(),
        ]
    }

    /// Whether the integration channel is open.
    pub fn integration_open(&self) -> bool {
        self.integration.is_open()
    }

    /// Integration counters.
    pub fn integration_stats(&self) -> IntegrationStats {
        self.integration.stats()
    }

    /// What the root knows of the child's heartbeat.
    pub fn heartbeat(&self) -> Heartbeat {
        self.integration.heartbeat()
    }

    /// Where the shutdown the root asked for stands.
    pub fn shutdown_state(&self) -> ShutdownState {
        self.integration.shutdown()
    }

    /// Asks the child to shut down within `deadline_ms` of `now_ns` (the
    /// caller's clock, as for [`ChildBus::integration_poll`]); follow it
    /// with [`ChildBus::shutdown_state`]. A broken ring closes the channel,
    /// reported through `on`.
    pub fn request_shutdown<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
        reason: ShutdownReason,
        deadline_ms: u32,
        now_ns: u64,
        on: impl FnMut(Event<'_>),
    ) -> Result<(), ShutdownError> {
        let result = self
            .integration
            .request_shutdown(platform, reason, deadline_ms, now_ns);
        if let Err(ShutdownError::Closed(reason)) = result {
            self.integration_result(platform, Err(reason), on);
        }
        result
    }

    /// Services the integration channel at `now_ns` (nanoseconds of the
    /// caller's monotonic clock): reads the child's replies, times out a
    /// shutdown whose limit passed, sends a heartbeat when one is due
    /// (every [`HEARTBEAT_PERIOD_NS`]). Changes and a close are reported
    /// through `on`. Returns the packets handled. Opening and closing the
    /// channel happen in [`ChildBus::service`].
    pub fn integration_poll<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
        now_ns: u64,
        mut on: impl FnMut(Event<'_>),
    ) -> usize {
        let mut handled = 0;
        let result = self.integration.poll(
            platform,
            now_ns,
            &mut |e| on(Event::Integration(e)),
            &mut handled,
        );
        self.integration_result(platform, result, on);
        handled
    }

    /// Closes the integration channel after `result` failed.
    fn integration_result<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
        result: Result<(), CloseReason>,
        mut on: impl FnMut(Event<'_>),
    ) {
        if let Err(reason) = result {
            self.integration.close(platform);
            self.rescind(platform, INTEGRATION_OFFER);
            on(Event::Closed(ChannelName::Integration, reason));
        }
    }

    /// Console counters.
    pub fn console_stats(&self) -> ConsoleStats {
        self.stats
    }

    /// Whether the console channel is open.
    pub fn console_open(&self) -> bool {
        self.console.is_some()
    }

    /// Whether the control channel is still open.
    pub fn control_open(&self) -> bool {
        self.control.is_some()
    }

    /// Closes everything (e.g. before the child is destroyed); unmaps the
    /// console's pages.
    pub fn shut_down<P: Platform<Memory = M>>(&mut self, platform: &mut P) {
        if let Some(c) = self.console.take() {
            platform.unmap(c.gpa, c.pages);
        }
        self.storage.close(platform);
        self.network.close(platform);
        self.integration.close(platform);
        self.control = None;
    }

    /// Reads what the child sent (a bounded batch per ring), acts on it and
    /// reports each line and each open or close through `on`. Storage
    /// requests are performed on `backend`, their data moved through
    /// `bounce` (any length; [`crate::storage::BOUNCE_BYTES`] suggested,
    /// larger requests go in chunks; empty only with a backend without
    /// LUNs). Returns the packets handled.
    pub fn service<P: Platform<Memory = M>, B: StorageBackend + ?Sized>(
        &mut self,
        platform: &mut P,
        backend: &mut B,
        bounce: &mut [u8],
        mut on: impl FnMut(Event<'_>),
    ) -> usize {
        let mut handled = 0;
        match self.service_control(platform, &mut on, &mut handled) {
            Ok(()) => {}
            Err(reason) => {
                self.control = None;
                on(Event::Closed(ChannelName::Control, reason));
                if let Some(c) = self.console.take() {
                    platform.unmap(c.gpa, c.pages);
                    on(Event::Closed(
                        ChannelName::Console,
                        CloseReason::ControlClosed,
                    ));
                }
                if self.storage.close(platform) {
                    on(Event::Closed(
                        ChannelName::Storage,
                        CloseReason::ControlClosed,
                    ));
                }
                if self.network.close(platform) {
                    on(Event::Closed(
                        ChannelName::Network,
                        CloseReason::ControlClosed,
                    ));
                }
                if self.integration.close(platform) {
                    on(Event::Closed(
                        ChannelName::Integration,
                        CloseReason::ControlClosed,
                    ));
                }
                return handled;
            }
        }
        if let Err(reason) = self.service_console(platform, &mut on, &mut handled) {
            if let Some(c) = self.console.take() {
                platform.unmap(c.gpa, c.pages);
            }
            on(Event::Closed(ChannelName::Console, reason));
            // Tell the child, if it still listens.
            self.rescind(platform, CONSOLE_OFFER);
        }
        let [net_rings, net_region] = self.network.mapped();
        let busy = [
            self.console.as_ref().map(|c| (c.gpa, c.pages)),
            net_rings,
            net_region,
            self.integration.mapped(),
        ];
        let result = self
            .storage
            .service(platform, backend, bounce, &busy, &mut handled);
        self.storage_result(platform, result, &mut on);
        handled
    }

    fn reply<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
        message: &ControlMessage,
    ) -> Result<(), CloseReason> {
        let link = self.control.as_mut().ok_or(CloseReason::ControlClosed)?;
        let mut scratch = [0u8; 128];
        match link
            .tx
            .send_message(0, 0, message, &mut scratch)
            .map_err(CloseReason::Ring)?
        {
            Sent::Written { signal } => {
                if signal {
                    platform.signal(None);
                }
                Ok(())
            }
            Sent::Full => Err(CloseReason::Stalled),
        }
    }

    fn service_control<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
        on: &mut impl FnMut(Event<'_>),
        handled: &mut usize,
    ) -> Result<(), CloseReason> {
        let mut buf = [0u8; RECEIVE_MAX];
        for _ in 0..BATCH {
            let Some(link) = self.control.as_mut() else {
                return Ok(());
            };
            let message = match next(link, &mut buf, || platform.signal(None))? {
                Some(packet) => {
                    packet::decode::<ControlMessage>(&packet).map_err(CloseReason::Codec)?
                }
                None => return Ok(()),
            };
            *handled += 1;
            let mut replies = [None; MAX_OFFERS + 2];
            let mut n = 0;
            let action = self
                .host
                .handle(&message, |r| {
                    if let Some(slot) = replies.get_mut(n) {
                        *slot = Some(r);
                        n += 1;
                    }
                })
                .map_err(CloseReason::Protocol)?;
            for r in replies.iter().flatten() {
                self.reply(platform, r)?;
            }
            match action {
                HostAction::None => {}
                HostAction::Open {
                    offer_id,
                    gpa,
                    pages,
                    outbound_pages,
                } => {
                    let result = self.open(platform, offer_id, gpa, pages, outbound_pages);
                    if result.is_ok() {
                        on(Event::Opened(match offer_id {
                            STORAGE_OFFER => ChannelName::Storage,
                            NETWORK_OFFER => ChannelName::Network,
                            INTEGRATION_OFFER => ChannelName::Integration,
                            _ => ChannelName::Console,
                        }));
                    }
                    let answer = self.host.opened(offer_id, result);
                    self.reply(platform, &answer)?;
                }
                HostAction::Close { offer_id } => {
                    if offer_id == CONSOLE_OFFER
                        && let Some(c) = self.console.take()
                    {
                        platform.unmap(c.gpa, c.pages);
                    }
                    if offer_id == STORAGE_OFFER {
                        self.storage.close(platform);
                    }
                    if offer_id == NETWORK_OFFER {
                        self.network.close(platform);
                    }
                    if offer_id == INTEGRATION_OFFER {
                        self.integration.close(platform);
                    }
                }
            }
        }
        Ok(())
    }

    fn open<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
        offer_id: u32,
        gpa: u64,
        pages: u32,
        outbound_pages: u32,
    ) -> Result<(u64, u64), OpenStatus> {
        let free = match offer_id {
            CONSOLE_OFFER => self.console.is_none(),
            STORAGE_OFFER => !self.storage.is_open(),
            NETWORK_OFFER => !self.network.is_open(),
            INTEGRATION_OFFER => !self.integration.is_open(),
            _ => false,
        };
        if !free {
            return Err(OpenStatus::NoResources);
        }
        if self
            .mapped()
            .iter()
            .flatten()
            .any(|m| overlaps(*m, (gpa, pages)))
        {
            return Err(OpenStatus::BadRange);
        }
        let (outbound, inbound) = platform.map(gpa, pages, outbound_pages)?;
        let link = match Link::new(outbound, inbound) {
            Ok(link) => link,
            Err(_) => {
                platform.unmap(gpa, pages);
                return Err(OpenStatus::BadRange);
            }
        };
        let ports = match platform.ports(offer_id) {
            Ok(ports) => ports,
            Err(e) => {
                platform.unmap(gpa, pages);
                return Err(e);
            }
        };
        if offer_id == STORAGE_OFFER {
            self.storage.open(link, gpa, pages, outbound_pages);
        } else if offer_id == NETWORK_OFFER {
            self.network.open(link, gpa, pages, outbound_pages);
        } else if offer_id == INTEGRATION_OFFER {
            self.integration.open(link, gpa, pages, outbound_pages);
        } else {
            self.console = Some(Console {
                link,
                gpa,
                pages,
                outbound_pages,
            });
        }
        Ok(ports)
    }

    fn service_console<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
        on: &mut impl FnMut(Event<'_>),
        handled: &mut usize,
    ) -> Result<(), CloseReason> {
        let mut buf = [0u8; RECEIVE_MAX];
        let Some(console) = self.console.as_mut() else {
            return Ok(());
        };
        let mut to_child = 0;
        for _ in 0..BATCH {
            let Some(packet) = next(&mut console.link, &mut buf, || to_child += 1)? else {
                break;
            };
            let message =
                packet::decode::<ConsoleMessage<'_>>(&packet).map_err(CloseReason::Codec)?;
            message.check().map_err(CloseReason::Console)?;
            *handled += 1;
            match message {
                ConsoleMessage::Line { text } => {
                    if packet.header.transaction_id.get() != self.stats.lines {
                        crate::bump(&mut self.stats.out_of_sequence, 1);
                    }
                    crate::bump(&mut self.stats.lines, 1);
                    on(Event::Line(text));
                }
                // Input flows root to child only.
                ConsoleMessage::Input { .. } => {
                    return Err(CloseReason::Protocol(ProtocolError::WrongDirection));
                }
            }
        }
        for _ in 0..to_child {
            crate::bump(&mut self.stats.signals_to_child, 1);
            platform.signal(Some(CONSOLE_OFFER));
        }
        Ok(())
    }
}

/// The device channels [`ChildBus::restore`] rebuilds.
type Devices<M> = (Option<Console<M>>, Storage<M>, Network<M>, Integration<M>);

/// Notes a range `restore` mapped (in the first free slot).
fn note(mapped: &mut [Option<(u64, u32)>; RANGES], gpa: u64, pages: u32) {
    if let Some(slot) = mapped.iter_mut().find(|m| m.is_none()) {
        *slot = Some((gpa, pages));
    }
}

/// Maps a saved channel's rings again and attaches to them as they are.
fn map_rings<M: RingMemory, P: Platform<Memory = M>>(
    platform: &mut P,
    name: ChannelName,
    rings: &RingsState,
    mapped: &mut [Option<(u64, u32)>; RANGES],
) -> Result<Link<M>, RestoreError> {
    let (outbound, inbound) = platform
        .map(rings.gpa, rings.pages, rings.outbound_pages)
        .map_err(|status| RestoreError::Map(name, status))?;
    note(mapped, rings.gpa, rings.pages);
    Link::attach(outbound, inbound, rings.link).map_err(|e| RestoreError::Ring(name, e))
}

/// Maps a saved device channel again: its rings and, if it had one, its
/// buffer region `(gpa, pages)`.
#[allow(clippy::type_complexity)] // The two halves of a channel, as `restored` takes them.
fn map_channel<M: RingMemory, P: Platform<Memory = M>>(
    platform: &mut P,
    name: ChannelName,
    rings: &RingsState,
    region: Option<(u64, u32)>,
    mapped: &mut [Option<(u64, u32)>; RANGES],
) -> Result<(Option<Link<M>>, Option<M>), RestoreError> {
    let link = map_rings(platform, name, rings, mapped)?;
    let region = match region {
        Some((gpa, pages)) => Some(map_region(platform, name, gpa, pages, mapped)?),
        None => None,
    };
    Ok((Some(link), region))
}

/// Maps a saved buffer region again (at least `pages` long).
fn map_region<M: RingMemory, P: Platform<Memory = M>>(
    platform: &mut P,
    name: ChannelName,
    gpa: u64,
    pages: u32,
    mapped: &mut [Option<(u64, u32)>; RANGES],
) -> Result<M, RestoreError> {
    let memory = platform
        .map_buffer(gpa, pages)
        .map_err(|status| RestoreError::Map(name, status))?;
    note(mapped, gpa, pages);
    if (memory.len() as u64) < u64::from(pages) * ipc::vmbus::storage::PAGE_BYTES {
        return Err(RestoreError::Map(name, OpenStatus::BadRange));
    }
    Ok(memory)
}

/// The next packet of a link's inbound ring, managing the interrupt mask:
/// masked while packets come, unmasked (and checked again) when empty.
/// `signal_child` is called when the child waits for room to send.
pub(crate) fn next<'b, M: RingMemory>(
    link: &mut Link<M>,
    buf: &'b mut [u8],
    mut signal_child: impl FnMut(),
) -> Result<Option<packet::Packet<'b>>, CloseReason> {
    if !link.masked {
        link.rx.mask_interrupts();
        link.masked = true;
    }
    if let Some(signal_producer) = link.rx.poll_empty().map_err(CloseReason::Ring)? {
        if signal_producer {
            signal_child();
        }
        if link.polling {
            return Ok(None);
        }
        link.masked = false;
        if link.rx.unmask_interrupts().map_err(CloseReason::Ring)? {
            return Ok(None);
        }
        // A packet landed before the unmask took effect: keep polling.
        link.rx.mask_interrupts();
        link.masked = true;
    }
    match link.rx.try_recv(buf).map_err(CloseReason::Ring)? {
        Recv::Packet(p) => Ok(Some(p)),
        Recv::Empty { signal_producer } => {
            if signal_producer {
                signal_child();
            }
            Ok(None)
        }
    }
}

#[cfg(test)]
#[path = "bus_tests.rs"]
mod tests;
