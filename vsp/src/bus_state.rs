//! The root's side of one child's VMBus as plain data, for quick
//! migration: [`crate::bus::ChildBus::save`] describes the bus as a
//! [`BusState`], [`BusState::encode`] turns it into bytes for the saved
//! file, [`BusState::decode`] reads them back and
//! [`crate::bus::ChildBus::restore`] rebuilds the bus in the child's new
//! partition. What lives in the child's memory (rings, their indices,
//! buffer regions) is saved with that memory and is not in here.
//!
//! # Invariants
//! - Bytes are one format version byte ([`FORMAT_VERSION`]) followed by
//!   exactly one postcard `BusState` (field order: `docs/vmbus.md`,
//!   "Saved bus state"); a different version, a malformed body or
//!   trailing bytes are a [`DecodeError`].
//! - Decoded bytes come from a file, so they are foreign input:
//!   [`BusState::check`] refuses every state the bus could not have been
//!   in (see [`RestoreError`]) before anything is mapped, and decoding or
//!   checking never panics.
//! - No allocation: lists are bounded ([`List`]); more entries than the
//!   bound do not decode.

use core::fmt;

use ipc::vmbus::close::ChannelName;
use ipc::vmbus::control::{ChannelState, HostState, MAX_RING_PAGES, OpenStatus};
pub use ipc::vmbus::list::List;
use ipc::vmbus::network::{self, HEADER_BYTES, MAX_MTU, MAX_POSTED, MIN_MTU};
use ipc::vmbus::ring::RingError;
use ipc::vmbus::storage::PAGE_BYTES;
use ipc::vmbus::storage::{self, MAX_LUNS};
use serde::{Deserialize, Serialize};

use crate::bus::ConsoleStats;
pub use crate::integration::{IntegrationState, IntegrationStats};
use crate::network::{NetworkConfig, NetworkStats};
use crate::storage::{StorageStats, overlaps};

/// The format version byte in front of the postcard body (3: with the
/// integration channel; 2 had three offers and is refused).
pub const FORMAT_VERSION: u8 = 3;
/// Bytes enough for any encoded [`BusState`] (version byte included).
pub const MAX_ENCODED: usize = 4096;
/// Offers of every child's bus (console, storage, network, integration).
pub const OFFERS: usize = 4;
/// Child page ranges a bus maps besides the control channel (console
/// rings, storage rings and region, network rings and region, integration
/// rings).
pub const RANGES: usize = 6;

/// Everything of one child's VMBus that is not in the child's memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusState {
    /// The control channel.
    pub control: ControlState,
    /// The console channel (offer 0).
    pub console: ConsoleState,
    /// The storage controller (offer 1).
    pub storage: StorageState,
    /// The network device (offer 2).
    pub network: NetworkState,
    /// The integration services (offer 3).
    pub integration: IntegrationState,
}

/// The control channel: its link (its rings are at the child's layout's
/// control pages, which the caller maps) and the protocol state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlState {
    /// The root's flags on the control rings; `None`: the control channel
    /// was closed (the root no longer reads it).
    pub link: Option<LinkFlags>,
    /// Where the handshake stands.
    pub host: HostState,
    /// Each offer's channel state, by offer id.
    pub channels: [ChannelState; OFFERS],
}

/// The root's flags on the ring it consumes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkFlags {
    /// The root's interrupt mask on the ring is set.
    pub masked: bool,
    /// The root polls the ring (the mask stays set).
    pub polling: bool,
}

/// An open channel's rings: child pages `[gpa, gpa + pages * 4096)`, the
/// first `outbound_pages` the child-to-root ring (as in `Open`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingsState {
    /// Child guest-physical address of the first page.
    pub gpa: u64,
    /// Pages in all.
    pub pages: u32,
    /// Pages of the child-to-root ring.
    pub outbound_pages: u32,
    /// The root's flags on the child-to-root ring.
    pub link: LinkFlags,
}

/// The console.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleState {
    /// The open channel's rings.
    pub channel: Option<RingsState>,
    /// Counters (lines go on in sequence after a restore).
    pub stats: ConsoleStats,
}

