//! The QEMU cases of the machine's own controls (issue 14, defects 4, 5
//! and 9): a test-only hostile root that tries to reset or power off the
//! machine behind the microkernel and to write its memory by DMA and
//! message interrupts; a hostile child that tries the instructions
//! partitions get no effect from beside a well-behaved child; the root's
//! `Reset` call. Each failed before the fix (the machine reset or powered
//! off, the microkernel died on vector 3, the child was stopped or took
//! its interrupt late) and passes after it.
//!
//! # Invariants
//! Every marker comes from `ipc::platform`, `ipc::markers` or
//! `ipc::workload`; no marker text is typed here.

use ipc::exit::ExitCode;
use ipc::hypercall::StopReason;
use ipc::markers::{
    ALL_CHILDREN_ENDED, ChildEnded, KERNEL_POWER_OFF, ROOT_BANNER, ROOT_POWER_OFF, RootRunning,
};
use ipc::platform::{
    CacheFlushIgnored, DMA_ATTACKS, KERNEL_RESET, RESET_ATTACKS, RootAttacksDone, StrayInterrupts,
};
use ipc::workload::{INSTRUCTION_CHECKS, InstructionsSummary, SpinProgress, VcpuHello};

use crate::cases::{Case, LIMITS, machine, on_vmx};
use crate::harness::{Expectation, ExpectedExit};
use image::qemu::Firmware;

/// How long the first marker may take (firmware and boot), and each next one.
const FIRST: std::time::Duration = std::time::Duration::from_secs(60);
const NEXT: std::time::Duration = std::time::Duration::from_secs(45);

/// What an attack that the microkernel refused prints (the detail varies by machine).
fn refused(name: &str) -> String {
    format!("root attack: {name}: refused (")
}

/// The attacks of `selftest=attack-reset`, in order.
const RESET_ATTACK_NAMES: [&str; RESET_ATTACKS as usize] = [
    "keyboard controller reset (out 0x64, 0xfe)",
    "keyboard controller output port (0xd1, then 0xfe to 0x60)",
    "reset control register (out 0xcf9, 6)",
    "reset control register in a word at 0xcf8 (0x0e00)",
    "ACPI sleep through PM1a",
    "PM base moved, then sleep there",
    "PM I/O switched off",
    "I/O BAR moved over the PM block",
];

/// The attacks of `selftest=attack-dma`, in order.
const DMA_ATTACK_NAMES: [&str; DMA_ATTACKS as usize] = [
    "fw_cfg DMA into the root's own memory",
    "fw_cfg DMA into the hypervisor image",
    "fw_cfg DMA of 3 to the local APIC (vector 3)",
    "HPET message interrupts on vectors 3, 14, 0x99, 0xee, 0xff and an NMI",
];

/// Scenario `demo` after the attacks: both children say hello from every vCPU and end.
fn demo_children() -> Vec<(String, bool)> {
    let ended = |name| {
        ChildEnded {
            name,
            reason: StopReason::Halted,
            detail: 0,
        }
        .to_string()
    };
    vec![
        (VcpuHello { vcpu: 0, of: 1 }.to_string(), true),
        (VcpuHello { vcpu: 0, of: 2 }.to_string(), true),
        (VcpuHello { vcpu: 1, of: 2 }.to_string(), true),
        (ended("alpha"), true),
        (ended("beta"), true),
    ]
}

fn power_off() -> Vec<(String, bool)> {
    [ALL_CHILDREN_ENDED, ROOT_POWER_OFF, KERNEL_POWER_OFF]
        .map(|m| (m.to_owned(), false))
        .to_vec()
}

/// A case from marker texts (true: in an unordered group with its unordered neighbours).
fn platform_case(
    name: &'static str,
    cmdline: &str,
    markers: Vec<(String, bool)>,
    exit: ExpectedExit,
) -> Case {
    let root = RootRunning {
        backend: "svm",
        slat: "npt",
    };
    let markers = [(root.to_string(), false), (ROOT_BANNER.to_owned(), false)]
        .into_iter()
        .chain(markers)
        .enumerate()
        .map(|(i, (marker, unordered))| {
            let timeout = if i == 0 { FIRST } else { NEXT };
            if unordered {
                Expectation::any_order(marker, timeout)
            } else {
                Expectation::new(marker, timeout)
            }
        })
        .collect();
    let mut case = crate::cases::case(
        name,
        machine(2, "EPYC", Firmware::Bios, true),
        cmdline,
        crate::cases::Script::PowerOff(2),
        exit,
    );
    case.markers = markers;
    case.limits = LIMITS;
    case.forbidden.push("NOT REFUSED".to_owned());
    case
}

