//! The integration services' messages (class
//! [`super::control::INTEGRATION_CLASS`]), as Hyper-V's: a *heartbeat*
//! (the root asks, the child answers while it runs) and a *shutdown*
//! (the root asks the child to end its workload, flush its disks and
//! halt, within a time limit). See `docs/vmbus.md`, "Integration
//! services".
//!
//! ```text
//! root                                   child
//! Heartbeat{seq}               ->
//!                              <-        HeartbeatReply{seq, uptime_ms}
//! ShutdownRequest{reason, ms}  ->
//!                              <-        ShutdownAck{accepted}
//!                              <-        ShutdownDone   (disks flushed; the child halts)
//! ```
//!
//! # Invariants
//! Every message decodes from hostile bytes without panicking;
//! [`IntegrationMessage::check`] refuses values out of range
//! (a deadline of 0 or above [`MAX_DEADLINE_MS`]). Which side may send
//! what is [`IntegrationMessage::from_child`].

use serde::{Deserialize, Serialize};

/// Time between two of the root's heartbeats (1 s).
pub const HEARTBEAT_PERIOD_NS: u64 = 1_000_000_000;
/// Consecutive unanswered heartbeats after which the root reports a child
/// that answered before as lost (5: about 5 s of silence).
pub const MISSED_LIMIT: u32 = 5;
/// Largest shutdown time limit the root may give (10 minutes).
pub const MAX_DEADLINE_MS: u32 = 600_000;
/// Largest encoded integration message (bytes); receive buffers of this
/// size always suffice.
pub const MAX_MESSAGE: usize = 32;

/// Why the root asks for a shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShutdownReason {
    /// An administrator stopped the VM.
    Stop,
    /// The node is powering off.
    NodePowerOff,
}

/// One integration message (either direction; see the module table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntegrationMessage {
    /// Root: are you alive? `sequence` counts the root's heartbeats.
    Heartbeat {
        /// The heartbeat's number.
        sequence: u64,
    },
    /// Child: alive, answering heartbeat `sequence`.
    HeartbeatReply {
        /// The heartbeat answered.
        sequence: u64,
        /// Milliseconds since the child runtime booted (0: unknown).
        uptime_ms: u64,
    },
    /// Root: end the workload, flush the disks and halt within
    /// `deadline_ms`; after that the root turns the child off.
    ShutdownRequest {
        /// Why.
        reason: ShutdownReason,
        /// The time limit (1..=[`MAX_DEADLINE_MS`]).
        deadline_ms: u32,
    },
    /// Child: whether it will shut down.
    ShutdownAck {
        /// `true`: it is shutting down; `false`: it refuses.
        accepted: bool,
    },
    /// Child: workload ended, disks flushed; it halts next.
    ShutdownDone,
}

/// Why an integration message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntegrationError {
    /// A shutdown time limit of 0 or above [`MAX_DEADLINE_MS`].
    BadDeadline,
    /// A heartbeat reply for a heartbeat the root never sent.
    UnknownHeartbeat(u64),
    /// A message only the root may send, from the child (or the reverse).
    WrongDirection,
    /// A shutdown message the state does not allow (an acknowledgement
    /// without a request, `ShutdownDone` before an accepting
    /// acknowledgement, a second acknowledgement).
    OutOfOrder,
}

impl core::fmt::Display for IntegrationError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IntegrationError::BadDeadline => write!(f, "shutdown time limit out of range"),
            IntegrationError::UnknownHeartbeat(s) => write!(f, "reply to unsent heartbeat {s}"),
            IntegrationError::WrongDirection => write!(f, "message of the other side"),
            IntegrationError::OutOfOrder => write!(f, "shutdown message out of order"),
        }
    }
}

impl IntegrationMessage {
    /// Whether the child sends this message (`false`: the root does).
    pub fn from_child(&self) -> bool {
        matches!(
            self,
            IntegrationMessage::HeartbeatReply { .. }
                | IntegrationMessage::ShutdownAck { .. }
                | IntegrationMessage::ShutdownDone
        )
    }

    /// Checks the limits above.
    pub fn check(&self) -> Result<(), IntegrationError> {
        match self {
            IntegrationMessage::ShutdownRequest { deadline_ms, .. }
                if *deadline_ms == 0 || *deadline_ms > MAX_DEADLINE_MS =>
            {
                Err(IntegrationError::BadDeadline)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> [IntegrationMessage; 6] {
        [
            IntegrationMessage::Heartbeat { sequence: u64::MAX },
            IntegrationMessage::HeartbeatReply {
                sequence: 7,
                uptime_ms: u64::MAX,
            },
            IntegrationMessage::ShutdownRequest {
                reason: ShutdownReason::NodePowerOff,
                deadline_ms: MAX_DEADLINE_MS,
            },
            IntegrationMessage::ShutdownAck { accepted: true },
            IntegrationMessage::ShutdownAck { accepted: false },
            IntegrationMessage::ShutdownDone,
        ]
    }

    #[test]
    fn messages_round_trip_and_fit_the_maximum() {
        let mut buf = [0u8; 64];
        for m in all() {
            let bytes = postcard::to_slice(&m, &mut buf).unwrap();
            assert!(bytes.len() <= MAX_MESSAGE, "{m:?}: {}", bytes.len());
            let back: IntegrationMessage = postcard::from_bytes(bytes).unwrap();
            assert_eq!(back, m);
            assert_eq!(back.check(), Ok(()));
        }
    }

    #[test]
    fn directions_and_limits() {
        let from_child: [bool; 6] = all().map(|m| m.from_child());
        assert_eq!(from_child, [false, true, false, true, true, true]);
        for bad in [0, MAX_DEADLINE_MS + 1, u32::MAX] {
            let m = IntegrationMessage::ShutdownRequest {
                reason: ShutdownReason::Stop,
                deadline_ms: bad,
            };
            assert_eq!(m.check(), Err(IntegrationError::BadDeadline));
        }
    }

    #[test]
    fn hostile_bytes_never_panic() {
        // Unknown variants, truncated varints, every short input.
        for first in 0..=255u8 {
            for second in [0u8, 1, 0x80, 0xff] {
                let raw = [first, second, 0xff, 0xff, 0xff];
                for len in 0..=raw.len() {
                    if let Ok(m) = postcard::from_bytes::<IntegrationMessage>(&raw[..len]) {
                        let _ = m.check();
                    }
                }
            }
        }
        assert!(postcard::from_bytes::<IntegrationMessage>(&[9]).is_err());
        assert!(postcard::from_bytes::<IntegrationMessage>(&[2, 2, 1]).is_err());
    }
}
