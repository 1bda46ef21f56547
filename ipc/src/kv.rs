//! The key-value service's line protocol (workload `kv`), as the child
//! serves it and a host client speaks it: one command per line, one answer
//! line each.
//!
//! ```text
//! SET key value   -> OK
//! GET key         -> VALUE value | NOT_FOUND
//! DEL key         -> OK | NOT_FOUND
//! QUIT            -> BYE (the service ends)
//! anything else   -> ERR reason
//! ```
//!
//! With a disk at LUN 0 the service keeps its table there between runs
//! ([`encode`], [`decode`]): sector 0 is a [`DiskHeader`] (magic
//! `CAPVKV01`, version, record count, payload length, CRC-32 of the
//! payload and of the header), the payload from LBA 1 on is one record
//! per key in ascending key order,
//!
//! ```text
//! key SP value LF
//! ```
//!
//! the same shape as a `SET` line without its verb (a key has no space and
//! neither has a newline, so the first space separates; `=` could not,
//! since keys and values may hold it), zero-padded to a whole sector. An
//! all-zero sector 0 (a fresh VHD) is an empty table.
//!
//! # Invariants
//! Keys are 1..=[`MAX_KEY`] bytes without spaces, values 0..=[`MAX_VALUE`]
//! bytes (the rest of the line); lines end with `\n` (a `\r` before it is
//! dropped). [`parse`] and [`decode`] never panic on any input; [`decode`]
//! accepts only what [`encode`] writes (both checksums, every record within
//! the limits, keys strictly ascending, the count right).

use core::fmt;

/// Workload `kv`: `args[0]` is the child's IPv4 address (big-endian
/// number), `args[1]` the TCP port, `args[2]` the MTU (0: 1500).
pub const KV: &str = "kv";
/// Longest key.
pub const MAX_KEY: usize = 64;
/// Longest value.
pub const MAX_VALUE: usize = 1024;
/// Longest line the service reads.
pub const MAX_LINE: usize = 4 + MAX_KEY + 1 + MAX_VALUE + 2;

/// One command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Store `value` under `key`.
    Set(&'a [u8], &'a [u8]),
    /// Look `key` up.
    Get(&'a [u8]),
    /// Forget `key`.
    Del(&'a [u8]),
    /// End the session and the service.
    Quit,
}

/// Why a line is not a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvError {
    /// Not SET, GET, DEL or QUIT.
    UnknownCommand,
    /// A key is missing, too long or holds a space.
    BadKey,
    /// The value is too long.
    BadValue,
    /// Words after a command that takes none.
    Trailing,
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KvError::UnknownCommand => "unknown command",
            KvError::BadKey => "bad key",
            KvError::BadValue => "value too long",
            KvError::Trailing => "unexpected words",
        })
    }
}

fn key(k: &[u8]) -> Result<&[u8], KvError> {
    if k.is_empty() || k.len() > MAX_KEY || k.contains(&b' ') {
        return Err(KvError::BadKey);
    }
    Ok(k)
}

/// Parses one line (without its `\n`; a trailing `\r` is ignored).
pub fn parse(line: &[u8]) -> Result<Command<'_>, KvError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (word, rest) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], Some(&line[i + 1..])),
        None => (line, None),
    };
    match (word, rest) {
        (b"SET", Some(rest)) => {
            let (k, v) = match rest.iter().position(|&b| b == b' ') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            if v.len() > MAX_VALUE {
                return Err(KvError::BadValue);
            }
            Ok(Command::Set(key(k)?, v))
        }
        (b"GET", Some(k)) => Ok(Command::Get(key(k)?)),
        (b"DEL", Some(k)) => Ok(Command::Del(key(k)?)),
        (b"SET" | b"GET" | b"DEL", None) => Err(KvError::BadKey),
        (b"QUIT", None) => Ok(Command::Quit),
        (b"QUIT", Some(_)) => Err(KvError::Trailing),
        _ => Err(KvError::UnknownCommand),
    }
}

/// `kv: serving on A:P (MAC M, MTU U)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvServing<'a> {
    /// Address and port.
    pub endpoint: &'a str,
    /// The child's MAC.
    pub mac: &'a str,
    /// Negotiated MTU.
    pub mtu: u16,
}

impl fmt::Display for KvServing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kv: serving on {} (MAC {}, MTU {})",
            self.endpoint, self.mac, self.mtu
        )
    }
}

/// `kv: done after N commands (S sets, G gets, D dels, E errors)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvDone {
    /// Commands answered.
    pub commands: u64,
    /// SETs.
    pub sets: u64,
    /// GETs.
    pub gets: u64,
    /// DELs.
    pub dels: u64,
    /// Lines answered `ERR`.
    pub errors: u64,
}

