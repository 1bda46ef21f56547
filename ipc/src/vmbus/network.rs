//! The synthetic network device's messages (class
//! [`super::control::NETWORK_CLASS`]): one NIC per child, its MAC assigned
//! by the root, frames moved through one buffer region the child grants
//! once and splits in two: the first `send_pages` pages are the **send
//! area** (frames the child sends), the rest the **receive area** (buffers
//! the child posts for the root to fill). Messages carry offsets into
//! those areas and lengths, never frame bytes. See
//! `docs/devices/network.md`.
//!
//! ```text
//! child                                     root
//! GrantBuffers{gpa, pages, send_pages} ->   (root checks and maps the region)
//!                                      <-   BuffersGranted{status}
//! Init{mtu, mac}                       ->
//!                                      <-   InitDone{status, mtu, mac}, LinkState{up}
//! PostReceive{offset, len} (tid = t)   ->   (buffer queued, no answer yet)
//! Send{offset, len, flags} (tid = s)   ->   (several per signal)
//!                                      <-   SendComplete{status} (tid = s)
//!                                      <-   Receive{status, offset, len, flags} (tid = t)
//!                                      <-   LinkState{up} (tid 0)
//!
//! version 2 (batches, up to MAX_BATCH entries per message):
//! Negotiate{version: 2}                ->
//!                                      <-   Negotiated{version}
//! PostReceiveBatch{[offset, len]}      ->   (all queued, or one Receive error)
//! SendBatch{[offset, len, flags]} (s)  ->
//!                                      <-   SendCompleteBatch{[status]} (tid = s)
//!                                      <-   ReceiveBatch{[offset, len, flags]} (tid 0)
//! ```
//!
//! # Invariants
//! - A send is performed only after [`check_frame`] accepted it against the
//!   negotiated MTU, the send area and the assigned MAC: every byte the
//!   root reads lies inside the send area, the frame is at least
//!   [`HEADER_BYTES`] and at most `mtu + HEADER_BYTES` long, and its
//!   source MAC is the child's. The arithmetic cannot overflow (checked).
//! - A posted receive buffer lies inside the receive area
//!   ([`check_receive_buffer`]); the root writes only inside it.
//! - Every `Send` gets exactly one `SendComplete` and every `PostReceive`
//!   exactly one `Receive` (a frame, or the buffer back with an error
//!   status), each carrying the request's transaction id. At version 2
//!   every `SendBatch` gets exactly one `SendCompleteBatch` (one status
//!   per entry, each entry checked like a `Send`), a `PostReceiveBatch` is
//!   queued whole or refused whole, and filled buffers come back in
//!   `ReceiveBatch`es named by offset.

use serde::{Deserialize, Serialize};

/// Bytes of an Ethernet header (destination, source, EtherType); VLAN
/// tags are not interpreted (they count as payload).
pub const HEADER_BYTES: u32 = 14;
/// Shortest frame: a header alone.
pub const MIN_FRAME: u32 = HEADER_BYTES;
/// Largest MTU (jumbo frames).
pub const MAX_MTU: u16 = 9000;
/// Smallest MTU a child may negotiate (the IPv4 minimum datagram).
pub const MIN_MTU: u16 = 576;
/// The ordinary Ethernet MTU.
pub const DEFAULT_MTU: u16 = 1500;
/// Largest frame: a header and [`MAX_MTU`] bytes.
pub const MAX_FRAME: u32 = MAX_MTU as u32 + HEADER_BYTES;
/// Bytes of a page of the buffer region.
pub const PAGE_BYTES: u64 = 4096;
/// Largest buffer region a child may grant (pages; 4 MiB).
pub const MAX_BUFFER_PAGES: u32 = 1024;
/// Most receive buffers the root holds for one child at a time.
pub const MAX_POSTED: usize = 64;
/// Largest encoded single-frame network message (either direction, every
/// message but the batches), with room to spare.
pub const MAX_MESSAGE: usize = 48;
/// Most entries in one batch message (`SendBatch`, `SendCompleteBatch`,
/// `PostReceiveBatch`, `ReceiveBatch`); a longer list does not decode.
pub const MAX_BATCH: usize = 16;
/// Largest encoded network message of any kind, batches included (a full
/// `SendBatch` of extreme values is 180 bytes).
pub const MAX_BATCH_MESSAGE: usize = 256;
/// The first protocol version (`Init`, `Send`, `PostReceive`, one
/// message per frame each way): what a child speaks unless it negotiates.
pub const VERSION_SINGLE: u16 = 1;
/// The version with batch messages (`Negotiate` asks for it).
pub const VERSION_BATCH: u16 = 2;
/// The newest version the root speaks.
pub const PROTOCOL_VERSION: u16 = VERSION_BATCH;

