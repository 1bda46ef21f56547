//! The QEMU test cases, as a table: machine, kernel command line, the markers
//! expected in order (each with its own timeout), and the expected exit.
//!
//! # Invariants
//! Every marker comes from `ipc::markers`; no marker text is typed here.

use std::time::Duration;

use image::qemu::{Firmware, QemuOptions};
use ipc::boot::{HYPERVISOR_IMAGE_BASE, SELFTEST_READ_HYPERVISOR_FRAME};
use ipc::exit::ExitCode;
use ipc::markers::{
    AllCpusOnline, CpuOnline, KERNEL_BANNER, KERNEL_POWER_OFF, NO_NESTED_PAGING, NO_VIRTUALIZATION,
    NestedPageFault, ROOT_BANNER, ROOT_POWER_OFF, RootReadsHypervisorFrame, RootRunning,
};

use crate::harness::{Expectation, ExpectedExit, Limits};

/// Time from QEMU's start to the kernel's first line under SeaBIOS (~1.3 s measured; TCG on 2 busy cores).
const FIRST_LINE_BIOS: Duration = Duration::from_secs(60);
/// Time from QEMU's start to the kernel's first line under OVMF (~5 s measured to GRUB).
const FIRST_LINE_UEFI: Duration = Duration::from_secs(120);
/// Time between two markers.
const NEXT_LINE: Duration = Duration::from_secs(45);
/// Limits of every case: nextest's slow-timeout (`.config/nextest.toml`) is above `overall`.
pub const LIMITS: Limits = Limits {
    overall: Duration::from_secs(240),
    exit: Duration::from_secs(45),
};

/// Which marker sequence a case waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    /// Full boot of `n` processors, the root runs and powers off, the kernel shuts down.
    PowerOff(u32),
    /// As [`Script::PowerOff`] but without the root's own line (a user watching a hand boot).
    HandBoot(u32),
    /// The kernel refuses to start: its banner, then this line.
    Refuses(&'static str),
    /// The root reads the hypervisor's first frame and is stopped by a nested page fault.
    ReadsHypervisorFrame,
}

/// One QEMU test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// Test name (unique).
    pub name: &'static str,
    /// The machine.
    pub machine: QemuOptions,
    /// Kernel command line.
    pub cmdline: String,
    /// Markers, in order.
    pub markers: Vec<Expectation>,
    /// Expected exit.
    pub exit: ExpectedExit,
    /// Time limits.
    pub limits: Limits,
}

/// The machine of a case: processors, CPU model, firmware, and whether
/// `isa-debug-exit` (plus `-nic none`) is attached as by `cargo image run`.
fn machine(smp: u32, cpu: &str, firmware: Firmware, managed: bool) -> QemuOptions {
    QemuOptions {
        smp,
        cpu: cpu.to_owned(),
        firmware,
        debug_exit: managed,
        no_nic: managed,
        ..QemuOptions::default()
    }
}

/// The marker texts of `script`, in order.
pub fn markers(script: Script) -> Vec<String> {
    let svm_npt = RootRunning {
        backend: "svm",
        slat: "npt",
    };
    let cpus = |n: u32| (0..n).map(|i| CpuOnline(i).to_string());
    match script {
        Script::PowerOff(n) => [KERNEL_BANNER.to_owned()]
            .into_iter()
            .chain(cpus(n))
            .chain([
                AllCpusOnline(n).to_string(),
                svm_npt.to_string(),
                ROOT_BANNER.to_owned(),
                ROOT_POWER_OFF.to_owned(),
                KERNEL_POWER_OFF.to_owned(),
            ])
            .collect(),
        Script::HandBoot(n) => cpus(n)
            .chain([
                svm_npt.to_string(),
                ROOT_BANNER.to_owned(),
                KERNEL_POWER_OFF.to_owned(),
            ])
            .collect(),
        Script::Refuses(line) => vec![KERNEL_BANNER.to_owned(), line.to_owned()],
        Script::ReadsHypervisorFrame => vec![
            ROOT_BANNER.to_owned(),
            RootReadsHypervisorFrame(HYPERVISOR_IMAGE_BASE).to_string(),
            NestedPageFault {
                partition: "root",
                gpa: HYPERVISOR_IMAGE_BASE,
            }
            .to_string(),
        ],
    }
}