/// A granted storage buffer region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionState {
    /// Child guest-physical address of the first page.
    pub gpa: u64,
    /// Pages.
    pub pages: u32,
}

/// A hot-plug notice not yet sent to the child.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LunNotice {
    /// The LUN.
    pub lun: u8,
    /// `Some(sectors)`: `LunAdded`; `None`: `LunRemoved`.
    pub added: Option<u64>,
}

/// A storage reply that did not fit the ring to the child.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageStalled {
    /// Its transaction id.
    pub tid: u64,
    /// The message.
    pub message: storage::HostMessage,
}

/// An open storage channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageChannelState {
    /// Its rings.
    pub rings: RingsState,
    /// The granted buffer region.
    pub region: Option<RegionState>,
    /// Pending hot-plug notices, by LUN (ascending, each LUN once).
    pub notices: List<LunNotice, MAX_LUNS>,
    /// The reply waiting for room.
    pub stalled: Option<StorageStalled>,
}

/// The storage controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageState {
    /// The open channel.
    pub channel: Option<StorageChannelState>,
    /// LUNs hot-removed and not added again (bit n = LUN n).
    pub removed: u64,
    /// The root polls the channel's ring.
    pub polling: bool,
    /// Counters.
    pub stats: StorageStats,
}

/// A granted network buffer region: the first `send_pages` pages are the
/// send area, the rest the receive area (as in `GrantBuffers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRegionState {
    /// Child guest-physical address of the first page.
    pub gpa: u64,
    /// Pages in all.
    pub pages: u32,
    /// Pages of the send area.
    pub send_pages: u32,
}

/// A receive buffer the child posted and the root holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostedBuffer {
    /// The `PostReceive`'s transaction id (tags the `Receive`).
    pub tid: u64,
    /// Byte offset in the receive area.
    pub offset: u32,
    /// Bytes.
    pub len: u32,
}

/// A network reply that did not fit the ring to the child.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStalled {
    /// Its transaction id.
    pub tid: u64,
    /// The message.
    pub message: network::HostMessage,
}

/// An open network channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkChannelState {
    /// Its rings.
    pub rings: RingsState,
    /// The granted buffer region.
    pub region: Option<NetworkRegionState>,
    /// The negotiated MTU, once `Init` succeeded.
    pub mtu: Option<u16>,
    /// Posted receive buffers, oldest (next to fill) first.
    pub posted: List<PostedBuffer, MAX_POSTED>,
    /// The reply waiting for room.
    pub stalled: Option<NetworkStalled>,
    /// A `LinkState` waits to be sent.
    pub link_pending: bool,
    /// The negotiated protocol version (`VERSION_SINGLE` unless the child
    /// sent `Negotiate`).
    pub version: u16,
    /// A `SendBatch` read but not finished (its sender's switch port was full).
    pub pending_send: Option<NetworkPendingSend>,
}

/// A `SendBatch` partly performed: `statuses` holds the outcomes of its
/// first entries (fewer than `entries`); the rest are sent at the next
/// service pass, then one `SendCompleteBatch` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPendingSend {
    /// The batch's transaction id.
    pub tid: u64,
    /// Its frames.
    pub entries: network::Batch<network::FrameEntry>,
    /// Outcomes of the entries done.
    pub statuses: network::Batch<network::Status>,
}

/// The network device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkState {
    /// The open channel.
    pub channel: Option<NetworkChannelState>,
    /// The root's NIC setting (MAC, port MTU).
    pub config: Option<NetworkConfig>,
    /// The link state.
    pub link_up: bool,
    /// The root polls the channel's ring.
    pub polling: bool,
    /// Signal decisions are deferred to the owner's flush.
    pub deferred: bool,
    /// Counters.
    pub stats: NetworkStats,
}

/// Why [`BusState::encode`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is too small ([`MAX_ENCODED`] always suffices).
    BufferTooSmall,
}

