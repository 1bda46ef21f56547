//! Live and quick migration over the real kernel core (`FakeKernel`): a
//! child made through the kernel with known memory, moved by the engine
//! through hypercalls, and checked page by page and register by register.

use super::*;

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::cell::{Cell, RefCell};
use std::collections::BTreeSet;

use exfat::{FormatOptions, Volume};
use ipc::hypercall::{Call, Name, Rights, SlotHandle, Status};
use ipc::migration::FLAG_SAVED_STATE;
use ipc::vcpu_state::VcpuState;
use partition_rt::sync::SpinLock;
use vhd::MemDevice;

use crate::config::{AbortAt, ChildSpec};
use crate::disks::SharedVolume;
use crate::hv::fake::FakeKernel;
use crate::migrate::Source;
use crate::partition::{Child, Root, discover};
use quick::{Placement, QuickError, Restoring};

/// Pages of the test children (8 MiB: a pass crosses a control point).
const PAGES: u64 = 2048;

/// A partition made through the kernel, as the binary makes one.
struct Made {
    partition: SlotHandle,
    memory: SlotHandle,
    self_cap: SlotHandle,
    vcpus: Vec<SlotHandle>,
    base: u64,
    /// Its SLAT in the fake machine (to mark pages written by the guest).
    slat: u64,
}

fn h(raw: u64) -> SlotHandle {
    SlotHandle::from_raw(raw).unwrap()
}

fn make(k: &FakeKernel, root: &Root, base: u64, pages: u64, vcpus: usize, name: &str) -> Made {
    let before: BTreeSet<u64> = k.host.borrow().m.slats.keys().copied().collect();
    let r = k
        .call(&Call::PartitionCreate {
            authority: root.authority,
            memory: root.ram,
            first_page: (base - root.ram_range.start) / 4096,
            pages,
            name: Name::new(name),
            ceiling: 0,
        })
        .unwrap();
    let slat = *k
        .host
        .borrow()
        .m
        .slats
        .keys()
        .find(|s| !before.contains(s))
        .unwrap();
    let (partition, memory, self_cap) = (h(r[0]), h(r[1]), h(r[2]));
    k.call(&Call::MemoryMap {
        partition,
        memory,
        first_page: 1,
        gpa: 0x1000,
        pages: pages - 1,
        access: Rights::READ | Rights::WRITE | Rights::EXECUTE,
    })
    .unwrap();
    let vcpus = (0..vcpus)
        .map(|_| {
            h(k.call(&Call::VcpuCreate {
                partition,
                rip: 0,
                rsp: 0,
                cr3: 0,
                arg: 0,
                flags: 0,
            })
            .unwrap()[0])
        })
        .collect();
    Made {
        partition,
        memory,
        self_cap,
        vcpus,
        base,
        slat,
    }
}

/// Bytes of page `page` of the test pattern (`salt` tells versions apart).
fn pattern(page: u64, salt: u8) -> [u8; 4096] {
    let mut p = [0u8; 4096];
    for (i, b) in p.iter_mut().enumerate() {
        *b = (page as u8).wrapping_mul(31) ^ (i as u8) ^ salt;
    }
    p
}

fn page_at(k: &FakeKernel, base: u64, page: u64) -> [u8; 4096] {
    let mut p = [0u8; 4096];
    k.read(base + page * 4096, &mut p);
    p
}

fn vcpu_state(k: &FakeKernel, vcpu: SlotHandle) -> VcpuState {
    k.scratch(|s| {
        let buffer = s.address();
        s.call(&Call::VcpuGetState { vcpu, buffer })?;
        Ok(VcpuState::from_page(s.page()))
    })
    .unwrap()
}