/// Builds a case from one table row.
fn case(
    name: &'static str,
    machine: QemuOptions,
    cmdline: &str,
    script: Script,
    exit: ExpectedExit,
) -> Case {
    let first = if machine.firmware == Firmware::Uefi {
        FIRST_LINE_UEFI
    } else {
        FIRST_LINE_BIOS
    };
    let markers = markers(script)
        .into_iter()
        .enumerate()
        .map(|(i, marker)| Expectation::new(marker, if i == 0 { first } else { NEXT_LINE }))
        .collect();
    Case {
        name,
        machine,
        cmdline: cmdline.to_owned(),
        markers,
        exit,
        limits: LIMITS,
    }
}

/// Every QEMU test.
pub fn all() -> Vec<Case> {
    use ExitCode::{Failure, RootFault, Success};
    use ExpectedExit::{Kernel, Status};
    use Firmware::{Bios, Uefi};
    use Script::{HandBoot, PowerOff, ReadsHypervisorFrame, Refuses};
    let selftest = SELFTEST_READ_HYPERVISOR_FRAME;
    // CPU models (PLATFORMS.md): EPYC has SVM + NPT; QEMU's qemu64 has SVM without
    // NPT, so "no SVM at all" is qemu64 with SVM taken away.
    #[rustfmt::skip]
    let table = vec![
        //   name                  machine(smp, cpu, firmware, managed)   cmdline   markers                      exit
        case("bios_smp1",          machine(1, "EPYC", Bios, true),         "",       PowerOff(1),                 Kernel(Success)),
        case("bios_smp2",          machine(2, "EPYC", Bios, true),         "",       PowerOff(2),                 Kernel(Success)),
        case("bios_smp4",          machine(4, "EPYC", Bios, true),         "",       PowerOff(4),                 Kernel(Success)),
        case("uefi_smp2",          machine(2, "EPYC", Uefi, true),         "",       PowerOff(2),                 Kernel(Success)),
        case("no_nested_paging",   machine(2, "qemu64,+svm", Bios, true),  "",       Refuses(NO_NESTED_PAGING),   Kernel(Failure)),
        case("no_virtualization",  machine(2, "qemu64,-svm", Bios, true),  "",       Refuses(NO_VIRTUALIZATION),  Kernel(Failure)),
        case("isolation_read_hypervisor_frame", machine(2, "EPYC", Bios, true), selftest, ReadsHypervisorFrame, Kernel(RootFault)),
        case("hand_boot_acpi_power_off", machine(4, "EPYC", Bios, false),  "",       HandBoot(4),                 Status(0)),
    ];
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_every_case_expects_something() {
        let cases = all();
        let names: HashSet<_> = cases.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), cases.len());
        for case in &cases {
            assert!(!case.markers.is_empty(), "{}", case.name);
            let total: Duration = case.markers.iter().map(|m| m.timeout).sum();
            assert!(total > Duration::ZERO, "{}", case.name);
            assert!(
                case.limits.overall <= Duration::from_secs(300),
                "{}: nextest would kill it",
                case.name
            );
        }
    }

    #[test]
    fn boot_markers_name_every_cpu_in_order() {
        let seen = markers(Script::PowerOff(4));
        let expected: Vec<String> = [KERNEL_BANNER.to_owned()]
            .into_iter()
            .chain((0..4).map(|i| format!("cpu {i} online")))
            .chain([
                "all 4 cpus online".to_owned(),
                "root partition running in guest mode (svm, npt)".to_owned(),
                ROOT_BANNER.to_owned(),
                ROOT_POWER_OFF.to_owned(),
                KERNEL_POWER_OFF.to_owned(),
            ])
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn the_hand_boot_is_exactly_what_a_user_types() {
        let case = all()
            .into_iter()
            .find(|c| c.name == "hand_boot_acpi_power_off");
        let case = case.expect("hand boot case");
        let args = case
            .machine
            .args(std::path::Path::new("target/capvisor.iso"), None);
        let line: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            line.join(" "),
            "-accel tcg -cpu EPYC -smp 4 -m 512M -cdrom target/capvisor.iso -serial stdio \
             -display none -no-reboot"
        );
        assert_eq!(case.exit, ExpectedExit::Status(0));
    }

    #[test]
    fn the_isolation_case_passes_the_selftest_word() {
        let case = all()
            .into_iter()
            .find(|c| c.cmdline.contains(SELFTEST_READ_HYPERVISOR_FRAME));
        let case = case.expect("isolation case");
        assert_eq!(case.exit, ExpectedExit::Kernel(ExitCode::RootFault));
        assert_eq!(
            case.markers.last().map(|m| m.marker.as_str()),
            Some("nested page fault in partition root: gpa=0x100000")
        );
    }
}
