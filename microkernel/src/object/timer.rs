//! Timers: one-shot or periodic deadlines on the kernel's clock that
//! signal a port when they fire, and the queue of armed timers the clock
//! checks.
//!
//! # Invariants
//! - A timer is armed exactly when the [`TimerQueue`] holds it, with the
//!   same deadline as its `deadline` field.
//! - The queue is sorted by deadline and never grows past the capacity it
//!   reserved at start (one entry per object the table can hold), so arming
//!   a timer never allocates; finding the due timers costs one comparison
//!   when none is due.
//! - A periodic timer fires at most once per check of the clock: periods
//!   missed in between coalesce into that one signal.

use alloc::vec::Vec;
use ipc::hypercall::Status;

use super::ObjectId;

/// A timer object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timer {
    /// The partition that created (and pays for) it.
    pub owner: ObjectId,
    /// The port it signals.
    pub port: ObjectId,
    /// Its deadline on the kernel's clock (ns), when armed.
    pub deadline: Option<u64>,
    /// Its period (ns; 0 = one-shot).
    pub period: u64,
    /// Times it fired (statistics).
    pub fired: u64,
}

impl Timer {
    /// A disarmed timer signalling `port`.
    pub fn new(owner: ObjectId, port: ObjectId) -> Self {
        Timer {
            owner,
            port,
            deadline: None,
            period: 0,
            fired: 0,
        }
    }

    /// Records that it fired at `now`; returns its next deadline (a
    /// periodic timer's first multiple of its period after `now`), or
    /// `None` for a one-shot timer, which is disarmed.
    pub fn fire(&mut self, now: u64) -> Option<u64> {
        self.fired = self.fired.wrapping_add(1);
        let deadline = self.deadline?;
        if self.period == 0 {
            self.deadline = None;
            return None;
        }
        let missed = now.saturating_sub(deadline) / self.period;
        let next = deadline.saturating_add(self.period.saturating_mul(missed.saturating_add(1)));
        self.deadline = Some(next);
        Some(next)
    }
}

/// The armed timers, soonest first.
#[derive(Debug, Default)]
pub struct TimerQueue {
    entries: Vec<(u64, ObjectId)>,
}

impl TimerQueue {
    /// A queue for at most `capacity` timers, reserved now;
    /// `OutOfMemory` when the heap cannot hold it.
    pub fn with_capacity(capacity: usize) -> Result<Self, Status> {
        let mut entries = Vec::new();
        entries
            .try_reserve_exact(capacity)
            .map_err(|_| Status::OutOfMemory)?;
        Ok(TimerQueue { entries })
    }

    /// Bytes of kernel heap a queue of `capacity` entries takes.
    pub const fn heap_bytes(capacity: usize) -> usize {
        capacity * core::mem::size_of::<(u64, ObjectId)>()
    }

    /// Arms (or re-arms) `timer` at `deadline`. `OutOfMemory` only when
    /// the queue is full, which the object table's size rules out.
    pub fn arm(&mut self, timer: ObjectId, deadline: u64) -> Result<(), Status> {
        self.disarm(timer);
        if self.entries.len() == self.entries.capacity() {
            return Err(Status::OutOfMemory);
        }
        // After every entry with the same deadline: first armed, first fired.
        let at = self.entries.partition_point(|&(d, _)| d <= deadline);
        self.entries.insert(at, (deadline, timer));
        Ok(())
    }

    /// Disarms `timer`; whether it was armed.
    pub fn disarm(&mut self, timer: ObjectId) -> bool {
        match self.entries.iter().position(|&(_, t)| t == timer) {
            Some(i) => {
                self.entries.remove(i);
                true
            }
            None => false,
        }
    }

    /// Takes the soonest timer if it is due at `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<ObjectId> {
        match self.entries.first() {
            Some(&(deadline, timer)) if deadline <= now => {
                self.entries.remove(0);
                Some(timer)
            }
            _ => None,
        }
    }

    /// The soonest deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.entries.first().map(|&(d, _)| d)
    }

    /// Armed timers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: u32) -> ObjectId {
        ObjectId {
            index,
            generation: 0,
        }
    }

    #[test]
    fn due_timers_come_soonest_first() {
        let mut q = TimerQueue::with_capacity(3).unwrap();
        q.arm(id(1), 30).unwrap();
        q.arm(id(2), 10).unwrap();
        q.arm(id(3), 20).unwrap();
        assert_eq!(q.arm(id(4), 5), Err(Status::OutOfMemory), "full");
        assert_eq!(q.next_deadline(), Some(10));
        assert_eq!(q.pop_due(9), None);
        assert_eq!(q.pop_due(20), Some(id(2)));
        assert_eq!(q.pop_due(20), Some(id(3)));
        assert_eq!(q.pop_due(20), None);
        // Re-arming moves a timer; it is never queued twice.
        q.arm(id(1), 1).unwrap();
        assert_eq!(q.len(), 1);
        assert!(q.disarm(id(1)));
        assert!(!q.disarm(id(1)));
        assert!(q.is_empty());
    }

    #[test]
    fn periodic_timers_skip_missed_periods() {
        let mut t = Timer::new(id(1), id(2));
        t.deadline = Some(100);
        t.period = 10;
        assert_eq!(t.fire(100), Some(110));
        assert_eq!(t.fire(155), Some(160), "four periods coalesce");
        assert_eq!(t.fired, 2);
        let mut once = Timer::new(id(1), id(2));
        once.deadline = Some(5);
        assert_eq!(once.fire(7), None);
        assert_eq!(once.deadline, None);
        let mut far = Timer::new(id(1), id(2));
        far.deadline = Some(u64::MAX - 1);
        far.period = u64::MAX / 2;
        assert_eq!(far.fire(u64::MAX), Some(u64::MAX), "saturates");
    }
}
