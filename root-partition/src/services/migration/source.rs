//! [`ChildSource`]: a running child as the engine's [`Source`], through
//! hypercalls (dirty log, dirty fetch, memory reads through the scratch
//! page, pause and resume, vCPU states) and an auto-converge throttle.

use alloc::vec::Vec;

use ipc::hypercall::{Call, SlotHandle, Status};

use super::BusHost;
use super::quick::SaveExtras;
use crate::hv::Kernel;
use crate::migrate::engine::DeviceOut;
use crate::migrate::{PAGE, Source};
use crate::partition::Child;

/// The duty cycle of the auto-converge throttle.
const THROTTLE_PERIOD_MS: u64 = 10;

/// The child being migrated or saved, through hypercalls.
pub struct ChildSource<'a, K: Kernel, B: BusHost> {
    kernel: &'a K,
    bus: &'a B,
    partition: SlotHandle,
    vcpus: Vec<SlotHandle>,
    pages: u64,
    /// Pages the root shares with the child (sent again in the blackout).
    shared: Vec<(u64, u64)>,
    index: usize,
    paused: bool,
    /// Auto-converge: percent of each [`THROTTLE_PERIOD_MS`] the vCPUs are
    /// held paused, whether they are now, and when that flips.
    throttle: u8,
    held: bool,
    flip_at: u64,
    /// A save's extra device records ([`super::quick`]).
    pub extras: Option<SaveExtras>,
    /// vCPUs found halted for good at the pause (not resumed on abort).
    stopped: Vec<usize>,
}

impl<'a, K: Kernel, B: BusHost> ChildSource<'a, K, B> {
    /// The source for `child` (bus `index`).
    pub fn new(kernel: &'a K, bus: &'a B, child: &Child, index: usize) -> Self {
        ChildSource {
            kernel,
            bus,
            partition: child.partition,
            vcpus: child.vcpus.iter().flatten().copied().collect(),
            pages: child.pages,
            shared: Vec::new(),
            index,
            paused: false,
            throttle: 0,
            held: false,
            flip_at: 0,
            extras: None,
            stopped: Vec::new(),
        }
    }

    /// Whether the engine left the child paused.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Runs the child again after a save that could not be completed.
    pub fn resume_after_save(&mut self) -> Result<(), Status> {
        Source::resume(self)
    }

