//! The live-migration stream and saved-state format (version 1): what the
//! source root partition sends the destination, and what a saved child's
//! state file holds. `docs/migration.md` has the byte tables.
//!
//! A stream is a 56-byte [`Header`], then records, then exactly one `End`
//! record. Every record is `kind: u8`, `len: u32` (payload bytes, little
//! endian), then `len` payload bytes. All integers are little endian.
//!
//! # Invariants
//! - [`Decoder`] accepts a stream split into chunks at any byte boundaries
//!   and reports exactly the same records and errors for every split.
//! - Nothing here panics on any input and nothing allocates: the decoder
//!   holds one record of the largest size ([`MAX_RECORD`] bytes) inside
//!   itself (about 64 KiB; keep it in a `Box` on a small stack).
//! - A record is handed to a [`RecordSink`] only after it was validated
//!   against the header (page range, vCPU index, lengths).
//! - The `End` checksum ([`Checksum`]) covers every byte of the stream from
//!   the first header byte up to, not including, the `End` record.

use crate::vcpu_state;

/// First eight bytes of every stream.
pub const MAGIC: [u8; 8] = *b"CAPVMIG\0";
/// The format version this module writes and reads.
pub const VERSION: u16 = 1;
/// Header flag: the stream is a saved-state file (written while the child
/// was paused), not a live migration.
pub const FLAG_SAVED_STATE: u16 = 1 << 0;
/// Every flag version 1 defines; other bits must be zero.
pub const KNOWN_FLAGS: u16 = FLAG_SAVED_STATE;
/// Bytes in a guest page.
pub const PAGE_SIZE: usize = 4096;
/// Longest child name in the header, in bytes of UTF-8.
pub const MAX_NAME: usize = 32;
/// Bytes in the encoded header.
pub const HEADER_LEN: usize = 56;
/// Bytes before a record's payload (kind, length).
pub const RECORD_PREFIX: usize = 5;
/// Most pages one `Pages` record carries.
pub const MAX_PAGES_PER_RECORD: usize = 16;
/// Bytes of a `Pages` payload before the page data (first page, count).
pub const PAGES_META: usize = 10;
/// Offset of the page data from the start of a `Pages` record.
pub const PAGES_DATA_OFFSET: usize = RECORD_PREFIX + PAGES_META;
/// Largest payload of any record (a full `Pages` record).
pub const MAX_PAYLOAD: usize = PAGES_META + MAX_PAGES_PER_RECORD * PAGE_SIZE;
/// Largest record, prefix included.
pub const MAX_RECORD: usize = RECORD_PREFIX + MAX_PAYLOAD;
/// Largest vCPU state in a `Vcpu` record: one page, what `VcpuGetState` writes.
pub const MAX_VCPU_STATE: usize = PAGE_SIZE;
/// Bytes of [`vcpu_state::VcpuState`] that carry state (58 little-endian
/// words, 464 bytes); the rest of the page `VcpuGetState` writes is zero,
/// so the root sends this prefix only.
pub const VCPU_STATE_BYTES: usize = vcpu_state::WORDS * 8;
/// Largest device state in a `Device` record.
pub const MAX_DEVICE_STATE: usize = MAX_PAYLOAD - 2;
/// Highest page count a header may declare (2^40 pages: 4 PiB).
pub const MAX_PAGES: u64 = 1 << 40;

/// Record kinds (the first byte of every record).
pub mod kind {
    /// Consecutive guest pages with their contents.
    pub const PAGES: u8 = 1;
    /// Consecutive guest pages that are all zero.
    pub const ZERO_PAGES: u8 = 2;
    /// One vCPU's architectural state.
    pub const VCPU: u8 = 3;
    /// One device's state, opaque to the stream.
    pub const DEVICE: u8 = 4;
    /// The start of a pre-copy pass (informational).
    pub const PASS_MARK: u8 = 5;
    /// The end of the stream: page total and checksum.
    pub const END: u8 = 6;
}

/// What a `Device` record's state belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// The VMBus console (0).
    Console,
    /// A VMBus storage device (1).
    Storage,
    /// A VMBus network device (2).
    Network,
    /// Any other value, kept as is.
    Other(u8),
}

