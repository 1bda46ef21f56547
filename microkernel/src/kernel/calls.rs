//! Hypercall handlers: decode, validate, perform.
//!
//! Each handler first looks up and checks every capability and argument
//! (through [`Kernel::cap`], the one place rights are checked) and reserves
//! every resource it needs; only then does it change state.

use alloc::vec::Vec;
use ipc::hypercall::{Call, Registers, Rights, SlotHandle, Status, run_state};
use ipc::vcpu_state::VcpuState;

use super::{Kernel, MAX_VCPUS, Outcome};
use crate::cap::{ANY_KIND, Capability};
use crate::machine::Machine;
use crate::object::memory::Mapping;
use crate::object::partition::{CONSOLE_LINE, RunState};
use crate::object::port::{Delivery, Port};
use crate::object::vcpu::State;
use crate::object::{Memory, Object, ObjectId, ObjectKind, Partition, Vcpu};
use crate::paging::Access;
use crate::svm::state;
use crate::svm::vmcb::LongModeStart;

pub(super) type CallResult = Result<Outcome, Status>;

pub(super) fn done(results: [u64; 3]) -> CallResult {
    Ok(Outcome::Done(results))
}

fn access_of(rights: Rights) -> Access {
    Access {
        write: rights.contains(Rights::WRITE),
        execute: rights.contains(Rights::EXECUTE),
    }
}

impl Kernel {
    /// Looks up `handle` in `caller`'s space and checks type and rights.
    pub(super) fn cap(
        &self,
        caller: ObjectId,
        handle: SlotHandle,
        kind: ObjectKind,
        rights: Rights,
    ) -> Result<Capability, Status> {
        self.cap_kinds(caller, handle, &[kind], rights)
    }

    /// Looks up `handle` in `caller`'s space and checks that it names one
    /// of `kinds` with `rights`: every call's capability check goes here
    /// (and through `CapSpace::check_kinds`).
    pub(super) fn cap_kinds(
        &self,
        caller: ObjectId,
        handle: SlotHandle,
        kinds: &[ObjectKind],
        rights: Rights,
    ) -> Result<Capability, Status> {
        let p = self.objects.partition(caller).ok_or(Status::InvalidSlot)?;
        let cap = p.cspace.check_kinds(handle, kinds, rights)?;
        // The object behind a capability is alive while the capability is
        // (objects are destroyed only after their capabilities are removed).
        self.objects.get(cap.object).ok_or(Status::StaleSlot)?;
        Ok(cap)
    }

    /// The host-physical address behind a page of the caller's own
    /// guest-physical space (a hypercall buffer).
    fn buffer(
        &self,
        m: &impl Machine,
        caller: ObjectId,
        gpa: u64,
        write: bool,
    ) -> Result<u64, Status> {
        let p = self.objects.partition(caller).ok_or(Status::InvalidSlot)?;
        match m.slat_translate(p.slat_root, gpa) {
            Some((hpa, access)) if access.write || !write => Ok(hpa & !0xfff),
            _ => Err(Status::BadBuffer),
        }
    }

    pub(super) fn free_slots(&self, partition: ObjectId, needed: usize) -> Result<(), Status> {
        let p = self
            .objects
            .partition(partition)
            .ok_or(Status::InvalidSlot)?;
        if p.cspace.free_slots() < needed {
            return Err(Status::OutOfSlots);
        }
        Ok(())
    }