/// One frame of a `SendBatch` (relative to the send area) or of a
/// `ReceiveBatch` (relative to the receive area; the buffer's offset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameEntry {
    /// Byte offset of the frame.
    pub offset: u32,
    /// Frame bytes (Ethernet header included, no FCS).
    pub len: u32,
    /// Flag bits: [`SEND_FLAGS`] in a `SendBatch`, [`KNOWN_FLAGS`] in a `ReceiveBatch`.
    pub flags: u8,
}

/// One receive buffer of a `PostReceiveBatch` (relative to the receive area).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferEntry {
    /// Byte offset of the buffer.
    pub offset: u32,
    /// Bytes of the buffer.
    pub len: u32,
}

/// The entries of a batch message.
pub type Batch<T> = super::list::List<T, MAX_BATCH>;

/// `Send`/`Receive` flag: the frame's TCP/UDP checksum was not computed
/// (the field holds the pseudo-header sum only; whoever leaves the host
/// finishes it).
pub const FLAG_CHECKSUM_NOT_COMPUTED: u8 = 1;
/// `Receive` flag: the frame's checksums were verified by the device.
pub const FLAG_CHECKSUM_VERIFIED: u8 = 2;
/// Every flag bit defined; a `Send` with any other bit (or with
/// [`FLAG_CHECKSUM_VERIFIED`], which only the root sets) is refused.
pub const KNOWN_FLAGS: u8 = FLAG_CHECKSUM_NOT_COMPUTED | FLAG_CHECKSUM_VERIFIED;
/// Flags a child may set on a `Send`.
pub const SEND_FLAGS: u8 = FLAG_CHECKSUM_NOT_COMPUTED;

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The broadcast address.
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    /// All zeros ("none").
    pub const ZERO: Mac = Mac([0; 6]);

    /// Group address (broadcast included): the low bit of the first octet.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }

    /// Whether this is the broadcast address.
    pub const fn is_broadcast(&self) -> bool {
        matches!(self.0, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
    }

    /// Whether this is all zeros.
    pub const fn is_zero(&self) -> bool {
        matches!(self.0, [0, 0, 0, 0, 0, 0])
    }

    /// An address a port may own: unicast and not zero.
    pub const fn is_assignable(&self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }

    /// The locally administered unicast address `02:63:76:00:hi:lo` of
    /// child `index` (the root's default assignment; `cv` in the middle).
    pub const fn for_child(index: u16) -> Mac {
        let [hi, lo] = index.to_be_bytes();
        Mac([0x02, 0x63, 0x76, 0x00, hi, lo])
    }
}

