//! Message-signalled interrupts (MSI, MSI-X): a device's write to the
//! local APIC window with a vector the kernel handed out
//! (`InterruptMessage`). Vectors of the message range nobody holds are
//! stray interrupts for the dispatcher: counted and dropped.

use core::sync::atomic::{AtomicU64, Ordering};

use microkernel::object::interrupt::{MESSAGE_VECTOR_FIRST, MESSAGE_VECTORS};

/// Message vectors an interrupt object holds (bit = vector − first).
static ENABLED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// Message vectors that fired and wait for the kernel.
static FIRED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

fn bit(vector: u8) -> Option<(usize, u64)> {
    let i = vector.checked_sub(MESSAGE_VECTOR_FIRST)?;
    (i < MESSAGE_VECTORS).then(|| (usize::from(i / 64), 1u64 << (i % 64)))
}

/// Lets `vector` through (`on`) or makes it stray again.
pub fn enable(vector: u8, on: bool) {
    if let Some((word, mask)) = bit(vector) {
        if on {
            ENABLED[word].fetch_or(mask, Ordering::AcqRel);
        } else {
            ENABLED[word].fetch_and(!mask, Ordering::AcqRel);
        }
    }
}

/// Called from the interrupt handler: records `vector` if some object
/// holds it; false for a stray one.
pub fn fired(vector: u8) -> bool {
    match bit(vector) {
        Some((word, mask)) if ENABLED[word].load(Ordering::Acquire) & mask != 0 => {
            FIRED[word].fetch_or(mask, Ordering::AcqRel);
            true
        }
        _ => false,
    }
}

/// Whether `vector` is in the message range.
pub fn is_message_vector(vector: u64) -> bool {
    (u64::from(MESSAGE_VECTOR_FIRST)..u64::from(MESSAGE_VECTOR_FIRST) + u64::from(MESSAGE_VECTORS))
        .contains(&vector)
}

/// Calls `f` with each message vector that fired since the last call.
pub fn take_fired(mut f: impl FnMut(u8)) {
    for (word, fired) in FIRED.iter().enumerate() {
        let mut bits = fired.swap(0, Ordering::AcqRel);
        while bits != 0 {
            let i = bits.trailing_zeros();
            bits &= bits - 1;
            f(MESSAGE_VECTOR_FIRST + (word as u8) * 64 + i as u8);
        }
    }
}

/// Whether a message interrupt waits for the kernel.
pub fn any_fired() -> bool {
    FIRED.iter().any(|f| f.load(Ordering::Acquire) != 0)
}