    fn set_vcpus(&self, run: bool) -> Result<(), Status> {
        for v in &self.vcpus {
            let c = if run {
                Call::VcpuResume { vcpu: *v }
            } else {
                Call::VcpuPause { vcpu: *v }
            };
            match self.kernel.call(&c) {
                // A vCPU halted for good stays so.
                Ok(_) | Err(Status::InvalidState) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Holds or releases the vCPUs as the throttle's duty cycle says
    /// (called for every page read: the copy loop is the clock).
    fn duty_cycle(&mut self) -> Result<(), Status> {
        if self.throttle == 0 || self.paused {
            return Ok(());
        }
        let now = self.kernel.ticks();
        if now < self.flip_at {
            return Ok(());
        }
        let period = self.kernel.tsc_khz() * THROTTLE_PERIOD_MS;
        let held = u64::from(self.throttle);
        self.held = !self.held;
        self.set_vcpus(!self.held)?;
        let share = if self.held { held } else { 100 - held };
        self.flip_at = now + period * share / 100;
        Ok(())
    }
}

impl<K: Kernel, B: BusHost> Source for ChildSource<'_, K, B> {
    type Error = Status;

    fn pages(&self) -> u64 {
        self.pages
    }

    fn vcpus(&self) -> u16 {
        self.vcpus.len() as u16
    }

    fn log_dirty(&mut self, on: bool) -> Result<(), Status> {
        self.kernel
            .call(&Call::DirtyLog {
                partition: self.partition,
                enable: on,
            })
            .map(|_| ())
    }

    fn fetch_dirty(&mut self, first: u64, bits: &mut [u64]) -> Result<(), Status> {
        // One call covers a page of bitmap: 32,768 pages.
        for (chunk, words) in bits.chunks_mut(512).enumerate() {
            let first_page = first + chunk as u64 * 32_768;
            let pages = (words.len() as u64 * 64).min(self.pages.saturating_sub(first_page));
            if pages == 0 {
                words.fill(0);
                continue;
            }
            let partition = self.partition;
            self.kernel.scratch(|s| {
                let buffer = s.address();
                s.call(&Call::DirtyFetch {
                    partition,
                    first_gpa: first_page * 4096,
                    pages,
                    buffer,
                })?;
                let bitmap = s.page();
                for (i, w) in words.iter_mut().enumerate() {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&bitmap[i * 8..i * 8 + 8]);
                    *w = u64::from_le_bytes(b);
                }
                Ok(())
            })?;
        }
        if self.paused {
            // What the root wrote is not in the child's log.
            for &(gpa, count) in &self.shared {
                for page in gpa / 4096..gpa / 4096 + count {
                    if let Some(rel) = page.checked_sub(first)
                        && let Some(w) = bits.get_mut((rel / 64) as usize)
                    {
                        *w |= 1 << (rel % 64);
                    }
                }
            }
        }
        Ok(())
    }

    fn read_page(&mut self, page: u64, buf: &mut [u8; PAGE]) -> Result<(), Status> {
        self.duty_cycle()?;
        if page == 0 {
            // Never mapped in a child.
            buf.fill(0);
            return Ok(());
        }
        let partition = self.partition;
        self.kernel.scratch(|s| {
            let buffer = s.address();
            s.call(&Call::MemoryRead {
                partition,
                gpa: page * 4096,
                buffer,
            })?;
            buf.copy_from_slice(s.page());
            Ok(())
        })
    }

    fn throttle(&mut self, percent: u8) -> Result<(), Status> {
        self.throttle = percent.min(99);
        if percent == 0 && self.held {
            self.held = false;
            self.set_vcpus(true)?;
        }
        self.flip_at = 0;
        Ok(())
    }

    fn pause(&mut self) -> Result<(), Status> {
        self.stopped.clear();
        for (i, v) in self.vcpus.iter().enumerate() {
            match self.kernel.call(&Call::VcpuPause { vcpu: *v }) {
                Ok(_) => {}
                // Halted for good (its workload ended): nothing to pause.
                Err(Status::InvalidState) => self.stopped.push(i),
                Err(e) => {
                    for (j, v) in self.vcpus[..i].iter().enumerate() {
                        if !self.stopped.contains(&j) {
                            let _ = self.kernel.call(&Call::VcpuResume { vcpu: *v });
                        }
                    }
                    return Err(e);
                }
            }
        }
        self.paused = true;
        // Shared pages may have changed since the root mapped them.
        self.shared = self.bus.shared_pages(self.index);
        Ok(())
    }

    fn resume(&mut self) -> Result<(), Status> {
        self.paused = false;
        let mut result = Ok(());
        for (i, v) in self.vcpus.iter().enumerate() {
            if self.stopped.contains(&i) {
                continue;
            }
            if let Err(e) = self.kernel.call(&Call::VcpuResume { vcpu: *v }) {
                result = Err(e);
            }
        }
        result
    }

    fn vcpu_state(&mut self, index: u16, buf: &mut [u8]) -> Result<usize, Status> {
        let vcpu = *self
            .vcpus
            .get(index as usize)
            .ok_or(Status::InvalidArgument)?;
        let len = ipc::vcpu_state::WORDS * 8;
        let out = buf.get_mut(..len).ok_or(Status::InvalidArgument)?;
        self.kernel.scratch(|s| {
            let buffer = s.address();
            s.call(&Call::VcpuGetState { vcpu, buffer })?;
            out.copy_from_slice(&s.page()[..len]);
            Ok(len)
        })
    }

    fn device_states(&mut self, out: &mut DeviceOut<'_>) -> Result<(), Status> {
        // Live on one node the child's bus stays in the root and follows it
        // at the handover (its rings and buffers are in the copied memory);
        // a save records it.
        if let Some(extras) = &self.extras {
            // A refused record stops the engine, which reports it.
            let _ = extras.emit(self.bus, out);
        }
        Ok(())
    }
}