impl fmt::Display for KvDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kv: done after {} commands ({} sets, {} gets, {} dels, {} errors)",
            self.commands, self.sets, self.gets, self.dels, self.errors
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(parse(b"SET a 1 2 3"), Ok(Command::Set(b"a", b"1 2 3")));
        assert_eq!(parse(b"SET a"), Ok(Command::Set(b"a", b"")));
        assert_eq!(parse(b"GET a\r"), Ok(Command::Get(b"a")));
        assert_eq!(parse(b"DEL key-1"), Ok(Command::Del(b"key-1")));
        assert_eq!(parse(b"QUIT"), Ok(Command::Quit));
    }

    #[test]
    fn refuses_bad_lines() {
        assert_eq!(parse(b""), Err(KvError::UnknownCommand));
        assert_eq!(parse(b"get a"), Err(KvError::UnknownCommand));
        assert_eq!(parse(b"GET"), Err(KvError::BadKey));
        assert_eq!(parse(b"GET "), Err(KvError::BadKey));
        assert_eq!(parse(b"GET a b"), Err(KvError::BadKey));
        assert_eq!(parse(b"QUIT now"), Err(KvError::Trailing));
        let long = [b'k'; MAX_KEY + 1];
        let mut line = b"GET ".to_vec();
        line.extend_from_slice(&long);
        assert_eq!(parse(&line), Err(KvError::BadKey));
        let mut set = b"SET k ".to_vec();
        set.extend(core::iter::repeat_n(b'v', MAX_VALUE + 1));
        assert_eq!(parse(&set), Err(KvError::BadValue));
    }
}

// ---------------------------------------------------------------------
// The table on disk
// ---------------------------------------------------------------------

/// Sector size of the table's layout (the storage controller's sector).
pub const DISK_SECTOR: usize = 512;
/// First eight bytes of a saved table.
pub const DISK_MAGIC: [u8; 8] = *b"CAPVKV01";
/// Layout version this code writes and reads.
pub const DISK_VERSION: u32 = 1;
/// Bytes of the header that carry fields (the rest of sector 0 is zero).
const HEADER_FIELDS: usize = 40;

/// What is wrong with one record of a saved table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordFault {
    /// No space between key and value before the record's end.
    NoSeparator,
    /// The key is empty or longer than [`MAX_KEY`].
    BadKey,
    /// The value is longer than [`MAX_VALUE`].
    ValueTooLong,
    /// The payload ends inside the record (no `\n`).
    Unterminated,
    /// The key is not greater than the one before (out of order or twice).
    OutOfOrder,
}

impl fmt::Display for RecordFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordFault::NoSeparator => "no space between key and value",
            RecordFault::BadKey => "empty key or key longer than 64 bytes",
            RecordFault::ValueTooLong => "value longer than 1024 bytes",
            RecordFault::Unterminated => "record not ended by a newline",
            RecordFault::OutOfOrder => "key not greater than the one before",
        })
    }
}

/// Why bytes are not a saved table, or a table does not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskError {
    /// Fewer bytes than the header's sector.
    Short {
        /// Bytes given.
        have: u64,
    },
    /// Sector 0 is neither zero nor starts with [`DISK_MAGIC`].
    BadMagic,
    /// A layout version this code does not read.
    Version(u32),
    /// The header's checksum does not match its fields.
    HeaderChecksum,
    /// A reserved header field or the header's padding is not zero.
    HeaderReserved,
    /// The header announces more payload than the bytes (or the disk) hold.
    Truncated {
        /// Bytes the table needs (header sector + payload).
        needed: u64,
        /// Bytes there are.
        have: u64,
    },
    /// The payload's checksum does not match the header's.
    PayloadChecksum {
        /// What the header says.
        stored: u32,
        /// What the payload gives.
        computed: u32,
    },
    /// A record is malformed.
    Record {
        /// Its index (0 is the first).
        index: u64,
        /// Its offset in the payload.
        offset: u64,
        /// What is wrong.
        fault: RecordFault,
    },
    /// The payload holds another number of records than the header says.
    Count {
        /// The header's count.
        header: u64,
        /// Records found.
        found: u64,
    },
    /// The encoded table does not fit the room given.
    NoRoom {
        /// Bytes the table needs.
        needed: u64,
        /// Bytes there are.
        have: u64,
    },
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskError::Short { have } => write!(
                f,
                "{have} bytes: a kv table has at least a {DISK_SECTOR}-byte header"
            ),
            DiskError::BadMagic => {
                f.write_str("sector 0 holds no kv table (magic is not CAPVKV01)")
            }
            DiskError::Version(v) => write!(
                f,
                "kv table layout version {v} (this service reads version {DISK_VERSION})"
            ),
            DiskError::HeaderChecksum => f.write_str("kv table header checksum mismatch"),
            DiskError::HeaderReserved => f.write_str("kv table header has non-zero reserved bytes"),
            DiskError::Truncated { needed, have } => {
                write!(f, "kv table truncated: needs {needed} bytes, {have} there")
            }
            DiskError::PayloadChecksum { stored, computed } => write!(
                f,
                "kv table payload checksum mismatch (header {stored:#010x}, data {computed:#010x})"
            ),
            DiskError::Record {
                index,
                offset,
                fault,
            } => write!(
                f,
                "kv table record {index} (payload offset {offset}): {fault}"
            ),
            DiskError::Count { header, found } => write!(
                f,
                "kv table header counts {header} records, the payload holds {found}"
            ),
            DiskError::NoRoom { needed, have } => {
                write!(f, "kv table needs {needed} bytes, only {have} available")
            }
        }
    }
}

