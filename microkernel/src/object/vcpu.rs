//! Virtual processors: the hardware context (VMCB and the registers VMRUN
//! does not keep), the scheduling state, and pending virtual interrupts.
//!
//! # Invariants
//! A vCPU in state `Running` is on exactly one processor, and only that
//! processor touches its context; every other state is off-processor.

use super::ObjectId;
use crate::svm::vmcb::GuestRegs;

/// Scheduling state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Created, never started.
    Created,
    /// Runnable, in its processor's run queue.
    Ready,
    /// On processor `cpu` now.
    Running(u32),
    /// Halted with interrupts enabled: waits for a virtual interrupt.
    Blocked,
    /// Paused by its controller.
    Paused,
    /// Halted with interrupts disabled, or its partition stopped: never runs again.
    Stopped,
}

/// A virtual processor.
#[derive(Debug)]
pub struct Vcpu {
    /// Its partition.
    pub partition: ObjectId,
    /// Index within the partition.
    pub index: u32,
    /// Scheduling state.
    pub state: State,
    /// Priority, 0 (lowest) to 7.
    pub priority: u8,
    /// The processor it runs on.
    pub cpu: u32,
    /// Host-physical address of its VMCB.
    pub vmcb: u64,
    /// Registers VMRUN does not save.
    pub regs: GuestRegs,
    /// Virtual interrupt vectors waiting for delivery.
    pub pending: [u64; 4],
    /// Pause requested while it was running.
    pub pause_requested: bool,
    /// The guest TLB must be flushed before the next entry.
    pub flush_tlb: bool,
    /// Exits taken (statistics).
    pub exits: u64,
    /// Timer tick at which it last got or left a processor.
    pub last_ran: u64,
}

impl Vcpu {
    /// A created vCPU.
    pub fn new(partition: ObjectId, index: u32, priority: u8, cpu: u32, vmcb: u64) -> Self {
        Vcpu {
            partition,
            index,
            state: State::Created,
            priority,
            cpu,
            vmcb,
            regs: GuestRegs::default(),
            pending: [0; 4],
            pause_requested: false,
            flush_tlb: true,
            exits: 0,
            last_ran: 0,
        }
    }

    /// Marks `vector` pending.
    pub fn raise(&mut self, vector: u8) {
        self.pending[vector as usize / 64] |= 1 << (vector % 64);
    }

    /// The highest pending vector, if any (not cleared).
    pub fn highest_pending(&self) -> Option<u8> {
        (0..4).rev().find_map(|i| {
            let w = self.pending[i];
            (w != 0).then(|| (i * 64 + 63 - w.leading_zeros() as usize) as u8)
        })
    }

    /// Clears `vector`.
    pub fn clear(&mut self, vector: u8) {
        self.pending[vector as usize / 64] &= !(1 << (vector % 64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_vectors_come_out_highest_first() {
        let mut v = Vcpu::new(
            ObjectId {
                index: 0,
                generation: 0,
            },
            0,
            0,
            0,
            0,
        );
        assert_eq!(v.highest_pending(), None);
        v.raise(0x40);
        v.raise(0xff);
        v.raise(0x20);
        assert_eq!(v.highest_pending(), Some(0xff));
        v.clear(0xff);
        assert_eq!(v.highest_pending(), Some(0x40));
        v.clear(0x40);
        assert_eq!(v.highest_pending(), Some(0x20));
    }
}
