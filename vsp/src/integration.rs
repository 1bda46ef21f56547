//! The integration services, the root's side (offer [`INTEGRATION_OFFER`],
//! messages in `ipc::vmbus::integration`): a **heartbeat** the root sends
//! every [`HEARTBEAT_PERIOD_NS`] and the child answers, and a
//! **shutdown** the root asks for with a time limit.
//!
//! # Heartbeat
//! The caller's clock drives it: every [`Integration::poll`] gets `now_ns`
//! (this module has no time source). A heartbeat is due at once when the
//! channel opens, then every [`HEARTBEAT_PERIOD_NS`]. When a heartbeat is
//! due and the previous one is still unanswered, that is one *miss*; a
//! reply to any heartbeat sent (the latest or a late one) clears the
//! misses. States ([`Heartbeat`]): `NoContact` until the first reply (a
//! workload that never services the channel is not reported), `Alive`,
//! `Missed(n)` for `n < MISSED_LIMIT` consecutive misses, and
//! `Unresponsive(n)` from [`MISSED_LIMIT`] on: about
//! `MISSED_LIMIT × HEARTBEAT_PERIOD_NS` (5 s) after the child's last reply,
//! the root reports it once ([`IntegrationEvent::HeartbeatLost`]).
//!
//! # Shutdown
//! [`Integration::request_shutdown`] sends `ShutdownRequest` with a time
//! limit; [`ShutdownState`] goes `Requested` → `Acknowledged` (the child
//! accepted) → `Done` (workload ended, disks flushed), or `Refused`, or
//! `TimedOut` once the limit passed without `Done` (the owner then turns
//! the child off). Each change is reported ([`IntegrationEvent::Shutdown`]).
//!
//! # Invariants
//! Every byte from the child is hostile: a packet that does not decode, a
//! message only the root sends, a reply to a heartbeat never sent, an
//! acknowledgement without a request or `ShutdownDone` before an
//! accepting acknowledgement is a [`CloseReason`] and closes the channel
//! (the bus unmaps it and rescinds the offer); nothing panics. Replies
//! after `TimedOut` are ignored (the owner is turning the child off).

pub use ipc::vmbus::integration::{HEARTBEAT_PERIOD_NS, MISSED_LIMIT};
use ipc::vmbus::integration::{
    IntegrationError, IntegrationMessage, MAX_DEADLINE_MS, MAX_MESSAGE, ShutdownReason,
};
use ipc::vmbus::memory::RingMemory;
use ipc::vmbus::packet;
use ipc::vmbus::ring::Sent;
use serde::{Deserialize, Serialize};

use crate::bus::{BATCH, CloseReason, Link, Platform, next};
use crate::bus_state::RingsState;

/// Offer id of the integration services (the fourth offer).
pub const INTEGRATION_OFFER: u32 = 3;

/// What the root knows of a child's heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heartbeat {
    /// No channel, or no reply since it opened.
    NoContact,
    /// The last heartbeat due was answered.
    Alive {
        /// The child's uptime in its last reply (ms).
        uptime_ms: u64,
    },
    /// This many consecutive heartbeats unanswered (fewer than [`MISSED_LIMIT`]).
    Missed(u32),
    /// This many consecutive heartbeats unanswered (at least [`MISSED_LIMIT`]).
    Unresponsive(u32),
}

/// Where a shutdown the root asked for stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownState {
    /// None asked for.
    Idle,
    /// Asked; no answer yet.
    Requested,
    /// The child accepted and is shutting down.
    Acknowledged,
    /// The child ended its workload and flushed its disks (it halts next).
    Done,
    /// The child refused.
    Refused,
    /// The time limit passed without `ShutdownDone`.
    TimedOut,
}

/// Why [`Integration::request_shutdown`] could not ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownError {
    /// The child has not opened the channel (or it was closed).
    NotOpen,
    /// A shutdown is already under way (`Requested` or `Acknowledged`) or done.
    AlreadyRequested,
    /// A time limit of 0 or above `MAX_DEADLINE_MS`.
    BadDeadline,
    /// The ring to the child is full (it does not read it).
    Full,
    /// The ring broke: the channel is closed.
    Closed(CloseReason),
}

/// What changed, for the owner to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntegrationEvent {
    /// The child reached [`MISSED_LIMIT`] consecutive misses.
    HeartbeatLost {
        /// Consecutive misses.
        missed: u32,
    },
    /// An unresponsive child answered again.
    HeartbeatBack,
    /// The shutdown moved to this state.
    Shutdown(ShutdownState),
}

/// Counters of the integration channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrationStats {
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// Replies received.
    pub replies: u64,
    /// Heartbeats found unanswered when the next was due.
    pub missed: u64,
    /// Signals sent to the child.
    pub signals_to_child: u64,
}

