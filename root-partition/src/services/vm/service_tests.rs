use std::cell::RefCell;

use super::*;
use crate::services::vm::definition::{VmDefinition, VmUuid};
use crate::services::vm::fake::FakeHypervisor;
use crate::services::vm::manager::ManagerConfig;
use crate::services::vm::store::{MemStore, Store};

const SECOND: u64 = 1_000_000_000;

thread_local! {
    static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn keep(line: fmt::Arguments<'_>) {
    LINES.with(|l| l.borrow_mut().push(line.to_string()));
}

fn lines() -> Vec<String> {
    LINES.with(|l| l.borrow().clone())
}

fn def(name: &str, id: u128) -> VmDefinition {
    VmDefinition {
        name: name.into(),
        id: VmUuid::from_random(id),
        memory_mib: 16,
        vcpus: 1,
        workload: "idle".into(),
        args: vec![],
        disks: vec![],
        nic: None,
        priority: 0,
        cpu: None,
        autostart: true,
    }
}

fn service(stop_at: Option<u64>) -> VmService<FakeHypervisor, MemStore> {
    let store = MemStore::new();
    let mut m = VmManager::new(
        FakeHypervisor::new(Some(store.clone())),
        store,
        ManagerConfig {
            stop_timeout_ns: 10 * SECOND,
            boot_timeout_ns: 20 * SECOND,
        },
    );
    for (i, name) in ["alpha", "beta"].into_iter().enumerate() {
        let id = m.define(def(name, i as u128 + 1)).unwrap();
        m.start(id, 0).unwrap();
    }
    VmService::new(m, stop_at, keep)
}

#[test]
fn state_changes_are_printed_and_kept_for_the_api() {
    let mut s = service(None);
    assert_eq!(s.poll(SECOND, 0), Poll::Busy);
    let printed = lines();
    assert!(
        printed.contains(&"root: vm alpha: Starting -> Running".to_string()),
        "{printed:?}"
    );
    assert!(printed.contains(&"root: vm beta: Starting -> Running".to_string()));
    let kept = s.take_events();
    assert!(kept.windows(2).all(|w| w[0].seq < w[1].seq), "{kept:?}");
    assert!(kept.iter().any(|e| e.name == "beta"
        && e.kind
            == VmEventKind::StateChanged {
                from: VmState::Starting,
                to: VmState::Running
            }));
    // Nothing more to do: idle until the manager's next deadline, if any.
    match s.poll(2 * SECOND, 0) {
        Poll::Idle(_) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn at_the_stop_deadline_every_vm_stops_then_the_node() {
    let mut s = service(Some(5 * SECOND));
    assert_eq!(s.poll(SECOND, 0), Poll::Busy);
    // Before the deadline the service sleeps until it.
    assert_eq!(s.poll(2 * SECOND, 0), Poll::Idle(Some(5 * SECOND)));
    let mut now = 5 * SECOND;
    let mut rounds = 0;
    while s.poll(now, 0) != Poll::Stop {
        now += SECOND / 10;
        rounds += 1;
        assert!(rounds < 1000, "the node never stopped: {:?}", lines());
    }
    let printed = lines();
    assert!(printed.contains(&"root: node stopping: stopping every VM".to_string()));
    assert!(
        printed.contains(&"root: vm alpha: Stopping -> Off".to_string()),
        "{printed:?}"
    );
    let beta = s.manager.find("beta").unwrap();
    assert_eq!(s.manager.state(beta).unwrap(), &VmState::Off);
}

#[test]
fn boot_reports_skipped_definitions_and_starts_the_autostart_ones() {
    let store = MemStore::new();
    let mut m = VmManager::new(
        FakeHypervisor::new(None),
        store.clone(),
        ManagerConfig::default(),
    );
    m.define(def("alpha", 1)).unwrap();
    drop(m);
    Store::write(&mut store.clone(), "/vms/bad.json", b"{ not json").unwrap();
    LINES.with(|l| l.borrow_mut().clear());
    let s = VmService::boot(
        FakeHypervisor::new(None),
        store,
        ManagerConfig::default(),
        0,
        None,
        keep,
    )
    .unwrap();
    let printed = lines();
    assert!(
        printed[0].starts_with("root: vm definition /vms/bad.json skipped: "),
        "{printed:?}"
    );
    assert_eq!(printed[1], "root partition: node: 1 VMs defined, 1 skipped");
    let names: Vec<_> = s
        .manager
        .iter()
        .map(|v| (v.definition.name.clone(), v.state.name()))
        .collect();
    assert_eq!(names, [("alpha".to_string(), "Starting")]);
}

/// Polls until the service stops (at most 1,000 rounds of 0.1 s).
fn run_to_stop(s: &mut VmService<FakeHypervisor, MemStore>, mut now: u64) {
    let mut rounds = 0;
    while s.poll(now, 0) != Poll::Stop {
        now += SECOND / 10;
        rounds += 1;
        assert!(rounds < 1000, "the node never stopped: {:?}", lines());
    }
}

#[test]
fn a_node_stop_saves_paused_vms_and_waits_for_starting_ones() {
    let mut s = service(None);
    assert_eq!(s.poll(SECOND, 0), Poll::Busy);
    let alpha = s.manager.find("alpha").unwrap();
    s.manager.pause(alpha).unwrap();
    s.request_stop(2 * SECOND);
    run_to_stop(&mut s, 2 * SECOND);
    assert_eq!(s.manager.state(alpha).unwrap(), &VmState::Saved);
    let beta = s.manager.find("beta").unwrap();
    assert_eq!(s.manager.state(beta).unwrap(), &VmState::Off);

    // Both still Starting when the stop comes: each is stopped once it runs.
    let mut s = service(None);
    s.request_stop(0);
    run_to_stop(&mut s, 0);
    for vm in ["alpha", "beta"] {
        let id = s.manager.find(vm).unwrap();
        assert_eq!(s.manager.state(id).unwrap(), &VmState::Off, "{vm}");
    }
}
