//! One single-producer single-consumer ring in shared memory: a control
//! page then a data area of 8-byte-aligned packets ([`super::packet`]).
//!
//! | offset | field | written by |
//! |---|---|---|
//! | 0 | write index (byte offset into the data area) | producer |
//! | 8 | pending-send size (bytes the producer waits for, 0 = none) | producer (consumer clears) |
//! | 64 | read index | consumer |
//! | 128 | interrupt mask (1 = consumer is polling, do not signal) | consumer |
//! | 192 | feature bits ([`FEATURE_PENDING_SEND`]) | creator |
//! | everything else up to 4096 | reserved, zero | — |
//!
//! Every field is a `u32` at an 8-byte-aligned offset whose next 4 bytes
//! are reserved (zero), so a ring memory may access each field as a whole
//! 8-byte word. The write index, the read index and the interrupt mask each have a
//! 64-byte cache line of their own: the index stores of one side never
//! evict the other side's lines, and the mask (read by the producer after
//! every packet, written rarely) stays shared in both caches.
//! | 4096.. | data area, `data_bytes` long | producer |
//!
//! # Invariants
//! - Indices are byte offsets in `[0, data_bytes)`, multiples of 8. Equal
//!   indices mean empty; the producer always leaves 8 bytes free, so a
//!   full ring never looks empty.
//! - Each side keeps its own index privately and only ever *stores* it to
//!   the shared page; the peer's index is loaded, validated (in range,
//!   aligned, not claiming more data than fits) and an invalid value is a
//!   [`RingError`] — the caller closes the channel. No value from shared
//!   memory can make this code panic or access outside the ring.
//! - Ordering: packet bytes are written before the write index is stored
//!   with Release; the consumer loads it with Acquire before reading
//!   them (and symmetrically for the read index and free space). The
//!   signal decisions (interrupt mask against write index, pending-send
//!   size against read index) are Dekker-style: a sequentially consistent
//!   store (or a store and a SeqCst fence), then the load, on both sides,
//!   so a wake-up is never lost.

use core::sync::atomic::{Ordering, fence};

use serde::Serialize;

use super::memory::RingMemory;
use super::packet::{self, HEADER_BYTES, MAX_PAYLOAD, PACKET_ALIGN, Packet, PacketHeader};

/// Bytes of the control page in front of the data area.
pub const CONTROL_BYTES: usize = 4096;
/// Offset of the write index in the control page.
pub const WRITE_INDEX: usize = 0;
/// Offset of the read index.
pub const READ_INDEX: usize = 64;
/// Offset of the interrupt mask.
pub const INTERRUPT_MASK: usize = 128;
/// Offset of the pending-send size.
pub const PENDING_SEND_SIZE: usize = 8;
/// Offset of the feature bits.
pub const FEATURES: usize = 192;
/// Feature bit: the consumer honours the pending-send size.
pub const FEATURE_PENDING_SEND: u32 = 1;
/// Smallest data area (tests use small rings to wrap often).
pub const MIN_DATA_BYTES: usize = 64;
/// Largest data area (indices are `u32`).
pub const MAX_DATA_BYTES: usize = 1 << 30;

/// Why a ring cannot be used any more: the peer broke the protocol (or
/// the memory is unusable). The channel must be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The memory is too small, too large or not a multiple of 8 bytes of data.
    BadLayout,
    /// The peer's write index is outside the data area or unaligned.
    WriteIndexOutOfRange(u32),
    /// The peer's read index is outside the data area or unaligned.
    ReadIndexOutOfRange(u32),
    /// A packet header claims more bytes than the ring holds, or more than
    /// [`MAX_PAYLOAD`] / the receive buffer.
    BadPacketLength(u32),
    /// A payload to send is larger than one packet may be.
    PayloadTooLarge(usize),
}

impl core::fmt::Display for RingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RingError::BadLayout => write!(f, "unusable ring layout"),
            RingError::WriteIndexOutOfRange(v) => write!(f, "write index {v:#x} out of range"),
            RingError::ReadIndexOutOfRange(v) => write!(f, "read index {v:#x} out of range"),
            RingError::BadPacketLength(v) => write!(f, "packet length {v} out of range"),
            RingError::PayloadTooLarge(v) => write!(f, "payload of {v} bytes too large"),
        }
    }
}

/// What [`Producer::send`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// The packet is in the ring; `signal` says whether the consumer must
    /// be signalled (the ring went from empty to non-empty and the
    /// consumer is not polling).
    Written {
        /// Signal the consumer's port.
        signal: bool,
    },
    /// No room: the pending-send size is set, so the consumer signals when
    /// enough space is free. Try again then (or after a while).
    Full,
}