/// The integration channel's saved state (quick migration). The shutdown
/// state is not in it: a child is not saved while it is being stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrationState {
    /// The open channel's rings.
    pub channel: Option<RingsState>,
    /// The last heartbeat sent (0: none).
    pub sequence: u64,
    /// The highest heartbeat answered (at most `sequence`).
    pub answered: u64,
    /// Consecutive misses.
    pub missed: u32,
    /// A reply came since the channel opened.
    pub contact: bool,
    /// Uptime in the last reply.
    pub uptime_ms: u64,
    /// Counters.
    pub stats: IntegrationStats,
}

struct Channel<M: RingMemory> {
    link: Link<M>,
    gpa: u64,
    pages: u32,
    outbound_pages: u32,
}

/// The root's side of one child's integration channel.
pub(crate) struct Integration<M: RingMemory> {
    channel: Option<Channel<M>>,
    sequence: u64,
    answered: u64,
    missed: u32,
    contact: bool,
    uptime_ms: u64,
    /// When the next heartbeat is due (`None`: at the next poll).
    next_at_ns: Option<u64>,
    shutdown: ShutdownState,
    deadline_ns: u64,
    stats: IntegrationStats,
}

impl<M: RingMemory> Integration<M> {
    pub(crate) fn new() -> Self {
        Self::restored(&IntegrationState::default(), None)
    }

    pub(crate) fn restored(state: &IntegrationState, link: Option<Link<M>>) -> Self {
        Integration {
            channel: match (link, &state.channel) {
                (Some(link), Some(r)) => Some(Channel {
                    link,
                    gpa: r.gpa,
                    pages: r.pages,
                    outbound_pages: r.outbound_pages,
                }),
                _ => None,
            },
            sequence: state.sequence,
            answered: state.answered,
            missed: state.missed,
            contact: state.contact,
            uptime_ms: state.uptime_ms,
            next_at_ns: None,
            shutdown: ShutdownState::Idle,
            deadline_ns: 0,
            stats: state.stats,
        }
    }

    pub(crate) fn save(&self) -> IntegrationState {
        IntegrationState {
            channel: self.channel.as_ref().map(|c| RingsState {
                gpa: c.gpa,
                pages: c.pages,
                outbound_pages: c.outbound_pages,
                link: c.link.flags(),
            }),
            sequence: self.sequence,
            answered: self.answered,
            missed: self.missed,
            contact: self.contact,
            uptime_ms: self.uptime_ms,
            stats: self.stats,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.channel.is_some()
    }

    pub(crate) fn mapped(&self) -> Option<(u64, u32)> {
        self.channel.as_ref().map(|c| (c.gpa, c.pages))
    }

    pub(crate) fn stats(&self) -> IntegrationStats {
        self.stats
    }

    /// A fresh channel: heartbeats start over (due at once), no contact yet.
    pub(crate) fn open(&mut self, link: Link<M>, gpa: u64, pages: u32, outbound_pages: u32) {
        self.channel = Some(Channel {
            link,
            gpa,
            pages,
            outbound_pages,
        });
        self.sequence = 0;
        self.answered = 0;
        self.missed = 0;
        self.contact = false;
        self.next_at_ns = None;
    }

    /// Unmaps the channel; `true` if it was open. Heartbeats stop
    /// (`NoContact`); a shutdown under way can no longer finish.
    pub(crate) fn close<P: Platform<Memory = M>>(&mut self, platform: &mut P) -> bool {
        let Some(c) = self.channel.take() else {
            return false;
        };
        platform.unmap(c.gpa, c.pages);
        self.contact = false;
        self.missed = 0;
        true
    }

    pub(crate) fn heartbeat(&self) -> Heartbeat {
        match (self.channel.is_some() && self.contact, self.missed) {
            (false, _) => Heartbeat::NoContact,
            (true, 0) => Heartbeat::Alive {
                uptime_ms: self.uptime_ms,
            },
            (true, n) if n < MISSED_LIMIT => Heartbeat::Missed(n),
            (true, n) => Heartbeat::Unresponsive(n),
        }
    }

    pub(crate) fn shutdown(&self) -> ShutdownState {
        self.shutdown
    }

    /// Sends one message to the child; `Ok(false)`: the ring is full.
    fn send<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
        message: &IntegrationMessage,
        offer_id: u32,
    ) -> Result<bool, CloseReason> {
        let Some(c) = self.channel.as_mut() else {
            return Ok(false);
        };
        let mut scratch = [0u8; MAX_MESSAGE];
        match c
            .link
            .tx
            .send_message(0, 0, message, &mut scratch)
            .map_err(CloseReason::Ring)?
        {
            Sent::Written { signal } => {
                if signal {
                    crate::bump(&mut self.stats.signals_to_child, 1);
                    platform.signal(Some(offer_id));
                }
                Ok(true)
            }
            Sent::Full => Ok(false),
        }
    }

