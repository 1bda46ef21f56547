//! capvisor's QEMU integration tests. Each case boots its own ISO in QEMU,
//! waits for an ordered list of serial markers (each with its own timeout),
//! then checks QEMU's exit status. The cases are a table ([`cases::all`]); the
//! test binary `tests/qemu.rs` turns each row into one test.
//!
//! # Invariants
//! Marker text always comes from `ipc::markers`; QEMU always runs under a hard
//! overall timeout and is killed (by its PID, nothing else) on timeout or failure.

pub mod cases;
pub mod harness;
pub mod mgmt_cases;
pub mod platform_cases;
pub mod runner;

#[cfg(test)]
mod fake_kernel;
