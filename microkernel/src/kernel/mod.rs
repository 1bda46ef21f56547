//! The kernel core: every object, every capability space, the run queues,
//! and the operations on them — hypercalls, exits, virtual interrupts,
//! partition life cycle. Hardware effects go through [`Machine`]; nothing
//! here is `unsafe`, and all of it runs in host tests.
//!
//! # Invariants
//! - Every hypercall is decoded, then validated (slot lookups, types,
//!   rights, ranges, resources), and only then performed; a call that fails
//!   changes nothing.
//! - A partition's SLAT maps only pages of memory objects it may use: its
//!   own RAM (root), memory donated to it, or memory mapped through
//!   `MemoryMap` by a holder of the right capabilities.

mod calls;
mod chipset;
mod exits;
mod interrupts;
mod lifecycle;
mod migrate;
mod power;
#[cfg(test)]
mod tests;
mod timers;

use alloc::vec::Vec;
use ipc::hypercall::{Name, Rights, SlotHandle, Status, StopReason};

use crate::cap::{CapId, Capability};
use crate::machine::Machine;
use crate::object::partition::RunState;
use crate::object::vcpu::State;
use crate::object::{IoPorts, Memory, Object, ObjectId, ObjectKind, Objects, Partition};
use crate::sched::RunQueues;
use crate::svm::permissions;

pub use exits::Next;

/// Most vCPUs per partition.
pub const MAX_VCPUS: usize = 4;
/// Most partitions at once: the root, and children that each cost their
/// creator [`quota_cost`]`(Partition)` entries of the object table, all of
/// whose entries the root's quota starts with at most.
pub const MAX_PARTITIONS: usize =
    1 + MAX_OBJECTS / (1 + crate::object::partition::CHILD_QUOTA as usize);
/// Most I/O APIC route changes waiting to be applied: one per interrupt
/// line (a later change of a line replaces the earlier), and every line is
/// one of the root's boot objects.
pub const MAX_ROUTES: usize = BOOT_OBJECTS;

/// Entries of the object table, reserved at start: every kernel object
/// there will ever be at once. The root's quota is what its boot objects
/// leave; every other partition's quota comes out of its creator's.
pub const MAX_OBJECTS: usize = 1024;
/// Entries kept for the root's boot objects (RAM ranges, interrupt lines,
/// port ranges, itself and its first vCPU).
pub const BOOT_OBJECTS: usize = 128;
/// The smallest kernel heap: the object table, every partition's
/// capability space and mapping records at their limits fit in half of it
/// (a host test checks the sum).
pub const MIN_HEAP_BYTES: usize = 4 << 20;
/// Timer ticks a ready root vCPU waits at most before it runs, whatever
/// the priorities of the vCPUs beside it: the root's progress never
/// depends on a child's cooperation.
pub const ROOT_MAX_WAIT_TICKS: u64 = 10;

/// Quota units an object of `kind` costs the partition that pays for it:
/// a partition also carries the quota its creator hands it.
pub fn quota_cost(kind: ObjectKind) -> u32 {
    match kind {
        ObjectKind::Partition => 1 + crate::object::partition::CHILD_QUOTA,
        _ => 1,
    }
}

/// What a hypercall asks of the processor loop beyond its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done: results for RDI, RSI, RDX.
    Done([u64; 3]),
    /// Give up the processor.
    Yield,
    /// Wait until the vCPU is off every processor, then finish.
    WaitVcpu(ObjectId),
    /// Wait until every vCPU of the partition is off the processors, then destroy it.
    WaitDestroy(ObjectId),
}

/// One of the root partition's initial capabilities, as the boot page lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitialCap {
    /// Its slot.
    pub slot: SlotHandle,
    /// Its object type.
    pub kind: ObjectKind,
    /// First word describing it (memory: base; interrupt: GSI; ports: first port).
    pub a: u64,
    /// Second word (memory: pages; interrupt: 1 when level-triggered; ports: count).
    pub b: u64,
}