    /// Decodes and performs one hypercall of `caller` (running `vcpu`).
    pub fn call(
        &mut self,
        m: &mut impl Machine,
        caller: ObjectId,
        vcpu: ObjectId,
        regs: &Registers,
    ) -> CallResult {
        match Call::decode(regs)? {
            Call::Null => done([0; 3]),
            Call::DebugWrite { len, bytes } => self.debug_write(m, caller, &bytes[..len as usize]),
            Call::PartitionCreate {
                authority,
                memory,
                first_page,
                pages,
                name,
                ceiling,
            } => self.partition_create(
                m,
                caller,
                (authority, memory),
                first_page,
                pages,
                name,
                ceiling,
            ),
            Call::PartitionDestroy { partition } => self.partition_destroy(m, caller, partition),
            Call::PartitionStatus { partition } => {
                let cap = self.cap(caller, partition, ObjectKind::Partition, Rights::INSPECT)?;
                let p = self
                    .objects
                    .partition(cap.object)
                    .ok_or(Status::StaleSlot)?;
                match p.state {
                    RunState::Running | RunState::Dying => done([run_state::RUNNING, 0, 0]),
                    RunState::Stopped(reason, detail) => {
                        done([run_state::STOPPED, reason as u64, detail])
                    }
                }
            }
            Call::MemoryMap {
                partition,
                memory,
                first_page,
                gpa,
                pages,
                access,
            } => self.memory_map(m, caller, partition, memory, first_page, gpa, pages, access),
            Call::MemoryUnmap {
                partition,
                gpa,
                pages,
            } => self.memory_unmap(m, caller, partition, gpa, pages),
            Call::VcpuCreate {
                partition,
                rip,
                rsp,
                cr3,
                arg,
                flags,
            } => self.vcpu_create(m, caller, partition, rip, rsp, cr3, arg, flags),
            Call::VcpuGetState {
                vcpu: target,
                buffer,
            } => {
                let cap = self.cap(caller, target, ObjectKind::Vcpu, Rights::INSPECT)?;
                let dst = self.buffer(m, caller, buffer, true)?;
                let v = self.objects.vcpu(cap.object).ok_or(Status::StaleSlot)?;
                if matches!(v.state, State::Running(_)) {
                    return Err(Status::InvalidState);
                }
                let s = state::save(m.vmcb(v.vmcb), &v.regs, v.pending);
                m.write_bytes(dst, &s.to_page());
                done([0; 3])
            }
            Call::VcpuSetState {
                vcpu: target,
                buffer,
            } => {
                let cap = self.cap(caller, target, ObjectKind::Vcpu, Rights::CONTROL)?;
                let src = self.buffer(m, caller, buffer, false)?;
                let v = self.objects.vcpu(cap.object).ok_or(Status::StaleSlot)?;
                if !matches!(v.state, State::Created | State::Paused) {
                    return Err(Status::InvalidState);
                }
                let mut page = [0u8; 4096];
                m.read_bytes(src, &mut page);
                let s = VcpuState::from_page(&page);
                state::validate(&s).map_err(|_| Status::InvalidArgument)?;
                let vmcb_pa = v.vmcb;
                let v = self.objects.vcpu_mut(cap.object).ok_or(Status::StaleSlot)?;
                v.pending = state::load(m.vmcb(vmcb_pa), &mut v.regs, &s);
                v.flush_tlb = true;
                done([0; 3])
            }
            Call::VcpuStart { vcpu: target } => {
                self.vcpu_transition(m, caller, target, State::Created)
            }
            Call::VcpuResume { vcpu: target } => {
                self.vcpu_transition(m, caller, target, State::Paused)
            }
            Call::VcpuPause { vcpu: target } => self.vcpu_pause(m, caller, vcpu, target),
            Call::PortCreate => {
                self.free_slots(caller, 1)?;
                // Paid from the caller's quota: OutOfMemory when it is spent.
                let id = self.insert_paid(caller, Object::Port(Port::new(caller)))?;
                let cap = self.new_cap(
                    id,
                    ObjectKind::Port,
                    Rights::SIGNAL | Rights::BIND | Rights::GRANT,
                    None,
                );
                let slot = self.insert_cap(caller, cap)?;
                done([slot.raw(), 0, 0])
            }
            Call::PortSignal { port } => {
                let cap = self.cap(caller, port, ObjectKind::Port, Rights::SIGNAL)?;
                let delivery = self
                    .objects
                    .port_mut(cap.object)
                    .ok_or(Status::StaleSlot)?
                    .signal();
                self.deliver(m, delivery);
                done([0; 3])
            }
            Call::PortBind {
                port,
                vcpu: target,
                vector,
            } => {
                let port_cap = self.cap(caller, port, ObjectKind::Port, Rights::BIND)?;
                let vcpu_cap = self.cap(caller, target, ObjectKind::Vcpu, Rights::CONTROL)?;
                let delivery = self
                    .objects
                    .port_mut(port_cap.object)
                    .ok_or(Status::StaleSlot)?
                    .bind(vcpu_cap.object, vector);
                self.deliver(m, delivery);
                done([0; 3])
            }
            Call::InterruptBind {
                interrupt,
                vcpu: target,
                vector,
            } => {
                let int_cap = self.cap(caller, interrupt, ObjectKind::Interrupt, Rights::BIND)?;
                let vcpu_cap = self.cap(caller, target, ObjectKind::Vcpu, Rights::CONTROL)?;
                self.interrupt_bind(m, int_cap.object, vcpu_cap.object, vector)
            }
            Call::InterruptShare { interrupt } => self.interrupt_share(caller, interrupt),
            Call::InterruptMessage { partition } => self.interrupt_message(m, caller, partition),
            Call::Acknowledge { slot } => {
                let cap = self.cap_kinds(
                    caller,
                    slot,
                    &[ObjectKind::Port, ObjectKind::Interrupt],
                    Rights::BIND,
                )?;
                match cap.kind {
                    ObjectKind::Port => {
                        let delivery = self
                            .objects
                            .port_mut(cap.object)
                            .ok_or(Status::StaleSlot)?
                            .acknowledge();
                        self.deliver(m, delivery);
                    }
                    ObjectKind::Interrupt => return self.interrupt_acknowledge(m, cap.object),
                    _ => return Err(Status::WrongType),
                }
                done([0; 3])
            }
            Call::CapDelegate {
                slot,
                target,
                rights,
            } => self.cap_delegate(m, caller, slot, target, rights, None),
            Call::CapClone { source, target } => self.cap_clone(m, caller, source, target),
            Call::CapDelegateAt {
                slot,
                target,
                rights,
                at,
            } => self.cap_delegate(m, caller, slot, target, rights, Some(at)),
            Call::CapInspect { partition, index } => self.cap_inspect(caller, partition, index),
            Call::TimerCreate { port } => self.timer_create(caller, port),
            Call::TimerSet {
                timer,
                deadline,
                period,
                flags,
            } => self.timer_set(m, caller, timer, (deadline, period, flags)),
            Call::TimerCancel { timer } => self.timer_cancel(caller, timer),
            call @ (Call::PowerOff { .. } | Call::Reset { .. }) => self.power(m, caller, call),
            Call::CapRevoke { slot } => {
                let cap = self.cap_kinds(caller, slot, ANY_KIND, Rights::NONE)?;
                let removed = self.revoke_derived(m, cap.id);
                done([removed as u64, 0, 0])
            }
            Call::CapDelete { slot } => {
                let cap = self.cap_kinds(caller, slot, ANY_KIND, Rights::NONE)?;
                let removed = self.revoke_derived(m, cap.id);
                if let Some(p) = self.objects.partition_mut(caller) {
                    p.cspace.remove_id(cap.id);
                }
                if cap.kind == ObjectKind::IoPorts {
                    self.refresh_io_permissions(m, caller);
                }
                // The last capability on a port or timer frees it; on a
                // partition, the last one held outside it destroys it.
                self.release_unreferenced(m, &[cap.object]);
                done([removed as u64 + 1, 0, 0])
            }
            Call::Yield => Ok(Outcome::Yield),
            Call::DirtyLog { partition, enable } => {
                let cap = self.cap(caller, partition, ObjectKind::Partition, Rights::INSPECT)?;
                if Some(cap.object) == self.root {
                    return Err(Status::InvalidArgument);
                }
                // Without dirty flags in the SLAT (EPT without A/D) a fetch
                // would report nothing: refuse rather than lie.
                if enable && !m.tracks_dirty_pages() {
                    return Err(Status::InvalidState);
                }
                let pages = self.mapped_pages(cap.object);
                let p = self
                    .objects
                    .partition_mut(cap.object)
                    .ok_or(Status::StaleSlot)?;
                p.dirty_logging = enable;
                let root = p.slat_root;
                if enable {
                    for gpa in pages {
                        m.slat_take_dirty(root, gpa);
                    }
                }
                self.flush_partition_tlb(m, cap.object);
                done([0; 3])
            }
            Call::DirtyFetch {
                partition,
                first_gpa,
                pages,
                buffer,
            } => {
                let cap = self.cap(caller, partition, ObjectKind::Partition, Rights::INSPECT)?;
                let dst = self.buffer(m, caller, buffer, true)?;
                let p = self
                    .objects
                    .partition(cap.object)
                    .ok_or(Status::StaleSlot)?;
                if !p.dirty_logging {
                    return Err(Status::InvalidState);
                }
                let root = p.slat_root;
                let mut bitmap = [0u8; 4096];
                let mut count = 0u64;
                for i in 0..pages {
                    if m.slat_take_dirty(root, first_gpa + i * 4096) {
                        bitmap[(i / 8) as usize] |= 1 << (i % 8);
                        count += 1;
                    }
                }
                m.write_bytes(dst, &bitmap);
                self.flush_partition_tlb(m, cap.object);
                done([count, 0, 0])
            }
            Call::MemoryRead {
                partition,
                gpa,
                buffer,
            } => {
                let cap = self.cap(caller, partition, ObjectKind::Partition, Rights::INSPECT)?;
                let dst = self.buffer(m, caller, buffer, true)?;
                let p = self
                    .objects
                    .partition(cap.object)
                    .ok_or(Status::StaleSlot)?;
                let (src, _) = m
                    .slat_translate(p.slat_root, gpa)
                    .ok_or(Status::NotMapped)?;
                m.copy_page(dst, src & !0xfff);
                done([0; 3])
            }
            Call::MemoryWrite {
                partition,
                gpa,
                buffer,
            } => {
                let cap = self.cap(caller, partition, ObjectKind::Partition, Rights::CONTROL)?;
                let src = self.buffer(m, caller, buffer, false)?;
                let p = self
                    .objects
                    .partition(cap.object)
                    .ok_or(Status::StaleSlot)?;
                let (dst, _) = m
                    .slat_translate(p.slat_root, gpa)
                    .ok_or(Status::NotMapped)?;
                m.copy_page(dst & !0xfff, src);
                done([0; 3])
            }
        }
    }

