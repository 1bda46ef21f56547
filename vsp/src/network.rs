//! The network device provider: the root's end of a child's synthetic NIC
//! (`ipc::vmbus::network`, `docs/devices/network.md`). Frames the child
//! sends are read out of its send area and handed to a [`FrameSink`] (the
//! root's switch port, [`crate::switch::Ingress`]); frames for the child
//! are copied into the receive buffers it posted
//! ([`crate::bus::ChildBus::network_deliver`]).
//!
//! # Invariants
//! - A send is read from the region only after `check_frame` accepted
//!   it, and handed on only after its source MAC proved to be the one the
//!   root assigned; every `Send` (and every payload that does not decode)
//!   gets exactly one `SendComplete` with its transaction id, every
//!   `SendBatch` (each entry checked like a `Send`) exactly one
//!   `SendCompleteBatch`. A batch the sink cannot take whole waits
//!   (`pending_send`) and no further packet is read until it is done.
//! - The region is read and written only through its [`RingMemory`]
//!   (bounds-safe) and only inside ranges `check_frame` /
//!   `check_receive_buffer` accepted; it is mapped at most once per
//!   channel and unmapped when the channel closes.
//! - Every posted buffer comes back exactly once: filled (`Receive` with
//!   `Ok`) or refused at once (`Receive` with an error status). At most
//!   [`MAX_POSTED`] are held; a posted buffer is at least `mtu + 14`
//!   bytes, so every frame the root delivers fits the next one.
//! - Per service call at most [`BATCH`] packets are read; replies are
//!   published as they are made and the child is signalled at most once
//!   per batch (deferred: at most once per [`Network::flush`], which the
//!   owner calls at the end of each of its passes). A reply that does not
//!   fit waits in one slot, and no further packet is read until it is sent.
//! - A frame the sink takes in place ([`FrameSink::place`]) is checked in
//!   the sink's memory after the copy, so what the switch forwards is what
//!   was checked, whatever the child writes meanwhile.
//! - No allocation; the frame scratch buffer is the caller's.

use ipc::vmbus::close::CloseReason;
use ipc::vmbus::memory::RingMemory;
use ipc::vmbus::network::{
    Areas, Batch, BufferEntry, FrameEntry, GrantStatus, GuestMessage, HEADER_BYTES, HostMessage,
    MAX_BATCH_MESSAGE, MAX_POSTED, Mac, PAGE_BYTES, PROTOCOL_VERSION, STATUS_COUNT, Status,
    VERSION_BATCH, VERSION_SINGLE, check_frame, check_frame_len, check_grant, check_receive_buffer,
    check_source, negotiate_mtu,
};
use ipc::vmbus::packet::{self, KIND_MESSAGE};
use ipc::vmbus::ring::Sent;

use crate::bus::{BATCH, Link, Platform, next};
use crate::bus_state::{
    List, NetworkChannelState, NetworkPendingSend, NetworkRegionState, NetworkStalled,
    NetworkState, PostedBuffer, RingsState,
};
use crate::storage::overlaps;

/// Offer id of the network device (the third offer).
pub const NETWORK_OFFER: u32 = 2;

/// Where the frames a child sends go (the root's switch port).
pub trait FrameSink {
    /// Takes `frame` (already checked: length within the MTU, source MAC
    /// the child's own) with its `flags`; `false` if it was dropped (the
    /// child's `SendComplete` says [`Status::Dropped`]).
    fn frame(&mut self, frame: &[u8], flags: u8) -> bool;

    /// Whether the sink can take another frame now. While it cannot, the
    /// provider leaves the child's further packets in its ring (the child's
    /// send slots stay busy until room is made): back-pressure instead of
    /// drops. A sink that never fills keeps the default.
    fn has_room(&self) -> bool {
        true
    }

    /// Room for the next frame of `len` bytes, if the sink can take it in
    /// place (its own memory, e.g. the switch port's queue slot): the
    /// provider reads the frame from the child's send area straight into
    /// it, checks it there and then calls [`FrameSink::commit`] — one copy
    /// instead of two. `None` (the default): the provider reads the frame
    /// into its scratch buffer and calls [`FrameSink::frame`], which also
    /// counts whatever drop made the sink refuse the place.
    fn place(&mut self, len: usize) -> Option<&mut [u8]> {
        let _ = len;
        None
    }

    /// Takes the frame of `len` bytes just written into the room
    /// [`FrameSink::place`] gave, with its `flags`; `false` if it was
    /// dropped. Not called for a frame that failed a check: its room is
    /// simply given again.
    fn commit(&mut self, len: usize, flags: u8) -> bool {
        let _ = (len, flags);
        false
    }
}

