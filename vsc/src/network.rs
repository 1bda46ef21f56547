//! The network client: the child's end of the synthetic NIC
//! (`ipc::vmbus::network`, `docs/devices/network.md`). The child grants
//! one region once, split into a send area and a receive area; after
//! `Init` both are cut into slots of `mtu + 14` bytes (rounded up to 64):
//! a frame to send is copied into a free send slot and goes out as a
//! `Send` (several per signal: the ring signals only when it was empty),
//! and every receive slot is posted to the root, comes back as a
//! `Receive`, is read by the caller and posted again.
//!
//! On top of this a `smoltcp::phy::Device` needs no more than
//! [`NetworkClient::send`] (transmit token: build the frame in a buffer of
//! [`NetworkClient::max_frame`] bytes, then send it) and
//! [`NetworkClient::receive_frame`] (receive token: the frame copied out,
//! its buffer posted again).
//!
//! # Invariants
//! - At most [`MAX_SEND_SLOTS`] sends are in flight, one per send slot; a
//!   `SendComplete` whose tag is not in flight is the root breaking the
//!   protocol ([`NetworkClientError::BadMessage`]), and so is a `Receive`
//!   for a buffer that is not posted, at another offset, or longer than it.
//! - A send slot is written only while free; the root reads it until its
//!   `SendComplete`. A receive slot is read only after its `Receive`.
//! - Every wait is the caller's closure, called at most `patience` times.

use ipc::vmbus::memory::RingMemory;
use ipc::vmbus::network::{
    Batch, BufferEntry, FrameEntry, GrantStatus, GuestMessage, HEADER_BYTES, HostMessage,
    MAX_BATCH, MAX_BATCH_MESSAGE, MAX_POSTED, Mac, PAGE_BYTES, PROTOCOL_VERSION, SEND_FLAGS,
    Status, VERSION_BATCH, VERSION_SINGLE, check_frame_len,
};
use ipc::vmbus::packet::{self, KIND_MESSAGE};
use ipc::vmbus::ring::{Consumer, Producer, Recv, RingError, Sent};

/// Send slots at most (sends in flight).
pub const MAX_SEND_SLOTS: usize = 64;
/// Receive slots at most (the root holds at most this many).
pub const MAX_RECEIVE_SLOTS: usize = MAX_POSTED;
/// Slots are multiples of this many bytes.
pub const SLOT_ALIGN: u32 = 64;
/// Transaction ids of `PostReceive`s: this bit and the slot index.
const RECEIVE_TAG: u64 = 1 << 32;

/// Why a network operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkClientError {
    /// The ring broke (the channel is unusable).
    Ring(RingError),
    /// The root sent something that is not a valid answer.
    BadMessage,
    /// The ring to the root is full: try again after polling.
    Full,
    /// Every send slot is in flight: poll for completions.
    Busy,
    /// No answer (or no room) within the caller's patience.
    Timeout,
    /// The root refused the buffer grant.
    Refused(GrantStatus),
    /// `Init` failed with this status.
    Status(Status),
    /// Not granted or not initialised yet, or the region holds no slot.
    NotReady,
    /// A frame shorter than a header or longer than the MTU allows, or
    /// an offset that is not a receive slot.
    BadLength,
}

/// What [`NetworkClient::poll`] delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkEvent {
    /// The send `tag` completed; its slot is free again.
    SendComplete {
        /// The tag [`NetworkClient::send`] returned.
        tag: u64,
        /// The outcome.
        status: Status,
    },
    /// A frame of `len` bytes arrived at `offset` of the receive area:
    /// read it ([`NetworkClient::read_frame`]), then post the buffer
    /// again ([`NetworkClient::repost`]).
    Received {
        /// Offset of the receive slot.
        offset: u32,
        /// Frame bytes.
        len: u32,
        /// Flag bits (`ipc::vmbus::network::KNOWN_FLAGS`).
        flags: u8,
    },
    /// A posted buffer came back unused (the root refused it).
    Returned {
        /// Offset of the receive slot.
        offset: u32,
        /// Why.
        status: Status,
    },
    /// The link went up or down.
    Link {
        /// Carrier.
        up: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Receive {
    /// Not posted (yet, or after a refusal).
    Idle,
    Posted,
    /// Filled by the root; the caller reads and reposts it.
    Filled,
}

/// Counters of the client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkClientStats {
    /// Frames sent (`Send`s written to the ring).
    pub sent: u64,
    /// Sends completed with an error status.
    pub send_errors: u64,
    /// Frames received.
    pub received: u64,
    /// Signals sent to the root.
    pub signals: u64,
}

