//! Test support shared by the host tests of several services.

pub mod wire;
