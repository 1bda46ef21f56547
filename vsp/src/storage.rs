//! The storage controller provider: the root's end of a child's synthetic
//! storage channel (`ipc::vmbus::storage`, `docs/devices/storage.md`). The
//! disks themselves are a [`StorageBackend`] the root implements (VHD
//! files, a RAM disk in tests); this module checks every request, moves
//! the data between the backend and the child's granted buffer region
//! through the caller's bounce buffer, and answers.
//!
//! # Invariants
//! - A request touches the backend and the region only after
//!   [`Request::check`] accepted it; every request (and every payload that
//!   does not decode) gets exactly one completion with its transaction id.
//! - The region is read and written only through its [`RingMemory`]
//!   (bounds-safe) and only inside `[offset, offset + bytes)` that the check
//!   accepted; it is mapped at most once per channel and unmapped when the
//!   channel closes.
//! - Per service call at most [`BATCH`] packets are read; completions are
//!   published as they are made and the child is signalled at most once
//!   per batch (ring rules). A completion that does not fit waits in one
//!   slot, and no further request is read until it is sent.
//! - No allocation: the provider's state is fixed arrays sized by
//!   [`MAX_LUNS`]; the bounce buffer is the caller's.

use ipc::vmbus::close::CloseReason;
use ipc::vmbus::memory::RingMemory;
use ipc::vmbus::packet::{self, KIND_MESSAGE};
use ipc::vmbus::ring::Sent;
use ipc::vmbus::storage::{
    Completion, Detail, GrantStatus, GuestMessage, HostMessage, Inquiry, MAX_LUNS, MAX_MESSAGE,
    MAX_TRANSFER_SECTORS, Op, PAGE_BYTES, Request, SECTOR_BYTES, STATUS_COUNT, Status, check_grant,
};

use crate::bus::{BATCH, Link, Platform, next};
use crate::bus_state::{
    LunNotice, RegionState, RingsState, StorageChannelState, StorageStalled, StorageState,
};

/// Offer id of the storage controller (the second offer).
pub const STORAGE_OFFER: u32 = 1;
/// Suggested bounce buffer size: requests larger than the bounce buffer
/// are done in chunks of its size (rounded down to whole sectors).
pub const BOUNCE_BYTES: usize = 64 * 1024;

/// Why the backend failed an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendError {
    /// The I/O failed.
    Io,
    /// The LUN refuses writes.
    ReadOnly,
    /// The LUN is gone.
    NoSuchLun,
}

impl BackendError {
    fn status(self) -> Status {
        match self {
            BackendError::Io => Status::IoError,
            BackendError::ReadOnly => Status::ReadOnly,
            BackendError::NoSuchLun => Status::NoSuchLun,
        }
    }
}

/// The disks behind a child's controller, implemented by the root.
/// `lba` and buffer lengths passed in were checked against
/// [`StorageBackend::capacity`]; buffers are whole sectors.
pub trait StorageBackend {
    /// Capacity in 512-byte sectors of `lun`, `None` if no such LUN.
    fn capacity(&mut self, lun: u8) -> Option<u64>;
    /// Whether `lun` refuses writes.
    fn read_only(&mut self, _lun: u8) -> bool {
        false
    }
    /// Reads `buf.len() / 512` sectors of `lun` at `lba`.
    fn read(&mut self, lun: u8, lba: u64, buf: &mut [u8]) -> Result<(), BackendError>;
    /// Writes `buf.len() / 512` sectors of `lun` at `lba`.
    fn write(&mut self, lun: u8, lba: u64, buf: &[u8]) -> Result<(), BackendError>;
    /// Makes every completed write of `lun` durable.
    fn flush(&mut self, lun: u8) -> Result<(), BackendError>;
}

/// A controller without disks (a root that serves none yet).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLuns;

impl StorageBackend for NoLuns {
    fn capacity(&mut self, _: u8) -> Option<u64> {
        None
    }
    fn read(&mut self, _: u8, _: u64, _: &mut [u8]) -> Result<(), BackendError> {
        Err(BackendError::NoSuchLun)
    }
    fn write(&mut self, _: u8, _: u64, _: &[u8]) -> Result<(), BackendError> {
        Err(BackendError::NoSuchLun)
    }
    fn flush(&mut self, _: u8) -> Result<(), BackendError> {
        Err(BackendError::NoSuchLun)
    }
}

