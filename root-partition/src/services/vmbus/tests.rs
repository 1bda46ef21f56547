//! Host tests of the VMBus host over the fake kernel (the real kernel
//! core): a child built through the kernel, its side of the bus played
//! with the `vsc` crate over the machine's RAM where its frames are.

use std::string::String;
use std::vec;
use std::vec::Vec;

use core::cell::{Cell, RefCell};
use ipc::boot::PhysRange;
use ipc::hypercall::{Call, Name, Rights, SlotHandle};
use ipc::vmbus::control::{CONSOLE_CLASS, CONTROL_RING_PAGES, INTEGRATION_CLASS, OpenStatus};
use ipc::vmbus::integration::{MISSED_LIMIT, ShutdownReason};
use ipc::vmbus::ring::{self, Consumer, Producer};
use vhd::{DEFAULT_BLOCK_SIZE, MemDevice, NewDisk, Vhd};
use vsc::bus::{BusError, GuestBus, RingPages};
use vsc::console::ConsoleClient;
use vsc::integration::{IntegrationClient, ShutdownAnswer};
use vsp::bus::{Heartbeat, ShutdownState};

use super::*;
use crate::disks::{SharedVolume, VolumeFile};
use crate::hv::fake::{FakeKernel, FakeRings};
use crate::hv::{Kernel, handle};
use crate::partition::{Root, discover, place};

/// Where the test's windows start (guest-physical space the fake root
/// has no RAM at).
const WINDOWS: u64 = 1 << 32;
const MIB: u64 = 1 << 20;
const SECOND: u64 = 1_000_000_000;

/// The interrupt side, in cells.
#[derive(Default)]
struct TestSignals {
    ports: RefCell<Vec<(usize, SlotHandle)>>,
    counts: RefCell<Vec<u64>>,
}

impl Signals for TestSignals {
    fn bind(&self, slot: usize, port: SlotHandle) {
        self.ports.borrow_mut().retain(|p| p.0 != slot);
        self.ports.borrow_mut().push((slot, port));
    }
    fn port(&self, slot: usize) -> Option<SlotHandle> {
        self.ports
            .borrow()
            .iter()
            .find(|p| p.0 == slot)
            .map(|p| p.1)
    }
    fn count(&self, slot: usize) -> u64 {
        self.counts.borrow().get(slot).copied().unwrap_or(0)
    }
}

/// A NIC that receives nothing and counts what it sends.
#[derive(Default)]
struct TestUplink {
    sent: Cell<usize>,
}

impl Uplink for TestUplink {
    fn receive(&self, _max: usize, _take: &mut dyn FnMut(&[u8])) -> usize {
        0
    }
    fn send(&self, _frame: &[u8]) -> bool {
        self.sent.set(self.sent.get() + 1);
        true
    }
}

type TestHost = VmbusHost<FakeKernel, MemDevice, TestUplink, TestSignals, Box<RootSwitch>>;

/// A child the kernel built: its partition, memory, vCPU 0, where its
/// frames are and its layout.
struct TestChild {
    grant: Grant,
}

/// Runs `f` on a thread with room for the switch (~650 KiB, built on the
/// stack before it is boxed in unoptimised builds).
fn big_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

fn new_host() -> (TestHost, Root) {
    let k = FakeKernel::new();
    let root = discover(&k.boot_info()).unwrap();
    let mut host = VmbusHost::new(
        k,
        TestUplink::default(),
        TestSignals::default(),
        Box::new(RootSwitch::new()),
    );
    host.choose_windows(PhysRange {
        start: WINDOWS,
        end: WINDOWS + MAX_CHILDREN as u64 * WINDOW_BYTES,
    });
    (host, root)
}