/// Sector 0 of a saved table (all little-endian):
///
/// | bytes | field |
/// |---|---|
/// | 0..8 | magic `CAPVKV01` ([`DISK_MAGIC`]) |
/// | 8..12 | layout version, u32 ([`DISK_VERSION`]) |
/// | 12..16 | reserved, zero |
/// | 16..24 | records, u64 |
/// | 24..32 | payload bytes, u64 |
/// | 32..36 | CRC-32 (IEEE) of the payload, u32 |
/// | 36..40 | CRC-32 (IEEE) of bytes 0..36, u32 |
/// | 40..512 | zero |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskHeader {
    /// Records in the payload.
    pub records: u64,
    /// Payload bytes (from LBA 1 on).
    pub payload_bytes: u64,
    /// CRC-32 of the payload.
    pub payload_crc: u32,
}

impl DiskHeader {
    /// Reads sector 0 (at least [`DISK_SECTOR`] bytes; more are ignored).
    /// `Ok(None)`: the sector is all zero, a disk never written (an empty
    /// table).
    pub fn decode(sector: &[u8]) -> Result<Option<DiskHeader>, DiskError> {
        let Some(sector) = sector.get(..DISK_SECTOR) else {
            return Err(DiskError::Short {
                have: sector.len() as u64,
            });
        };
        if sector.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        if sector[..8] != DISK_MAGIC {
            return Err(DiskError::BadMagic);
        }
        let u32_at = |at: usize| {
            u32::from_le_bytes([sector[at], sector[at + 1], sector[at + 2], sector[at + 3]])
        };
        let u64_at = |at: usize| u64::from(u32_at(at)) | u64::from(u32_at(at + 4)) << 32;
        if crc32fast::hash(&sector[..36]) != u32_at(36) {
            return Err(DiskError::HeaderChecksum);
        }
        let version = u32_at(8);
        if version != DISK_VERSION {
            return Err(DiskError::Version(version));
        }
        if u32_at(12) != 0 || sector[HEADER_FIELDS..].iter().any(|&b| b != 0) {
            return Err(DiskError::HeaderReserved);
        }
        Ok(Some(DiskHeader {
            records: u64_at(16),
            payload_bytes: u64_at(24),
            payload_crc: u32_at(32),
        }))
    }

    /// Sector 0 for this header.
    pub fn encode(&self) -> [u8; DISK_SECTOR] {
        let mut sector = [0u8; DISK_SECTOR];
        sector[..8].copy_from_slice(&DISK_MAGIC);
        sector[8..12].copy_from_slice(&DISK_VERSION.to_le_bytes());
        sector[16..24].copy_from_slice(&self.records.to_le_bytes());
        sector[24..32].copy_from_slice(&self.payload_bytes.to_le_bytes());
        sector[32..36].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32fast::hash(&sector[..36]);
        sector[36..40].copy_from_slice(&crc.to_le_bytes());
        sector
    }

    /// Sectors the payload takes (its last one padded with zeros).
    pub fn payload_sectors(&self) -> u64 {
        self.payload_bytes.div_ceil(DISK_SECTOR as u64)
    }

    /// Bytes the whole table takes on disk: the header sector and the
    /// payload's sectors (saturating: a damaged length never overflows).
    pub fn total_bytes(&self) -> u64 {
        self.payload_sectors()
            .saturating_add(1)
            .saturating_mul(DISK_SECTOR as u64)
    }
}

