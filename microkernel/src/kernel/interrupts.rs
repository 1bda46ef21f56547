//! Device interrupts: I/O APIC lines (shared when level-triggered) and
//! message-signalled interrupts, bound to vCPU vectors and acknowledged.
//!
//! # Invariants
//! - A line's mask follows its objects (`sync_line`): unmasked exactly
//!   when some object on it is bound and none holds it (delivered, not
//!   yet acknowledged). A level-triggered line fires again at the unmask
//!   while any device still asserts it, so a shared line loses nothing; a
//!   binding that never acknowledges blocks its own line and no other.
//! - A message vector is enabled at the hardware layer exactly while an
//!   object holds it; an interrupt on any other vector of the message
//!   range is a stray one for the hardware layer (counted, dropped).

use ipc::hypercall::{Rights, SlotHandle, Status};

use super::Kernel;
use super::calls::{CallResult, done};
use crate::machine::Machine;
use crate::object::interrupt::{Interrupt, MESSAGE_VECTOR_FIRST, MESSAGE_VECTORS, Source};
use crate::object::{Object, ObjectId, ObjectKind};

/// Fixed delivery, edge-triggered, physical destination: the message data
/// is the vector alone.
fn message_data(vector: u8) -> u64 {
    u64::from(vector)
}

impl Kernel {
    /// Interrupt objects on line `gsi`.
    fn objects_on_line(&self, gsi: u32) -> impl Iterator<Item = ObjectId> + '_ {
        self.objects
            .ids_of(ObjectKind::Interrupt)
            .into_iter()
            .filter(move |&id| {
                self.objects
                    .interrupt(id)
                    .is_some_and(|i| i.source == Source::Line(gsi))
            })
    }

    /// Masks or unmasks line `gsi` as its objects say (see the invariants).
    pub(crate) fn sync_line(&mut self, gsi: u32) {
        let mut bound = false;
        let mut held = false;
        for id in self.objects_on_line(gsi) {
            if let Some(i) = self.objects.interrupt(id) {
                bound |= i.binding.is_some();
                held |= i.holds_line();
            }
        }
        self.route(gsi, bound && !held);
    }

    /// A device interrupt on `gsi` arrived (the hardware layer masked the
    /// line): raise it on every bound, armed object of the line, which
    /// holds the line until acknowledged. Returns how many were raised.
    pub fn device_interrupt(&mut self, m: &mut impl Machine, gsi: u32) -> usize {
        let ids: alloc::vec::Vec<ObjectId> = self.objects_on_line(gsi).collect();
        let mut raised = 0;
        for id in ids {
            let Some(line) = self.objects.interrupt_mut(id) else {
                continue;
            };
            if let Some((vcpu, vector)) = line.binding
                && line.armed
            {
                line.armed = false;
                self.raise(m, vcpu, vector);
                raised += 1;
            }
        }
        self.sync_line(gsi);
        raised
    }

    /// A message interrupt on processor vector `vector` arrived: raised on
    /// its object's vCPU when armed, else kept pending for the
    /// acknowledge. False when no object holds the vector.
    pub fn message_interrupt(&mut self, m: &mut impl Machine, vector: u8) -> bool {
        let Some(id) = self
            .objects
            .ids_of(ObjectKind::Interrupt)
            .into_iter()
            .find(|&id| {
                self.objects
                    .interrupt(id)
                    .is_some_and(|i| i.source == Source::Message(vector))
            })
        else {
            return false;
        };
        if let Some(msg) = self.objects.interrupt_mut(id) {
            msg.pending = true;
        }
        self.deliver_pending(m, id);
        true
    }

    /// Raises a pending message interrupt if its object is bound and armed.
    fn deliver_pending(&mut self, m: &mut impl Machine, id: ObjectId) {
        let Some(msg) = self.objects.interrupt_mut(id) else {
            return;
        };
        if let Some((vcpu, vector)) = msg.binding
            && msg.armed
            && msg.pending
        {
            msg.armed = false;
            msg.pending = false;
            self.raise(m, vcpu, vector);
        }
    }

    /// `InterruptBind`: delivers `object`'s interrupts to `vector` of `vcpu`.
    pub(super) fn interrupt_bind(
        &mut self,
        m: &mut impl Machine,
        object: ObjectId,
        vcpu: ObjectId,
        vector: u8,
    ) -> CallResult {
        let int = self
            .objects
            .interrupt_mut(object)
            .ok_or(Status::StaleSlot)?;
        int.binding = Some((vcpu, vector));
        int.armed = true;
        match int.source {
            Source::Line(gsi) => self.sync_line(gsi),
            Source::Message(_) => self.deliver_pending(m, object),
        }
        done([0; 3])
    }

    /// `Acknowledge` of an interrupt: arms it again; its line is unmasked
    /// once no other object holds it, a pending message is raised at once.
    pub(super) fn interrupt_acknowledge(
        &mut self,
        m: &mut impl Machine,
        object: ObjectId,
    ) -> CallResult {
        let int = self
            .objects
            .interrupt_mut(object)
            .ok_or(Status::StaleSlot)?;
        int.armed = true;
        match int.source {
            Source::Line(gsi) => self.sync_line(gsi),
            Source::Message(_) => self.deliver_pending(m, object),
        }
        done([0; 3])
    }

    /// `InterruptShare`: a new interrupt object on the level-triggered
    /// line of `interrupt`, paid by the caller, derived from its capability.
    pub(super) fn interrupt_share(
        &mut self,
        caller: ObjectId,
        interrupt: SlotHandle,
    ) -> CallResult {
        let cap = self.cap(caller, interrupt, ObjectKind::Interrupt, Rights::BIND)?;
        let source = self
            .objects
            .interrupt(cap.object)
            .ok_or(Status::StaleSlot)?
            .source;
        let Source::Line(gsi) = source else {
            return Err(Status::InvalidArgument);
        };
        if gsi >= 64 || self.level_lines & (1 << gsi) == 0 {
            return Err(Status::InvalidArgument);
        }
        self.free_slots(caller, 1)?;
        let id = self.insert_paid(caller, Object::Interrupt(Interrupt::line(gsi)))?;
        let new = self.new_cap(
            id,
            ObjectKind::Interrupt,
            Rights::BIND | Rights::GRANT,
            Some(cap.id),
        );
        let slot = self.insert_cap(caller, new)?;
        done([slot.raw(), 0, 0])
    }

    /// `InterruptMessage`: a message interrupt on a free vector, paid by
    /// the caller; its slot, the message address and the message data.
    pub(super) fn interrupt_message(
        &mut self,
        m: &mut impl Machine,
        caller: ObjectId,
        partition: SlotHandle,
    ) -> CallResult {
        let cap = self.cap(caller, partition, ObjectKind::Partition, Rights::CREATE)?;
        if cap.object != caller {
            return Err(Status::InsufficientRights);
        }
        let taken: alloc::vec::Vec<u8> = self
            .objects
            .ids_of(ObjectKind::Interrupt)
            .into_iter()
            .filter_map(|id| match self.objects.interrupt(id)?.source {
                Source::Message(v) => Some(v),
                Source::Line(_) => None,
            })
            .collect();
        let vector = (MESSAGE_VECTOR_FIRST..MESSAGE_VECTOR_FIRST + MESSAGE_VECTORS)
            .find(|v| !taken.contains(v))
            .ok_or(Status::OutOfMemory)?;
        self.free_slots(caller, 1)?;
        let id = self.insert_paid(caller, Object::Interrupt(Interrupt::message(vector)))?;
        let new = self.new_cap(
            id,
            ObjectKind::Interrupt,
            Rights::BIND | Rights::GRANT,
            None,
        );
        let slot = self.insert_cap(caller, new)?;
        m.message_vector(vector, true);
        done([slot.raw(), m.message_address(), message_data(vector)])
    }

    /// Frees an interrupt object no capability names: its line is
    /// re-synchronised (masked when nothing else is bound on it), its
    /// message vector disabled; its payer gets the quota back.
    pub(super) fn free_interrupt(&mut self, m: &mut impl Machine, object: ObjectId) {
        let Some(Object::Interrupt(int)) = self.remove_paid(object) else {
            return;
        };
        match int.source {
            Source::Line(gsi) => self.sync_line(gsi),
            Source::Message(vector) => m.message_vector(vector, false),
        }
    }
}