/// Builds child `index` (8 MiB) through the kernel, as `children::start` does.
fn build_child(k: &FakeKernel, root: &Root, index: usize, taken: u64) -> TestChild {
    let memory = 8 * MIB;
    let span = ipc::boot::PARTITION_IMAGE_BASE;
    let layout = Layout::new(memory, span, span + 0x4000).unwrap();
    let base = place(root, &[], memory).unwrap() - taken;
    let first_page = (base - root.ram_range.start) / 4096;
    let r = k
        .call(&Call::PartitionCreate {
            authority: root.authority,
            memory: root.ram,
            first_page,
            pages: memory / 4096,
            name: Name::new("alpha"),
            ceiling: 0,
        })
        .unwrap();
    let (partition, child_memory) = (handle(r[0]).unwrap(), handle(r[1]).unwrap());
    k.call(&Call::MemoryMap {
        partition,
        memory: child_memory,
        first_page: 1,
        gpa: 0x1000,
        pages: memory / 4096 - 1,
        access: Rights::READ | Rights::WRITE | Rights::EXECUTE,
    })
    .unwrap();
    let r = k
        .call(&Call::VcpuCreate {
            partition,
            rip: span,
            rsp: 0x8000,
            cr3: layout.cr3(),
            arg: layout.boot_page(),
            flags: 0,
        })
        .unwrap();
    TestChild {
        grant: Grant {
            root: root.authority,
            root_vcpu: root.vcpu,
            partition,
            memory: child_memory,
            vcpu0: handle(r[0]).unwrap(),
            base,
            layout,
            index,
            to_child: [None; CHANNELS],
            shared: Vec::new(),
        },
    }
}

/// The child's side: its memory at its frames, as the child sees it.
struct Guest {
    k_rings: FakeRings,
    layout: Layout,
}

impl Guest {
    fn new(k: &FakeKernel, grant: &Grant) -> Self {
        Guest {
            k_rings: k.physical_rings(grant.base, grant.layout.memory as usize),
            layout: grant.layout,
        }
    }

    fn at(&self, gpa: u64, len: u64) -> FakeRings {
        self.k_rings
            .clone()
            .split_at(gpa as usize)
            .1
            .split_at(len as usize)
            .0
    }

    /// The control channel, as the root initialised it.
    fn bus(&self) -> GuestBus<FakeRings> {
        let control = self.layout.vmbus_control();
        let (out, inb) = self
            .at(control.start, control.len())
            .split_at(CONTROL_RING_PAGES as usize * 4096);
        GuestBus::new(Producer::new(out).unwrap(), Consumer::new(inb).unwrap())
    }

    /// Rings of `pages` pages at `gpa` (`outbound` first), initialised.
    fn rings(&self, gpa: u64, pages: u32, outbound: u32) -> (RingPages, FakeRings, FakeRings) {
        let (out, inb) = self
            .at(gpa, u64::from(pages) * 4096)
            .split_at(outbound as usize * 4096);
        ring::initialize(&out).unwrap();
        ring::initialize(&inb).unwrap();
        let pages = RingPages {
            gpa,
            pages,
            outbound_pages: outbound,
        };
        (pages, out, inb)
    }
}

fn service(host: &RefCell<TestHost>) {
    host.borrow_mut().service_all();
}

/// A host with child 0 attached, connected and its console open.
fn with_console() -> (
    RefCell<TestHost>,
    Grant,
    Guest,
    GuestBus<FakeRings>,
    ConsoleClient<FakeRings>,
) {
    let (mut host, root) = new_host();
    let child = build_child(host.kernel(), &root, 0, 0);
    let guest = Guest::new(host.kernel(), &child.grant);
    host.attach(Name::new("alpha"), child.grant.clone(), None)
        .unwrap();
    let host = RefCell::new(host);
    let mut bus = guest.bus();
    bus.connect(|| {}, || service(&host), 100).unwrap();
    let heap = child.grant.layout.heap.start;
    let (pages, out, inb) = guest.rings(heap, 12, 10);
    let opened = bus
        .open(CONSOLE_CLASS, pages, || {}, || service(&host), 100)
        .unwrap();
    assert_ne!(opened.signal_port, opened.event_port);
    let console = ConsoleClient::new(Producer::new(out).unwrap(), Consumer::new(inb).unwrap());
    (host, child.grant, guest, bus, console)
}

fn write_line(host: &RefCell<TestHost>, console: &mut ConsoleClient<FakeRings>, line: &str) {
    console
        .write_line(line.as_bytes(), || {}, || service(host), 100)
        .unwrap();
    service(host);
}

