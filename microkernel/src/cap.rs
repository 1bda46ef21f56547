//! Capability spaces: a partition's slots, each holding at most one
//! capability (an object reference plus rights).
//!
//! # Invariants
//! - A slot's generation only moves forward: it increases every time the
//!   slot is emptied, and a placement (`CapDelegateAt`, `CapClone`) may
//!   only raise it. A handle issued before fails with `StaleSlot` instead
//!   of naming whatever the slot holds next. A slot whose generation
//!   reaches [`RETIRED`] is never filled again (generations never wrap).
//! - Every capability has a unique [`CapId`] and remembers the capability it
//!   was derived from; revocation follows these links (see
//!   `Kernel::revoke_derived`).
//! - [`CapSpace::check_kinds`] is the one place a slot handle is turned
//!   into a capability: it validates index, generation, object type and
//!   rights ([`CapSpace::check`] is its one-type form).

use alloc::vec::Vec;
use ipc::hypercall::{Rights, SlotHandle, Status};

use crate::object::{ObjectId, ObjectKind};

/// Slots per capability space.
pub const SLOTS: usize = 256;

/// The generation of a slot that is used up: emptied 65,535 times, it is
/// never filled again, so no handle ever names two objects.
pub const RETIRED: u16 = u16::MAX;

/// Every object type: for checks that accept a capability of any type
/// (revoke, delete, delegate).
pub const ANY_KIND: &[ObjectKind] = &[
    ObjectKind::Partition,
    ObjectKind::Vcpu,
    ObjectKind::Memory,
    ObjectKind::Port,
    ObjectKind::Interrupt,
    ObjectKind::IoPorts,
    ObjectKind::Timer,
];

/// A capability's identity, unique for the kernel's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CapId(pub u64);

/// A capability: an object, the rights it conveys, and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    /// The object.
    pub object: ObjectId,
    /// The object's kind (checked against the object table on use).
    pub kind: ObjectKind,
    /// What the holder may do.
    pub rights: Rights,
    /// Identity of this copy.
    pub id: CapId,
    /// The capability this one was delegated from (None for originals).
    pub parent: Option<CapId>,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    generation: u16,
    cap: Option<Capability>,
}

impl Slot {
    /// Empty and not retired.
    fn is_free(&self) -> bool {
        self.cap.is_none() && self.generation != RETIRED
    }
}

/// One partition's capability space.
#[derive(Clone, Debug)]
pub struct CapSpace {
    slots: Vec<Slot>,
}

impl Default for CapSpace {
    fn default() -> Self {
        Self::new()
    }
}

impl CapSpace {
    /// An empty space of [`SLOTS`] slots.
    pub fn new() -> Self {
        CapSpace {
            slots: alloc::vec![Slot { generation: 0, cap: None }; SLOTS],
        }
    }

    /// An empty space, or `OutOfMemory` when the kernel heap cannot hold it.
    pub fn try_new() -> Result<Self, Status> {
        let mut slots = Vec::new();
        slots
            .try_reserve_exact(SLOTS)
            .map_err(|_| Status::OutOfMemory)?;
        slots.resize(
            SLOTS,
            Slot {
                generation: 0,
                cap: None,
            },
        );
        Ok(CapSpace { slots })
    }

    /// Bytes of kernel heap one space takes.
    pub const HEAP_BYTES: usize = SLOTS * core::mem::size_of::<Slot>();

    /// Looks up `handle` and checks that it names a live capability of
    /// `kind` with at least `rights`. Nothing changes.
    pub fn check(
        &self,
        handle: SlotHandle,
        kind: ObjectKind,
        rights: Rights,
    ) -> Result<Capability, Status> {
        self.check_kinds(handle, &[kind], rights)
    }

    /// The one check: `handle` names a live capability of one of `kinds`
    /// with at least `rights`. In this order: InvalidSlot (index out of
    /// range, or a generation this slot never had: an empty slot's
    /// current one, or a later one), StaleSlot (an earlier generation:
    /// the slot was emptied since), WrongType, InsufficientRights.
    pub fn check_kinds(
        &self,
        handle: SlotHandle,
        kinds: &[ObjectKind],
        rights: Rights,
    ) -> Result<Capability, Status> {
        let slot = self
            .slots
            .get(handle.index as usize)
            .ok_or(Status::InvalidSlot)?;
        let cap = match slot.cap {
            Some(cap) if slot.generation == handle.generation => cap,
            _ if handle.generation < slot.generation => return Err(Status::StaleSlot),
            _ => return Err(Status::InvalidSlot),
        };
        if !kinds.contains(&cap.kind) {
            return Err(Status::WrongType);
        }
        if !cap.rights.contains(rights) {
            return Err(Status::InsufficientRights);
        }
        Ok(cap)
    }

    /// Free slots (empty and not retired).
    pub fn free_slots(&self) -> usize {
        self.slots.iter().filter(|s| s.is_free()).count()
    }

    /// Whether a free slot exists.
    pub fn has_free_slot(&self) -> bool {
        self.slots.iter().any(Slot::is_free)
    }