/// The child's end of an open network channel.
#[derive(Debug)]
pub struct NetworkClient<M: RingMemory> {
    tx: Producer<M>,
    rx: Consumer<M>,
    region: M,
    region_gpa: u64,
    pages: u32,
    send_pages: u32,
    /// The answer to the grant, not yet taken.
    granted: Option<GrantStatus>,
    /// The answer to `Init`, not yet taken.
    init_done: Option<(Status, u16, Mac)>,
    /// A link change not yet delivered.
    link_event: Option<bool>,
    link_up: bool,
    mtu: u16,
    mac: Option<Mac>,
    slot_bytes: u32,
    send_slots: [Option<u64>; MAX_SEND_SLOTS],
    send_count: usize,
    receive_slots: [Receive; MAX_RECEIVE_SLOTS],
    receive_count: usize,
    sequence: u64,
    stats: NetworkClientStats,
    /// The protocol version the root answered (`VERSION_SINGLE` until
    /// [`NetworkClient::negotiate`]).
    version: u16,
    negotiated: Option<u16>,
    /// Per send slot: the transaction id of the message that sent it (its
    /// batch's, or its own tag), and its index in that batch.
    send_batch: [(u64, u8); MAX_SEND_SLOTS],
    /// Sends queued but not yet in a message ([`NetworkClient::flush_sends`]).
    tx_batch: Batch<FrameEntry>,
    tx_batch_tid: u64,
    /// Per receive slot: the transaction id of the message that posted it.
    post_tid: [u64; MAX_RECEIVE_SLOTS],
    /// Events of a batch message not yet handed out.
    queued: [Option<NetworkEvent>; MAX_BATCH],
    queued_head: usize,
    queued_len: usize,
}

impl<M: RingMemory> NetworkClient<M> {
    /// A client over the channel's outbound (`tx`) and inbound (`rx`)
    /// rings and the region `region` (the child's pages `[region_gpa,
    /// region_gpa + pages * 4096)`, the first `send_pages` the send area).
    /// Then [`NetworkClient::start`] (or grant, init, post one by one).
    pub fn new(
        tx: Producer<M>,
        rx: Consumer<M>,
        region: M,
        region_gpa: u64,
        pages: u32,
        send_pages: u32,
    ) -> Self {
        NetworkClient {
            tx,
            rx,
            region,
            region_gpa,
            pages,
            send_pages,
            granted: None,
            init_done: None,
            link_event: None,
            link_up: false,
            mtu: 0,
            mac: None,
            slot_bytes: 0,
            send_slots: [None; MAX_SEND_SLOTS],
            send_count: 0,
            receive_slots: [Receive::Idle; MAX_RECEIVE_SLOTS],
            receive_count: 0,
            sequence: 0,
            stats: NetworkClientStats::default(),
            version: VERSION_SINGLE,
            negotiated: None,
            send_batch: [(0, 0); MAX_SEND_SLOTS],
            tx_batch: Batch::new(),
            tx_batch_tid: 0,
            post_tid: [0; MAX_RECEIVE_SLOTS],
            queued: [None; MAX_BATCH],
            queued_head: 0,
            queued_len: 0,
        }
    }

    /// The negotiated MTU (0 before `Init`).
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// The MAC the root assigned (`None` before `Init`).
    pub fn mac(&self) -> Option<Mac> {
        self.mac
    }

    /// The largest frame this client sends or receives (`mtu + 14`).
    pub fn max_frame(&self) -> usize {
        usize::from(self.mtu) + HEADER_BYTES as usize
    }