/// Counters of a child's storage controller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StorageStats {
    /// Requests received (including undecodable payloads).
    pub requests: u64,
    /// Completions sent.
    pub completions: u64,
    /// Completions by status (index: `Status as usize`; index 0 counts `Ok`).
    pub by_status: [u64; STATUS_COUNT],
    /// Buffer grants received (accepted or not).
    pub grants: u64,
    /// `LunAdded` / `LunRemoved` notifications sent.
    pub notices: u64,
    /// Signals the root received from the child on this channel (counted
    /// by the root through [`crate::bus::ChildBus::storage_signalled`]).
    pub signals_from_child: u64,
    /// Signals sent to the child.
    pub signals_to_child: u64,
    /// Service passes that read at least one packet.
    pub batches: u64,
}

impl StorageStats {
    /// Completions with `status`.
    pub fn completed(&self, status: Status) -> u64 {
        self.by_status[status as usize]
    }

    /// Error completions (every status but `Ok`).
    pub fn errors(&self) -> u64 {
        self.by_status[1..]
            .iter()
            .fold(0, |a, &b| a.saturating_add(b))
    }
}

/// A pending hot-plug notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Notice {
    Added(u64),
    Removed,
}

/// The granted buffer region.
struct Region<M: RingMemory> {
    memory: M,
    gpa: u64,
    pages: u32,
}

impl<M: RingMemory> Region<M> {
    fn len(&self) -> u64 {
        (self.memory.len() as u64).min(u64::from(self.pages) * PAGE_BYTES)
    }
}

/// An open storage channel.
struct Channel<M: RingMemory> {
    link: Link<M>,
    gpa: u64,
    pages: u32,
    /// Pages of the child-to-root ring (the first of `pages`).
    outbound_pages: u32,
    region: Option<Region<M>>,
    notices: [Option<Notice>; MAX_LUNS],
    /// A message that did not fit the ring to the child: (transaction id, message).
    stalled: Option<(u64, HostMessage)>,
}

/// The storage controller's state in a child's bus.
pub(crate) struct Storage<M: RingMemory> {
    channel: Option<Channel<M>>,
    /// LUNs hot-removed and not added again (bit n = LUN n).
    removed: u64,
    /// The root polls the channel's ring (see `ChildBus::set_storage_polling`).
    polling: bool,
    stats: StorageStats,
}

/// Whether `[a, a + a_pages)` and `[b, b + b_pages)` (pages) overlap.
pub(crate) fn overlaps(a: (u64, u32), b: (u64, u32)) -> bool {
    let end = |(gpa, pages): (u64, u32)| gpa.saturating_add(u64::from(pages) * PAGE_BYTES);
    a.0 < end(b) && b.0 < end(a)
}

impl<M: RingMemory> Storage<M> {
    pub(crate) const fn new() -> Self {
        Storage {
            channel: None,
            removed: 0,
            polling: false,
            stats: StorageStats {
                requests: 0,
                completions: 0,
                by_status: [0; STATUS_COUNT],
                grants: 0,
                notices: 0,
                signals_from_child: 0,
                signals_to_child: 0,
                batches: 0,
            },
        }
    }

    pub(crate) fn stats(&self) -> StorageStats {
        self.stats
    }

    pub(crate) fn stats_mut(&mut self) -> &mut StorageStats {
        &mut self.stats
    }