impl core::fmt::Display for Mac {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The destination address of `frame` (at least [`HEADER_BYTES`] long).
pub fn destination(frame: &[u8]) -> Option<Mac> {
    frame.get(0..6)?.try_into().ok().map(Mac)
}

/// The source address of `frame` (at least [`HEADER_BYTES`] long).
pub fn source(frame: &[u8]) -> Option<Mac> {
    frame.get(6..12)?.try_into().ok().map(Mac)
}

/// Outcome of a message (`SendComplete`, `InitDone`, `Receive`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum Status {
    /// Done.
    #[default]
    Ok = 0,
    /// A frame shorter than [`MIN_FRAME`] bytes.
    Runt = 1,
    /// A frame longer than the negotiated MTU plus [`HEADER_BYTES`].
    TooLong = 2,
    /// The bytes lie outside the send (or receive) area, or no region is granted.
    BadBuffer = 3,
    /// The frame's source MAC is not the one the root assigned.
    SpoofedSource = 4,
    /// The payload did not decode (answered as a `SendComplete` with the
    /// packet's transaction id).
    Malformed = 5,
    /// A flag bit the child may not set.
    BadFlags = 6,
    /// `Send` before `Init` completed.
    NotInitialized = 7,
    /// An MTU below [`MIN_MTU`].
    BadMtu = 8,
    /// A second `Init` (the answer repeats the first one's result).
    AlreadyInitialized = 9,
    /// The root has no network port for this child.
    Unavailable = 10,
    /// The frame was accepted but the switch had no room for it.
    Dropped = 11,
    /// [`MAX_POSTED`] receive buffers are already posted (the buffer comes back).
    TooManyPosted = 12,
}

/// Number of [`Status`] values (for counters indexed by status).
pub const STATUS_COUNT: usize = 13;

impl Status {
    /// Every status, in discriminant order.
    pub const ALL: [Status; STATUS_COUNT] = [
        Status::Ok,
        Status::Runt,
        Status::TooLong,
        Status::BadBuffer,
        Status::SpoofedSource,
        Status::Malformed,
        Status::BadFlags,
        Status::NotInitialized,
        Status::BadMtu,
        Status::AlreadyInitialized,
        Status::Unavailable,
        Status::Dropped,
        Status::TooManyPosted,
    ];
}

/// Outcome of a [`GuestMessage::GrantBuffers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GrantStatus {
    /// The region is mapped; sends and receive buffers may use it.
    Granted,
    /// The pages are not the child's to grant (outside its grantable
    /// memory, unaligned, or overlapping pages already mapped).
    BadRange,
    /// Zero pages, more than [`MAX_BUFFER_PAGES`], or a split that leaves
    /// either area empty.
    BadSize,
    /// A region is already granted (one per channel, for its lifetime).
    AlreadyGranted,
}

/// Child to root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestMessage {
    /// Grants the region `[gpa, gpa + pages * 4096)` (once): the first
    /// `send_pages` pages are the send area, the rest the receive area.
    GrantBuffers {
        /// Child guest-physical address of the first page.
        gpa: u64,
        /// Pages in all.
        pages: u32,
        /// Pages of the send area.
        send_pages: u32,
    },
    /// Asks for the MTU `mtu` (the root answers at most its port's MTU);
    /// `mac` is a preference the root may ignore (zero: none). The root
    /// always answers the MAC it assigned, which the child must use.
    Init {
        /// Requested MTU.
        mtu: u16,
        /// Preferred MAC (advisory).
        mac: Mac,
    },
    /// Sends the frame at `[offset, offset + len)` of the send area; the
    /// packet's transaction id tags the `SendComplete`. The slot may be
    /// reused once completed.
    Send {
        /// Byte offset in the send area.
        offset: u32,
        /// Frame bytes (Ethernet header included, no FCS).
        len: u32,
        /// [`SEND_FLAGS`].
        flags: u8,
    },
    /// Hands the root the receive buffer `[offset, offset + len)` of the
    /// receive area; the packet's transaction id tags its `Receive`.
    PostReceive {
        /// Byte offset in the receive area.
        offset: u32,
        /// Bytes of the buffer.
        len: u32,
    },
    /// Asks for protocol `version` (answered `Negotiated` with the
    /// transaction id echoed: the smaller of it and [`PROTOCOL_VERSION`],
    /// at least [`VERSION_SINGLE`]). Without it a channel speaks
    /// [`VERSION_SINGLE`]; batches need [`VERSION_BATCH`].
    Negotiate {
        /// The newest version the child speaks.
        version: u16,
    },
    /// Sends 1..=[`MAX_BATCH`] frames, each checked like a `Send`; the
    /// packet's transaction id tags the one `SendCompleteBatch`.
    SendBatch {
        /// The frames, in order.
        entries: Batch<FrameEntry>,
    },
    /// Posts 1..=[`MAX_BATCH`] receive buffers, each checked like a
    /// `PostReceive`; filled ones come back in `ReceiveBatch`es, named by
    /// offset, refused ones at once as `Receive` with an error status and
    /// this packet's transaction id.
    PostReceiveBatch {
        /// The buffers, in order.
        entries: Batch<BufferEntry>,
    },
}

