//! Timers: `TimerCreate`, `TimerSet`, `TimerCancel`, and the clock that
//! fires them.
//!
//! # Invariants
//! - The kernel's clock ([`Kernel::now_ns`]) only moves forward; the
//!   hardware layer advances it ([`Kernel::advance_clock`]) at every hold
//!   of the kernel lock and every timer tick, and that is where due timers
//!   fire: a timer fires at most one tick (10 ms) after its deadline, plus
//!   whatever the scheduler adds before its vCPU runs.
//! - A firing signals the timer's port exactly as `PortSignal` does (the
//!   bound vCPU is raised and woken). A timer whose port is gone is
//!   disarmed instead, and `TimerSet` refuses it with `InvalidState`.
//! - Work per check is bounded: each armed timer fires at most once, and
//!   there are at most as many timers as the object table has entries.

use ipc::hypercall::{Rights, SlotHandle, Status, timer};

use super::Kernel;
use super::calls::{CallResult, done};
use crate::machine::Machine;
use crate::object::{Object, ObjectId, ObjectKind, Timer};

impl Kernel {
    /// Moves the kernel's clock to `now_ns` (never back) and fires every
    /// timer due by then.
    pub fn advance_clock(&mut self, m: &mut impl Machine, now_ns: u64) {
        self.now_ns = self.now_ns.max(now_ns);
        let now = self.now_ns;
        // Every armed timer at most once (see the invariants).
        let mut budget = self.timers.len();
        while budget > 0
            && let Some(id) = self.timers.pop_due(now)
        {
            budget -= 1;
            self.fire_timer(m, id, now);
        }
    }

    fn fire_timer(&mut self, m: &mut impl Machine, id: ObjectId, now: u64) {
        let Some(t) = self.objects.timer_mut(id) else {
            return;
        };
        let port = t.port;
        let Some(delivery) = self.objects.port_mut(port).map(|p| p.signal()) else {
            // Its port was freed: the timer stays disarmed.
            if let Some(t) = self.objects.timer_mut(id) {
                t.deadline = None;
            }
            return;
        };
        let next = self.objects.timer_mut(id).and_then(|t| t.fire(now));
        if let Some(next) = next {
            // Room: it was just taken off the queue.
            let armed = self.timers.arm(id, next);
            debug_assert!(armed.is_ok(), "a timer's own queue entry is gone");
        }
        self.deliver(m, delivery);
    }

    /// `TimerCreate`: a disarmed timer on a port the caller may signal,
    /// paid from its quota.
    pub(super) fn timer_create(&mut self, caller: ObjectId, port: SlotHandle) -> CallResult {
        let port_cap = self.cap(caller, port, ObjectKind::Port, Rights::SIGNAL)?;
        self.free_slots(caller, 1)?;
        // Paid from the caller's quota: OutOfMemory when it is spent.
        let id = self.insert_paid(caller, Object::Timer(Timer::new(caller, port_cap.object)))?;
        let cap = self.new_cap(id, ObjectKind::Timer, Rights::CONTROL | Rights::GRANT, None);
        let slot = self.insert_cap(caller, cap)?;
        done([slot.raw(), 0, 0])
    }

    /// `TimerSet`: arms a timer; results: its deadline and the clock now.
    /// The decoder refused zero deadlines, relative ones beyond a year and
    /// periods out of range; an absolute deadline beyond a year from now is
    /// refused here, one already past fires at once.
    pub(super) fn timer_set(
        &mut self,
        m: &mut impl Machine,
        caller: ObjectId,
        handle: SlotHandle,
        (deadline, period, flags): (u64, u64, u64),
    ) -> CallResult {
        let cap = self.cap(caller, handle, ObjectKind::Timer, Rights::CONTROL)?;
        let t = self.objects.timer(cap.object).ok_or(Status::StaleSlot)?;
        if self.objects.port(t.port).is_none() {
            return Err(Status::InvalidState);
        }
        let now = self.now_ns;
        let at = if flags & timer::ABSOLUTE != 0 {
            if deadline.saturating_sub(now) > timer::MAX_DEADLINE_NS {
                return Err(Status::InvalidArgument);
            }
            deadline
        } else {
            now.saturating_add(deadline)
        };
        self.timers.arm(cap.object, at)?;
        if let Some(t) = self.objects.timer_mut(cap.object) {
            t.deadline = Some(at);
            t.period = period;
        }
        if at <= now {
            self.advance_clock(m, now);
        }
        done([at, now, 0])
    }

    /// `TimerCancel`: disarms; result: whether it was armed.
    pub(super) fn timer_cancel(&mut self, caller: ObjectId, handle: SlotHandle) -> CallResult {
        let cap = self.cap(caller, handle, ObjectKind::Timer, Rights::CONTROL)?;
        let t = self
            .objects
            .timer_mut(cap.object)
            .ok_or(Status::StaleSlot)?;
        t.deadline = None;
        let was_armed = self.timers.disarm(cap.object);
        done([u64::from(was_armed), 0, 0])
    }

    /// Frees a timer: disarms it and refunds its owner.
    pub(super) fn free_timer(&mut self, id: ObjectId) {
        self.timers.disarm(id);
        self.remove_paid(id);
    }
}