impl DeviceKind {
    /// From the wire byte (every byte is valid).
    pub fn from_u8(b: u8) -> DeviceKind {
        match b {
            0 => DeviceKind::Console,
            1 => DeviceKind::Storage,
            2 => DeviceKind::Network,
            n => DeviceKind::Other(n),
        }
    }

    /// The wire byte.
    pub fn as_u8(self) -> u8 {
        match self {
            DeviceKind::Console => 0,
            DeviceKind::Storage => 1,
            DeviceKind::Network => 2,
            DeviceKind::Other(n) => n,
        }
    }
}

/// Everything wrong a stream (or a record given to the encoder) can be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatError {
    /// The first eight bytes are not [`MAGIC`].
    BadMagic,
    /// A version this code does not read.
    UnsupportedVersion(u16),
    /// Flag bits outside [`KNOWN_FLAGS`].
    UnknownFlags(u16),
    /// The header declares no vCPU.
    NoVcpus,
    /// The header declares no page, or more than [`MAX_PAGES`].
    BadPageCount(u64),
    /// The name is longer than [`MAX_NAME`], not UTF-8, or its padding or
    /// the reserved byte is not zero.
    BadName,
    /// A record kind this version does not define.
    UnknownKind(u8),
    /// A record's length does not fit its kind.
    BadLength {
        /// The record kind.
        kind: u8,
        /// The length it declared.
        len: u32,
    },
    /// A page record's count is 0 or above the kind's limit.
    BadRecordPageCount(u64),
    /// Pages outside the header's range.
    PageOutOfRange {
        /// First page of the record.
        first_page: u64,
        /// Pages in the record.
        count: u64,
    },
    /// A vCPU index not below the header's vCPU count.
    VcpuOutOfRange(u16),
    /// Bytes after the `End` record.
    TrailingData,
    /// The `End` checksum differs from the one computed over the stream.
    ChecksumMismatch {
        /// What `End` says.
        expected: u64,
        /// What the bytes give.
        computed: u64,
    },
    /// The `End` page total differs from the pages the records carried.
    PageTotalMismatch {
        /// What `End` says.
        expected: u64,
        /// What the records carried.
        counted: u64,
    },
    /// The stream stopped before its `End` record (reported by `finish`).
    Truncated {
        /// Bytes received.
        offset: u64,
    },
    /// The sink refused a record (the decoder stops there).
    SinkRejected,
    /// The output buffer is too small for the record.
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
    },
    /// Encoder misuse: a record before the header, a second header, an
    /// `End` passed to `record`, or anything after the end.
    OutOfOrder,
}

/// The stream header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version ([`VERSION`]).
    pub version: u16,
    /// Flags ([`FLAG_SAVED_STATE`]).
    pub flags: u16,
    /// Guest pages: the stream may carry pages `0..pages`.
    pub pages: u64,
    /// vCPUs: `Vcpu` records carry indexes `0..vcpus`.
    pub vcpus: u16,
    name: [u8; MAX_NAME],
    name_len: u8,
}

impl Header {
    /// A version-1 header; the name is cut to [`MAX_NAME`] bytes at a
    /// character boundary.
    pub fn new(pages: u64, vcpus: u16, flags: u16, name: &str) -> Header {
        let mut end = name.len().min(MAX_NAME);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        let mut buf = [0u8; MAX_NAME];
        buf[..end].copy_from_slice(&name.as_bytes()[..end]);
        Header {
            version: VERSION,
            flags,
            pages,
            vcpus,
            name: buf,
            name_len: end as u8,
        }
    }

