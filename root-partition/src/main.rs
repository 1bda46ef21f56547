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
mod bench;
#[cfg(target_os = "none")]
mod blk;
#[cfg(target_os = "none")]
mod children;
#[cfg(target_os = "none")]
mod devirq;
#[cfg(target_os = "none")]
mod hal;
#[cfg(target_os = "none")]
mod mgmt;
#[cfg(target_os = "none")]
mod migration;
#[cfg(target_os = "none")]
mod net;
#[cfg(target_os = "none")]
mod node_hw;
#[cfg(target_os = "none")]
mod node_vms;
#[cfg(target_os = "none")]
mod quick;
#[cfg(target_os = "none")]
mod selftest_alias;
#[cfg(target_os = "none")]
mod selftest_attacks;
#[cfg(target_os = "none")]
mod selftest_race;
#[cfg(target_os = "none")]
mod storage;
#[cfg(target_os = "none")]
mod virtio;
#[cfg(target_os = "none")]
mod vmbus;

#[cfg(target_os = "none")]
mod entry {
    use ipc::boot::SELFTEST_READ_HYPERVISOR_FRAME;
    use ipc::markers;

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
        let ram: u64 = info.memory().iter().map(|r| r.len()).sum();
        println!(
            "{} {} (guest mode, ring 0)",
            markers::ROOT_BANNER,
            env!("CARGO_PKG_VERSION")
        );
        println!(
            "root partition: {} processors, {} MiB of RAM in {} ranges, {} ranges held by the hypervisor",
            info.cpu_count,
            ram >> 20,
            info.memory().len(),
            info.reserved().len()
        );
        if !info.child_image.is_empty() {
            println!(
                "root partition: child runtime image of {} KiB available",
                info.child_image.len() >> 10
            );
        }
        if partition_rt::init_vcpu(0).is_err() {
            println!("root partition: cannot set up its descriptor tables");
            hal::crash();
        }
        if info.has_flag(markers::SELFTEST_RACE) {
            crate::selftest_race::run(&info);
        }
        crate::storage::start(&info);
        if info.has_flag(markers::SELFTEST_DEVICE_INTERRUPT) {
            match crate::devirq::run(&info) {
                Ok(result) => println!("{result}"),
                Err(e) => println!("root partition: device interrupt test failed: {e:?}"),
            }
        }
        match crate::net::start(&info) {
            Ok(true) => crate::vmbus::start_switch(),
            Ok(false) => {}
            Err(e) => println!("root partition: network interface unusable: {e}"),
        }
        if info.has_flag(markers::SELFTEST_NETWORK) {
            match crate::net::ping_gateway() {
                Ok(line) => println!("{line}"),
                Err(e) => println!("root partition: network test failed: {e}"),
            }
        }
        if info.has_flag(markers::SELFTEST_ALIAS_UNMAP) {
            match crate::selftest_alias::run(&info) {
                Ok(line) => println!("{line}"),
                Err(e) => println!("root partition: alias self-test failed: {e:?}"),
            }
        }
        if info.has_flag(SELFTEST_READ_HYPERVISOR_FRAME) {
            let target = info.hypervisor_image.start;
            println!("{}", markers::RootReadsHypervisorFrame(target));
            match hal::read_physical(target) {
                Some(value) => println!(
                    "root partition: ISOLATION BROKEN: read {value:#x} from the hypervisor's memory"
                ),
                None => println!("root partition: {target:#x} is in the root's own RAM"),
            }
            hal::crash();
        }
        if info.has_flag(markers::BENCH_HYPERCALL) {
            println!("{}", crate::bench::null_hypercall());
        }
        crate::selftest_attacks::run(&info);
        let scenario_name = info
            .cmdline()
            .split_whitespace()
            .find_map(|w| w.strip_prefix("scenario="));
        match scenario_name {
            // No scenario: the root is a node and runs until told to stop.
            None => crate::node_hw::run(&info),
            Some(scenario_name) => {
                let config = core::str::from_utf8(hal::ram::modules().config).unwrap_or("");
                match root_partition::config::scenario(config, scenario_name) {
                    Ok(scenario) => {
                        println!("root partition: running scenario {scenario_name}");
                        if let Err(e) = crate::children::run(&info, &scenario) {
                            println!("root partition: scenario {scenario_name} failed: {e:?}");
                        }
                    }
                    Err(e) => println!(
                        "root partition: no scenario {scenario_name:?} in the boot configuration: {e:?}"
                    ),
                }
            }
        }
        if info.has_flag(markers::BENCH_STORAGE) {
            match crate::storage::bench_direct(ipc::disk::BENCH_FILE) {
                Ok(result) => println!("{result}"),
                Err(e) => println!("root partition: storage benchmark: {e}"),
            }
        }
        if info.has_flag(markers::BENCH_NETWORK) {
            use ipc::kv::{BENCH_FRAME_SIZE, BENCH_FRAMES, FramesBench};
            match crate::vmbus::bench_switch(BENCH_FRAMES, BENCH_FRAME_SIZE as usize) {
                Some(cycles) => println!(
                    "{}",
                    FramesBench {
                        who: "root",
                        frames: BENCH_FRAMES,
                        size: BENCH_FRAME_SIZE,
                        cycles
                    }
                ),
                None => println!("root partition: network benchmark: no switch, or frames lost"),
            }
        }
        println!("{}", markers::ROOT_POWER_OFF);
        crate::selftest_attacks::power_off(&info)
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        println!("root partition panic: {info}");
        hal::crash()
    }
}
