//! The child runtime's hardware access.

/// Stops this vCPU for good.
pub fn stop() -> ! {
    loop {
        // SAFETY: disabling interrupts and halting affects only this vCPU.
        unsafe { core::arch::asm!("cli; hlt", options(nomem, nostack)) };
    }
}