    pub(crate) fn is_open(&self) -> bool {
        self.channel.is_some()
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

    /// Polls the ring (mask kept set) or asks for signals.
    pub(crate) fn set_polling(&mut self, polling: bool) {
        self.polling = polling;
        if let Some(c) = self.channel.as_mut() {
            c.link.set_polling(polling);
        }
    }

    /// Takes over an opened link on pages `[gpa, gpa + pages)`, the first
    /// `outbound_pages` the child-to-root ring.
    pub(crate) fn open(&mut self, mut link: Link<M>, gpa: u64, pages: u32, outbound_pages: u32) {
        link.set_polling(self.polling);
        self.channel = Some(Channel {
            link,
            gpa,
            pages,
            outbound_pages,
            region: None,
            notices: [None; MAX_LUNS],
            stalled: None,
        });
    }

    /// The controller as plain data (quick migration).
    pub(crate) fn save(&self) -> StorageState {
        StorageState {
            channel: self.channel.as_ref().map(|c| {
                let mut notices = crate::bus_state::List::new();
                for (lun, notice) in c.notices.iter().enumerate() {
                    let Some(notice) = notice else {
                        continue;
                    };
                    let added = match *notice {
                        Notice::Added(sectors) => Some(sectors),
                        Notice::Removed => None,
                    };
                    // At most MAX_LUNS notices: the list holds them all.
                    let _ = notices.push(LunNotice {
                        lun: lun as u8,
                        added,
                    });
                }
                StorageChannelState {
                    rings: RingsState {
                        gpa: c.gpa,
                        pages: c.pages,
                        outbound_pages: c.outbound_pages,
                        link: c.link.flags(),
                    },
                    region: c.region.as_ref().map(|r| RegionState {
                        gpa: r.gpa,
                        pages: r.pages,
                    }),
                    notices,
                    stalled: c
                        .stalled
                        .map(|(tid, message)| StorageStalled { tid, message }),
                }
            }),
            removed: self.removed,
            polling: self.polling,
            stats: self.stats,
        }
    }

    /// The controller `state` describes (checked by
    /// [`crate::bus_state::BusState::check`]) over the open channel's
    /// `link` and `region` memory the caller attached and mapped at the
    /// saved pages.
    pub(crate) fn restored(state: &StorageState, link: Option<Link<M>>, region: Option<M>) -> Self {
        let channel = state.channel.as_ref().zip(link).map(|(c, link)| {
            let mut notices = [None; MAX_LUNS];
            for n in c.notices.as_slice() {
                if let Some(slot) = notices.get_mut(usize::from(n.lun)) {
                    *slot = Some(match n.added {
                        Some(sectors) => Notice::Added(sectors),
                        None => Notice::Removed,
                    });
                }
            }
            Channel {
                link,
                gpa: c.rings.gpa,
                pages: c.rings.pages,
                outbound_pages: c.rings.outbound_pages,
                region: c.region.zip(region).map(|(r, memory)| Region {
                    memory,
                    gpa: r.gpa,
                    pages: r.pages,
                }),
                notices,
                stalled: c.stalled.map(|s| (s.tid, s.message)),
            }
        });
        Storage {
            channel,
            removed: state.removed,
            polling: state.polling,
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

    /// Notes a hot-plug change of `lun` and sends it if the channel is open.
    pub(crate) fn notify<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
        lun: u8,
        added: Option<u64>,
    ) -> Result<(), CloseReason> {
        let Some(bit) = 1u64
            .checked_shl(u32::from(lun))
            .filter(|_| usize::from(lun) < MAX_LUNS)
        else {
            return Ok(());
        };
        let notice = match added {
            Some(sectors) => {
                self.removed &= !bit;
                Notice::Added(sectors)
            }
            None => {
                self.removed |= bit;
                Notice::Removed
            }
        };
        let Some(c) = self.channel.as_mut() else {
            return Ok(());
        };
        c.notices[usize::from(lun)] = Some(notice);
        if c.stalled.is_none() {
            send_notices(c, &mut self.stats)?;
        }
        self.flush(platform)
    }

    fn flush<P: Platform<Memory = M>>(&mut self, platform: &mut P) -> Result<(), CloseReason> {
        if let Some(c) = self.channel.as_mut()
            && c.link.tx.flush().map_err(CloseReason::Ring)?
        {
            crate::bump(&mut self.stats.signals_to_child, 1);
            platform.signal(Some(STORAGE_OFFER));
        }
        Ok(())
    }

    /// Reads up to [`BATCH`] packets from the child, performs them against
    /// `backend` (data through `bounce`) and answers. `busy`: other child
    /// pages the root has mapped (a region may not overlap them). An error
    /// means: close the channel.
    pub(crate) fn service<P: Platform<Memory = M>, B: StorageBackend + ?Sized>(
        &mut self,
        platform: &mut P,
        backend: &mut B,
        bounce: &mut [u8],
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
            // What could not be sent last time goes first.
            if let Some((tid, message)) = c.stalled {
                if !send(c, &mut self.stats, tid, &message)? {
                    break 'batch;
                }
                c.stalled = None;
            }
            if !send_notices(c, &mut self.stats)? {
                break 'batch;
            }
            for _ in 0..BATCH {
                let Some(packet) = next(&mut c.link, &mut buf, || to_child += 1)? else {
                    break;
                };
                *handled += 1;
                read_any = true;
                let tid = packet.header.transaction_id.get();
                let reply = match packet::decode::<GuestMessage>(&packet) {
                    Err(_) => {
                        crate::bump(&mut self.stats.requests, 1);
                        HostMessage::Completion(Completion::error(Status::Malformed))
                    }
                    Ok(GuestMessage::GrantBuffer { gpa, pages }) => {
                        crate::bump(&mut self.stats.grants, 1);
                        HostMessage::BufferGranted {
                            status: grant(c, platform, gpa, pages, busy),
                        }
                    }
                    Ok(GuestMessage::Request(request)) => {
                        crate::bump(&mut self.stats.requests, 1);
                        HostMessage::Completion(perform(
                            &request,
                            c.region.as_ref(),
                            self.removed,
                            backend,
                            bounce,
                        ))
                    }
                };
                if !send(c, &mut self.stats, tid, &reply)? {
                    c.stalled = Some((tid, reply));
                    break;
                }
            }
        }
        if read_any {
            crate::bump(&mut self.stats.batches, 1);
        }
        for _ in 0..to_child {
            crate::bump(&mut self.stats.signals_to_child, 1);
            platform.signal(Some(STORAGE_OFFER));
        }
        self.flush(platform)
    }
}

/// Receive buffer: a storage payload is at most [`MAX_MESSAGE`] bytes; a
/// larger one (up to this) is answered `Malformed`, beyond it the ring is broken.
const RECEIVE_MAX: usize = 512;

/// Publishes one message (signal decision deferred); `false` if the ring
/// to the child is full.
fn send<M: RingMemory>(
    c: &mut Channel<M>,
    stats: &mut StorageStats,
    tid: u64,
    message: &HostMessage,
) -> Result<bool, CloseReason> {
    let mut scratch = [0u8; 2 * MAX_MESSAGE];
    let bytes = packet::encode(message, &mut scratch).map_err(CloseReason::Codec)?;
    match c
        .link
        .tx
        .send_deferred(KIND_MESSAGE, 0, tid, bytes)
        .map_err(CloseReason::Ring)?
    {
        Sent::Written { .. } => {
            match message {
                HostMessage::Completion(done) => {
                    crate::bump(&mut stats.completions, 1);
                    crate::bump(&mut stats.by_status[done.status as usize], 1);
                }
                HostMessage::LunAdded { .. } | HostMessage::LunRemoved { .. } => {
                    crate::bump(&mut stats.notices, 1);
                }
                HostMessage::BufferGranted { .. } => {}
            }
            Ok(true)
        }
        Sent::Full => Ok(false),
    }
}

/// Sends the pending hot-plug notices; `false` if the ring filled up.
fn send_notices<M: RingMemory>(
    c: &mut Channel<M>,
    stats: &mut StorageStats,
) -> Result<bool, CloseReason> {
    for lun in 0..MAX_LUNS {
        let Some(notice) = c.notices[lun] else {
            continue;
        };
        let lun8 = lun as u8;
        let message = match notice {
            Notice::Added(sectors) => HostMessage::LunAdded { lun: lun8, sectors },
            Notice::Removed => HostMessage::LunRemoved { lun: lun8 },
        };
        if !send(c, stats, 0, &message)? {
            return Ok(false);
        }
        c.notices[lun] = None;
    }
    Ok(true)
}

/// Handles a buffer grant: size, once only, no overlap with mapped rings,
/// then the platform's range check and mapping.
fn grant<M: RingMemory, P: Platform<Memory = M>>(
    c: &mut Channel<M>,
    platform: &mut P,
    gpa: u64,
    pages: u32,
    busy: &[Option<(u64, u32)>],
) -> GrantStatus {
    if c.region.is_some() {
        return GrantStatus::AlreadyGranted;
    }
    if let Err(status) = check_grant(pages) {
        return status;
    }
    let range = (gpa, pages);
    if !gpa.is_multiple_of(PAGE_BYTES)
        || overlaps(range, (c.gpa, c.pages))
        || busy.iter().flatten().any(|b| overlaps(range, *b))
    {
        return GrantStatus::BadRange;
    }
    match platform.map_buffer(gpa, pages) {
        Ok(memory) => {
            c.region = Some(Region { memory, gpa, pages });
            GrantStatus::Granted
        }
        Err(_) => GrantStatus::BadRange,
    }
}

/// Checks and performs one request.
fn perform<M: RingMemory, B: StorageBackend + ?Sized>(
    request: &Request,
    region: Option<&Region<M>>,
    removed: u64,
    backend: &mut B,
    bounce: &mut [u8],
) -> Completion {
    let lun = request.lun;
    let in_range = usize::from(lun) < MAX_LUNS;
    if request.op != Op::ReportLuns && in_range && removed & (1 << lun) != 0 {
        return Completion::error(Status::Removed);
    }
    let (capacity, read_only) = if in_range && request.op != Op::ReportLuns {
        (backend.capacity(lun), backend.read_only(lun))
    } else {
        (None, false)
    };
    if let Err(status) = request.check(capacity, read_only, region.map(Region::len)) {
        return Completion::error(status);
    }
    let ok = |detail| Completion {
        status: Status::Ok,
        detail,
    };
    match request.op {
        Op::Read | Op::Write => match transfer(request, region, backend, bounce) {
            Ok(()) => ok(Detail::Transferred {
                sectors: request.sectors,
            }),
            Err(status) => Completion::error(status),
        },
        Op::Flush => match backend.flush(lun) {
            Ok(()) => ok(Detail::None),
            Err(e) => Completion::error(e.status()),
        },
        Op::Capacity => ok(Detail::Capacity {
            sectors: capacity.unwrap_or(0),
        }),
        Op::Inquiry => ok(Detail::Inquiry(Inquiry {
            sectors: capacity.unwrap_or(0),
            sector_bytes: SECTOR_BYTES,
            max_transfer_sectors: MAX_TRANSFER_SECTORS,
            read_only,
        })),
        Op::ReportLuns => {
            let mut present = 0u64;
            for l in 0..MAX_LUNS as u8 {
                if removed & (1 << l) == 0 && backend.capacity(l).is_some() {
                    present |= 1 << l;
                }
            }
            ok(Detail::Luns { present })
        }
    }
}

/// Moves a checked read or write in chunks of the bounce buffer.
fn transfer<M: RingMemory, B: StorageBackend + ?Sized>(
    request: &Request,
    region: Option<&Region<M>>,
    backend: &mut B,
    bounce: &mut [u8],
) -> Result<(), Status> {
    let region = region.ok_or(Status::BadBuffer)?;
    let sector = SECTOR_BYTES as usize;
    let chunk_sectors = (bounce.len() / sector) as u64;
    if chunk_sectors == 0 {
        return Err(Status::IoError);
    }
    let mut done = 0u64;
    let total = u64::from(request.sectors);
    while done < total {
        let n = chunk_sectors.min(total - done);
        let bytes = &mut bounce[..n as usize * sector];
        let lba = request.lba + done;
        let at = request.buffer_offset as usize + done as usize * sector;
        if request.op == Op::Read {
            backend
                .read(request.lun, lba, bytes)
                .map_err(BackendError::status)?;
            region.memory.write(at, bytes);
        } else {
            region.memory.read(at, bytes);
            backend
                .write(request.lun, lba, bytes)
                .map_err(BackendError::status)?;
        }
        done += n;
    }
    Ok(())
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