/// The kernel state.
#[derive(Debug)]
pub struct Kernel {
    /// Every object.
    pub objects: Objects,
    /// Ready vCPUs per processor.
    pub run_queues: RunQueues,
    next_cap: u64,
    /// The root partition.
    pub root: Option<ObjectId>,
    /// Timer ticks since boot (for rate limits).
    pub ticks: u64,
    /// The kernel's monotonic clock in ns (`ipc::hypercall::timer`):
    /// moved forward by [`Kernel::advance_clock`], which fires timers.
    pub now_ns: u64,
    /// The armed timers, soonest first (`object/timer.rs`).
    pub timers: crate::object::timer::TimerQueue,
    asids_in_use: Vec<bool>,
    /// I/O APIC lines to unmask (true) or mask, for the hardware layer to
    /// apply: at most one entry per line (see [`Kernel::route`]).
    pub pending_routes: heapless::Vec<(u32, bool), MAX_ROUTES>,
    /// Children may use `DebugWrite` (kernel command line `debug-console`).
    pub child_debug_console: bool,
    /// I/O APIC lines that are level-triggered (bit = GSI), as the boot
    /// code programmed them from the MADT: only these can be shared
    /// (`InterruptShare`).
    pub level_lines: u64,
    /// Partitions to tear down once their vCPUs are off the processors:
    /// orphans (no capability outside themselves names them), and destroys
    /// whose caller stopped waiting (`processor::finish_wait`).
    pub reaping: heapless::Vec<ObjectId, MAX_PARTITIONS>,
    /// The root's PCI configuration mechanism, emulated (`kernel/chipset.rs`).
    pub pci_config: crate::chipset::ConfigMechanism,
}

impl Kernel {
    /// A kernel for `cpus` processors and address-space ids `1..asids`.
    pub fn new(cpus: u32, asids: u32) -> Self {
        Kernel {
            // Without room for the table the root cannot be created and
            // the boot stops with OutOfMemory: no panic here.
            objects: Objects::with_capacity(MAX_OBJECTS).unwrap_or_default(),
            run_queues: RunQueues::new(cpus.max(1)),
            next_cap: 1,
            root: None,
            ticks: 0,
            now_ns: 0,
            // Without room for it every TimerSet is OutOfMemory: no panic.
            timers: crate::object::timer::TimerQueue::with_capacity(MAX_OBJECTS)
                .unwrap_or_default(),
            asids_in_use: alloc::vec![false; asids.max(2) as usize],
            pending_routes: heapless::Vec::new(),
            child_debug_console: false,
            level_lines: 0,
            reaping: heapless::Vec::new(),
            pci_config: crate::chipset::ConfigMechanism::default(),
        }
    }

    /// Inserts `object`, paid for from `payer`'s quota: `OutOfMemory` when
    /// the quota or the table is exhausted (nothing changes then).
    pub(crate) fn insert_paid(
        &mut self,
        payer: ObjectId,
        object: Object,
    ) -> Result<ObjectId, Status> {
        let cost = quota_cost(object.kind());
        let p = self
            .objects
            .partition_mut(payer)
            .ok_or(Status::InvalidSlot)?;
        p.quota = p.quota.checked_sub(cost).ok_or(Status::OutOfMemory)?;
        match self.objects.insert_paid(object, Some(payer)) {
            Ok(id) => Ok(id),
            Err(e) => {
                if let Some(p) = self.objects.partition_mut(payer) {
                    p.quota += cost;
                }
                Err(e)
            }
        }
    }

    /// Removes an object and gives its cost back to the partition that paid.
    pub(crate) fn remove_paid(&mut self, id: ObjectId) -> Option<Object> {
        let (object, payer) = self.objects.remove_paid(id)?;
        if let Some(p) = payer.and_then(|p| self.objects.partition_mut(p)) {
            p.quota += quota_cost(object.kind());
        }
        Some(object)
    }

    /// Mapping records of `partition`'s guest-physical space.
    pub fn mapping_count(&self, partition: ObjectId) -> usize {
        self.objects
            .ids_of(ObjectKind::Memory)
            .into_iter()
            .filter_map(|id| self.objects.memory(id))
            .map(|mem| {
                mem.mappings
                    .iter()
                    .filter(|x| x.partition == partition)
                    .count()
            })
            .sum()
    }

