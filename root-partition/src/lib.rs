//! The root partition's host-testable parts: the boot configuration
//! language and the memory layout it gives each child partition.
//!
//! The bare-metal binary (`main.rs`) drives the hardware and the
//! hypercalls; this library only computes.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod config;
pub mod layout;
