//! Test support shared by the host tests of several services.

pub mod http;
pub mod wire;