/// A sink that drops every frame (a root without a switch yet).
#[derive(Clone, Copy, Debug, Default)]
pub struct DropFrames;

impl FrameSink for DropFrames {
    fn frame(&mut self, _: &[u8], _: u8) -> bool {
        false
    }
}

/// The root's setting for a child's NIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkConfig {
    /// The MAC the root assigned (the child's switch port owns it).
    pub mac: Mac,
    /// The largest MTU the child may negotiate (its switch port's MTU).
    pub mtu: u16,
}

/// Why a frame could not be delivered to the child (the caller counts
/// it as dropped; the switch as [`crate::switch::DropReason::NoBuffer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliverError {
    /// The channel is not open, or the child has not granted its region
    /// or completed `Init`.
    NotReady,
    /// Shorter than a header, or longer than the negotiated MTU allows.
    BadLength,
    /// The child has no receive buffer posted.
    NoReceiveBuffer,
    /// The ring to the child is full (the buffer stays posted).
    RingFull,
    /// The channel broke and was closed.
    Closed,
}

/// Counters of a child's NIC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkStats {
    /// `Send`s received (including undecodable payloads).
    pub sends: u64,
    /// Bytes of frames handed to the sink.
    pub send_bytes: u64,
    /// `SendComplete`s sent.
    pub completions: u64,
    /// `SendComplete`s and refused `PostReceive`s by status (index `Status as usize`).
    pub by_status: [u64; STATUS_COUNT],
    /// Frames delivered into the child's buffers.
    pub received: u64,
    /// Their bytes.
    pub receive_bytes: u64,
    /// Receive buffers posted (accepted).
    pub posted: u64,
    /// Frames dropped because no buffer was posted.
    pub no_buffer: u64,
    /// Frames dropped for their length (runt, or above the child's MTU).
    pub bad_length: u64,
    /// Frames dropped because the ring to the child was full.
    pub ring_full: u64,
    /// Frames dropped because the child was not ready (no region or `Init`).
    pub not_ready: u64,
    /// Buffer grants received (accepted or not).
    pub grants: u64,
    /// `Init`s received.
    pub inits: u64,
    /// `LinkState` messages sent.
    pub link_changes: u64,
    /// Signals the root received from the child on this channel.
    pub signals_from_child: u64,
    /// Signals sent to the child.
    pub signals_to_child: u64,
    /// Service passes that read at least one packet.
    pub batches: u64,
    /// Packets read from the child (messages, whatever they carry).
    pub packets_from_child: u64,
    /// Messages published to the child.
    pub packets_to_child: u64,
}

impl NetworkStats {
    /// Replies with `status`.
    pub fn completed(&self, status: Status) -> u64 {
        self.by_status[status as usize]
    }

    /// Error replies (every status but `Ok`).
    pub fn errors(&self) -> u64 {
        self.by_status[1..]
            .iter()
            .fold(0, |a, &b| a.saturating_add(b))
    }
}

/// The granted region.
struct Region<M: RingMemory> {
    memory: M,
    gpa: u64,
    pages: u32,
    /// Pages of the send area (the first of `pages`).
    send_pages: u32,
    areas: Areas,
}

/// A posted receive buffer: (transaction id, offset, length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Posted {
    tid: u64,
    offset: u32,
    len: u32,
}

/// An open network channel.
struct Channel<M: RingMemory> {
    link: Link<M>,
    gpa: u64,
    pages: u32,
    /// Pages of the child-to-root ring (the first of `pages`).
    outbound_pages: u32,
    region: Option<Region<M>>,
    /// The negotiated MTU, once `Init` succeeded.
    mtu: Option<u16>,
    /// Posted buffers, a FIFO of `count` from `head`.
    posted: [Posted; MAX_POSTED],
    head: usize,
    count: usize,
    /// A reply that did not fit the ring to the child.
    stalled: Option<(u64, HostMessage)>,
    /// A `LinkState` waits to be sent.
    link_pending: bool,
    /// The negotiated protocol version.
    version: u16,
    /// A `SendBatch` not finished (the sink filled); no packet is read
    /// until it is.
    pending_send: Option<NetworkPendingSend>,
    /// Frames delivered but not yet announced: one `ReceiveBatch` at the
    /// next flush or when full (only at [`VERSION_BATCH`]). Never
    /// non-empty while `stalled` is set.
    rx_batch: Batch<FrameEntry>,
}

