//! The self-tests over the real kernel core (`hv::fake::FakeKernel`): the
//! same code the root runs on the machine, whose abuses the kernel core
//! must refuse here as it does there.

use ipc::boot::{BootCap, BootInfo, PhysRange, cap_kind};
use ipc::hypercall::{Call, Name, Rights, SlotHandle, Status, run_state};
use ipc::markers::AliasUnmapped;
use ipc::platform::KERNEL_RESET;
use microkernel::machine::Machine;

use super::Probe;
use super::alias;
use super::attacks::{self, Tally};
use crate::hv::Kernel;
use crate::hv::fake::{FakeKernel, RAM_BASE, RAM_BYTES, TSC_KHZ};
use crate::partition::{Failure, Root, discover, handle};

/// The fake's plain store: through the root's SLAT in the kernel core, as
/// the machine's store goes through the real one; the root's own RAM is
/// refused as `hal::write_physical` refuses it; a store the SLAT does not
/// map is the nested page fault that stops the root (a panic here).
impl Probe for FakeKernel {
    fn write_physical(&self, address: u64, value: u64) -> bool {
        if (RAM_BASE..RAM_BASE + RAM_BYTES).contains(&address) || !address.is_multiple_of(8) {
            return false;
        }
        let mut host = self.host.borrow_mut();
        let slat = root_slat(&host);
        match host.m.slat_translate(slat, address) {
            Some((hpa, access)) if access.write => {
                host.m.write_bytes(hpa, &value.to_le_bytes());
                true
            }
            _ => panic!("nested page fault at {address:#x}: the kernel stops the root"),
        }
    }
}

fn root_slat(host: &microkernel::testkit::Host) -> u64 {
    host.k
        .objects
        .partition(host.root)
        .expect("the root partition")
        .slat_root
}

/// Whether the root's SLAT maps `gpa`.
fn mapped(k: &FakeKernel, gpa: u64) -> bool {
    let host = k.host.borrow();
    host.m.slat_translate(root_slat(&host), gpa).is_some()
}

/// Lines the kernel core printed (its own, not the root's).
fn kernel_printed(k: &FakeKernel, text: &str) -> bool {
    k.host.borrow().lines().iter().any(|l| l.contains(text))
}

fn root_of(k: &FakeKernel) -> (BootInfo, Root) {
    let info = k.boot_info();
    let root = discover(&info).expect("the root's view");
    (info, root)
}

/// Whether the root partition still runs (the kernel core's view).
fn root_runs(k: &FakeKernel, root: &Root) -> bool {
    let r = k
        .call(&Call::PartitionStatus {
            partition: root.authority,
        })
        .expect("status of the root");
    r[0] == run_state::RUNNING
}

/// A copy of `slot` in the root's own space with `rights`.
fn derive(k: &FakeKernel, root: &Root, slot: SlotHandle, rights: Rights) -> SlotHandle {
    let r = k
        .call(&Call::CapDelegate {
            slot,
            target: root.authority,
            rights,
        })
        .expect("a derived capability");
    handle(r[0]).expect("a handle")
}

/// Handles a hostile root might make the power calls with, none of which
/// names the root partition with CONTROL.
fn abused_handles(k: &FakeKernel, root: &Root) -> Vec<(&'static str, SlotHandle)> {
    let weak = derive(
        k,
        root,
        root.authority,
        Rights::INSPECT | Rights::CREATE | Rights::GRANT,
    );
    let stale = derive(k, root, root.authority, Rights::CONTROL | Rights::GRANT);
    k.call(&Call::CapDelete { slot: stale }).expect("delete");
    // A child partition: CONTROL on it, but it is not the root.
    let first_page = (root.pool.end - (4 << 20) - root.ram_range.start) / 4096;
    let child = k
        .call(&Call::PartitionCreate {
            authority: root.authority,
            memory: root.ram,
            first_page,
            pages: 1024,
            name: Name::new("victim"),
            ceiling: 0,
        })
        .expect("a child");
    vec![
        ("the root's capability without CONTROL", weak),
        ("a deleted copy of the root's capability", stale),
        ("the root's RAM", root.ram),
        ("the root's vCPU", root.vcpu),
        ("a child partition", handle(child[0]).expect("child handle")),
        (
            "a slot never handed out",
            SlotHandle::from_raw(200).expect("a handle"),
        ),
    ]
}

// --- The power calls (`selftest=reset`, the run's end) ---

#[test]
fn reset_with_the_roots_authority_is_carried_out_by_the_kernel() {
    let k = FakeKernel::new();
    let (info, _) = root_of(&k);
    let result = attacks::request_reset(&k, attacks::authority(&info));
    assert_eq!(result, Some(Ok([0; 3])));
    assert!(k.printed("root partition: asking the microkernel for a reset"));
    assert!(!k.printed("refused"));
    assert!(
        kernel_printed(&k, KERNEL_RESET),
        "{:?}",
        k.host.borrow().lines()
    );
}