    pub(super) fn deliver(&mut self, m: &mut impl Machine, delivery: Delivery) {
        if let Delivery::Raise { vcpu, vector } = delivery {
            self.raise(m, vcpu, vector);
        }
    }

    /// Guest-physical pages mapped into a partition through its memory objects.
    fn mapped_pages(&self, partition: ObjectId) -> Vec<u64> {
        let mut pages = Vec::new();
        for id in self.objects.ids_of(ObjectKind::Memory) {
            if let Some(mem) = self.objects.memory(id) {
                for map in mem.mappings.iter().filter(|m| m.partition == partition) {
                    pages.extend((0..map.pages).map(|i| map.gpa + i * 4096));
                }
            }
        }
        pages
    }

    fn debug_write(&mut self, m: &mut impl Machine, caller: ObjectId, bytes: &[u8]) -> CallResult {
        let now = self.ticks;
        let children_may = self.child_debug_console;
        let p = self
            .objects
            .partition_mut(caller)
            .ok_or(Status::InvalidSlot)?;
        // Children print over their VMBus console unless `debug-console` is on.
        if p.creator.is_some() && !children_may {
            return Err(Status::InsufficientRights);
        }
        // Lines this call completes (a newline, or a full buffer).
        let mut len = p.console_len;
        let mut lines = 0;
        for &b in bytes {
            if b == b'\n' || len == CONSOLE_LINE {
                lines += 1;
                len = 0;
            }
            if b != b'\n' {
                len += 1;
            }
        }
        // The root owns the console (it has the serial port): no budget for it.
        let limited = p.creator.is_some();
        for _ in 0..lines {
            if limited && !p.take_console_token(now) {
                return Err(Status::RateLimited);
            }
        }
        for &b in bytes {
            if b == b'\n' || p.console_len == CONSOLE_LINE {
                let line = core::str::from_utf8(&p.console[..p.console_len]).unwrap_or("?");
                m.console(p.name.as_str(), line);
                p.console_len = 0;
            }
            if b != b'\n' {
                p.console[p.console_len] = if (0x20..0x7f).contains(&b) { b } else { b'?' };
                p.console_len += 1;
            }
        }
        done([bytes.len() as u64, 0, 0])
    }

