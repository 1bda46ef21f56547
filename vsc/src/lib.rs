//! capvisor's virtualization service clients: the front ends of VMBus
//! devices in a child partition, over any [`RingMemory`](ipc::vmbus::memory::RingMemory)
//! (the child's own pages in a partition, atomics in host tests).
//!
//! # Invariants
//! `no_std`, no `unsafe`, no allocation; every wait is the caller's
//! closure, so the same code runs in a partition and in host tests.
#![no_std]
#![forbid(unsafe_code)]

pub mod bus;
pub mod console;
pub mod integration;
pub mod network;
pub mod storage;
