//! The synthetic storage controller's messages (class
//! [`super::control::STORAGE_CLASS`]): one controller per child, LUNs
//! `0..MAX_LUNS`, data moved through one buffer region the child grants
//! once. See `docs/devices/storage.md`.
//!
//! ```text
//! child                                   root
//! GrantBuffer{gpa, pages}          ->     (root checks and maps the region)
//!                                  <-     BufferGranted{status}
//! Request{lun, op, ..} (tid = tag) ->     (many may be outstanding)
//!                                  <-     Completion{status, detail} (tid = tag)
//!                                  <-     LunAdded{lun, sectors} / LunRemoved{lun}
//! ```
//!
//! # Invariants
//! - A request is performed only after [`Request::check`] accepted it
//!   against the LUN's capacity and the granted region: every byte it
//!   touches lies inside `[0, capacity)` sectors of the LUN and inside the
//!   region, and it moves at most [`MAX_TRANSFER`] bytes. The arithmetic
//!   cannot overflow (checked).
//! - Every request gets exactly one completion, carrying its transaction
//!   id; a payload that does not decode gets a [`Status::Malformed`]
//!   completion with the packet's transaction id.

use serde::{Deserialize, Serialize};

/// Bytes of a sector.
pub const SECTOR_BYTES: u32 = 512;
/// LUNs of the controller: `0..MAX_LUNS`.
pub const MAX_LUNS: usize = 64;
/// Most bytes one request moves (256 KiB).
pub const MAX_TRANSFER: u32 = 256 * 1024;
/// Most sectors one request moves.
pub const MAX_TRANSFER_SECTORS: u32 = MAX_TRANSFER / SECTOR_BYTES;
/// Bytes of a page of the buffer region.
pub const PAGE_BYTES: u64 = 4096;
/// Largest buffer region a child may grant (pages; 4 MiB).
pub const MAX_BUFFER_PAGES: u32 = 1024;
/// Largest encoded storage message (either direction), with room to spare.
pub const MAX_MESSAGE: usize = 64;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Read `sectors` sectors at `lba` into the region at `buffer_offset`.
    Read,
    /// Write `sectors` sectors at `lba` from the region at `buffer_offset`.
    Write,
    /// Make every completed write of the LUN durable.
    Flush,
    /// Describe the LUN ([`Inquiry`]).
    Inquiry,
    /// The LUN's capacity in sectors.
    Capacity,
    /// Which LUNs are present (a bitmap); `lun` is ignored.
    ReportLuns,
}

impl Op {
    /// Whether the op moves data through the buffer region.
    pub fn moves_data(self) -> bool {
        matches!(self, Op::Read | Op::Write)
    }
}

/// One request (child to root); the packet's transaction id is its tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The LUN (`0..MAX_LUNS`).
    pub lun: u8,
    /// What to do.
    pub op: Op,
    /// First sector (read, write).
    pub lba: u64,
    /// Sectors to move (read, write).
    pub sectors: u32,
    /// Byte offset of the data in the buffer region (read, write).
    pub buffer_offset: u32,
}

/// Outcome of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum Status {
    /// Done.
    Ok = 0,
    /// No such LUN (never present, beyond [`MAX_LUNS`], or unknown to the backend).
    NoSuchLun = 1,
    /// `lba + sectors` beyond the LUN's capacity.
    OutOfRange = 2,
    /// The data lies outside the granted region, or no region is granted.
    BadBuffer = 3,
    /// The payload did not decode (completion carries the packet's transaction id).
    Malformed = 4,
    /// The backend failed.
    IoError = 5,
    /// A write to a read-only LUN.
    ReadOnly = 6,
    /// The LUN was hot-removed (and not added again).
    Removed = 7,
    /// More than [`MAX_TRANSFER`] bytes in one request.
    TooLarge = 8,
}

/// Number of [`Status`] values (for counters indexed by status).
pub const STATUS_COUNT: usize = 9;

impl Status {
    /// Every status, in discriminant order.
    pub const ALL: [Status; STATUS_COUNT] = [
        Status::Ok,
        Status::NoSuchLun,
        Status::OutOfRange,
        Status::BadBuffer,
        Status::Malformed,
        Status::IoError,
        Status::ReadOnly,
        Status::Removed,
        Status::TooLarge,
    ];
}

/// What [`Op::Inquiry`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inquiry {
    /// Capacity in sectors.
    pub sectors: u64,
    /// Bytes per sector ([`SECTOR_BYTES`]).
    pub sector_bytes: u32,
    /// Most sectors per request ([`MAX_TRANSFER_SECTORS`]).
    pub max_transfer_sectors: u32,
    /// Writes are refused.
    pub read_only: bool,
}