    /// Refuses (`OutOfMemory`) when `partition` would hold more than its
    /// limit of mapping records after `more` new ones.
    pub(crate) fn mapping_room(&self, partition: ObjectId, more: usize) -> Result<(), Status> {
        let limit = self
            .objects
            .partition(partition)
            .ok_or(Status::StaleSlot)?
            .mapping_limit;
        if self.mapping_count(partition) + more > limit {
            return Err(Status::OutOfMemory);
        }
        Ok(())
    }

    pub(super) fn new_cap(
        &mut self,
        object: ObjectId,
        kind: ObjectKind,
        rights: Rights,
        parent: Option<CapId>,
    ) -> Capability {
        let id = CapId(self.next_cap);
        self.next_cap += 1;
        Capability {
            object,
            kind,
            rights,
            id,
            parent,
        }
    }

    fn alloc_asid(&mut self) -> Option<u32> {
        let (i, slot) = self
            .asids_in_use
            .iter_mut()
            .enumerate()
            .skip(1)
            .find(|(_, u)| !**u)?;
        *slot = true;
        Some(i as u32)
    }

    fn free_asid(&mut self, asid: u32) {
        if let Some(slot) = self.asids_in_use.get_mut(asid as usize) {
            *slot = false;
        }
    }

    /// The partition a vCPU belongs to.
    pub fn partition_of(&self, vcpu: ObjectId) -> Option<ObjectId> {
        self.objects.vcpu(vcpu).map(|v| v.partition)
    }

    /// Creates the root partition around a SLAT the boot code built (its RAM
    /// mapped at guest-physical = host-physical) and gives it its initial
    /// capabilities: itself (CREATE, CONTROL, INSPECT), one memory object per
    /// RAM range, one interrupt per device GSI, one I/O port object per
    /// range of ports not kept by the kernel. Its I/O permission map passes
    /// exactly those ports.
    pub fn create_root(
        &mut self,
        m: &mut impl Machine,
        slat_root: u64,
        ram: &[(u64, u64)],
        gsis: &[u32],
        ports: &[(u16, u32)],
    ) -> Result<(ObjectId, Vec<InitialCap>), Status> {
        if ram.len() + gsis.len() + ports.len() + 2 > BOOT_OBJECTS {
            return Err(Status::OutOfMemory);
        }
        let asid = self.alloc_asid().ok_or(Status::OutOfMemory)?;
        let maps = m.permission_maps_new()?;
        let mut partition = Partition::new(Name::new("root"), slat_root, asid, maps, None)?;
        partition.ceiling = ipc::hypercall::MAX_PRIORITY;
        partition.quota = (MAX_OBJECTS - BOOT_OBJECTS) as u32;
        partition.mapping_limit = crate::object::partition::ROOT_MAPPINGS;
        let root = self.objects.insert(Object::Partition(partition))?;
        self.root = Some(root);
        let mut caps = Vec::new();
        let rights = Rights::CREATE | Rights::CONTROL | Rights::INSPECT | Rights::GRANT;
        let cap = self.new_cap(root, ObjectKind::Partition, rights, None);
        let slot = self.insert_cap(root, cap)?;
        caps.push(InitialCap {
            slot,
            kind: ObjectKind::Partition,
            a: 0,
            b: 0,
        });
        for &(base, pages) in ram {
            let memory = Memory {
                base,
                pages,
                owner: root,
                donor: None,
                donated: Vec::new(),
                mappings: alloc::vec![crate::object::memory::Mapping {
                    partition: root,
                    gpa: base,
                    first_page: 0,
                    pages
                }],
                restore: Vec::new(),
            };
            let id = self.objects.insert(Object::Memory(memory))?;
            let rights = Rights::READ
                | Rights::WRITE
                | Rights::EXECUTE
                | Rights::MAP
                | Rights::DONATE
                | Rights::GRANT;
            let cap = self.new_cap(id, ObjectKind::Memory, rights, None);
            let slot = self.insert_cap(root, cap)?;
            caps.push(InitialCap {
                slot,
                kind: ObjectKind::Memory,
                a: base,
                b: pages,
            });
        }
        for &gsi in gsis {
            let id = self
                .objects
                .insert(Object::Interrupt(crate::object::Interrupt::line(gsi)))?;
            let cap = self.new_cap(
                id,
                ObjectKind::Interrupt,
                Rights::BIND | Rights::GRANT,
                None,
            );
            let slot = self.insert_cap(root, cap)?;
            caps.push(InitialCap {
                slot,
                kind: ObjectKind::Interrupt,
                a: gsi as u64,
                b: u64::from(gsi < 64 && self.level_lines & (1 << gsi) != 0),
            });
        }
        for &(first, count) in ports {
            let id = self
                .objects
                .insert(Object::IoPorts(IoPorts { first, count }))?;
            let cap = self.new_cap(id, ObjectKind::IoPorts, Rights::USE | Rights::GRANT, None);
            let slot = self.insert_cap(root, cap)?;
            caps.push(InitialCap {
                slot,
                kind: ObjectKind::IoPorts,
                a: first as u64,
                b: count as u64,
            });
        }
        self.refresh_io_permissions(m, root);
        Ok((root, caps))
    }