/// The network device's state in a child's bus.
pub(crate) struct Network<M: RingMemory> {
    channel: Option<Channel<M>>,
    config: Option<NetworkConfig>,
    link_up: bool,
    polling: bool,
    /// The owner flushes (signal decision) once per pass of its own
    /// ([`Network::flush`]) instead of every `service` and `deliver`.
    deferred: bool,
    stats: NetworkStats,
}

impl<M: RingMemory> Channel<M> {
    fn pop_posted(&mut self) -> Option<Posted> {
        if self.count == 0 {
            return None;
        }
        let p = self.posted[self.head];
        self.head = (self.head + 1) % MAX_POSTED;
        self.count -= 1;
        Some(p)
    }
}

impl<M: RingMemory> Network<M> {
    pub(crate) const fn new() -> Self {
        Network {
            channel: None,
            config: None,
            link_up: true,
            polling: false,
            deferred: false,
            stats: NetworkStats {
                sends: 0,
                send_bytes: 0,
                completions: 0,
                by_status: [0; STATUS_COUNT],
                received: 0,
                receive_bytes: 0,
                posted: 0,
                no_buffer: 0,
                bad_length: 0,
                ring_full: 0,
                not_ready: 0,
                grants: 0,
                inits: 0,
                link_changes: 0,
                signals_from_child: 0,
                signals_to_child: 0,
                batches: 0,
                packets_from_child: 0,
                packets_to_child: 0,
            },
        }
    }

    pub(crate) fn stats(&self) -> NetworkStats {
        self.stats
    }

    pub(crate) fn stats_mut(&mut self) -> &mut NetworkStats {
        &mut self.stats
    }

    pub(crate) fn is_open(&self) -> bool {
        self.channel.is_some()
    }

    pub(crate) fn config(&self) -> Option<NetworkConfig> {
        self.config
    }

    pub(crate) fn set_config(&mut self, config: Option<NetworkConfig>) {
        self.config = config;
    }

    /// The negotiated MTU (channel open and `Init` done).
    pub(crate) fn mtu(&self) -> Option<u16> {
        self.channel.as_ref().and_then(|c| c.mtu)
    }

    /// Receive buffers the child has posted and the root holds.
    pub(crate) fn posted(&self) -> usize {
        self.channel.as_ref().map_or(0, |c| c.count)
    }

    /// The child pages mapped for this channel: rings, then the region.
    pub(crate) fn mapped(&self) -> [Option<(u64, u32)>; 2] {
        match &self.channel {
            None => [None, None],
            Some(c) => [
                Some((c.gpa, c.pages)),
                c.region.as_ref().map(|r| (r.gpa, r.pages)),
            ],
        }
    }

    pub(crate) fn set_polling(&mut self, polling: bool) {
        self.polling = polling;
        if let Some(c) = self.channel.as_mut() {
            c.link.set_polling(polling);
        }
    }

    pub(crate) fn open(&mut self, mut link: Link<M>, gpa: u64, pages: u32, outbound_pages: u32) {
        link.set_polling(self.polling);
        self.channel = Some(Channel {
            link,
            gpa,
            pages,
            outbound_pages,
            region: None,
            mtu: None,
            posted: [Posted {
                tid: 0,
                offset: 0,
                len: 0,
            }; MAX_POSTED],
            head: 0,
            count: 0,
            stalled: None,
            link_pending: false,
            version: VERSION_SINGLE,
            pending_send: None,
            rx_batch: Batch::new(),
        });
    }

    /// The device as plain data (quick migration); posted buffers oldest
    /// first.
    pub(crate) fn save(&self) -> NetworkState {
        NetworkState {
            channel: self.channel.as_ref().map(|c| {
                let mut posted = List::new();
                for i in 0..c.count {
                    let p = c.posted[(c.head + i) % MAX_POSTED];
                    // At most MAX_POSTED are held: the list holds them all.
                    let _ = posted.push(PostedBuffer {
                        tid: p.tid,
                        offset: p.offset,
                        len: p.len,
                    });
                }
                NetworkChannelState {
                    rings: RingsState {
                        gpa: c.gpa,
                        pages: c.pages,
                        outbound_pages: c.outbound_pages,
                        link: c.link.flags(),
                    },
                    region: c.region.as_ref().map(|r| NetworkRegionState {
                        gpa: r.gpa,
                        pages: r.pages,
                        send_pages: r.send_pages,
                    }),
                    mtu: c.mtu,
                    posted,
                    // Frames delivered but not announced yet are a reply
                    // waiting, like one that did not fit (never both).
                    stalled: c
                        .stalled
                        .or_else(|| {
                            (!c.rx_batch.is_empty()).then_some((
                                0,
                                HostMessage::ReceiveBatch {
                                    entries: c.rx_batch,
                                },
                            ))
                        })
                        .map(|(tid, message)| NetworkStalled { tid, message }),
                    link_pending: c.link_pending,
                    version: c.version,
                    pending_send: c.pending_send,
                }
            }),
            config: self.config,
            link_up: self.link_up,
            polling: self.polling,
            deferred: self.deferred,
            stats: self.stats,
        }
    }

