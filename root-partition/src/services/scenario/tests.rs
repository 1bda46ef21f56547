//! The scenario interpreter over the real kernel core (`FakeKernel`) and a
//! fake machine that builds children through the one construction path,
//! lets their vCPUs move while the root serves its buses, and records
//! what it was asked.

use std::format;
use std::string::String;
use std::vec::Vec;

use ipc::hypercall::{Call, Name};
use microkernel::object::ObjectKind;
use microkernel::object::vcpu::State;
use microkernel::svm::vmcb::offset;

use super::*;
use crate::config;
use crate::hv::fake::{FakeKernel, TSC_KHZ};
use crate::partition::{self, Purpose, discover};
use crate::services::migration::quick::QuickError;
use crate::services::vm::machine::Partitions;

/// The root's side as a scenario drives it, recorded.
struct Fake<'k> {
    k: &'k FakeKernel,
    /// What it was asked, in order.
    ops: Vec<String>,
    /// Bus services asked for.
    served: u64,
    /// Requests every storage controller reports completed.
    requests: u64,
    /// Hot adds are refused with this.
    refuse: Option<&'static str>,
    /// The saved child's spec.
    saved: Option<ChildSpec>,
    /// Heartbeats go unanswered.
    lost: bool,
}

impl<'k> Fake<'k> {
    fn new(k: &'k FakeKernel) -> Self {
        Fake {
            k,
            ops: Vec::new(),
            served: 0,
            requests: 1_000,
            refuse: None,
            saved: None,
            lost: false,
        }
    }

    fn build(&self, root: &Root, spec: &ChildSpec, base: u64) -> Result<Child, Failure> {
        let built = partition::build(self.k, root, spec, base, Purpose::Restore)?;
        for vcpu in built.vcpu_list() {
            self.k
                .call(&Call::VcpuStart { vcpu })
                .map_err(|e| Failure::Call("start", e))?;
        }
        Ok(built.child(spec))
    }
}

impl Buses for Fake<'_> {
    /// The children run meanwhile: every vCPU that may run moves on.
    fn service_all(&mut self) -> usize {
        self.served += 1;
        let mut host = self.k.host.borrow_mut();
        let host = &mut *host;
        for id in host.k.objects.ids_of(ObjectKind::Vcpu) {
            let Some(v) = host.k.objects.vcpu(id) else {
                continue;
            };
            if v.partition == host.root || !matches!(v.state, State::Ready | State::Running(_)) {
                continue;
            }
            if let Some(vmcb) = host.m.vmcbs.get_mut(&v.vmcb) {
                let rip = vmcb.read_u64(offset::RIP);
                vmcb.write_u64(offset::RIP, rip + 1);
            }
        }
        0
    }
    fn drain(&mut self, index: usize) {
        self.ops.push(format!("drain {index}"));
    }
    fn request_shutdown(&mut self, index: usize, _: u32) -> Result<(), String> {
        self.ops.push(format!("shutdown {index}"));
        Err(String::from("no channel"))
    }
    fn shutdown_state(&mut self, _: usize) -> Option<ShutdownState> {
        None
    }
    fn detach(&mut self, index: usize) {
        self.ops.push(format!("detach {index}"));
    }
}