    /// Whether the link is up (as last reported).
    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// Counters.
    pub fn stats(&self) -> NetworkClientStats {
        self.stats
    }

    /// Send slots and receive slots (0 before `Init`).
    pub fn slots(&self) -> (usize, usize) {
        (self.send_count, self.receive_count)
    }

    /// Sends in flight.
    pub fn in_flight(&self) -> usize {
        self.send_slots.iter().flatten().count()
    }

    /// Receive buffers posted to the root.
    pub fn posted(&self) -> usize {
        self.receive_slots
            .iter()
            .filter(|s| **s == Receive::Posted)
            .count()
    }

    /// Turns the root's signals for this channel off (`true`) or on, like
    /// the storage client's.
    pub fn set_polling(&mut self, polling: bool) -> Result<(), NetworkClientError> {
        if polling {
            self.rx.mask_interrupts();
        } else {
            self.rx
                .unmask_interrupts()
                .map_err(NetworkClientError::Ring)?;
        }
        Ok(())
    }

    /// Asks for the root's signal on its next packet (clears the mask
    /// [`NetworkClient::set_polling`] set) and looks once more: `Ok(true)`
    /// if nothing waits (safe to sleep until signalled), `Ok(false)` if a
    /// packet arrived meanwhile (poll again instead). A child that polls
    /// while busy and arms the signal only before it sleeps costs the root
    /// no signal while frames flow.
    pub fn arm_signal(&mut self) -> Result<bool, NetworkClientError> {
        self.rx
            .unmask_interrupts()
            .map_err(NetworkClientError::Ring)
    }

    fn send_area(&self) -> u64 {
        u64::from(self.send_pages) * PAGE_BYTES
    }

    fn receive_start(&self) -> u64 {
        self.send_area()
    }

    fn send_message(
        &mut self,
        tid: u64,
        message: &GuestMessage,
        signal: &mut impl FnMut(),
    ) -> Result<(), NetworkClientError> {
        let mut scratch = [0u8; MAX_BATCH_MESSAGE + 64];
        let bytes =
            packet::encode(message, &mut scratch).map_err(|_| NetworkClientError::BadLength)?;
        match self
            .tx
            .send(KIND_MESSAGE, 0, tid, bytes)
            .map_err(NetworkClientError::Ring)?
        {
            Sent::Written { signal: s } => {
                if s {
                    self.stats.signals += 1;
                    signal();
                }
                Ok(())
            }
            Sent::Full => Err(NetworkClientError::Full),
        }
    }

    /// Sends `message`, waiting (within `patience`) for room.
    fn send_waiting(
        &mut self,
        tid: u64,
        message: &GuestMessage,
        signal: &mut impl FnMut(),
        wait: &mut impl FnMut(),
        patience: &mut u64,
    ) -> Result<(), NetworkClientError> {
        loop {
            match self.send_message(tid, message, signal) {
                Err(NetworkClientError::Full) => {
                    *patience = patience.checked_sub(1).ok_or(NetworkClientError::Timeout)?;
                    wait();
                }
                other => return other,
            }
        }
    }