    /// `PartitionCreate`: `caps` are the authority (CREATE) and the memory
    /// to donate (DONATE).
    #[allow(clippy::too_many_arguments)] // One per register of the call.
    fn partition_create(
        &mut self,
        m: &mut impl Machine,
        caller: ObjectId,
        caps: (SlotHandle, SlotHandle),
        first_page: u64,
        pages: u64,
        name: ipc::hypercall::Name,
        ceiling: u8,
    ) -> CallResult {
        let (authority, memory) = caps;
        self.cap(caller, authority, ObjectKind::Partition, Rights::CREATE)?;
        let mem_cap = self.cap(caller, memory, ObjectKind::Memory, Rights::DONATE)?;
        let creator = self.objects.partition(caller).ok_or(Status::InvalidSlot)?;
        // No partition runs its vCPUs above its creator's ceiling.
        if ceiling > creator.ceiling {
            return Err(Status::InvalidArgument);
        }
        let cost = super::quota_cost(ObjectKind::Partition) + super::quota_cost(ObjectKind::Memory);
        if creator.quota < cost {
            return Err(Status::OutOfMemory);
        }
        let parent = self
            .objects
            .memory(mem_cap.object)
            .ok_or(Status::StaleSlot)?;
        if !parent.contains(first_page, pages) || parent.overlaps_donation(first_page, pages) {
            return Err(Status::NotOwned);
        }
        let base = parent.base + first_page * 4096;
        // Donating from the middle of a mapped range splits its record.
        for pid in parent.splits(first_page, pages) {
            self.mapping_room(pid, 1)?;
        }
        self.free_slots(caller, 2)?;
        // Reserve every resource before changing anything.
        let asid = self.alloc_asid().ok_or(Status::OutOfMemory)?;
        let slat = match m.slat_new() {
            Ok(s) => s,
            Err(e) => {
                self.free_asid(asid);
                return Err(e);
            }
        };
        let maps = match m.permission_maps_new() {
            Ok(maps) => maps,
            Err(e) => {
                m.slat_free(slat);
                self.free_asid(asid);
                return Err(e);
            }
        };
        let undo = |k: &mut Self, m: &mut dyn FnMut(u64, (u64, u64)), e: Status| {
            m(slat, maps);
            k.free_asid(asid);
            Err(e)
        };
        let mut free_hw = |slat, maps| {
            m.slat_free(slat);
            m.permission_maps_free(maps);
        };
        let mut partition = match Partition::new(name, slat, asid, maps, Some(caller)) {
            Ok(p) => p,
            Err(e) => return undo(self, &mut free_hw, e),
        };
        partition.ceiling = ceiling;
        partition.quota = crate::object::partition::CHILD_QUOTA;
        let child = match self.insert_paid(caller, Object::Partition(partition)) {
            Ok(id) => id,
            Err(e) => return undo(self, &mut free_hw, e),
        };
        let child_mem = match self.insert_paid(
            caller,
            Object::Memory(Memory {
                base,
                pages,
                owner: child,
                donor: Some(mem_cap.object),
                donated: Vec::new(),
                mappings: Vec::new(),
                restore: Vec::new(),
            }),
        ) {
            Ok(id) => id,
            Err(e) => {
                self.remove_paid(child);
                return undo(self, &mut free_hw, e);
            }
        };
        // Perform: take the pages out of every mapping of the donor.
        let parent = self
            .objects
            .memory_mut(mem_cap.object)
            .ok_or(Status::StaleSlot)?;
        let removed = parent.unrecord(first_page, pages, None);
        parent.donated.push((first_page, pages, child_mem));
        let mut touched = Vec::new();
        for map in &removed {
            if let Some(p) = self.objects.partition(map.partition) {
                let _ = m.slat_unmap(p.slat_root, map.gpa, map.pages);
                touched.push(map.partition);
            }
        }
        for pid in touched {
            self.flush_partition_tlb(m, pid);
        }
        if let Some(mem) = self.objects.memory_mut(child_mem) {
            mem.restore = removed;
        }
        if let Some(p) = self.objects.partition_mut(child) {
            p.memory.push(child_mem);
        }
        let self_cap = self.new_cap(
            child,
            ObjectKind::Partition,
            Rights::CONTROL | Rights::INSPECT,
            None,
        );
        let child_self = self.insert_cap(child, self_cap)?;
        let p_cap = self.new_cap(
            child,
            ObjectKind::Partition,
            Rights::CONTROL | Rights::INSPECT | Rights::GRANT,
            None,
        );
        let p_slot = self.insert_cap(caller, p_cap)?;
        let m_rights = Rights::READ | Rights::WRITE | Rights::EXECUTE | Rights::MAP | Rights::GRANT;
        let m_cap = self.new_cap(child_mem, ObjectKind::Memory, m_rights, None);
        let m_slot = self.insert_cap(caller, m_cap)?;
        self.refresh_io_permissions(m, child);
        done([p_slot.raw(), m_slot.raw(), child_self.raw()])
    }

