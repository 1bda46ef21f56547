//! The machine's hypervisor over the real kernel core (`FakeKernel`), with
//! a fake of the partitions' side that builds children through the one
//! construction path and records what the bus was asked.

use std::cell::RefCell;
use std::string::String;
use std::vec::Vec;

use ipc::hypercall::Name;

use super::*;
use crate::hv::fake::FakeKernel;
use crate::partition::Failure;
use crate::partition::control::Buses;
use crate::partition::{self, Purpose, discover};
use crate::services::migration::quick::QuickError;
use crate::services::vm::definition::VmUuid;

#[derive(Default)]
struct Bus {
    calls: Vec<String>,
    shutdown: Option<ShutdownState>,
    heartbeat: Option<Heartbeat>,
    save_fails: bool,
    /// The name the saved file holds.
    saved_name: Option<&'static str>,
}

struct Parts<'k> {
    k: &'k FakeKernel,
    bus: RefCell<Bus>,
}

fn build(k: &FakeKernel, root: &Root, spec: &ChildSpec, base: u64) -> Result<Child, Failure> {
    let b = partition::build(k, root, spec, base, Purpose::Restore)?;
    let mut vcpus = [None; 4];
    for (slot, v) in vcpus.iter_mut().zip(b.vcpu_list()) {
        *slot = Some(v);
    }
    Ok(Child {
        spec: *spec,
        partition: b.partition,
        memory: b.memory,
        vcpus,
        base,
        pages: b.pages,
        ended: false,
        from_root: None,
    })
}

impl Buses for Parts<'_> {
    fn service_all(&mut self) -> usize {
        0
    }
    fn detach(&mut self, index: usize) {
        self.bus.borrow_mut().calls.push(format!("detach {index}"));
    }
    fn drain(&mut self, index: usize) {
        self.bus.borrow_mut().calls.push(format!("drain {index}"));
    }
    fn shutdown_state(&mut self, _: usize) -> Option<ShutdownState> {
        self.bus.borrow().shutdown
    }
    fn request_shutdown(&mut self, index: usize, deadline_ms: u32) -> Result<(), String> {
        self.bus
            .borrow_mut()
            .calls
            .push(format!("shutdown {index} {deadline_ms}"));
        Ok(())
    }
}

impl Partitions for Parts<'_> {
    fn start(
        &mut self,
        root: &Root,
        spec: &ChildSpec,
        _index: usize,
        children: &[Option<Child>],
    ) -> Result<Child, Failure> {
        let base = place(root, children, spec.memory).ok_or(Failure::NoMemory)?;
        let child = build(self.k, root, spec, base)?;
        for vcpu in child.vcpus.iter().flatten() {
            self.k
                .call(&Call::VcpuStart { vcpu: *vcpu })
                .map_err(|e| Failure::Call("start", e))?;
        }
        Ok(child)
    }
    fn save(
        &mut self,
        _: &Root,
        _: &Child,
        index: usize,
        path: &str,
    ) -> Result<(Stats, u64), QuickError> {
        let mut bus = self.bus.borrow_mut();
        bus.calls.push(format!("save {index} {path}"));
        if bus.save_fails {
            return Err(QuickError::Aborted(String::from("the volume is full")));
        }
        let stats = Stats {
            blackout_ns: 7_000_000,
            ..Stats::default()
        };
        Ok((stats, 4096))
    }
    fn saved_memory(&mut self, _: &str) -> Result<u64, QuickError> {
        Ok(1 << 20)
    }
    fn image_span(&self) -> (u64, u64) {
        (0, 0)
    }
    fn restore(
        &mut self,
        root: &Root,
        _: &str,
        at: Placement,
        spec: &ChildSpec,
    ) -> Result<Child, QuickError> {
        let mut shape = *spec;
        shape.memory = 1 << 20;
        if let Some(name) = self.bus.borrow().saved_name {
            shape.name = Name::new(name);
        }
        build(self.k, root, &shape, at.base).map_err(|e| QuickError::Format(format!("{e:?}")))
    }
    fn report(&mut self, name: &str, _: &Stats) {
        self.bus.borrow_mut().calls.push(format!("report {name}"));
    }
    fn forget(&mut self, index: usize) {
        self.bus.borrow_mut().calls.push(format!("forget {index}"));
    }
    fn heartbeat_state(&self, _: usize) -> Option<Heartbeat> {
        self.bus.borrow().heartbeat
    }
    fn add_disk(&mut self, index: usize, lun: u8, path: &str) -> Result<(), String> {
        let mut bus = self.bus.borrow_mut();
        bus.calls.push(format!("add_disk {index} {lun} {path}"));
        if path == "/missing.vhd" {
            return Err(String::from("NoSuchFile"));
        }
        Ok(())
    }
    fn remove_disk(&mut self, index: usize, lun: u8) -> Result<(), String> {
        self.bus
            .borrow_mut()
            .calls
            .push(format!("remove_disk {index} {lun}"));
        Ok(())
    }
    fn console(&self, index: usize) -> Vec<String> {
        alloc::vec![format!("console of {index}")]
    }
}

