//! capvisor's virtualization service providers: the root partition's end
//! of every child's VMBus — the control channel ([`bus`]) and the devices
//! behind it (the console, [`storage`], [`network`], the [`integration`]
//! services: heartbeat and shutdown), and the virtual
//! switch ([`switch`]) the root plugs the children's NICs into, and the
//! bus's saved state for quick migration ([`bus_state`]).
//!
//! # Invariants
//! `no_std`, no `unsafe`, no allocation; the hypervisor-facing operations
//! (mapping a child's pages, making ports, signalling) are the
//! [`bus::Platform`] trait, so everything here runs in host tests against
//! atomics-backed ring memory. Every byte from a child is hostile: a
//! broken ring or protocol closes the channel with a reason, never panics.
#![no_std]
#![forbid(unsafe_code)]

pub mod bus;
pub mod bus_state;
pub mod integration;
pub mod network;
pub mod storage;
pub mod switch;

/// Adds `n` to a counter, stopping at `u64::MAX`: counters come back from
/// saved states (foreign bytes) and must not overflow.
pub(crate) fn bump(counter: &mut u64, n: u64) {
    *counter = counter.saturating_add(n);
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_from_a_saved_state_stop_at_the_top() {
        let mut counter = u64::MAX - 1;
        super::bump(&mut counter, 1);
        assert_eq!(counter, u64::MAX);
        super::bump(&mut counter, 1514);
        assert_eq!(counter, u64::MAX);
    }
}
