//! The storage client: the child's end of the synthetic storage
//! controller (`ipc::vmbus::storage`, `docs/devices/storage.md`).
//! Requests go out tagged (the packet's transaction id), completions come
//! back in any order; data moves through the buffer region the child
//! granted once, at offsets the caller chooses (several outstanding
//! requests may use different slots of it).
//!
//! # Invariants
//! - At most [`MAX_OUTSTANDING`] requests are in flight; a completion
//!   whose tag is not in flight is the root breaking the protocol
//!   ([`StorageClientError::BadMessage`]).
//! - A completion received while a blocking helper waits for another tag
//!   is kept in its request's slot until [`StorageClient::poll`] returns
//!   it, and hot-plug notices in a per-LUN table: nothing is dropped, and
//!   nothing needs allocation.
//! - Every wait is the caller's closure, called at most `patience` times.
//! - The blocking helpers use the region from offset 0; do not mix them
//!   with outstanding [`StorageClient::submit`] requests that use the
//!   region.

use ipc::vmbus::memory::RingMemory;
use ipc::vmbus::packet::{self, KIND_MESSAGE};
use ipc::vmbus::ring::{Consumer, Producer, Recv, RingError, Sent};
use ipc::vmbus::storage::{
    Completion, Detail, GrantStatus, GuestMessage, HostMessage, Inquiry, MAX_LUNS, MAX_MESSAGE,
    MAX_TRANSFER, Op, PAGE_BYTES, Request, SECTOR_BYTES, Status,
};

/// Requests in flight at most.
pub const MAX_OUTSTANDING: usize = 64;

/// Why a storage operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageClientError {
    /// The ring broke (the channel is unusable).
    Ring(RingError),
    /// The root sent something that is not a valid answer.
    BadMessage,
    /// The ring to the root is full: try again after polling.
    Full,
    /// [`MAX_OUTSTANDING`] requests are in flight.
    Busy,
    /// No answer (or no room) within the caller's patience.
    Timeout,
    /// The request completed with an error status.
    Status(Status),
    /// The root refused the buffer grant.
    Refused(GrantStatus),
    /// A length that is not whole sectors, or data outside the region.
    BadLength,
}

/// What [`StorageClient::poll`] delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageEvent {
    /// The request `tag` completed.
    Completed {
        /// The tag [`StorageClient::submit`] returned.
        tag: u64,
        /// The answer.
        completion: Completion,
    },
    /// A LUN appeared (or changed capacity).
    LunAdded {
        /// The LUN.
        lun: u8,
        /// Its capacity in sectors.
        sectors: u64,
    },
    /// A LUN disappeared.
    LunRemoved {
        /// The LUN.
        lun: u8,
    },
    /// The answer to the buffer grant.
    BufferGranted(GrantStatus),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Free,
    InFlight(u64),
    Done(u64, Completion),
}

/// The child's end of an open storage channel.
#[derive(Debug)]
pub struct StorageClient<M: RingMemory> {
    tx: Producer<M>,
    rx: Consumer<M>,
    buffer: M,
    buffer_gpa: u64,
    pages: u32,
    /// The answer to the grant, not yet delivered.
    granted: Option<GrantStatus>,
    slots: [Slot; MAX_OUTSTANDING],
    /// Hot-plug notices not yet delivered: `Some(Some(sectors))` added,
    /// `Some(None)` removed.
    notices: [Option<Option<u64>>; MAX_LUNS],
    sequence: u64,
    signals: u64,
}

impl<M: RingMemory> StorageClient<M> {
    /// A client over the channel's outbound (`tx`) and inbound (`rx`)
    /// rings and the buffer region `buffer` (the child's pages `[buffer_gpa,
    /// buffer_gpa + pages * 4096)`); grant it with [`StorageClient::grant`]
    /// before moving data.
    pub fn new(tx: Producer<M>, rx: Consumer<M>, buffer: M, buffer_gpa: u64, pages: u32) -> Self {
        StorageClient {
            tx,
            rx,
            buffer,
            buffer_gpa,
            pages,
            granted: None,
            slots: [Slot::Free; MAX_OUTSTANDING],
            notices: [None; MAX_LUNS],
            sequence: 0,
            signals: 0,
        }
    }