/// Why [`BusState::decode`] refused bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// No bytes at all.
    Empty,
    /// A format version this code does not read.
    Version(u8),
    /// The body is not one postcard `BusState` (truncated, a value out of
    /// range, a list longer than its bound).
    Malformed,
    /// Bytes follow the body.
    TrailingBytes,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "no saved bus state"),
            DecodeError::Version(v) => write!(f, "saved bus state version {v} unknown"),
            DecodeError::Malformed => write!(f, "saved bus state malformed"),
            DecodeError::TrailingBytes => write!(f, "bytes after the saved bus state"),
        }
    }
}

/// Why a saved state cannot be restored. Nothing stays mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// The control rings cannot be attached (layout or indices).
    ControlRing(RingError),
    /// A channel is open before the offers were sent.
    ControlState,
    /// The control channel's state of this channel's offer (open or
    /// offered) disagrees with whether the channel is saved open.
    ChannelState(ChannelName),
    /// Ring page counts a child could not have opened (each ring
    /// 2..=[`MAX_RING_PAGES`] pages).
    RingPages(ChannelName),
    /// A range (rings or region) not page-aligned, or past the end of the
    /// address space.
    Range(ChannelName),
    /// A buffer region size or split the grant check refuses.
    RegionSize(ChannelName),
    /// This channel's rings or region overlap pages saved before them
    /// (order: console rings, storage rings, storage region, network
    /// rings, network region, integration rings).
    Overlap(ChannelName),
    /// Link flags the bus cannot have: polling without the mask set, or a
    /// device's ring polled (or not) against the device's setting.
    LinkFlags(ChannelName),
    /// A hot-plug notice for a LUN beyond `MAX_LUNS`, or out of order or
    /// twice.
    Notice(u8),
    /// A negotiated MTU outside `MIN_MTU..=MAX_MTU`.
    Mtu(u16),
    /// Posted receive buffer number `n` (oldest first) is outside the
    /// receive area, too small for the MTU, or posted without a region
    /// or an MTU.
    PostedBuffer(usize),
    /// A `LinkState` pending before `Init`.
    LinkPending,
    /// network: a protocol version the root does not speak, or a pending
    /// `SendBatch` that is empty, already done, or impossible in its state
    Batch,
    /// integration: a heartbeat answered that was never sent
    Heartbeat,
    /// The platform refused to map a saved range (or gave less memory
    /// than its pages).
    Map(ChannelName, OpenStatus),
    /// A channel's rings (in the child's memory) cannot be attached.
    Ring(ChannelName, RingError),
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::ControlRing(e) => write!(f, "control rings: {e}"),
            RestoreError::ControlState => write!(f, "a channel open before the offers"),
            RestoreError::ChannelState(c) => write!(f, "{c}: open state disagrees with control"),
            RestoreError::RingPages(c) => write!(f, "{c}: bad ring page counts"),
            RestoreError::Range(c) => write!(f, "{c}: range unaligned or out of bounds"),
            RestoreError::RegionSize(c) => write!(f, "{c}: bad buffer region size"),
            RestoreError::Overlap(c) => write!(f, "{c}: pages overlap another range"),
            RestoreError::LinkFlags(c) => write!(f, "{c}: inconsistent link flags"),
            RestoreError::Notice(lun) => write!(f, "storage: bad notice for LUN {lun}"),
            RestoreError::Mtu(mtu) => write!(f, "network: MTU {mtu} out of range"),
            RestoreError::PostedBuffer(n) => write!(f, "network: bad posted buffer {n}"),
            RestoreError::LinkPending => write!(f, "network: link state pending before Init"),
            RestoreError::Batch => write!(f, "network: bad version or pending batch"),
            RestoreError::Heartbeat => write!(f, "integration: reply to an unsent heartbeat"),
            RestoreError::Map(c, status) => write!(f, "{c}: map refused ({status:?})"),
            RestoreError::Ring(c, e) => write!(f, "{c}: ring: {e}"),
        }
    }
}