    pub(super) fn insert_cap(
        &mut self,
        partition: ObjectId,
        cap: Capability,
    ) -> Result<SlotHandle, Status> {
        self.objects
            .partition_mut(partition)
            .ok_or(Status::InvalidSlot)?
            .cspace
            .insert(cap)
    }

    /// Recomputes a partition's I/O permission map from the I/O port
    /// capabilities with USE it holds.
    pub fn refresh_io_permissions(&mut self, m: &mut impl Machine, partition: ObjectId) {
        let Some(p) = self.objects.partition(partition) else {
            return;
        };
        let ranges: Vec<IoPorts> = p
            .cspace
            .caps()
            .filter(|c| c.kind == ObjectKind::IoPorts && c.rights.contains(Rights::USE))
            .filter_map(|c| self.objects.ioports(c.object).copied())
            .collect();
        let iopm = m.iopm(p.permission_maps.0);
        iopm.fill(0xff);
        for r in ranges {
            permissions::set_ports(iopm, r.first, r.count, false);
        }
    }

    /// Every capability derived (transitively) from `id`, as (partition, cap id).
    fn descendants(&self, id: CapId) -> Vec<(ObjectId, CapId)> {
        let all: Vec<(ObjectId, Capability)> = self
            .objects
            .ids_of(ObjectKind::Partition)
            .into_iter()
            .filter_map(|p| Some((p, self.objects.partition(p)?)))
            .flat_map(|(pid, p)| p.cspace.caps().map(move |c| (pid, c)))
            .collect();
        let mut found: Vec<(ObjectId, CapId)> = Vec::new();
        let mut frontier = alloc::vec![id];
        while let Some(parent) = frontier.pop() {
            for (pid, c) in &all {
                if c.parent == Some(parent) && !found.iter().any(|(_, f)| *f == c.id) {
                    found.push((*pid, c.id));
                    frontier.push(c.id);
                }
            }
        }
        found
    }

    /// Removes every capability derived from `id`; returns how many. Objects
    /// left without a capability are released (`release_unreferenced`).
    pub fn revoke_derived(&mut self, m: &mut impl Machine, id: CapId) -> usize {
        let victims = self.descendants(id);
        let mut touched_io: Vec<ObjectId> = Vec::new();
        let mut objects: Vec<ObjectId> = Vec::new();
        for (pid, cap_id) in &victims {
            if let Some(p) = self.objects.partition_mut(*pid)
                && let Some(cap) = p.cspace.remove_id(*cap_id)
            {
                if !objects.contains(&cap.object) {
                    objects.push(cap.object);
                }
                if cap.kind == ObjectKind::IoPorts && !touched_io.contains(pid) {
                    touched_io.push(*pid);
                }
            }
        }
        for pid in touched_io {
            self.refresh_io_permissions(m, pid);
        }
        self.release_unreferenced(m, &objects);
        victims.len()
    }