    fn partition_destroy(
        &mut self,
        m: &mut impl Machine,
        caller: ObjectId,
        partition: SlotHandle,
    ) -> CallResult {
        let cap = self.cap(caller, partition, ObjectKind::Partition, Rights::CONTROL)?;
        let target = cap.object;
        if target == caller || Some(target) == self.root {
            return Err(Status::InvalidArgument);
        }
        let p = self.objects.partition(target).ok_or(Status::StaleSlot)?;
        if p.state == RunState::Dying {
            return Err(Status::InvalidState);
        }
        let created_alive = self
            .objects
            .ids_of(ObjectKind::Partition)
            .into_iter()
            .any(|id| {
                self.objects
                    .partition(id)
                    .is_some_and(|q| q.creator == Some(target))
            });
        if created_alive {
            return Err(Status::InvalidState);
        }
        self.stop_partition(m, target, ipc::hypercall::StopReason::Halted, 0);
        if let Some(p) = self.objects.partition_mut(target) {
            p.state = RunState::Dying;
        }
        Ok(Outcome::WaitDestroy(target))
    }

    #[allow(clippy::too_many_arguments)] // One per register of the call.
    fn memory_map(
        &mut self,
        m: &mut impl Machine,
        caller: ObjectId,
        partition: SlotHandle,
        memory: SlotHandle,
        first_page: u64,
        gpa: u64,
        pages: u64,
        access: Rights,
    ) -> CallResult {
        let p_cap = self.cap(caller, partition, ObjectKind::Partition, Rights::CONTROL)?;
        let mem_cap = self.cap(
            caller,
            memory,
            ObjectKind::Memory,
            Rights::MAP.union(access),
        )?;
        let p = self
            .objects
            .partition(p_cap.object)
            .ok_or(Status::StaleSlot)?;
        if p.state == RunState::Dying {
            return Err(Status::InvalidState);
        }
        let mem = self
            .objects
            .memory(mem_cap.object)
            .ok_or(Status::StaleSlot)?;
        if !mem.contains(first_page, pages) || mem.overlaps_donation(first_page, pages) {
            return Err(Status::NotOwned);
        }
        let slat = p.slat_root;
        if (0..pages).any(|i| m.slat_translate(slat, gpa + i * 4096).is_some()) {
            return Err(Status::AlreadyMapped);
        }
        let hpa = mem.base + first_page * 4096;
        self.mapping_room(p_cap.object, 1)?;
        self.objects
            .memory_mut(mem_cap.object)
            .ok_or(Status::StaleSlot)?
            .mappings
            .try_reserve(1)
            .map_err(|_| Status::OutOfMemory)?;
        m.slat_map(slat, gpa, hpa, pages, access_of(access))?;
        if let Some(mem) = self.objects.memory_mut(mem_cap.object) {
            mem.mappings.push(Mapping {
                partition: p_cap.object,
                gpa,
                first_page,
                pages,
            });
        }
        done([0; 3])
    }

