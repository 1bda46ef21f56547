//! Fuzz target: arbitrary hypercall registers through the ABI decoder.
//! Invariants: decoding never panics; a decoded call encodes to registers
//! that decode to the same call (the decoder keeps nothing it does not
//! understand).
#![no_main]

use ipc::hypercall::Call;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut regs = [0u64; 7];
    for (reg, chunk) in regs.iter_mut().zip(data.chunks(8)) {
        let mut bytes = [0u8; 8];
        bytes[..chunk.len()].copy_from_slice(chunk);
        *reg = u64::from_le_bytes(bytes);
    }
    // Bias the call number into the valid range half the time.
    if data.first().is_some_and(|b| b & 1 == 0) {
        regs[0] %= ipc::hypercall::number::COUNT + 2;
    }
    if let Ok(call) = Call::decode(&regs) {
        assert_eq!(Call::decode(&call.encode()), Ok(call));
    }
});
