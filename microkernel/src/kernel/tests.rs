//! Host tests of the kernel core over a fake machine.

use crate::testkit::FakeMachine as Fake;

use std::vec::Vec;

use ipc::hypercall::{Call, Name, Rights, SlotHandle, Status, StopReason, run_state};

use super::*;
use crate::paging::Access;
use crate::svm::exit::Exit;
use crate::svm::permissions::port_intercepted;
use crate::svm::vmcb::offset;

const RAM_BASE: u64 = 0x100_0000;
const RAM_PAGES: u64 = 1024;

struct World {
    k: Kernel,
    m: Fake,
    root: ObjectId,
    root_vcpu: ObjectId,
    root_self: SlotHandle,
    ram: SlotHandle,
}

impl World {
    fn new() -> World {
        let mut m = Fake::default();
        let mut k = Kernel::new(2, 16);
        let slat = m.slat_new().unwrap();
        m.slat_map(slat, RAM_BASE, RAM_BASE, RAM_PAGES, Access::RWX)
            .unwrap();
        let (root, caps) = k
            .create_root(&mut m, slat, &[(RAM_BASE, RAM_PAGES)], &[4], &[(0x3f8, 8)])
            .unwrap();
        let vmcb = m.vmcb_new().unwrap();
        let (root_vcpu, _) = k.create_boot_vcpu(root, vmcb, 0).unwrap();
        assert_eq!(k.pick(0), Some(root_vcpu));
        World {
            k,
            m,
            root,
            root_vcpu,
            root_self: caps[0].slot,
            ram: caps[1].slot,
        }
    }