    /// Whether any capability names `object`, in any space but `except`'s.
    fn named_outside(&self, object: ObjectId, except: Option<ObjectId>) -> bool {
        self.objects
            .ids_of(ObjectKind::Partition)
            .into_iter()
            .filter(|&pid| Some(pid) != except)
            .filter_map(|pid| self.objects.partition(pid))
            .any(|p| p.cspace.caps().any(|c| c.object == object))
    }

    /// Releases what lost its last capability among `objects`: a port or
    /// timer no capability names is freed (its quota goes back to its
    /// owner; a timer is disarmed first); a
    /// partition other than the root that no capability outside its own
    /// space names is an orphan — nobody could ever stop or destroy it — and
    /// is stopped and destroyed (`reap`), its memory going back to the donor.
    pub fn release_unreferenced(&mut self, m: &mut impl Machine, objects: &[ObjectId]) {
        for &object in objects {
            match self.objects.get(object).map(Object::kind) {
                Some(ObjectKind::Port) if !self.named_outside(object, None) => {
                    self.free_port(object);
                }
                Some(ObjectKind::Interrupt) if !self.named_outside(object, None) => {
                    self.free_interrupt(m, object);
                }
                Some(ObjectKind::Timer) if !self.named_outside(object, None) => {
                    self.free_timer(object);
                }
                Some(ObjectKind::Partition)
                    if Some(object) != self.root && !self.named_outside(object, Some(object)) =>
                {
                    let dying = self
                        .objects
                        .partition(object)
                        .is_some_and(|p| p.state == RunState::Dying);
                    if !dying && !self.reaping.contains(&object) {
                        self.stop_partition(m, object, StopReason::Halted, 0);
                        if let Some(p) = self.objects.partition_mut(object) {
                            p.state = RunState::Dying;
                        }
                        // Room: each partition at most once, and there
                        // are at most MAX_PARTITIONS (quotas).
                        let queued = self.reaping.push(object);
                        debug_assert!(queued.is_ok(), "more partitions than MAX_PARTITIONS");
                    }
                }
                _ => {}
            }
        }
        self.reap(m);
    }

    /// Tears down the orphans whose vCPUs have left the processors.
    pub fn reap(&mut self, m: &mut impl Machine) {
        while let Some(i) = self
            .reaping
            .iter()
            .position(|&p| self.objects.partition(p).is_none() || self.destroy_ready(p))
        {
            let p = self.reaping.swap_remove(i);
            self.destroy_finish(m, p);
        }
    }

    /// Records that I/O APIC line `gsi` is to be unmasked (`on`) or masked.
    /// A later change of the same line replaces an earlier one still
    /// waiting, so there is at most one entry per interrupt line.
    pub(crate) fn route(&mut self, gsi: u32, on: bool) {
        if let Some(entry) = self.pending_routes.iter_mut().find(|(g, _)| *g == gsi) {
            entry.1 = on;
        } else {
            // Room: every line is a boot object (at most BOOT_OBJECTS).
            let queued = self.pending_routes.push((gsi, on));
            debug_assert!(queued.is_ok(), "more interrupt lines than MAX_ROUTES");
        }
    }

    /// Frees a port: unbinds it and removes it, refunding its owner.
    fn free_port(&mut self, port: ObjectId) {
        self.remove_paid(port);
    }

    /// Raises `vector` on `vcpu`, waking it if it waits for an interrupt.
    pub fn raise(&mut self, m: &mut impl Machine, vcpu: ObjectId, vector: u8) {
        let Some(v) = self.objects.vcpu_mut(vcpu) else {
            return;
        };
        v.raise(vector);
        match v.state {
            State::Blocked => {
                v.state = State::Ready;
                let (cpu, prio) = (v.cpu, v.priority);
                self.run_queues.enqueue(cpu, prio, vcpu);
                m.kick(cpu);
            }
            State::Running(cpu) => m.kick(cpu),
            _ => {}
        }
    }

