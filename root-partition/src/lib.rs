//! The root partition's host-testable parts: the boot configuration
//! language, the memory layout it gives each child partition, the storage
//! stack above the disk driver, live migration's engine, policy and
//! simulator, and the node's services (`services/`: the VM manager).
//!
//! The bare-metal binary (`main.rs`) drives the hardware and the
//! hypercalls; this library only computes.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod boot;
pub mod config;
pub mod devices;
pub mod disks;
pub mod hv;
pub mod layout;
pub mod migrate;
pub mod node;
pub mod partition;
pub mod selftest;
pub mod services;
#[cfg(test)]
mod testing;