#[test]
fn attach_maps_the_control_channel_in_the_window_and_makes_ports() {
    big_stack(|| {
        let (mut host, root) = new_host();
        let child = build_child(host.kernel(), &root, 0, 0);
        let g = child.grant.clone();
        let (signal, event) = host.attach(Name::new("alpha"), g.clone(), None).unwrap();
        assert_ne!(signal, event);
        let control = g.layout.vmbus_control();
        // The root's window page leads to the child's frame.
        let k = host.kernel();
        assert_eq!(
            k.root_translate(WINDOWS + control.start),
            Some(g.base + control.start)
        );
        assert_eq!(
            host.shared_pages(0),
            vec![(control.start, control.len() / 4096)]
        );
        // The control channel's ports: the child signals one bound to the
        // root's vector for slot 0.
        let ports = host.channel_ports(0);
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].0, 0);
        assert_eq!(
            Some(ports[0].1),
            host.signals().port(0).map(|p: SlotHandle| p.raw())
        );
        assert!(host.any_bus());
        // A second child's window is its own.
        let other = build_child(host.kernel(), &root, 1, 8 * MIB);
        host.attach(Name::new("beta"), other.grant.clone(), None)
            .unwrap();
        assert_eq!(
            host.kernel()
                .root_translate(WINDOWS + WINDOW_BYTES + control.start),
            Some(other.grant.base + control.start)
        );
        // Index past the table: refused.
        let mut far = other.grant.clone();
        far.index = MAX_CHILDREN;
        assert_eq!(
            host.attach(Name::new("gamma"), far, None),
            Err(OpenStatus::NoResources)
        );
    });
}

#[test]
fn a_console_opened_by_the_child_is_mapped_and_its_lines_printed() {
    big_stack(|| {
        let (host, grant, _guest, _bus, mut console) = with_console();
        let heap = grant.layout.heap.start;
        {
            let h = host.borrow();
            assert!(
                h.kernel()
                    .printed(&ipc::markers::ConsoleOpened("alpha").to_string())
            );
            assert!(h.shared_pages(0).contains(&(heap, 12)));
            assert_eq!(
                h.kernel().root_translate(WINDOWS + heap + 11 * 4096),
                Some(grant.base + heap + 11 * 4096)
            );
            // The console's ports: channel 1, bound for slot 1.
            assert!(h.channel_ports(0).iter().any(|p| p.0 == 1));
        }
        write_line(&host, &mut console, "hello from alpha");
        write_line(&host, &mut console, "second line");
        let h = host.borrow();
        let lines = h.kernel().lines.borrow();
        let hello = lines.iter().position(|l| l.contains("hello from alpha"));
        let second = lines.iter().position(|l| l.contains("second line"));
        assert!(hello.is_some() && second > hello, "{lines:?}");
        // The bus keeps them for the management API's `vm console`.
        assert_eq!(h.console_tail(0), ["hello from alpha", "second line"]);
        assert!(h.console_tail(1).is_empty());
    });
}

#[test]
fn the_console_tail_keeps_the_last_lines() {
    big_stack(|| {
        let (host, _grant, _guest, _bus, mut console) = with_console();
        for i in 0..super::CONSOLE_TAIL_LINES + 3 {
            write_line(&host, &mut console, &format!("line {i}"));
        }
        let tail = host.borrow().console_tail(0);
        assert_eq!(tail.len(), super::CONSOLE_TAIL_LINES);
        assert_eq!(tail[0], "line 3");
        assert_eq!(
            tail.last().unwrap(),
            &format!("line {}", super::CONSOLE_TAIL_LINES + 2)
        );
    });
}

#[test]
fn pages_outside_the_childs_grantable_range_are_not_mapped() {
    big_stack(|| {
        let (mut host, root) = new_host();
        let child = build_child(host.kernel(), &root, 0, 0);
        let guest = Guest::new(host.kernel(), &child.grant);
        host.attach(Name::new("alpha"), child.grant.clone(), None)
            .unwrap();
        let host = RefCell::new(host);
        let mut bus = guest.bus();
        bus.connect(|| {}, || service(&host), 100).unwrap();
        let layout = child.grant.layout;
        // Its page tables, its control channel, past its memory.
        for gpa in [
            layout.tables().start,
            layout.vmbus_control().start,
            layout.heap.end,
            layout.memory + 0x10_0000,
        ] {
            let pages = RingPages {
                gpa,
                pages: 4,
                outbound_pages: 2,
            };
            let opened = bus.open(CONSOLE_CLASS, pages, || {}, || service(&host), 100);
            assert!(
                matches!(opened, Err(BusError::Refused(OpenStatus::BadRange))),
                "{gpa:#x}: {opened:?}"
            );
            let h = host.borrow();
            assert_eq!(h.shared_pages(0).len(), 1, "only the control channel");
            if gpa != layout.vmbus_control().start {
                assert_eq!(h.kernel().root_translate(WINDOWS + gpa), None);
            }
        }
        // The heap is: the same request there opens.
        let (pages, _, _) = guest.rings(layout.heap.start, 4, 2);
        bus.open(CONSOLE_CLASS, pages, || {}, || service(&host), 100)
            .unwrap();
        assert_eq!(host.borrow().shared_pages(0).len(), 2);
    });
}

