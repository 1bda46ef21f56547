//! The root's boot, in order: the banner and what the boot page holds,
//! then what the kernel command line asks — self-tests, the data volume,
//! the NICs and the switch, benchmarks — and then the node (no
//! `scenario=`) or a scenario of `boot.cfg` (a test fixture), and power
//! off. Each step that needs the machine is a [`Board`] method; the order,
//! the flags and every line printed are here, host-tested.

use alloc::string::String;
use core::fmt;

use ipc::boot::{BootInfo, SELFTEST_READ_HYPERVISOR_FRAME};
use ipc::kv::{BENCH_FRAME_SIZE, BENCH_FRAMES, FramesBench};
use ipc::markers;

use crate::config::{Scenario, scenario};

/// What the boot does on the machine.
pub trait Board {
    /// Prints a line on the console.
    fn print(&mut self, line: fmt::Arguments<'_>);
    /// Sets up the root's descriptor tables (false: it cannot run on).
    fn init_vcpu(&mut self) -> bool;
    /// `selftest=race`: racing vCPUs against the kernel.
    fn selftest_race(&mut self);
    /// Mounts the data volume (prints what it found).
    fn start_storage(&mut self);
    /// `selftest=device-interrupt`: the RTC's interrupts, the result line.
    fn device_interrupt_test(&mut self) -> Result<String, String>;
    /// Brings the NICs up: whether there is one.
    fn start_network(&mut self) -> Result<bool, String>;
    /// Starts the virtual switch on the first NIC.
    fn start_switch(&mut self);
    /// `selftest=network`: pings the gateway, the result line.
    fn ping_gateway(&mut self) -> Result<String, String>;
    /// `selftest=alias-unmap`: the result line.
    fn alias_test(&mut self) -> Result<String, String>;
    /// `selftest=read-hypervisor-frame`: reads the word at `address`
    /// (`None`: refused as the root's own RAM).
    fn read_physical(&mut self, address: u64) -> Option<u64>;
    /// Stops the partition with a fault the kernel reports.
    fn crash(&mut self);
    /// `bench=hypercall`: the result line.
    fn bench_hypercall(&mut self) -> String;
    /// The attack self-tests the command line names.
    fn attacks(&mut self);
    /// Runs the node until it is told to stop.
    fn node(&mut self);
    /// The boot configuration (`boot.cfg`).
    fn boot_config(&self) -> &str;
    /// Runs a scenario to its end.
    fn scenario(&mut self, scenario: &Scenario) -> Result<(), String>;
    /// `bench=storage`: the root's direct reads.
    fn bench_storage(&mut self) -> Result<String, String>;
    /// `bench=network`: cycles to move the benchmark's frames through the
    /// switch (`None`: no switch, or frames lost).
    fn bench_network(&mut self) -> Option<u64>;
}

/// Prints `result`'s line, or `failed` and the error.
fn report<B: Board>(b: &mut B, result: Result<String, String>, failed: &str) {
    match result {
        Ok(line) => b.print(format_args!("{line}")),
        Err(e) => b.print(format_args!("root partition: {failed}: {e}")),
    }
}

/// The boot after `hal::boot`: everything up to powering off.
pub fn run<B: Board>(b: &mut B, info: &BootInfo) {
    let ram: u64 = info.memory().iter().map(|r| r.len()).sum();
    b.print(format_args!(
        "{} {} (guest mode, ring 0)",
        markers::ROOT_BANNER,
        env!("CARGO_PKG_VERSION")
    ));
    b.print(format_args!(
        "root partition: {} processors, {} MiB of RAM in {} ranges, {} ranges held by the hypervisor",
        info.cpu_count,
        ram >> 20,
        info.memory().len(),
        info.reserved().len()
    ));
    if !info.child_image.is_empty() {
        b.print(format_args!(
            "root partition: child runtime image of {} KiB available",
            info.child_image.len() >> 10
        ));
    }
    if !b.init_vcpu() {
        b.print(format_args!(
            "root partition: cannot set up its descriptor tables"
        ));
        b.crash();
        return;
    }
    if info.has_flag(markers::SELFTEST_RACE) {
        b.selftest_race();
    }
    b.start_storage();
    if info.has_flag(markers::SELFTEST_DEVICE_INTERRUPT) {
        let r = b.device_interrupt_test();
        report(b, r, "device interrupt test failed");
    }
    match b.start_network() {
        Ok(true) => b.start_switch(),
        Ok(false) => {}
        Err(e) => b.print(format_args!(
            "root partition: network interface unusable: {e}"
        )),
    }
    if info.has_flag(markers::SELFTEST_NETWORK) {
        let r = b.ping_gateway();
        report(b, r, "network test failed");
    }
    if info.has_flag(markers::SELFTEST_ALIAS_UNMAP) {
        let r = b.alias_test();
        report(b, r, "alias self-test failed");
    }
    if info.has_flag(SELFTEST_READ_HYPERVISOR_FRAME) {
        let target = info.hypervisor_image.start;
        b.print(format_args!(
            "{}",
            markers::RootReadsHypervisorFrame(target)
        ));
        match b.read_physical(target) {
            Some(value) => b.print(format_args!(
                "root partition: ISOLATION BROKEN: read {value:#x} from the hypervisor's memory"
            )),
            None => b.print(format_args!(
                "root partition: {target:#x} is in the root's own RAM"
            )),
        }
        b.crash();
        return;
    }
    if info.has_flag(markers::BENCH_HYPERCALL) {
        let line = b.bench_hypercall();
        b.print(format_args!("{line}"));
    }
    b.attacks();
    let scenario_name = info
        .cmdline()
        .split_whitespace()
        .find_map(|w| w.strip_prefix("scenario="));
    match scenario_name {
        // No scenario: the root is a node and runs until told to stop.
        None => b.node(),
        Some(name) => match scenario(b.boot_config(), name) {
            Ok(s) => {
                b.print(format_args!("root partition: running scenario {name}"));
                if let Err(e) = b.scenario(&s) {
                    b.print(format_args!("root partition: scenario {name} failed: {e}"));
                }
            }
            Err(e) => b.print(format_args!(
                "root partition: no scenario {name:?} in the boot configuration: {e:?}"
            )),
        },
    }
    if info.has_flag(markers::BENCH_STORAGE) {
        let r = b.bench_storage();
        report(b, r, "storage benchmark");
    }
    if info.has_flag(markers::BENCH_NETWORK) {
        match b.bench_network() {
            Some(cycles) => b.print(format_args!(
                "{}",
                FramesBench {
                    who: "root",
                    frames: BENCH_FRAMES,
                    size: BENCH_FRAME_SIZE,
                    cycles
                }
            )),
            None => b.print(format_args!(
                "root partition: network benchmark: no switch, or frames lost"
            )),
        }
    }
    b.print(format_args!("{}", markers::ROOT_POWER_OFF));
}

#[cfg(test)]
mod tests;
