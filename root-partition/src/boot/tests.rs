//! The boot's order and lines over a recording board.

use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

use ipc::boot::{BootInfo, PhysRange};

use super::*;

#[derive(Default)]
struct Rec {
    /// Lines printed and steps taken (`> step`), in order.
    log: Vec<String>,
    network: Option<Result<bool, String>>,
    config: String,
    scenario_fails: bool,
    crashed: bool,
}

impl Rec {
    fn step(&mut self, s: &str) {
        self.log.push(format!("> {s}"));
    }
}

impl Board for Rec {
    fn print(&mut self, line: fmt::Arguments<'_>) {
        self.log.push(line.to_string());
    }
    fn init_vcpu(&mut self) -> bool {
        true
    }
    fn selftest_race(&mut self) {
        self.step("race");
    }
    fn start_storage(&mut self) {
        self.step("storage");
    }
    fn device_interrupt_test(&mut self) -> Result<String, String> {
        self.step("devirq");
        Err(String::from("no RTC line"))
    }
    fn start_network(&mut self) -> Result<bool, String> {
        self.step("network");
        self.network.clone().unwrap_or(Ok(false))
    }
    fn start_switch(&mut self) {
        self.step("switch");
    }
    fn ping_gateway(&mut self) -> Result<String, String> {
        self.step("ping");
        Ok(String::from("pong"))
    }
    fn alias_test(&mut self) -> Result<String, String> {
        self.step("alias");
        Ok(String::from("alias ok"))
    }
    fn read_physical(&mut self, _: u64) -> Option<u64> {
        self.step("read");
        None
    }
    fn crash(&mut self) {
        self.crashed = true;
    }
    fn bench_hypercall(&mut self) -> String {
        String::from("hypercall bench")
    }
    fn attacks(&mut self) {
        self.step("attacks");
    }
    fn node(&mut self) {
        self.step("node");
    }
    fn boot_config(&self) -> &str {
        &self.config
    }
    fn scenario(&mut self, s: &Scenario) -> Result<(), String> {
        self.step(&format!("scenario {} actions", s.actions().count()));
        if self.scenario_fails {
            Err(String::from("Check(\"hot add\")"))
        } else {
            Ok(())
        }
    }
    fn bench_storage(&mut self) -> Result<String, String> {
        Ok(String::from("storage bench"))
    }
    fn bench_network(&mut self) -> Option<u64> {
        None
    }
}

fn info(cmdline: &str) -> BootInfo {
    let mut info = BootInfo::new();
    info.push_memory(PhysRange {
        start: 0,
        end: 64 << 20,
    });
    info.cpu_count = 2;
    info.set_cmdline(cmdline);
    info
}

fn run_with(cmdline: &str, rec: &mut Rec) -> Vec<String> {
    run(rec, &info(cmdline));
    rec.log.clone()
}

#[test]
fn without_a_scenario_the_root_is_a_node() {
    let log = run_with("console=com1", &mut Rec::default());
    assert!(log[0].starts_with(markers::ROOT_BANNER));
    assert_eq!(
        log[1],
        "root partition: 2 processors, 64 MiB of RAM in 1 ranges, 0 ranges held by the hypervisor"
    );
    assert_eq!(
        &log[2..],
        [
            "> storage",
            "> network",
            "> attacks",
            "> node",
            markers::ROOT_POWER_OFF
        ]
    );
}

#[test]
fn self_tests_run_in_order_and_report_failures() {
    let mut rec = Rec {
        network: Some(Ok(true)),
        ..Rec::default()
    };
    let log = run_with(
        "selftest=network selftest=race selftest=device-interrupt selftest=alias-unmap bench=storage bench=network",
        &mut rec,
    );
    assert_eq!(
        &log[2..],
        [
            "> race",
            "> storage",
            "> devirq",
            "root partition: device interrupt test failed: no RTC line",
            "> network",
            "> switch",
            "> ping",
            "pong",
            "> alias",
            "alias ok",
            "> attacks",
            "> node",
            "storage bench",
            "root partition: network benchmark: no switch, or frames lost",
            markers::ROOT_POWER_OFF,
        ]
    );
}

#[test]
fn a_scenario_runs_from_the_boot_configuration() {
    let mut rec = Rec {
        config: String::from("scenario two\nchild a workload=hello\nchild b workload=hello\n"),
        ..Rec::default()
    };
    let log = run_with("scenario=two", &mut rec);
    assert!(log.contains(&String::from("root partition: running scenario two")));
    assert!(
        log.contains(&String::from("> scenario 2 actions")),
        "{log:?}"
    );
    assert!(!log.contains(&String::from("> node")));
    let mut rec = Rec {
        config: String::from("scenario two\nchild a workload=hello\n"),
        scenario_fails: true,
        ..Rec::default()
    };
    let log = run_with("scenario=two", &mut rec);
    assert!(log.contains(&String::from(
        "root partition: scenario two failed: Check(\"hot add\")"
    )));
    let log = run_with("scenario=three", &mut Rec::default());
    assert!(
        log.iter()
            .any(|l| l
                .starts_with("root partition: no scenario \"three\" in the boot configuration")),
        "{log:?}"
    );
}

#[test]
fn a_failed_network_is_reported_and_the_boot_goes_on() {
    let mut rec = Rec {
        network: Some(Err(String::from("virtio-net at 00:03.0: broken"))),
        ..Rec::default()
    };
    let log = run_with("", &mut rec);
    assert!(log.contains(&String::from(
        "root partition: network interface unusable: virtio-net at 00:03.0: broken"
    )));
    assert!(log.contains(&String::from("> node")));
}

#[test]
fn reading_the_hypervisors_frame_ends_in_a_crash() {
    let mut rec = Rec::default();
    let log = run_with("selftest=read-hypervisor-frame", &mut rec);
    assert!(rec.crashed);
    assert!(log.contains(&String::from("> read")));
    assert!(
        !log.contains(&String::from("> node")),
        "nothing runs after it"
    );
    assert!(!log.iter().any(|l| l == markers::ROOT_POWER_OFF));
}
