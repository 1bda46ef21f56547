use super::*;
use crate::services::vm::definition::{self, DiskSlot, VmUuid};
use crate::services::vm::fake::{FakeHypervisor, FakeOp};
use crate::services::vm::store::{MemStore, Store};

const SECOND: u64 = 1_000_000_000;

type Manager = VmManager<FakeHypervisor, MemStore>;

fn def(name: &str, id: u128, autostart: bool) -> VmDefinition {
    VmDefinition {
        name: name.into(),
        id: VmUuid::from_random(id),
        memory_mib: 16,
        vcpus: 1,
        workload: "hello".into(),
        args: vec![1],
        disks: vec![DiskSlot {
            path: format!("/{name}.vhd"),
            lun: 0,
        }],
        nic: None,
        priority: 2,
        cpu: None,
        autostart,
    }
}

fn config() -> ManagerConfig {
    ManagerConfig {
        stop_timeout_ns: 10 * SECOND,
        boot_timeout_ns: 20 * SECOND,
    }
}

fn manager(store: &MemStore) -> Manager {
    VmManager::new(
        FakeHypervisor::new(Some(store.clone())),
        store.clone(),
        config(),
    )
}

fn state(m: &Manager, id: VmId) -> &'static str {
    m.state(id).unwrap().name()
}

