//! Capability spaces: a partition's slots, each holding at most one
//! capability (an object reference plus rights).
//!
//! # Invariants
//! - A slot's generation increases every time it is emptied, so a handle
//!   issued before that fails with `StaleSlot` instead of naming whatever
//!   the slot holds next.
//! - Every capability has a unique [`CapId`] and remembers the capability it
//!   was derived from; revocation follows these links (see
//!   `Kernel::revoke_derived`).
//! - [`CapSpace::check`] is the one place a slot handle is turned into a
//!   capability: it validates index, generation, object type and rights.

use alloc::vec::Vec;
use ipc::hypercall::{Rights, SlotHandle, Status};

use crate::object::{ObjectId, ObjectKind};

/// Slots per capability space.
pub const SLOTS: usize = 256;

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

    /// Looks up `handle` and checks that it names a live capability of
    /// `kind` with at least `rights`. Nothing changes.
    pub fn check(
        &self,
        handle: SlotHandle,
        kind: ObjectKind,
        rights: Rights,
    ) -> Result<Capability, Status> {
        let cap = self.lookup(handle)?;
        if cap.kind != kind {
            return Err(Status::WrongType);
        }
        if !cap.rights.contains(rights) {
            return Err(Status::InsufficientRights);
        }
        Ok(cap)
    }

    /// Looks up `handle` without type or rights checks.
    pub fn lookup(&self, handle: SlotHandle) -> Result<Capability, Status> {
        let slot = self
            .slots
            .get(handle.index as usize)
            .ok_or(Status::InvalidSlot)?;
        if slot.generation != handle.generation {
            return Err(Status::StaleSlot);
        }
        slot.cap.ok_or(Status::InvalidSlot)
    }

    /// Whether a free slot exists.
    pub fn has_free_slot(&self) -> bool {
        self.slots.iter().any(|s| s.cap.is_none())
    }

    /// Puts `cap` into the lowest free slot; returns its handle.
    pub fn insert(&mut self, cap: Capability) -> Result<SlotHandle, Status> {
        let (index, slot) = self
            .slots
            .iter_mut()
            .enumerate()
            .find(|(_, s)| s.cap.is_none())
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
        slot.generation = slot.generation.wrapping_add(1);
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
    pub fn place(
        &mut self,
        index: usize,
        generation: u16,
        cap: Option<Capability>,
    ) -> Result<(), Status> {
        let slot = self.slots.get_mut(index).ok_or(Status::InvalidSlot)?;
        match (slot.cap, cap) {
            (None, _) => slot.cap = cap,
            (Some(held), Some(new)) if held.object == new.object && held.rights == new.rights => {}
            _ => return Err(Status::InvalidState),
        }
        slot.generation = generation;
        Ok(())
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
        assert_eq!(space.lookup(h), Err(Status::StaleSlot));
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
}