    /// Asks the child to shut down within `deadline_ms` (from `now_ns`).
    pub(crate) fn request_shutdown<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
        reason: ShutdownReason,
        deadline_ms: u32,
        now_ns: u64,
    ) -> Result<(), ShutdownError> {
        if self.channel.is_none() {
            return Err(ShutdownError::NotOpen);
        }
        if matches!(
            self.shutdown,
            ShutdownState::Requested | ShutdownState::Acknowledged | ShutdownState::Done
        ) {
            return Err(ShutdownError::AlreadyRequested);
        }
        if deadline_ms == 0 || deadline_ms > MAX_DEADLINE_MS {
            return Err(ShutdownError::BadDeadline);
        }
        let message = IntegrationMessage::ShutdownRequest {
            reason,
            deadline_ms,
        };
        match self.send(platform, &message, INTEGRATION_OFFER) {
            Ok(true) => {
                self.shutdown = ShutdownState::Requested;
                self.deadline_ns = now_ns.saturating_add(u64::from(deadline_ms) * 1_000_000);
                Ok(())
            }
            Ok(false) => Err(ShutdownError::Full),
            Err(reason) => Err(ShutdownError::Closed(reason)),
        }
    }

    /// Reads what the child sent (a bounded batch), moves the shutdown to
    /// `TimedOut` when its limit passed, and sends the heartbeat when due.
    /// Reports changes through `on`; an error means: close the channel.
    pub(crate) fn poll<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
        now_ns: u64,
        on: &mut impl FnMut(IntegrationEvent),
        handled: &mut usize,
    ) -> Result<(), CloseReason> {
        if self.channel.is_none() {
            return Ok(());
        }
        self.receive(platform, on, handled)?;
        if matches!(
            self.shutdown,
            ShutdownState::Requested | ShutdownState::Acknowledged
        ) && now_ns >= self.deadline_ns
        {
            self.shutdown = ShutdownState::TimedOut;
            on(IntegrationEvent::Shutdown(ShutdownState::TimedOut));
        }
        if self.next_at_ns.is_some_and(|at| now_ns < at) {
            return Ok(());
        }
        self.next_at_ns = Some(now_ns.saturating_add(HEARTBEAT_PERIOD_NS));
        if self.contact && self.sequence > self.answered {
            self.stats.missed = self.stats.missed.saturating_add(1);
            self.missed = self.missed.saturating_add(1);
            if self.missed == MISSED_LIMIT {
                on(IntegrationEvent::HeartbeatLost {
                    missed: self.missed,
                });
            }
        }
        let sequence = self.sequence + 1;
        if self.send(
            platform,
            &IntegrationMessage::Heartbeat { sequence },
            INTEGRATION_OFFER,
        )? {
            self.sequence = sequence;
            crate::bump(&mut self.stats.heartbeats, 1);
        }
        Ok(())
    }

    fn receive<P: Platform<Memory = M>>(
        &mut self,
        platform: &mut P,
        on: &mut impl FnMut(IntegrationEvent),
        handled: &mut usize,
    ) -> Result<(), CloseReason> {
        let mut buf = [0u8; 64];
        let mut to_child = 0u64;
        for _ in 0..BATCH {
            let Some(c) = self.channel.as_mut() else {
                break;
            };
            let Some(packet) = next(&mut c.link, &mut buf, || to_child += 1)? else {
                break;
            };
            let message =
                packet::decode::<IntegrationMessage>(&packet).map_err(CloseReason::Codec)?;
            *handled += 1;
            self.handle(message, on).map_err(CloseReason::Integration)?;
        }
        for _ in 0..to_child {
            crate::bump(&mut self.stats.signals_to_child, 1);
            platform.signal(Some(INTEGRATION_OFFER));
        }
        Ok(())
    }

    fn handle(
        &mut self,
        message: IntegrationMessage,
        on: &mut impl FnMut(IntegrationEvent),
    ) -> Result<(), IntegrationError> {
        message.check()?;
        if !message.from_child() {
            return Err(IntegrationError::WrongDirection);
        }
        let mut moved = |state: &mut ShutdownState, to| {
            *state = to;
            on(IntegrationEvent::Shutdown(to));
        };
        match (message, self.shutdown) {
            (
                IntegrationMessage::HeartbeatReply {
                    sequence,
                    uptime_ms,
                },
                _,
            ) => {
                if sequence == 0 || sequence > self.sequence {
                    return Err(IntegrationError::UnknownHeartbeat(sequence));
                }
                crate::bump(&mut self.stats.replies, 1);
                self.uptime_ms = uptime_ms;
                self.answered = self.answered.max(sequence);
                self.contact = true;
                if self.missed >= MISSED_LIMIT {
                    on(IntegrationEvent::HeartbeatBack);
                }
                self.missed = 0;
            }
            (IntegrationMessage::ShutdownAck { accepted }, ShutdownState::Requested) => {
                let to = if accepted {
                    ShutdownState::Acknowledged
                } else {
                    ShutdownState::Refused
                };
                moved(&mut self.shutdown, to);
            }
            (IntegrationMessage::ShutdownDone, ShutdownState::Acknowledged) => {
                moved(&mut self.shutdown, ShutdownState::Done);
            }
            // Too late: the owner is turning the child off.
            (
                IntegrationMessage::ShutdownAck { .. } | IntegrationMessage::ShutdownDone,
                ShutdownState::TimedOut,
            ) => {}
            _ => return Err(IntegrationError::OutOfOrder),
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "integration_tests.rs"]
mod tests;