/// A decoded table: its records, checked, in the order they were saved
/// (ascending keys). Iterate with [`Table::iter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table<'a> {
    payload: &'a [u8],
    records: u64,
}

impl<'a> Table<'a> {
    /// Records.
    pub fn len(&self) -> u64 {
        self.records
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The `(key, value)` pairs.
    pub fn iter(&self) -> Records<'a> {
        Records { rest: self.payload }
    }
}

impl<'a> IntoIterator for Table<'a> {
    type Item = (&'a [u8], &'a [u8]);
    type IntoIter = Records<'a>;
    fn into_iter(self) -> Records<'a> {
        self.iter()
    }
}

/// The records of a checked [`Table`].
#[derive(Clone, Debug)]
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = (&'a [u8], &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let record = split_record(self.rest).ok()?;
        self.rest = &self.rest[record.len..];
        Some((record.key, record.value))
    }
}

struct Record<'a> {
    key: &'a [u8],
    value: &'a [u8],
    /// Bytes the record takes, `\n` included.
    len: usize,
}

/// The first record of `rest` (non-empty), and its own checks.
fn split_record(rest: &[u8]) -> Result<Record<'_>, RecordFault> {
    let end = rest.iter().position(|&b| b == b'\n');
    let line = match end {
        Some(end) => &rest[..end],
        None => rest,
    };
    let Some(space) = line.iter().position(|&b| b == b' ') else {
        return Err(match end {
            Some(_) => RecordFault::NoSeparator,
            None => RecordFault::Unterminated,
        });
    };
    let (key, value) = (&line[..space], &line[space + 1..]);
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(RecordFault::BadKey);
    }
    if value.len() > MAX_VALUE {
        return Err(RecordFault::ValueTooLong);
    }
    let Some(end) = end else {
        return Err(RecordFault::Unterminated);
    };
    Ok(Record {
        key,
        value,
        len: end + 1,
    })
}

/// Checks a payload against its header: its checksum, every record, the
/// order of the keys and their count.
pub fn decode_payload<'a>(header: &DiskHeader, payload: &'a [u8]) -> Result<Table<'a>, DiskError> {
    let have = payload.len() as u64;
    let Some(payload) = usize::try_from(header.payload_bytes)
        .ok()
        .and_then(|n| payload.get(..n))
    else {
        return Err(DiskError::Truncated {
            needed: header.payload_bytes,
            have,
        });
    };
    let computed = crc32fast::hash(payload);
    if computed != header.payload_crc {
        return Err(DiskError::PayloadChecksum {
            stored: header.payload_crc,
            computed,
        });
    }
    let mut found = 0u64;
    let mut offset = 0usize;
    let mut previous: Option<&[u8]> = None;
    while offset < payload.len() {
        let fault = |fault| DiskError::Record {
            index: found,
            offset: offset as u64,
            fault,
        };
        let record = split_record(&payload[offset..]).map_err(fault)?;
        if previous.is_some_and(|p| p >= record.key) {
            return Err(fault(RecordFault::OutOfOrder));
        }
        previous = Some(record.key);
        offset += record.len;
        found += 1;
    }
    if found != header.records {
        return Err(DiskError::Count {
            header: header.records,
            found,
        });
    }
    Ok(Table {
        payload,
        records: found,
    })
}

/// Decodes a saved table from the disk's first bytes (at least its header
/// sector; the payload follows from byte [`DISK_SECTOR`]; bytes after the
/// table are ignored). An all-zero sector 0 is an empty table. Never
/// panics; a damaged table is refused with the first fault found.
pub fn decode(bytes: &[u8]) -> Result<Table<'_>, DiskError> {
    match DiskHeader::decode(bytes)? {
        None => Ok(Table {
            payload: &[],
            records: 0,
        }),
        Some(header) => {
            let payload = &bytes[DISK_SECTOR..];
            decode_payload(&header, payload).map_err(|e| match e {
                DiskError::Truncated { .. } => DiskError::Truncated {
                    needed: header.total_bytes(),
                    have: bytes.len() as u64,
                },
                e => e,
            })
        }
    }
}

fn check_entry(key: &[u8], value: &[u8]) -> Result<(), RecordFault> {
    if key.is_empty() || key.len() > MAX_KEY || key.contains(&b' ') || key.contains(&b'\n') {
        return Err(RecordFault::BadKey);
    }
    if value.len() > MAX_VALUE {
        return Err(RecordFault::ValueTooLong);
    }
    if value.contains(&b'\n') {
        return Err(RecordFault::Unterminated);
    }
    Ok(())
}