    /// Reads one packet from the root, if any: files grant and `Init`
    /// answers and link changes, returns every other event.
    fn receive(
        &mut self,
        signal: &mut impl FnMut(),
    ) -> Result<Option<Option<NetworkEvent>>, NetworkClientError> {
        let mut buf = [0u8; MAX_BATCH_MESSAGE + 64];
        let (tid, message) = match self
            .rx
            .try_recv(&mut buf)
            .map_err(NetworkClientError::Ring)?
        {
            Recv::Packet(p) => (
                p.header.transaction_id.get(),
                packet::decode::<HostMessage>(&p).map_err(|_| NetworkClientError::BadMessage)?,
            ),
            Recv::Empty { signal_producer } => {
                if signal_producer {
                    self.stats.signals += 1;
                    signal();
                }
                return Ok(None);
            }
        };
        let event = match message {
            HostMessage::BuffersGranted { status } => {
                self.granted = Some(status);
                None
            }
            HostMessage::InitDone { status, mtu, mac } => {
                self.init_done = Some((status, mtu, mac));
                None
            }
            HostMessage::LinkState { up } => {
                self.link_up = up;
                self.link_event = Some(up);
                None
            }
            HostMessage::Negotiated { version } => {
                self.negotiated = Some(version);
                None
            }
            HostMessage::SendComplete { status } => {
                // One send, or every send of a batch refused as a whole.
                let mut first = None;
                for slot in 0..MAX_SEND_SLOTS {
                    let Some(tag) = self.send_slots[slot] else {
                        continue;
                    };
                    if self.send_batch[slot].0 != tid || self.queued_slot(slot) {
                        continue;
                    }
                    self.send_slots[slot] = None;
                    if status != Status::Ok {
                        self.stats.send_errors += 1;
                    }
                    let event = NetworkEvent::SendComplete { tag, status };
                    if first.is_none() {
                        first = Some(event);
                    } else {
                        self.queue(event);
                    }
                }
                Some(first.ok_or(NetworkClientError::BadMessage)?)
            }
            HostMessage::SendCompleteBatch { statuses } => {
                let n = statuses.len();
                let mut seen = 0u64;
                for slot in 0..MAX_SEND_SLOTS {
                    if self.send_slots[slot].is_some()
                        && self.send_batch[slot].0 == tid
                        && !self.queued_slot(slot)
                    {
                        let index = usize::from(self.send_batch[slot].1);
                        if index >= n || seen & (1 << index) != 0 {
                            return Err(NetworkClientError::BadMessage);
                        }
                        seen |= 1 << index;
                    }
                }
                if n == 0 || seen.count_ones() as usize != n {
                    return Err(NetworkClientError::BadMessage);
                }
                let mut events = [None; MAX_BATCH];
                for slot in 0..MAX_SEND_SLOTS {
                    if let Some(tag) = self.send_slots[slot]
                        && self.send_batch[slot].0 == tid
                        && !self.queued_slot(slot)
                    {
                        let index = usize::from(self.send_batch[slot].1);
                        let status = statuses.as_slice()[index];
                        if status != Status::Ok {
                            self.stats.send_errors += 1;
                        }
                        self.send_slots[slot] = None;
                        events[index] = Some(NetworkEvent::SendComplete { tag, status });
                    }
                }
                for event in events.into_iter().flatten() {
                    self.queue(event);
                }
                self.dequeue()
            }
            HostMessage::ReceiveBatch { entries } => {
                if entries.is_empty() {
                    return Err(NetworkClientError::BadMessage);
                }
                for e in entries.as_slice() {
                    let index = self.receive_index(e.offset).ok();
                    let slot = index
                        .and_then(|i| self.receive_slots.get_mut(i))
                        .filter(|s| **s == Receive::Posted)
                        .filter(|_| e.len <= self.slot_bytes)
                        .ok_or(NetworkClientError::BadMessage)?;
                    *slot = Receive::Filled;
                    self.stats.received += 1;
                    self.queue(NetworkEvent::Received {
                        offset: e.offset,
                        len: e.len,
                        flags: e.flags,
                    });
                }
                self.dequeue()
            }
            HostMessage::Receive {
                status,
                offset,
                len,
                flags,
            } => {
                let index = tid
                    .checked_sub(RECEIVE_TAG)
                    .map_or(usize::MAX, |i| i as usize);
                let expected = (index as u64).saturating_mul(u64::from(self.slot_bytes));
                let slot = self
                    .receive_slots
                    .get_mut(index)
                    .filter(|s| **s == Receive::Posted)
                    .filter(|_| {
                        index < self.receive_count
                            && u64::from(offset) == expected
                            && len <= self.slot_bytes
                    })
                    .ok_or(NetworkClientError::BadMessage)?;
                if status == Status::Ok {
                    *slot = Receive::Filled;
                    self.stats.received += 1;
                    Some(NetworkEvent::Received { offset, len, flags })
                } else {
                    // Every buffer of the message that posted it (a
                    // `PostReceiveBatch` is refused as a whole).
                    for i in 0..self.receive_count {
                        if self.receive_slots[i] == Receive::Posted && self.post_tid[i] == tid {
                            self.receive_slots[i] = Receive::Idle;
                        }
                    }
                    Some(NetworkEvent::Returned { offset, status })
                }
            }
        };
        Ok(Some(event))
    }

