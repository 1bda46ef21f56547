//! VMBus: how a child's service clients and the root's service providers
//! talk. A channel is two single-producer single-consumer rings in pages
//! the child grants to the root, plus one port per direction; the
//! hypervisor carries signals, never data. See `docs/vmbus.md`.
//!
//! - [`memory`]: the shared-memory trait the rings work over (so this
//!   crate needs no `unsafe`), and a host implementation over atomics.
//! - [`ring`]: the ring buffer (control page, indices, signalling rules).
//! - [`packet`]: the packet header (zerocopy) and postcard payloads.
//! - [`control`]: the control protocol (versions, offers, open, close) and
//!   the state machines of both ends.
//! - [`console`]: the console device's messages.
//! - [`storage`]: the storage controller's messages and request checks.
//! - [`network`]: the network device's messages and frame checks.
//! - [`integration`]: the integration services' messages (heartbeat,
//!   shutdown).
//! - [`close`]: why a channel is closed (what the root logs).
//!
//! # Invariants
//! Everything read from shared memory is hostile: every index, length and
//! payload is validated, and a bad one is an error that closes the
//! channel, never a panic or an access outside the ring.

pub mod close;
pub mod console;
pub mod control;
pub mod integration;
pub mod list;
pub mod memory;
pub mod network;
pub mod packet;
pub mod ring;
pub mod storage;