    fn memory_unmap(
        &mut self,
        m: &mut impl Machine,
        caller: ObjectId,
        partition: SlotHandle,
        gpa: u64,
        pages: u64,
    ) -> CallResult {
        let p_cap = self.cap(caller, partition, ObjectKind::Partition, Rights::CONTROL)?;
        let target = p_cap.object;
        // Every page must be covered by a mapping record of the target at
        // these guest-physical addresses (records are per mapping: an
        // alias of the same frames elsewhere is another record).
        let end = gpa + pages * 4096;
        let mut covered = 0;
        let mut splits = 0;
        let mut objects = Vec::new();
        for id in self.objects.ids_of(ObjectKind::Memory) {
            let Some(mem) = self.objects.memory(id) else {
                continue;
            };
            let mut touches = false;
            for map in mem.mappings.iter().filter(|x| x.partition == target) {
                let start = gpa.max(map.gpa);
                let stop = end.min(map.gpa + map.pages * 4096);
                if start < stop {
                    covered += (stop - start) / 4096;
                    touches = true;
                }
            }
            if touches {
                splits += mem.splits_gpa(target, gpa, pages);
                objects.push(id);
            }
        }
        if covered != pages {
            return Err(Status::NotMapped);
        }
        self.mapping_room(target, splits)?;
        let slat = self
            .objects
            .partition(target)
            .ok_or(Status::StaleSlot)?
            .slat_root;
        for id in objects {
            if let Some(mem) = self.objects.memory_mut(id) {
                for map in mem.unrecord_gpa(target, gpa, pages) {
                    let _ = m.slat_unmap(slat, map.gpa, map.pages);
                }
            }
        }
        self.flush_partition_tlb(m, target);
        done([0; 3])
    }

