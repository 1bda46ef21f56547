//! Guest-side support shared by capvisor's partitions (the root partition
//! and the child runtime): hypercalls, per-vCPU descriptor tables, interrupt
//! and exception dispatch (with "expected fault" support for tests of
//! privileged instructions), a line-buffered console over `DebugWrite`, a
//! heap allocator, and sleeping with a timeout on a kernel timer.
//!
//! # Invariants
//! The crate is `no_std` and builds for `x86_64-unknown-none` and for an
//! x86-64 host, so `cargo test` runs the safe logic (spin lock, heap,
//! console line buffering, hypercall results, descriptor encoding) on the
//! host. Instructions that only work in a partition (VMMCALL, LGDT, CLI,
//! HLT, ...) live in [`arch`]; on a host they compile but are never run.
#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]

#[cfg(not(target_arch = "x86_64"))]
compile_error!("partition-rt supports x86-64 only");

pub mod arch;
pub mod console;
pub mod cpu;
pub mod heap;
pub mod hypercall;
pub mod interrupts;
pub mod sync;
pub mod timer;

pub use arch::{
    SharedRingMemory, disable_interrupts, enable_interrupts, halt_forever, pause, rdtsc,
    wait_for_interrupt,
};
pub use console::Console;
pub use cpu::{MAX_VCPUS, current_vcpu, init_vcpu};
pub use hypercall::{hypercall, raw_hypercall};
pub use interrupts::{
    ExceptionReport, InterruptFrame, expect_fault, set_exception_hook, set_interrupt_handler,
    wait_until,
};
pub use timer::Sleeper;