impl Partitions for Fake<'_> {
    fn start(
        &mut self,
        root: &Root,
        spec: &ChildSpec,
        index: usize,
        children: &[Option<Child>],
    ) -> Result<Child, Failure> {
        self.ops
            .push(format!("start {} {index}", spec.name.as_str()));
        let base = place(root, children, spec.memory).ok_or(Failure::NoMemory)?;
        self.build(root, spec, base)
    }
    fn heartbeat_state(&self, _: usize) -> Option<Heartbeat> {
        Some(if self.lost {
            Heartbeat::Unresponsive(3)
        } else {
            Heartbeat::Alive { uptime_ms: 1 }
        })
    }
    fn forget(&mut self, index: usize) {
        self.ops.push(format!("forget {index}"));
    }
    fn save(
        &mut self,
        _: &Root,
        child: &Child,
        index: usize,
        path: &str,
    ) -> Result<(Stats, u64), QuickError> {
        self.ops.push(format!("save {index} {path}"));
        self.saved = Some(child.spec);
        let stats = Stats {
            blackout_ns: 7_000_000,
            ..Stats::default()
        };
        Ok((stats, 4096))
    }
    fn saved_memory(&mut self, path: &str) -> Result<u64, QuickError> {
        self.saved
            .map(|s| s.memory)
            .ok_or(QuickError::Format(format!("nothing in {path}")))
    }
    fn restore(
        &mut self,
        root: &Root,
        path: &str,
        at: Placement,
        spec: &ChildSpec,
    ) -> Result<Child, QuickError> {
        self.ops.push(format!("restore {} {path}", at.index));
        let mut shape = *spec;
        let saved = self.saved.ok_or(QuickError::NoVolume)?;
        (shape.name, shape.memory) = (saved.name, saved.memory);
        self.build(root, &shape, at.base)
            .map_err(|e| QuickError::Format(format!("{e:?}")))
    }
    fn image_span(&self) -> (u64, u64) {
        (0x1000, 0x4000)
    }
    fn report(&mut self, name: &str, _: &Stats) {
        self.ops.push(format!("report {name}"));
    }
    fn add_disk(&mut self, index: usize, lun: u8, disk: &str) -> Result<(), String> {
        self.ops.push(format!("hot add {index} {lun} {disk}"));
        self.refuse.map_or(Ok(()), |why| Err(String::from(why)))
    }
    fn remove_disk(&mut self, index: usize, lun: u8) -> Result<(), String> {
        self.ops.push(format!("hot remove {index} {lun}"));
        Ok(())
    }
    fn console(&self, _: usize) -> Vec<String> {
        Vec::new()
    }
}

impl ScenarioMachine for Fake<'_> {
    fn signals(&self, _: usize) -> u32 {
        0
    }
    fn frames_received(&self, _: usize) -> u64 {
        0
    }
    fn storage_served(&self, _: usize) -> u64 {
        self.requests
    }
    fn live(
        &mut self,
        _: &Root,
        _: &mut Child,
        index: usize,
        _: u64,
        _: Option<AbortAt>,
    ) -> Result<Stats, MigrateError> {
        self.ops.push(format!("live {index}"));
        Err(MigrateError::NoWindow)
    }
}

fn scenario(text: &str) -> Scenario {
    config::scenario(text, "t").unwrap()
}

fn lines(k: &FakeKernel) -> Vec<String> {
    k.lines.borrow().clone()
}

#[test]
fn a_scenario_runs_its_actions_in_order_and_prints_each_step() {
    let k = FakeKernel::new();
    let root = discover(&k.boot_info()).unwrap();
    let mut m = Fake::new(&k);
    let s = scenario(
        "scenario t\n\
         child a memory=16M vcpus=2 workload=spin\n\
         child b memory=16M vcpus=1 workload=disk disk=alpha.vhd\n\
         pause a\n\
         resume a\n\
         hotadd b extra.vhd lun=1 after=2\n\
         hotremove b lun=1 after=3\n\
         save a a.sav after=1\n\
         restore a a.sav\n\
         destroy b\n\
         stop a timeout=10\n",
    );
    let objects = k
        .host
        .borrow()
        .k
        .objects
        .ids_of(ObjectKind::Partition)
        .len();
    run(&k, &mut m, &root, &s).unwrap();
    assert_eq!(
        m.ops,
        [
            "start a 0",
            "start b 1",
            "hot add 1 1 extra.vhd",
            "hot remove 1 1",
            "save 0 /a.sav",
            "forget 0",
            "restore 0 /a.sav",
            "detach 1",
            "shutdown 0",
            "detach 0",
        ]
    );
    let printed = lines(&k);
    let expected = [
        format!("{}", markers::ChildPaused("a")),
        format!("{}", markers::ChildResumed("a")),
        String::from("root: a saved to a.sav (4096 bytes, 7 ms paused) and stopped"),
        String::from("root: a restored from a.sav into memory at "),
        format!("{}", markers::ChildDestroyed { name: "b", mib: 16 }),
        String::from("(no integration channel): turned off"),
        String::from(markers::ALL_CHILDREN_ENDED),
    ];
    let mut at = 0;
    for want in &expected {
        let found = printed[at..].iter().position(|l| l.contains(want.as_str()));
        assert!(found.is_some(), "{want:?} after line {at} in {printed:?}");
        at += found.unwrap() + 1;
    }
    // Every child is gone: the kernel holds only the root again.
    assert_eq!(
        k.host
            .borrow()
            .k
            .objects
            .ids_of(ObjectKind::Partition)
            .len(),
        objects
    );
}