/// The state changes among `events`, as (VM name, from, to).
fn changes(events: &[VmEvent]) -> Vec<(String, &'static str, &'static str)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            VmEventKind::StateChanged { from, to } => {
                Some((e.name.clone(), from.name(), to.name()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_vms_whole_life() {
    let store = MemStore::new();
    let mut m = manager(&store);
    let id = m.define(def("alpha", 1, false)).unwrap();
    assert_eq!(state(&m, id), "Off");
    assert!(store.get("/vms/alpha.json").is_some());
    assert_eq!(m.take_events()[0].kind, VmEventKind::Defined);

    m.start(id, 0).unwrap();
    assert_eq!(state(&m, id), "Starting");
    let p = m.hypervisor().partition_of(id).unwrap().clone();
    assert_eq!(p.spec.name.as_str(), "alpha");
    assert_eq!((p.spec.memory, p.spec.priority), (16 << 20, 2));
    assert_eq!(p.spec.disks[0].unwrap().as_str(), "alpha.vhd");
    m.poll(SECOND);
    assert_eq!(state(&m, id), "Running");

    m.pause(id).unwrap();
    assert_eq!(state(&m, id), "Paused");
    assert!(m.hypervisor().partition_of(id).unwrap().paused);
    m.resume(id).unwrap();
    assert_eq!(state(&m, id), "Running");
    assert!(!m.hypervisor().partition_of(id).unwrap().paused);

    m.save(id).unwrap();
    assert_eq!(state(&m, id), "Saving");
    m.poll(2 * SECOND);
    assert_eq!(state(&m, id), "Saved");
    assert!(m.hypervisor().partitions.is_empty());
    assert!(store.get("/vms/alpha.vmrs").is_some());
    assert!(!m.info(id).unwrap().has_partition);

    m.restore(id, 3 * SECOND).unwrap();
    assert_eq!(state(&m, id), "Starting");
    assert_eq!(
        m.hypervisor()
            .partition_of(id)
            .unwrap()
            .restored_from
            .as_deref(),
        Some("/vms/alpha.vmrs")
    );
    assert!(
        store.get("/vms/alpha.vmrs").is_none(),
        "saved state deleted after the restore"
    );
    m.poll(3 * SECOND);
    assert_eq!(state(&m, id), "Running");

    m.stop(id, 4 * SECOND).unwrap();
    assert_eq!(state(&m, id), "Stopping");
    let events = m.poll(4 * SECOND);
    assert!(
        events
            .iter()
            .any(|e| e.kind == VmEventKind::ShutdownAcknowledged)
    );
    assert!(!events.iter().any(|e| e.kind == VmEventKind::StopTimedOut));
    assert_eq!(state(&m, id), "Off");
    assert!(m.hypervisor().partitions.is_empty());

    m.start(id, 5 * SECOND).unwrap();
    m.poll(5 * SECOND);
    assert_eq!(state(&m, id), "Running");
    m.turn_off(id).unwrap();
    assert_eq!(state(&m, id), "Off");
    assert!(m.hypervisor().partitions.is_empty());

    m.delete(id).unwrap();
    assert!(store.paths().is_empty(), "{:?}", store.paths());
    assert_eq!(m.state(id), Err(VmError::NoSuchVm));
    assert_eq!(m.iter().count(), 0);

    // The whole life as the event stream shows it: numbered in order.
    let mut all = m.take_events();
    assert_eq!(all.last().unwrap().kind, VmEventKind::Deleted);
    all.retain(|e| matches!(e.kind, VmEventKind::StateChanged { .. }));
    let expected = [("Running", "Off")];
    let got: Vec<(&str, &str)> = changes(&all).iter().map(|c| (c.1, c.2)).collect();
    assert_eq!(got, expected);
}

#[test]
fn events_are_numbered_in_order() {
    let store = MemStore::new();
    let mut m = manager(&store);
    let id = m.define(def("alpha", 1, false)).unwrap();
    m.start(id, 0).unwrap();
    m.poll(0);
    m.pause(id).unwrap();
    m.resume(id).unwrap();
    m.save(id).unwrap();
    let events = m.poll(0);
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [4, 5, 6, 7]);
    assert_eq!(
        changes(&events),
        [
            ("alpha".into(), "Running", "Paused"),
            ("alpha".into(), "Paused", "Running"),
            ("alpha".into(), "Running", "Saving"),
            ("alpha".into(), "Saving", "Saved"),
        ]
    );
}

#[test]
fn a_guest_that_never_acknowledges_is_turned_off_after_the_time_limit() {
    let store = MemStore::new();
    let mut m = manager(&store);
    let id = m.define(def("mute", 1, false)).unwrap();
    m.start(id, 0).unwrap();
    m.poll(0);
    m.hypervisor().guests_shut_down = false;
    m.stop(id, 100 * SECOND).unwrap();
    assert_eq!(m.next_deadline(), Some(110 * SECOND));
    m.poll(105 * SECOND);
    assert_eq!(state(&m, id), "Stopping");
    assert!(m.hypervisor().partition_of(id).is_some());
    // Commands other than turn off are refused meanwhile.
    assert!(matches!(m.pause(id), Err(VmError::InvalidState { .. })));
    let events = m.poll(110 * SECOND - 1);
    assert!(events.is_empty());
    let events = m.poll(110 * SECOND);
    assert!(events.iter().any(|e| e.kind == VmEventKind::StopTimedOut));
    assert_eq!(state(&m, id), "Off");
    assert!(m.hypervisor().partitions.is_empty());
    assert_eq!(m.next_deadline(), None);
    assert!(m.hypervisor().log.iter().any(|l| l.starts_with("turn_off")));
}

#[test]
fn a_guest_that_acknowledges_but_hangs_is_turned_off_too() {
    let store = MemStore::new();
    let mut m = manager(&store);
    let id = m.define(def("slow", 1, false)).unwrap();
    m.start(id, 0).unwrap();
    m.poll(0);
    m.hypervisor().guests_shut_down = false;
    m.stop(id, 0).unwrap();
    m.hypervisor()
        .inject(id, crate::services::vm::HvEvent::ShutdownAcknowledged);
    let events = m.poll(SECOND);
    assert!(
        events
            .iter()
            .any(|e| e.kind == VmEventKind::ShutdownAcknowledged)
    );
    assert_eq!(state(&m, id), "Stopping");
    m.poll(10 * SECOND);
    assert_eq!(state(&m, id), "Off");
}

#[test]
fn definitions_survive_a_reboot_and_autostart_vms_start() {
    let store = MemStore::new();
    let mut m = manager(&store);
    let auto = m.define(def("auto", 1, true)).unwrap();
    m.define(def("manual", 2, false)).unwrap();
    let saved = m.define(def("saved", 3, true)).unwrap();
    let saved_manual = m.define(def("savedm", 4, false)).unwrap();
    for id in [auto, saved, saved_manual] {
        m.start(id, 0).unwrap();
    }
    m.poll(0);
    m.save(saved).unwrap();
    m.save(saved_manual).unwrap();
    m.poll(0);
    assert_eq!(state(&m, saved), "Saved");
    drop(m); // The node goes down (its partitions with it).

    let hv = FakeHypervisor::new(Some(store.clone()));
    let (mut m, report) = VmManager::boot(hv, store.clone(), config(), 0).unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.loaded.len(), 4);
    let by_name = |m: &Manager, n: &str| m.find(n).unwrap();
    assert_eq!(state(&m, by_name(&m, "auto")), "Starting");
    assert_eq!(state(&m, by_name(&m, "manual")), "Off");
    assert_eq!(state(&m, by_name(&m, "saved")), "Starting");
    assert_eq!(state(&m, by_name(&m, "savedm")), "Saved");
    assert_eq!(
        m.hypervisor().log,
        ["start auto", "restore saved /vms/saved.vmrs"]
    );
    m.poll(SECOND);
    assert_eq!(state(&m, by_name(&m, "auto")), "Running");
    assert_eq!(state(&m, by_name(&m, "saved")), "Running");
    // Definitions read back equal what was defined.
    let id = by_name(&m, "manual");
    assert_eq!(*m.info(id).unwrap().definition, def("manual", 2, false));
    // A saved-but-manual VM is restored on request.
    let id = by_name(&m, "savedm");
    m.restore(id, SECOND).unwrap();
    m.poll(SECOND);
    assert_eq!(state(&m, id), "Running");
}

#[test]
fn a_damaged_definition_is_skipped_with_its_path_and_the_others_load() {
    let store = MemStore::new();
    let mut m = manager(&store);
    m.define(def("good", 1, true)).unwrap();
    m.define(def("other", 2, false)).unwrap();
    drop(m);
    store.plant("/vms/broken.json", b"{\"format\": 1, \"name\": \"broken\",");
    store.plant(
        "/vms/future.json",
        b"{\"format\": 2, \"name\": \"future\", \"hologram\": true}",
    );
    store.plant(
        "/vms/huge.json",
        &vec![b' '; definition::MAX_DEFINITION_BYTES + 1],
    );
    let mut twin = def("twin", 1, false);
    twin.memory_mib = 32;
    store.plant("/vms/twin.json", &definition::encode(&twin));
    store.plant(
        "/vms/alias.json",
        &definition::encode(&def("good", 9, false)),
    );
    store.plant("/vms/bad.json", &definition::encode(&def("bad", 5, false)));
    let text = String::from_utf8(store.get("/vms/bad.json").unwrap()).unwrap();
    store.plant(
        "/vms/bad.json",
        text.replace("\"vcpus\": 1", "\"vcpus\": 99").as_bytes(),
    );
    store.plant("/vms/notes.txt", b"not a definition");

    let hv = FakeHypervisor::new(Some(store.clone()));
    let (m, report) = VmManager::boot(hv, store.clone(), config(), 0).unwrap();
    let names: Vec<&str> = m.iter().map(|i| i.definition.name.as_str()).collect();
    assert_eq!(names, ["good", "other"]);
    assert_eq!(state(&m, m.find("good").unwrap()), "Starting");
    let skipped: Vec<(&str, &str)> = report
        .skipped
        .iter()
        .map(|s| (s.path.as_str(), s.reason.as_str()))
        .collect();
    let reason = |path: &str| {
        skipped
            .iter()
            .find(|s| s.0 == path)
            .unwrap_or_else(|| panic!("{path} not reported: {skipped:?}"))
            .1
    };
    assert_eq!(skipped.len(), 6, "{skipped:?}");
    assert!(reason("/vms/alias.json").contains("must be named good.json"));
    assert!(reason("/vms/bad.json").contains("`vcpus`"));
    assert!(reason("/vms/broken.json").contains("EOF"));
    assert!(reason("/vms/future.json").contains("unsupported format version 2"));
    assert!(reason("/vms/huge.json").contains("at most 65536"));
    assert!(reason("/vms/twin.json").contains("already used by /vms/good.json"));
    // Displayed with its path, as the boot log prints it.
    assert!(report.skipped[0].to_string().starts_with("/vms/"));
}

#[test]
fn invalid_transitions_are_refused_naming_the_state() {
    let store = MemStore::new();
    let mut m = manager(&store);
    let id = m.define(def("alpha", 1, false)).unwrap();
    let refused = |r: Result<(), VmError>, op: Operation, st: &str| match r {
        Err(e @ VmError::InvalidState { .. }) => {
            let VmError::InvalidState {
                operation, state, ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!((*operation, state.name()), (op, st));
            assert!(e.to_string().contains(st), "{e}");
            assert!(e.to_string().contains("alpha"), "{e}");
        }
        other => panic!("{op:?} in {st}: {other:?}"),
    };
    refused(m.pause(id), Operation::Pause, "Off");
    refused(m.resume(id), Operation::Resume, "Off");
    refused(m.save(id), Operation::Save, "Off");
    refused(m.restore(id, 0), Operation::Restore, "Off");
    refused(m.stop(id, 0), Operation::Stop, "Off");
    refused(m.turn_off(id), Operation::TurnOff, "Off");
    m.start(id, 0).unwrap();
    refused(m.start(id, 0), Operation::Start, "Starting");
    refused(m.stop(id, 0), Operation::Stop, "Starting");
    m.poll(0);
    refused(m.start(id, 0), Operation::Start, "Running");
    refused(m.resume(id), Operation::Resume, "Running");
    refused(m.delete(id), Operation::Delete, "Running");
    m.pause(id).unwrap();
    refused(m.pause(id), Operation::Pause, "Paused");
    refused(m.stop(id, 0), Operation::Stop, "Paused");
    refused(m.delete(id), Operation::Delete, "Paused");
    m.save(id).unwrap();
    refused(m.turn_off(id), Operation::TurnOff, "Saving");
    refused(m.delete(id), Operation::Delete, "Saving");
    refused(m.save(id), Operation::Save, "Saving");
    m.poll(0);
    refused(m.start(id, 0), Operation::Start, "Saved");
    refused(m.pause(id), Operation::Pause, "Saved");
    assert_eq!(
        m.pause(id).unwrap_err().to_string(),
        "cannot pause VM alpha: it is Saved"
    );
    // Nothing changed by the refusals.
    assert_eq!(state(&m, id), "Saved");
    // Turning off a Saved VM discards its saved state.
    m.turn_off(id).unwrap();
    assert_eq!(state(&m, id), "Off");
    assert!(store.get("/vms/alpha.vmrs").is_none());
}

#[test]
fn a_stale_id_is_refused_after_delete() {
    let store = MemStore::new();
    let mut m = manager(&store);
    let old = m.define(def("alpha", 1, false)).unwrap();
    m.delete(old).unwrap();
    let new = m.define(def("beta", 2, false)).unwrap();
    assert_eq!(new.index(), old.index(), "the slot is reused");
    assert_ne!(new.generation(), old.generation());
    assert_eq!(m.start(old, 0), Err(VmError::NoSuchVm));
    assert_eq!(m.delete(old), Err(VmError::NoSuchVm));
    assert!(matches!(m.info(old), Err(VmError::NoSuchVm)));
    assert_eq!(VmId::from_raw(new.raw()), new);
    m.start(new, 0).unwrap();
    // A late event for the deleted VM's id does not touch the new one.
    m.hypervisor().inject(old, HvEvent::Crashed("late".into()));
    m.poll(0);
    assert_eq!(state(&m, new), "Running");
    assert_eq!(m.start(VmId::from_raw(99), 0), Err(VmError::NoSuchVm));
}

#[test]
fn define_refuses_duplicates_and_invalid_definitions() {
    let store = MemStore::new();
    let mut m = manager(&store);
    m.define(def("alpha", 1, false)).unwrap();
    assert!(matches!(
        m.define(def("ALPHA", 2, false)),
        Err(VmError::AlreadyExists { field: "name", .. })
    ));
    assert!(matches!(
        m.define(def("beta", 1, false)),
        Err(VmError::AlreadyExists { field: "id", .. })
    ));
    let mut bad = def("gamma", 3, false);
    bad.memory_mib = 3;
    match m.define(bad) {
        Err(VmError::Definition(e)) => assert_eq!(e.field, "memory_mib"),
        other => panic!("{other:?}"),
    }
    // A failing volume: nothing is added.
    store.set_failing(true);
    assert!(matches!(
        m.define(def("delta", 4, false)),
        Err(VmError::Store(_))
    ));
    store.set_failing(false);
    assert_eq!(m.iter().count(), 1);
    // A leftover saved state of a deleted VM does not come back with a new one.
    store.plant("/vms/delta.vmrs", b"saved state of delta");
    let id = m.define(def("delta", 4, false)).unwrap();
    assert_eq!(state(&m, id), "Off");
    assert!(store.get("/vms/delta.vmrs").is_none());
}

#[test]
fn hypervisor_failures() {
    let store = MemStore::new();
    let mut m = manager(&store);
    let id = m.define(def("alpha", 1, false)).unwrap();
    // A refused start: Failed with the reason; a start again works.
    m.hypervisor().fail_next(FakeOp::Start, "no memory");
    assert!(matches!(m.start(id, 0), Err(VmError::Hypervisor(_))));
    assert_eq!(
        m.state(id).unwrap(),
        &VmState::Failed {
            reason: "start failed: no memory".into()
        }
    );
    m.start(id, 0).unwrap();
    m.poll(0);
    assert_eq!(state(&m, id), "Running");
    // A refused pause changes nothing.
    m.hypervisor().fail_next(FakeOp::Pause, "busy");
    assert!(m.pause(id).is_err());
    assert_eq!(state(&m, id), "Running");
    // A save that fails later: back as it was, with an event.
    m.pause(id).unwrap();
    m.hypervisor().fail_next(FakeOp::SaveLater, "volume full");
    m.save(id).unwrap();
    let events = m.poll(0);
    assert!(events.iter().any(|e| e.kind
        == VmEventKind::OperationFailed {
            operation: Operation::Save,
            reason: "volume full".into()
        }));
    assert_eq!(state(&m, id), "Paused");
    // A refused restore leaves the VM Saved.
    m.save(id).unwrap();
    m.poll(0);
    m.hypervisor().fail_next(FakeOp::Restore, "bad file");
    assert!(m.restore(id, 0).is_err());
    assert_eq!(state(&m, id), "Saved");
    assert!(store.get("/vms/alpha.vmrs").is_some());
    m.restore(id, 0).unwrap();
    m.poll(0);
    // No shutdown service: stop turns the VM off at once.
    m.hypervisor()
        .fail_next(FakeOp::Shutdown, "no shutdown service");
    m.stop(id, 0).unwrap();
    assert_eq!(state(&m, id), "Off");
    assert!(m.hypervisor().partitions.is_empty());
    // A turn off that fails: Failed, and the error says so.
    m.start(id, 0).unwrap();
    m.poll(0);
    m.hypervisor().fail_next(FakeOp::TurnOff, "kernel said no");
    assert!(m.turn_off(id).is_err());
    assert_eq!(state(&m, id), "Failed");
    m.delete(id).unwrap();
}

#[test]
fn guest_events() {
    let store = MemStore::new();
    let mut m = manager(&store);
    let id = m.define(def("alpha", 1, false)).unwrap();
    m.start(id, 0).unwrap();
    m.poll(0);
    // Heartbeats are reported without a state change.
    m.hypervisor().inject(id, HvEvent::HeartbeatMissed);
    m.hypervisor().inject(id, HvEvent::HeartbeatRestored);
    let kinds: Vec<VmEventKind> = m.poll(0).into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [VmEventKind::HeartbeatMissed, VmEventKind::HeartbeatRestored]
    );
    assert_eq!(state(&m, id), "Running");
    // A guest that exits by itself is Off.
    m.hypervisor().inject(id, HvEvent::Stopped);
    m.poll(0);
    assert_eq!(state(&m, id), "Off");
    assert!(m.hypervisor().partitions.is_empty());
    // A crash: Failed, the partition kept until turned off.
    m.start(id, 0).unwrap();
    m.poll(0);
    m.hypervisor()
        .inject(id, HvEvent::Crashed("triple fault".into()));
    m.poll(0);
    assert_eq!(
        m.state(id).unwrap(),
        &VmState::Failed {
            reason: "triple fault".into()
        }
    );
    assert!(m.info(id).unwrap().has_partition);
    // Starting again destroys the crashed partition first.
    m.start(id, 0).unwrap();
    assert_eq!(m.hypervisor().partitions.len(), 1);
    // Late events that no longer apply are ignored.
    m.hypervisor().inject(id, HvEvent::SaveCompleted);
    m.hypervisor().inject(id, HvEvent::ShutdownAcknowledged);
    m.poll(0);
    assert_eq!(state(&m, id), "Running");
}

#[test]
fn a_guest_that_never_boots_fails_after_the_boot_time_limit() {
    let store = MemStore::new();
    let mut m = manager(&store);
    let id = m.define(def("alpha", 1, false)).unwrap();
    m.hypervisor().guests_boot = false;
    m.start(id, 5 * SECOND).unwrap();
    assert_eq!(m.next_deadline(), Some(25 * SECOND));
    m.poll(24 * SECOND);
    assert_eq!(state(&m, id), "Starting");
    m.poll(25 * SECOND);
    assert!(
        matches!(m.state(id).unwrap(), VmState::Failed { reason } if reason.contains("20000 ms"))
    );
    assert!(m.hypervisor().partitions.is_empty());
    assert!(!m.info(id).unwrap().has_partition);
}

#[test]
fn an_event_flood_is_handled_in_rounds() {
    let store = MemStore::new();
    let mut m = manager(&store);
    let id = m.define(def("alpha", 1, false)).unwrap();
    m.start(id, 0).unwrap();
    for _ in 0..(EVENTS_PER_POLL * 2) {
        m.hypervisor().inject(id, HvEvent::HeartbeatMissed);
    }
    let heartbeats = |events: Vec<VmEvent>| {
        events
            .iter()
            .filter(|e| e.kind == VmEventKind::HeartbeatMissed)
            .count()
    };
    // The guest's boot came first, then the flood, 256 events a round.
    assert_eq!(heartbeats(m.poll(0)), EVENTS_PER_POLL - 1);
    assert_eq!(state(&m, id), "Running");
    assert_eq!(heartbeats(m.poll(0)), EVENTS_PER_POLL);
    assert_eq!(heartbeats(m.poll(0)), 1);
    assert_eq!(heartbeats(m.poll(0)), 0);
}

#[test]
fn as_a_node_service() {
    use crate::node::{Poll, Service};
    let store = MemStore::new();
    let mut m = manager(&store);
    assert_eq!(m.name(), "vm");
    let id = m.define(def("alpha", 1, false)).unwrap();
    assert_eq!(Service::poll(&mut m, 0, 0), Poll::Idle(None));
    // Starting: the boot time limit is the deadline until the guest is up.
    m.hypervisor().guests_boot = false;
    m.start(id, 0).unwrap();
    assert_eq!(Service::poll(&mut m, 0, 0), Poll::Idle(Some(20 * SECOND)));
    m.hypervisor().inject(id, HvEvent::Booted);
    assert_eq!(Service::poll(&mut m, SECOND, 0), Poll::Idle(None));
    assert_eq!(state(&m, id), "Running");
    for _ in 0..EVENTS_PER_POLL {
        m.hypervisor().inject(id, HvEvent::HeartbeatMissed);
    }
    assert_eq!(Service::poll(&mut m, SECOND, 0), Poll::Busy);
    assert_eq!(Service::poll(&mut m, SECOND, 0), Poll::Idle(None));
    // The events waited in the manager, in order.
    let events = m.take_events();
    assert_eq!(events.len(), 3 + EVENTS_PER_POLL);
    assert!(events.windows(2).all(|w| w[1].seq == w[0].seq + 1));
}

#[test]
fn events_nobody_takes_are_bounded() {
    let store = MemStore::new();
    let mut m = manager(&store);
    let id = m.define(def("alpha", 1, false)).unwrap();
    m.start(id, 0).unwrap();
    for _ in 0..MAX_PENDING_EVENTS {
        m.hypervisor().inject(id, HvEvent::HeartbeatMissed);
    }
    for _ in 0..(MAX_PENDING_EVENTS / EVENTS_PER_POLL + 1) {
        m.step(0);
    }
    assert_eq!(m.dropped_events(), 3);
    let events = m.take_events();
    assert_eq!(events.len(), MAX_PENDING_EVENTS);
    assert_eq!(events[0].seq, 4, "the oldest were dropped; the gap shows");
}

#[test]
fn disks_are_added_and_removed_hot_and_cold_and_persisted() {
    let store = MemStore::new();
    let mut m = manager(&store);
    Store::write(&mut store.clone(), "/extra.vhd", b"vhd").unwrap();
    Store::write(&mut store.clone(), "/more.vhd", b"vhd").unwrap();
    let id = m.define(def("alpha", 1, false)).unwrap();
    // Off: only the definition changes.
    m.add_disk(
        id,
        DiskSlot {
            path: "/more.vhd".into(),
            lun: 2,
        },
    )
    .unwrap();
    let file = String::from_utf8(store.get("/vms/alpha.json").unwrap()).unwrap();
    assert!(file.contains("/more.vhd"), "{file}");
    m.start(id, 0).unwrap();
    m.poll(SECOND);
    let lun = |p: &str, lun| DiskSlot {
        path: p.into(),
        lun,
    };
    // Running: through the hypervisor, then written.
    m.add_disk(id, lun("/extra.vhd", 1)).unwrap();
    let disks = m.hypervisor().partition_of(id).unwrap().disks.clone();
    assert_eq!(
        disks,
        [
            (0, "alpha.vhd".into()),
            (1, "extra.vhd".into()),
            (2, "more.vhd".into())
        ]
    );
    let reloaded = definition::decode(&store.get("/vms/alpha.json").unwrap()).unwrap();
    assert_eq!(reloaded.disks.len(), 3);
    // Refusals: LUN in use, file attached, missing file, LUN out of range.
    assert!(matches!(
        m.add_disk(id, lun("/other.vhd", 1)),
        Err(VmError::Conflict(why)) if why.contains("LUN 1 of VM alpha is in use")
    ));
    assert!(matches!(
        m.add_disk(id, lun("/extra.vhd", 3)),
        Err(VmError::Conflict(why)) if why.contains("attached to VM alpha")
    ));
    assert!(matches!(
        m.add_disk(id, lun("/nothere.vhd", 3)),
        Err(VmError::Definition(e)) if e.field == "path" && e.reason.contains("does not exist")
    ));
    assert!(matches!(
        m.add_disk(id, lun("/more.vhd", 200)),
        Err(VmError::Definition(e)) if e.field == "lun"
    ));
    // A hypervisor refusal leaves the definition alone.
    m.hypervisor()
        .fail_next(FakeOp::RemoveDisk, "the guest holds it");
    assert!(matches!(m.remove_disk(id, 1), Err(VmError::Hypervisor(_))));
    assert_eq!(m.info(id).unwrap().definition.disks.len(), 3);
    m.remove_disk(id, 1).unwrap();
    assert_eq!(m.hypervisor().partition_of(id).unwrap().disks.len(), 2);
    assert!(matches!(
        m.remove_disk(id, 1),
        Err(VmError::NoSuchDisk { lun: 1, .. })
    ));
    let reloaded = definition::decode(&store.get("/vms/alpha.json").unwrap()).unwrap();
    assert_eq!(reloaded.disks.len(), 2);
    // Not while Saving.
    m.save(id).unwrap();
    assert!(matches!(
        m.add_disk(id, lun("/extra.vhd", 1)),
        Err(VmError::InvalidState { .. })
    ));
    assert_eq!(m.console(id).unwrap(), Vec::<String>::new());
}

#[test]
fn a_failed_write_undoes_a_hot_add() {
    let store = MemStore::new();
    let mut m = manager(&store);
    Store::write(&mut store.clone(), "/extra.vhd", b"vhd").unwrap();
    let id = m.define(def("alpha", 1, false)).unwrap();
    m.start(id, 0).unwrap();
    m.poll(SECOND);
    assert_eq!(m.console(id).unwrap(), ["alpha: booted"]);
    store.set_failing(true);
    let r = m.add_disk(
        id,
        DiskSlot {
            path: "/extra.vhd".into(),
            lun: 1,
        },
    );
    assert!(matches!(r, Err(VmError::Store(_))), "{r:?}");
    assert_eq!(m.hypervisor().partition_of(id).unwrap().disks.len(), 1);
    assert_eq!(m.info(id).unwrap().definition.disks.len(), 1);
}