    /// The next event, if any. `signal` is called if the root waits for
    /// room to send more.
    pub fn poll(
        &mut self,
        mut signal: impl FnMut(),
    ) -> Result<Option<NetworkEvent>, NetworkClientError> {
        match self.flush_sends(&mut signal) {
            Ok(()) | Err(NetworkClientError::Full) => {}
            Err(e) => return Err(e),
        }
        loop {
            if let Some(up) = self.link_event.take() {
                return Ok(Some(NetworkEvent::Link { up }));
            }
            if let Some(event) = self.dequeue() {
                return Ok(Some(event));
            }
            match self.receive(&mut signal)? {
                None => return Ok(None),
                Some(Some(event)) => return Ok(Some(event)),
                Some(None) => {}
            }
        }
    }

    /// Grants the region and waits for the answer (before any send: other
    /// events read meanwhile are not kept).
    pub fn grant(
        &mut self,
        mut signal: impl FnMut(),
        mut wait: impl FnMut(),
        mut patience: u64,
    ) -> Result<(), NetworkClientError> {
        let message = GuestMessage::GrantBuffers {
            gpa: self.region_gpa,
            pages: self.pages,
            send_pages: self.send_pages,
        };
        self.send_waiting(0, &message, &mut signal, &mut wait, &mut patience)?;
        self.granted = None;
        loop {
            if let Some(status) = self.granted.take() {
                return match status {
                    GrantStatus::Granted => Ok(()),
                    refused => Err(NetworkClientError::Refused(refused)),
                };
            }
            if self.receive(&mut signal)?.is_none() {
                patience = patience.checked_sub(1).ok_or(NetworkClientError::Timeout)?;
                wait();
            }
        }
    }

    /// Asks for `mtu` and waits for the answer: the accepted MTU and the
    /// MAC the root assigned. Cuts the areas into slots of the MTU.
    pub fn init(
        &mut self,
        mtu: u16,
        mut signal: impl FnMut(),
        mut wait: impl FnMut(),
        mut patience: u64,
    ) -> Result<(u16, Mac), NetworkClientError> {
        let message = GuestMessage::Init {
            mtu,
            mac: Mac::ZERO,
        };
        self.send_waiting(0, &message, &mut signal, &mut wait, &mut patience)?;
        self.init_done = None;
        let (status, mtu, mac) = loop {
            if let Some(answer) = self.init_done.take() {
                break answer;
            }
            if self.receive(&mut signal)?.is_none() {
                patience = patience.checked_sub(1).ok_or(NetworkClientError::Timeout)?;
                wait();
            }
        };
        if status != Status::Ok {
            return Err(NetworkClientError::Status(status));
        }
        if check_frame_len(HEADER_BYTES, mtu).is_err() || !mac.is_assignable() {
            return Err(NetworkClientError::BadMessage);
        }
        self.mtu = mtu;
        self.mac = Some(mac);
        self.slot_bytes = (u32::from(mtu) + HEADER_BYTES).next_multiple_of(SLOT_ALIGN);
        let slot = u64::from(self.slot_bytes);
        let receive = (u64::from(self.pages.saturating_sub(self.send_pages)) * PAGE_BYTES)
            .min(self.region.len() as u64 - self.receive_start().min(self.region.len() as u64));
        self.send_count = ((self.send_area() / slot) as usize).min(MAX_SEND_SLOTS);
        self.receive_count = ((receive / slot) as usize).min(MAX_RECEIVE_SLOTS);
        Ok((mtu, mac))
    }

    /// Grants the region, negotiates `mtu` and posts every receive slot:
    /// ready to send and receive. Returns the MTU and MAC.
    pub fn start(
        &mut self,
        mtu: u16,
        mut signal: impl FnMut(),
        mut wait: impl FnMut(),
        patience: u64,
    ) -> Result<(u16, Mac), NetworkClientError> {
        self.grant(&mut signal, &mut wait, patience)?;
        let answer = self.init(mtu, &mut signal, &mut wait, patience)?;
        self.post_all(&mut signal)?;
        Ok(answer)
    }