    /// The child's name.
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..usize::from(self.name_len).min(MAX_NAME)]).unwrap_or("")
    }

    fn validate(&self) -> Result<(), FormatError> {
        if self.version != VERSION {
            return Err(FormatError::UnsupportedVersion(self.version));
        }
        if self.flags & !KNOWN_FLAGS != 0 {
            return Err(FormatError::UnknownFlags(self.flags));
        }
        if self.vcpus == 0 {
            return Err(FormatError::NoVcpus);
        }
        if self.pages == 0 || self.pages > MAX_PAGES {
            return Err(FormatError::BadPageCount(self.pages));
        }
        let n = usize::from(self.name_len);
        if n > MAX_NAME
            || core::str::from_utf8(&self.name[..n]).is_err()
            || self.name[n..].iter().any(|&b| b != 0)
        {
            return Err(FormatError::BadName);
        }
        Ok(())
    }

    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..14].copy_from_slice(&self.vcpus.to_le_bytes());
        b[14] = self.name_len;
        b[15] = 0;
        b[16..24].copy_from_slice(&self.pages.to_le_bytes());
        b[24..56].copy_from_slice(&self.name);
        b
    }

    fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, FormatError> {
        if b[0..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let mut name = [0u8; MAX_NAME];
        name.copy_from_slice(&b[24..56]);
        let h = Header {
            version: u16_at(b, 8),
            flags: u16_at(b, 10),
            vcpus: u16_at(b, 12),
            name_len: b[14],
            pages: u64_at(b, 16),
            name,
        };
        if b[15] != 0 {
            return Err(FormatError::BadName);
        }
        h.validate()?;
        Ok(h)
    }
}

/// One record, borrowed from the buffer it was decoded from or is encoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// `count` consecutive pages from `first_page`; `data` is `count` × 4096 bytes.
    Pages {
        /// First guest page.
        first_page: u64,
        /// Pages (1..=16).
        count: u16,
        /// The page contents.
        data: &'a [u8],
    },
    /// `count` consecutive all-zero pages from `first_page`.
    ZeroPages {
        /// First guest page.
        first_page: u64,
        /// Pages (at least 1).
        count: u64,
    },
    /// vCPU `index`'s state (opaque here; the root uses [`vcpu_state`]).
    Vcpu {
        /// vCPU index.
        index: u16,
        /// 1..=[`MAX_VCPU_STATE`] bytes.
        state: &'a [u8],
    },
    /// A device's state, opaque to the stream.
    Device {
        /// Device kind.
        kind: DeviceKind,
        /// Instance of that kind.
        instance: u8,
        /// 0..=[`MAX_DEVICE_STATE`] bytes.
        state: &'a [u8],
    },
    /// Pre-copy pass `pass` starts.
    PassMark {
        /// Pass number (1 is the full copy).
        pass: u16,
    },
    /// The end of the stream.
    End {
        /// Page transfers in the stream (each page of `Pages` and
        /// `ZeroPages`, resends counted again).
        pages_total: u64,
        /// [`Checksum`] of every byte before this record.
        checksum: u64,
    },
}

impl Record<'_> {
    /// The record's kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Record::Pages { .. } => kind::PAGES,
            Record::ZeroPages { .. } => kind::ZERO_PAGES,
            Record::Vcpu { .. } => kind::VCPU,
            Record::Device { .. } => kind::DEVICE,
            Record::PassMark { .. } => kind::PASS_MARK,
            Record::End { .. } => kind::END,
        }
    }

    /// Pages this record transfers (for the `End` total).
    pub fn pages(&self) -> u64 {
        match *self {
            Record::Pages { count, .. } => u64::from(count),
            Record::ZeroPages { count, .. } => count,
            _ => 0,
        }
    }

    /// Encoded size, prefix included.
    pub fn encoded_len(&self) -> usize {
        RECORD_PREFIX
            + match *self {
                Record::Pages { data, .. } => PAGES_META + data.len(),
                Record::ZeroPages { .. } | Record::End { .. } => 16,
                Record::Vcpu { state, .. } | Record::Device { state, .. } => 2 + state.len(),
                Record::PassMark { .. } => 2,
            }
    }
}

/// Encoded size of a `Pages` record of `count` pages.
pub const fn pages_record_len(count: usize) -> usize {
    PAGES_DATA_OFFSET + count * PAGE_SIZE
}

/// The stream checksum: FNV-1a 64 taken over 64-bit little-endian words
/// instead of bytes (offset basis 0xcbf29ce484222325; per word `h ^= w;
/// h *= 0x100000001b3`). Bytes are grouped in eights from the first byte of
/// the stream; a final partial word is zero-padded. Word steps make it fast
/// enough not to limit a 10 GbE link.
#[derive(Clone, Copy, Debug)]
pub struct Checksum {
    hash: u64,
    part: [u8; 8],
    part_len: usize,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Default for Checksum {
    fn default() -> Self {
        Checksum::new()
    }
}

impl Checksum {
    /// Nothing hashed yet.
    pub const fn new() -> Checksum {
        Checksum {
            hash: FNV_OFFSET,
            part: [0; 8],
            part_len: 0,
        }
    }