#[test]
fn reset_with_any_other_capability_is_refused_and_changes_nothing() {
    let k = FakeKernel::new();
    let (_, root) = root_of(&k);
    let abused = abused_handles(&k, &root);
    for (what, slot) in &abused {
        let result = attacks::request_reset(&k, Some(*slot));
        assert!(
            matches!(result, Some(Err(_))),
            "Reset with {what} was accepted: {result:?}"
        );
    }
    let refusals = k
        .lines
        .borrow()
        .iter()
        .filter(|l| l.starts_with("root partition: reset refused: Err("))
        .count();
    assert_eq!(refusals, abused.len());
    assert!(
        !kernel_printed(&k, KERNEL_RESET),
        "the kernel reset the machine"
    );
    assert!(root_runs(&k, &root));
}

#[test]
fn power_off_with_any_other_capability_is_refused_and_the_root_runs_on() {
    let k = FakeKernel::new();
    let (_, root) = root_of(&k);
    let abused = abused_handles(&k, &root);
    for (what, slot) in &abused {
        let result = attacks::request_power_off(&k, Some(*slot));
        assert!(
            matches!(result, Some(Err(_))),
            "PowerOff with {what} was accepted: {result:?}"
        );
        assert!(
            root_runs(&k, &root),
            "PowerOff with {what} stopped the root"
        );
    }
    let refusals = k
        .lines
        .borrow()
        .iter()
        .filter(|l| l.starts_with("root partition: PowerOff refused: Err("))
        .count();
    assert_eq!(refusals, abused.len());
}

#[test]
fn power_off_with_the_roots_authority_stops_the_root() {
    let k = FakeKernel::new();
    let (info, root) = root_of(&k);
    assert_eq!(
        attacks::request_power_off(&k, attacks::authority(&info)),
        Some(Ok([0; 3]))
    );
    assert!(!k.printed("refused"));
    assert!(!root_runs(&k, &root));
}

#[test]
fn without_a_partition_capability_no_power_call_is_made() {
    let k = FakeKernel::new();
    let mut info = BootInfo::new();
    info.push_cap(BootCap {
        slot: 1,
        kind: cap_kind::MEMORY,
        a: 0,
        b: 0,
    });
    assert_eq!(attacks::authority(&info), None);
    assert_eq!(attacks::request_reset(&k, None), None);
    assert_eq!(attacks::request_power_off(&k, None), None);
    assert_eq!(
        *k.lines.borrow(),
        ["root partition: no partition capability to reset with"]
    );
    assert!(!kernel_printed(&k, KERNEL_RESET));
}

// --- The attack modes' tally ---

#[test]
fn the_tally_prints_each_attack_and_counts_refusals() {
    let k = FakeKernel::new();
    let mut t = Tally::new(&k);
    t.start("a");
    t.outcome("a", true, format_args!("still running"));
    t.start("b");
    t.outcome("b", false, format_args!("it worked"));
    t.done(2);
    assert_eq!((t.made(), t.refused()), (2, 1));
    assert_eq!(
        *k.lines.borrow(),
        [
            "root attack: a",
            "root attack: a: refused (still running)",
            "root attack: b",
            "root attack: b: NOT REFUSED (it worked)",
            "root attacks: 1 of 2 refused",
        ]
    );
}

#[test]
fn the_tally_says_when_a_mode_made_too_few_attacks() {
    let k = FakeKernel::new();
    let mut t = Tally::new(&k);
    t.outcome("a", true, format_args!("x"));
    t.done(ipc::platform::RESET_ATTACKS);
    assert_eq!(
        *k.lines.borrow(),
        [
            "root attack: a: refused (x)",
            "root attacks: FAILED: made 1 of 8",
            "root attacks: 1 of 1 refused",
        ]
    );
}

#[test]
fn the_tally_lets_the_time_asked_pass() {
    let k = FakeKernel::new();
    let t = Tally::new(&k);
    let before = k.tsc.get();
    t.settle(50);
    let waited = k.tsc.get() - before;
    assert!(waited >= 50 * TSC_KHZ, "{waited} ticks");
    assert!(waited < 51 * TSC_KHZ, "{waited} ticks");
}

// --- The verdicts on the devices' answers ---

#[test]
fn the_dma_attack_aims_at_the_hypervisor_unless_told_otherwise() {
    let mut info = BootInfo::new();
    info.hypervisor_image = PhysRange {
        start: 0x20_0000,
        end: 0x40_0000,
    };
    info.set_cmdline("scenario=demo selftest=attack-dma");
    assert_eq!(attacks::dma_target(&info), 0x20_0000);
    info.set_cmdline("selftest=attack-dma attack-dma-target=0x1234000");
    assert_eq!(attacks::dma_target(&info), 0x123_4000);
    info.set_cmdline("attack-dma-target=nonsense");
    assert_eq!(attacks::dma_target(&info), 0x20_0000);
}