/// What [`Consumer::try_recv`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv<'b> {
    /// The next packet.
    Packet(Packet<'b>),
    /// Nothing to read. `signal_producer` is set when the producer waits
    /// for space (pending-send size) and enough is free now: signal it.
    Empty {
        /// Signal the producer's port.
        signal_producer: bool,
    },
}

fn data_bytes<M: RingMemory>(mem: &M) -> Result<u32, RingError> {
    let data = mem
        .len()
        .checked_sub(CONTROL_BYTES)
        .ok_or(RingError::BadLayout)?;
    if !(MIN_DATA_BYTES..=MAX_DATA_BYTES).contains(&data) || data % PACKET_ALIGN != 0 {
        return Err(RingError::BadLayout);
    }
    Ok(data as u32)
}

fn valid_index(index: u32, size: u32) -> bool {
    index < size && (index as usize).is_multiple_of(PACKET_ALIGN)
}

/// Bytes in use between `read` and `write` (both valid).
fn used(write: u32, read: u32, size: u32) -> u32 {
    if write >= read {
        write - read
    } else {
        size - read + write
    }
}

/// Resets a ring's control page (indices, mask, pending size) and sets its
/// feature bits: done by whoever sets up the ring memory, before either end attaches.
pub fn initialize<M: RingMemory>(mem: &M) -> Result<(), RingError> {
    data_bytes(mem)?;
    for offset in [WRITE_INDEX, READ_INDEX, INTERRUPT_MASK, PENDING_SEND_SIZE] {
        mem.store_u32_release(offset, 0);
    }
    mem.store_u32_release(FEATURES, FEATURE_PENDING_SEND);
    Ok(())
}

/// Copies `data` into the data area at `at`, wrapping at its end.
fn write_wrapped<M: RingMemory>(mem: &M, size: u32, at: u32, data: &[u8]) {
    let first = data.len().min((size - at) as usize);
    mem.write(CONTROL_BYTES + at as usize, &data[..first]);
    if first < data.len() {
        mem.write(CONTROL_BYTES, &data[first..]);
    }
}

/// Copies from the data area at `at` into `buf`, wrapping at its end.
fn read_wrapped<M: RingMemory>(mem: &M, size: u32, at: u32, buf: &mut [u8]) {
    let first = buf.len().min((size - at) as usize);
    let (head, tail) = buf.split_at_mut(first);
    mem.read(CONTROL_BYTES + at as usize, head);
    if !tail.is_empty() {
        mem.read(CONTROL_BYTES, tail);
    }
}

fn advance(index: u32, by: usize, size: u32) -> u32 {
    let next = index as u64 + by as u64;
    (next % u64::from(size)) as u32
}

/// The sending end of a ring.
#[derive(Debug)]
pub struct Producer<M: RingMemory> {
    mem: M,
    size: u32,
    write: u32,
    /// The consumer's read index as last loaded (validated).
    read: u32,
    /// Where the first packet published since the last signal decision starts.
    unflushed: Option<u32>,
}

impl<M: RingMemory> Producer<M> {
    /// Attaches to a ring, taking the indices it holds now (validated).
    pub fn new(mem: M) -> Result<Self, RingError> {
        let size = data_bytes(&mem)?;
        let write = mem.load_u32_acquire(WRITE_INDEX);
        let read = mem.load_u32_acquire(READ_INDEX);
        if !valid_index(write, size) {
            return Err(RingError::WriteIndexOutOfRange(write));
        }
        if !valid_index(read, size) {
            return Err(RingError::ReadIndexOutOfRange(read));
        }
        Ok(Producer {
            mem,
            size,
            write,
            read,
            unflushed: None,
        })
    }

    /// Bytes of the data area.
    pub fn data_bytes(&self) -> usize {
        self.size as usize
    }