/// Defect 4: the root tries every way to reset or power off the machine
/// it knows; each is refused, the children finish, the run ends normally.
fn attack_reset() -> Case {
    let mut markers = Vec::new();
    for name in RESET_ATTACK_NAMES {
        markers.push((refused(name), false));
    }
    markers.push((
        RootAttacksDone {
            refused: RESET_ATTACKS,
            total: RESET_ATTACKS,
        }
        .to_string(),
        false,
    ));
    markers.extend(demo_children());
    markers.extend(power_off());
    platform_case(
        "root_attacks_reset_and_power_off",
        "scenario=demo selftest=attack-reset",
        markers,
        ExpectedExit::Kernel(ExitCode::Success),
    )
}

/// Defect 5: fw_cfg is not the root's (no DMA through it), and message
/// interrupts on vectors the microkernel does not use are counted, not
/// taken for exceptions.
fn attack_dma() -> Case {
    let mut markers = Vec::new();
    for name in DMA_ATTACK_NAMES {
        markers.push((refused(name), false));
    }
    markers.push((
        RootAttacksDone {
            refused: DMA_ATTACKS,
            total: DMA_ATTACKS,
        }
        .to_string(),
        false,
    ));
    markers.extend(demo_children());
    markers.extend(power_off());
    markers.push((StrayInterrupts { count: 6, first: 3 }.to_string(), false));
    platform_case(
        "root_attacks_dma_and_stray_interrupts",
        "scenario=demo selftest=attack-dma",
        markers,
        ExpectedExit::Kernel(ExitCode::Success),
    )
}

/// Defect 9: the child's INVLPGA, MONITOR and MWAIT raise #UD, its WBINVD
/// and INVD are no-ops the kernel reports, its interrupt comes inside the
/// window, its PowerOff and Reset are refused; the good child finishes.
fn bad_instructions() -> Case {
    let ended = |name| {
        ChildEnded {
            name,
            reason: StopReason::Halted,
            detail: 0,
        }
        .to_string()
    };
    let flush = CacheFlushIgnored {
        partition: "evil",
        rip: 0,
    }
    .to_string();
    let flush = flush.split(" (first").next().unwrap_or(&flush).to_owned();
    let mut markers = vec![
        (flush, true),
        (
            InstructionsSummary {
                passed: INSTRUCTION_CHECKS,
                failed: 0,
            }
            .to_string(),
            true,
        ),
        (SpinProgress { vcpu: 0, step: 3 }.to_string(), true),
        (ended("evil"), true),
        (ended("good"), true),
    ];
    markers.extend(power_off());
    platform_case(
        "hostile_child_instructions",
        "scenario=badinsn",
        markers,
        ExpectedExit::Kernel(ExitCode::Success),
    )
}

/// The root's `Reset` call: the microkernel resets the machine (QEMU,
/// started with `-no-reboot`, exits with status 0).
fn reset_call() -> Case {
    platform_case(
        "root_reset_call",
        "scenario=idle selftest=reset",
        vec![(KERNEL_RESET.to_owned(), false)],
        ExpectedExit::Status(0),
    )
}

/// Every case of this file: on QEMU (SVM), and on Bochs (VMX) where the
/// machine has what the case needs (Bochs has no fw_cfg and no HPET, and
/// reboots on a reset).
pub fn all() -> Vec<Case> {
    let reset = attack_reset();
    let instructions = bad_instructions();
    let mut cases = vec![
        on_vmx(&reset, ExitCode::Success),
        on_vmx(&instructions, ExitCode::Success),
    ];
    cases.extend([reset, attack_dma(), instructions, reset_call()]);
    cases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attack_is_expected_refused_and_nothing_may_say_otherwise() {
        let cases = all();
        assert_eq!(cases.len(), 6);
        for case in &cases {
            assert!(
                case.forbidden.iter().any(|f| f == "NOT REFUSED"),
                "{}",
                case.name
            );
        }
        let reset = cases
            .iter()
            .find(|c| c.name == "root_attacks_reset_and_power_off")
            .expect("reset case");
        let refusals = reset
            .markers
            .iter()
            .filter(|m| m.marker.starts_with("root attack: "))
            .count();
        assert_eq!(refusals, RESET_ATTACKS as usize);
    }
}