    /// Stops a partition for good with a reason: its vCPUs never run again
    /// (running ones are kicked off their processors).
    pub fn stop_partition(
        &mut self,
        m: &mut impl Machine,
        partition: ObjectId,
        reason: StopReason,
        detail: u64,
    ) {
        let Some(p) = self.objects.partition_mut(partition) else {
            return;
        };
        if matches!(p.state, RunState::Stopped(..)) {
            return;
        }
        p.state = RunState::Stopped(reason, detail);
        let vcpus = p.vcpus.clone();
        for v in vcpus {
            self.run_queues.remove(v);
            if let Some(vcpu) = self.objects.vcpu_mut(v) {
                if let State::Running(cpu) = vcpu.state {
                    vcpu.pause_requested = true;
                    m.kick(cpu);
                } else {
                    vcpu.state = State::Stopped;
                }
            }
        }
    }

    /// Marks every vCPU of a partition for a TLB flush before its next
    /// entry and kicks the running ones.
    pub fn flush_partition_tlb(&mut self, m: &mut impl Machine, partition: ObjectId) {
        let Some(p) = self.objects.partition(partition) else {
            return;
        };
        for v in p.vcpus.clone() {
            if let Some(vcpu) = self.objects.vcpu_mut(v) {
                vcpu.flush_tlb = true;
                if let State::Running(cpu) = vcpu.state {
                    m.kick(cpu);
                }
            }
        }
    }

    /// Takes the next vCPU for `cpu` and marks it running there: the
    /// highest priority first, except that a root vCPU that has waited
    /// [`ROOT_MAX_WAIT_TICKS`] goes before everything.
    pub fn pick(&mut self, cpu: u32) -> Option<ObjectId> {
        if let Some(v) = self.starved_root_vcpu(cpu) {
            self.run_queues.remove(v);
            return self.start_running(v, cpu);
        }
        while let Some(v) = self.run_queues.pick(cpu) {
            if let Some(v) = self.start_running(v, cpu) {
                return Some(v);
            }
        }
        None
    }

    fn start_running(&mut self, v: ObjectId, cpu: u32) -> Option<ObjectId> {
        let now = self.ticks;
        let vcpu = self.objects.vcpu_mut(v)?;
        if vcpu.state != State::Ready {
            return None;
        }
        vcpu.state = State::Running(cpu);
        vcpu.last_ran = now;
        Some(v)
    }

    /// A ready root vCPU on `cpu` that has not run for
    /// [`ROOT_MAX_WAIT_TICKS`], if any.
    pub fn starved_root_vcpu(&self, cpu: u32) -> Option<ObjectId> {
        let root = self.objects.partition(self.root?)?;
        root.vcpus.iter().copied().find(|&id| {
            self.objects.vcpu(id).is_some_and(|v| {
                v.state == State::Ready
                    && v.cpu == cpu
                    && self.ticks.saturating_sub(v.last_ran) >= ROOT_MAX_WAIT_TICKS
            })
        })
    }

    /// Whether the vCPU running on `cpu` at `priority` must leave the
    /// processor at the end of its slice: a vCPU of at least its priority
    /// is ready there, or a root vCPU has waited too long.
    pub fn should_preempt(&self, cpu: u32, priority: u8) -> bool {
        self.run_queues.has_ready(cpu, priority) || self.starved_root_vcpu(cpu).is_some()
    }

    /// Puts a running vCPU back at the end of its queue (preemption, yield).
    /// Returns false when a stop or pause requested while it ran took it
    /// off instead (see [`Kernel::leave_processor`]).
    pub fn requeue(&mut self, vcpu: ObjectId) -> bool {
        self.leave_processor(vcpu, State::Ready) == Some(State::Ready)
    }