fn machine(k: &FakeKernel) -> MachineHv<&FakeKernel, Parts<'_>> {
    let root = discover(&k.boot_info()).unwrap();
    let parts = Parts {
        k,
        bus: RefCell::new(Bus::default()),
    };
    MachineHv::new(k, parts, root, 30_000_000_000)
}

fn spec(name: &str) -> ChildSpec {
    let mut s = ChildSpec::new(Name::new(name));
    s.memory = 1 << 20;
    s
}

fn def(name: &str) -> VmDefinition {
    VmDefinition {
        name: name.into(),
        id: VmUuid::from_random(1),
        memory_mib: 1,
        vcpus: 1,
        workload: "idle".into(),
        args: vec![],
        disks: vec![],
        nic: None,
        priority: 0,
        cpu: None,
        autostart: false,
    }
}

fn vm(n: u64) -> VmId {
    VmId::from_raw(n)
}

fn calls(m: &mut MachineHv<&FakeKernel, Parts<'_>>) -> Vec<String> {
    std::mem::take(&mut m.parts().bus.borrow_mut().calls)
}

fn alive(k: &FakeKernel, child: &Child) -> bool {
    k.call(&Call::PartitionStatus {
        partition: child.partition,
    })
    .is_ok()
}

#[test]
fn a_started_vm_boots_pauses_resumes_and_is_turned_off() {
    let k = FakeKernel::new();
    let mut m = machine(&k);
    let mut h = m.start(vm(1), &spec("alpha"), &def("alpha")).unwrap();
    assert_eq!(m.poll(0), Some((vm(1), HvEvent::Booted)));
    let child = m.child_at(h).unwrap();
    assert!(alive(&k, &child));
    m.pause(&mut h).unwrap();
    m.resume(&mut h).unwrap();
    // The status check finds it running: nothing to report.
    assert_eq!(m.poll(1), None);
    assert_eq!(m.next_deadline(), Some(STATUS_PERIOD_NS + 1));
    m.turn_off(h).unwrap();
    assert_eq!(calls(&mut m), ["detach 0"]);
    assert!(!alive(&k, &child), "the partition is gone");
    assert!(m.child_at(h).is_none());
    assert_eq!(m.next_deadline(), None);
    assert!(
        m.pause(&mut h).is_err(),
        "no partition in the slot any more"
    );
}