/// A running child of [`PAGES`] with every third page patterned and its
/// vCPUs in distinctive states (set before they start).
fn running_child(k: &FakeKernel, root: &Root, vcpus: usize) -> (Child, Made) {
    let made = make(k, root, root.pool.start, PAGES, vcpus, "mover");
    for page in (1..PAGES).step_by(3) {
        k.write(made.base + page * 4096, &pattern(page, 0));
    }
    for (i, v) in made.vcpus.iter().enumerate() {
        let mut state = vcpu_state(k, *v);
        state.rip = 0x40_1000 + i as u64 * 0x10;
        state.gprs = [0x1111 * (i as u64 + 1); 16];
        set_vcpu_state(
            k,
            &made.vcpus,
            i as u16,
            &state.to_page()[..ipc::vcpu_state::WORDS * 8],
        )
        .unwrap();
        k.call(&Call::VcpuStart { vcpu: *v }).unwrap();
    }
    let mut slots = [None; 4];
    for (slot, v) in slots.iter_mut().zip(&made.vcpus) {
        *slot = Some(*v);
    }
    let mut spec = ChildSpec::new(Name::new("mover"));
    spec.memory = PAGES * 4096;
    spec.vcpus = vcpus as u32;
    spec.args = [7, 8, 9, 10];
    let child = Child {
        spec,
        partition: made.partition,
        memory: made.memory,
        vcpus: slots,
        base: made.base,
        pages: PAGES,
        ended: false,
        from_root: None,
    };
    (child, made)
}

/// A bus rebuilt by a restore: its saved bytes, disks and partition.
type Rebuilt = (Vec<u8>, Vec<(u8, String)>, SlotHandle);

/// The buses as a migration sees them, with the guest's writes (and the
/// root's, which the dirty log does not see) made at chosen service calls.
#[derive(Default)]
struct FakeBus {
    /// Per `service_all` call, in order: (page, salt, whether the guest
    /// wrote it: dirty) written into the source.
    writes: RefCell<VecDeque<Vec<(u64, u8, bool)>>>,
    /// The source's base and SLAT.
    source: Cell<(u64, u64)>,
    services: Cell<usize>,
    no_window: bool,
    /// Refuse every move but one back to `home`.
    fail_move: bool,
    home: Cell<Option<SlotHandle>>,
    moved: RefCell<Vec<(usize, Moved)>>,
    announced: RefCell<Vec<usize>>,
    shared: Vec<(u64, u64)>,
    to_root: Cell<u64>,
    saved: Vec<u8>,
    luns: Vec<(u8, String)>,
    restored: RefCell<Option<Rebuilt>>,
}

impl FakeBus {
    fn guest_and_root_writes(&self, k: &FakeKernel) {
        let Some(writes) = self.writes.borrow_mut().pop_front() else {
            return;
        };
        let (base, slat) = self.source.get();
        for (page, salt, dirty) in writes {
            k.write(base + page * 4096, &pattern(page, salt));
            if dirty {
                k.host.borrow_mut().m.write_guest(slat, page * 4096);
            }
        }
    }
}

/// The bus host of a test: a fake bus and the kernel its writes go to.
struct Host<'a> {
    k: &'a FakeKernel,
    bus: FakeBus,
}

impl BusHost for Host<'_> {
    fn service_all(&self) {
        self.bus.services.set(self.bus.services.get() + 1);
        self.bus.guest_and_root_writes(self.k);
    }
    fn can_move(&self, _: usize) -> bool {
        !self.bus.no_window
    }
    fn shared_pages(&self, _: usize) -> Vec<(u64, u64)> {
        self.bus.shared.clone()
    }
    fn move_child(&self, index: usize, to: Moved) -> Result<(), Refused> {
        if self.bus.fail_move && Some(to.partition) != self.bus.home.get() {
            return Err(Refused);
        }
        self.bus.moved.borrow_mut().push((index, to));
        Ok(())
    }
    fn announce(&self, index: usize) {
        self.bus.announced.borrow_mut().push(index);
    }
    fn save_bus(&self, _: usize, out: &mut [u8]) -> Option<(usize, Vec<(u8, String)>)> {
        out.get_mut(..self.bus.saved.len())?
            .copy_from_slice(&self.bus.saved);
        Some((self.bus.saved.len(), self.bus.luns.clone()))
    }
    fn channel_ports(&self, _: usize) -> Vec<(usize, u64, u64)> {
        Vec::new()
    }
    fn to_root_port(&self, _: usize) -> u64 {
        self.bus.to_root.get()
    }
    fn make_to_root(
        &self,
        _root: &Root,
        _index: usize,
        partition: SlotHandle,
        at: Option<SlotHandle>,
    ) -> Result<SlotHandle, Failure> {
        let call = |c: Call| self.k.call(&c).map_err(|s| Failure::Call("to_root", s));
        let port = crate::partition::handle(call(Call::PortCreate)?[0])?;
        self.bus.to_root.set(port.raw());
        let at = at.ok_or(Failure::Check("slot"))?;
        call(Call::CapDelegateAt {
            slot: port,
            target: partition,
            rights: Rights::SIGNAL,
            at,
        })?;
        Ok(at)
    }
    fn restore_bus(&self, bus: RestoredBus<'_>) -> Result<(), String> {
        *self.bus.restored.borrow_mut() =
            Some((bus.saved.to_vec(), bus.luns.to_vec(), bus.grant.partition));
        Ok(())
    }
    fn forget(&self, _: usize) {}
}