/// Root to child.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostMessage {
    /// The answer to `GrantBuffers` (transaction id echoed).
    BuffersGranted {
        /// Outcome.
        status: GrantStatus,
    },
    /// The answer to `Init` (transaction id echoed).
    InitDone {
        /// Outcome.
        status: Status,
        /// The accepted MTU (`MIN_MTU..=MAX_MTU`; 0 on error).
        mtu: u16,
        /// The MAC the root assigned (zero on error).
        mac: Mac,
    },
    /// A `Send` is done (its transaction id); the send slot is free.
    SendComplete {
        /// Outcome.
        status: Status,
    },
    /// A posted buffer is back (the `PostReceive`'s transaction id):
    /// with `Ok`, a frame of `len` bytes at `offset` (the buffer's start);
    /// otherwise unused.
    Receive {
        /// Outcome.
        status: Status,
        /// The buffer's offset in the receive area.
        offset: u32,
        /// Frame bytes (0 unless `Ok`).
        len: u32,
        /// [`KNOWN_FLAGS`].
        flags: u8,
    },
    /// The link went up or down (transaction id 0); also sent after `InitDone`.
    LinkState {
        /// Carrier.
        up: bool,
    },
    /// The answer to `Negotiate` (transaction id echoed).
    Negotiated {
        /// The version both speak from now on.
        version: u16,
    },
    /// A `SendBatch` is done (its transaction id): one status per entry,
    /// in order; every slot of the batch is free.
    SendCompleteBatch {
        /// Outcomes, as many as the batch had entries.
        statuses: Batch<Status>,
    },
    /// Frames in posted buffers (transaction id 0): each entry a buffer's
    /// offset (the frame starts there), the frame's length and flags, in
    /// the order the buffers were posted. Only after [`VERSION_BATCH`]
    /// was negotiated.
    ReceiveBatch {
        /// The frames.
        entries: Batch<FrameEntry>,
    },
}

/// The granted region's geometry: send area `[0, send)`, receive area
/// `[send, total)` (bytes from the region's start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Areas {
    /// Bytes of the send area.
    pub send: u64,
    /// Bytes of the receive area.
    pub receive: u64,
}

impl Areas {
    /// Where receive-area offset 0 lies in the region.
    pub fn receive_start(&self) -> u64 {
        self.send
    }
}

/// Checks a grant's size and split (the range itself is the root's to
/// check) and returns the areas.
pub fn check_grant(pages: u32, send_pages: u32) -> Result<Areas, GrantStatus> {
    if pages == 0 || pages > MAX_BUFFER_PAGES || send_pages == 0 || send_pages >= pages {
        return Err(GrantStatus::BadSize);
    }
    Ok(Areas {
        send: u64::from(send_pages) * PAGE_BYTES,
        receive: u64::from(pages - send_pages) * PAGE_BYTES,
    })
}

/// The MTU the root accepts for a request of `requested` on a port whose
/// MTU is `port_mtu`: the smaller of both, at most [`MAX_MTU`];
/// [`Status::BadMtu`] below [`MIN_MTU`] (asked for, or all the port has).
pub fn negotiate_mtu(requested: u16, port_mtu: u16) -> Result<u16, Status> {
    let mtu = requested.min(port_mtu).min(MAX_MTU);
    if mtu < MIN_MTU {
        return Err(Status::BadMtu);
    }
    Ok(mtu)
}

/// Whether `[offset, offset + len)` lies inside an area of `area` bytes.
fn inside(offset: u32, len: u32, area: u64) -> bool {
    u64::from(offset) + u64::from(len) <= area
}