/// Opens child 0's integration channel on its heap (after the console).
fn open_integration(
    host: &RefCell<TestHost>,
    grant: &Grant,
    guest: &Guest,
    bus: &mut GuestBus<FakeRings>,
) -> IntegrationClient<FakeRings> {
    let (pages, out, inb) = guest.rings(grant.layout.heap.start + 16 * 4096, 4, 2);
    bus.open(INTEGRATION_CLASS, pages, || {}, || service(host), 100)
        .unwrap();
    IntegrationClient::new(Producer::new(out).unwrap(), Consumer::new(inb).unwrap())
}

#[test]
fn a_heartbeat_is_lost_after_the_limit_and_reported_once() {
    big_stack(|| {
        let (host, grant, guest, mut bus, _console) = with_console();
        let mut child = open_integration(&host, &grant, &guest, &mut bus);
        let step = || {
            host.borrow().kernel().advance_ns(SECOND);
            service(&host);
        };
        let answer = |child: &mut IntegrationClient<FakeRings>| {
            child
                .poll(42, |_, _| ShutdownAnswer::Accept, || {})
                .unwrap()
        };
        assert_eq!(host.borrow().heartbeat_state(0), Some(Heartbeat::NoContact));
        for _ in 0..3 {
            step();
            answer(&mut child);
        }
        step();
        assert_eq!(
            host.borrow().heartbeat_state(0),
            Some(Heartbeat::Alive { uptime_ms: 42 })
        );
        // Silence.
        for _ in 0..MISSED_LIMIT + 2 {
            step();
        }
        assert!(matches!(
            host.borrow().heartbeat_state(0),
            Some(Heartbeat::Unresponsive(_))
        ));
        let lost = ipc::markers::HeartbeatLost {
            child: "alpha",
            missed: MISSED_LIMIT,
        }
        .to_string();
        let h = host.borrow();
        let count = h
            .kernel()
            .lines
            .borrow()
            .iter()
            .filter(|l| **l == lost)
            .count();
        assert_eq!(count, 1, "{:?}", h.kernel().lines.borrow());
        assert_eq!(h.heartbeat_state(1), None);
    });
}

#[test]
fn a_shutdown_is_requested_acknowledged_and_done() {
    big_stack(|| {
        let (host, grant, guest, mut bus, _console) = with_console();
        assert_eq!(
            host.borrow_mut().request_shutdown(0, 3000),
            Err(ShutdownError::NotOpen),
            "no integration channel yet"
        );
        let mut child = open_integration(&host, &grant, &guest, &mut bus);
        assert_eq!(host.borrow().shutdown_state(0), Some(ShutdownState::Idle));
        host.borrow_mut().request_shutdown(0, 3000).unwrap();
        assert_eq!(
            host.borrow().shutdown_state(0),
            Some(ShutdownState::Requested)
        );
        let mut asked = None;
        child
            .poll(
                5,
                |reason, ms| {
                    asked = Some((reason, ms));
                    ShutdownAnswer::Accept
                },
                || {},
            )
            .unwrap();
        assert_eq!(asked, Some((ShutdownReason::Stop, 3000)));
        service(&host);
        assert_eq!(
            host.borrow().shutdown_state(0),
            Some(ShutdownState::Acknowledged)
        );
        child.done(|| {}).unwrap();
        service(&host);
        assert_eq!(host.borrow().shutdown_state(0), Some(ShutdownState::Done));
        assert_eq!(
            host.borrow_mut().request_shutdown(5, 3000),
            Err(ShutdownError::NotOpen)
        );
    });
}