/// The op-specific part of a completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Detail {
    /// Nothing (flush, and every error).
    None,
    /// Read or write: sectors moved.
    Transferred {
        /// Sectors.
        sectors: u32,
    },
    /// Capacity in sectors.
    Capacity {
        /// Sectors.
        sectors: u64,
    },
    /// Inquiry data.
    Inquiry(Inquiry),
    /// Present LUNs: bit `n` = LUN `n`.
    Luns {
        /// Bitmap.
        present: u64,
    },
}

/// The answer to one request (root to child); the packet's transaction id
/// is the request's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// Outcome.
    pub status: Status,
    /// Op-specific result ([`Detail::None`] unless `status` is `Ok`).
    pub detail: Detail,
}

impl Completion {
    /// An error completion.
    pub const fn error(status: Status) -> Self {
        Completion {
            status,
            detail: Detail::None,
        }
    }
}

/// Outcome of a [`GuestMessage::GrantBuffer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GrantStatus {
    /// The region is mapped; data requests may use it.
    Granted,
    /// The pages are not the child's to grant (outside its grantable
    /// memory, unaligned, or overlapping pages already granted for rings).
    BadRange,
    /// Zero pages, or more than [`MAX_BUFFER_PAGES`].
    BadSize,
    /// A region is already granted (one per channel, for its lifetime).
    AlreadyGranted,
}

/// Child to root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestMessage {
    /// Grants the buffer region `[gpa, gpa + pages * 4096)` (once).
    GrantBuffer {
        /// Child guest-physical address of the first page.
        gpa: u64,
        /// Pages.
        pages: u32,
    },
    /// One request, tagged by the packet's transaction id.
    Request(Request),
}

/// Root to child.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostMessage {
    /// The answer to `GrantBuffer` (transaction id echoed).
    BufferGranted {
        /// Outcome.
        status: GrantStatus,
    },
    /// The answer to one request (transaction id echoed).
    Completion(Completion),
    /// A LUN appeared (or changed capacity); transaction id 0.
    LunAdded {
        /// The LUN.
        lun: u8,
        /// Its capacity in sectors.
        sectors: u64,
    },
    /// A LUN disappeared; transaction id 0.
    LunRemoved {
        /// The LUN.
        lun: u8,
    },
}

/// Checks a buffer grant's size (the range itself is the root's to check).
pub fn check_grant(pages: u32) -> Result<(), GrantStatus> {
    if pages == 0 || pages > MAX_BUFFER_PAGES {
        return Err(GrantStatus::BadSize);
    }
    Ok(())
}

impl Request {
    /// Bytes the request moves through the region (0 unless it moves data).
    pub fn bytes(&self) -> u64 {
        if self.op.moves_data() {
            u64::from(self.sectors) * u64::from(SECTOR_BYTES)
        } else {
            0
        }
    }