    /// The device `state` describes (checked by
    /// [`crate::bus_state::BusState::check`]) over the open channel's
    /// `link` and `region` memory the caller attached and mapped at the
    /// saved pages (`region` at least its pages long).
    pub(crate) fn restored(state: &NetworkState, link: Option<Link<M>>, region: Option<M>) -> Self {
        let channel = state.channel.as_ref().zip(link).map(|(c, link)| {
            let mut posted = [Posted {
                tid: 0,
                offset: 0,
                len: 0,
            }; MAX_POSTED];
            for (slot, p) in posted.iter_mut().zip(c.posted.as_slice()) {
                *slot = Posted {
                    tid: p.tid,
                    offset: p.offset,
                    len: p.len,
                };
            }
            // The split was checked (`check_grant`); computed here so that
            // a mapped region is never dropped untracked.
            let region = c.region.zip(region).map(|(r, memory)| Region {
                memory,
                gpa: r.gpa,
                pages: r.pages,
                send_pages: r.send_pages,
                areas: Areas {
                    send: u64::from(r.send_pages) * PAGE_BYTES,
                    receive: u64::from(r.pages.saturating_sub(r.send_pages)) * PAGE_BYTES,
                },
            });
            Channel {
                link,
                gpa: c.rings.gpa,
                pages: c.rings.pages,
                outbound_pages: c.rings.outbound_pages,
                region,
                mtu: c.mtu,
                posted,
                head: 0,
                count: c.posted.len().min(MAX_POSTED),
                stalled: c.stalled.map(|s| (s.tid, s.message)),
                link_pending: c.link_pending,
                version: c.version,
                pending_send: c.pending_send,
                rx_batch: Batch::new(),
            }
        });
        Network {
            channel,
            config: state.config,
            link_up: state.link_up,
            polling: state.polling,
            deferred: state.deferred,
            stats: state.stats,
        }
    }

    /// Closes the channel (if open), unmapping its rings and region.
    pub(crate) fn close<P: Platform<Memory = M>>(&mut self, platform: &mut P) -> bool {
        let Some(c) = self.channel.take() else {
            return false;
        };
        if let Some(r) = c.region {
            platform.unmap(r.gpa, r.pages);
        }
        platform.unmap(c.gpa, c.pages);
        true
    }