impl BusState {
    /// Writes the version byte and the postcard body into `out`; returns
    /// the bytes written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let (version, body) = out.split_first_mut().ok_or(EncodeError::BufferTooSmall)?;
        *version = FORMAT_VERSION;
        let used = postcard::to_slice(self, body)
            .map_err(|_| EncodeError::BufferTooSmall)?
            .len();
        Ok(1 + used)
    }

    /// Reads what [`BusState::encode`] wrote: exactly one version byte
    /// and one body. The result is still foreign: [`BusState::check`]
    /// (which `restore` runs) decides whether it is a state the bus can
    /// have.
    pub fn decode(bytes: &[u8]) -> Result<BusState, DecodeError> {
        let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::Version(version));
        }
        let (state, rest) =
            postcard::take_from_bytes::<BusState>(body).map_err(|_| DecodeError::Malformed)?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(state)
    }

    /// The child pages the restored bus maps, in mapping order: console
    /// rings, storage rings, storage region, network rings, network
    /// region, integration rings.
    pub fn ranges(&self) -> [Option<(ChannelName, u64, u32)>; RANGES] {
        let storage = self.storage.channel.as_ref();
        let network = self.network.channel.as_ref();
        [
            self.console
                .channel
                .map(|r| (ChannelName::Console, r.gpa, r.pages)),
            storage.map(|c| (ChannelName::Storage, c.rings.gpa, c.rings.pages)),
            storage
                .and_then(|c| c.region)
                .map(|r| (ChannelName::Storage, r.gpa, r.pages)),
            network.map(|c| (ChannelName::Network, c.rings.gpa, c.rings.pages)),
            network
                .and_then(|c| c.region)
                .map(|r| (ChannelName::Network, r.gpa, r.pages)),
            self.integration
                .channel
                .map(|r| (ChannelName::Integration, r.gpa, r.pages)),
        ]
    }

    /// Checks that the bus can have been in this state (everything but
    /// the platform's range checks and the rings in the child's memory,
    /// which `restore` meets when it maps them).
    pub fn check(&self) -> Result<(), RestoreError> {
        self.check_control()?;
        if let Some(rings) = &self.console.channel {
            check_rings(ChannelName::Console, rings, None)?;
        }
        if let Some(c) = &self.storage.channel {
            check_storage(c, self.storage.polling)?;
        }
        if let Some(c) = &self.network.channel {
            check_network(c, self.network.polling)?;
        }
        if let Some(rings) = &self.integration.channel {
            check_rings(ChannelName::Integration, rings, None)?;
        }
        if self.integration.answered > self.integration.sequence {
            return Err(RestoreError::Heartbeat);
        }
        let ranges = self.ranges();
        for (i, range) in ranges.iter().enumerate() {
            let Some((name, gpa, pages)) = *range else {
                continue;
            };
            let earlier = ranges.get(..i).unwrap_or(&[]);
            if earlier
                .iter()
                .flatten()
                .any(|&(_, g, p)| overlaps((g, p), (gpa, pages)))
            {
                return Err(RestoreError::Overlap(name));
            }
        }
        Ok(())
    }

    fn check_control(&self) -> Result<(), RestoreError> {
        let control = &self.control;
        let open = control.channels.contains(&ChannelState::Open);
        if open && control.host != HostState::Ready {
            return Err(RestoreError::ControlState);
        }
        if let Some(flags) = control.link {
            check_flags(ChannelName::Control, flags, None)?;
        } else {
            // A closed control channel: the protocol state is moot, the
            // device channels still open are served until closed.
            return Ok(());
        }
        let saved = [
            (ChannelName::Console, self.console.channel.is_some()),
            (ChannelName::Storage, self.storage.channel.is_some()),
            (ChannelName::Network, self.network.channel.is_some()),
            (ChannelName::Integration, self.integration.channel.is_some()),
        ];
        for ((name, is_open), state) in saved.into_iter().zip(control.channels) {
            if is_open != (state == ChannelState::Open) {
                return Err(RestoreError::ChannelState(name));
            }
        }
        Ok(())
    }
}