fn test_layout() -> crate::layout::Layout {
    let image = ipc::boot::PARTITION_IMAGE_BASE;
    crate::layout::Layout::new(PAGES * 4096, image, image + 0x10000).unwrap()
}

fn setup() -> (FakeKernel, Root) {
    let k = FakeKernel::new();
    let root = discover(&k.boot_info()).unwrap();
    (k, root)
}

/// The destination of a live migration, made as `create_target` makes it.
fn target_for(k: &FakeKernel, root: &Root, child: &Child) -> (Target, u64) {
    let vcpus = child.vcpus.iter().flatten().count();
    let made = make(
        k,
        root,
        root.pool.start + (16 << 20),
        child.pages,
        vcpus,
        "moved",
    );
    k.call(&Call::CapClone {
        source: child.partition,
        target: made.partition,
    })
    .unwrap();
    let slat = made.slat;
    (
        Target {
            partition: made.partition,
            memory: made.memory,
            vcpus: made.vcpus,
            base: made.base,
        },
        slat,
    )
}

#[test]
fn a_live_migration_moves_every_page_the_dirtied_ones_again_and_the_vcpu_states() {
    let (k, root) = setup();
    let (mut child, made) = running_child(&k, &root, 2);
    let before: Vec<VcpuState> = made.vcpus.iter().map(|v| vcpu_state(&k, *v)).collect();
    let mut bus = FakeBus::default();
    bus.source.set((made.base, made.slat));
    // Service call 1 is at the start of pass 1 (before any copy), call 2
    // a thousand pages into it: page 10 is copied by then and must be
    // sent again; page 3 is shared with the root, which writes it without
    // the dirty log seeing (the blackout sends shared pages).
    bus.shared = vec![(3 * 4096, 1)];
    bus.writes.borrow_mut().push_back(vec![]);
    bus.writes
        .borrow_mut()
        .push_back(vec![(10, 0x55, true), (2000, 0x66, true), (3, 0x77, false)]);
    let host = Host { k: &k, bus };
    let old = child.partition;
    let mut made_target = None;
    let stats = live(&k, &host, &mut child, 0, None, |c| {
        let (t, slat) = target_for(&k, &root, c);
        made_target = Some((t.partition, t.vcpus.clone(), t.base, slat));
        Ok(t)
    })
    .unwrap();
    let (partition, vcpus, base, _) = made_target.unwrap();
    assert!(host.bus.services.get() >= 2, "the buses were served");
    // The child is the destination now.
    assert_eq!(child.partition, partition);
    assert_eq!(child.base, base);
    assert_eq!(child.vcpus[0], Some(vcpus[0]));
    assert_eq!(child.vcpus[1], Some(vcpus[1]));
    // Every page arrived, including the versions written after their copy.
    assert_eq!(page_at(&k, base, 10), pattern(10, 0x55));
    assert_eq!(page_at(&k, base, 2000), pattern(2000, 0x66));
    assert_eq!(page_at(&k, base, 3), pattern(3, 0x77));
    for page in 1..PAGES {
        assert_eq!(
            page_at(&k, base, page),
            page_at(&k, made.base, page),
            "page {page}"
        );
    }
    // Page 10 went twice: in pass 1 and again after it was dirtied.
    let sent: u64 = stats.passes.iter().map(|p| p.pages).sum::<u64>() + stats.blackout_pages;
    assert!(stats.passes[0].dirty_pages >= 2, "{stats:?}");
    assert!(sent >= PAGES - 1 + 2, "{sent} pages sent");
    // vCPU states round-tripped.
    for (i, v) in vcpus.iter().enumerate() {
        assert_eq!(vcpu_state(&k, *v), before[i], "vCPU {i}");
    }
    // The bus followed; the source is gone.
    let moved = host.bus.moved.borrow();
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].0, 0);
    assert_eq!(moved[0].1.partition, partition);
    assert_eq!(moved[0].1.vcpu0, vcpus[0]);
    assert_eq!(*host.bus.announced.borrow(), vec![0]);
    assert_eq!(
        k.call(&Call::DirtyLog {
            partition: old,
            enable: false
        }),
        Err(Status::StaleSlot)
    );
}