    /// The memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    fn load_read(&mut self) -> Result<u32, RingError> {
        let read = self.mem.load_u32_acquire(READ_INDEX);
        if !valid_index(read, self.size) {
            return Err(RingError::ReadIndexOutOfRange(read));
        }
        self.read = read;
        Ok(read)
    }

    fn load_read_seqcst(&mut self) -> Result<u32, RingError> {
        let read = self.mem.load_u32_seqcst(READ_INDEX);
        if !valid_index(read, self.size) {
            return Err(RingError::ReadIndexOutOfRange(read));
        }
        self.read = read;
        Ok(read)
    }

    fn free(&self) -> usize {
        // One 8-byte slot always stays free: equal indices mean empty.
        (self.size - used(self.write, self.read, self.size)) as usize - PACKET_ALIGN
    }

    /// Sends one packet of `kind`/`flags`/`transaction_id` with `payload`
    /// and decides whether to signal ([`Producer::send_deferred`] then
    /// [`Producer::flush`]).
    pub fn send(
        &mut self,
        kind: u16,
        flags: u16,
        transaction_id: u64,
        payload: &[u8],
    ) -> Result<Sent, RingError> {
        match self.send_deferred(kind, flags, transaction_id, payload)? {
            Sent::Full => Ok(Sent::Full),
            Sent::Written { .. } => Ok(Sent::Written {
                signal: self.flush()?,
            }),
        }
    }

    /// Writes and publishes one packet (the consumer may read it at once)
    /// but leaves the signal decision to the next [`Producer::flush`], which
    /// must follow before the producer waits for anything: one barrier per
    /// batch instead of one per packet. Returns `Written { signal: false }`
    /// or `Full`.
    pub fn send_deferred(
        &mut self,
        kind: u16,
        flags: u16,
        transaction_id: u64,
        payload: &[u8],
    ) -> Result<Sent, RingError> {
        let header = PacketHeader::new(kind, flags, payload.len() as u32, transaction_id);
        let total = match header.total_bytes() {
            Some(t) if payload.len() <= MAX_PAYLOAD && t + PACKET_ALIGN <= self.size as usize => t,
            _ => return Err(RingError::PayloadTooLarge(payload.len())),
        };
        if self.free() < total {
            self.load_read()?;
            if self.free() < total {
                // Ask to be woken, then look again (the consumer may have
                // freed space before it could see the request).
                self.mem.store_u32_seqcst(PENDING_SEND_SIZE, total as u32);
                self.load_read_seqcst()?;
                if self.free() < total {
                    return Ok(Sent::Full);
                }
                self.mem.store_u32_release(PENDING_SEND_SIZE, 0);
            }
        }
        let old = self.write;
        write_wrapped(&self.mem, self.size, old, &header.to_wire());
        // The payload in whole 8-byte words: the padding is the packet's own,
        // so the last word is written with zeros instead of merged.
        let at = advance(old, HEADER_BYTES, self.size);
        let whole = payload.len() / PACKET_ALIGN * PACKET_ALIGN;
        write_wrapped(&self.mem, self.size, at, &payload[..whole]);
        if whole < payload.len() {
            let mut last = [0u8; PACKET_ALIGN];
            last[..payload.len() - whole].copy_from_slice(&payload[whole..]);
            write_wrapped(&self.mem, self.size, advance(at, whole, self.size), &last);
        }
        self.write = advance(old, total, self.size);
        self.mem.store_u32_release(WRITE_INDEX, self.write);
        self.unflushed.get_or_insert(old);
        Ok(Sent::Written { signal: false })
    }

    /// The signal decision for every packet published since the last one:
    /// `true` if the consumer must be signalled — it is not polling (mask
    /// clear) and its read index stopped inside those packets, i.e. the
    /// ring went from empty to non-empty while it may be asleep.
    pub fn flush(&mut self) -> Result<bool, RingError> {
        let Some(start) = self.unflushed.take() else {
            return Ok(false);
        };
        // The write index again, as the store half of the Dekker pair (a
        // polling consumer's mask line stays shared: cheap to load).
        self.mem.store_u32_seqcst(WRITE_INDEX, self.write);
        if self.mem.load_u32_seqcst(INTERRUPT_MASK) != 0 {
            return Ok(false);
        }
        let read = self.load_read_seqcst()?;
        let batch = used(self.write, start, self.size);
        let unread = used(self.write, read, self.size);
        Ok(unread != 0 && unread <= batch)
    }

    /// Encodes `message` with postcard (in `scratch`) and sends it as a
    /// [`packet::KIND_MESSAGE`] packet.
    pub fn send_message<T: Serialize>(
        &mut self,
        flags: u16,
        transaction_id: u64,
        message: &T,
        scratch: &mut [u8],
    ) -> Result<Sent, RingError> {
        let room = scratch.len();
        let bytes =
            packet::encode(message, scratch).map_err(|_| RingError::PayloadTooLarge(room))?;
        self.send(packet::KIND_MESSAGE, flags, transaction_id, bytes)
    }
}