    /// Takes a running vCPU off its processor into `next`: `Ready` (back
    /// at the end of its queue) or `Blocked` (waiting for an interrupt).
    /// A stop or pause requested while it ran takes effect here instead
    /// (`Stopped` or `Paused`), exactly as it would have at its next entry
    /// ([`Kernel::take_off_request`]). Returns the state it is left in
    /// (`None` if it is gone or was not running).
    ///
    /// # Invariants
    /// Only a running vCPU carries a pause request: whoever asked
    /// (`VcpuPause`, a partition's stop) waits only until the vCPU is off
    /// its processor, so the request must not outlive that moment. (It
    /// did: a vCPU preempted, yielding or halting just as it was paused went
    /// back to its queue or blocked, the pause returned success, the resume
    /// that followed was refused, and the stale request paused the vCPU at
    /// its next entry, for good; issue 14, defect 3.)
    pub fn leave_processor(&mut self, vcpu: ObjectId, next: State) -> Option<State> {
        if !self.is_running(vcpu) {
            return None;
        }
        let state = self.take_off_request(vcpu).unwrap_or(next);
        let now = self.ticks;
        let v = self.objects.vcpu_mut(vcpu)?;
        v.state = state;
        v.last_ran = now;
        if state == State::Ready {
            let (cpu, prio) = (v.cpu, v.priority);
            self.run_queues.enqueue(cpu, prio, vcpu);
        }
        Some(state)
    }

    /// Consumes a stop or pause requested for `vcpu` while it ran: the
    /// state it must leave its processor in (`Stopped` when its partition
    /// no longer runs or is gone, `Paused` when a pause was asked), or
    /// `None` when nothing was asked.
    pub fn take_off_request(&mut self, vcpu: ObjectId) -> Option<State> {
        let stopped = self
            .partition_of(vcpu)
            .and_then(|p| self.objects.partition(p))
            .is_none_or(|p| p.state != RunState::Running);
        let v = self.objects.vcpu_mut(vcpu)?;
        let paused = core::mem::take(&mut v.pause_requested);
        if stopped {
            Some(State::Stopped)
        } else if paused {
            Some(State::Paused)
        } else {
            None
        }
    }

    /// The processor with the fewest live vCPUs placed on it (running,
    /// queued, blocked or paused): where a vCPU without affinity goes.
    pub fn least_loaded_cpu(&self) -> u32 {
        let mut load = alloc::vec![0usize; self.run_queues.cpus() as usize];
        for id in self.objects.ids_of(ObjectKind::Vcpu) {
            if let Some(v) = self.objects.vcpu(id)
                && v.state != State::Stopped
                && let Some(slot) = load.get_mut(v.cpu as usize)
            {
                *slot += 1;
            }
        }
        (0..load.len()).min_by_key(|&c| load[c]).unwrap_or(0) as u32
    }

    /// Whether a vCPU is on a processor now.
    pub fn is_running(&self, vcpu: ObjectId) -> bool {
        self.objects
            .vcpu(vcpu)
            .is_some_and(|v| matches!(v.state, State::Running(_)))
    }

    /// Whether any vCPU of a partition is on a processor now.
    pub fn partition_running(&self, partition: ObjectId) -> bool {
        self.objects
            .partition(partition)
            .is_some_and(|p| p.vcpus.iter().any(|v| self.is_running(*v)))
    }
}

impl Kernel {
    /// Adds the root's first vCPU (its VMCB prepared by the boot code),
    /// queues it on `cpu` at the default priority, and gives the root a
    /// capability on it (CONTROL, INSPECT).
    pub fn create_boot_vcpu(
        &mut self,
        root: ObjectId,
        vmcb: u64,
        cpu: u32,
    ) -> Result<(ObjectId, InitialCap), Status> {
        let p = self.objects.partition(root).ok_or(Status::InvalidSlot)?;
        if p.vcpus.is_full() {
            return Err(Status::InvalidState);
        }
        let index = p.vcpus.len() as u32;
        let mut vcpu = crate::object::Vcpu::new(root, index, 0, cpu, vmcb);
        vcpu.state = State::Ready;
        let id = self.objects.insert(Object::Vcpu(vcpu))?;
        if let Some(p) = self.objects.partition_mut(root) {
            // Room: checked above, and nothing added a vCPU since.
            let _ = p.vcpus.push(id);
        }
        self.run_queues.enqueue(cpu, 0, id);
        let cap = self.new_cap(
            id,
            ObjectKind::Vcpu,
            Rights::CONTROL | Rights::INSPECT,
            None,
        );
        let slot = self.insert_cap(root, cap)?;
        Ok((
            id,
            InitialCap {
                slot,
                kind: ObjectKind::Vcpu,
                a: index as u64,
                b: 0,
            },
        ))
    }
}