#[test]
fn without_a_window_the_child_stays_and_nothing_is_made() {
    let (k, root) = setup();
    let (mut child, _) = running_child(&k, &root, 1);
    let host = Host {
        k: &k,
        bus: FakeBus {
            no_window: true,
            ..FakeBus::default()
        },
    };
    let old = child.partition;
    let result = live(&k, &host, &mut child, 0, None, |_| {
        panic!("no destination without a window")
    });
    assert!(matches!(result, Err(MigrateError::NoWindow)));
    assert_eq!(child.partition, old);
}

#[test]
fn an_aborted_migration_destroys_the_destination_and_the_source_runs_on() {
    let (k, root) = setup();
    let (mut child, made) = running_child(&k, &root, 1);
    let host = Host {
        k: &k,
        bus: FakeBus::default(),
    };
    let mut target = None;
    let result = live(&k, &host, &mut child, 0, Some(AbortAt::Blackout), |c| {
        let (t, _) = target_for(&k, &root, c);
        target = Some(t.partition);
        Ok(t)
    });
    assert!(matches!(result, Err(MigrateError::Aborted(_))));
    assert_eq!(child.partition, made.partition);
    // The destination is gone, the source's dirty log is off and its vCPU
    // can be paused (it runs).
    let target = target.unwrap();
    assert_eq!(
        k.call(&Call::DirtyLog {
            partition: target,
            enable: false
        }),
        Err(Status::StaleSlot)
    );
    k.call(&Call::VcpuPause {
        vcpu: made.vcpus[0],
    })
    .unwrap();
    assert!(host.bus.moved.borrow().is_empty());
}

#[test]
fn a_failed_handover_moves_the_bus_back_and_resumes_the_source() {
    let (k, root) = setup();
    let (mut child, made) = running_child(&k, &root, 1);
    let host = Host {
        k: &k,
        bus: FakeBus {
            fail_move: true,
            ..FakeBus::default()
        },
    };
    host.bus.home.set(Some(made.partition));
    let result = live(&k, &host, &mut child, 0, None, |c| {
        Ok(target_for(&k, &root, c).0)
    });
    assert!(matches!(result, Err(MigrateError::Handover("bus"))));
    assert_eq!(child.partition, made.partition);
    // Moved back to the source's own memory and vCPU.
    let moved = host.bus.moved.borrow();
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].1.partition, made.partition);
    assert_eq!(moved[0].1.vcpu0, made.vcpus[0]);
    k.call(&Call::VcpuPause {
        vcpu: made.vcpus[0],
    })
    .unwrap();
}