/// A 64 MiB exFAT volume in memory holding `a.vhd` (dynamic, 8 MiB).
fn volume() -> SharedVolume<MemDevice> {
    let options = exfat::FormatOptions {
        size: 64 * MIB,
        cluster_size: None,
        label: String::from("TEST"),
        serial: 1,
    };
    let volume = exfat::Volume::format(MemDevice::new(Vec::new()), &options).unwrap();
    let volume = alloc::sync::Arc::new(partition_rt::sync::SpinLock::new(volume));
    volume.lock().create("/a.vhd").unwrap();
    let file = VolumeFile::open(&volume, "/a.vhd").unwrap();
    let disk = NewDisk {
        size: 8 * MIB,
        block_size: DEFAULT_BLOCK_SIZE,
        unique_id: [1; 16],
        timestamp: 0,
    };
    let mut a = Vhd::create_dynamic(file, &disk).unwrap();
    a.flush().unwrap();
    volume
}

#[test]
fn disks_are_added_and_removed_on_the_volume() {
    big_stack(|| {
        let (mut host, root) = new_host();
        let volume = volume();
        let child = build_child(host.kernel(), &root, 0, 0);
        host.attach(Name::new("alpha"), child.grant.clone(), Some(&volume))
            .unwrap();
        let sectors = 8 * MIB / 512;
        assert_eq!(host.add_disk(0, 2, "a.vhd", false).unwrap(), sectors);
        assert!(
            host.kernel().printed(
                &ipc::markers::LunAttached {
                    child: "alpha",
                    lun: 2,
                    file: "a.vhd",
                    sectors,
                    hot: false
                }
                .to_string()
            )
        );
        assert!(matches!(
            host.add_disk(0, 2, "a.vhd", false),
            Err(DiskError::Lun(LunError::InUse))
        ));
        assert!(matches!(
            host.add_disk(0, 4, "missing.vhd", false),
            Err(DiskError::Lun(LunError::Open(_)))
        ));
        assert!(matches!(
            host.add_disk(1, 0, "a.vhd", false),
            Err(DiskError::NoChild)
        ));
        let mut buf = vec![0u8; 4096];
        let (_, luns) = host.save_bus(0, &mut buf).unwrap();
        assert_eq!(luns, vec![(2, String::from("/a.vhd"))]);
        host.remove_disk(0, 2).unwrap();
        assert!(host.kernel().printed("a.vhd"));
        assert!(matches!(
            host.remove_disk(0, 2),
            Err(DiskError::Lun(LunError::NoSuchLun))
        ));
        let (_, luns) = host.save_bus(0, &mut buf).unwrap();
        assert!(luns.is_empty());
        // Free again: a second attach takes it.
        assert_eq!(host.add_disk(0, 0, "a.vhd", true).unwrap(), sectors);
        // A bus without a volume has no controller disks.
        let other = build_child(host.kernel(), &root, 1, 8 * MIB);
        host.attach(Name::new("beta"), other.grant.clone(), None)
            .unwrap();
        assert!(matches!(
            host.add_disk(1, 0, "a.vhd", false),
            Err(DiskError::NoVolume)
        ));
    });
}