    /// Posts every receive slot that is not posted or waiting to be read;
    /// returns how many were posted (stops early, without error, when the
    /// ring is full).
    pub fn post_all(&mut self, mut signal: impl FnMut()) -> Result<usize, NetworkClientError> {
        if self.version >= VERSION_BATCH {
            return self.post_batches(&mut signal);
        }
        let mut posted = 0;
        for index in 0..self.receive_count {
            if self.receive_slots[index] != Receive::Idle {
                continue;
            }
            match self.post(index, &mut signal) {
                Ok(()) => posted += 1,
                Err(NetworkClientError::Full) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(posted)
    }

    fn post(&mut self, index: usize, signal: &mut impl FnMut()) -> Result<(), NetworkClientError> {
        let message = GuestMessage::PostReceive {
            offset: index as u32 * self.slot_bytes,
            len: self.slot_bytes,
        };
        self.send_message(RECEIVE_TAG + index as u64, &message, signal)?;
        self.receive_slots[index] = Receive::Posted;
        self.post_tid[index] = RECEIVE_TAG + index as u64;
        Ok(())
    }

    /// Posts the idle receive slots in `PostReceiveBatch`es of up to
    /// [`MAX_BATCH`]; how many (stops early, without error, when the ring
    /// is full).
    fn post_batches(&mut self, signal: &mut impl FnMut()) -> Result<usize, NetworkClientError> {
        let mut posted = 0;
        let mut index = 0;
        while index < self.receive_count {
            let mut entries = Batch::new();
            let mut slots = [0usize; MAX_BATCH];
            while index < self.receive_count && entries.len() < MAX_BATCH {
                if self.receive_slots[index] == Receive::Idle {
                    slots[entries.len()] = index;
                    let _ = entries.push(BufferEntry {
                        offset: index as u32 * self.slot_bytes,
                        len: self.slot_bytes,
                    });
                }
                index += 1;
            }
            if entries.is_empty() {
                break;
            }
            let tid = RECEIVE_TAG + slots[0] as u64;
            let n = entries.len();
            match self.send_message(tid, &GuestMessage::PostReceiveBatch { entries }, signal) {
                Ok(()) => {}
                Err(NetworkClientError::Full) => break,
                Err(e) => return Err(e),
            }
            for &slot in &slots[..n] {
                self.receive_slots[slot] = Receive::Posted;
                self.post_tid[slot] = tid;
            }
            posted += n;
        }
        Ok(posted)
    }

    /// Asks the root for the batch messages ([`VERSION_BATCH`]) and waits
    /// for its answer (before any send, like [`NetworkClient::grant`]):
    /// from then on sends are queued and go out [`MAX_BATCH`] to a
    /// `SendBatch` ([`NetworkClient::flush_sends`]), receive slots are
    /// posted in `PostReceiveBatch`es and frames may arrive in
    /// `ReceiveBatch`es. Returns the version both speak.
    pub fn negotiate(
        &mut self,
        mut signal: impl FnMut(),
        mut wait: impl FnMut(),
        mut patience: u64,
    ) -> Result<u16, NetworkClientError> {
        let message = GuestMessage::Negotiate {
            version: PROTOCOL_VERSION,
        };
        self.send_waiting(0, &message, &mut signal, &mut wait, &mut patience)?;
        self.negotiated = None;
        let version = loop {
            if let Some(version) = self.negotiated.take() {
                break version;
            }
            if self.receive(&mut signal)?.is_none() {
                patience = patience.checked_sub(1).ok_or(NetworkClientError::Timeout)?;
                wait();
            }
        };
        if !(VERSION_SINGLE..=PROTOCOL_VERSION).contains(&version) {
            return Err(NetworkClientError::BadMessage);
        }
        self.version = version;
        Ok(version)
    }

    /// The protocol version in use.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Sends queued but not yet given to the root.
    pub fn queued_sends(&self) -> usize {
        self.tx_batch.len()
    }

    /// Gives the root every queued send: one `SendBatch` (a single `Send`
    /// for one). `Full` if the ring has no room (they stay queued).
    pub fn flush_sends(&mut self, mut signal: impl FnMut()) -> Result<(), NetworkClientError> {
        match self.tx_batch.as_slice() {
            [] => return Ok(()),
            [one] => {
                let message = GuestMessage::Send {
                    offset: one.offset,
                    len: one.len,
                    flags: one.flags,
                };
                self.send_message(self.tx_batch_tid, &message, &mut signal)?;
            }
            _ => {
                let message = GuestMessage::SendBatch {
                    entries: self.tx_batch,
                };
                self.send_message(self.tx_batch_tid, &message, &mut signal)?;
            }
        }
        self.stats.sent += self.tx_batch.len() as u64;
        self.tx_batch = Batch::new();
        Ok(())
    }

    /// Whether send slot `slot` is queued, not yet sent.
    fn queued_slot(&self, slot: usize) -> bool {
        !self.tx_batch.is_empty() && self.send_batch[slot].0 == self.tx_batch_tid
    }

    fn queue(&mut self, event: NetworkEvent) {
        if self.queued_len < MAX_BATCH {
            self.queued[(self.queued_head + self.queued_len) % MAX_BATCH] = Some(event);
            self.queued_len += 1;
        }
    }

    fn dequeue(&mut self) -> Option<NetworkEvent> {
        if self.queued_len == 0 {
            return None;
        }
        let event = self.queued[self.queued_head].take();
        self.queued_head = (self.queued_head + 1) % MAX_BATCH;
        self.queued_len -= 1;
        event
    }

    fn receive_index(&self, offset: u32) -> Result<usize, NetworkClientError> {
        if self.slot_bytes == 0 || !offset.is_multiple_of(self.slot_bytes) {
            return Err(NetworkClientError::BadLength);
        }
        let index = (offset / self.slot_bytes) as usize;
        if index >= self.receive_count {
            return Err(NetworkClientError::BadLength);
        }
        Ok(index)
    }

    /// Copies the received frame at `offset` (of a `Received` event) into
    /// `out` (its first `out.len()` bytes; at most the slot).
    pub fn read_frame(&self, offset: u32, out: &mut [u8]) -> Result<(), NetworkClientError> {
        let index = self.receive_index(offset)?;
        if self.receive_slots[index] != Receive::Filled || out.len() > self.slot_bytes as usize {
            return Err(NetworkClientError::BadLength);
        }
        self.region
            .read((self.receive_start() + u64::from(offset)) as usize, out);
        Ok(())
    }

    /// Posts the receive slot at `offset` again (after reading it, or
    /// after it was `Returned`).
    pub fn repost(
        &mut self,
        offset: u32,
        mut signal: impl FnMut(),
    ) -> Result<(), NetworkClientError> {
        let index = self.receive_index(offset)?;
        if self.receive_slots[index] == Receive::Posted {
            return Err(NetworkClientError::BadLength);
        }
        self.post(index, &mut signal)
    }

    /// Copies `frame` (Ethernet header included, source = [`NetworkClient::mac`])
    /// into a free send slot and sends it with `flags` without waiting;
    /// returns its tag (see [`NetworkEvent::SendComplete`]). `Busy` if
    /// every slot is in flight, `Full` if the ring has no room.
    pub fn send(
        &mut self,
        frame: &[u8],
        flags: u8,
        mut signal: impl FnMut(),
    ) -> Result<u64, NetworkClientError> {
        if self.send_count == 0 {
            return Err(NetworkClientError::NotReady);
        }
        let len = u32::try_from(frame.len()).map_err(|_| NetworkClientError::BadLength)?;
        if check_frame_len(len, self.mtu).is_err() || flags & !SEND_FLAGS != 0 {
            return Err(NetworkClientError::BadLength);
        }
        if self.tx_batch.len() == MAX_BATCH {
            self.flush_sends(&mut signal)?;
        }
        let Some(slot) = self.send_slots[..self.send_count]
            .iter()
            .position(Option::is_none)
        else {
            // Let the root see what is queued before the caller waits.
            match self.flush_sends(&mut signal) {
                Ok(()) | Err(NetworkClientError::Full) => {}
                Err(e) => return Err(e),
            }
            return Err(NetworkClientError::Busy);
        };
        let offset = slot as u32 * self.slot_bytes;
        self.region.write(offset as usize, frame);
        // Tags carry their slot in the low bits, never 0.
        let tag = (self.sequence + 1) * MAX_SEND_SLOTS as u64 + slot as u64;
        if self.version >= VERSION_BATCH {
            // Queued: the message goes out when the batch is full, at
            // `flush_sends` or at the next poll.
            if self.tx_batch.is_empty() {
                self.tx_batch_tid = tag;
            }
            self.send_batch[slot] = (self.tx_batch_tid, self.tx_batch.len() as u8);
            let _ = self.tx_batch.push(FrameEntry { offset, len, flags });
            self.sequence += 1;
            self.send_slots[slot] = Some(tag);
            if self.tx_batch.len() == MAX_BATCH {
                match self.flush_sends(&mut signal) {
                    Ok(()) | Err(NetworkClientError::Full) => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(tag);
        }
        let message = GuestMessage::Send { offset, len, flags };
        self.send_message(tag, &message, &mut signal)?;
        self.sequence += 1;
        self.stats.sent += 1;
        self.send_slots[slot] = Some(tag);
        self.send_batch[slot] = (tag, 0);
        Ok(tag)
    }

    /// Sends `frame`, polling for completions while every slot is in
    /// flight or the ring is full (at most `patience` waits).
    pub fn send_waiting_for_slot(
        &mut self,
        frame: &[u8],
        flags: u8,
        mut signal: impl FnMut(),
        mut wait: impl FnMut(),
        mut patience: u64,
    ) -> Result<u64, NetworkClientError> {
        loop {
            match self.send(frame, flags, &mut signal) {
                Err(NetworkClientError::Busy | NetworkClientError::Full) => {
                    patience = patience.checked_sub(1).ok_or(NetworkClientError::Timeout)?;
                    // Completions (and frames) free what the root waits on.
                    while let Some(event) = self.receive(&mut signal)? {
                        if let Some(NetworkEvent::Received { offset, .. }) = event {
                            // Dropped here: the caller did not ask to receive.
                            self.repost(offset, &mut signal)?;
                        }
                    }
                    wait();
                }
                other => return other,
            }
        }
    }

    /// The next received frame, copied into `out` (which should hold
    /// [`NetworkClient::max_frame`] bytes; a longer frame is cut), its
    /// buffer posted again: `(length, flags)`. Send completions and link
    /// changes met on the way are taken in (slots freed, counted).
    pub fn receive_frame(
        &mut self,
        out: &mut [u8],
        mut signal: impl FnMut(),
    ) -> Result<Option<(usize, u8)>, NetworkClientError> {
        loop {
            match self.poll(&mut signal)? {
                None => {
                    if self.version >= VERSION_BATCH {
                        self.post_all(&mut signal)?;
                    }
                    return Ok(None);
                }
                Some(NetworkEvent::Received { offset, len, flags }) => {
                    let n = (len as usize).min(out.len());
                    self.read_frame(offset, &mut out[..n])?;
                    if self.version >= VERSION_BATCH {
                        // Posted again with others, once a batch is idle
                        // or nothing more waits.
                        let index = self.receive_index(offset)?;
                        self.receive_slots[index] = Receive::Idle;
                        let idle = self.receive_slots[..self.receive_count]
                            .iter()
                            .filter(|s| **s == Receive::Idle)
                            .count();
                        if idle >= MAX_BATCH {
                            self.post_all(&mut signal)?;
                        }
                    } else {
                        self.repost(offset, &mut signal)?;
                    }
                    return Ok(Some((len as usize, flags)));
                }
                Some(NetworkEvent::Returned { offset, .. }) => {
                    self.repost(offset, &mut signal)?;
                }
                Some(NetworkEvent::SendComplete { .. } | NetworkEvent::Link { .. }) => {}
            }
        }
    }
}
