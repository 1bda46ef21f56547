//! Device interrupt objects: an I/O APIC input line, or a message-signalled
//! interrupt (MSI/MSI-X) on a processor vector the kernel chose, whose
//! interrupts reach a vCPU as a virtual interrupt once bound.
//!
//! # Invariants
//! - Several objects may name one line (a shared level-triggered line,
//!   `InterruptShare`). The line is unmasked at the I/O APIC exactly when
//!   at least one object on it is bound and every bound object on it is
//!   armed (`Kernel::sync_line`): a binding that has not acknowledged
//!   keeps its line masked, and only its line.
//! - A message interrupt cannot be masked at a controller: one that comes
//!   while its object is not armed is remembered (`pending`) and delivered
//!   at the acknowledge, so none is lost and none is raised twice.
//! - No two message objects hold the same vector.

use super::ObjectId;

/// First processor vector the kernel gives to message interrupts.
pub const MESSAGE_VECTOR_FIRST: u8 = 0xa0;
/// Processor vectors for message interrupts (`0xa0..0xf0`).
pub const MESSAGE_VECTORS: u8 = 0x50;

/// Where an interrupt comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// An I/O APIC input (global system interrupt).
    Line(u32),
    /// A message-signalled interrupt on this processor vector.
    Message(u8),
}

/// A device interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupt {
    /// Its source.
    pub source: Source,
    /// The vCPU and vector it is delivered to.
    pub binding: Option<(ObjectId, u8)>,
    /// Whether the next interrupt will be delivered (false between delivery and acknowledge).
    pub armed: bool,
    /// A message interrupt came while not armed (delivered at the acknowledge).
    pub pending: bool,
}

impl Interrupt {
    /// An interrupt on I/O APIC line `gsi`, unbound.
    pub fn line(gsi: u32) -> Self {
        Interrupt {
            source: Source::Line(gsi),
            binding: None,
            armed: true,
            pending: false,
        }
    }

    /// A message interrupt on processor vector `vector`, unbound.
    pub fn message(vector: u8) -> Self {
        Interrupt {
            source: Source::Message(vector),
            ..Interrupt::line(0)
        }
    }

    /// Its line, when it is an I/O APIC line.
    pub fn gsi(&self) -> Option<u32> {
        match self.source {
            Source::Line(gsi) => Some(gsi),
            Source::Message(_) => None,
        }
    }

    /// Whether it holds its line masked: bound, delivered, not yet acknowledged.
    pub fn holds_line(&self) -> bool {
        self.binding.is_some() && !self.armed
    }
}