#[test]
fn a_saved_bus_is_restored_and_goes_on_and_forget_unmaps() {
    big_stack(|| {
        let volume = volume();
        let (host, grant, _guest, _bus, mut console) = with_console();
        write_line(&host, &mut console, "before the save");
        let heap = grant.layout.heap.start;
        let control = grant.layout.vmbus_control();
        let mut saved = vec![0u8; 16 * 1024];
        let (len, luns) = host.borrow().save_bus(0, &mut saved).unwrap();
        assert!(len > 0);
        assert!(luns.is_empty());
        host.borrow_mut().forget(0);
        {
            let h = host.borrow();
            assert!(!h.any_bus());
            assert!(h.shared_pages(0).is_empty());
            assert_eq!(h.kernel().root_translate(WINDOWS + control.start), None);
            assert_eq!(h.kernel().root_translate(WINDOWS + heap), None);
            assert_eq!(h.save_bus(0, &mut [0; 64]), None);
        }
        // Garbage is refused, and nothing stays mapped.
        let fresh = Grant {
            to_child: [None; CHANNELS],
            shared: Vec::new(),
            ..grant.clone()
        };
        assert!(matches!(
            host.borrow_mut()
                .restore_bus(Name::new("alpha"), fresh.clone(), b"junk", &[], None),
            Err(RestoreBusError::Decode(_))
        ));
        assert_eq!(host.borrow().shared_pages(0), Vec::new());
        // A saved disk without a volume is refused.
        assert!(matches!(
            host.borrow_mut().restore_bus(
                Name::new("alpha"),
                fresh.clone(),
                &saved[..len],
                &[(1, String::from("/a.vhd"))],
                None
            ),
            Err(RestoreBusError::Disk(1, _))
        ));
        assert_eq!(host.borrow().kernel().root_translate(WINDOWS + heap), None);
        host.borrow_mut()
            .restore_bus(
                Name::new("alpha"),
                fresh,
                &saved[..len],
                &[(1, String::from("/a.vhd"))],
                Some(&volume),
            )
            .unwrap();
        {
            let h = host.borrow();
            let shared = h.shared_pages(0);
            assert!(shared.contains(&(control.start, control.len() / 4096)));
            assert!(shared.contains(&(heap, 12)), "{shared:?}");
            assert_eq!(
                h.kernel().root_translate(WINDOWS + heap),
                Some(grant.base + heap)
            );
            let mut again = vec![0u8; 16 * 1024];
            let (len2, luns) = h.save_bus(0, &mut again).unwrap();
            assert_eq!(&again[..len2], &saved[..len], "the same state");
            assert_eq!(luns, vec![(1, String::from("/a.vhd"))]);
        }
        // The console goes on where it was.
        write_line(&host, &mut console, "after the restore");
        assert!(host.borrow().kernel().printed("after the restore"));
        // Detach shuts the channels and unmaps the control channel.
        host.borrow_mut().detach(0);
        let h = host.borrow();
        assert!(!h.any_bus());
        assert_eq!(h.kernel().root_translate(WINDOWS + control.start), None);
    });
}

#[test]
fn without_windows_pages_map_at_their_frames_and_a_move_is_refused() {
    big_stack(|| {
        let (mut host, _root) = new_host();
        host.choose_windows(PhysRange { start: 0, end: 0 });
        assert_eq!(host.window_of(3, 0x4000_0000), (0x4000_0000, u64::MAX));
        host.choose_windows(PhysRange {
            start: WINDOWS,
            end: WINDOWS + WINDOW_BYTES,
        });
        assert_eq!(host.window_of(3, 0x4000_0000).1, u64::MAX, "too small");
        let to = MovedChild {
            partition: SlotHandle::from_raw(1).unwrap(),
            memory: SlotHandle::from_raw(1).unwrap(),
            vcpu0: SlotHandle::from_raw(1).unwrap(),
            base: 0,
        };
        assert_eq!(host.move_child(0, to), Err(OpenStatus::NoResources));
    });
}

#[test]
fn the_switch_needs_starting_and_bench_moves_every_frame() {
    big_stack(|| {
        let (mut host, _root) = new_host();
        assert_eq!(host.bench_switch(10, 64), None);
        host.start_switch();
        assert!(host.bench_switch(100, 64).is_some());
    });
}

#[test]
fn a_moved_bus_maps_the_new_memory_at_the_same_window_addresses() {
    big_stack(|| {
        let (host, grant, _guest, _bus, _console) = with_console();
        let heap = grant.layout.heap.start;
        let control = grant.layout.vmbus_control();
        let root = discover(&host.borrow().kernel().boot_info()).unwrap();
        let target = build_child(host.borrow().kernel(), &root, 0, 8 * MIB).grant;
        let bad = MovedChild {
            partition: target.partition,
            memory: target.vcpu0,
            vcpu0: target.vcpu0,
            base: target.base,
        };
        // A wrong memory capability: refused, the old mappings are back.
        assert!(host.borrow_mut().move_child(0, bad).is_err());
        let h = host.borrow();
        assert_eq!(
            h.kernel().root_translate(WINDOWS + heap),
            Some(grant.base + heap)
        );
        drop(h);
        let to = MovedChild {
            memory: target.memory,
            ..bad
        };
        host.borrow_mut().move_child(0, to).unwrap();
        let h = host.borrow();
        for gpa in [control.start, heap] {
            assert_eq!(
                h.kernel().root_translate(WINDOWS + gpa),
                Some(target.base + gpa)
            );
        }
        assert_eq!(h.shared_pages(0).len(), 2);
    });
}