/// Bytes [`encode`] writes for `entries`: the header sector and the
/// payload rounded up to whole sectors.
pub fn encoded_len<'a>(entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> u64 {
    let payload: u64 = entries
        .into_iter()
        .map(|(k, v)| k.len() as u64 + 1 + v.len() as u64 + 1)
        .sum();
    DiskHeader {
        records: 0,
        payload_bytes: payload,
        payload_crc: 0,
    }
    .total_bytes()
}

/// Writes `entries` (keys strictly ascending, as a `BTreeMap` gives them)
/// as a table into the start of `out`: the header sector, then the
/// records `key value\n`, then zeros to the end of the last sector.
/// Returns the bytes written ([`encoded_len`]). Refuses what [`decode`]
/// would refuse (a key that is empty, too long or holds a space or a
/// newline, a value too long or holding a newline, keys out of order),
/// and an `out` too small, without writing a partial table's header.
pub fn encode<'a>(
    entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    out: &mut [u8],
) -> Result<usize, DiskError> {
    let have = out.len() as u64;
    let Some((head, body)) = out.split_at_mut_checked(DISK_SECTOR) else {
        return Err(DiskError::NoRoom {
            needed: DISK_SECTOR as u64,
            have,
        });
    };
    let mut crc = crc32fast::Hasher::new();
    let mut records = 0u64;
    let mut at = 0usize;
    let mut previous: Option<&[u8]> = None;
    for (key, value) in entries {
        let fault = |fault| DiskError::Record {
            index: records,
            offset: at as u64,
            fault,
        };
        check_entry(key, value).map_err(fault)?;
        if previous.is_some_and(|p| p >= key) {
            return Err(fault(RecordFault::OutOfOrder));
        }
        previous = Some(key);
        let len = key.len() + 1 + value.len() + 1;
        if let Some(slot) = body.get_mut(at..at + len) {
            let (k, rest) = slot.split_at_mut(key.len());
            k.copy_from_slice(key);
            rest[0] = b' ';
            rest[1..1 + value.len()].copy_from_slice(value);
            rest[1 + value.len()] = b'\n';
            crc.update(slot);
        }
        at += len;
        records += 1;
    }
    let header = DiskHeader {
        records,
        payload_bytes: at as u64,
        payload_crc: crc.finalize(),
    };
    let total = header.total_bytes();
    if total > have {
        return Err(DiskError::NoRoom {
            needed: total,
            have,
        });
    }
    body[at..total as usize - DISK_SECTOR].fill(0);
    head.copy_from_slice(&header.encode());
    Ok(total as usize)
}

/// `kv: loaded N keys from disk`: the service found its table on LUN 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvLoaded {
    /// Keys loaded (0 for a disk never written).
    pub keys: u64,
}

impl fmt::Display for KvLoaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kv: loaded {} keys from disk", self.keys)
    }
}

/// `kv: saved N keys to disk`: the table is on LUN 0 and flushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvSaved {
    /// Keys saved.
    pub keys: u64,
}

impl fmt::Display for KvSaved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kv: saved {} keys to disk", self.keys)
    }
}

/// `kv: cannot load the table from disk: REASON; serving an empty table, the disk is not written`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvLoadFailed<'a> {
    /// Why (a [`DiskError`] or a storage failure, as text).
    pub reason: &'a str,
}

impl fmt::Display for KvLoadFailed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kv: cannot load the table from disk: {}; serving an empty table, the disk is not written",
            self.reason
        )
    }
}

/// `kv: cannot save the table to disk: REASON`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvSaveFailed<'a> {
    /// Why (a [`DiskError`] or a storage failure, as text).
    pub reason: &'a str,
}

impl fmt::Display for KvSaveFailed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kv: cannot save the table to disk: {}", self.reason)
    }
}

/// Workload `netflood`: `args[0]` the index of the child whose MAC it
/// forges, `args[1]` frames of each kind (forged source, own source).
pub const NETFLOOD: &str = "netflood";

/// `netflood: sent F frames with a forged source and O with its own (X failed)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetFloodDone {
    /// Frames sent with the forged source (the root answers each).
    pub forged: u64,
    /// Frames sent with its own source.
    pub own: u64,
    /// Sends that could not be made.
    pub failed: u64,
}

impl fmt::Display for NetFloodDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "netflood: sent {} frames with a forged source and {} with its own ({} failed)",
            self.forged, self.own, self.failed
        )
    }
}