    fn call_as(
        &mut self,
        partition: ObjectId,
        vcpu: ObjectId,
        call: Call,
    ) -> Result<[u64; 3], Status> {
        match self.k.call(&mut self.m, partition, vcpu, &call.encode())? {
            Outcome::Done(r) => Ok(r),
            Outcome::WaitDestroy(p) => {
                assert!(self.k.destroy_ready(p));
                self.k.destroy_finish(&mut self.m, p);
                Ok([0; 3])
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    fn root_call(&mut self, call: Call) -> Result<[u64; 3], Status> {
        let (root, vcpu) = (self.root, self.root_vcpu);
        self.call_as(root, vcpu, call)
    }

    fn root_slat(&self) -> u64 {
        self.k.objects.partition(self.root).unwrap().slat_root
    }

    /// Creates a child from `pages` pages at `first` of the root's RAM,
    /// maps them at GPA 0 and gives it one vCPU.
    fn child(&mut self, name: &str, first: u64, pages: u64) -> Child {
        let r = self
            .root_call(Call::PartitionCreate {
                authority: self.root_self,
                memory: self.ram,
                first_page: first,
                pages,
                name: Name::new(name),
                ceiling: 0,
            })
            .unwrap();
        let (slot, mem, self_slot) = (h(r[0]), h(r[1]), h(r[2]));
        self.root_call(Call::MemoryMap {
            partition: slot,
            memory: mem,
            first_page: 0,
            gpa: 0,
            pages,
            access: Rights::READ | Rights::WRITE | Rights::EXECUTE,
        })
        .unwrap();
        let v = self
            .root_call(Call::VcpuCreate {
                partition: slot,
                rip: 0x1000,
                rsp: 0x8000,
                cr3: 0x2000,
                arg: 0,
                flags: 0,
            })
            .unwrap();
        let id = self
            .k
            .objects
            .ids_of(ObjectKind::Partition)
            .into_iter()
            .find(|&p| self.k.objects.partition(p).unwrap().name == Name::new(name))
            .unwrap();
        let vcpu = *self.k.objects.partition(id).unwrap().vcpus.last().unwrap();
        Child {
            slot,
            mem,
            self_slot,
            vcpu_slot: h(v[0]),
            id,
            vcpu,
        }
    }
}

#[derive(Clone, Copy)]
struct Child {
    slot: SlotHandle,
    mem: SlotHandle,
    self_slot: SlotHandle,
    vcpu_slot: SlotHandle,
    id: ObjectId,
    vcpu: ObjectId,
}

fn h(raw: u64) -> SlotHandle {
    SlotHandle::from_raw(raw).unwrap()
}

#[test]
fn root_starts_with_its_capabilities_and_ports() {
    let mut w = World::new();
    let root = w.k.objects.partition(w.root).unwrap();
    assert_eq!(
        root.cspace.caps().count(),
        5,
        "self, RAM, one interrupt, one port range, its vCPU"
    );
    let maps = root.permission_maps.0;
    assert!(!port_intercepted(w.m.iopm(maps), 0x3f8));
    assert!(
        port_intercepted(w.m.iopm(maps), 0x40),
        "the PIT is not the root's"
    );
    assert!(w.root_call(Call::Null).is_ok());
}

#[test]
fn donation_moves_memory_out_of_the_root_and_back_on_destroy() {
    let mut w = World::new();
    let c = w.child("alpha", 256, 64);
    let root_slat = w.root_slat();
    let donated = RAM_BASE + 256 * 4096;
    assert!(
        !w.m.mapped(root_slat, donated),
        "donated frames leave the donor's SLAT"
    );
    assert!(!w.m.mapped(root_slat, donated + 63 * 4096));
    assert!(w.m.mapped(root_slat, donated + 64 * 4096));
    let child_slat = w.k.objects.partition(c.id).unwrap().slat_root;
    assert_eq!(
        w.m.slat_translate(child_slat, 0x3000).unwrap().0,
        donated + 0x3000
    );
    // The same range cannot be donated twice, nor mapped by the root again.
    assert_eq!(
        w.root_call(Call::PartitionCreate {
            authority: w.root_self,
            memory: w.ram,
            first_page: 300,
            pages: 1,
            name: Name::new("x"),
            ceiling: 0,
        }),
        Err(Status::NotOwned)
    );
    assert_eq!(
        w.root_call(Call::MemoryMap {
            partition: w.root_self,
            memory: w.ram,
            first_page: 256,
            gpa: 0x9000_0000,
            pages: 1,
            access: Rights::READ
        }),
        Err(Status::NotOwned)
    );
    let status = w
        .root_call(Call::PartitionStatus { partition: c.slot })
        .unwrap();
    assert_eq!(status[0], run_state::RUNNING);
    w.root_call(Call::PartitionDestroy { partition: c.slot })
        .unwrap();
    assert!(
        w.m.mapped(root_slat, donated),
        "memory is back in the root's SLAT"
    );
    assert!(
        !w.m.slats.contains_key(&child_slat),
        "the child's SLAT is freed"
    );
    assert_eq!(
        w.root_call(Call::PartitionStatus { partition: c.slot }),
        Err(Status::StaleSlot)
    );
    assert_eq!(
        w.root_call(Call::PartitionStatus { partition: c.mem }),
        Err(Status::StaleSlot)
    );
    // The destroyed child's memory is reused by a new one.
    let d = w.child("beta", 256, 64);
    let d_slat = w.k.objects.partition(d.id).unwrap().slat_root;
    assert_eq!(w.m.slat_translate(d_slat, 0).unwrap().0, donated);
    assert_eq!(w.m.vmcbs.len(), 2, "root's and beta's VMCBs only");
}

#[test]
fn delegation_never_raises_rights_and_revocation_removes_every_copy() {
    let mut w = World::new();
    let c = w.child("alpha", 0, 16);
    let port = h(w.root_call(Call::PortCreate).unwrap()[0]);
    // Root -> child with SIGNAL|GRANT.
    let in_child = h(w
        .root_call(Call::CapDelegate {
            slot: port,
            target: c.slot,
            rights: Rights::SIGNAL | Rights::GRANT,
        })
        .unwrap()[0]);
    // Child -> itself with SIGNAL only (it controls itself).
    let again = h(w
        .call_as(
            c.id,
            c.vcpu,
            Call::CapDelegate {
                slot: in_child,
                target: c.self_slot,
                rights: Rights::SIGNAL,
            },
        )
        .unwrap()[0]);
    // Raising rights, or delegating a copy without GRANT, is refused.
    assert_eq!(
        w.call_as(
            c.id,
            c.vcpu,
            Call::CapDelegate {
                slot: in_child,
                target: c.self_slot,
                rights: Rights::SIGNAL | Rights::BIND
            }
        ),
        Err(Status::InsufficientRights)
    );
    assert_eq!(
        w.call_as(
            c.id,
            c.vcpu,
            Call::CapDelegate {
                slot: again,
                target: c.self_slot,
                rights: Rights::SIGNAL
            }
        ),
        Err(Status::InsufficientRights)
    );
    assert!(
        w.call_as(c.id, c.vcpu, Call::PortSignal { port: again })
            .is_ok()
    );
    // Revoking the original removes both copies; their handles go stale.
    assert_eq!(w.root_call(Call::CapRevoke { slot: port }).unwrap()[0], 2);
    assert_eq!(
        w.call_as(c.id, c.vcpu, Call::PortSignal { port: in_child }),
        Err(Status::StaleSlot)
    );
    assert_eq!(
        w.call_as(c.id, c.vcpu, Call::PortSignal { port: again }),
        Err(Status::StaleSlot)
    );
    assert!(
        w.root_call(Call::PortSignal { port }).is_ok(),
        "revoke keeps the original"
    );
    assert!(w.root_call(Call::CapDelete { slot: port }).is_ok());
    assert_eq!(
        w.root_call(Call::PortSignal { port }),
        Err(Status::StaleSlot)
    );
}

#[test]
fn a_child_cannot_use_what_it_does_not_hold() {
    let mut w = World::new();
    let c = w.child("alpha", 0, 16);
    let port = h(w.call_as(c.id, c.vcpu, Call::PortCreate).unwrap()[0]);
    let bogus = SlotHandle {
        index: 200,
        generation: 0,
    };
    let call = |memory| Call::MemoryMap {
        partition: c.self_slot,
        memory,
        first_page: 0,
        gpa: 0x100_0000,
        pages: 1,
        access: Rights::READ,
    };
    assert_eq!(
        w.call_as(c.id, c.vcpu, call(bogus)),
        Err(Status::InvalidSlot)
    );
    assert_eq!(w.call_as(c.id, c.vcpu, call(port)), Err(Status::WrongType));
    // The root's RAM capability is not in the child's space: slot 1 there is empty or another object.
    let create = Call::PartitionCreate {
        authority: c.self_slot,
        memory: port,
        first_page: 0,
        pages: 1,
        name: Name::new("evil"),
        ceiling: 0,
    };
    assert_eq!(
        w.call_as(c.id, c.vcpu, create),
        Err(Status::InsufficientRights)
    );
    // It cannot destroy itself through the ABI, nor the root.
    assert_eq!(
        w.call_as(
            c.id,
            c.vcpu,
            Call::PartitionDestroy {
                partition: c.self_slot
            }
        ),
        Err(Status::InvalidArgument)
    );
    assert_eq!(
        w.call_as(
            c.id,
            c.vcpu,
            Call::VcpuGetState {
                vcpu: bogus,
                buffer: 0x1000
            }
        ),
        Err(Status::InvalidSlot)
    );
    // A buffer outside its own memory is refused.
    let v = c.vcpu_slot;
    assert_eq!(
        w.root_call(Call::VcpuGetState {
            vcpu: v,
            buffer: 0x7fff_0000
        }),
        Err(Status::BadBuffer)
    );
}

#[test]
fn ports_wake_blocked_vcpus_and_inject_on_entry() {
    let mut w = World::new();
    let c = w.child("alpha", 0, 16);
    let port = h(w.root_call(Call::PortCreate).unwrap()[0]);
    w.root_call(Call::PortBind {
        port,
        vcpu: c.vcpu_slot,
        vector: 0x40,
    })
    .unwrap();
    w.root_call(Call::VcpuStart { vcpu: c.vcpu_slot }).unwrap();
    let cpu = w.k.objects.vcpu(c.vcpu).unwrap().cpu;
    assert_eq!(w.k.pick(cpu), Some(c.vcpu));
    let vmcb = w.k.objects.vcpu(c.vcpu).unwrap().vmcb;
    // HLT with interrupts enabled blocks (right after STI: in its shadow).
    w.m.vmcb(vmcb).write_u64(offset::RFLAGS, 0x202);
    w.m.vmcb(vmcb).write_u64(offset::INTERRUPT_SHADOW, 1);
    assert_eq!(w.k.handle_exit(&mut w.m, c.vcpu, Exit::Hlt), Next::Blocked);
    assert_eq!(w.k.pick(cpu), None);
    w.root_call(Call::PortSignal { port }).unwrap();
    assert_eq!(w.k.pick(cpu), Some(c.vcpu), "the signal woke it");
    assert!(w.k.prepare_entry(&mut w.m, c.vcpu));
    assert_eq!(
        w.m.vmcb(vmcb).read_u64(offset::EVENT_INJECTION),
        0x40 | (1 << 31)
    );
}

#[test]
fn faults_stop_only_their_partition_and_are_reported() {
    let mut w = World::new();
    let a = w.child("alpha", 0, 16);
    let b = w.child("beta", 16, 16);
    for c in [a, b] {
        w.root_call(Call::VcpuStart { vcpu: c.vcpu_slot }).unwrap();
    }
    let next = w.k.handle_exit(
        &mut w.m,
        a.vcpu,
        Exit::NestedPageFault {
            gpa: 0x123_4000,
            error: 4,
        },
    );
    assert_eq!(next, Next::Off);
    assert!(
        w.m.lines
            .iter()
            .any(|l| l.contains("nested page fault in partition alpha: gpa=0x1234000"))
    );
    let s = w
        .root_call(Call::PartitionStatus { partition: a.slot })
        .unwrap();
    assert_eq!(
        s,
        [
            run_state::STOPPED,
            StopReason::NestedPageFault as u64,
            0x123_4000
        ]
    );
    assert_eq!(
        w.root_call(Call::PartitionStatus { partition: b.slot })
            .unwrap()[0],
        run_state::RUNNING
    );
    assert_eq!(
        w.root_call(Call::VcpuResume { vcpu: a.vcpu_slot }),
        Err(Status::InvalidState)
    );
    // HLT with interrupts off halts beta for good.
    let vmcb = w.k.objects.vcpu(b.vcpu).unwrap().vmcb;
    w.m.vmcb(vmcb).write_u64(offset::RFLAGS, 0x2);
    assert_eq!(w.k.handle_exit(&mut w.m, b.vcpu, Exit::Hlt), Next::Off);
    assert_eq!(
        w.root_call(Call::PartitionStatus { partition: b.slot })
            .unwrap()[1],
        StopReason::Halted as u64
    );
}

#[test]
fn dirty_log_reports_exactly_the_written_pages_then_clears() {
    let mut w = World::new();
    let c = w.child("alpha", 0, 64);
    let slat = w.k.objects.partition(c.id).unwrap().slat_root;
    w.m.write_guest(slat, 0x5000); // before logging: not reported
    w.root_call(Call::DirtyLog {
        partition: c.slot,
        enable: true,
    })
    .unwrap();
    for page in [3u64, 17, 18, 63] {
        w.m.write_guest(slat, page * 4096);
    }
    let buffer = RAM_BASE + 900 * 4096;
    let r = w
        .root_call(Call::DirtyFetch {
            partition: c.slot,
            first_gpa: 0,
            pages: 64,
            buffer,
        })
        .unwrap();
    assert_eq!(r[0], 4);
    let mut bitmap = [0u8; 8];
    w.m.read_bytes(buffer, &mut bitmap);
    assert_eq!(
        u64::from_le_bytes(bitmap),
        (1 << 3) | (1 << 17) | (1 << 18) | (1 << 63)
    );
    let r = w
        .root_call(Call::DirtyFetch {
            partition: c.slot,
            first_gpa: 0,
            pages: 64,
            buffer,
        })
        .unwrap();
    assert_eq!(r[0], 0, "fetching cleared the bits");
    assert_eq!(
        w.root_call(Call::DirtyLog {
            partition: w.root_self,
            enable: true
        }),
        Err(Status::InvalidArgument)
    );
    // A SLAT without dirty flags (EPT without A/D) refuses instead of reporting nothing.
    w.m.no_dirty_flags = true;
    assert_eq!(
        w.root_call(Call::DirtyLog {
            partition: c.slot,
            enable: true
        }),
        Err(Status::InvalidState)
    );
}

#[test]
fn state_get_set_and_memory_read_write() {
    let mut w = World::new();
    let c = w.child("alpha", 0, 16);
    let buffer = RAM_BASE + 900 * 4096;
    let vmcb = w.k.objects.vcpu(c.vcpu).unwrap().vmcb;
    w.m.vmcb(vmcb)
        .init_long_mode(&crate::svm::vmcb::LongModeStart {
            cr3: 0x2000,
            rip: 0x1000,
            rsp: 0x8000,
            asid: 2,
            nested_cr3: 0,
            iopm: 0,
            msrpm: 0,
        });
    w.root_call(Call::VcpuGetState {
        vcpu: c.vcpu_slot,
        buffer,
    })
    .unwrap();
    let mut page = [0u8; 4096];
    w.m.read_bytes(buffer, &mut page);
    let mut s = ipc::vcpu_state::VcpuState::from_page(&page);
    assert_eq!(s.rip, 0x1000);
    s.rip = 0x1234;
    w.m.write_bytes(buffer, &s.to_page());
    w.root_call(Call::VcpuSetState {
        vcpu: c.vcpu_slot,
        buffer,
    })
    .unwrap();
    assert_eq!(w.m.vmcb(vmcb).read_u64(offset::RIP), 0x1234);
    s.efer = 0;
    w.m.write_bytes(buffer, &s.to_page());
    assert_eq!(
        w.root_call(Call::VcpuSetState {
            vcpu: c.vcpu_slot,
            buffer
        }),
        Err(Status::InvalidArgument)
    );
    // Copy a page into the child and back.
    w.m.write_bytes(buffer, b"hello");
    w.root_call(Call::MemoryWrite {
        partition: c.slot,
        gpa: 0x3000,
        buffer,
    })
    .unwrap();
    w.m.write_bytes(buffer, b"xxxxx");
    w.root_call(Call::MemoryRead {
        partition: c.slot,
        gpa: 0x3000,
        buffer,
    })
    .unwrap();
    let mut out = [0u8; 5];
    w.m.read_bytes(buffer, &mut out);
    assert_eq!(&out, b"hello");
    assert_eq!(
        w.root_call(Call::MemoryRead {
            partition: c.slot,
            gpa: 0x40_0000,
            buffer
        }),
        Err(Status::NotMapped)
    );
}

#[test]
fn children_use_the_debug_console_only_when_the_command_line_allows() {
    let mut w = World::new();
    let c = w.child("alpha", 0, 16);
    let mut bytes = [0u8; ipc::hypercall::DEBUG_WRITE_MAX];
    bytes[..3].copy_from_slice(b"hi\n");
    let write = Call::DebugWrite { len: 3, bytes };
    assert_eq!(
        w.call_as(c.id, c.vcpu, write),
        Err(Status::InsufficientRights)
    );
    assert!(w.m.lines.iter().all(|l| !l.contains("hi")));
    assert!(w.root_call(write).is_ok(), "the root always may");
    w.k.child_debug_console = true;
    assert!(w.call_as(c.id, c.vcpu, write).is_ok());
    assert_eq!(w.m.lines.last().unwrap(), "[alpha] hi");
}

#[test]
fn console_is_line_buffered_and_rate_limited() {
    let mut w = World::new();
    w.k.child_debug_console = true;
    let c = w.child("alpha", 0, 16);
    let write = |s: &str| {
        let mut bytes = [0u8; ipc::hypercall::DEBUG_WRITE_MAX];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Call::DebugWrite {
            len: s.len() as u8,
            bytes,
        }
    };
    w.call_as(c.id, c.vcpu, write("hel")).unwrap();
    w.call_as(c.id, c.vcpu, write("lo\x07\n")).unwrap();
    assert_eq!(w.m.lines.last().unwrap(), "[alpha] hello?");
    let mut limited = false;
    for _ in 0..100 {
        if w.call_as(c.id, c.vcpu, write("flood\n")) == Err(Status::RateLimited) {
            limited = true;
            break;
        }
    }
    assert!(limited);
    w.k.ticks += 100;
    assert!(
        w.call_as(c.id, c.vcpu, write("again\n")).is_ok(),
        "budget refills with time"
    );
}

#[test]
fn resource_failures_change_nothing() {
    let mut w = World::new();
    w.m.fail_slat = true;
    let before = w.m.slats.len();
    assert_eq!(
        w.root_call(Call::PartitionCreate {
            authority: w.root_self,
            memory: w.ram,
            first_page: 0,
            pages: 4,
            name: Name::new("x"),
            ceiling: 0,
        }),
        Err(Status::OutOfMemory)
    );
    assert_eq!(w.m.slats.len(), before);
    assert!(
        w.m.mapped(w.root_slat(), RAM_BASE),
        "nothing was taken from the root"
    );
    w.m.fail_slat = false;
    assert!(
        w.root_call(Call::PartitionCreate {
            authority: w.root_self,
            memory: w.ram,
            first_page: 0,
            pages: 4,
            name: Name::new("x"),
            ceiling: 0,
        })
        .is_ok()
    );
}

#[test]
fn random_hypercalls_never_panic_or_break_invariants() {
    let mut w = World::new();
    let c = w.child("alpha", 0, 32);
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..20_000 {
        let nr = rand() % 30;
        let mut regs = [nr, 0, 0, 0, 0, 0, 0];
        for r in regs.iter_mut().skip(1) {
            *r = match rand() % 4 {
                0 => rand() % 8,
                1 => (rand() % 8) | ((rand() % 3) << 16),
                2 => (rand() % 64) * 4096,
                _ => rand(),
            };
        }
        // Keep the child from destroying or unmapping itself (that is allowed, just not interesting).
        let outcome = w.k.call(&mut w.m, c.id, c.vcpu, &regs);
        if let Ok(Outcome::WaitDestroy(p)) = outcome {
            w.k.destroy_finish(&mut w.m, p);
        }
    }
    // The root still works and the child's capabilities are consistent.
    assert!(w.root_call(Call::Null).is_ok());
    assert!(w.m.mapped(w.root_slat(), RAM_BASE + 900 * 4096));
}

#[test]
fn a_partition_halts_only_when_every_vcpu_has_stopped() {
    let mut w = World::new();
    let c = w.child("beta", 0, 16);
    let second = h(w
        .root_call(Call::VcpuCreate {
            partition: c.slot,
            rip: 0x1000,
            rsp: 0x7000,
            cr3: 0x2000,
            arg: 0,
            flags: 0,
        })
        .unwrap()[0]);
    w.root_call(Call::VcpuStart { vcpu: c.vcpu_slot }).unwrap();
    let vmcb = w.k.objects.vcpu(c.vcpu).unwrap().vmcb;
    w.m.vmcb(vmcb).write_u64(offset::RFLAGS, 0x2);
    assert_eq!(w.k.handle_exit(&mut w.m, c.vcpu, Exit::Hlt), Next::Off);
    assert_eq!(
        w.root_call(Call::PartitionStatus { partition: c.slot })
            .unwrap()[0],
        run_state::RUNNING,
        "vCPU 1 has not run yet"
    );
    assert!(w.root_call(Call::VcpuStart { vcpu: second }).is_ok());
}

#[test]
fn new_vcpus_go_to_the_least_loaded_processor() {
    let mut w = World::new();
    // The root's vCPU runs on processor 0: a child's first vCPU goes to 1.
    let c = w.child("alpha", 0, 16);
    assert_eq!(w.k.objects.vcpu(c.vcpu).unwrap().cpu, 1);
    let d = w.child("beta", 16, 16);
    assert_eq!(w.k.objects.vcpu(d.vcpu).unwrap().cpu, 0);
}

#[test]
fn cap_clone_copies_slot_for_slot_and_outlives_the_source() {
    let mut w = World::new();
    let a = w.child("alpha", 0, 16);
    let port = h(w.root_call(Call::PortCreate).unwrap()[0]);
    let delegate = |w: &mut World, target| {
        h(w.root_call(Call::CapDelegate {
            slot: port,
            target,
            rights: Rights::SIGNAL,
        })
        .unwrap()[0])
    };
    // A hole with a newer generation: delegate, delete, delegate again.
    let first = delegate(&mut w, a.slot);
    w.call_as(a.id, a.vcpu, Call::CapDelete { slot: first })
        .unwrap();
    let in_a = delegate(&mut w, a.slot);
    assert_eq!(in_a.index, first.index);
    assert_ne!(in_a.generation, first.generation);
    let b = w.child("beta", 16, 16);
    let copied = w
        .root_call(Call::CapClone {
            source: a.slot,
            target: b.slot,
        })
        .unwrap()[0];
    assert_eq!(copied, 2, "its self capability and the port");
    // The same handles work in the copy: the port, and "self" naming beta.
    assert!(
        w.call_as(b.id, b.vcpu, Call::PortSignal { port: in_a })
            .is_ok()
    );
    assert_eq!(
        w.call_as(b.id, b.vcpu, Call::PortSignal { port: first }),
        Err(Status::StaleSlot)
    );
    let own =
        w.k.objects
            .partition(b.id)
            .unwrap()
            .cspace
            .check_kinds(a.self_slot, crate::cap::ANY_KIND, Rights::NONE)
            .unwrap();
    assert_eq!(own.object, b.id);
    // A second clone into a non-empty space is refused.
    assert_eq!(
        w.root_call(Call::CapClone {
            source: a.slot,
            target: b.slot
        }),
        Err(Status::InvalidState)
    );
    // The source's end leaves the copy; the root's revocation removes it.
    w.root_call(Call::PartitionDestroy { partition: a.slot })
        .unwrap();
    assert!(
        w.call_as(b.id, b.vcpu, Call::PortSignal { port: in_a })
            .is_ok()
    );
    w.root_call(Call::CapRevoke { slot: port }).unwrap();
    assert_eq!(
        w.call_as(b.id, b.vcpu, Call::PortSignal { port: in_a }),
        Err(Status::StaleSlot)
    );
}

#[test]
fn cap_clone_refuses_what_it_cannot_copy_and_changes_nothing() {
    let mut w = World::new();
    let a = w.child("alpha", 0, 16);
    let b = w.child("beta", 16, 16);
    // A port alpha made itself would die with alpha.
    w.call_as(a.id, a.vcpu, Call::PortCreate).unwrap();
    let before = w.k.objects.partition(b.id).unwrap().cspace.caps().count();
    assert_eq!(
        w.root_call(Call::CapClone {
            source: a.slot,
            target: b.slot
        }),
        Err(Status::InvalidState)
    );
    assert_eq!(
        w.k.objects.partition(b.id).unwrap().cspace.caps().count(),
        before
    );
    // Not into itself, not into the root, not into a running partition.
    let c = w.child("gamma", 32, 16);
    assert_eq!(
        w.root_call(Call::CapClone {
            source: c.slot,
            target: c.slot
        }),
        Err(Status::InvalidArgument)
    );
    assert_eq!(
        w.root_call(Call::CapClone {
            source: c.slot,
            target: w.root_self
        }),
        Err(Status::InvalidArgument)
    );
    w.root_call(Call::VcpuStart { vcpu: b.vcpu_slot }).unwrap();
    assert_eq!(
        w.root_call(Call::CapClone {
            source: c.slot,
            target: b.slot
        }),
        Err(Status::InvalidState)
    );
}

#[test]
fn cap_inspect_and_delegate_at_rebuild_a_space_elsewhere() {
    let mut w = World::new();
    let a = w.child("alpha", 0, 16);
    let port = h(w.root_call(Call::PortCreate).unwrap()[0]);
    let delegate = |w: &mut World, target| {
        h(w.root_call(Call::CapDelegate {
            slot: port,
            target,
            rights: Rights::SIGNAL,
        })
        .unwrap()[0])
    };
    let first = delegate(&mut w, a.slot);
    w.call_as(a.id, a.vcpu, Call::CapDelete { slot: first })
        .unwrap();
    let in_a = delegate(&mut w, a.slot);
    // What the root learns of alpha's slots.
    let inspect = |w: &mut World, index| {
        w.root_call(Call::CapInspect {
            partition: a.slot,
            index,
        })
        .unwrap()
    };
    let r = inspect(&mut w, in_a.index);
    assert_eq!(r[0], u64::from(in_a.generation) | (6 << 16), "a port");
    assert_eq!(r[1], u64::from(Rights::SIGNAL.bits()));
    assert_eq!(r[2], port.raw(), "the root's own handle on it");
    let r = inspect(&mut w, a.self_slot.index);
    assert_eq!(r[0] >> 16, 1, "a partition");
    assert_eq!(r[2], a.slot.raw(), "itself, as the root names it");
    assert_eq!(inspect(&mut w, 200), [0, 0, u64::MAX], "empty");
    assert_eq!(
        w.root_call(Call::CapInspect {
            partition: a.slot,
            index: 256
        }),
        Err(Status::InvalidSlot)
    );
    // Rebuilt in beta at the same slot and generation.
    let b = w.child("beta", 16, 16);
    let at = w
        .root_call(Call::CapDelegateAt {
            slot: port,
            target: b.slot,
            rights: Rights::SIGNAL,
            at: in_a,
        })
        .unwrap()[0];
    assert_eq!(at, in_a.raw());
    assert!(
        w.call_as(b.id, b.vcpu, Call::PortSignal { port: in_a })
            .is_ok()
    );
    // Not into a busy slot, not with more rights, not into the caller.
    assert_eq!(
        w.root_call(Call::CapDelegateAt {
            slot: port,
            target: b.slot,
            rights: Rights::SIGNAL,
            at: in_a,
        }),
        Err(Status::InvalidState)
    );
    let other = SlotHandle {
        index: 100,
        generation: 7,
    };
    assert_eq!(
        w.call_as(
            b.id,
            b.vcpu,
            Call::CapDelegateAt {
                slot: in_a,
                target: b.self_slot,
                rights: Rights::SIGNAL,
                at: other,
            }
        ),
        Err(Status::InsufficientRights)
    );
    assert_eq!(
        w.root_call(Call::CapDelegateAt {
            slot: port,
            target: w.root_self,
            rights: Rights::SIGNAL,
            at: other,
        }),
        Err(Status::InvalidArgument)
    );
    // Revoking the root's port removes the placed copy too.
    w.root_call(Call::CapRevoke { slot: port }).unwrap();
    assert_eq!(
        w.call_as(b.id, b.vcpu, Call::PortSignal { port: in_a }),
        Err(Status::StaleSlot)
    );
}

/// Live objects whose quota `payer` pays for, and its quota left.
fn quota_of(w: &World, partition: ObjectId) -> u32 {
    w.k.objects.partition(partition).unwrap().quota
}

#[test]
fn a_child_creating_and_deleting_ports_forever_uses_no_memory() {
    let mut w = World::new();
    let c = w.child("alpha", 0, 32);
    let before = w.k.objects.len();
    let quota = quota_of(&w, c.id);
    for _ in 0..10_000 {
        let port = h(w.call_as(c.id, c.vcpu, Call::PortCreate).unwrap()[0]);
        assert_eq!(
            w.call_as(c.id, c.vcpu, Call::CapDelete { slot: port }),
            Ok([1, 0, 0])
        );
    }
    assert_eq!(w.k.objects.len(), before, "every deleted port was freed");
    assert_eq!(quota_of(&w, c.id), quota, "and its quota given back");
}

#[test]
fn a_partition_may_own_only_its_quota_of_objects_and_gets_out_of_memory() {
    let mut w = World::new();
    let c = w.child("alpha", 0, 32);
    // Its one vCPU is paid from its quota too.
    assert_eq!(
        quota_of(&w, c.id),
        crate::object::partition::CHILD_QUOTA - 1
    );
    let mut ports = Vec::new();
    loop {
        match w.call_as(c.id, c.vcpu, Call::PortCreate) {
            Ok(r) => ports.push(h(r[0])),
            Err(e) => {
                assert_eq!(e, Status::OutOfMemory);
                break;
            }
        }
        assert!(ports.len() < 1000, "no limit");
    }
    assert_eq!(
        ports.len() as u32,
        crate::object::partition::CHILD_QUOTA - 1
    );
    // A vCPU on itself is refused the same way, and nothing changed.
    let objects = w.k.objects.len();
    assert_eq!(
        w.call_as(
            c.id,
            c.vcpu,
            Call::VcpuCreate {
                partition: c.self_slot,
                rip: 0x1000,
                rsp: 0x8000,
                cr3: 0x2000,
                arg: 0,
                flags: 0,
            }
        ),
        Err(Status::OutOfMemory)
    );
    assert_eq!(w.k.objects.len(), objects);
    // The root is not affected: its own quota is its own.
    assert!(w.root_call(Call::PortCreate).is_ok());
    // One port freed, one port more.
    w.call_as(c.id, c.vcpu, Call::CapDelete { slot: ports[3] })
        .unwrap();
    assert!(w.call_as(c.id, c.vcpu, Call::PortCreate).is_ok());
    assert_eq!(
        w.call_as(c.id, c.vcpu, Call::PortCreate),
        Err(Status::OutOfMemory)
    );
}

#[test]
fn the_root_runs_out_of_quota_with_a_status_and_the_table_never_grows() {
    let mut w = World::new();
    // Children cost the partition, its memory object and the quota it carries.
    let cost = quota_cost(ObjectKind::Partition) + quota_cost(ObjectKind::Memory);
    assert_eq!(cost, 2 + crate::object::partition::CHILD_QUOTA);
    let quota = quota_of(&w, w.root);
    assert_eq!(quota as usize, MAX_OBJECTS - BOOT_OBJECTS);
    w.child("alpha", 100, 16);
    assert_eq!(quota_of(&w, w.root), quota - cost);
    // With too little quota left, a child is refused and nothing changes.
    w.k.objects.partition_mut(w.root).unwrap().quota = cost - 1;
    let objects = w.k.objects.len();
    assert_eq!(
        w.root_call(Call::PartitionCreate {
            authority: w.root_self,
            memory: w.ram,
            first_page: 200,
            pages: 16,
            name: Name::new("beta"),
            ceiling: 0,
        }),
        Err(Status::OutOfMemory)
    );
    assert_eq!(w.k.objects.len(), objects);
    assert!(w.m.mapped(w.root_slat(), RAM_BASE + 200 * 4096));
    // The table itself never grows past its entries: with quota to spare,
    // the last insert is refused and its quota given back.
    w.k.objects.partition_mut(w.root).unwrap().quota = u32::MAX / 2;
    let root = w.root;
    let mut made = 0;
    let err = loop {
        match w
            .k
            .insert_paid(root, Object::Port(crate::object::Port::new(root)))
        {
            Ok(_) => made += 1,
            Err(e) => break e,
        }
        assert!(made <= MAX_OBJECTS, "no limit");
    };
    assert_eq!(err, Status::OutOfMemory);
    assert_eq!(w.k.objects.len(), MAX_OBJECTS);
    assert_eq!(quota_of(&w, w.root), u32::MAX / 2 - made as u32);
    assert_eq!(w.root_call(Call::PortCreate), Err(Status::OutOfMemory));
}

#[test]
fn every_partition_and_its_objects_fit_the_smallest_kernel_heap() {
    const SMALLEST_HEAP: usize = MIN_HEAP_BYTES;
    let cost = (quota_cost(ObjectKind::Partition) + quota_cost(ObjectKind::Memory)) as usize;
    let partitions = 1 + (MAX_OBJECTS - BOOT_OBJECTS) / cost;
    let mapping = core::mem::size_of::<crate::object::memory::Mapping>();
    let records = crate::object::partition::ROOT_MAPPINGS
        + partitions * crate::object::partition::CHILD_MAPPINGS;
    // Mapping records live in vectors that may hold twice their length
    // while growing, and once more as the donation's `restore` copy.
    let bound = crate::object::Objects::heap_bytes(MAX_OBJECTS)
        + crate::object::timer::TimerQueue::heap_bytes(MAX_OBJECTS)
        + partitions * crate::cap::CapSpace::HEAP_BYTES
        + 3 * records * mapping
        // Per partition: vCPU and memory lists, donations.
        + partitions * (MAX_VCPUS * 8 + 64 + 64)
        // A revocation's worst case: every capability of every space.
        + partitions * crate::cap::SLOTS * 32;
    assert!(
        bound <= SMALLEST_HEAP / 2,
        "worst case {bound} bytes does not leave half of a {SMALLEST_HEAP}-byte heap free"
    );
}

#[test]
fn a_port_lives_while_any_capability_names_it() {
    let mut w = World::new();
    let c = w.child("alpha", 0, 32);
    let port = h(w.root_call(Call::PortCreate).unwrap()[0]);
    let in_child = h(w
        .root_call(Call::CapDelegate {
            slot: port,
            target: c.slot,
            rights: Rights::SIGNAL,
        })
        .unwrap()[0]);
    let id =
        w.k.objects
            .partition(w.root)
            .unwrap()
            .cspace
            .check(port, ObjectKind::Port, Rights::NONE)
            .unwrap()
            .object;
    // Deleting a copy keeps the port; CapDelete of the original takes
    // the copies with it and frees the port.
    assert_eq!(
        w.call_as(c.id, c.vcpu, Call::CapDelete { slot: in_child }),
        Ok([1, 0, 0])
    );
    assert!(w.k.objects.port(id).is_some(), "the root still names it");
    let root_quota = quota_of(&w, w.root);
    assert_eq!(w.root_call(Call::CapDelete { slot: port }), Ok([1, 0, 0]));
    assert!(
        w.k.objects.port(id).is_none(),
        "freed with its last capability"
    );
    assert_eq!(quota_of(&w, w.root), root_quota + 1);
    // Revoking removes the copies; the original keeps the port alive.
    let port = h(w.root_call(Call::PortCreate).unwrap()[0]);
    w.root_call(Call::CapDelegate {
        slot: port,
        target: c.slot,
        rights: Rights::SIGNAL,
    })
    .unwrap();
    assert_eq!(w.root_call(Call::CapRevoke { slot: port }), Ok([1, 0, 0]));
    assert!(w.root_call(Call::PortSignal { port }).is_ok());
}

#[test]
fn deleting_the_last_capability_on_a_running_child_destroys_it() {
    let mut w = World::new();
    let c = w.child("alpha", 256, 64);
    w.root_call(Call::VcpuStart { vcpu: c.vcpu_slot }).unwrap();
    let root_slat = w.root_slat();
    let donated = RAM_BASE + 256 * 4096;
    assert!(!w.m.mapped(root_slat, donated));
    let objects = w.k.objects.len();
    let root_quota = quota_of(&w, w.root);
    // The root's vCPU capability on it first: the partition is still named.
    w.root_call(Call::CapDelete { slot: c.vcpu_slot }).unwrap();
    assert!(w.k.objects.partition(c.id).is_some());
    // Its memory capability: still named by the partition capability.
    w.root_call(Call::CapDelete { slot: c.mem }).unwrap();
    assert!(w.k.objects.partition(c.id).is_some());
    // The last capability outside it: the child is an orphan, destroyed
    // (its vCPU is not on a processor in this test).
    w.root_call(Call::CapDelete { slot: c.slot }).unwrap();
    assert!(w.k.objects.partition(c.id).is_none(), "the orphan is gone");
    assert!(w.k.objects.vcpu(c.vcpu).is_none());
    assert!(w.k.reaping.is_empty());
    assert!(
        w.m.mapped(root_slat, donated),
        "its memory went back to the root's mappings"
    );
    assert_eq!(w.k.objects.len(), objects - 3, "partition, vCPU, memory");
    assert_eq!(
        quota_of(&w, w.root),
        root_quota + quota_cost(ObjectKind::Partition) + quota_cost(ObjectKind::Memory)
    );
    // The memory can be donated again.
    w.child("beta", 256, 64);
}

#[test]
fn an_orphan_on_a_processor_is_destroyed_once_it_leaves() {
    let mut w = World::new();
    let c = w.child("alpha", 256, 64);
    w.root_call(Call::VcpuStart { vcpu: c.vcpu_slot }).unwrap();
    // The child's vCPU runs on processor 1 (the root's is on 0).
    let cpu = w.k.objects.vcpu(c.vcpu).unwrap().cpu;
    assert_eq!(w.k.pick(cpu), Some(c.vcpu));
    w.root_call(Call::CapDelete { slot: c.slot }).unwrap();
    assert!(w.k.objects.partition(c.id).is_some(), "waits for its vCPU");
    assert_eq!(w.k.reaping, [c.id]);
    assert!(w.m.kicks.contains(&cpu), "its processor was told");
    // Its processor takes it off (prepare_entry refuses it), and the next
    // entry anywhere finishes the teardown.
    assert!(!w.k.prepare_entry(&mut w.m, c.vcpu));
    let root_vcpu = w.root_vcpu;
    assert!(w.k.prepare_entry(&mut w.m, root_vcpu));
    assert!(w.k.objects.partition(c.id).is_none());
    assert!(w.k.reaping.is_empty());
}

#[test]
fn unmapping_an_alias_keeps_the_original_mapping() {
    let mut w = World::new();
    let root_slat = w.root_slat();
    let original = RAM_BASE + 900 * 4096;
    let alias = 0x8000_0000;
    w.root_call(Call::MemoryMap {
        partition: w.root_self,
        memory: w.ram,
        first_page: 900,
        gpa: alias,
        pages: 1,
        access: Rights::READ | Rights::WRITE,
    })
    .unwrap();
    assert_eq!(w.m.slat_translate(root_slat, alias).unwrap().0, original);
    w.root_call(Call::MemoryUnmap {
        partition: w.root_self,
        gpa: alias,
        pages: 1,
    })
    .unwrap();
    assert!(!w.m.mapped(root_slat, alias));
    assert!(w.m.mapped(root_slat, original), "the original stays mapped");
    // Unmapping the alias again: nothing is mapped there any more.
    assert_eq!(
        w.root_call(Call::MemoryUnmap {
            partition: w.root_self,
            gpa: alias,
            pages: 1,
        }),
        Err(Status::NotMapped)
    );
    // Unmapping a page in the middle of the original splits its record
    // and leaves its neighbours.
    w.root_call(Call::MemoryUnmap {
        partition: w.root_self,
        gpa: original,
        pages: 1,
    })
    .unwrap();
    assert!(!w.m.mapped(root_slat, original));
    assert!(w.m.mapped(root_slat, original - 4096));
    assert!(w.m.mapped(root_slat, original + 4096));
}

#[test]
fn mapping_records_are_limited_per_partition() {
    let mut w = World::new();
    let c = w.child("alpha", 0, 256);
    // The child holds one record (its RAM at 0); punch holes until the limit.
    let limit = crate::object::partition::CHILD_MAPPINGS;
    let mut holes = 0;
    let err = loop {
        let gpa = (2 + 2 * holes as u64) * 4096;
        match w.root_call(Call::MemoryUnmap {
            partition: c.slot,
            gpa,
            pages: 1,
        }) {
            Ok(_) => holes += 1,
            Err(e) => break e,
        }
        assert!(holes <= 120, "no limit");
    };
    assert_eq!(err, Status::OutOfMemory);
    assert_eq!(w.k.mapping_count(c.id), limit);
    assert_eq!(holes, limit - 1);
    // Unmapping a whole record's end (no split) still works.
    assert!(
        w.root_call(Call::MemoryUnmap {
            partition: c.slot,
            gpa: 255 * 4096,
            pages: 1,
        })
        .is_ok()
    );
}

#[test]
fn a_child_cannot_raise_its_vcpus_above_its_ceiling() {
    let mut w = World::new();
    let c = w.child("alpha", 0, 32);
    let create = |priority: u64| Call::VcpuCreate {
        partition: c.self_slot,
        rip: 0x1000,
        rsp: 0x8000,
        cr3: 0x2000,
        arg: 0,
        flags: priority,
    };
    assert_eq!(
        w.call_as(c.id, c.vcpu, create(7)),
        Err(Status::InvalidArgument)
    );
    assert!(w.call_as(c.id, c.vcpu, create(0)).is_ok());
    // The root cannot go above the ceiling it set either.
    assert_eq!(
        w.root_call(Call::VcpuCreate {
            partition: c.slot,
            rip: 0,
            rsp: 0,
            cr3: 0,
            arg: 0,
            flags: 1,
        }),
        Err(Status::InvalidArgument)
    );
    // A child created with ceiling 5 may have vCPUs up to 5.
    let r = w
        .root_call(Call::PartitionCreate {
            authority: w.root_self,
            memory: w.ram,
            first_page: 500,
            pages: 16,
            name: Name::new("hi"),
            ceiling: 5,
        })
        .unwrap();
    let hi = h(r[0]);
    let vcpu = |prio| Call::VcpuCreate {
        partition: hi,
        rip: 0,
        rsp: 0,
        cr3: 0,
        arg: 0,
        flags: prio,
    };
    assert!(w.root_call(vcpu(5)).is_ok());
    assert_eq!(w.root_call(vcpu(6)), Err(Status::InvalidArgument));
}

#[test]
fn the_root_runs_after_waiting_whatever_the_childrens_priorities() {
    let mut w = World::new();
    let r = w
        .root_call(Call::PartitionCreate {
            authority: w.root_self,
            memory: w.ram,
            first_page: 500,
            pages: 16,
            name: Name::new("hog"),
            ceiling: 7,
        })
        .unwrap();
    let hog = h(r[0]);
    let v = h(w
        .root_call(Call::VcpuCreate {
            partition: hog,
            rip: 0,
            rsp: 0,
            cr3: 0,
            arg: 0,
            // Priority 7 on processor 0, the root's.
            flags: 7 | (1 << 8),
        })
        .unwrap()[0]);
    w.root_call(Call::VcpuStart { vcpu: v }).unwrap();
    // The root's vCPU leaves the processor (end of its slice) at tick 100.
    w.k.ticks = 100;
    let root_vcpu = w.root_vcpu;
    w.k.requeue(root_vcpu);
    let hog_vcpu = w.k.pick(0).unwrap();
    assert_ne!(hog_vcpu, root_vcpu, "priority 7 goes first");
    assert!(!w.k.should_preempt(0, 7), "nothing else of priority 7");
    w.k.ticks = 100 + ROOT_MAX_WAIT_TICKS - 1;
    assert!(!w.k.should_preempt(0, 7));
    w.k.ticks = 100 + ROOT_MAX_WAIT_TICKS;
    assert!(w.k.should_preempt(0, 7), "the root has waited long enough");
    w.k.requeue(hog_vcpu);
    assert_eq!(w.k.pick(0), Some(root_vcpu));
    // Having just run, it waits its turn again.
    w.k.requeue(root_vcpu);
    assert_eq!(w.k.pick(0), Some(hog_vcpu));
}

#[test]
fn every_call_checks_capabilities_through_the_one_check() {
    let mut w = World::new();
    let c = w.child("alpha", 0, 32);
    let port = h(w.root_call(Call::PortCreate).unwrap()[0]);
    // Acknowledge: a partition capability is the wrong type, a port
    // without BIND lacks the right.
    assert_eq!(
        w.root_call(Call::Acknowledge { slot: w.root_self }),
        Err(Status::WrongType)
    );
    let signal_only = h(w
        .root_call(Call::CapDelegate {
            slot: port,
            target: w.root_self,
            rights: Rights::SIGNAL,
        })
        .unwrap()[0]);
    assert_eq!(
        w.root_call(Call::Acknowledge { slot: signal_only }),
        Err(Status::InsufficientRights)
    );
    // Delegation: without GRANT, or more than held.
    assert_eq!(
        w.root_call(Call::CapDelegate {
            slot: signal_only,
            target: c.slot,
            rights: Rights::SIGNAL,
        }),
        Err(Status::InsufficientRights)
    );
    // Revoke and delete: a handle never issued is InvalidSlot, an old one StaleSlot.
    let never = SlotHandle {
        index: 200,
        generation: 3,
    };
    assert_eq!(
        w.root_call(Call::CapRevoke { slot: never }),
        Err(Status::InvalidSlot)
    );
    assert_eq!(
        w.root_call(Call::CapDelete { slot: never }),
        Err(Status::InvalidSlot)
    );
    w.root_call(Call::CapDelete { slot: signal_only }).unwrap();
    assert_eq!(
        w.root_call(Call::CapDelete { slot: signal_only }),
        Err(Status::StaleSlot)
    );
    assert_eq!(
        w.root_call(Call::CapRevoke { slot: signal_only }),
        Err(Status::StaleSlot)
    );
    // PartitionCreate with one capability of the wrong type for both.
    assert_eq!(
        w.root_call(Call::PartitionCreate {
            authority: w.ram,
            memory: w.ram,
            first_page: 500,
            pages: 1,
            name: Name::new("x"),
            ceiling: 0,
        }),
        Err(Status::WrongType)
    );
}

#[test]
fn cap_delegate_at_never_takes_a_generation_back() {
    let mut w = World::new();
    let c = w.child("alpha", 0, 32);
    let port = h(w.root_call(Call::PortCreate).unwrap()[0]);
    let at = SlotHandle {
        index: 40,
        generation: 7,
    };
    let put = |at| Call::CapDelegateAt {
        slot: port,
        target: c.slot,
        rights: Rights::SIGNAL,
        at,
    };
    assert_eq!(w.root_call(put(at)), Ok([at.raw(), 0, 0]));
    // The child deletes it: the slot is now at generation 8.
    w.call_as(c.id, c.vcpu, Call::CapDelete { slot: at })
        .unwrap();
    assert_eq!(
        w.root_call(put(at)),
        Err(Status::StaleSlot),
        "generation 7 again would make the old handle name the new copy"
    );
    assert_eq!(
        w.call_as(c.id, c.vcpu, Call::PortSignal { port: at }),
        Err(Status::StaleSlot)
    );
    let next = SlotHandle {
        generation: 8,
        ..at
    };
    assert!(w.root_call(put(next)).is_ok());
    assert!(
        w.call_as(c.id, c.vcpu, Call::PortSignal { port: next })
            .is_ok()
    );
}

#[test]
fn cap_clone_never_takes_a_target_slot_back_a_generation() {
    let mut w = World::new();
    let a = w.child("alpha", 0, 16);
    let b = w.child("beta", 16, 16);
    // beta uses and empties a slot alpha never used: beta's is at generation 1.
    let port = h(w.call_as(b.id, b.vcpu, Call::PortCreate).unwrap()[0]);
    w.call_as(b.id, b.vcpu, Call::CapDelete { slot: port })
        .unwrap();
    let before: Vec<_> = (0..crate::cap::SLOTS)
        .map(|i| w.k.objects.partition(b.id).unwrap().cspace.slot(i))
        .collect();
    assert_eq!(
        w.root_call(Call::CapClone {
            source: a.slot,
            target: b.slot
        }),
        Err(Status::StaleSlot),
        "generation 0 again would let beta's old handle name alpha's copy"
    );
    let after: Vec<_> = (0..crate::cap::SLOTS)
        .map(|i| w.k.objects.partition(b.id).unwrap().cspace.slot(i))
        .collect();
    assert_eq!(before, after, "nothing changed");
}

#[test]
fn the_partitions_there_can_be_fit_the_reaping_list() {
    let mut w = World::new();
    let mut partitions = 1;
    let err = loop {
        let call = Call::PartitionCreate {
            authority: w.root_self,
            memory: w.ram,
            first_page: 64 + 16 * partitions,
            pages: 16,
            name: Name::new("many"),
            ceiling: 0,
        };
        match w.root_call(call) {
            Ok(_) => partitions += 1,
            Err(e) => break e,
        }
        assert!(partitions as usize <= MAX_PARTITIONS, "no limit");
    };
    assert_eq!(err, Status::OutOfMemory, "the quota ends it");
    assert!(partitions > 1);
}

#[test]
fn route_changes_keep_one_entry_per_interrupt_line() {
    let mut m = Fake::default();
    let mut k = Kernel::new(2, 16);
    let slat = m.slat_new().unwrap();
    let (root, caps) = k
        .create_root(&mut m, slat, &[(RAM_BASE, RAM_PAGES)], &[4, 9], &[])
        .unwrap();
    let vmcb = m.vmcb_new().unwrap();
    let (vcpu, vcpu_cap) = k.create_boot_vcpu(root, vmcb, 0).unwrap();
    let lines: Vec<SlotHandle> = caps
        .iter()
        .filter(|c| c.kind == ObjectKind::Interrupt)
        .map(|c| c.slot)
        .collect();
    assert_eq!(lines.len(), 2);
    for _ in 0..MAX_ROUTES {
        for &line in &lines {
            let bind = Call::InterruptBind {
                interrupt: line,
                vcpu: vcpu_cap.slot,
                vector: 0x40,
            };
            k.call(&mut m, root, vcpu, &bind.encode()).unwrap();
            let ack = Call::Acknowledge { slot: line };
            k.call(&mut m, root, vcpu, &ack.encode()).unwrap();
        }
    }
    assert_eq!(k.pending_routes, [(4, true), (9, true)]);
}

/// A root with level-triggered lines 10 and 11 and edge line 4, its
/// vCPU's capability, and the lines' capabilities (4, 10, 11).
fn interrupt_world() -> (World, SlotHandle, [SlotHandle; 3]) {
    let mut m = Fake::default();
    let mut k = Kernel::new(2, 16);
    k.level_lines = 1 << 10 | 1 << 11;
    let slat = m.slat_new().unwrap();
    m.slat_map(slat, RAM_BASE, RAM_BASE, RAM_PAGES, Access::RWX)
        .unwrap();
    let (root, caps) = k
        .create_root(&mut m, slat, &[(RAM_BASE, RAM_PAGES)], &[4, 10, 11], &[])
        .unwrap();
    let vmcb = m.vmcb_new().unwrap();
    let (root_vcpu, vcpu_cap) = k.create_boot_vcpu(root, vmcb, 0).unwrap();
    let lines: Vec<&InitialCap> = caps
        .iter()
        .filter(|c| c.kind == ObjectKind::Interrupt)
        .collect();
    assert_eq!(
        lines.iter().map(|c| (c.a, c.b)).collect::<Vec<_>>(),
        [(4, 0), (10, 1), (11, 1)],
        "the boot page says which lines are level-triggered"
    );
    let lines = [lines[0].slot, lines[1].slot, lines[2].slot];
    let w = World {
        k,
        m,
        root,
        root_vcpu,
        root_self: caps[0].slot,
        ram: caps[1].slot,
    };
    (w, vcpu_cap.slot, lines)
}

/// Whether `vector` is pending on the root's vCPU; clears it.
fn take_raised(w: &mut World, vector: u8) -> bool {
    let v = w.k.objects.vcpu_mut(w.root_vcpu).unwrap();
    let raised = v.pending[vector as usize / 64] & 1 << (vector % 64) != 0;
    v.clear(vector);
    raised
}

fn line_on(w: &World, gsi: u32) -> Option<bool> {
    w.k.pending_routes
        .iter()
        .find(|(g, _)| *g == gsi)
        .map(|&(_, on)| on)
}

fn bind(w: &mut World, interrupt: SlotHandle, vcpu: SlotHandle, vector: u8) {
    w.root_call(Call::InterruptBind {
        interrupt,
        vcpu,
        vector,
    })
    .unwrap();
}

#[test]
fn a_shared_level_line_raises_every_binding_and_waits_for_every_acknowledge() {
    let (mut w, vcpu, [_, _, line11]) = interrupt_world();
    let shared = h(w
        .root_call(Call::InterruptShare { interrupt: line11 })
        .unwrap()[0]);
    bind(&mut w, line11, vcpu, 0x40);
    assert_eq!(line_on(&w, 11), Some(true));
    bind(&mut w, shared, vcpu, 0x41);
    assert_eq!(line_on(&w, 11), Some(true));
    // Either acknowledge order: the line stays masked until the last one.
    for (first, second) in [(line11, shared), (shared, line11)] {
        assert_eq!(w.k.device_interrupt(&mut w.m, 11), 2);
        assert!(take_raised(&mut w, 0x40) && take_raised(&mut w, 0x41));
        assert_eq!(line_on(&w, 11), Some(false));
        w.root_call(Call::Acknowledge { slot: first }).unwrap();
        assert_eq!(line_on(&w, 11), Some(false), "one binding still holds it");
        w.root_call(Call::Acknowledge { slot: second }).unwrap();
        assert_eq!(line_on(&w, 11), Some(true));
    }
}

#[test]
fn a_binding_that_never_acknowledges_blocks_only_its_own_line() {
    let (mut w, vcpu, [_, line10, line11]) = interrupt_world();
    let shared = h(w
        .root_call(Call::InterruptShare { interrupt: line11 })
        .unwrap()[0]);
    bind(&mut w, line10, vcpu, 0x50);
    bind(&mut w, line11, vcpu, 0x51);
    bind(&mut w, shared, vcpu, 0x52);
    assert_eq!(w.k.device_interrupt(&mut w.m, 10), 1);
    assert_eq!(w.k.device_interrupt(&mut w.m, 11), 2);
    // The shared binding never acknowledges.
    w.root_call(Call::Acknowledge { slot: line11 }).unwrap();
    w.root_call(Call::Acknowledge { slot: line10 }).unwrap();
    assert_eq!(line_on(&w, 10), Some(true));
    assert_eq!(line_on(&w, 11), Some(false));
    // A spurious fire of the held line raises only the armed binding.
    assert!(take_raised(&mut w, 0x51) && take_raised(&mut w, 0x52));
    assert_eq!(w.k.device_interrupt(&mut w.m, 11), 1);
    assert!(take_raised(&mut w, 0x51) && !take_raised(&mut w, 0x52));
}

#[test]
fn only_level_triggered_lines_are_shared() {
    let (mut w, _, [line4, _, _]) = interrupt_world();
    assert_eq!(
        w.root_call(Call::InterruptShare { interrupt: line4 }),
        Err(Status::InvalidArgument)
    );
    assert_eq!(
        w.root_call(Call::InterruptShare {
            interrupt: w.root_self
        }),
        Err(Status::WrongType)
    );
}

#[test]
fn a_shared_binding_goes_with_its_capability_and_its_quota_comes_back() {
    let (mut w, vcpu, [_, _, line11]) = interrupt_world();
    let quota = w.k.objects.partition(w.root).unwrap().quota;
    let shared = h(w
        .root_call(Call::InterruptShare { interrupt: line11 })
        .unwrap()[0]);
    assert_eq!(w.k.objects.partition(w.root).unwrap().quota, quota - 1);
    bind(&mut w, line11, vcpu, 0x40);
    bind(&mut w, shared, vcpu, 0x41);
    w.k.device_interrupt(&mut w.m, 11);
    w.root_call(Call::Acknowledge { slot: line11 }).unwrap();
    assert_eq!(line_on(&w, 11), Some(false));
    // Deleting the capability of the binding that holds the line frees it.
    w.root_call(Call::CapDelete { slot: shared }).unwrap();
    assert_eq!(line_on(&w, 11), Some(true));
    assert_eq!(w.k.objects.partition(w.root).unwrap().quota, quota);
    assert_eq!(
        w.root_call(Call::Acknowledge { slot: shared }),
        Err(Status::StaleSlot)
    );
    // A share derives from the line's capability: revoking that removes it.
    let again = h(w
        .root_call(Call::InterruptShare { interrupt: line11 })
        .unwrap()[0]);
    bind(&mut w, again, vcpu, 0x41);
    assert_eq!(w.root_call(Call::CapRevoke { slot: line11 }).unwrap()[0], 1);
    assert_eq!(w.k.objects.partition(w.root).unwrap().quota, quota);
    // The last capability on the line goes: nothing is bound, it is masked.
    w.root_call(Call::CapDelete { slot: line11 }).unwrap();
    assert_eq!(line_on(&w, 11), Some(false));
    assert_eq!(w.k.device_interrupt(&mut w.m, 11), 0);
}

#[test]
fn message_interrupts_get_a_kernel_vector_and_never_stack_up() {
    let (mut w, vcpu, _) = interrupt_world();
    let r = w
        .root_call(Call::InterruptMessage {
            partition: w.root_self,
        })
        .unwrap();
    let (msi, address, data) = (h(r[0]), r[1], r[2]);
    let vector = data as u8;
    assert_eq!(address, 0xfee0_0000);
    assert!(
        (crate::object::interrupt::MESSAGE_VECTOR_FIRST..).contains(&vector),
        "a kernel vector, not the partition's choice"
    );
    assert_eq!(w.m.message_vectors, [vector]);
    // Before it is bound a message waits; the bind delivers it.
    assert!(w.k.message_interrupt(&mut w.m, vector));
    bind(&mut w, msi, vcpu, 0x60);
    assert!(take_raised(&mut w, 0x60));
    // Until acknowledged, further messages coalesce into one.
    w.k.message_interrupt(&mut w.m, vector);
    w.k.message_interrupt(&mut w.m, vector);
    assert!(!take_raised(&mut w, 0x60));
    w.root_call(Call::Acknowledge { slot: msi }).unwrap();
    assert!(take_raised(&mut w, 0x60));
    w.root_call(Call::Acknowledge { slot: msi }).unwrap();
    assert!(!take_raised(&mut w, 0x60));
    // A second one gets another vector; an unknown vector finds nobody.
    let second = w
        .root_call(Call::InterruptMessage {
            partition: w.root_self,
        })
        .unwrap();
    assert_ne!(second[2] as u8, vector);
    assert!(!w.k.message_interrupt(&mut w.m, 0xef));
    // Its capability gone, the vector is stray again and free for reuse.
    w.root_call(Call::CapDelete { slot: msi }).unwrap();
    assert_eq!(w.m.message_vectors, [second[2] as u8]);
    assert!(!w.k.message_interrupt(&mut w.m, vector));
    let third = w
        .root_call(Call::InterruptMessage {
            partition: w.root_self,
        })
        .unwrap();
    assert_eq!(third[2] as u8, vector);
}

#[test]
fn message_vectors_are_the_root_partitions_to_ask_for_and_run_out_cleanly() {
    let (mut w, _, _) = interrupt_world();
    let child = w.child("c", 64, 16);
    let me = child.self_slot;
    assert_eq!(
        w.call_as(
            child.id,
            child.vcpu,
            Call::InterruptMessage { partition: me }
        ),
        Err(Status::InsufficientRights),
        "a child has no CREATE on itself"
    );
    let mut got = 0;
    let err = loop {
        match w.root_call(Call::InterruptMessage {
            partition: w.root_self,
        }) {
            Ok(_) => got += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err, Status::OutOfMemory);
    assert_eq!(got, crate::object::interrupt::MESSAGE_VECTORS as usize);
}
/// Timer tests (`kernel/timers.rs`), over the same world.
mod timers {
    use super::*;
    use ipc::hypercall::timer::{ABSOLUTE, MAX_DEADLINE_NS, MIN_PERIOD_NS};

    const MS: u64 = 1_000_000;

    /// A started, blocked child vCPU with a port bound to vector 0x40 and
    /// a timer on that port, both the child's own.
    struct Sleeper {
        c: Child,
        port: SlotHandle,
        timer: SlotHandle,
        cpu: u32,
    }

    fn sleeper(w: &mut World) -> Sleeper {
        let c = w.child("alpha", 0, 32);
        let vcpu = h(w
            .root_call(Call::CapDelegate {
                slot: c.vcpu_slot,
                target: c.slot,
                rights: Rights::CONTROL,
            })
            .unwrap()[0]);
        let port = h(w.call_as(c.id, c.vcpu, Call::PortCreate).unwrap()[0]);
        w.call_as(
            c.id,
            c.vcpu,
            Call::PortBind {
                port,
                vcpu,
                vector: 0x40,
            },
        )
        .unwrap();
        let timer = h(w.call_as(c.id, c.vcpu, Call::TimerCreate { port }).unwrap()[0]);
        w.root_call(Call::VcpuStart { vcpu: c.vcpu_slot }).unwrap();
        let cpu = w.k.objects.vcpu(c.vcpu).unwrap().cpu;
        assert_eq!(w.k.pick(cpu), Some(c.vcpu));
        Sleeper {
            c,
            port,
            timer,
            cpu,
        }
    }

    /// The vCPU halts with interrupts on: it blocks.
    fn block(w: &mut World, s: &Sleeper) {
        let vmcb = w.k.objects.vcpu(s.c.vcpu).unwrap().vmcb;
        w.m.vmcb(vmcb).write_u64(offset::RFLAGS, 0x202);
        assert_eq!(
            w.k.handle_exit(&mut w.m, s.c.vcpu, Exit::Hlt),
            Next::Blocked
        );
        assert_eq!(w.k.pick(s.cpu), None);
    }

    fn set(
        w: &mut World,
        s: &Sleeper,
        deadline: u64,
        period: u64,
        flags: u64,
    ) -> Result<[u64; 3], Status> {
        w.call_as(
            s.c.id,
            s.c.vcpu,
            Call::TimerSet {
                timer: s.timer,
                deadline,
                period,
                flags,
            },
        )
    }

    fn signals(w: &World, s: &Sleeper) -> u64 {
        let cap =
            w.k.objects
                .partition(s.c.id)
                .unwrap()
                .cspace
                .check(s.port, ObjectKind::Port, Rights::NONE)
                .unwrap();
        w.k.objects.port(cap.object).unwrap().signals
    }

    #[test]
    fn a_one_shot_timer_wakes_its_vcpu_at_the_deadline_not_before() {
        let mut w = World::new();
        w.k.advance_clock(&mut w.m, 1_000 * MS);
        let s = sleeper(&mut w);
        assert_eq!(
            set(&mut w, &s, 10 * MS, 0, 0),
            Ok([1_010 * MS, 1_000 * MS, 0]),
            "the deadline and the clock now"
        );
        block(&mut w, &s);
        w.k.advance_clock(&mut w.m, 1_010 * MS - 1);
        assert_eq!(w.k.pick(s.cpu), None, "not before its deadline");
        w.k.advance_clock(&mut w.m, 1_010 * MS);
        assert_eq!(w.k.pick(s.cpu), Some(s.c.vcpu), "woken at its deadline");
        let vmcb = w.k.objects.vcpu(s.c.vcpu).unwrap().vmcb;
        assert!(w.k.prepare_entry(&mut w.m, s.c.vcpu));
        assert_eq!(
            w.m.vmcb(vmcb).read_u64(offset::EVENT_INJECTION),
            0x40 | (1 << 31)
        );
        // One-shot: it fires once, then is disarmed.
        w.k.advance_clock(&mut w.m, 5_000 * MS);
        assert_eq!(signals(&w, &s), 1);
        assert_eq!(
            w.call_as(s.c.id, s.c.vcpu, Call::TimerCancel { timer: s.timer }),
            Ok([0, 0, 0])
        );
        // The clock never goes back.
        w.k.advance_clock(&mut w.m, 1);
        assert_eq!(w.k.now_ns, 5_000 * MS);
    }

    #[test]
    fn absolute_deadlines_and_cancel() {
        let mut w = World::new();
        w.k.advance_clock(&mut w.m, 100 * MS);
        let s = sleeper(&mut w);
        assert_eq!(
            set(&mut w, &s, 150 * MS, 0, ABSOLUTE),
            Ok([150 * MS, 100 * MS, 0])
        );
        // Re-arming replaces the deadline; cancelling disarms.
        set(&mut w, &s, 120 * MS, 0, ABSOLUTE).unwrap();
        assert_eq!(w.k.timers.len(), 1, "one entry per timer");
        assert_eq!(
            w.call_as(s.c.id, s.c.vcpu, Call::TimerCancel { timer: s.timer }),
            Ok([1, 0, 0])
        );
        w.k.advance_clock(&mut w.m, 200 * MS);
        assert_eq!(signals(&w, &s), 0, "a cancelled timer never fires");
        // A deadline already past fires at once, within the call.
        set(&mut w, &s, 150 * MS, 0, ABSOLUTE).unwrap();
        assert_eq!(signals(&w, &s), 1);
        assert!(w.k.timers.is_empty());
    }

    #[test]
    fn a_periodic_timer_fires_once_per_period_and_coalesces_missed_ones() {
        let mut w = World::new();
        let s = sleeper(&mut w);
        set(&mut w, &s, 10 * MS, 10 * MS, 0).unwrap();
        for tick in 1..=5 {
            w.k.advance_clock(&mut w.m, tick * 10 * MS);
        }
        assert_eq!(signals(&w, &s), 5);
        // Half a second passes between two checks: one signal, and the
        // next deadline is the next multiple of the period.
        w.k.advance_clock(&mut w.m, 555 * MS);
        assert_eq!(signals(&w, &s), 6);
        let id = w.k.timers.next_deadline();
        assert_eq!(id, Some(560 * MS));
        w.call_as(s.c.id, s.c.vcpu, Call::TimerCancel { timer: s.timer })
            .unwrap();
        w.k.advance_clock(&mut w.m, 1_000 * MS);
        assert_eq!(signals(&w, &s), 6);
    }

    #[test]
    fn absurd_deadlines_and_periods_are_refused_and_change_nothing() {
        let mut w = World::new();
        w.k.advance_clock(&mut w.m, 7 * MS);
        let s = sleeper(&mut w);
        let invalid = Err(Status::InvalidArgument);
        assert_eq!(set(&mut w, &s, 0, 0, 0), invalid, "zero");
        assert_eq!(set(&mut w, &s, 0, 0, ABSOLUTE), invalid, "zero absolute");
        assert_eq!(set(&mut w, &s, u64::MAX, 0, 0), invalid, "maximal");
        assert_eq!(
            set(&mut w, &s, u64::MAX, 0, ABSOLUTE),
            invalid,
            "maximal absolute"
        );
        assert_eq!(set(&mut w, &s, MAX_DEADLINE_NS + 1, 0, 0), invalid);
        assert_eq!(
            set(&mut w, &s, 7 * MS + MAX_DEADLINE_NS + 1, 0, ABSOLUTE),
            invalid,
            "more than a year from now"
        );
        assert!(set(&mut w, &s, 7 * MS + MAX_DEADLINE_NS, 0, ABSOLUTE).is_ok());
        assert!(set(&mut w, &s, MAX_DEADLINE_NS, 0, 0).is_ok());
        assert_eq!(set(&mut w, &s, MS, MIN_PERIOD_NS - 1, 0), invalid, "period");
        assert_eq!(set(&mut w, &s, MS, u64::MAX, 0), invalid, "maximal period");
        assert_eq!(set(&mut w, &s, MS, 0, 0x80), invalid, "flags");
        // The accepted ones left one entry, at the last deadline.
        assert_eq!(w.k.timers.len(), 1);
        assert_eq!(w.k.timers.next_deadline(), Some(7 * MS + MAX_DEADLINE_NS));
    }

    #[test]
    fn timers_need_a_port_with_signal_and_control_on_the_timer() {
        let mut w = World::new();
        let c = w.child("alpha", 0, 32);
        let call = |w: &mut World, call| w.call_as(c.id, c.vcpu, call);
        // A port the child does not hold: its slot is empty there.
        let roots = h(w.root_call(Call::PortCreate).unwrap()[0]);
        assert_eq!(
            call(
                &mut w,
                Call::TimerCreate {
                    port: SlotHandle {
                        index: 200,
                        generation: 0
                    }
                }
            ),
            Err(Status::InvalidSlot)
        );
        // A port it holds without SIGNAL.
        let bind_only = h(w
            .root_call(Call::CapDelegate {
                slot: roots,
                target: c.slot,
                rights: Rights::BIND,
            })
            .unwrap()[0]);
        assert_eq!(
            call(&mut w, Call::TimerCreate { port: bind_only }),
            Err(Status::InsufficientRights)
        );
        // Not a port.
        assert_eq!(
            call(&mut w, Call::TimerCreate { port: c.self_slot }),
            Err(Status::WrongType)
        );
        // A deleted port.
        let own = h(call(&mut w, Call::PortCreate).unwrap()[0]);
        call(&mut w, Call::CapDelete { slot: own }).unwrap();
        assert_eq!(
            call(&mut w, Call::TimerCreate { port: own }),
            Err(Status::StaleSlot)
        );
        // With SIGNAL on the root's port it may: the timer only does what
        // PortSignal could.
        let signal = h(w
            .root_call(Call::CapDelegate {
                slot: roots,
                target: c.slot,
                rights: Rights::SIGNAL,
            })
            .unwrap()[0]);
        let timer = h(call(&mut w, Call::TimerCreate { port: signal }).unwrap()[0]);
        // A copy of the timer without CONTROL cannot set or cancel it; a
        // port is not a timer.
        let copy = h(call(
            &mut w,
            Call::CapDelegate {
                slot: timer,
                target: c.self_slot,
                rights: Rights::GRANT,
            },
        )
        .unwrap()[0]);
        let set = |timer| Call::TimerSet {
            timer,
            deadline: MS,
            period: 0,
            flags: 0,
        };
        assert_eq!(call(&mut w, set(copy)), Err(Status::InsufficientRights));
        assert_eq!(
            call(&mut w, Call::TimerCancel { timer: copy }),
            Err(Status::InsufficientRights)
        );
        assert_eq!(call(&mut w, set(signal)), Err(Status::WrongType));
        assert!(call(&mut w, set(timer)).is_ok());
        // Its port goes (the root deletes it): the timer fires into
        // nothing and is disarmed; setting it again is InvalidState.
        w.root_call(Call::CapDelete { slot: roots }).unwrap();
        w.k.advance_clock(&mut w.m, 10 * MS);
        assert!(w.k.timers.is_empty());
        assert_eq!(call(&mut w, set(timer)), Err(Status::InvalidState));
        assert!(call(&mut w, set(timer)).is_err());
    }

    #[test]
    fn a_timer_is_freed_with_its_last_capability_and_its_quota_returns() {
        let mut w = World::new();
        let s = sleeper(&mut w);
        let before = w.k.objects.len();
        let quota = quota_of(&w, s.c.id);
        for _ in 0..5_000 {
            let t = h(w
                .call_as(s.c.id, s.c.vcpu, Call::TimerCreate { port: s.port })
                .unwrap()[0]);
            w.call_as(
                s.c.id,
                s.c.vcpu,
                Call::TimerSet {
                    timer: t,
                    deadline: 1_000 * MS,
                    period: MIN_PERIOD_NS,
                    flags: 0,
                },
            )
            .unwrap();
            assert_eq!(
                w.call_as(s.c.id, s.c.vcpu, Call::CapDelete { slot: t }),
                Ok([1, 0, 0])
            );
        }
        assert_eq!(w.k.objects.len(), before, "every deleted timer was freed");
        assert_eq!(quota_of(&w, s.c.id), quota, "and its quota given back");
        assert_eq!(w.k.timers.len(), 0, "and disarmed");
    }

    #[test]
    fn a_flood_of_timers_is_refused_by_the_quota_and_fires_in_bounded_work() {
        let mut w = World::new();
        let s = sleeper(&mut w);
        let mut held = Vec::new();
        let refusal = loop {
            match w.call_as(s.c.id, s.c.vcpu, Call::TimerCreate { port: s.port }) {
                Ok(r) => held.push(h(r[0])),
                Err(e) => break e,
            }
            assert!(held.len() < 256, "never refused");
        };
        assert_eq!(refusal, Status::OutOfMemory);
        assert_eq!(quota_of(&w, s.c.id), 0);
        assert!(held.len() >= 25, "only {} timers", held.len());
        for &t in &held {
            w.call_as(
                s.c.id,
                s.c.vcpu,
                Call::TimerSet {
                    timer: t,
                    deadline: MIN_PERIOD_NS,
                    period: MIN_PERIOD_NS,
                    flags: 0,
                },
            )
            .unwrap();
        }
        // A second of ticks: every timer fires once per check, their
        // signals coalesce on the one port, the queue keeps one entry each.
        for tick in 1..=100 {
            w.k.advance_clock(&mut w.m, tick * 10 * MS);
            assert_eq!(w.k.timers.len(), held.len());
        }
        assert_eq!(signals(&w, &s), 100 * held.len() as u64);
        // Destroying the child frees its timers and disarms them.
        assert!(w.k.requeue(s.c.vcpu), "off its processor");
        w.root_call(Call::PartitionDestroy {
            partition: s.c.slot,
        })
        .unwrap();
        assert!(w.k.timers.is_empty());
        assert!(w.k.objects.ids_of(ObjectKind::Timer).is_empty());
    }

    #[test]
    fn cap_inspect_names_timers_and_cap_clone_refuses_the_sources_own() {
        let mut w = World::new();
        let s = sleeper(&mut w);
        let r = w
            .root_call(Call::CapInspect {
                partition: s.c.slot,
                index: s.timer.index,
            })
            .unwrap();
        assert_eq!(
            (r[0] >> 16) as u32,
            ipc::boot::cap_kind::TIMER,
            "kind in bits 16 and up"
        );
        assert_eq!(r[1], u64::from((Rights::CONTROL | Rights::GRANT).bits()));
        // A child whose only own object is a timer (on the root's port)
        // cannot be cloned: the timer dies with it.
        let a = w.child("beta", 64, 32);
        let b = w.child("gamma", 128, 32);
        let roots = h(w.root_call(Call::PortCreate).unwrap()[0]);
        let signal = h(w
            .root_call(Call::CapDelegate {
                slot: roots,
                target: a.slot,
                rights: Rights::SIGNAL,
            })
            .unwrap()[0]);
        let clone = Call::CapClone {
            source: a.slot,
            target: b.slot,
        };
        let t = h(w
            .call_as(a.id, a.vcpu, Call::TimerCreate { port: signal })
            .unwrap()[0]);
        assert_eq!(w.root_call(clone), Err(Status::InvalidState));
        w.call_as(a.id, a.vcpu, Call::CapDelete { slot: t })
            .unwrap();
        assert!(w.root_call(clone).is_ok(), "without the timer it clones");
    }
}