    /// Bytes of the buffer region.
    pub fn region_len(&self) -> u64 {
        (self.buffer.len() as u64).min(u64::from(self.pages) * PAGE_BYTES)
    }

    /// Turns the root's signals for this channel off (`true`) or on: a
    /// child that polls for its completions needs no interrupt for them,
    /// and each one costs both sides a trip through the microkernel. With
    /// signals off, only polling ([`StorageClient::poll`] and the blocking
    /// helpers) sees what the root sent.
    pub fn set_polling(&mut self, polling: bool) -> Result<(), StorageClientError> {
        if polling {
            self.rx.mask_interrupts();
        } else {
            self.rx
                .unmask_interrupts()
                .map_err(StorageClientError::Ring)?;
        }
        Ok(())
    }

    /// Requests submitted so far.
    pub fn requests(&self) -> u64 {
        self.sequence
    }

    /// Signals sent to the root.
    pub fn signals(&self) -> u64 {
        self.signals
    }

    /// Requests in flight (submitted, completion not yet delivered).
    pub fn outstanding(&self) -> usize {
        self.slots.iter().filter(|s| **s != Slot::Free).count()
    }

    /// Copies `data` into the region at `offset`.
    pub fn buffer_write(&self, offset: u64, data: &[u8]) -> Result<(), StorageClientError> {
        self.region_check(offset, data.len())?;
        self.buffer.write(offset as usize, data);
        Ok(())
    }

    /// Copies from the region at `offset` into `out`.
    pub fn buffer_read(&self, offset: u64, out: &mut [u8]) -> Result<(), StorageClientError> {
        self.region_check(offset, out.len())?;
        self.buffer.read(offset as usize, out);
        Ok(())
    }