    /// Sets the link state and tells an initialised child.
    pub(crate) fn set_link<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
        up: bool,
    ) -> Result<(), CloseReason> {
        if self.link_up == up {
            return Ok(());
        }
        self.link_up = up;
        let Some(c) = self.channel.as_mut() else {
            return Ok(());
        };
        if c.mtu.is_some() {
            c.link_pending = true;
            if c.stalled.is_none() {
                send_link(c, &mut self.stats, self.link_up)?;
            }
        }
        self.flush(platform)
    }

    /// Defers the signal decision of `service` and `deliver` to
    /// [`Network::flush`] (`true`), or makes it at the end of each (`false`).
    pub(crate) fn set_deferred(&mut self, deferred: bool) {
        self.deferred = deferred;
    }

    /// The signal decision for every reply and frame published since the
    /// last one: the child is signalled if its inbound ring went from empty
    /// to non-empty while it asked for signals.
    pub(crate) fn flush<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
    ) -> Result<(), CloseReason> {
        if let Some(c) = self.channel.as_mut() {
            publish_received(c, &mut self.stats)?;
        }
        if let Some(c) = self.channel.as_mut()
            && c.link.tx.flush().map_err(CloseReason::Ring)?
        {
            crate::bump(&mut self.stats.signals_to_child, 1);
            platform.signal(Some(NETWORK_OFFER));
        }
        Ok(())
    }

    /// Copies `frame` into the oldest posted buffer and tells the child.
    /// The outer error means: close the channel.
    pub(crate) fn deliver<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
        frame: &[u8],
        flags: u8,
    ) -> Result<Result<(), DeliverError>, CloseReason> {
        let dropped = |counter: &mut u64, why| {
            crate::bump(counter, 1);
            Ok(Err(why))
        };
        let Some(c) = self.channel.as_mut() else {
            return dropped(&mut self.stats.not_ready, DeliverError::NotReady);
        };
        let (Some(mtu), Some(region)) = (c.mtu, c.region.as_ref()) else {
            return dropped(&mut self.stats.not_ready, DeliverError::NotReady);
        };
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        if check_frame_len(len, mtu).is_err() {
            return dropped(&mut self.stats.bad_length, DeliverError::BadLength);
        }
        if c.count == 0 {
            return dropped(&mut self.stats.no_buffer, DeliverError::NoReceiveBuffer);
        }
        if c.stalled.is_some() || c.link_pending {
            // Older replies first; the child is behind.
            return dropped(&mut self.stats.ring_full, DeliverError::RingFull);
        }
        let buffer = c.posted[c.head];
        // Posted buffers hold `mtu + 14` bytes at least and lie inside the
        // receive area (checked when posted).
        region.memory.write(
            (region.areas.receive_start() + u64::from(buffer.offset)) as usize,
            frame,
        );
        if c.version >= VERSION_BATCH {
            // Announced with others in one `ReceiveBatch` (at the flush, or
            // now if the batch is full).
            c.pop_posted();
            let _ = c.rx_batch.push(FrameEntry {
                offset: buffer.offset,
                len,
                flags,
            });
            if c.rx_batch.len() == c.rx_batch.capacity() {
                publish_received(c, &mut self.stats)?;
            }
        } else {
            let message = HostMessage::Receive {
                status: Status::Ok,
                offset: buffer.offset,
                len,
                flags,
            };
            if !send(c, &mut self.stats, buffer.tid, &message)? {
                return dropped(&mut self.stats.ring_full, DeliverError::RingFull);
            }
            c.pop_posted();
        }
        crate::bump(&mut self.stats.received, 1);
        crate::bump(&mut self.stats.receive_bytes, frame.len() as u64);
        if !self.deferred {
            self.flush(platform)?;
        }
        Ok(Ok(()))
    }

    /// Reads up to [`BATCH`] packets from the child, performs them (sent
    /// frames go to `sink`, read through `scratch`, which should hold
    /// [`ipc::vmbus::network::MAX_FRAME`] bytes) and answers. `busy`: other
    /// child pages the root has mapped. An error means: close the channel.
    pub(crate) fn service<P: Platform<Memory = M>, S: FrameSink + ?Sized>(
        &mut self,
        platform: &mut P,
        sink: &mut S,
        scratch: &mut [u8],
        busy: &[Option<(u64, u32)>],
        handled: &mut usize,
    ) -> Result<(), CloseReason> {
        let Some(c) = self.channel.as_mut() else {
            return Ok(());
        };
        let mut to_child = 0u64;
        let mut read_any = false;
        let mut buf = [0u8; RECEIVE_MAX];
        'batch: {
            if let Some((tid, message)) = c.stalled {
                if !send(c, &mut self.stats, tid, &message)? {
                    break 'batch;
                }
                c.stalled = None;
            }
            if !publish_received(c, &mut self.stats)? {
                break 'batch;
            }
            if c.link_pending && !send_link(c, &mut self.stats, self.link_up)? {
                break 'batch;
            }
            if let Some(mut pending) = c.pending_send.take() {
                if !run_batch(c, self.config, &mut pending, sink, scratch, &mut self.stats) {
                    c.pending_send = Some(pending);
                    break 'batch;
                }
                let reply = HostMessage::SendCompleteBatch {
                    statuses: pending.statuses,
                };
                if !send(c, &mut self.stats, pending.tid, &reply)? {
                    c.stalled = Some((pending.tid, reply));
                    break 'batch;
                }
            }
            for _ in 0..BATCH {
                if !sink.has_room() {
                    // Read on at the next pass, once the switch drained.
                    break;
                }
                let Some(packet) = next(&mut c.link, &mut buf, || to_child += 1)? else {
                    break;
                };
                *handled += 1;
                read_any = true;
                crate::bump(&mut self.stats.packets_from_child, 1);
                let tid = packet.header.transaction_id.get();
                let reply = match packet::decode::<GuestMessage>(&packet) {
                    Err(_) => {
                        crate::bump(&mut self.stats.sends, 1);
                        Some(HostMessage::SendComplete {
                            status: Status::Malformed,
                        })
                    }
                    Ok(GuestMessage::GrantBuffers {
                        gpa,
                        pages,
                        send_pages,
                    }) => {
                        crate::bump(&mut self.stats.grants, 1);
                        Some(HostMessage::BuffersGranted {
                            status: grant(c, platform, gpa, pages, send_pages, busy),
                        })
                    }
                    Ok(GuestMessage::Init { mtu, mac: _ }) => {
                        crate::bump(&mut self.stats.inits, 1);
                        let reply = init(c, self.config, mtu);
                        if matches!(
                            reply,
                            HostMessage::InitDone {
                                status: Status::Ok,
                                ..
                            }
                        ) {
                            c.link_pending = true;
                        }
                        Some(reply)
                    }
                    Ok(GuestMessage::Send { offset, len, flags }) => {
                        crate::bump(&mut self.stats.sends, 1);
                        let status = transmit(c, self.config, offset, len, flags, sink, scratch);
                        if status == Status::Ok {
                            crate::bump(&mut self.stats.send_bytes, u64::from(len));
                        }
                        Some(HostMessage::SendComplete { status })
                    }
                    Ok(GuestMessage::Negotiate { version }) => {
                        c.version = version.clamp(VERSION_SINGLE, PROTOCOL_VERSION);
                        Some(HostMessage::Negotiated { version: c.version })
                    }
                    Ok(
                        GuestMessage::SendBatch { entries: _ }
                        | GuestMessage::PostReceiveBatch { entries: _ },
                    ) if c.version < VERSION_BATCH => {
                        // Batches need the version that has them.
                        crate::bump(&mut self.stats.sends, 1);
                        Some(HostMessage::SendComplete {
                            status: Status::Malformed,
                        })
                    }
                    Ok(GuestMessage::SendBatch { entries }) => {
                        if entries.is_empty() {
                            crate::bump(&mut self.stats.sends, 1);
                            Some(HostMessage::SendComplete {
                                status: Status::Malformed,
                            })
                        } else {
                            let mut pending = NetworkPendingSend {
                                tid,
                                entries,
                                statuses: Batch::new(),
                            };
                            if run_batch(
                                c,
                                self.config,
                                &mut pending,
                                sink,
                                scratch,
                                &mut self.stats,
                            ) {
                                Some(HostMessage::SendCompleteBatch {
                                    statuses: pending.statuses,
                                })
                            } else {
                                // The rest at the next pass; read nothing more.
                                c.pending_send = Some(pending);
                                break;
                            }
                        }
                    }
                    Ok(GuestMessage::PostReceiveBatch { entries }) => {
                        if entries.is_empty() {
                            crate::bump(&mut self.stats.sends, 1);
                            Some(HostMessage::SendComplete {
                                status: Status::Malformed,
                            })
                        } else {
                            match post_batch(c, tid, entries.as_slice()) {
                                Ok(()) => {
                                    crate::bump(&mut self.stats.posted, entries.len() as u64);
                                    None
                                }
                                Err((status, offset)) => Some(HostMessage::Receive {
                                    status,
                                    offset,
                                    len: 0,
                                    flags: 0,
                                }),
                            }
                        }
                    }
                    Ok(GuestMessage::PostReceive { offset, len }) => {
                        match post(c, tid, offset, len) {
                            Ok(()) => {
                                crate::bump(&mut self.stats.posted, 1);
                                None
                            }
                            Err(status) => Some(HostMessage::Receive {
                                status,
                                offset,
                                len: 0,
                                flags: 0,
                            }),
                        }
                    }
                };
                let Some(reply) = reply else {
                    continue;
                };
                if !send(c, &mut self.stats, tid, &reply)? {
                    c.stalled = Some((tid, reply));
                    break;
                }
                if c.link_pending && !send_link(c, &mut self.stats, self.link_up)? {
                    break;
                }
            }
        }
        if read_any {
            crate::bump(&mut self.stats.batches, 1);
        }
        for _ in 0..to_child {
            crate::bump(&mut self.stats.signals_to_child, 1);
            platform.signal(Some(NETWORK_OFFER));
        }
        if self.deferred {
            return Ok(());
        }
        self.flush(platform)
    }
}

