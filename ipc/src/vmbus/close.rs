//! Why the root closes a VMBus channel, and the channel names it logs:
//! shared by the root (which prints them) and the QEMU tests (which wait
//! for them).
//!
//! # Invariants
//! Every reason renders as one line without a newline.

use core::fmt;

use super::console::ConsoleError;
use super::control::ProtocolError;
use super::integration::IntegrationError;
use super::packet::CodecError;
use super::ring::RingError;

/// Why the root closed a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// A ring index or length was out of range.
    Ring(RingError),
    /// A control message out of order or invalid.
    Protocol(ProtocolError),
    /// A packet that does not decode.
    Codec(CodecError),
    /// A console message over its limits.
    Console(ConsoleError),
    /// An integration message out of range or out of order.
    Integration(IntegrationError),
    /// The child does not read its replies (the control ring to it is full).
    Stalled,
    /// The control channel closed, taking this channel with it.
    ControlClosed,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Ring(e) => write!(f, "ring: {e}"),
            CloseReason::Protocol(e) => write!(f, "protocol: {e}"),
            CloseReason::Codec(e) => write!(f, "packet: {e:?}"),
            CloseReason::Console(e) => write!(f, "console: {e:?}"),
            CloseReason::Integration(e) => write!(f, "integration: {e}"),
            CloseReason::Stalled => write!(f, "child does not read its control ring"),
            CloseReason::ControlClosed => write!(f, "control channel closed"),
        }
    }
}

/// Which channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelName {
    /// The control channel.
    Control,
    /// The console.
    Console,
    /// The storage controller.
    Storage,
    /// The network device.
    Network,
    /// The integration services (heartbeat, shutdown).
    Integration,
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChannelName::Control => "control",
            ChannelName::Console => "console",
            ChannelName::Storage => "storage",
            ChannelName::Network => "network",
            ChannelName::Integration => "integration",
        })
    }
}
