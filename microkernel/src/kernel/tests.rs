//! Host tests of the kernel core over a fake machine.

use std::collections::HashMap;
use std::string::String;
use std::vec::Vec;

use ipc::hypercall::{Call, Name, Rights, SlotHandle, Status, StopReason, run_state};

use super::*;
use crate::paging::Access;
use crate::svm::exit::Exit;
use crate::svm::permissions::{IOPM_BYTES, MSRPM_BYTES, port_intercepted};
use crate::svm::vmcb::{Vmcb, offset};

/// A fake machine: SLATs as maps, RAM as a page map, VMCBs in boxes.
#[derive(Default)]
struct Fake {
    next: u64,
    slats: HashMap<u64, HashMap<u64, (u64, Access, bool)>>,
    ram: HashMap<u64, Box<[u8; 4096]>>,
    vmcbs: HashMap<u64, Box<Vmcb>>,
    iopms: HashMap<u64, Box<[u8; IOPM_BYTES]>>,
    msrpms: HashMap<u64, Box<[u8; MSRPM_BYTES]>>,
    lines: Vec<String>,
    kicks: Vec<u32>,
    fail_slat: bool,
    no_dirty_flags: bool,
}

impl Fake {
    fn addr(&mut self) -> u64 {
        self.next += 0x1000;
        0x7000_0000 + self.next
    }
    fn mapped(&self, root: u64, gpa: u64) -> bool {
        self.slats[&root].contains_key(&gpa)
    }
    fn write_guest(&mut self, root: u64, gpa: u64) {
        self.slats.get_mut(&root).unwrap().get_mut(&gpa).unwrap().2 = true;
    }
}

impl Machine for Fake {
    fn slat_new(&mut self) -> Result<u64, Status> {
        if self.fail_slat {
            return Err(Status::OutOfMemory);
        }
        let a = self.addr();
        self.slats.insert(a, HashMap::new());
        Ok(a)
    }
    fn slat_map(
        &mut self,
        root: u64,
        gpa: u64,
        hpa: u64,
        pages: u64,
        access: Access,
    ) -> Result<(), Status> {
        let slat = self.slats.get_mut(&root).unwrap();
        for i in 0..pages {
            assert!(
                slat.insert(gpa + i * 4096, (hpa + i * 4096, access, false))
                    .is_none(),
                "double map"
            );
        }
        Ok(())
    }
    fn slat_unmap(&mut self, root: u64, gpa: u64, pages: u64) -> Result<(), Status> {
        let slat = self.slats.get_mut(&root).unwrap();
        for i in 0..pages {
            slat.remove(&(gpa + i * 4096));
        }
        Ok(())
    }
    fn slat_translate(&self, root: u64, gpa: u64) -> Option<(u64, Access)> {
        let page = gpa & !0xfff;
        self.slats
            .get(&root)?
            .get(&page)
            .map(|e| (e.0 + (gpa & 0xfff), e.1))
    }
    fn slat_take_dirty(&mut self, root: u64, gpa: u64) -> bool {
        self.slats
            .get_mut(&root)
            .and_then(|s| s.get_mut(&gpa))
            .is_some_and(|e| core::mem::take(&mut e.2))
    }
    fn slat_free(&mut self, root: u64) {
        self.slats.remove(&root).expect("freeing a live SLAT");
    }
    fn copy_page(&mut self, dst: u64, src: u64) {
        let page = self.ram.get(&src).map_or([0; 4096], |p| **p);
        self.ram.insert(dst, Box::new(page));
    }
    fn write_bytes(&mut self, dst: u64, bytes: &[u8]) {
        let page = self
            .ram
            .entry(dst & !0xfff)
            .or_insert_with(|| Box::new([0; 4096]));
        let off = (dst & 0xfff) as usize;
        page[off..off + bytes.len()].copy_from_slice(bytes);
    }
    fn read_bytes(&self, src: u64, out: &mut [u8]) {
        let off = (src & 0xfff) as usize;
        match self.ram.get(&(src & !0xfff)) {
            Some(p) => out.copy_from_slice(&p[off..off + out.len()]),
            None => out.fill(0),
        }
    }
    fn vmcb_new(&mut self) -> Result<u64, Status> {
        let a = self.addr();
        self.vmcbs.insert(a, Box::new(Vmcb::new()));
        Ok(a)
    }
    fn vmcb(&mut self, hpa: u64) -> &mut Vmcb {
        self.vmcbs.get_mut(&hpa).expect("live VMCB")
    }
    fn vmcb_free(&mut self, hpa: u64) {
        self.vmcbs.remove(&hpa).expect("freeing a live VMCB");
    }
    fn permission_maps_new(&mut self) -> Result<(u64, u64), Status> {
        let (a, b) = (self.addr(), self.addr());
        self.iopms.insert(a, Box::new([0xff; IOPM_BYTES]));
        self.msrpms.insert(b, Box::new([0xff; MSRPM_BYTES]));
        Ok((a, b))
    }
    fn iopm(&mut self, hpa: u64) -> &mut [u8; IOPM_BYTES] {
        self.iopms.get_mut(&hpa).unwrap()
    }
    fn msrpm(&mut self, hpa: u64) -> &mut [u8; MSRPM_BYTES] {
        self.msrpms.get_mut(&hpa).unwrap()
    }
    fn permission_maps_free(&mut self, maps: (u64, u64)) {
        self.iopms.remove(&maps.0).unwrap();
        self.msrpms.remove(&maps.1).unwrap();
    }
    fn console(&mut self, partition: &str, line: &str) {
        self.lines.push(format!("[{partition}] {line}"));
    }
    fn cpuid(&self, _leaf: u32, _subleaf: u32) -> [u32; 4] {
        [0, 0, 0, 0]
    }
    fn tracks_dirty_pages(&self) -> bool {
        !self.no_dirty_flags
    }
    fn kick(&mut self, cpu: u32) {
        self.kicks.push(cpu);
    }
}

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
