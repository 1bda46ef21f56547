//! Cluster membership for capvisor: a pure state machine (no clock, no I/O)
//! and, for host tests, a deterministic simulator that drives it.
//!
//! See `docs/cluster.md`, section "Membership (the state machine and its
//! simulator)".
#![no_std]

extern crate alloc;
#[cfg(any(test, feature = "sim"))]
extern crate std;

pub mod membership;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
