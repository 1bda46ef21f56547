//! Device interrupt objects: an I/O APIC input line whose interrupts reach
//! a vCPU as a virtual interrupt once bound.
//!
//! # Invariants
//! While `armed` is false the line is masked at the I/O APIC; it is
//! unmasked again by an acknowledge.

use super::ObjectId;

/// A device interrupt line (global system interrupt).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupt {
    /// Global system interrupt number.
    pub gsi: u32,
    /// The vCPU and vector it is delivered to.
    pub binding: Option<(ObjectId, u8)>,
    /// Whether the next interrupt will be delivered (false between delivery and acknowledge).
    pub armed: bool,
}