/// Receive buffer: a network payload is at most [`MAX_BATCH_MESSAGE`]
/// bytes; a larger one (up to this) is answered `Malformed`, beyond it the
/// ring is broken.
const RECEIVE_MAX: usize = 512;

/// Publishes one message (signal decision deferred); `false` if the ring
/// to the child is full.
fn send<M: RingMemory>(
    c: &mut Channel<M>,
    stats: &mut NetworkStats,
    tid: u64,
    message: &HostMessage,
) -> Result<bool, CloseReason> {
    let mut scratch = [0u8; MAX_BATCH_MESSAGE + 64];
    let bytes = packet::encode(message, &mut scratch).map_err(CloseReason::Codec)?;
    match c
        .link
        .tx
        .send_deferred(KIND_MESSAGE, 0, tid, bytes)
        .map_err(CloseReason::Ring)?
    {
        Sent::Written { .. } => {
            crate::bump(&mut stats.packets_to_child, 1);
            match message {
                HostMessage::SendComplete { status } => {
                    crate::bump(&mut stats.completions, 1);
                    crate::bump(&mut stats.by_status[*status as usize], 1);
                }
                HostMessage::SendCompleteBatch { statuses } => {
                    for status in statuses.as_slice() {
                        crate::bump(&mut stats.completions, 1);
                        crate::bump(&mut stats.by_status[*status as usize], 1);
                    }
                }
                HostMessage::Receive { status, .. } if *status != Status::Ok => {
                    crate::bump(&mut stats.by_status[*status as usize], 1);
                }
                HostMessage::LinkState { .. } => crate::bump(&mut stats.link_changes, 1),
                _ => {}
            }
            Ok(true)
        }
        Sent::Full => Ok(false),
    }
}