    /// Puts `cap` into the lowest free slot; returns its handle.
    pub fn insert(&mut self, cap: Capability) -> Result<SlotHandle, Status> {
        let (index, slot) = self
            .slots
            .iter_mut()
            .enumerate()
            .find(|(_, s)| s.is_free())
            .ok_or(Status::OutOfSlots)?;
        slot.cap = Some(cap);
        Ok(SlotHandle {
            index: index as u16,
            generation: slot.generation,
        })
    }

    /// Empties the slot holding the capability `id`, if any; returns it.
    pub fn remove_id(&mut self, id: CapId) -> Option<Capability> {
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.cap.is_some_and(|c| c.id == id))?;
        let cap = slot.cap.take();
        // Forward only; at RETIRED the slot stays empty for good.
        slot.generation = slot.generation.saturating_add(1);
        cap
    }

    /// Every capability held.
    pub fn caps(&self) -> impl Iterator<Item = Capability> + '_ {
        self.slots.iter().filter_map(|s| s.cap)
    }

    /// The handle of the slot holding capability `id`.
    pub fn handle_of(&self, id: CapId) -> Option<SlotHandle> {
        self.slots.iter().enumerate().find_map(|(i, s)| {
            s.cap.filter(|c| c.id == id).map(|_| SlotHandle {
                index: i as u16,
                generation: s.generation,
            })
        })
    }

    /// The generation and capability of slot `index` (None past the end).
    pub fn slot(&self, index: usize) -> Option<(u16, Option<Capability>)> {
        self.slots.get(index).map(|s| (s.generation, s.cap))
    }

    /// Puts `cap` (or nothing) into slot `index` and gives the slot
    /// `generation`: how a copied space gets the same handles as its
    /// original. The slot must be empty, or already hold a capability with
    /// the same object and rights (which stays, under the new generation).
    /// Generations only move forward: an older one than the slot's is
    /// StaleSlot, and a retired slot (or [`RETIRED`] itself) InvalidSlot.
    pub fn place(
        &mut self,
        index: usize,
        generation: u16,
        cap: Option<Capability>,
    ) -> Result<(), Status> {
        self.can_place(index, generation, cap)?;
        let slot = self.slots.get_mut(index).ok_or(Status::InvalidSlot)?;
        if slot.cap.is_none() {
            slot.cap = cap;
        }
        slot.generation = generation;
        Ok(())
    }

    /// Whether [`CapSpace::place`] would succeed; nothing changes.
    pub fn can_place(
        &self,
        index: usize,
        generation: u16,
        cap: Option<Capability>,
    ) -> Result<(), Status> {
        let slot = self.slots.get(index).ok_or(Status::InvalidSlot)?;
        if generation == RETIRED || slot.generation == RETIRED {
            return Err(Status::InvalidSlot);
        }
        if generation < slot.generation {
            return Err(Status::StaleSlot);
        }
        match (slot.cap, cap) {
            (None, _) => Ok(()),
            (Some(held), Some(new)) if held.object == new.object && held.rights == new.rights => {
                Ok(())
            }
            _ => Err(Status::InvalidState),
        }
    }

    /// Removes every capability whose object is `object`; returns how many.
    pub fn remove_object(&mut self, object: ObjectId) -> usize {
        let ids: Vec<CapId> = self
            .caps()
            .filter(|c| c.object == object)
            .map(|c| c.id)
            .collect();
        for id in &ids {
            self.remove_id(*id);
        }
        ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(id: u64, kind: ObjectKind, rights: Rights) -> Capability {
        Capability {
            object: ObjectId {
                index: id as u32,
                generation: 0,
            },
            kind,
            rights,
            id: CapId(id),
            parent: None,
        }
    }

    #[test]
    fn check_validates_slot_generation_type_and_rights() {
        let mut space = CapSpace::new();
        let h = space
            .insert(cap(1, ObjectKind::Port, Rights::SIGNAL | Rights::GRANT))
            .unwrap();
        assert!(space.check(h, ObjectKind::Port, Rights::SIGNAL).is_ok());
        assert_eq!(
            space.check(h, ObjectKind::Memory, Rights::NONE),
            Err(Status::WrongType)
        );
        assert_eq!(
            space.check(h, ObjectKind::Port, Rights::BIND),
            Err(Status::InsufficientRights)
        );
        assert_eq!(
            space.check(
                SlotHandle {
                    index: 9,
                    generation: 0
                },
                ObjectKind::Port,
                Rights::NONE
            ),
            Err(Status::InvalidSlot)
        );
        assert_eq!(
            space.check(
                SlotHandle {
                    index: 999,
                    generation: 0
                },
                ObjectKind::Port,
                Rights::NONE
            ),
            Err(Status::InvalidSlot)
        );
        space.remove_id(CapId(1)).unwrap();
        assert_eq!(
            space.check(h, ObjectKind::Port, Rights::NONE),
            Err(Status::StaleSlot)
        );
        // The slot is reused with a new generation: the old handle stays stale.
        let h2 = space.insert(cap(2, ObjectKind::Port, Rights::ALL)).unwrap();
        assert_eq!(h2.index, h.index);
        assert_ne!(h2.generation, h.generation);
        assert_eq!(
            space.check_kinds(h, ANY_KIND, Rights::NONE),
            Err(Status::StaleSlot)
        );
    }

    #[test]
    fn fills_up_and_reports_out_of_slots() {
        let mut space = CapSpace::new();
        for i in 0..SLOTS as u64 {
            space.insert(cap(i, ObjectKind::Port, Rights::ALL)).unwrap();
        }
        assert!(!space.has_free_slot());
        assert_eq!(
            space.insert(cap(999, ObjectKind::Port, Rights::ALL)),
            Err(Status::OutOfSlots)
        );
        assert_eq!(
            space.remove_object(ObjectId {
                index: 7,
                generation: 0
            }),
            1
        );
        assert!(space.has_free_slot());
    }

    #[test]
    fn a_generation_never_issued_is_invalid_and_an_older_one_stale() {
        let mut space = CapSpace::new();
        let never = SlotHandle {
            index: 3,
            generation: 5,
        };
        assert_eq!(
            space.check_kinds(never, ANY_KIND, Rights::NONE),
            Err(Status::InvalidSlot),
            "an empty, never-used slot with a nonzero generation"
        );
        let h = space.insert(cap(1, ObjectKind::Port, Rights::ALL)).unwrap();
        let ahead = SlotHandle {
            generation: h.generation + 1,
            ..h
        };
        assert_eq!(
            space.check_kinds(ahead, ANY_KIND, Rights::NONE),
            Err(Status::InvalidSlot),
            "a generation the slot never had"
        );
        space.remove_id(CapId(1)).unwrap();
        assert_eq!(
            space.check_kinds(h, ANY_KIND, Rights::NONE),
            Err(Status::StaleSlot)
        );
        let current = SlotHandle {
            generation: h.generation + 1,
            ..h
        };
        assert_eq!(
            space.check_kinds(current, ANY_KIND, Rights::NONE),
            Err(Status::InvalidSlot),
            "an empty slot's current generation names nothing"
        );
    }

    #[test]
    fn check_kinds_accepts_only_the_named_kinds() {
        let mut space = CapSpace::new();
        let port = space
            .insert(cap(1, ObjectKind::Port, Rights::BIND))
            .unwrap();
        let part = space
            .insert(cap(2, ObjectKind::Partition, Rights::ALL))
            .unwrap();
        let kinds = &[ObjectKind::Port, ObjectKind::Interrupt];
        assert!(space.check_kinds(port, kinds, Rights::BIND).is_ok());
        assert_eq!(
            space.check_kinds(part, kinds, Rights::BIND),
            Err(Status::WrongType),
            "type before rights"
        );
        assert_eq!(
            space.check_kinds(port, kinds, Rights::SIGNAL),
            Err(Status::InsufficientRights)
        );
    }

    #[test]
    fn generations_only_move_forward() {
        let mut space = CapSpace::new();
        let h = space.insert(cap(1, ObjectKind::Port, Rights::ALL)).unwrap();
        space.remove_id(CapId(1)).unwrap();
        space.remove_id(CapId(1));
        let (generation, _) = space.slot(h.index as usize).unwrap();
        assert_eq!(generation, 1);
        assert_eq!(
            space.place(
                h.index as usize,
                0,
                Some(cap(2, ObjectKind::Port, Rights::ALL))
            ),
            Err(Status::StaleSlot),
            "a placement may not take a slot's generation back"
        );
        assert_eq!(space.slot(h.index as usize).unwrap(), (1, None));
        space
            .place(
                h.index as usize,
                9,
                Some(cap(2, ObjectKind::Port, Rights::ALL)),
            )
            .unwrap();
        assert_eq!(space.slot(h.index as usize).unwrap().0, 9);
        assert_eq!(
            space.place(h.index as usize, RETIRED, None),
            Err(Status::InvalidSlot)
        );
    }

    #[test]
    fn a_slot_emptied_65535_times_is_retired_not_wrapped() {
        let mut space = CapSpace::new();
        let first = space.insert(cap(0, ObjectKind::Port, Rights::ALL)).unwrap();
        space.remove_id(CapId(0)).unwrap();
        space
            .place(first.index as usize, RETIRED - 1, None)
            .unwrap();
        let last = space.insert(cap(1, ObjectKind::Port, Rights::ALL)).unwrap();
        assert_eq!(last.index, first.index);
        assert_eq!(last.generation, RETIRED - 1);
        space.remove_id(CapId(1)).unwrap();
        let next = space.insert(cap(2, ObjectKind::Port, Rights::ALL)).unwrap();
        assert_ne!(next.index, first.index, "the retired slot is never reused");
        assert_eq!(space.free_slots(), SLOTS - 2);
        for stale in [first, last] {
            assert_eq!(
                space.check_kinds(stale, ANY_KIND, Rights::NONE),
                Err(Status::StaleSlot)
            );
        }
    }
}
