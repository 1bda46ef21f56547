//! The one construction path and the child helpers over the real kernel
//! core (`FakeKernel`): what the kernel holds after a build, a failure
//! midway, a destroy.

use std::string::String;
use std::vec;
use std::vec::Vec;

use ipc::boot::PARTITION_IMAGE_BASE;
use ipc::elf::Image;
use ipc::hypercall::{Call, Name, SlotHandle, Status};
use microkernel::object::ObjectKind;
use vsp::bus::ShutdownState;

use super::build::{MAX_VCPUS, vcpu_flags};
use super::control::{self, Buses};
use super::*;
use crate::hv::Kernel;
use crate::hv::fake::FakeKernel;
use crate::layout::Layout;

/// A minimal child image: 0x80 bytes of code at the window's base (entry
/// 0x10 in), 0x80 bytes of data and 0x2f80 of zeroes a page above.
fn elf() -> Vec<u8> {
    let mut b = vec![0u8; 0x200];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[6] = 1;
    b[16..18].copy_from_slice(&2u16.to_le_bytes());
    b[18..20].copy_from_slice(&62u16.to_le_bytes());
    b[24..32].copy_from_slice(&(PARTITION_IMAGE_BASE + 0x10).to_le_bytes());
    b[32..40].copy_from_slice(&64u64.to_le_bytes());
    b[54..56].copy_from_slice(&56u16.to_le_bytes());
    b[56..58].copy_from_slice(&2u16.to_le_bytes());
    let ph = |b: &mut Vec<u8>, at: usize, flags: u32, off: u64, vaddr: u64, memsz: u64| {
        b[at..at + 4].copy_from_slice(&1u32.to_le_bytes());
        b[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
        b[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
        b[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
        b[at + 32..at + 40].copy_from_slice(&0x80u64.to_le_bytes());
        b[at + 40..at + 48].copy_from_slice(&memsz.to_le_bytes());
    };
    ph(&mut b, 64, 1 | 4, 0x100, PARTITION_IMAGE_BASE, 0x80);
    ph(
        &mut b,
        120,
        2 | 4,
        0x180,
        PARTITION_IMAGE_BASE + 0x1000,
        0x3000,
    );
    for (i, byte) in b[0x100..0x200].iter_mut().enumerate() {
        *byte = 0xa0 ^ i as u8;
    }
    b
}

fn spec(name: &str, vcpus: u32, priority: u8, cpu: Option<u32>) -> ChildSpec {
    let mut s = ChildSpec::new(Name::new(name));
    s.memory = 8 << 20;
    s.vcpus = vcpus;
    s.priority = priority;
    s.cpu = cpu;
    s
}

/// The kernel's partition called `name`, if alive: (ceiling, its vCPUs'
/// (priority, processor)).
fn in_kernel(k: &FakeKernel, name: &str) -> Option<(u8, Vec<(u8, u32)>)> {
    let host = k.host.borrow();
    let objects = &host.k.objects;
    let id = objects
        .ids_of(ObjectKind::Partition)
        .into_iter()
        .find(|&p| objects.partition(p).unwrap().name == Name::new(name))?;
    let p = objects.partition(id).unwrap();
    let vcpus = p
        .vcpus
        .iter()
        .map(|&v| {
            let v = objects.vcpu(v).unwrap();
            (v.priority, v.cpu)
        })
        .collect();
    Some((p.ceiling, vcpus))
}

fn live_objects(k: &FakeKernel) -> usize {
    k.host.borrow().k.objects.len()
}

fn root_quota(k: &FakeKernel) -> u32 {
    let host = k.host.borrow();
    host.k.objects.partition(host.root).unwrap().quota
}

fn set_root_quota(k: &FakeKernel, quota: u32) {
    let mut host = k.host.borrow_mut();
    let root = host.root;
    host.k.objects.partition_mut(root).unwrap().quota = quota;
}

/// Reads a child's page at `gpa` through the scratch page.
fn read_child(k: &FakeKernel, partition: SlotHandle, gpa: u64) -> Result<Vec<u8>, Status> {
    k.scratch(|s| {
        let buffer = s.address();
        s.call(&Call::MemoryRead {
            partition,
            gpa,
            buffer,
        })?;
        Ok(s.page().to_vec())
    })
}

/// Whether the root may donate `[base, base + bytes)` again (nobody holds
/// the frames): creates a partition on them and destroys it.
fn frames_free(k: &FakeKernel, root: &Root, base: u64, bytes: u64) -> bool {
    let r = k.call(&Call::PartitionCreate {
        authority: root.authority,
        memory: root.ram,
        first_page: (base - root.ram_range.start) / 4096,
        pages: bytes / 4096,
        name: Name::new("probe"),
        ceiling: 0,
    });
    match r {
        Ok(r) => {
            let partition = handle(r[0]).unwrap();
            k.call(&Call::PartitionDestroy { partition }).unwrap();
            true
        }
        Err(_) => false,
    }
}

#[test]
fn a_new_child_has_its_priority_affinity_image_and_ports() {
    let k = FakeKernel::new();
    let root = discover(&k.boot_info()).unwrap();
    let bytes = elf();
    let image = Image::parse(&bytes, PARTITION_IMAGE_BASE, u64::MAX).unwrap();
    let s = spec("alpha", 2, 3, Some(0));
    let base = place(&root, &[], s.memory).unwrap();
    let built = build(
        &k,
        &root,
        &s,
        base,
        Purpose::New {
            image: &image,
            to_root_vector: 0x80,
        },
    )
    .unwrap();
    let (ceiling, vcpus) = in_kernel(&k, "alpha").unwrap();
    assert_eq!(ceiling, 3);
    assert_eq!(
        vcpus,
        vec![(3, 0), (3, 1)],
        "priority 3 on processors 0 and 1"
    );
    assert_eq!(built.vcpu_list().count(), 2);
    assert_eq!((built.base, built.pages), (base, (8 << 20) / 4096));
    // Its image is in its memory, where its layout puts it.
    let layout = built.layout.unwrap();
    assert_eq!(
        layout,
        Layout::new(8 << 20, image.span().0, image.span().1).unwrap()
    );
    let code = read_child(&k, built.partition, layout.image_gpa(PARTITION_IMAGE_BASE)).unwrap();
    assert_eq!(&code[..0x80], &bytes[0x100..0x180]);
    assert!(code[0x80..].iter().all(|&b| b == 0));
    // Its page tables: the root table's first entry points further in.
    let pml4 = read_child(&k, built.partition, layout.cr3()).unwrap();
    assert!(pml4.iter().any(|&b| b != 0));
    // Its ports: the child holds its side of both.
    let to_root = built.to_root.unwrap();
    let from_root = built.from_root.unwrap();
    assert_ne!(to_root.root, from_root.root);
    let inspect = |slot: SlotHandle| {
        k.call(&Call::CapInspect {
            partition: built.partition,
            index: slot.index,
        })
        .unwrap()
    };
    assert_eq!(inspect(to_root.child)[2], to_root.root.raw());
    assert_eq!(inspect(from_root.child)[2], from_root.root.raw());
    // The boot page names them; launching writes it and starts the vCPUs.
    let vmbus = (to_root.child, from_root.child);
    let boot = build::boot_page(&root, &s, &built, vmbus).unwrap();
    assert_eq!(boot.to_root, Some(to_root.child));
    assert_eq!(boot.from_root, Some(from_root.child));
    build::launch(&k, &s, &built, &boot).unwrap();
    let page = read_child(&k, built.partition, layout.boot_page()).unwrap();
    assert_eq!(&page[..], &boot.to_page()[..]);
    assert!(k.printed("root: started child alpha (2 vcpus, 8 MiB"));
    assert_eq!(
        k.call(&Call::VcpuStart {
            vcpu: built.vcpus[0].unwrap()
        }),
        Err(Status::InvalidState),
        "already started"
    );
}

#[test]
fn a_restore_build_keeps_priority_and_affinity() {
    let k = FakeKernel::new();
    let root = discover(&k.boot_info()).unwrap();
    let s = spec("saved", 2, 5, Some(0));
    let base = place(&root, &[], s.memory).unwrap();
    let built = build(&k, &root, &s, base, Purpose::Restore).unwrap();
    let (ceiling, vcpus) = in_kernel(&k, "saved").unwrap();
    assert_eq!(ceiling, 5);
    assert_eq!(vcpus, vec![(5, 0), (5, 1)]);
    assert!(built.to_root.is_none() && built.from_root.is_none() && built.layout.is_none());
    // Its ports come later, in the saved slots.
    let at = SlotHandle {
        index: 9,
        generation: 0,
    };
    let p = build::make_to_root(&k, &root, 0x81, built.partition, Some(at)).unwrap();
    assert_eq!(p.child, at);
    let r = k
        .call(&Call::CapInspect {
            partition: built.partition,
            index: 9,
        })
        .unwrap();
    assert_eq!(r[2], p.root.raw());
    // Every vCPU gets its own processor after the first.
    assert_eq!(vcpu_flags(&s, 1), 5 | (2 << 8));
    assert_eq!(vcpu_flags(&spec("any", 1, 0, None), 3), 0);
}

#[test]
fn a_migration_target_keeps_priority_affinity_and_the_capabilities() {
    let k = FakeKernel::new();
    let root = discover(&k.boot_info()).unwrap();
    let bytes = elf();
    let image = Image::parse(&bytes, PARTITION_IMAGE_BASE, u64::MAX).unwrap();
    let s = spec("mover", 1, 2, Some(1));
    let mut children = [None; MAX_CHILDREN];
    let base = place(&root, &children, s.memory).unwrap();
    let new = Purpose::New {
        image: &image,
        to_root_vector: 0x80,
    };
    let source = build(&k, &root, &s, base, new).unwrap();
    children[0] = Some(source.child(&s));
    let to = place(&root, &children, s.memory).unwrap();
    assert_ne!(to, base);
    let target = build(
        &k,
        &root,
        &s,
        to,
        Purpose::Target {
            source: source.partition,
        },
    )
    .unwrap();
    let mut both: Vec<(u8, Vec<(u8, u32)>)> = Vec::new();
    {
        let host = k.host.borrow();
        let objects = &host.k.objects;
        for id in objects.ids_of(ObjectKind::Partition) {
            let p = objects.partition(id).unwrap();
            if p.name == Name::new("mover") {
                let v = p.vcpus.iter().map(|&v| objects.vcpu(v).unwrap());
                both.push((p.ceiling, v.map(|v| (v.priority, v.cpu)).collect()));
            }
        }
    }
    assert_eq!(both, vec![(2, vec![(2, 1)]), (2, vec![(2, 1)])]);
    // The same capability in the same slot.
    let slot = source.to_root.unwrap().child.index;
    let inspect = |partition| {
        k.call(&Call::CapInspect {
            partition,
            index: slot,
        })
        .unwrap()
    };
    assert_eq!(inspect(target.partition)[0], inspect(source.partition)[0]);
}

#[test]
fn a_kernel_refusal_midway_leaves_nothing_and_gives_the_memory_back() {
    let k = FakeKernel::new();
    let root = discover(&k.boot_info()).unwrap();
    let before = live_objects(&k);
    let quota = root_quota(&k);
    // Two vCPUs from processor 1 of 2: the kernel refuses the second.
    let s = spec("beta", 2, 1, Some(1));
    let base = place(&root, &[], s.memory).unwrap();
    assert!(matches!(
        build(&k, &root, &s, base, Purpose::Restore),
        Err(Failure::Call("vcpu", Status::InvalidArgument))
    ));
    assert!(in_kernel(&k, "beta").is_none(), "no partition left");
    assert_eq!(live_objects(&k), before);
    assert_eq!(root_quota(&k), quota);
    assert!(
        frames_free(&k, &root, base, s.memory),
        "the memory is the root's"
    );
    // A stale source: the capability copy, the last step, is refused.
    let gone = SlotHandle {
        index: 200,
        generation: 7,
    };
    let s = spec("gamma", 1, 0, None);
    assert!(build(&k, &root, &s, base, Purpose::Target { source: gone }).is_err());
    assert!(in_kernel(&k, "gamma").is_none());
    assert_eq!(live_objects(&k), before);
    assert!(frames_free(&k, &root, base, s.memory));
}

#[test]
fn a_quota_refusal_after_the_ports_deletes_them_too() {
    let k = FakeKernel::new();
    let root = discover(&k.boot_info()).unwrap();
    let bytes = elf();
    let image = Image::parse(&bytes, PARTITION_IMAGE_BASE, u64::MAX).unwrap();
    let s = spec("delta", 1, 0, None);
    let base = place(&root, &[], s.memory).unwrap();
    let new = Purpose::New {
        image: &image,
        to_root_vector: 0x80,
    };
    // What a whole build costs the root's quota.
    let quota = root_quota(&k);
    let built = build(&k, &root, &s, base, new).unwrap();
    let cost = quota - root_quota(&k);
    control::destroy(&k, &built.child(&s)).unwrap();
    for p in [built.to_root, built.from_root].into_iter().flatten() {
        k.call(&Call::CapDelete { slot: p.root }).unwrap();
    }
    assert_eq!(root_quota(&k), quota);
    // One short: the last port is refused after the first was made.
    let before = live_objects(&k);
    set_root_quota(&k, cost - 1);
    assert!(matches!(
        build(&k, &root, &s, base, new),
        Err(Failure::Call("port", Status::OutOfMemory))
    ));
    assert!(in_kernel(&k, "delta").is_none());
    assert_eq!(live_objects(&k), before, "no port left either");
    assert_eq!(root_quota(&k), cost - 1);
    assert!(frames_free(&k, &root, base, s.memory));
}

#[test]
fn memory_outside_the_pool_or_too_small_is_refused_before_any_call() {
    let k = FakeKernel::new();
    let root = discover(&k.boot_info()).unwrap();
    let bytes = elf();
    let image = Image::parse(&bytes, PARTITION_IMAGE_BASE, u64::MAX).unwrap();
    let before = live_objects(&k);
    let s = spec("big", 1, 0, None);
    let top = root.pool.end & !((2 << 20) - 1);
    for base in [
        top - (4 << 20),
        root.pool.start - (2 << 20),
        top - s.memory + 4,
    ] {
        assert!(matches!(
            build(&k, &root, &s, base, Purpose::Restore),
            Err(Failure::NoMemory)
        ));
    }
    // Too small for a child's layout.
    let mut small = spec("small", 1, 0, None);
    small.memory = 2 << 20;
    let base = place(&root, &[], small.memory).unwrap();
    let new = Purpose::New {
        image: &image,
        to_root_vector: 0x80,
    };
    assert!(matches!(
        build(&k, &root, &small, base, new),
        Err(Failure::Layout(_))
    ));
    let mut many = spec("many", 1, 0, None);
    many.vcpus = MAX_VCPUS as u32 + 1;
    assert!(build(&k, &root, &many, base, Purpose::Restore).is_err());
    assert_eq!(live_objects(&k), before);
}

#[test]
fn destroy_gives_the_frames_back_and_forget_waits_for_the_orphan() {
    let k = FakeKernel::new();
    let root = discover(&k.boot_info()).unwrap();
    let before = live_objects(&k);
    let s = spec("eps", 2, 0, None);
    let base = place(&root, &[], s.memory).unwrap();
    let child = build(&k, &root, &s, base, Purpose::Restore)
        .unwrap()
        .child(&s);
    assert!(!frames_free(&k, &root, base, s.memory), "the child's now");
    control::destroy(&k, &child).unwrap();
    assert!(frames_free(&k, &root, base, s.memory));
    assert_eq!(live_objects(&k), before);
    assert!(control::destroy(&k, &child).is_err(), "stale");
    // Forgotten: the root deletes its capabilities; the kernel destroys it.
    let child = build(&k, &root, &s, base, Purpose::Restore)
        .unwrap()
        .child(&s);
    control::forget(&k, &root, &child).unwrap();
    assert!(in_kernel(&k, "eps").is_none());
    assert_eq!(live_objects(&k), before);
    assert!(frames_free(&k, &root, base, s.memory));
}

/// Buses as a test sets them: whether a shutdown can be asked and how it
/// ends, what was detached.
#[derive(Default)]
struct TestBuses {
    channel: bool,
    answer: Option<ShutdownState>,
    served: usize,
    detached: Vec<usize>,
    asked: Vec<(usize, u32)>,
}

impl Buses for TestBuses {
    fn service_all(&mut self) -> usize {
        self.served += 1;
        0
    }
    fn drain(&mut self, _: usize) {}
    fn request_shutdown(&mut self, index: usize, timeout_ms: u32) -> Result<(), String> {
        self.asked.push((index, timeout_ms));
        if self.channel {
            Ok(())
        } else {
            Err(String::from("no channel"))
        }
    }
    fn shutdown_state(&mut self, _: usize) -> Option<ShutdownState> {
        self.answer
    }
    fn detach(&mut self, index: usize) {
        self.detached.push(index);
    }
}

#[test]
fn stop_turns_off_a_child_that_refuses_or_cannot_be_asked() {
    let k = FakeKernel::new();
    let root = discover(&k.boot_info()).unwrap();
    let before = live_objects(&k);
    let s = spec("zeta", 1, 0, None);
    let base = place(&root, &[], s.memory).unwrap();
    let mut buses = TestBuses::default();
    let child = build(&k, &root, &s, base, Purpose::Restore)
        .unwrap()
        .child(&s);
    control::stop(&k, &mut buses, &root, &child, 3, 100).unwrap();
    assert_eq!(buses.asked, vec![(3, 100)]);
    assert_eq!(buses.detached, vec![3]);
    assert!(k.printed("zeta") && k.printed("no integration channel"));
    assert_eq!(live_objects(&k), before);
    let mut buses = TestBuses {
        channel: true,
        answer: Some(ShutdownState::Refused),
        ..TestBuses::default()
    };
    let child = build(&k, &root, &s, base, Purpose::Restore)
        .unwrap()
        .child(&s);
    control::stop(&k, &mut buses, &root, &child, 0, 100).unwrap();
    assert!(k.printed("refused"));
    assert!(frames_free(&k, &root, base, s.memory));
}

#[test]
fn a_paused_child_stays_put_and_children_are_found_by_name() {
    let k = FakeKernel::new();
    let root = discover(&k.boot_info()).unwrap();
    let bytes = elf();
    let image = Image::parse(&bytes, PARTITION_IMAGE_BASE, u64::MAX).unwrap();
    let s = spec("eta", 2, 0, None);
    let base = place(&root, &[], s.memory).unwrap();
    let new = Purpose::New {
        image: &image,
        to_root_vector: 0x80,
    };
    let built = build(&k, &root, &s, base, new).unwrap();
    build::start_vcpus(&k, built.vcpu_list()).unwrap();
    let child = built.child(&s);
    let mut buses = TestBuses::default();
    let at = control::position_of(&k, built.vcpus[0].unwrap()).unwrap();
    assert_eq!(at.0, image.entry);
    control::pause_check(&k, &mut buses, &child).unwrap();
    assert!(k.printed("eta"));
    assert!(buses.served > 0, "the buses are served while time passes");
    let children = [None, Some(child)];
    assert_eq!(control::position(&children, Name::new("eta")).unwrap(), 1);
    assert_eq!(
        control::find(&children, Name::new("eta")).unwrap().base,
        base
    );
    assert!(control::find(&children, Name::new("nobody")).is_err());
    let lines: Vec<String> = k.lines.borrow().clone();
    assert!(lines.iter().any(|l| l.contains("paused")), "{lines:?}");
}