/// Workload `frames`: raw Ethernet frames between children. `args[0]` is
/// the mode ([`FRAMES_PING`] or [`FRAMES_ECHO`]), `args[1]` the peer's
/// child index (ping), `args[2]` the frames (ping: sent; echo: to echo
/// before ending), `args[3]` the frame size in bytes, header included
/// (its MTU is that less 14, at least 1500).
pub const FRAMES: &str = "frames";
/// Send frames to the peer one at a time; check each echo byte for byte.
pub const FRAMES_PING: u64 = 1;
/// Send every frame back to its source.
pub const FRAMES_ECHO: u64 = 2;
/// EtherType of the workload's frames (IEEE local experimental 2).
pub const FRAMES_ETHERTYPE: [u8; 2] = [0x88, 0xb6];

/// Send `args[2]` frames of `args[3]` bytes to the peer back to back.
pub const FRAMES_STREAM: u64 = 3;
/// Count the frames that arrive until `args[2]` came or none comes for a while.
pub const FRAMES_SINK: u64 = 4;

/// `frames bench (WHO): N frames of S bytes in C cycles`: a stream's
/// sender, its receiver (frames received, first to last) or the root's
/// run of the same frames through its switch without VMBus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramesBench<'a> {
    /// "sender", "receiver" or "root".
    pub who: &'a str,
    /// Frames.
    pub frames: u64,
    /// Frame size.
    pub size: u64,
    /// Time-stamp cycles.
    pub cycles: u64,
}

impl fmt::Display for FramesBench<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frames bench ({}): {} frames of {} bytes in {} cycles",
            self.who, self.frames, self.size, self.cycles
        )
    }
}

/// Frames of the network benchmark (scenario `nbench`).
pub const BENCH_FRAMES: u64 = 20_000;
/// Their size (a full 1500-byte MTU frame).
pub const BENCH_FRAME_SIZE: u64 = 1514;

/// `frames: N of N frames of S bytes echoed intact (MTU U)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramesEchoed {
    /// Echoes that matched.
    pub intact: u64,
    /// Frames sent.
    pub sent: u64,
    /// Frame size.
    pub size: u64,
    /// The child's MTU.
    pub mtu: u16,
}

impl fmt::Display for FramesEchoed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frames: {} of {} frames of {} bytes echoed intact (MTU {})",
            self.intact, self.sent, self.size, self.mtu
        )
    }
}

/// `frames: echoed N frames, the largest S bytes (MTU U)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramesServed {
    /// Frames echoed.
    pub echoed: u64,
    /// The largest frame.
    pub largest: u64,
    /// The child's MTU.
    pub mtu: u16,
}

impl fmt::Display for FramesServed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frames: echoed {} frames, the largest {} bytes (MTU {})",
            self.echoed, self.largest, self.mtu
        )
    }
}

#[cfg(test)]
mod disk_tests {
    extern crate std;
    use super::*;
    use std::collections::BTreeMap;
    use std::string::ToString;
    use std::vec;
    use std::vec::Vec;

    type Pair<'a> = (&'a [u8], &'a [u8]);