/// Checks a frame's length against the MTU alone: [`Status::Runt`] below
/// [`MIN_FRAME`], [`Status::TooLong`] above `mtu + HEADER_BYTES`.
pub fn check_frame_len(len: u32, mtu: u16) -> Result<(), Status> {
    if len < MIN_FRAME {
        return Err(Status::Runt);
    }
    if len > u32::from(mtu) + HEADER_BYTES {
        return Err(Status::TooLong);
    }
    Ok(())
}

/// Checks a `Send` before any byte is read: flags, then length against
/// the negotiated `mtu`, then the range against the send area (`None`: no
/// region granted). The source MAC is checked by [`check_source`] once the
/// header is read.
pub fn check_frame(
    offset: u32,
    len: u32,
    flags: u8,
    mtu: u16,
    send_area: Option<u64>,
) -> Result<(), Status> {
    if flags & !SEND_FLAGS != 0 {
        return Err(Status::BadFlags);
    }
    check_frame_len(len, mtu)?;
    let area = send_area.ok_or(Status::BadBuffer)?;
    if !inside(offset, len, area) {
        return Err(Status::BadBuffer);
    }
    Ok(())
}

/// Checks a frame's source address against the MAC the root assigned.
pub fn check_source(frame: &[u8], assigned: Mac) -> Result<(), Status> {
    match source(frame) {
        Some(mac) if mac == assigned => Ok(()),
        Some(_) => Err(Status::SpoofedSource),
        None => Err(Status::Runt),
    }
}