    #[allow(clippy::too_many_arguments)] // One per register of the call.
    fn vcpu_create(
        &mut self,
        m: &mut impl Machine,
        caller: ObjectId,
        partition: SlotHandle,
        rip: u64,
        rsp: u64,
        cr3: u64,
        arg: u64,
        flags: u64,
    ) -> CallResult {
        let p_cap = self.cap(caller, partition, ObjectKind::Partition, Rights::CONTROL)?;
        let p = self
            .objects
            .partition(p_cap.object)
            .ok_or(Status::StaleSlot)?;
        if p.state != RunState::Running {
            return Err(Status::InvalidState);
        }
        if p.vcpus.len() >= MAX_VCPUS {
            return Err(Status::InvalidState);
        }
        let priority = (flags & 0xff) as u8;
        // Nobody, the partition itself included, raises a vCPU above the
        // ceiling its creator set.
        if priority > p.ceiling {
            return Err(Status::InvalidArgument);
        }
        if p.quota < super::quota_cost(ObjectKind::Vcpu) {
            return Err(Status::OutOfMemory);
        }
        let cpu = match (flags >> 8) & 0xff {
            0 => self.least_loaded_cpu(),
            n if (n as u32) <= self.run_queues.cpus() => n as u32 - 1,
            _ => return Err(Status::InvalidArgument),
        };
        self.free_slots(caller, 1)?;
        let (slat, asid, maps, index) =
            (p.slat_root, p.asid, p.permission_maps, p.vcpus.len() as u32);
        let vmcb_pa = m.vmcb_new()?;
        m.vmcb(vmcb_pa).init_long_mode(&LongModeStart {
            cr3,
            rip,
            rsp,
            asid,
            nested_cr3: slat,
            iopm: maps.0,
            msrpm: maps.1,
        });
        let mut vcpu = Vcpu::new(p_cap.object, index, priority, cpu, vmcb_pa);
        vcpu.regs.rdi = arg;
        vcpu.regs.rsi = index as u64;
        // A vCPU is paid for by its own partition.
        let id = match self.insert_paid(p_cap.object, Object::Vcpu(vcpu)) {
            Ok(id) => id,
            Err(e) => {
                m.vmcb_free(vmcb_pa);
                return Err(e);
            }
        };
        if let Some(p) = self.objects.partition_mut(p_cap.object) {
            // Room: checked above (fewer than MAX_VCPUS, the capacity), and
            // nothing added a vCPU since.
            let _ = p.vcpus.push(id);
        }
        let cap = self.new_cap(
            id,
            ObjectKind::Vcpu,
            Rights::CONTROL | Rights::INSPECT | Rights::GRANT,
            None,
        );
        let slot = self.insert_cap(caller, cap)?;
        done([slot.raw(), index as u64, cpu as u64])
    }