#[test]
fn integration_changes_become_events_once() {
    let k = FakeKernel::new();
    let mut m = machine(&k);
    let _ = m.start(vm(1), &spec("alpha"), &def("alpha")).unwrap();
    assert_eq!(m.poll(0), Some((vm(1), HvEvent::Booted)));
    m.parts().bus.borrow_mut().heartbeat = Some(Heartbeat::Unresponsive(5));
    m.parts().bus.borrow_mut().shutdown = Some(ShutdownState::Acknowledged);
    let mut t = STATUS_PERIOD_NS;
    assert_eq!(m.poll(t), Some((vm(1), HvEvent::ShutdownAcknowledged)));
    assert_eq!(m.poll(t), Some((vm(1), HvEvent::HeartbeatMissed)));
    t += STATUS_PERIOD_NS;
    assert_eq!(m.poll(t), None, "reported once");
    m.parts().bus.borrow_mut().heartbeat = Some(Heartbeat::Alive { uptime_ms: 9 });
    t += STATUS_PERIOD_NS;
    assert_eq!(m.poll(t), Some((vm(1), HvEvent::HeartbeatRestored)));
}

#[test]
fn a_save_destroys_the_partition_and_a_failed_one_leaves_it() {
    let k = FakeKernel::new();
    let mut m = machine(&k);
    let mut h = m.start(vm(1), &spec("alpha"), &def("alpha")).unwrap();
    let _ = m.poll(0);
    let child = m.child_at(h).unwrap();
    m.parts().bus.borrow_mut().save_fails = true;
    m.save(&mut h, "/vms/alpha.vmrs").unwrap();
    assert_eq!(
        m.poll(1),
        Some((
            vm(1),
            HvEvent::SaveFailed(String::from("Aborted(\"the volume is full\")"))
        ))
    );
    assert!(alive(&k, &child), "a failed save leaves the VM running");
    m.parts().bus.borrow_mut().save_fails = false;
    let _ = calls(&mut m);
    m.save(&mut h, "/vms/alpha.vmrs").unwrap();
    assert_eq!(m.poll(2), Some((vm(1), HvEvent::SaveCompleted)));
    assert_eq!(
        calls(&mut m),
        ["save 0 /vms/alpha.vmrs", "report alpha", "forget 0"]
    );
    assert!(!alive(&k, &child));
    assert!(k.printed("root: alpha saved to /vms/alpha.vmrs (4096 bytes, 7 ms paused)"));
}

#[test]
fn a_restore_of_another_vms_file_is_refused_and_undone() {
    let k = FakeKernel::new();
    let mut m = machine(&k);
    m.parts().bus.borrow_mut().saved_name = Some("beta");
    let e = m
        .restore(vm(1), &spec("alpha"), &def("alpha"), "/vms/alpha.vmrs")
        .unwrap_err();
    assert_eq!(e.0, "/vms/alpha.vmrs holds beta, not alpha");
    assert_eq!(calls(&mut m), ["detach 0"]);
    assert!(m.child_at(0).is_none());
    // Its memory went back: a right restore fits in the same place.
    m.parts().bus.borrow_mut().saved_name = None;
    let h = m
        .restore(vm(1), &spec("alpha"), &def("alpha"), "/vms/alpha.vmrs")
        .unwrap();
    assert_eq!(m.poll(0), Some((vm(1), HvEvent::Booted)));
    assert!(alive(&k, &m.child_at(h).unwrap()));
}

#[test]
fn every_slot_in_use_is_an_error() {
    let k = FakeKernel::new();
    let mut m = machine(&k);
    for i in 0..MAX_CHILDREN {
        let name = format!("vm{i}");
        m.start(vm(i as u64), &spec(&name), &def(&name)).unwrap();
    }
    let e = m.start(vm(99), &spec("late"), &def("late")).unwrap_err();
    assert_eq!(e.0, "every one of the 8 partition slots is in use");
}

#[test]
fn a_shutdown_request_names_the_stop_limit() {
    let k = FakeKernel::new();
    let mut m = machine(&k);
    let mut h = m.start(vm(1), &spec("alpha"), &def("alpha")).unwrap();
    m.request_shutdown(&mut h).unwrap();
    assert_eq!(calls(&mut m), ["shutdown 0 30000"]);
    let mut none = 5;
    assert!(m.request_shutdown(&mut none).is_err());
}