    /// Checks the request against the LUN (`capacity` in sectors, `None`
    /// if there is no such LUN, `read_only`) and the granted region
    /// (`region_len` in bytes, `None` if none is granted). `Ok` means the
    /// request may be performed: the sectors lie inside the LUN and the
    /// bytes inside the region. Checked in order: LUN, size, range, buffer,
    /// read-only. [`Op::ReportLuns`] needs nothing.
    pub fn check(
        &self,
        capacity: Option<u64>,
        read_only: bool,
        region_len: Option<u64>,
    ) -> Result<(), Status> {
        if self.op == Op::ReportLuns {
            return Ok(());
        }
        if usize::from(self.lun) >= MAX_LUNS {
            return Err(Status::NoSuchLun);
        }
        let capacity = capacity.ok_or(Status::NoSuchLun)?;
        if !self.op.moves_data() {
            return Ok(());
        }
        if self.sectors > MAX_TRANSFER_SECTORS {
            return Err(Status::TooLarge);
        }
        match self.lba.checked_add(u64::from(self.sectors)) {
            Some(end) if end <= capacity => {}
            _ => return Err(Status::OutOfRange),
        }
        let region = region_len.ok_or(Status::BadBuffer)?;
        if u64::from(self.buffer_offset) + self.bytes() > region {
            return Err(Status::BadBuffer);
        }
        if self.op == Op::Write && read_only {
            return Err(Status::ReadOnly);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(op: Op, lun: u8, lba: u64, sectors: u32, buffer_offset: u32) -> Request {
        Request {
            lun,
            op,
            lba,
            sectors,
            buffer_offset,
        }
    }

    #[test]
    fn check_accepts_exactly_the_requests_inside_lun_and_region() {
        let region = Some(64 * 1024);
        let cap = Some(1000);
        // Last sector, last bytes of the region.
        assert_eq!(
            rw(Op::Read, 0, 999, 1, 64 * 1024 - 512).check(cap, false, region),
            Ok(())
        );
        assert_eq!(
            rw(Op::Write, 63, 0, 128, 0).check(cap, false, region),
            Ok(())
        );
        assert_eq!(
            rw(Op::Read, 0, 1000, 0, 0).check(cap, false, region),
            Ok(())
        );
        for (request, expected) in [
            (rw(Op::Read, 64, 0, 1, 0), Status::NoSuchLun),
            (rw(Op::Read, 255, 0, 1, 0), Status::NoSuchLun),
            (rw(Op::Read, 0, 1000, 1, 0), Status::OutOfRange),
            (rw(Op::Read, 0, 999, 2, 0), Status::OutOfRange),
            (rw(Op::Write, 0, u64::MAX, 1, 0), Status::OutOfRange),
            (rw(Op::Read, 0, 0, 129, 0), Status::BadBuffer),
            (rw(Op::Read, 0, 0, 1, 64 * 1024 - 511), Status::BadBuffer),
            (rw(Op::Read, 0, 0, 1, u32::MAX), Status::BadBuffer),
            (
                rw(Op::Read, 0, 0, MAX_TRANSFER_SECTORS + 1, 0),
                Status::TooLarge,
            ),
            (rw(Op::Write, 0, 0, u32::MAX, 0), Status::TooLarge),
        ] {
            assert_eq!(
                request.check(cap, false, region),
                Err(expected),
                "{request:?}"
            );
        }
        // No LUN, no region, read-only.
        assert_eq!(
            rw(Op::Read, 0, 0, 1, 0).check(None, false, region),
            Err(Status::NoSuchLun)
        );
        assert_eq!(
            rw(Op::Read, 0, 0, 1, 0).check(cap, false, None),
            Err(Status::BadBuffer)
        );
        assert_eq!(
            rw(Op::Write, 0, 0, 1, 0).check(cap, true, region),
            Err(Status::ReadOnly)
        );
        assert_eq!(rw(Op::Read, 0, 0, 1, 0).check(cap, true, region), Ok(()));
        // Ops without data need the LUN only, never the region.
        for op in [Op::Flush, Op::Inquiry, Op::Capacity] {
            assert_eq!(
                rw(op, 0, u64::MAX, u32::MAX, u32::MAX).check(cap, true, None),
                Ok(())
            );
            assert_eq!(
                rw(op, 0, 0, 0, 0).check(None, false, None),
                Err(Status::NoSuchLun)
            );
        }
        assert_eq!(
            rw(Op::ReportLuns, 200, 0, 0, 0).check(None, false, None),
            Ok(())
        );
    }

    #[test]
    fn grants_are_sized() {
        assert_eq!(check_grant(0), Err(GrantStatus::BadSize));
        assert_eq!(check_grant(1), Ok(()));
        assert_eq!(check_grant(MAX_BUFFER_PAGES), Ok(()));
        assert_eq!(check_grant(MAX_BUFFER_PAGES + 1), Err(GrantStatus::BadSize));
    }

    #[test]
    fn messages_round_trip_and_fit_max_message() {
        let mut buf = [0u8; 256];
        let guest = [
            GuestMessage::GrantBuffer {
                gpa: u64::MAX,
                pages: u32::MAX,
            },
            GuestMessage::Request(rw(Op::Write, 255, u64::MAX, u32::MAX, u32::MAX)),
        ];
        for m in guest {
            let bytes = postcard::to_slice(&m, &mut buf).unwrap();
            assert!(bytes.len() <= MAX_MESSAGE, "{m:?}");
            assert_eq!(postcard::from_bytes::<GuestMessage>(bytes).unwrap(), m);
        }
        let host = [
            HostMessage::BufferGranted {
                status: GrantStatus::AlreadyGranted,
            },
            HostMessage::Completion(Completion {
                status: Status::Ok,
                detail: Detail::Inquiry(Inquiry {
                    sectors: u64::MAX,
                    sector_bytes: u32::MAX,
                    max_transfer_sectors: u32::MAX,
                    read_only: true,
                }),
            }),
            HostMessage::Completion(Completion {
                status: Status::Ok,
                detail: Detail::Luns { present: u64::MAX },
            }),
            HostMessage::LunAdded {
                lun: 63,
                sectors: u64::MAX,
            },
            HostMessage::LunRemoved { lun: 0 },
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
}