    /// Start (from Created) or resume (from Paused).
    fn vcpu_transition(
        &mut self,
        m: &mut impl Machine,
        caller: ObjectId,
        target: SlotHandle,
        from: State,
    ) -> CallResult {
        let cap = self.cap(caller, target, ObjectKind::Vcpu, Rights::CONTROL)?;
        let partition = self.partition_of(cap.object).ok_or(Status::StaleSlot)?;
        if self
            .objects
            .partition(partition)
            .is_none_or(|p| p.state != RunState::Running)
        {
            return Err(Status::InvalidState);
        }
        let v = self.objects.vcpu_mut(cap.object).ok_or(Status::StaleSlot)?;
        if v.state != from {
            return Err(Status::InvalidState);
        }
        v.state = State::Ready;
        let (cpu, prio) = (v.cpu, v.priority);
        self.run_queues.enqueue(cpu, prio, cap.object);
        m.kick(cpu);
        done([0; 3])
    }

    fn vcpu_pause(
        &mut self,
        m: &mut impl Machine,
        caller: ObjectId,
        current: ObjectId,
        target: SlotHandle,
    ) -> CallResult {
        let cap = self.cap(caller, target, ObjectKind::Vcpu, Rights::CONTROL)?;
        if cap.object == current {
            return Err(Status::InvalidArgument);
        }
        let v = self.objects.vcpu_mut(cap.object).ok_or(Status::StaleSlot)?;
        match v.state {
            State::Ready => {
                v.state = State::Paused;
                self.run_queues.remove(cap.object);
                done([0; 3])
            }
            State::Blocked => {
                v.state = State::Paused;
                done([0; 3])
            }
            State::Running(cpu) => {
                v.pause_requested = true;
                m.kick(cpu);
                Ok(Outcome::WaitVcpu(cap.object))
            }
            State::Created | State::Paused | State::Stopped => Err(Status::InvalidState),
        }
    }

    /// `CapDelegate` (into the lowest free slot) and `CapDelegateAt`
    /// (`at`: into that empty slot of a partition other than the caller,
    /// which takes its generation).
    #[allow(clippy::too_many_arguments)] // One per register of the call.
    pub(super) fn cap_delegate(
        &mut self,
        m: &mut impl Machine,
        caller: ObjectId,
        slot: SlotHandle,
        target: SlotHandle,
        rights: Rights,
        at: Option<SlotHandle>,
    ) -> CallResult {
        let source = self.cap_kinds(caller, slot, ANY_KIND, Rights::GRANT.union(rights))?;
        let t_cap = self.cap(caller, target, ObjectKind::Partition, Rights::CONTROL)?;
        let t = self
            .objects
            .partition(t_cap.object)
            .ok_or(Status::StaleSlot)?;
        if t.state == RunState::Dying {
            return Err(Status::InvalidState);
        }
        match at {
            None => self.free_slots(t_cap.object, 1)?,
            Some(_) if t_cap.object == caller => return Err(Status::InvalidArgument),
            // Empty, and a generation no older than the slot's: a stale
            // handle never names the new capability.
            Some(at) => t.cspace.can_place(at.index as usize, at.generation, None)?,
        }
        let copy = self.new_cap(source.object, source.kind, rights, Some(source.id));
        let handle = match at {
            None => self.insert_cap(t_cap.object, copy)?,
            Some(at) => {
                self.objects
                    .partition_mut(t_cap.object)
                    .ok_or(Status::StaleSlot)?
                    .cspace
                    .place(at.index as usize, at.generation, Some(copy))?;
                at
            }
        };
        if source.kind == ObjectKind::IoPorts {
            self.refresh_io_permissions(m, t_cap.object);
        }
        done([handle.raw(), 0, 0])
    }
}
