//! capvisor's root partition: runs in guest mode (ring 0 under nested
//! paging), drives the machine's devices and hosts the services. For now it
//! announces itself, reports what the microkernel handed it, runs the
//! isolation self-test when asked, and powers off.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_op_in_unsafe_fn)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "the root partition runs under the capvisor microkernel: boot it with `cargo image run`"
    );
    std::process::exit(2);
}

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
#[forbid(unsafe_code)]
mod bench;
#[cfg(target_os = "none")]
#[forbid(unsafe_code)]
mod children;
#[cfg(target_os = "none")]
#[forbid(unsafe_code)]
mod devirq;
#[cfg(target_os = "none")]
mod hal;
#[cfg(target_os = "none")]
#[forbid(unsafe_code)]
mod mgmt;
#[cfg(target_os = "none")]
#[forbid(unsafe_code)]
mod migration;
#[cfg(target_os = "none")]
#[forbid(unsafe_code)]
mod node_hw;
#[cfg(target_os = "none")]
#[forbid(unsafe_code)]
mod node_vms;
#[cfg(target_os = "none")]
#[forbid(unsafe_code)]
mod quick;
#[cfg(target_os = "none")]
#[forbid(unsafe_code)]
mod selftest_alias;
#[cfg(target_os = "none")]
#[forbid(unsafe_code)]
mod selftest_attacks;
#[cfg(target_os = "none")]
#[forbid(unsafe_code)]
mod selftest_race;
#[cfg(target_os = "none")]
#[forbid(unsafe_code)]
mod storage;
#[cfg(target_os = "none")]
#[forbid(unsafe_code)]
mod vmbus;

#[cfg(target_os = "none")]
mod entry {
    use alloc::format;
    use alloc::string::String;

    use ipc::boot::BootInfo;
    use root_partition::boot::Board;
    use root_partition::config::Scenario;

    use crate::hal;

    #[global_allocator]
    static HEAP: partition_rt::heap::LockedHeap = partition_rt::heap::LockedHeap::empty();

    /// Prints a line on the console through the microkernel, which
    /// serialises the lines of every partition (the root's are not rate-limited).
    macro_rules! println {
        ($($arg:tt)*) => {
            partition_rt::console::print_line(format_args!($($arg)*))
        };
    }

    /// Entry from the microkernel: `boot_page` is the boot-information page.
    #[unsafe(no_mangle)]
    extern "C" fn _start(boot_page: u64) -> ! {
        let info = match hal::boot(boot_page, &HEAP) {
            Ok(info) => info,
            Err(e) => {
                println!("root partition: {e}");
                hal::crash()
            }
        };
        root_partition::boot::run(&mut Machine { info: &info }, &info);
        crate::selftest_attacks::power_off(&info)
    }

    /// The boot's steps on this machine.
    struct Machine<'a> {
        info: &'a BootInfo,
    }

    impl Board for Machine<'_> {
        fn print(&mut self, line: core::fmt::Arguments<'_>) {
            partition_rt::console::print_line(line);
        }
        fn init_vcpu(&mut self) -> bool {
            partition_rt::init_vcpu(0).is_ok()
        }
        fn selftest_race(&mut self) {
            crate::selftest_race::run(self.info);
        }
        fn start_storage(&mut self) {
            crate::storage::start(self.info);
        }
        fn device_interrupt_test(&mut self) -> Result<String, String> {
            crate::devirq::run(self.info)
                .map(|r| format!("{r}"))
                .map_err(|e| format!("{e:?}"))
        }
        fn start_network(&mut self) -> Result<bool, String> {
            crate::hal::net::start(self.info)
        }
        fn start_switch(&mut self) {
            crate::vmbus::start_switch();
        }
        fn ping_gateway(&mut self) -> Result<String, String> {
            crate::hal::net::ping_gateway()
        }
        fn alias_test(&mut self) -> Result<String, String> {
            crate::selftest_alias::run(self.info)
                .map(|r| format!("{r}"))
                .map_err(|e| format!("{e:?}"))
        }
        fn read_physical(&mut self, address: u64) -> Option<u64> {
            hal::read_physical(address)
        }
        fn crash(&mut self) {
            hal::crash()
        }
        fn bench_hypercall(&mut self) -> String {
            format!("{}", crate::bench::null_hypercall())
        }
        fn attacks(&mut self) {
            crate::selftest_attacks::run(self.info);
        }
        fn node(&mut self) {
            crate::node_hw::run(self.info);
        }
        fn boot_config(&self) -> &str {
            core::str::from_utf8(hal::ram::modules().config).unwrap_or("")
        }
        fn scenario(&mut self, scenario: &Scenario) -> Result<(), String> {
            crate::children::run(self.info, scenario).map_err(|e| format!("{e:?}"))
        }
        fn bench_storage(&mut self) -> Result<String, String> {
            crate::storage::bench_direct(ipc::disk::BENCH_FILE).map(|r| format!("{r}"))
        }
        fn bench_network(&mut self) -> Option<u64> {
            use ipc::kv::{BENCH_FRAME_SIZE, BENCH_FRAMES};
            crate::vmbus::bench_switch(BENCH_FRAMES, BENCH_FRAME_SIZE as usize)
        }
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        println!("root partition panic: {info}");
        hal::crash()
    }
}