    /// Adds `bytes` to the stream hashed so far.
    pub fn update(&mut self, mut bytes: &[u8]) {
        if self.part_len > 0 {
            let take = (8 - self.part_len).min(bytes.len());
            self.part[self.part_len..self.part_len + take].copy_from_slice(&bytes[..take]);
            self.part_len += take;
            bytes = &bytes[take..];
            if self.part_len < 8 {
                return;
            }
            self.hash = (self.hash ^ u64::from_le_bytes(self.part)).wrapping_mul(FNV_PRIME);
            self.part_len = 0;
        }
        let words = bytes.chunks_exact(8);
        let rest = words.remainder();
        for w in words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.hash = (self.hash ^ u64::from_le_bytes(b)).wrapping_mul(FNV_PRIME);
        }
        self.part[..rest.len()].copy_from_slice(rest);
        self.part_len = rest.len();
    }

    /// The checksum of everything added so far.
    pub fn value(&self) -> u64 {
        if self.part_len == 0 {
            return self.hash;
        }
        let mut b = [0u8; 8];
        b[..self.part_len].copy_from_slice(&self.part[..self.part_len]);
        (self.hash ^ u64::from_le_bytes(b)).wrapping_mul(FNV_PRIME)
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    let mut w = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        w.copy_from_slice(s);
    }
    u16::from_le_bytes(w)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

/// Payload lengths a kind allows: checked as soon as the prefix is in.
fn check_prefix(kind: u8, len: u32) -> Result<(), FormatError> {
    let l = len as usize;
    let ok = match kind {
        kind::PAGES => {
            l > PAGES_META && l <= MAX_PAYLOAD && (l - PAGES_META).is_multiple_of(PAGE_SIZE)
        }
        kind::ZERO_PAGES | kind::END => l == 16,
        kind::VCPU => (3..=2 + MAX_VCPU_STATE).contains(&l),
        kind::DEVICE => (2..=MAX_PAYLOAD).contains(&l),
        kind::PASS_MARK => l == 2,
        other => return Err(FormatError::UnknownKind(other)),
    };
    if ok {
        Ok(())
    } else {
        Err(FormatError::BadLength { kind, len })
    }
}

fn check_range(h: &Header, first_page: u64, count: u64) -> Result<(), FormatError> {
    match first_page.checked_add(count) {
        Some(end) if end <= h.pages => Ok(()),
        _ => Err(FormatError::PageOutOfRange { first_page, count }),
    }
}

/// Validates a (non-`End`) record against the header.
fn check_record(h: &Header, r: &Record<'_>) -> Result<(), FormatError> {
    match *r {
        Record::Pages {
            first_page,
            count,
            data,
        } => {
            let n = usize::from(count);
            if n == 0 || n > MAX_PAGES_PER_RECORD {
                return Err(FormatError::BadRecordPageCount(u64::from(count)));
            }
            if data.len() != n * PAGE_SIZE {
                return Err(FormatError::BadLength {
                    kind: kind::PAGES,
                    len: (PAGES_META + data.len()) as u32,
                });
            }
            check_range(h, first_page, u64::from(count))
        }
        Record::ZeroPages { first_page, count } => {
            if count == 0 {
                return Err(FormatError::BadRecordPageCount(0));
            }
            check_range(h, first_page, count)
        }
        Record::Vcpu { index, state } => {
            if index >= h.vcpus {
                return Err(FormatError::VcpuOutOfRange(index));
            }
            if state.is_empty() || state.len() > MAX_VCPU_STATE {
                return Err(FormatError::BadLength {
                    kind: kind::VCPU,
                    len: (2 + state.len()) as u32,
                });
            }
            Ok(())
        }
        Record::Device { state, .. } => {
            if state.len() > MAX_DEVICE_STATE {
                return Err(FormatError::BadLength {
                    kind: kind::DEVICE,
                    len: (2 + state.len()).min(u32::MAX as usize) as u32,
                });
            }
            Ok(())
        }
        Record::PassMark { .. } => Ok(()),
        Record::End { .. } => Err(FormatError::OutOfOrder),
    }
}

/// Writes `h` into `out`; returns [`HEADER_LEN`].
pub fn encode_header(h: &Header, out: &mut [u8]) -> Result<usize, FormatError> {
    h.validate()?;
    let dst = out
        .get_mut(..HEADER_LEN)
        .ok_or(FormatError::BufferTooSmall { need: HEADER_LEN })?;
    dst.copy_from_slice(&h.encode());
    Ok(HEADER_LEN)
}

/// Writes one record into `out` as is (no validation against a header;
/// lengths are checked); returns its length.
pub fn encode_record(r: &Record<'_>, out: &mut [u8]) -> Result<usize, FormatError> {
    let len = r.encoded_len();
    if len > MAX_RECORD {
        return Err(FormatError::BadLength {
            kind: r.kind(),
            len: (len - RECORD_PREFIX).min(u32::MAX as usize) as u32,
        });
    }
    let dst = out
        .get_mut(..len)
        .ok_or(FormatError::BufferTooSmall { need: len })?;
    dst[0] = r.kind();
    dst[1..5].copy_from_slice(&((len - RECORD_PREFIX) as u32).to_le_bytes());
    let p = &mut dst[RECORD_PREFIX..];
    match *r {
        Record::Pages {
            first_page,
            count,
            data,
        } => {
            p[0..8].copy_from_slice(&first_page.to_le_bytes());
            p[8..10].copy_from_slice(&count.to_le_bytes());
            p[10..].copy_from_slice(data);
        }
        Record::ZeroPages { first_page, count } => {
            p[0..8].copy_from_slice(&first_page.to_le_bytes());
            p[8..16].copy_from_slice(&count.to_le_bytes());
        }
        Record::Vcpu { index, state } => {
            p[0..2].copy_from_slice(&index.to_le_bytes());
            p[2..].copy_from_slice(state);
        }
        Record::Device {
            kind,
            instance,
            state,
        } => {
            p[0] = kind.as_u8();
            p[1] = instance;
            p[2..].copy_from_slice(state);
        }
        Record::PassMark { pass } => p[0..2].copy_from_slice(&pass.to_le_bytes()),
        Record::End {
            pages_total,
            checksum,
        } => {
            p[0..8].copy_from_slice(&pages_total.to_le_bytes());
            p[8..16].copy_from_slice(&checksum.to_le_bytes());
        }
    }
    Ok(len)
}

/// Writes a valid stream record by record, keeping the checksum and page
/// total for the `End` record.
#[derive(Clone, Debug, Default)]
pub struct Encoder {
    header: Option<Header>,
    checksum: Checksum,
    pages_total: u64,
    bytes: u64,
    ended: bool,
}

impl Encoder {
    /// A new stream.
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Page transfers written so far.
    pub fn pages_total(&self) -> u64 {
        self.pages_total
    }