#[test]
fn the_source_reads_pages_and_dirty_bits_through_the_kernel() {
    let (k, root) = setup();
    let (child, made) = running_child(&k, &root, 1);
    let host = Host {
        k: &k,
        bus: FakeBus {
            shared: vec![(0x7000, 2)],
            ..FakeBus::default()
        },
    };
    let mut source = ChildSource::new(&k, &host, &child, 0);
    assert_eq!(source.pages(), PAGES);
    let mut buf = [0u8; 4096];
    source.read_page(4, &mut buf).unwrap();
    assert_eq!(buf, pattern(4, 0));
    source.read_page(0, &mut buf).unwrap();
    assert_eq!(buf, [0; 4096], "page 0 is never mapped");
    source.log_dirty(true).unwrap();
    k.host.borrow_mut().m.write_guest(made.slat, 5 * 4096);
    k.host.borrow_mut().m.write_guest(made.slat, 1999 * 4096);
    let mut bits = vec![0u64; PAGES as usize / 64];
    source.fetch_dirty(0, &mut bits).unwrap();
    let dirty: Vec<u64> = (0..PAGES)
        .filter(|p| bits[*p as usize / 64] & (1 << (p % 64)) != 0)
        .collect();
    assert_eq!(dirty, vec![5, 1999]);
    // Paused, the pages shared with the root count as dirty too.
    source.pause().unwrap();
    assert!(source.paused());
    source.fetch_dirty(0, &mut bits).unwrap();
    let dirty: Vec<u64> = (0..PAGES)
        .filter(|p| bits[*p as usize / 64] & (1 << (p % 64)) != 0)
        .collect();
    assert_eq!(dirty, vec![7, 8]);
    source.resume().unwrap();
    source.log_dirty(false).unwrap();
}

/// An empty 64 MiB exFAT volume in memory.
fn volume() -> SharedVolume<MemDevice> {
    let options = FormatOptions {
        size: 64 << 20,
        cluster_size: None,
        label: String::from("SAVES"),
        serial: 7,
    };
    let volume = Volume::format(MemDevice::new(Vec::new()), &options).unwrap();
    Arc::new(SpinLock::new(volume))
}

/// A child with ports to and from the root in its space, as the binary
/// gives them.
fn child_with_ports(k: &FakeKernel, root: &Root, host: &Host<'_>) -> (Child, Made) {
    let (mut child, made) = running_child(k, root, 2);
    host.make_to_root(root, 0, made.partition, Some(h(5 | (1 << 16))))
        .unwrap();
    let from_root = h(k.call(&Call::PortCreate).unwrap()[0]);
    k.call(&Call::CapDelegate {
        slot: from_root,
        target: made.partition,
        rights: Rights::BIND,
    })
    .unwrap();
    child.from_root = Some(from_root);
    (child, made)
}