    fn table() -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut t = BTreeMap::new();
        t.insert(b"a".to_vec(), b"1".to_vec());
        t.insert(b"empty".to_vec(), Vec::new());
        t.insert(b"eq=key".to_vec(), b"x=y z\r".to_vec());
        t.insert(vec![b'k'; MAX_KEY], vec![0xff; MAX_VALUE]);
        t.insert(b"\x00\x01".to_vec(), b"\x00 \t".to_vec());
        t
    }

    fn encoded(t: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<u8> {
        let entries = || t.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
        let mut out = vec![0u8; encoded_len(entries()) as usize];
        let n = encode(entries(), &mut out).unwrap();
        assert_eq!(n, out.len());
        out
    }

    /// A table image whose header matches `payload` (checksum included).
    fn image(records: u64, payload: &[u8]) -> Vec<u8> {
        let header = DiskHeader {
            records,
            payload_bytes: payload.len() as u64,
            payload_crc: crc32fast::hash(payload),
        };
        let mut out = header.encode().to_vec();
        out.extend_from_slice(payload);
        out
    }

    fn pairs(table: Table<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
        table
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }

    #[test]
    fn a_table_survives_encode_and_decode() {
        let t = table();
        let bytes = encoded(&t);
        assert_eq!(bytes.len() % DISK_SECTOR, 0);
        assert_eq!(&bytes[..8], b"CAPVKV01");
        let decoded = decode(&bytes).unwrap();
        assert_eq!(decoded.len(), t.len() as u64);
        let expected: Vec<_> = t.into_iter().collect();
        assert_eq!(pairs(decoded), expected);
        // The records are readable text lines after the header.
        assert!(
            bytes[DISK_SECTOR..].starts_with(b"\x00\x01 \x00 \t\na 1\nempty \neq=key x=y z\r\n")
        );
    }

    #[test]
    fn the_checksums_are_crc32_ieee() {
        // The standard check value: a host reader may use zlib's crc32.
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
        let bytes = encoded(&table());
        let header = DiskHeader::decode(&bytes).unwrap().unwrap();
        let payload = &bytes[DISK_SECTOR..DISK_SECTOR + header.payload_bytes as usize];
        assert_eq!(header.payload_crc, crc32fast::hash(payload));
        assert_eq!(bytes[36..40], crc32fast::hash(&bytes[..36]).to_le_bytes());
    }

    #[test]
    fn bytes_after_the_table_are_ignored() {
        let mut bytes = encoded(&table());
        let len = bytes.len();
        bytes.extend(core::iter::repeat_n(0xa5, 4096));
        assert_eq!(decode(&bytes).unwrap().len(), 5);
        assert_eq!(decode(&bytes[..len]).unwrap().len(), 5);
    }

    #[test]
    fn a_zero_disk_is_an_empty_table_and_so_is_an_empty_save() {
        let zero = vec![0u8; 8 * DISK_SECTOR];
        let t = decode(&zero).unwrap();
        assert!(t.is_empty());
        assert_eq!(t.iter().count(), 0);
        assert_eq!(DiskHeader::decode(&zero), Ok(None));
        let empty = encoded(&BTreeMap::new());
        assert_eq!(empty.len(), DISK_SECTOR);
        assert_ne!(empty, zero[..DISK_SECTOR]);
        assert!(decode(&empty).unwrap().is_empty());
    }

    #[test]
    fn a_short_or_foreign_sector_is_refused() {
        assert_eq!(decode(&[]), Err(DiskError::Short { have: 0 }));
        assert_eq!(
            decode(&[0u8; DISK_SECTOR - 1]),
            Err(DiskError::Short {
                have: DISK_SECTOR as u64 - 1
            })
        );
        let mut foreign = vec![0u8; DISK_SECTOR];
        foreign[510] = 0x55;
        foreign[511] = 0xaa;
        assert_eq!(decode(&foreign), Err(DiskError::BadMagic));
        assert_eq!(decode(&[0x41; 1024]), Err(DiskError::BadMagic));
    }

    #[test]
    fn every_damaged_header_byte_is_refused() {
        let good = encoded(&table());
        for at in 0..DISK_SECTOR {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            let e = decode(&bad).expect_err("a damaged header was accepted");
            let expected = match at {
                0..8 => DiskError::BadMagic,
                8..40 => DiskError::HeaderChecksum,
                _ => DiskError::HeaderReserved,
            };
            assert_eq!(e, expected, "byte {at}");
        }
    }

    #[test]
    fn another_version_is_named() {
        let mut bytes = encoded(&table());
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..36]);
        bytes[36..40].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&bytes), Err(DiskError::Version(2)));
        assert!(DiskError::Version(2).to_string().contains("version 2"));
    }

    #[test]
    fn every_damaged_payload_byte_is_refused() {
        let good = encoded(&table());
        let header = DiskHeader::decode(&good).unwrap().unwrap();
        let end = DISK_SECTOR + header.payload_bytes as usize;
        for at in DISK_SECTOR..end {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            assert!(
                matches!(decode(&bad), Err(DiskError::PayloadChecksum { stored, .. }) if stored == header.payload_crc),
                "byte {at}"
            );
        }
    }

    #[test]
    fn a_truncated_table_is_refused_with_the_sizes() {
        let good = encoded(&table());
        let cut = &good[..good.len() - DISK_SECTOR];
        assert_eq!(
            decode(cut),
            Err(DiskError::Truncated {
                needed: good.len() as u64,
                have: cut.len() as u64
            })
        );
        // A header claiming more than memory can hold.
        let mut huge = DiskHeader {
            records: 1,
            payload_bytes: u64::MAX,
            payload_crc: 0,
        }
        .encode()
        .to_vec();
        huge.extend_from_slice(b"k v\n");
        assert_eq!(
            decode(&huge),
            Err(DiskError::Truncated {
                needed: u64::MAX,
                have: huge.len() as u64
            })
        );
    }

    #[test]
    fn malformed_records_are_refused_even_with_a_good_checksum() {
        let long_key = [vec![b'k'; MAX_KEY + 1], b" v\n".to_vec()].concat();
        let long_value = [b"k ".to_vec(), vec![b'v'; MAX_VALUE + 1], b"\n".to_vec()].concat();
        let cases: [(&[u8], u64, u64, RecordFault); 7] = [
            (b"a 1\nnospace\n", 1, 4, RecordFault::NoSeparator),
            (b" v\n", 0, 0, RecordFault::BadKey),
            (&long_key, 0, 0, RecordFault::BadKey),
            (&long_value, 0, 0, RecordFault::ValueTooLong),
            (b"a 1\nb 2", 1, 4, RecordFault::Unterminated),
            (b"b 1\na 2\n", 1, 4, RecordFault::OutOfOrder),
            (b"a 1\na 2\n", 1, 4, RecordFault::OutOfOrder),
        ];
        for (payload, index, offset, fault) in cases {
            let e = decode(&image(2, payload)).unwrap_err();
            assert_eq!(
                e,
                DiskError::Record {
                    index,
                    offset,
                    fault
                },
                "{payload:?}"
            );
            assert!(e.to_string().contains(&fault.to_string()));
        }
        assert_eq!(
            decode(&image(3, b"a 1\nb 2\n")),
            Err(DiskError::Count {
                header: 3,
                found: 2
            })
        );
        assert_eq!(
            decode(&image(0, b"a 1\n")),
            Err(DiskError::Count {
                header: 0,
                found: 1
            })
        );
        // A value may hold spaces and '=': only the first space separates.
        let spaced = image(1, b"k a b=c\n");
        assert_eq!(
            pairs(decode(&spaced).unwrap()),
            vec![(b"k".to_vec(), b"a b=c".to_vec())]
        );
    }

    #[test]
    fn encode_refuses_what_decode_would_refuse() {
        let mut out = vec![0u8; 4096];
        let bad: [(&[Pair<'_>], RecordFault); 6] = [
            (&[(b"", b"v")], RecordFault::BadKey),
            (&[(b"a b", b"v")], RecordFault::BadKey),
            (&[(b"a\nb", b"v")], RecordFault::BadKey),
            (&[(b"a", b"v\nw")], RecordFault::Unterminated),
            (&[(b"a", &[b'v'; MAX_VALUE + 1])], RecordFault::ValueTooLong),
            (&[(b"b", b"1"), (b"a", b"2")], RecordFault::OutOfOrder),
        ];
        for (entries, fault) in bad {
            let e = encode(entries.iter().copied(), &mut out).unwrap_err();
            assert!(
                matches!(e, DiskError::Record { fault: f, .. } if f == fault),
                "{entries:?}: {e:?}"
            );
        }
        // No room: nothing written, not even a header.
        let t = table();
        let entries = || t.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
        let needed = encoded_len(entries());
        let mut small = vec![0u8; needed as usize - DISK_SECTOR];
        assert_eq!(
            encode(entries(), &mut small),
            Err(DiskError::NoRoom {
                needed,
                have: small.len() as u64
            })
        );
        assert!(small[..DISK_SECTOR].iter().all(|&b| b == 0));
        assert!(matches!(
            encode(entries(), &mut [0u8; 100]),
            Err(DiskError::NoRoom { needed: 512, .. })
        ));
        // Stale bytes in the last sector are cleared.
        let mut dirty = vec![0xeeu8; needed as usize];
        encode(entries(), &mut dirty).unwrap();
        assert_eq!(dirty, encoded(&t));
    }

    #[test]
    fn random_damage_never_panics() {
        let good = encoded(&table());
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5000 {
            let mut bytes = good.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() % bytes.len() as u64) as usize;
                bytes[at] = next() as u8;
            }
            let cut = (next() % (bytes.len() as u64 + 1)) as usize;
            if let Ok(t) = decode(&bytes[..cut]) {
                for (k, v) in t.iter() {
                    assert!(!k.is_empty() && k.len() <= MAX_KEY && !k.contains(&b' '));
                    assert!(v.len() <= MAX_VALUE && !v.contains(&b'\n'));
                }
            }
        }
    }

    #[test]
    fn disk_markers_render_as_documented() {
        assert_eq!(
            KvLoaded { keys: 3 }.to_string(),
            "kv: loaded 3 keys from disk"
        );
        assert_eq!(KvSaved { keys: 0 }.to_string(), "kv: saved 0 keys to disk");
        assert_eq!(
            KvLoadFailed {
                reason: &DiskError::BadMagic.to_string()
            }
            .to_string(),
            "kv: cannot load the table from disk: sector 0 holds no kv table (magic is not CAPVKV01); serving an empty table, the disk is not written"
        );
        assert_eq!(
            KvSaveFailed { reason: "Timeout" }.to_string(),
            "kv: cannot save the table to disk: Timeout"
        );
    }
}
