//! A stack for a second vCPU of the root (the race self-test's): static
//! memory that only that vCPU reaches, through its RSP.

use core::cell::UnsafeCell;

/// Bytes of the stack.
const STACK_BYTES: usize = 64 * 1024;

#[repr(C, align(4096))]
struct Stack(UnsafeCell<[u8; STACK_BYTES]>);

// SAFETY: the bytes are reached only by the vCPU whose RSP points into
// them; no Rust reference to them is ever made (only their address is
// handed out, by `second_vcpu_stack_top`).
unsafe impl Sync for Stack {}

static SECOND_STACK: Stack = Stack(UnsafeCell::new([0; STACK_BYTES]));

/// The top of the stack for the root's second vCPU (16-byte aligned, less
/// a return-address slot): an address to load into its RSP, never to
/// dereference from Rust.
pub fn second_vcpu_stack_top() -> u64 {
    SECOND_STACK.0.get() as u64 + STACK_BYTES as u64 - 8
}
