//! capvisor's child-partition runtime: a unikernel-style runtime that boots
//! straight into 64-bit mode and runs workloads. Child partitions arrive
//! with the microkernel-core issue; for now the image only builds, and if
//! started it stops at once.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_op_in_unsafe_fn)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "the child runtime runs in a capvisor child partition: boot it with `cargo image run`"
    );
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod arch;

#[cfg(target_os = "none")]
mod entry {
    /// Entry from the microkernel.
    #[unsafe(no_mangle)]
    extern "C" fn _start(_boot_page: u64) -> ! {
        crate::arch::stop()
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
        crate::arch::stop()
    }
}