/// Checks link flags; `device_polling`: the device's polling setting the
/// ring must follow (none for the control and console rings).
fn check_flags(
    name: ChannelName,
    flags: LinkFlags,
    device_polling: Option<bool>,
) -> Result<(), RestoreError> {
    if (flags.polling && !flags.masked) || device_polling.is_some_and(|p| p != flags.polling) {
        return Err(RestoreError::LinkFlags(name));
    }
    Ok(())
}

/// Checks a page range: aligned, inside the address space.
fn check_range(name: ChannelName, gpa: u64, pages: u32) -> Result<(), RestoreError> {
    let aligned = gpa.is_multiple_of(PAGE_BYTES);
    let fits = gpa
        .checked_add(u64::from(pages) * PAGE_BYTES)
        .is_some_and(|end| end > gpa);
    if !aligned || !fits {
        return Err(RestoreError::Range(name));
    }
    Ok(())
}

/// Checks an open channel's rings as `HostControl` checked its `Open`.
fn check_rings(
    name: ChannelName,
    rings: &RingsState,
    device_polling: Option<bool>,
) -> Result<(), RestoreError> {
    let inbound = rings.pages.checked_sub(rings.outbound_pages);
    let ring_ok = |p: u32| (2..=MAX_RING_PAGES).contains(&p);
    if !ring_ok(rings.outbound_pages) || !inbound.is_some_and(ring_ok) {
        return Err(RestoreError::RingPages(name));
    }
    check_range(name, rings.gpa, rings.pages)?;
    check_flags(name, rings.link, device_polling)
}

fn check_storage(c: &StorageChannelState, polling: bool) -> Result<(), RestoreError> {
    let name = ChannelName::Storage;
    check_rings(name, &c.rings, Some(polling))?;
    if let Some(region) = &c.region {
        storage::check_grant(region.pages).map_err(|_| RestoreError::RegionSize(name))?;
        check_range(name, region.gpa, region.pages)?;
    }
    let mut next = 0usize;
    for notice in c.notices.as_slice() {
        let lun = usize::from(notice.lun);
        if lun >= MAX_LUNS || lun < next {
            return Err(RestoreError::Notice(notice.lun));
        }
        next = lun + 1;
    }
    Ok(())
}

fn check_network(c: &NetworkChannelState, polling: bool) -> Result<(), RestoreError> {
    let name = ChannelName::Network;
    check_rings(name, &c.rings, Some(polling))?;
    let areas = match &c.region {
        Some(region) => {
            let areas = network::check_grant(region.pages, region.send_pages)
                .map_err(|_| RestoreError::RegionSize(name))?;
            check_range(name, region.gpa, region.pages)?;
            Some(areas)
        }
        None => None,
    };
    if let Some(mtu) = c.mtu
        && !(MIN_MTU..=MAX_MTU).contains(&mtu)
    {
        return Err(RestoreError::Mtu(mtu));
    }
    for (n, buffer) in c.posted.as_slice().iter().enumerate() {
        // As `PostReceive` checked it: inside the receive area, large
        // enough for every frame the MTU allows.
        let fits = c.mtu.is_some_and(|mtu| {
            buffer.len >= u32::from(mtu) + HEADER_BYTES
                && network::check_receive_buffer(
                    buffer.offset,
                    buffer.len,
                    areas.map(|a| a.receive),
                )
                .is_ok()
        });
        if !fits {
            return Err(RestoreError::PostedBuffer(n));
        }
    }
    if c.link_pending && c.mtu.is_none() {
        return Err(RestoreError::LinkPending);
    }
    if !(network::VERSION_SINGLE..=network::PROTOCOL_VERSION).contains(&c.version) {
        return Err(RestoreError::Batch);
    }
    if let Some(p) = &c.pending_send
        && (p.entries.is_empty()
            || p.statuses.len() >= p.entries.len()
            || c.mtu.is_none()
            || c.region.is_none()
            || c.version < network::VERSION_BATCH)
    {
        return Err(RestoreError::Batch);
    }
    Ok(())
}

#[cfg(test)]
#[path = "bus_state_tests.rs"]
mod tests;
