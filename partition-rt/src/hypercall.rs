//! Hypercalls from a partition: [`hypercall`] for typed calls (built with
//! [`ipc::hypercall::Call`]) and [`raw_hypercall`] for arbitrary registers.
//!
//! # Invariants
//! `RAX` on return is turned into a [`Status`] in one place,
//! [`results_of`]: 0 is success with the results in `RDI, RSI, RDX`; a
//! value outside the ABI is reported as [`UNKNOWN_STATUS_AS`].

use ipc::hypercall::{Call, Results, Status};

use crate::arch;

/// What [`hypercall`] reports when the microkernel answers with a `RAX`
/// that is no [`Status`] (a microkernel bug).
pub const UNKNOWN_STATUS_AS: Status = Status::InvalidState;

/// Decodes `RAX, RDI, RSI, RDX` after a hypercall.
pub fn results_of(out: [u64; 4]) -> Result<Results, Status> {
    match Status::from_raw(out[0]) {
        Some(Status::Success) => Ok([out[1], out[2], out[3]]),
        Some(error) => Err(error),
        None => Err(UNKNOWN_STATUS_AS),
    }
}

/// Whether the microkernel writes into the caller's memory for `call`
/// (to a buffer page, or to any page of the caller through its own
/// partition capability: `MemoryWrite`).
pub fn writes_caller_memory(call: &Call) -> bool {
    matches!(
        call,
        Call::VcpuGetState { .. }
            | Call::DirtyFetch { .. }
            | Call::MemoryRead { .. }
            | Call::MemoryWrite { .. }
    )
}

/// Makes a hypercall. Calls for which the microkernel writes into the
/// caller's memory ([`writes_caller_memory`]) are refused here with
/// [`Status::InvalidArgument`] before reaching the microkernel: use
/// [`hypercall_unchecked`] for them.
pub fn hypercall(call: &Call) -> Result<Results, Status> {
    if writes_caller_memory(call) {
        return Err(Status::InvalidArgument);
    }
    // SAFETY: the microkernel writes no memory of the caller's for the
    // calls left (checked just above).
    results_of(unsafe { arch::vmmcall(call.encode()) })
}

/// Makes a hypercall and returns the raw `RAX, RDI, RSI, RDX` (so a caller
/// can tell a `RAX` outside the ABI apart); `None` for the calls
/// [`hypercall`] refuses.
pub fn hypercall_registers(call: &Call) -> Option<[u64; 4]> {
    if writes_caller_memory(call) {
        return None;
    }
    // SAFETY: as in `hypercall`: the call writes no memory of the caller's.
    Some(unsafe { arch::vmmcall(call.encode()) })
}

/// Makes any hypercall.
///
/// # Safety
/// For calls that make the microkernel write into the caller's memory
/// (buffers of `VcpuGetState`, `DirtyFetch`, `MemoryRead`; any page for
/// `MemoryWrite` to the caller itself), the memory written must be covered
/// by no Rust reference while the call runs.
pub unsafe fn hypercall_unchecked(call: &Call) -> Result<Results, Status> {
    // SAFETY: forwarded from the caller.
    results_of(unsafe { arch::vmmcall(call.encode()) })
}

/// Makes a hypercall with arbitrary registers `RAX, RDI, RSI, RDX, R8, R9,
/// R10` (for fuzzing the ABI); returns `RAX, RDI, RSI, RDX`.
///
/// # Safety
/// As for [`hypercall_unchecked`], for whatever call the registers encode.
pub unsafe fn raw_hypercall(regs: [u64; 7]) -> [u64; 4] {
    // SAFETY: forwarded from the caller.
    unsafe { arch::vmmcall(regs) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_decoding() {
        assert_eq!(results_of([0, 1, 2, 3]), Ok([1, 2, 3]));
        assert_eq!(results_of([3, 1, 2, 3]), Err(Status::StaleSlot));
        assert_eq!(results_of([13, 0, 0, 0]), Err(Status::RateLimited));
        assert_eq!(results_of([999, 0, 0, 0]), Err(UNKNOWN_STATUS_AS));
        assert_eq!(results_of([u64::MAX, 0, 0, 0]), Err(UNKNOWN_STATUS_AS));
    }

    #[test]
    fn buffer_writing_calls_are_refused_before_the_instruction() {
        // On the host VMMCALL would fault; a refused call never executes it.
        let call = Call::MemoryRead {
            partition: ipc::hypercall::SlotHandle {
                index: 0,
                generation: 0,
            },
            gpa: 0,
            buffer: 0x1000,
        };
        assert!(writes_caller_memory(&call));
        assert_eq!(hypercall(&call), Err(Status::InvalidArgument));
        assert_eq!(hypercall_registers(&call), None);
        assert!(!writes_caller_memory(&Call::Null));
    }
}