/// Checks a `PostReceive`: the buffer lies inside the receive area (`None`:
/// no region granted) and holds at least a header.
pub fn check_receive_buffer(
    offset: u32,
    len: u32,
    receive_area: Option<u64>,
) -> Result<(), Status> {
    let area = receive_area.ok_or(Status::BadBuffer)?;
    if len < MIN_FRAME || !inside(offset, len, area) {
        return Err(Status::BadBuffer);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Mac = Mac([2, 0, 0, 0, 0, 1]);

    fn frame(src: Mac) -> [u8; 64] {
        let mut f = [0u8; 64];
        f[..6].copy_from_slice(&Mac::BROADCAST.0);
        f[6..12].copy_from_slice(&src.0);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f
    }

    #[test]
    fn mac_classes_and_display() {
        assert!(Mac::BROADCAST.is_multicast() && Mac::BROADCAST.is_broadcast());
        assert!(Mac([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!(!Mac([0x01, 0, 0x5e, 0, 0, 1]).is_broadcast());
        assert!(!ME.is_multicast() && ME.is_assignable());
        assert!(!Mac::ZERO.is_assignable() && !Mac::BROADCAST.is_assignable());
        assert_eq!(Mac::for_child(0x0102), Mac([2, 0x63, 0x76, 0, 1, 2]));
        assert!(Mac::for_child(7).is_assignable());
        let mut s = [0u8; 17];
        let mut w = Writer(&mut s, 0);
        core::fmt::write(&mut w, format_args!("{}", Mac([0xab, 1, 2, 3, 4, 0xff]))).unwrap();
        assert_eq!(&s, b"ab:01:02:03:04:ff");
    }

    struct Writer<'a>(&'a mut [u8], usize);
    impl core::fmt::Write for Writer<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let end = self.1 + s.len();
            self.0
                .get_mut(self.1..end)
                .ok_or(core::fmt::Error)?
                .copy_from_slice(s.as_bytes());
            self.1 = end;
            Ok(())
        }
    }

    #[test]
    fn header_fields() {
        let f = frame(ME);
        assert_eq!(destination(&f), Some(Mac::BROADCAST));
        assert_eq!(source(&f), Some(ME));
        assert_eq!(source(&f[..11]), None);
        assert_eq!(destination(&f[..5]), None);
        assert_eq!(check_source(&f, ME), Ok(()));
        assert_eq!(
            check_source(&f, Mac([2, 0, 0, 0, 0, 2])),
            Err(Status::SpoofedSource)
        );
        assert_eq!(check_source(&f[..8], ME), Err(Status::Runt));
    }

    #[test]
    fn grants_are_sized_and_split() {
        assert_eq!(check_grant(0, 0), Err(GrantStatus::BadSize));
        assert_eq!(check_grant(1, 1), Err(GrantStatus::BadSize));
        assert_eq!(check_grant(2, 0), Err(GrantStatus::BadSize));
        assert_eq!(check_grant(2, 2), Err(GrantStatus::BadSize));
        assert_eq!(check_grant(2, u32::MAX), Err(GrantStatus::BadSize));
        assert_eq!(
            check_grant(2, 1),
            Ok(Areas {
                send: 4096,
                receive: 4096
            })
        );
        assert_eq!(
            check_grant(MAX_BUFFER_PAGES, 1).map(|a| (a.receive_start(), a.receive)),
            Ok((4096, 1023 * 4096))
        );
        assert_eq!(
            check_grant(MAX_BUFFER_PAGES + 1, 1),
            Err(GrantStatus::BadSize)
        );
    }

    #[test]
    fn mtu_negotiation_takes_the_smaller_within_limits() {
        assert_eq!(negotiate_mtu(9000, 9000), Ok(9000));
        assert_eq!(negotiate_mtu(9000, 1500), Ok(1500));
        assert_eq!(negotiate_mtu(1500, 9000), Ok(1500));
        assert_eq!(negotiate_mtu(u16::MAX, u16::MAX), Ok(MAX_MTU));
        assert_eq!(negotiate_mtu(576, 9000), Ok(576));
        assert_eq!(negotiate_mtu(575, 9000), Err(Status::BadMtu));
        assert_eq!(negotiate_mtu(0, 9000), Err(Status::BadMtu));
        assert_eq!(negotiate_mtu(1500, 100), Err(Status::BadMtu));
    }

    #[test]
    fn frames_are_checked_for_flags_length_and_range() {
        let area = Some(8192);
        assert_eq!(check_frame(0, 14, 0, 1500, area), Ok(()));
        assert_eq!(check_frame(8192 - 1514, 1514, 1, 1500, area), Ok(()));
        assert_eq!(check_frame(0, 9014, 0, 9000, Some(9014)), Ok(()));
        for (offset, len, flags, mtu, area, expected) in [
            (0, 13, 0, 1500, area, Status::Runt),
            (0, 0, 0, 1500, area, Status::Runt),
            (0, 1515, 0, 1500, area, Status::TooLong),
            (0, 9015, 0, 9000, Some(1 << 20), Status::TooLong),
            (0, u32::MAX, 0, 9000, area, Status::TooLong),
            (8192 - 1513, 1514, 0, 1500, area, Status::BadBuffer),
            (u32::MAX, 64, 0, 1500, area, Status::BadBuffer),
            (0, 64, 0, 1500, None, Status::BadBuffer),
            (0, 64, FLAG_CHECKSUM_VERIFIED, 1500, area, Status::BadFlags),
            (0, 64, 0x80, 1500, area, Status::BadFlags),
        ] {
            assert_eq!(
                check_frame(offset, len, flags, mtu, area),
                Err(expected),
                "{offset} {len} {flags} {mtu} {area:?}"
            );
        }
    }

    #[test]
    fn receive_buffers_lie_inside_the_receive_area() {
        assert_eq!(check_receive_buffer(0, 4096, Some(4096)), Ok(()));
        assert_eq!(check_receive_buffer(4000, 96, Some(4096)), Ok(()));
        assert_eq!(
            check_receive_buffer(4001, 96, Some(4096)),
            Err(Status::BadBuffer)
        );
        assert_eq!(
            check_receive_buffer(0, 13, Some(4096)),
            Err(Status::BadBuffer)
        );
        assert_eq!(
            check_receive_buffer(u32::MAX, u32::MAX, Some(4096)),
            Err(Status::BadBuffer)
        );
        assert_eq!(check_receive_buffer(0, 64, None), Err(Status::BadBuffer));
    }

    #[test]
    fn messages_round_trip_and_fit_max_message() {
        let mut buf = [0u8; 128];
        let big = Mac([0xff; 6]);
        let guest = [
            GuestMessage::GrantBuffers {
                gpa: u64::MAX,
                pages: u32::MAX,
                send_pages: u32::MAX,
            },
            GuestMessage::Init {
                mtu: u16::MAX,
                mac: big,
            },
            GuestMessage::Send {
                offset: u32::MAX,
                len: u32::MAX,
                flags: u8::MAX,
            },
            GuestMessage::PostReceive {
                offset: u32::MAX,
                len: u32::MAX,
            },
        ];
        for m in guest {
            let bytes = postcard::to_slice(&m, &mut buf).unwrap();
            assert!(bytes.len() <= MAX_MESSAGE, "{m:?}");
            assert_eq!(postcard::from_bytes::<GuestMessage>(bytes).unwrap(), m);
        }
        let host = [
            HostMessage::BuffersGranted {
                status: GrantStatus::AlreadyGranted,
            },
            HostMessage::InitDone {
                status: Status::TooManyPosted,
                mtu: u16::MAX,
                mac: big,
            },
            HostMessage::SendComplete {
                status: Status::SpoofedSource,
            },
            HostMessage::Receive {
                status: Status::Ok,
                offset: u32::MAX,
                len: u32::MAX,
                flags: u8::MAX,
            },
            HostMessage::LinkState { up: true },
        ];
        for m in host {
            let bytes = postcard::to_slice(&m, &mut buf).unwrap();
            assert!(bytes.len() <= MAX_MESSAGE, "{m:?}");
            assert_eq!(postcard::from_bytes::<HostMessage>(bytes).unwrap(), m);
        }
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
    }

    fn full<T: Copy + Default>(item: T) -> Batch<T> {
        let mut b = Batch::new();
        while b.push(item).is_ok() {}
        b
    }

    #[test]
    fn batches_round_trip_fit_and_refuse_oversize() {
        let mut buf = [0u8; 512];
        let entry = FrameEntry {
            offset: u32::MAX,
            len: u32::MAX,
            flags: u8::MAX,
        };
        let guest = [
            GuestMessage::Negotiate { version: u16::MAX },
            GuestMessage::SendBatch {
                entries: full(entry),
            },
            GuestMessage::PostReceiveBatch {
                entries: full(BufferEntry {
                    offset: u32::MAX,
                    len: u32::MAX,
                }),
            },
        ];
        for m in guest {
            let bytes = postcard::to_slice(&m, &mut buf).unwrap();
            assert!(bytes.len() <= MAX_BATCH_MESSAGE, "{m:?}");
            assert_eq!(postcard::from_bytes::<GuestMessage>(bytes).unwrap(), m);
        }
        let host = [
            HostMessage::Negotiated { version: u16::MAX },
            HostMessage::SendCompleteBatch {
                statuses: full(Status::TooManyPosted),
            },
            HostMessage::ReceiveBatch {
                entries: full(entry),
            },
        ];
        for m in host {
            let bytes = postcard::to_slice(&m, &mut buf).unwrap();
            assert!(bytes.len() <= MAX_BATCH_MESSAGE, "{m:?}");
            assert_eq!(postcard::from_bytes::<HostMessage>(bytes).unwrap(), m);
        }
        // One entry more than MAX_BATCH does not decode.
        let bytes = postcard::to_slice(
            &GuestMessage::SendBatch {
                entries: full(FrameEntry::default()),
            },
            &mut buf,
        )
        .unwrap();
        let n = bytes.len();
        let mut longer = [0u8; 512];
        longer[..n].copy_from_slice(bytes);
        assert_eq!(longer[1] as usize, MAX_BATCH);
        assert!(postcard::from_bytes::<GuestMessage>(&longer[..n]).is_ok());
        longer[1] += 1;
        assert!(postcard::from_bytes::<GuestMessage>(&longer[..n + 3]).is_err());
    }
}