/// Announces the frames delivered since the last announcement in one
/// `ReceiveBatch`; `false` if the ring is full (the batch then waits as the
/// stalled reply, sent first at the next service pass).
fn publish_received<M: RingMemory>(
    c: &mut Channel<M>,
    stats: &mut NetworkStats,
) -> Result<bool, CloseReason> {
    if c.rx_batch.is_empty() {
        return Ok(true);
    }
    let message = HostMessage::ReceiveBatch {
        entries: c.rx_batch,
    };
    if send(c, stats, 0, &message)? {
        c.rx_batch = Batch::new();
        return Ok(true);
    }
    if c.stalled.is_none() {
        c.stalled = Some((0, message));
        c.rx_batch = Batch::new();
    }
    Ok(false)
}

/// Performs the entries of `pending` not yet done, each like a `Send`,
/// while the sink has room; `true` once every entry has its status.
fn run_batch<M: RingMemory, S: FrameSink + ?Sized>(
    c: &Channel<M>,
    config: Option<NetworkConfig>,
    pending: &mut NetworkPendingSend,
    sink: &mut S,
    scratch: &mut [u8],
    stats: &mut NetworkStats,
) -> bool {
    while let Some(entry) = pending.entries.as_slice().get(pending.statuses.len()) {
        if !sink.has_room() {
            return false;
        }
        crate::bump(&mut stats.sends, 1);
        let status = transmit(
            c,
            config,
            entry.offset,
            entry.len,
            entry.flags,
            sink,
            scratch,
        );
        if status == Status::Ok {
            crate::bump(&mut stats.send_bytes, u64::from(entry.len));
        }
        let _ = pending.statuses.push(status);
    }
    true
}

/// Sends the pending `LinkState`; `false` if the ring is full.
fn send_link<M: RingMemory>(
    c: &mut Channel<M>,
    stats: &mut NetworkStats,
    up: bool,
) -> Result<bool, CloseReason> {
    if !send(c, stats, 0, &HostMessage::LinkState { up })? {
        return Ok(false);
    }
    c.link_pending = false;
    Ok(true)
}

/// Handles a buffer grant: size and split, once only, no overlap with
/// mapped pages, then the platform's range check and mapping.
fn grant<M: RingMemory, P: Platform<Memory = M>>(
    c: &mut Channel<M>,
    platform: &mut P,
    gpa: u64,
    pages: u32,
    send_pages: u32,
    busy: &[Option<(u64, u32)>],
) -> GrantStatus {
    if c.region.is_some() {
        return GrantStatus::AlreadyGranted;
    }
    let areas = match check_grant(pages, send_pages) {
        Ok(areas) => areas,
        Err(status) => return status,
    };
    let range = (gpa, pages);
    if !gpa.is_multiple_of(PAGE_BYTES)
        || overlaps(range, (c.gpa, c.pages))
        || busy.iter().flatten().any(|b| overlaps(range, *b))
    {
        return GrantStatus::BadRange;
    }
    match platform.map_buffer(gpa, pages) {
        Ok(memory) if memory.len() as u64 >= u64::from(pages) * PAGE_BYTES => {
            c.region = Some(Region {
                memory,
                gpa,
                pages,
                send_pages,
                areas,
            });
            GrantStatus::Granted
        }
        Ok(_) => {
            platform.unmap(gpa, pages);
            GrantStatus::BadRange
        }
        Err(_) => GrantStatus::BadRange,
    }
}