    fn ready(&self) -> Result<Header, FormatError> {
        match self.header {
            Some(h) if !self.ended => Ok(h),
            _ => Err(FormatError::OutOfOrder),
        }
    }

    /// Writes the header (first, once).
    pub fn header(&mut self, h: &Header, out: &mut [u8]) -> Result<usize, FormatError> {
        if self.header.is_some() {
            return Err(FormatError::OutOfOrder);
        }
        let n = encode_header(h, out)?;
        self.header = Some(*h);
        self.checksum.update(&out[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    /// Writes one record (not `End`: see [`Encoder::end`]), validated
    /// against the header.
    pub fn record(&mut self, r: &Record<'_>, out: &mut [u8]) -> Result<usize, FormatError> {
        let h = self.ready()?;
        check_record(&h, r)?;
        let n = encode_record(r, out)?;
        self.account(&out[..n], r.pages());
        Ok(n)
    }

    /// Writes the prefix of a `Pages` record whose `count` pages are already
    /// in `out[PAGES_DATA_OFFSET..]` (so pages are read straight into the
    /// send buffer); returns the record's length.
    pub fn pages_in_place(
        &mut self,
        first_page: u64,
        count: u16,
        out: &mut [u8],
    ) -> Result<usize, FormatError> {
        let h = self.ready()?;
        let len = pages_record_len(usize::from(count));
        let buf = out
            .get_mut(..len)
            .ok_or(FormatError::BufferTooSmall { need: len })?;
        let (prefix, data) = buf.split_at_mut(PAGES_DATA_OFFSET);
        check_record(
            &h,
            &Record::Pages {
                first_page,
                count,
                data,
            },
        )?;
        prefix[0] = kind::PAGES;
        prefix[1..5].copy_from_slice(&((len - RECORD_PREFIX) as u32).to_le_bytes());
        prefix[5..13].copy_from_slice(&first_page.to_le_bytes());
        prefix[13..15].copy_from_slice(&count.to_le_bytes());
        self.account(&out[..len], u64::from(count));
        Ok(len)
    }

    fn account(&mut self, bytes: &[u8], pages: u64) {
        self.checksum.update(bytes);
        self.bytes += bytes.len() as u64;
        self.pages_total += pages;
    }

    /// Writes the `End` record; the stream is complete.
    pub fn end(&mut self, out: &mut [u8]) -> Result<usize, FormatError> {
        self.ready()?;
        let n = encode_record(
            &Record::End {
                pages_total: self.pages_total,
                checksum: self.checksum.value(),
            },
            out,
        )?;
        self.bytes += n as u64;
        self.ended = true;
        Ok(n)
    }
}

/// Receives what a [`Decoder`] validated.
pub trait RecordSink {
    /// Why the sink refused something.
    type Error;
    /// The header (once, first).
    fn header(&mut self, header: &Header) -> Result<(), Self::Error>;
    /// One validated record; `End` last, after its checksum was verified.
    fn record(&mut self, record: &Record<'_>) -> Result<(), Self::Error>;
}

/// A decoding failure: the stream's fault, or the sink's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError<E> {
    /// The stream is invalid.
    Format(FormatError),
    /// The sink refused a record.
    Sink(E),
}

impl<E> From<FormatError> for DecodeError<E> {
    fn from(e: FormatError) -> Self {
        DecodeError::Format(e)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Header,
    Records,
    Ended,
    Failed(FormatError),
}

/// What a complete stream declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The header.
    pub header: Header,
    /// Page transfers (checked against `End`).
    pub pages_total: u64,
    /// Stream bytes.
    pub bytes: u64,
}

/// The streaming decoder: feed it chunks of any size.
///
/// # Invariants
/// After the first error every later `feed` returns an error; `buf[..have]`
/// holds the bytes of the unit (header or record) being assembled.
pub struct Decoder {
    buf: [u8; MAX_RECORD],
    have: usize,
    state: State,
    header: Option<Header>,
    checksum: Checksum,
    pages_total: u64,
    offset: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// Expects a header first.
    pub fn new() -> Decoder {
        Decoder {
            buf: [0; MAX_RECORD],
            have: 0,
            state: State::Header,
            header: None,
            checksum: Checksum::new(),
            pages_total: 0,
            offset: 0,
        }
    }

    /// The header, once decoded.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Whether the `End` record was accepted.
    pub fn ended(&self) -> bool {
        self.state == State::Ended
    }

    fn fail<E>(&mut self, e: FormatError) -> DecodeError<E> {
        self.state = State::Failed(e);
        DecodeError::Format(e)
    }

    /// Decodes `chunk`, handing each complete, valid record to `sink`.
    /// Returns the bytes consumed (all of `chunk` on success).
    pub fn feed<S: RecordSink>(
        &mut self,
        chunk: &[u8],
        sink: &mut S,
    ) -> Result<usize, DecodeError<S::Error>> {
        let mut pos = 0;
        while pos < chunk.len() {
            let need = match self.state {
                State::Failed(e) => return Err(DecodeError::Format(e)),
                State::Ended => return Err(self.fail(FormatError::TrailingData)),
                State::Header => HEADER_LEN,
                State::Records if self.have < RECORD_PREFIX => RECORD_PREFIX,
                State::Records => RECORD_PREFIX + u32_at(&self.buf, 1) as usize,
            };
            // `need` never exceeds MAX_RECORD: the prefix was checked.
            let take = (need - self.have).min(chunk.len() - pos);
            self.buf[self.have..self.have + take].copy_from_slice(&chunk[pos..pos + take]);
            self.have += take;
            pos += take;
            self.offset += take as u64;
            if self.have < need {
                break;
            }
            if self.state == State::Header {
                self.unit_header(sink)?;
            } else if need == RECORD_PREFIX {
                if let Err(e) = check_prefix(self.buf[0], u32_at(&self.buf, 1)) {
                    return Err(self.fail(e));
                }
            } else {
                self.unit_record(need, sink)?;
            }
        }
        Ok(pos)
    }

    fn unit_header<S: RecordSink>(&mut self, sink: &mut S) -> Result<(), DecodeError<S::Error>> {
        let mut b = [0u8; HEADER_LEN];
        b.copy_from_slice(&self.buf[..HEADER_LEN]);
        let h = match Header::decode(&b) {
            Ok(h) => h,
            Err(e) => return Err(self.fail(e)),
        };
        self.checksum.update(&b);
        self.header = Some(h);
        self.have = 0;
        self.state = State::Records;
        if let Err(e) = sink.header(&h) {
            self.state = State::Failed(FormatError::SinkRejected);
            return Err(DecodeError::Sink(e));
        }
        Ok(())
    }

    fn unit_record<S: RecordSink>(
        &mut self,
        len: usize,
        sink: &mut S,
    ) -> Result<(), DecodeError<S::Error>> {
        let Some(h) = self.header else {
            return Err(self.fail(FormatError::OutOfOrder));
        };
        self.have = 0;
        let rec = &self.buf[..len];
        let p = &rec[RECORD_PREFIX..];
        let record = match rec[0] {
            kind::PAGES => Record::Pages {
                first_page: u64_at(p, 0),
                count: u16_at(p, 8),
                data: &p[PAGES_META..],
            },
            kind::ZERO_PAGES => Record::ZeroPages {
                first_page: u64_at(p, 0),
                count: u64_at(p, 8),
            },
            kind::VCPU => Record::Vcpu {
                index: u16_at(p, 0),
                state: &p[2..],
            },
            kind::DEVICE => Record::Device {
                kind: DeviceKind::from_u8(p[0]),
                instance: p[1],
                state: &p[2..],
            },
            kind::PASS_MARK => Record::PassMark { pass: u16_at(p, 0) },
            kind::END => Record::End {
                pages_total: u64_at(p, 0),
                checksum: u64_at(p, 8),
            },
            other => {
                let e = FormatError::UnknownKind(other);
                self.state = State::Failed(e);
                return Err(DecodeError::Format(e));
            }
        };
        let checked = match record {
            Record::End {
                pages_total,
                checksum,
            } => {
                let computed = self.checksum.value();
                if checksum != computed {
                    Err(FormatError::ChecksumMismatch {
                        expected: checksum,
                        computed,
                    })
                } else if pages_total != self.pages_total {
                    Err(FormatError::PageTotalMismatch {
                        expected: pages_total,
                        counted: self.pages_total,
                    })
                } else {
                    Ok(())
                }
            }
            ref r => check_record(&h, r),
        };
        if let Err(e) = checked {
            self.state = State::Failed(e);
            return Err(DecodeError::Format(e));
        }
        if let Err(e) = sink.record(&record) {
            self.state = State::Failed(FormatError::SinkRejected);
            return Err(DecodeError::Sink(e));
        }
        if matches!(record, Record::End { .. }) {
            self.state = State::Ended;
        } else {
            self.pages_total += record.pages();
            self.checksum.update(&self.buf[..len]);
        }
        Ok(())
    }

    /// The end of input: the summary if the stream was complete and valid.
    pub fn finish(&self) -> Result<Summary, FormatError> {
        match (self.state, self.header) {
            (State::Ended, Some(header)) => Ok(Summary {
                header,
                pages_total: self.pages_total,
                bytes: self.offset,
            }),
            (State::Failed(e), _) => Err(e),
            _ => Err(FormatError::Truncated {
                offset: self.offset,
            }),
        }
    }
}

#[cfg(test)]
#[path = "migration_tests.rs"]
mod tests;
