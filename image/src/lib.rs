//! The library behind `cargo image`: building the kernel binaries, making the
//! boot ISO, composing QEMU command lines, and checking or installing the host
//! prerequisites. `qemu-tests` reuses it so the tests boot exactly what users boot.
//!
//! # Invariants
//! Every path is resolved from the workspace root, never from the current
//! directory; every external tool is run with an explicit argument list (no shell).

pub mod bench;
pub mod bochs;
pub mod datadisk;
pub mod front;
pub mod iso;
pub mod kernel;
pub mod launch;
pub mod lines;
pub mod paths;
pub mod prereq;
pub mod process;
pub mod qemu;
pub mod suite;