/// Handles `Init`: MTU negotiation against the root's port.
fn init<M: RingMemory>(
    c: &mut Channel<M>,
    config: Option<NetworkConfig>,
    requested: u16,
) -> HostMessage {
    let error = |status| HostMessage::InitDone {
        status,
        mtu: 0,
        mac: Mac::ZERO,
    };
    let Some(config) = config else {
        return error(Status::Unavailable);
    };
    if let Some(mtu) = c.mtu {
        return HostMessage::InitDone {
            status: Status::AlreadyInitialized,
            mtu,
            mac: config.mac,
        };
    }
    match negotiate_mtu(requested, config.mtu) {
        Ok(mtu) => {
            c.mtu = Some(mtu);
            HostMessage::InitDone {
                status: Status::Ok,
                mtu,
                mac: config.mac,
            }
        }
        Err(status) => error(status),
    }
}

/// Checks and performs one `Send`: the frame goes to `sink`.
fn transmit<M: RingMemory, S: FrameSink + ?Sized>(
    c: &Channel<M>,
    config: Option<NetworkConfig>,
    offset: u32,
    len: u32,
    flags: u8,
    sink: &mut S,
    scratch: &mut [u8],
) -> Status {
    let (Some(mtu), Some(config)) = (c.mtu, config) else {
        return Status::NotInitialized;
    };
    if let Err(status) = check_frame(
        offset,
        len,
        flags,
        mtu,
        c.region.as_ref().map(|r| r.areas.send),
    ) {
        return status;
    }
    let Some(region) = c.region.as_ref() else {
        return Status::BadBuffer;
    };
    // Straight into the sink's own memory when it offers it (checked
    // there: the child cannot change what was checked), else via scratch.
    if let Some(place) = sink.place(len as usize) {
        let Some(frame) = place.get_mut(..len as usize) else {
            return Status::Dropped;
        };
        region.memory.read(offset as usize, frame);
        if let Err(status) = check_source(frame, config.mac) {
            return status;
        }
        return if sink.commit(len as usize, flags) {
            Status::Ok
        } else {
            Status::Dropped
        };
    }
    let Some(frame) = scratch.get_mut(..len as usize) else {
        // The caller's scratch is smaller than this (checked) frame.
        return Status::Dropped;
    };
    region.memory.read(offset as usize, frame);
    if let Err(status) = check_source(frame, config.mac) {
        return status;
    }
    if sink.frame(frame, flags) {
        Status::Ok
    } else {
        Status::Dropped
    }
}

/// Handles a `PostReceive`: inside the receive area, large enough for the
/// negotiated MTU, room in the FIFO.
fn post<M: RingMemory>(c: &mut Channel<M>, tid: u64, offset: u32, len: u32) -> Result<(), Status> {
    let mtu = c.mtu.ok_or(Status::NotInitialized)?;
    check_receive_buffer(offset, len, c.region.as_ref().map(|r| r.areas.receive))?;
    if len < u32::from(mtu) + HEADER_BYTES {
        return Err(Status::BadBuffer);
    }
    if c.count == MAX_POSTED {
        return Err(Status::TooManyPosted);
    }
    c.posted[(c.head + c.count) % MAX_POSTED] = Posted { tid, offset, len };
    c.count += 1;
    Ok(())
}

/// Handles a `PostReceiveBatch`: every entry checked like a `PostReceive`
/// and room for all of them in the FIFO, or none is posted (the first
/// failing entry's error and the batch's first offset).
fn post_batch<M: RingMemory>(
    c: &mut Channel<M>,
    tid: u64,
    entries: &[BufferEntry],
) -> Result<(), (Status, u32)> {
    let first = entries.first().map_or(0, |e| e.offset);
    let mtu = c.mtu.ok_or((Status::NotInitialized, first))?;
    let area = c.region.as_ref().map(|r| r.areas.receive);
    for e in entries {
        check_receive_buffer(e.offset, e.len, area).map_err(|s| (s, first))?;
        if e.len < u32::from(mtu) + HEADER_BYTES {
            return Err((Status::BadBuffer, first));
        }
    }
    if c.count + entries.len() > MAX_POSTED {
        return Err((Status::TooManyPosted, first));
    }
    for e in entries {
        c.posted[(c.head + c.count) % MAX_POSTED] = Posted {
            tid,
            offset: e.offset,
            len: e.len,
        };
        c.count += 1;
    }
    Ok(())
}

#[cfg(test)]
#[path = "network_tests.rs"]
mod tests;