    fn region_check(&self, offset: u64, len: usize) -> Result<(), StorageClientError> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.region_len() => Ok(()),
            _ => Err(StorageClientError::BadLength),
        }
    }

    fn send(
        &mut self,
        tid: u64,
        message: &GuestMessage,
        signal: &mut impl FnMut(),
    ) -> Result<(), StorageClientError> {
        let mut scratch = [0u8; 2 * MAX_MESSAGE];
        let bytes =
            packet::encode(message, &mut scratch).map_err(|_| StorageClientError::BadLength)?;
        match self
            .tx
            .send(KIND_MESSAGE, 0, tid, bytes)
            .map_err(StorageClientError::Ring)?
        {
            Sent::Written { signal: s } => {
                if s {
                    self.signals += 1;
                    signal();
                }
                Ok(())
            }
            Sent::Full => Err(StorageClientError::Full),
        }
    }

    /// Sends `request` without waiting; returns its tag. `Full` if the
    /// ring has no room now, `Busy` if [`MAX_OUTSTANDING`] are in flight.
    pub fn submit(
        &mut self,
        request: Request,
        mut signal: impl FnMut(),
    ) -> Result<u64, StorageClientError> {
        let slot = self
            .slots
            .iter()
            .position(|s| *s == Slot::Free)
            .ok_or(StorageClientError::Busy)?;
        // Tags are never 0 (notices and the grant use 0) and carry their slot.
        let tag = ((self.sequence + 1) << 6) | slot as u64;
        self.send(tag, &GuestMessage::Request(request), &mut signal)?;
        self.sequence += 1;
        self.slots[slot] = Slot::InFlight(tag);
        Ok(tag)
    }

    /// Reads one packet from the root, if any, and files it.
    fn receive(&mut self, signal: &mut impl FnMut()) -> Result<bool, StorageClientError> {
        let mut buf = [0u8; 2 * MAX_MESSAGE];
        let (tid, message) = match self
            .rx
            .try_recv(&mut buf)
            .map_err(StorageClientError::Ring)?
        {
            Recv::Packet(p) => (
                p.header.transaction_id.get(),
                packet::decode::<HostMessage>(&p).map_err(|_| StorageClientError::BadMessage)?,
            ),
            Recv::Empty { signal_producer } => {
                if signal_producer {
                    self.signals += 1;
                    signal();
                }
                return Ok(false);
            }
        };
        match message {
            HostMessage::Completion(completion) => {
                let slot = self
                    .slots
                    .get_mut((tid & (MAX_OUTSTANDING as u64 - 1)) as usize)
                    .filter(|s| **s == Slot::InFlight(tid))
                    .ok_or(StorageClientError::BadMessage)?;
                *slot = Slot::Done(tid, completion);
            }
            HostMessage::BufferGranted { status } => self.granted = Some(status),
            HostMessage::LunAdded { lun, sectors } => {
                *self
                    .notices
                    .get_mut(usize::from(lun))
                    .ok_or(StorageClientError::BadMessage)? = Some(Some(sectors));
            }
            HostMessage::LunRemoved { lun } => {
                *self
                    .notices
                    .get_mut(usize::from(lun))
                    .ok_or(StorageClientError::BadMessage)? = Some(None);
            }
        }
        Ok(true)
    }

    /// The next event, if any: a completion (any order), a hot-plug
    /// notice, or the grant's answer. `signal` is called if the root waits
    /// for room to send more.
    pub fn poll(
        &mut self,
        mut signal: impl FnMut(),
    ) -> Result<Option<StorageEvent>, StorageClientError> {
        loop {
            if let Some(event) = self.take_filed() {
                return Ok(Some(event));
            }
            if !self.receive(&mut signal)? {
                return Ok(None);
            }
        }
    }

    fn take_filed(&mut self) -> Option<StorageEvent> {
        if let Some(status) = self.granted.take() {
            return Some(StorageEvent::BufferGranted(status));
        }
        for (lun, notice) in self.notices.iter_mut().enumerate() {
            if let Some(n) = notice.take() {
                let lun = lun as u8;
                return Some(match n {
                    Some(sectors) => StorageEvent::LunAdded { lun, sectors },
                    None => StorageEvent::LunRemoved { lun },
                });
            }
        }
        for slot in &mut self.slots {
            if let Slot::Done(tag, completion) = *slot {
                *slot = Slot::Free;
                return Some(StorageEvent::Completed { tag, completion });
            }
        }
        None
    }

    /// Waits for the completion of `tag`, filing everything else.
    fn wait_for(
        &mut self,
        tag: u64,
        signal: &mut impl FnMut(),
        wait: &mut impl FnMut(),
        patience: &mut u64,
    ) -> Result<Completion, StorageClientError> {
        let index = (tag & (MAX_OUTSTANDING as u64 - 1)) as usize;
        loop {
            if let Some(Slot::Done(t, completion)) = self.slots.get(index).copied()
                && t == tag
            {
                self.slots[index] = Slot::Free;
                return Ok(completion);
            }
            if !self.receive(signal)? {
                *patience = patience.checked_sub(1).ok_or(StorageClientError::Timeout)?;
                wait();
            }
        }
    }

    /// Grants the buffer region and waits for the answer.
    pub fn grant(
        &mut self,
        mut signal: impl FnMut(),
        mut wait: impl FnMut(),
        mut patience: u64,
    ) -> Result<(), StorageClientError> {
        let message = GuestMessage::GrantBuffer {
            gpa: self.buffer_gpa,
            pages: self.pages,
        };
        loop {
            match self.send(0, &message, &mut signal) {
                Err(StorageClientError::Full) => {
                    patience = patience.checked_sub(1).ok_or(StorageClientError::Timeout)?;
                    wait();
                }
                other => break other?,
            }
        }
        self.granted = None;
        loop {
            if let Some(status) = self.granted.take() {
                return match status {
                    GrantStatus::Granted => Ok(()),
                    refused => Err(StorageClientError::Refused(refused)),
                };
            }
            if !self.receive(&mut signal)? {
                patience = patience.checked_sub(1).ok_or(StorageClientError::Timeout)?;
                wait();
            }
        }
    }

    /// Sends `request` (waiting for room) and waits for its completion; an
    /// error status is [`StorageClientError::Status`].
    pub fn request(
        &mut self,
        request: Request,
        mut signal: impl FnMut(),
        mut wait: impl FnMut(),
        mut patience: u64,
    ) -> Result<Completion, StorageClientError> {
        let tag = loop {
            match self.submit(request, &mut signal) {
                Err(StorageClientError::Full) => {
                    patience = patience.checked_sub(1).ok_or(StorageClientError::Timeout)?;
                    // Completions may be what the root waits to send.
                    self.receive(&mut signal)?;
                    wait();
                }
                other => break other?,
            }
        };
        let completion = self.wait_for(tag, &mut signal, &mut wait, &mut patience)?;
        match completion.status {
            Status::Ok => Ok(completion),
            error => Err(StorageClientError::Status(error)),
        }
    }

    /// Largest chunk a blocking transfer moves per request (bytes, whole sectors).
    fn chunk_bytes(&self) -> usize {
        let chunk = self.region_len().min(u64::from(MAX_TRANSFER)) as usize;
        chunk / SECTOR_BYTES as usize * SECTOR_BYTES as usize
    }

    fn transfer_request(lun: u8, op: Op, lba: u64, bytes: usize) -> Request {
        Request {
            lun,
            op,
            lba,
            sectors: (bytes / SECTOR_BYTES as usize) as u32,
            buffer_offset: 0,
        }
    }

    /// Reads `out.len()` bytes (whole sectors) of `lun` from `lba`, through
    /// the region from offset 0, in chunks of at most [`MAX_TRANSFER`].
    pub fn read(
        &mut self,
        lun: u8,
        lba: u64,
        out: &mut [u8],
        mut signal: impl FnMut(),
        mut wait: impl FnMut(),
        patience: u64,
    ) -> Result<(), StorageClientError> {
        let chunk = self.chunk_bytes();
        if !out.len().is_multiple_of(SECTOR_BYTES as usize) || chunk == 0 {
            return Err(StorageClientError::BadLength);
        }
        let mut lba = lba;
        for piece in out.chunks_mut(chunk) {
            let request = Self::transfer_request(lun, Op::Read, lba, piece.len());
            self.request(request, &mut signal, &mut wait, patience)?;
            self.buffer.read(0, piece);
            lba += u64::from(request.sectors);
        }
        Ok(())
    }

    /// Writes `data` (whole sectors) to `lun` at `lba`, through the region
    /// from offset 0, in chunks of at most [`MAX_TRANSFER`].
    pub fn write(
        &mut self,
        lun: u8,
        lba: u64,
        data: &[u8],
        mut signal: impl FnMut(),
        mut wait: impl FnMut(),
        patience: u64,
    ) -> Result<(), StorageClientError> {
        let chunk = self.chunk_bytes();
        if !data.len().is_multiple_of(SECTOR_BYTES as usize) || chunk == 0 {
            return Err(StorageClientError::BadLength);
        }
        let mut lba = lba;
        for piece in data.chunks(chunk) {
            self.buffer.write(0, piece);
            let request = Self::transfer_request(lun, Op::Write, lba, piece.len());
            self.request(request, &mut signal, &mut wait, patience)?;
            lba += u64::from(request.sectors);
        }
        Ok(())
    }

    fn simple(
        &mut self,
        lun: u8,
        op: Op,
        signal: impl FnMut(),
        wait: impl FnMut(),
        patience: u64,
    ) -> Result<Detail, StorageClientError> {
        let request = Request {
            lun,
            op,
            lba: 0,
            sectors: 0,
            buffer_offset: 0,
        };
        Ok(self.request(request, signal, wait, patience)?.detail)
    }

    /// Makes the completed writes of `lun` durable.
    pub fn flush(
        &mut self,
        lun: u8,
        signal: impl FnMut(),
        wait: impl FnMut(),
        patience: u64,
    ) -> Result<(), StorageClientError> {
        self.simple(lun, Op::Flush, signal, wait, patience)
            .map(|_| ())
    }

    /// Capacity of `lun` in sectors.
    pub fn capacity(
        &mut self,
        lun: u8,
        signal: impl FnMut(),
        wait: impl FnMut(),
        patience: u64,
    ) -> Result<u64, StorageClientError> {
        match self.simple(lun, Op::Capacity, signal, wait, patience)? {
            Detail::Capacity { sectors } => Ok(sectors),
            _ => Err(StorageClientError::BadMessage),
        }
    }

    /// Describes `lun`.
    pub fn inquiry(
        &mut self,
        lun: u8,
        signal: impl FnMut(),
        wait: impl FnMut(),
        patience: u64,
    ) -> Result<Inquiry, StorageClientError> {
        match self.simple(lun, Op::Inquiry, signal, wait, patience)? {
            Detail::Inquiry(inquiry) => Ok(inquiry),
            _ => Err(StorageClientError::BadMessage),
        }
    }

    /// The LUNs present: bit `n` = LUN `n`.
    pub fn report_luns(
        &mut self,
        signal: impl FnMut(),
        wait: impl FnMut(),
        patience: u64,
    ) -> Result<u64, StorageClientError> {
        match self.simple(0, Op::ReportLuns, signal, wait, patience)? {
            Detail::Luns { present } => Ok(present),
            _ => Err(StorageClientError::BadMessage),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::sync::atomic::AtomicU64;
    use ipc::vmbus::memory::AtomicRingMemory;
    use ipc::vmbus::ring::{CONTROL_BYTES, initialize};
    use std::vec::Vec;

    fn request(lun: u8) -> Request {
        Request {
            lun,
            op: Op::Capacity,
            lba: 0,
            sectors: 0,
            buffer_offset: 0,
        }
    }

    #[test]
    fn tags_slots_and_the_roots_mistakes() {
        let ring = CONTROL_BYTES + 16 * 4096;
        let words: Vec<AtomicU64> = (0..(2 * ring + 8192) / 8)
            .map(|_| AtomicU64::new(0))
            .collect();
        let (a, rest) = AtomicRingMemory::new(&words).split_at(ring);
        let (b, region) = rest.split_at(ring);
        initialize(&a).unwrap();
        initialize(&b).unwrap();
        let mut client = StorageClient::new(
            Producer::new(a).unwrap(),
            Consumer::new(b).unwrap(),
            region,
            0x10_0000,
            2,
        );
        assert_eq!(client.region_len(), 8192);
        assert_eq!(
            client.buffer_write(8192 - 3, &[1; 4]),
            Err(StorageClientError::BadLength)
        );
        assert_eq!(
            client.buffer_write(u64::MAX, &[1]),
            Err(StorageClientError::BadLength)
        );
        assert_eq!(
            client.read(0, 0, &mut [0; 100], || {}, || {}, 0),
            Err(StorageClientError::BadLength)
        );
        let tags: Vec<u64> = (0..MAX_OUTSTANDING)
            .map(|_| client.submit(request(0), || {}).unwrap())
            .collect();
        assert!(tags.iter().all(|&t| t != 0));
        assert_eq!(
            client.submit(request(0), || {}),
            Err(StorageClientError::Busy)
        );
        // The root answers tag 5's request, then one nobody asked for.
        let mut root = Producer::new(b).unwrap();
        let mut scratch = [0u8; 64];
        let done = HostMessage::Completion(Completion::error(Status::NoSuchLun));
        root.send_message(0, tags[5], &done, &mut scratch).unwrap();
        assert_eq!(
            client.poll(|| {}),
            Ok(Some(StorageEvent::Completed {
                tag: tags[5],
                completion: Completion::error(Status::NoSuchLun)
            }))
        );
        assert_eq!(client.outstanding(), MAX_OUTSTANDING - 1);
        // The same tag again: no longer in flight.
        root.send_message(0, tags[5], &done, &mut scratch).unwrap();
        assert_eq!(client.poll(|| {}), Err(StorageClientError::BadMessage));
        root.send_message(0, 0, &HostMessage::LunRemoved { lun: 64 }, &mut scratch)
            .unwrap();
        assert_eq!(client.poll(|| {}), Err(StorageClientError::BadMessage));
        // A freed slot gets a new, different tag.
        let again = client.submit(request(1), || {}).unwrap();
        assert_ne!(again, tags[5]);
        assert_eq!(
            again % MAX_OUTSTANDING as u64,
            tags[5] % MAX_OUTSTANDING as u64
        );
        // Nothing from the root: a blocking call gives up after its patience.
        let mut waits = 0;
        let mut full = StorageClient::new(
            Producer::new(a).unwrap(),
            Consumer::new(b).unwrap(),
            region,
            0,
            2,
        );
        assert_eq!(
            full.capacity(0, || {}, || waits += 1, 7),
            Err(StorageClientError::Timeout)
        );
        assert_eq!(waits, 7);
    }
}