#[test]
fn fw_cfg_descriptors_are_big_endian_and_a_transfer_needs_the_device() {
    let d = attacks::fw_cfg_descriptor(1, 4, 0xfee0_0000);
    // Item 1 selected (bits 31:16), SELECT (3) and READ (1).
    assert_eq!(d[0..4], [0x00, 0x01, 0x00, 0x0a]);
    assert_eq!(d[4..8], [0, 0, 0, 4]);
    assert_eq!(d[8..16], [0, 0, 0, 0, 0xfe, 0xe0, 0, 0]);
    assert!(attacks::dma_done(true, 0));
    assert!(!attacks::dma_done(true, attacks::DMA_CONTROL_ERROR));
    assert!(!attacks::dma_done(false, 0), "no fw_cfg: nothing ran");
}

#[test]
fn the_hpet_plan_needs_an_hpet_and_reaches_5_ms_ahead() {
    assert_eq!(attacks::hpet_plan(0), None);
    assert_eq!(attacks::hpet_plan(u64::MAX), None);
    // QEMU's HPET: 3 timers (field 2), 10 ns period (10^7 fs).
    let caps = (10_000_000u64 << 32) | (2 << 8) | 1;
    assert_eq!(attacks::hpet_plan(caps), Some((3, 500_000)));
    assert_eq!(attacks::fsb_route(0x400), 0xfee0_0000_0000_0400);
    assert_eq!(attacks::HPET_MESSAGES.len(), 6);
}

// --- `selftest=alias-unmap` ---

/// The fake's boot page with a shared window above the root's RAM.
fn with_window(k: &FakeKernel) -> BootInfo {
    let mut info = k.boot_info();
    let start = RAM_BASE + RAM_BYTES + (1 << 30);
    info.shared_window = PhysRange {
        start,
        end: start + (16 << 20),
    };
    info
}

#[test]
fn unmapping_the_alias_leaves_the_original_mapped() {
    let k = FakeKernel::new();
    let info = with_window(&k);
    let root = discover(&info).unwrap();
    let line = alias::run(&k, &info).expect("the self-test");
    assert_eq!(line.page, root.scratch);
    assert_eq!(line.alias, info.shared_window.end - 4096);
    assert_eq!(line.value, AliasUnmapped::TAG | root.scratch);
    assert!(!mapped(&k, line.alias), "the alias is gone");
    assert!(mapped(&k, line.page), "the original went with the alias");
    assert!(
        line.to_string()
            .contains(&ipc::markers::AliasStillReads.to_string())
    );
}

#[test]
#[should_panic(expected = "nested page fault")]
fn the_unmapped_alias_is_out_of_reach() {
    let k = FakeKernel::new();
    let info = with_window(&k);
    let line = alias::run(&k, &info).expect("the self-test");
    k.write_physical(line.alias, 0);
}

#[test]
fn the_alias_needs_a_window_outside_the_roots_ram() {
    let k = FakeKernel::new();
    let info = k.boot_info();
    assert!(matches!(
        alias::run(&k, &info),
        Err(Failure::Check("no shared window"))
    ));
    let root = discover(&info).unwrap();
    assert!(!k.write_physical(root.scratch, 1), "the root's own RAM");
    // A window over the root's own RAM: the kernel refuses the second
    // mapping of those addresses.
    let mut inside = info;
    inside.shared_window = PhysRange {
        start: root.pool.start,
        end: root.pool.start + (1 << 20),
    };
    assert!(matches!(
        alias::run(&k, &inside),
        Err(Failure::Call("map alias", _))
    ));
    assert!(mapped(&k, root.scratch));
}

#[test]
fn an_alias_through_a_read_only_memory_capability_is_refused() {
    let k = FakeKernel::new();
    let mut info = with_window(&k);
    let root = discover(&info).unwrap();
    // The boot page names a copy of the RAM capability that may map but
    // not write: the kernel core must refuse a writable alias.
    let weak = derive(
        &k,
        &root,
        root.ram,
        Rights::READ | Rights::MAP | Rights::GRANT,
    );
    let mut forged = BootInfo::new();
    forged.shared_window = info.shared_window;
    forged.boot_area = info.boot_area;
    for r in info.memory() {
        forged.push_memory(*r);
    }
    for c in info.caps() {
        let mut c = *c;
        if c.kind == cap_kind::MEMORY && c.slot == root.ram.raw() {
            c.slot = weak.raw();
        }
        forged.push_cap(c);
    }
    forged.tsc_khz = info.tsc_khz;
    info = forged;
    let result = alias::run(&k, &info);
    assert!(
        matches!(
            result,
            Err(Failure::Call("map alias", Status::InsufficientRights))
        ),
        "{result:?}"
    );
    assert!(!mapped(&k, info.shared_window.end - 4096));
}
