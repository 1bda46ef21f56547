//! Live migration, the host-testable part: the pre-copy engine, its stop
//! policy and statistics, the receiving side that applies a stream to a
//! destination, and a simulator that drives the same engine with a model.
//! `docs/migration.md` describes the protocol; the stream format is
//! [`ipc::migration`].
//!
//! The bare-metal binary implements [`engine::Source`] with hypercalls
//! (dirty log, dirty fetch, read memory, pause, vCPU state) and calls
//! [`engine::migrate`]; nothing here touches hardware.
//!
//! # Invariants
//! - After [`engine::migrate`] returns an error the source runs as before:
//!   dirty logging off and, if the engine paused it, resumed.
//! - The stream sent is a valid [`ipc::migration`] stream when the engine
//!   returns `Ok`; the receiver applies only validated records.

pub mod engine;
pub mod policy;
pub mod receive;
pub mod saved;
pub mod sim;
pub mod stats;

pub use engine::{Aborted, Clock, Control, PAGE, Phase, Source, Transport, migrate};
pub use policy::{Decision, Policy, StopReason};
pub use receive::{Destination, Loopback, Receiver, RestoreError};
pub use stats::{AbortReason, Outcome, PassStats, Stats};