#[test]
fn a_quick_save_is_read_back_and_restored_into_a_new_partition() {
    let (k, root) = setup();
    let host = Host {
        k: &k,
        bus: FakeBus {
            saved: b"the root's side of the bus".to_vec(),
            luns: vec![(0, String::from("/disk.vhd"))],
            ..FakeBus::default()
        },
    };
    let (child, made) = child_with_ports(&k, &root, &host);
    host.bus.source.set((made.base, made.slat));
    host.bus
        .writes
        .borrow_mut()
        .extend([vec![], vec![(12, 0x42, true)]]);
    let before: Vec<VcpuState> = {
        for v in &made.vcpus {
            k.call(&Call::VcpuPause { vcpu: *v }).unwrap();
        }
        let s = made.vcpus.iter().map(|v| vcpu_state(&k, *v)).collect();
        for v in &made.vcpus {
            k.call(&Call::VcpuResume { vcpu: *v }).unwrap();
        }
        s
    };
    let caps = quick::inspect_caps(&k, &host, &child, 0).unwrap();
    let roles: Vec<u8> = caps.iter().map(|e| e.role).collect();
    use crate::migrate::saved::role;
    assert!(roles.contains(&role::SELF));
    assert!(roles.contains(&role::TO_ROOT));
    assert!(roles.contains(&role::FROM_ROOT));

    let volume = volume();
    let (stats, bytes) = quick::save(&k, &host, &volume, &child, 0, "/mover.sav").unwrap();
    assert!(stats.passes.len() == 1, "one pass while it runs");
    assert!(
        bytes > 4096 * (PAGES / 3),
        "{bytes} bytes for the patterned pages"
    );
    assert_eq!(volume.lock().open("/mover.sav").unwrap().len(), bytes);
    // Paused at the end: its vCPUs cannot be paused again.
    assert_eq!(
        k.call(&Call::VcpuPause {
            vcpu: made.vcpus[0]
        }),
        Err(Status::InvalidState)
    );

    assert_eq!(
        quick::saved_memory(&volume, "/mover.sav").unwrap(),
        PAGES * 4096
    );
    let file = volume.lock().open("/mover.sav").unwrap();
    let header = quick::read_header(&volume, &file).unwrap();
    assert_eq!(header.pages, PAGES);
    assert_eq!(header.vcpus, 2);
    assert_eq!(header.name(), "mover");
    assert_ne!(header.flags & FLAG_SAVED_STATE, 0);

    // Restored into a partition made elsewhere, as the binary makes it.
    let into = make(&k, &root, root.pool.start + (32 << 20), PAGES, 2, "mover");
    let placement = Placement {
        base: into.base,
        index: 1,
        image_span: (0, 0),
    };
    let layout = test_layout();
    let restored = quick::restore_into(
        &k,
        &host,
        &root,
        &volume,
        &file,
        &header,
        Restoring {
            partition: into.partition,
            memory: into.memory,
            self_cap: into.self_cap,
            vcpus: into.vcpus.clone(),
            base: placement.base,
            index: placement.index,
            layout,
        },
    )
    .unwrap();
    assert_eq!(restored.partition, into.partition);
    assert_eq!(restored.pages, PAGES);
    assert_eq!(restored.spec.args, [7, 8, 9, 10]);
    assert_eq!(restored.spec.vcpus, 2);
    assert!(restored.from_root.is_some());
    for page in 1..PAGES {
        assert_eq!(
            page_at(&k, into.base, page),
            page_at(&k, made.base, page),
            "page {page}"
        );
    }
    assert_eq!(page_at(&k, into.base, 12), pattern(12, 0x42));
    for (i, v) in into.vcpus.iter().enumerate() {
        k.call(&Call::VcpuPause { vcpu: *v }).unwrap();
        assert_eq!(vcpu_state(&k, *v), before[i], "vCPU {i}");
    }
    // The bus got its saved bytes and disks back.
    let (saved, luns, partition) = host.bus.restored.borrow_mut().take().unwrap();
    assert_eq!(saved, b"the root's side of the bus");
    assert_eq!(luns, vec![(0, String::from("/disk.vhd"))]);
    assert_eq!(partition, into.partition);
    // Its ports are in the saved slots, same kinds.
    let again = quick::inspect_caps(&k, &host, &restored, 1).unwrap();
    let at = |caps: &[crate::migrate::saved::SlotEntry], r| {
        caps.iter().find(|e| e.role == r).map(|e| e.at)
    };
    for r in [role::TO_ROOT, role::FROM_ROOT] {
        assert_eq!(at(&again, r), at(&caps, r), "role {r}");
    }
}

