//! Sleeping with a timeout instead of spinning: a kernel timer that
//! signals a port bound to a vector of this vCPU, and [`wait_until`]
//! (`STI; HLT`) between interrupts (`docs/hypercalls.md`, "Timers").
//!
//! # Invariants
//! - [`Sleeper::wait_until_or_timeout`] never reports a timeout before the
//!   deadline on the kernel's clock, as this vCPU reads it
//!   (`ipc::hypercall::timer::clock_ns` of its own TSC): a wake-up that
//!   comes early (a signal left over from an earlier wait) arms the timer
//!   again and goes back to sleep.
//! - Every wait leaves the port acknowledged and, when it returns before
//!   the deadline, the timer cancelled.

use core::sync::atomic::{AtomicU64, Ordering};

use ipc::hypercall::{Call, SlotHandle, Status, timer};

use crate::hypercall::hypercall;
use crate::interrupts::{set_interrupt_handler, wait_until};

/// One bit per vector: a timer's signal arrived and is not consumed yet.
static FIRED: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

fn bit(vector: u8) -> (usize, u64) {
    (vector as usize / 64, 1 << (vector % 64))
}

/// The interrupt handler of every sleeper's vector.
fn note_fired(vector: u8) {
    let (word, mask) = bit(vector);
    FIRED[word].fetch_or(mask, Ordering::SeqCst);
}

fn fired(vector: u8) -> bool {
    let (word, mask) = bit(vector);
    FIRED[word].load(Ordering::SeqCst) & mask != 0
}

fn take_fired(vector: u8) -> bool {
    let (word, mask) = bit(vector);
    FIRED[word].fetch_and(!mask, Ordering::SeqCst) & mask != 0
}

/// The kernel's clock (ns) as this vCPU reads it.
pub fn clock_ns(tsc_khz: u64) -> u64 {
    timer::clock_ns(crate::arch::rdtsc(), tsc_khz)
}

/// A timer, the port it signals and the vector that port is bound to on
/// one vCPU: what a partition needs to sleep with a timeout.
#[derive(Clone, Copy, Debug)]
pub struct Sleeper {
    /// The timer (CONTROL).
    pub timer: SlotHandle,
    /// Its port (BIND, SIGNAL).
    pub port: SlotHandle,
    /// The vector the port raises.
    pub vector: u8,
    tsc_khz: u64,
}

impl Sleeper {
    /// Creates a port, binds it to `vector` of `vcpu` (a capability with
    /// CONTROL on the vCPU that will sleep), and a timer on it. `tsc_khz`
    /// is the boot page's (the kernel's clock is derived from it).
    pub fn new(vcpu: SlotHandle, vector: u8, tsc_khz: u64) -> Result<Sleeper, Status> {
        if tsc_khz == 0 {
            return Err(Status::InvalidState);
        }
        set_interrupt_handler(vector, note_fired).map_err(|_| Status::InvalidArgument)?;
        let [port, ..] = hypercall(&Call::PortCreate)?;
        let port = SlotHandle::from_raw(port)?;
        hypercall(&Call::PortBind { port, vcpu, vector })?;
        let [timer, ..] = hypercall(&Call::TimerCreate { port })?;
        let timer = SlotHandle::from_raw(timer)?;
        take_fired(vector);
        Ok(Sleeper {
            timer,
            port,
            vector,
            tsc_khz,
        })
    }

    /// The kernel's clock now (ns), read from this vCPU's TSC.
    pub fn now_ns(&self) -> u64 {
        clock_ns(self.tsc_khz)
    }

    fn set(&self, deadline: u64, period: u64, flags: u64) -> Result<u64, Status> {
        let [at, ..] = hypercall(&Call::TimerSet {
            timer: self.timer,
            deadline,
            period,
            flags,
        })?;
        Ok(at)
    }

    /// Sleeps `ns` nanoseconds (at least); returns the deadline it woke at
    /// or after, on the kernel's clock.
    pub fn sleep_ns(&self, ns: u64) -> Result<u64, Status> {
        let deadline = self.set(ns, 0, 0)?;
        self.wait_until_or_deadline(deadline, || false)?;
        Ok(deadline)
    }

    /// Waits (sleeping) until `done()` holds or `ns` nanoseconds passed:
    /// `Ok(true)` when `done()` held first, `Ok(false)` on the timeout.
    /// `done` is checked with interrupts off, after every interrupt.
    pub fn wait_until_or_timeout(
        &self,
        ns: u64,
        done: impl FnMut() -> bool,
    ) -> Result<bool, Status> {
        let deadline = self.set(ns, 0, 0)?;
        self.wait_until_or_deadline(deadline, done)
    }

    /// As [`Sleeper::wait_until_or_timeout`] with the timer already set
    /// to `deadline` (absolute, on the kernel's clock).
    fn wait_until_or_deadline(
        &self,
        deadline: u64,
        mut done: impl FnMut() -> bool,
    ) -> Result<bool, Status> {
        loop {
            let mut woke = false;
            wait_until(|| {
                if done() {
                    return true;
                }
                woke = fired(self.vector);
                woke
            });
            if !woke {
                hypercall(&Call::TimerCancel { timer: self.timer })?;
                self.acknowledge()?;
                return Ok(true);
            }
            self.acknowledge()?;
            if self.now_ns() >= deadline {
                return Ok(false);
            }
            // Early: a signal of an earlier wait. Sleep on.
            self.set(deadline, 0, timer::ABSOLUTE)?;
        }
    }

    /// Arms the timer (one-shot) `ns` from now, without waiting; returns
    /// its deadline.
    pub fn set_in(&self, ns: u64) -> Result<u64, Status> {
        self.set(ns, 0, 0)
    }

    /// Arms the timer (one-shot) at `deadline` on the kernel's clock,
    /// without waiting (a deadline already past fires at once).
    pub fn set_at(&self, deadline: u64) -> Result<u64, Status> {
        self.set(deadline, 0, timer::ABSOLUTE)
    }

    /// Whether the timer's signal arrived and was not consumed yet.
    pub fn signalled(&self) -> bool {
        fired(self.vector)
    }

    /// Consumes a signal and re-arms the port (a signal that came in
    /// between is delivered again at once).
    pub fn acknowledge(&self) -> Result<(), Status> {
        take_fired(self.vector);
        hypercall(&Call::Acknowledge { slot: self.port }).map(|_| ())
    }

    /// Arms the timer to fire in `first_ns`, then every `period_ns`
    /// (at least [`timer::MIN_PERIOD_NS`]); returns the first deadline.
    pub fn start_periodic(&self, first_ns: u64, period_ns: u64) -> Result<u64, Status> {
        self.set(first_ns, period_ns, 0)
    }

    /// Sleeps until the timer's next signal, then acknowledges it.
    pub fn wait_signal(&self) -> Result<(), Status> {
        wait_until(|| fired(self.vector));
        self.acknowledge()
    }

    /// Disarms the timer; whether it was armed.
    pub fn cancel(&self) -> Result<bool, Status> {
        let [armed, ..] = hypercall(&Call::TimerCancel { timer: self.timer })?;
        Ok(armed == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_noted_per_vector_and_consumed_once() {
        note_fired(0x40);
        note_fired(0xff);
        assert!(fired(0x40) && fired(0xff) && !fired(0x41));
        assert!(take_fired(0x40));
        assert!(!take_fired(0x40), "consumed");
        assert!(take_fired(0xff));
        assert!(!fired(0xff));
    }
}