#[test]
fn a_refused_hot_add_ends_the_scenario_with_its_line() {
    let k = FakeKernel::new();
    let root = discover(&k.boot_info()).unwrap();
    let mut m = Fake::new(&k);
    m.refuse = Some("NoSuchFile");
    let s = scenario(
        "scenario t\n\
         child h memory=16M vcpus=1 workload=disk disk=alpha.vhd\n\
         hotadd h extra.vhd lun=1\n\
         destroy h\n",
    );
    let r = run(&k, &mut m, &root, &s);
    assert!(matches!(r, Err(Failure::Check("hot add"))), "{r:?}");
    assert!(k.printed("root: hot add of extra.vhd failed: NoSuchFile"));
    assert_eq!(
        m.ops,
        ["start h 0", "hot add 0 1 extra.vhd"],
        "nothing after"
    );
}

#[test]
fn a_scenario_naming_a_missing_child_fails_with_missing() {
    for action in [
        "pause x",
        "resume x",
        "destroy x",
        "forget x",
        "stop x",
        "lost x",
    ] {
        let k = FakeKernel::new();
        let root = discover(&k.boot_info()).unwrap();
        let mut m = Fake::new(&k);
        let s = scenario(&format!(
            "scenario t\nchild a memory=16M vcpus=1 workload=spin\n{action}\n"
        ));
        let r = run(&k, &mut m, &root, &s);
        assert!(
            matches!(r, Err(Failure::Missing("child"))),
            "{action}: {r:?}"
        );
        assert_eq!(m.ops, ["start a 0"], "{action}");
    }
}

#[test]
fn a_restore_of_a_file_never_saved_fails_with_its_line() {
    let k = FakeKernel::new();
    let root = discover(&k.boot_info()).unwrap();
    let mut m = Fake::new(&k);
    let s = scenario("scenario t\nchild a memory=16M vcpus=1 workload=spin\nrestore a a.sav\n");
    let r = run(&k, &mut m, &root, &s);
    assert!(matches!(r, Err(Failure::Check("restore"))), "{r:?}");
    assert!(k.printed("root: a.sav cannot be restored: Format(\"nothing in /a.sav\")"));
    assert!(!m.ops.iter().any(|o| o.starts_with("restore")));
}

#[test]
fn waits_end_on_their_deadline_on_the_kernel_clock() {
    let k = FakeKernel::new();
    let root = discover(&k.boot_info()).unwrap();
    let mut m = Fake::new(&k);
    // The heartbeat never goes: the wait ends 20 ms on, with its line.
    let s = scenario("scenario t\nchild a memory=16M vcpus=1 workload=spin\nlost a within=20\n");
    let before = k.tsc.get();
    let r = run(&k, &mut m, &root, &s);
    let waited = k.tsc.get() - before;
    assert!(
        matches!(r, Err(Failure::Check("heartbeat not lost"))),
        "{r:?}"
    );
    assert!(k.printed("root: a still answers heartbeats after 20 ms"));
    assert!(waited >= 20 * TSC_KHZ, "{waited}");
    assert!(waited < 40 * TSC_KHZ, "{waited}");
    assert!(m.served > 0, "the buses are served while it waits");
    // A lost heartbeat ends the wait at once.
    let k = FakeKernel::new();
    let root = discover(&k.boot_info()).unwrap();
    let mut m = Fake::new(&k);
    m.lost = true;
    let s = scenario(
        "scenario t\nchild a memory=16M vcpus=1 workload=spin\nlost a within=20\ndestroy a\n",
    );
    let before = k.tsc.get();
    run(&k, &mut m, &root, &s).unwrap();
    assert!(k.tsc.get() - before < 20 * TSC_KHZ);
    assert!(!k.printed("still answers heartbeats"));
    // `after=MS` lets that much time pass on the clock first.
    let k = FakeKernel::new();
    let root = discover(&k.boot_info()).unwrap();
    let mut m = Fake::new(&k);
    let s =
        scenario("scenario t\nchild a memory=16M vcpus=1 workload=spin\nsave a a.sav after=30\n");
    let before = k.tsc.get();
    let r = run(&k, &mut m, &root, &s);
    assert!(r.is_ok(), "{r:?}");
    assert!(k.tsc.get() - before >= 30 * TSC_KHZ);
    assert!(k.printed(markers::ALL_CHILDREN_ENDED));
    let child = m.saved.unwrap();
    assert_eq!(child.name, Name::new("a"));
}