#[test]
fn a_damaged_saved_state_is_refused() {
    let (k, root) = setup();
    let host = Host {
        k: &k,
        bus: FakeBus {
            saved: b"bus".to_vec(),
            ..FakeBus::default()
        },
    };
    let (child, _) = child_with_ports(&k, &root, &host);
    let volume = volume();
    quick::save(&k, &host, &volume, &child, 0, "/good.sav").unwrap();
    let mut file = volume.lock().open("/good.sav").unwrap();
    let len = file.len();

    // Not a saved state at all.
    {
        let mut v = volume.lock();
        let mut junk = v.create("/junk.sav").unwrap();
        v.write(
            &mut junk,
            0,
            b"this is not a capvisor saved state, just text",
        )
        .unwrap();
    }
    match quick::saved_memory(&volume, "/junk.sav") {
        Err(QuickError::Format(why)) => assert!(why.contains("not a capvisor saved state")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        quick::saved_memory(&volume, "/missing.sav"),
        Err(QuickError::File(_))
    ));

    // A byte flipped in the middle: the header still reads, the restore
    // refuses the stream (its checksum) and starts nothing.
    let header = quick::read_header(&volume, &file).unwrap();
    let mut byte = [0u8; 1];
    let at = len / 2;
    volume.lock().read(&file, at, &mut byte).unwrap();
    byte[0] ^= 0x5a;
    volume.lock().write(&mut file, at, &byte).unwrap();
    let into = make(&k, &root, root.pool.start + (32 << 20), PAGES, 2, "mover");
    let layout = test_layout();
    let result = quick::restore_into(
        &k,
        &host,
        &root,
        &volume,
        &file,
        &header,
        Restoring {
            partition: into.partition,
            memory: into.memory,
            self_cap: into.self_cap,
            vcpus: into.vcpus.clone(),
            base: into.base,
            index: 1,
            layout,
        },
    );
    match result {
        Err(QuickError::Format(why)) => assert!(!why.is_empty()),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a damaged file was restored"),
    }
    assert!(host.bus.restored.borrow().is_none(), "no bus rebuilt");
    // Its vCPUs never started.
    assert_eq!(
        k.call(&Call::VcpuResume {
            vcpu: into.vcpus[0]
        }),
        Err(Status::InvalidState)
    );

    // Truncated: refused too.
    {
        let mut v = volume.lock();
        let mut short = v.create("/short.sav").unwrap();
        let mut bytes = vec![0u8; (len / 3) as usize];
        v.read(&file, 0, &mut bytes).unwrap();
        v.write(&mut short, 0, &bytes).unwrap();
    }
    let short = volume.lock().open("/short.sav").unwrap();
    let header = quick::read_header(&volume, &short).unwrap();
    let into = make(&k, &root, root.pool.start + (48 << 20), PAGES, 2, "mover");
    let result = quick::restore_into(
        &k,
        &host,
        &root,
        &volume,
        &short,
        &header,
        Restoring {
            partition: into.partition,
            memory: into.memory,
            self_cap: into.self_cap,
            vcpus: into.vcpus.clone(),
            base: into.base,
            index: 1,
            layout,
        },
    );
    assert!(matches!(result, Err(QuickError::Format(_))), "truncated");
}

#[test]
fn a_migration_stream_is_not_a_saved_state() {
    let volume = volume();
    {
        let mut v = volume.lock();
        let mut f = v.create("/live.stream").unwrap();
        let mut buf = vec![0u8; ipc::migration::HEADER_LEN + 64];
        let n = ipc::migration::Encoder::new()
            .header(&ipc::migration::Header::new(16, 1, 0, "x"), &mut buf)
            .unwrap();
        v.write(&mut f, 0, &buf[..n]).unwrap();
    }
    match quick::saved_memory(&volume, "/live.stream") {
        Err(QuickError::Format(why)) => assert!(why.contains("not a saved state"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_report_prints_the_statistics_and_the_json_in_pieces() {
    let k = FakeKernel::new();
    let stats = Stats {
        memory_bytes: 123 << 20,
        total_bytes: 99 << 20,
        ..Stats::default()
    };
    report(&k, "alpha", &stats);
    let lines = k.lines.borrow();
    let pieces: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("root: alpha: migration json "))
        .collect();
    assert!(pieces.len() >= 2, "{lines:?}");
    let n = pieces.len();
    let mut json = String::new();
    for (i, l) in pieces.iter().enumerate() {
        let rest = l
            .strip_prefix(&alloc::format!(
                "root: alpha: migration json {}/{n} ",
                i + 1
            ))
            .unwrap();
        assert!(rest.len() <= JSON_PIECE);
        json.push_str(rest);
    }
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["memory_bytes"], 123u64 << 20);
    assert!(lines.len() > n, "the human-readable lines too");
}

#[test]
fn the_clock_is_the_kernels() {
    let k = FakeKernel::new();
    let mut clock = Tsc::new(&k);
    let a = clock.now_ns();
    k.advance_ns(5_000_000);
    let b = clock.now_ns();
    assert!(b - a >= 5_000_000);
    assert!(clock.ticks() > 0);
}
