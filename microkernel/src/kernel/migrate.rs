//! What migration needs of the kernel beyond memory and vCPU state: a copy
//! of a partition's capability space in another partition, slot for slot
//! (`CapClone`, live migration on one node), and for a saved partition
//! restored later, a description of each slot (`CapInspect`) and a
//! delegation into a chosen slot (`CapDelegateAt`).
//!
//! The moved memory holds slot handles (index + generation); the copy
//! gives the destination the same handles, naming the same ports and
//! interrupts, and its own partition, vCPUs and memory where the source
//! named its own. Copies derive from the source's capabilities' parents, so
//! destroying the source (the end of a migration) leaves them, and revoking
//! the root's original removes them as it removed the source's.

use alloc::vec::Vec;
use ipc::hypercall::{Rights, SlotHandle, Status};

use super::Kernel;
use super::calls::{CallResult, done};
use crate::cap::{Capability, SLOTS};
use crate::machine::Machine;
use crate::object::partition::RunState;
use crate::object::vcpu::State;
use crate::object::{ObjectId, ObjectKind};

impl Kernel {
    /// `CapClone`: gives `target` a slot-for-slot copy of `source`'s
    /// capability space. Validates everything before changing anything.
    pub(super) fn cap_clone(
        &mut self,
        m: &mut impl Machine,
        caller: ObjectId,
        source: SlotHandle,
        target: SlotHandle,
    ) -> CallResult {
        let s_cap = self.cap(caller, source, ObjectKind::Partition, Rights::CONTROL)?;
        let t_cap = self.cap(caller, target, ObjectKind::Partition, Rights::CONTROL)?;
        if s_cap.object == t_cap.object || Some(t_cap.object) == self.root {
            return Err(Status::InvalidArgument);
        }
        let plan = self.clone_plan(s_cap.object, t_cap.object)?;
        let t = self
            .objects
            .partition_mut(t_cap.object)
            .ok_or(Status::StaleSlot)?;
        for (index, generation, cap) in &plan {
            // Checked by `clone_plan`: cannot fail.
            t.cspace.place(*index, *generation, *cap)?;
        }
        let copied = plan.iter().filter(|(_, _, c)| c.is_some()).count();
        self.refresh_io_permissions(m, t_cap.object);
        done([copied as u64, 0, 0])
    }

    /// `CapInspect`: slot `index` of a partition's space as (generation,
    /// kind), rights, and the caller's own slot naming the same object.
    pub(super) fn cap_inspect(
        &mut self,
        caller: ObjectId,
        partition: SlotHandle,
        index: u16,
    ) -> CallResult {
        let p_cap = self.cap(caller, partition, ObjectKind::Partition, Rights::INSPECT)?;
        let p = self
            .objects
            .partition(p_cap.object)
            .ok_or(Status::StaleSlot)?;
        let (generation, held) = p.cspace.slot(index as usize).ok_or(Status::InvalidSlot)?;
        let Some(cap) = held else {
            return done([u64::from(generation), 0, u64::MAX]);
        };
        let kind = cap.kind.cap_kind();
        let mine = &self
            .objects
            .partition(caller)
            .ok_or(Status::InvalidSlot)?
            .cspace;
        let own = mine
            .caps()
            .find(|c| c.object == cap.object)
            .and_then(|c| mine.handle_of(c.id))
            .map_or(u64::MAX, SlotHandle::raw);
        done([
            u64::from(generation) | (u64::from(kind) << 16),
            u64::from(cap.rights.bits()),
            own,
        ])
    }

    /// What every slot of `target` becomes: (index, generation, capability).
    fn clone_plan(
        &mut self,
        source: ObjectId,
        target: ObjectId,
    ) -> Result<Vec<(usize, u16, Option<Capability>)>, Status> {
        let s = self.objects.partition(source).ok_or(Status::StaleSlot)?;
        let t = self.objects.partition(target).ok_or(Status::StaleSlot)?;
        if t.state == RunState::Dying || s.state == RunState::Dying {
            return Err(Status::InvalidState);
        }
        let started = t.vcpus.iter().any(|&v| {
            self.objects
                .vcpu(v)
                .is_some_and(|v| v.state != State::Created)
        });
        if started || t.vcpus.len() != s.vcpus.len() || t.memory.len() != s.memory.len() {
            return Err(Status::InvalidState);
        }
        let (s_vcpus, t_vcpus) = (s.vcpus.clone(), t.vcpus.clone());
        let (s_memory, t_memory) = (s.memory.clone(), t.memory.clone());
        let mut plan = Vec::new();
        for index in 0..SLOTS {
            let (Some((generation, cap)), Some((_, held))) =
                (s.cspace.slot(index), t.cspace.slot(index))
            else {
                break;
            };
            let copy = match cap {
                None => None,
                Some(cap) => {
                    let object = if cap.object == source {
                        target
                    } else if let Some(i) = s_vcpus.iter().position(|&v| v == cap.object) {
                        t_vcpus[i]
                    } else if let Some(i) = s_memory.iter().position(|&x| x == cap.object) {
                        t_memory[i]
                    } else {
                        // A port the source created dies with it: nothing
                        // the copy could keep naming.
                        // So does a timer it created.
                        let own_port = cap.kind == ObjectKind::Port
                            && self
                                .objects
                                .port(cap.object)
                                .is_some_and(|p| p.owner == source);
                        let own_timer = cap.kind == ObjectKind::Timer
                            && self
                                .objects
                                .timer(cap.object)
                                .is_some_and(|t| t.owner == source);
                        if own_port || own_timer {
                            return Err(Status::InvalidState);
                        }
                        cap.object
                    };
                    Some((object, cap))
                }
            };
            // Generations only move forward in the target too.
            t.cspace.can_place(index, generation, held)?;
            // The target may hold only what `PartitionCreate` gave it, each
            // where the source has its counterpart.
            match (held, copy) {
                (None, _) => {}
                (Some(h), Some((object, cap)))
                    if h.object == object
                        && h.rights == cap.rights
                        && (object == target || t_memory.contains(&object)) => {}
                _ => return Err(Status::InvalidState),
            }
            plan.push((index, generation, copy));
        }
        // Keeps the target's own capabilities (same object and rights)
        // and mints the rest, after every check passed.
        Ok(plan
            .into_iter()
            .map(|(index, generation, copy)| {
                let cap = copy.map(|(object, cap)| {
                    let parent = if object == cap.object {
                        cap.parent
                    } else {
                        None
                    };
                    self.new_cap(object, cap.kind, cap.rights, parent)
                });
                (index, generation, cap)
            })
            .collect())
    }
}
