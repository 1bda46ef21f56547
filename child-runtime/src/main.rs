//! capvisor's child-partition runtime: a unikernel-style runtime that boots
//! straight into 64-bit mode and runs the workload its boot page names.
//!
//! # Boot
//! Every vCPU enters [`_start`](entry) with `RDI` = the boot page
//! (`ipc::child::CHILD_BOOT_PAGE`) and `RSI` = its index, interrupts off,
//! on its own stack. Each loads its own GDT and IDT first. vCPU 0 then
//! decodes the boot page, sets up the heap, prints the workload's start
//! line and publishes the boot information; the other vCPUs wait for it.
//! Then every vCPU runs the workload (`workloads`), which ends by halting
//! the vCPU (`CLI; HLT`).
//!
//! # Invariants
//! Nothing allocates before vCPU 0 has set up the heap (other vCPUs wait
//! for [`Boot::Ready`](entry) first); hardware access is in `arch`.
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
extern crate alloc;

#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod integration;
#[cfg(target_os = "none")]
mod network;
#[cfg(target_os = "none")]
mod storage;
#[cfg(target_os = "none")]
mod vmbus;
#[cfg(target_os = "none")]
mod workloads;

#[cfg(target_os = "none")]
mod entry {
    use core::sync::atomic::{AtomicU8, Ordering};

    use ipc::child::ChildBootInfo;
    use ipc::hypercall::Call;
    use ipc::workload::{UnknownWorkload, WorkloadStart};
    use partition_rt::heap::LockedHeap;
    use partition_rt::sync::SpinLock;
    use partition_rt::{halt_forever, println};

    use crate::{arch, workloads};

    #[global_allocator]
    static HEAP: LockedHeap = LockedHeap::empty();

    /// Where boot stands: vCPU 0 moves it from `WAITING` to `READY` or `FAILED`.
    static BOOT: AtomicU8 = AtomicU8::new(WAITING);
    const WAITING: u8 = 0;
    const READY: u8 = 1;
    const FAILED: u8 = 2;

    /// The decoded boot page, set by vCPU 0 before `BOOT` becomes `READY`.
    static INFO: SpinLock<Option<ChildBootInfo>> = SpinLock::new(None);

    /// Entry from the microkernel, on every vCPU.
    #[unsafe(no_mangle)]
    extern "C" fn _start(boot_page: u64, vcpu: u64) -> ! {
        let vcpu = vcpu as u32;
        if partition_rt::init_vcpu(vcpu).is_err() {
            // No tables of our own: nothing sensible to report with.
            halt_forever()
        }
        if vcpu == 0 {
            boot(boot_page);
        }
        while BOOT.load(Ordering::Acquire) == WAITING {
            // vCPU 0 may need this processor to finish booting.
            let _ = partition_rt::hypercall(&Call::Yield);
        }
        let info = match *INFO.lock() {
            Some(info) if BOOT.load(Ordering::Acquire) == READY => info,
            _ => halt_forever(),
        };
        workloads::run(&info, vcpu)
    }

    /// vCPU 0's part: decode the boot page, set up the heap, announce the workload.
    fn boot(boot_page: u64) {
        let decoded = arch::boot_page(boot_page)
            .ok_or(None)
            .and_then(|page| ChildBootInfo::from_page(page).map_err(Some));
        let info = match decoded {
            Ok(info) => info,
            Err(e) => {
                println!("child runtime: unusable boot page at {boot_page:#x}: {e:?}");
                BOOT.store(FAILED, Ordering::Release);
                halt_forever()
            }
        };
        arch::init_heap(&HEAP, &info);
        match crate::vmbus::start(&info) {
            Ok(()) => {
                if let Err(e) = crate::integration::open(&info) {
                    println!("child runtime: no integration services: {e:?}");
                }
            }
            // Only reaches the serial console with `debug-console`.
            Err(e) => println!("child runtime: no VMBus console ({e:?}); using DebugWrite"),
        }
        let workload = info.workload();
        if !workloads::exists(workload) {
            println!("{}", UnknownWorkload(workload));
            BOOT.store(FAILED, Ordering::Release);
            halt_forever()
        }
        println!(
            "{}",
            WorkloadStart {
                workload,
                vcpus: info.vcpu_count
            }
        );
        *INFO.lock() = Some(info);
        BOOT.store(READY, Ordering::Release);
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        let vcpu = partition_rt::current_vcpu().unwrap_or(u32::MAX);
        partition_rt::console::emergency_line(format_args!("vcpu {vcpu}: panic: {info}"));
        halt_forever()
    }
}
