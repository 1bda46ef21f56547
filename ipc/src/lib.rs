//! What crosses a boundary in capvisor: the boot protocol between the
//! microkernel and the root partition, the serial markers the test harness
//! waits for, and the exit codes a run ends with.
//!
//! # Invariants
//! Every number or string that two components must agree on is defined here
//! exactly once; nobody copies one by hand.
#![no_std]
#![forbid(unsafe_code)]

pub mod boot;
pub mod child;
pub mod disk;
pub mod elf;
pub mod exit;
pub mod hypercall;
pub mod kv;
pub mod markers;
pub mod memdirty;
pub mod migration;
pub mod platform;
pub mod vcpu_state;
pub mod vmbus;
pub mod workload;
