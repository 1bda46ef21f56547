//! capvisor's microkernel binary: the Ring -1 kernel that GRUB loads.
//!
//! It brings up every processor, takes the memory it needs, and starts the
//! root partition in guest mode under nested paging. On a hosted target the
//! binary only explains that it runs on bare metal, so `cargo test` and
//! `cargo clippy` work across the workspace.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_op_in_unsafe_fn)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "the capvisor microkernel runs on bare metal: build and boot it with `cargo image run`"
    );
    std::process::exit(2);
}

#[cfg(target_os = "none")]
#[macro_use]
mod log;
#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod cpus;
#[cfg(target_os = "none")]
mod platform;
#[cfg(target_os = "none")]
mod root;
#[cfg(target_os = "none")]
mod run;

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    arch::serial::write_line_emergency(format_args!("microkernel panic: {info}"));
    arch::power::exit(ipc::exit::ExitCode::Failure)
}
