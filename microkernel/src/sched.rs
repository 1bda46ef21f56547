//! The scheduler's policy: one run queue per processor, strict priorities,
//! round robin within a priority. Time slices and preemption are driven by
//! the caller (the local APIC timer); this module only decides who is next.
//!
//! # Invariants
//! A vCPU is in at most one queue, at most once.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use ipc::hypercall::MAX_PRIORITY;

use crate::object::ObjectId;

/// Timer ticks a vCPU may run before another of the same priority gets the processor.
pub const SLICE_TICKS: u64 = 2;

/// Run queues for every processor.
#[derive(Debug, Default)]
pub struct RunQueues {
    /// Per processor, per priority, the ready vCPUs.
    queues: Vec<[VecDeque<ObjectId>; MAX_PRIORITY as usize + 1]>,
}

impl RunQueues {
    /// Queues for `cpus` processors.
    pub fn new(cpus: u32) -> Self {
        RunQueues {
            queues: (0..cpus).map(|_| Default::default()).collect(),
        }
    }

    /// Processors.
    pub fn cpus(&self) -> u32 {
        self.queues.len() as u32
    }

    /// Appends `vcpu` to `cpu`'s queue at `priority` (once).
    pub fn enqueue(&mut self, cpu: u32, priority: u8, vcpu: ObjectId) {
        let Some(levels) = self.queues.get_mut(cpu as usize) else {
            return;
        };
        let level = &mut levels[priority.min(MAX_PRIORITY) as usize];
        if !level.contains(&vcpu) {
            level.push_back(vcpu);
        }
    }

    /// Takes the next vCPU for `cpu`: the oldest of the highest priority.
    pub fn pick(&mut self, cpu: u32) -> Option<ObjectId> {
        self.queues
            .get_mut(cpu as usize)?
            .iter_mut()
            .rev()
            .find_map(|q| q.pop_front())
    }

    /// Whether `cpu` has a ready vCPU of at least `priority`.
    pub fn has_ready(&self, cpu: u32, priority: u8) -> bool {
        self.queues.get(cpu as usize).is_some_and(|levels| {
            levels[priority.min(MAX_PRIORITY) as usize..]
                .iter()
                .any(|q| !q.is_empty())
        })
    }

    /// Removes `vcpu` from every queue.
    pub fn remove(&mut self, vcpu: ObjectId) {
        for levels in &mut self.queues {
            for q in levels.iter_mut() {
                q.retain(|v| *v != vcpu);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(i: u32) -> ObjectId {
        ObjectId {
            index: i,
            generation: 0,
        }
    }

    #[test]
    fn priorities_then_round_robin() {
        let mut q = RunQueues::new(2);
        q.enqueue(0, 1, v(1));
        q.enqueue(0, 1, v(2));
        q.enqueue(0, 5, v(3));
        q.enqueue(0, 1, v(1)); // already queued
        assert!(q.has_ready(0, 5));
        assert!(!q.has_ready(0, 6));
        assert_eq!(q.pick(0), Some(v(3)));
        assert_eq!(q.pick(0), Some(v(1)));
        q.enqueue(0, 1, v(1)); // preempted: back of its level
        assert_eq!(q.pick(0), Some(v(2)));
        assert_eq!(q.pick(0), Some(v(1)));
        assert_eq!(q.pick(0), None);
        assert_eq!(q.pick(1), None);
        assert_eq!(q.pick(7), None, "unknown processor");
    }

    #[test]
    fn affinity_and_removal() {
        let mut q = RunQueues::new(3);
        q.enqueue(2, 0, v(9));
        assert_eq!(q.pick(0), None, "a vCPU runs only where it is queued");
        q.enqueue(1, 0, v(8));
        q.remove(v(9));
        assert_eq!(q.pick(2), None);
        assert_eq!(q.pick(1), Some(v(8)));
    }
}