/// The receiving end of a ring.
#[derive(Debug)]
pub struct Consumer<M: RingMemory> {
    mem: M,
    size: u32,
    read: u32,
    /// The producer's write index as last loaded (validated).
    write: u32,
    /// The pending-send size was checked since the ring last ran empty.
    pending_checked: bool,
}

impl<M: RingMemory> Consumer<M> {
    /// Attaches to a ring, taking the indices it holds now (validated).
    pub fn new(mem: M) -> Result<Self, RingError> {
        let size = data_bytes(&mem)?;
        let read = mem.load_u32_acquire(READ_INDEX);
        let write = mem.load_u32_acquire(WRITE_INDEX);
        if !valid_index(read, size) {
            return Err(RingError::ReadIndexOutOfRange(read));
        }
        if !valid_index(write, size) {
            return Err(RingError::WriteIndexOutOfRange(write));
        }
        Ok(Consumer {
            mem,
            size,
            read,
            write,
            pending_checked: false,
        })
    }

    /// The memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    fn load_write(&mut self) -> Result<u32, RingError> {
        let write = self.mem.load_u32_acquire(WRITE_INDEX);
        if !valid_index(write, self.size) {
            return Err(RingError::WriteIndexOutOfRange(write));
        }
        self.write = write;
        Ok(write)
    }

    /// Reads the next packet into `buf` (which bounds the payload length
    /// this end accepts). Every length is checked against the ring and `buf`.
    pub fn try_recv<'b>(&mut self, buf: &'b mut [u8]) -> Result<Recv<'b>, RingError> {
        if let Some(signal_producer) = self.poll_empty()? {
            return Ok(Recv::Empty { signal_producer });
        }
        let available = used(self.write, self.read, self.size) as usize;
        let mut wire = [0u8; HEADER_BYTES];
        if available < HEADER_BYTES {
            return Err(RingError::BadPacketLength(available as u32));
        }
        read_wrapped(&self.mem, self.size, self.read, &mut wire);
        let header = PacketHeader::from_wire(&wire);
        let len = header.payload_len.get();
        let total = match header.total_bytes() {
            Some(t) if t <= available && len as usize <= buf.len() => t,
            _ => return Err(RingError::BadPacketLength(len)),
        };
        let payload = &mut buf[..len as usize];
        read_wrapped(
            &self.mem,
            self.size,
            advance(self.read, HEADER_BYTES, self.size),
            payload,
        );
        self.read = advance(self.read, total, self.size);
        self.mem.store_u32_release(READ_INDEX, self.read);
        self.pending_checked = false;
        Ok(Recv::Packet(Packet {
            header,
            payload: &*payload,
        }))
    }

    /// `None` if a packet is waiting; `Some(signal_producer)` if the ring is
    /// empty, where `signal_producer` says the producer waits for space
    /// (pending-send size) and enough is free now: signal it.
    pub fn poll_empty(&mut self) -> Result<Option<bool>, RingError> {
        if self.write != self.read || self.load_write()? != self.read {
            return Ok(None);
        }
        let mut signal_producer = false;
        if !self.pending_checked {
            self.pending_checked = true;
            fence(Ordering::SeqCst);
            let pending = self.mem.load_u32_acquire(PENDING_SEND_SIZE) as usize;
            // The ring is empty: everything but the one reserved slot is free.
            if pending != 0 && pending <= self.size as usize - PACKET_ALIGN {
                self.mem.store_u32_release(PENDING_SEND_SIZE, 0);
                signal_producer = true;
            }
        }
        Ok(Some(signal_producer))
    }

    /// Tells the producer not to signal: the consumer is polling.
    pub fn mask_interrupts(&mut self) {
        self.mem.store_u32_release(INTERRUPT_MASK, 1);
    }

    /// Asks for a signal on the next packet and checks the ring once more:
    /// `Ok(true)` if it is still empty (safe to sleep until signalled),
    /// `Ok(false)` if a packet arrived meanwhile (drain again).
    pub fn unmask_interrupts(&mut self) -> Result<bool, RingError> {
        self.mem.store_u32_seqcst(INTERRUPT_MASK, 0);
        let write = self.mem.load_u32_seqcst(WRITE_INDEX);
        if !valid_index(write, self.size) {
            return Err(RingError::WriteIndexOutOfRange(write));
        }
        self.write = write;
        Ok(write == self.read)
    }
}

#[cfg(test)]
#[path = "ring_tests.rs"]
mod tests;
