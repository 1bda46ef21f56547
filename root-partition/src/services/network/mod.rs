//! The root's own networking above the NIC drivers: [`ping`] (the echo
//! the boot checks its uplink with).

pub mod ping;
