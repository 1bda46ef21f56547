//! What happens around guest mode: preparing a vCPU's entry (TLB flush,
//! virtual interrupt injection) and handling each #VMEXIT.
//!
//! # Invariants
//! Every exit either advances the guest past the instruction it emulated,
//! injects an exception, blocks or stops the vCPU; the kernel never resumes
//! a guest at an instruction it failed to handle.

use ipc::hypercall::{Registers, StopReason};
use ipc::markers::NestedPageFault;

use super::{Kernel, Outcome};
use crate::machine::{Machine, Report};
use crate::object::ObjectId;
use crate::object::vcpu::State;
use crate::svm::exit::{Exit, IoAccess};
use crate::svm::vmcb::{Vmcb, mode, offset};

const INVALID_OPCODE: u8 = 6;
const GENERAL_PROTECTION: u8 = 13;
const EFER_MSR: u32 = 0xc000_0080;
/// EFER bits a partition may change: SCE and NXE.
const EFER_GUEST_WRITABLE: u64 = 1 | (1 << 11);
const RFLAGS_IF: u64 = 1 << 9;

/// What the processor loop does after an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Enter the guest again.
    Resume,
    /// The vCPU gave up the processor: requeue it and pick again.
    Yield,
    /// The vCPU waits for an interrupt (off the run queue).
    Blocked,
    /// The vCPU stopped (halted with interrupts off, or its partition stopped or paused it).
    Off,
    /// A hypercall must wait for other processors (see [`Outcome`]).
    Wait(Outcome),
}

/// What an entry does about a vCPU's pending virtual interrupts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Nothing now: nothing is pending, or the vector comes at the next
    /// exit.
    Later,
    /// Inject this vector (the highest pending) at this entry.
    Inject(u8),
    /// Ask for the interrupt-window exit: the processor exits as soon as
    /// the guest can take an interrupt, and that exit injects the vector.
    Window,
}

/// Decides what an entry does about the pending vectors, the highest
/// being `highest`: `queued` when an event is already queued for this
/// entry (an exception, or an event whose delivery an exit interrupted),
/// `rflags` and `shadow` the guest's RFLAGS and interrupt shadow.
///
/// - A guest that can take an interrupt gets the highest vector now.
/// - With an event queued the vector waits for the next exit (one event
///   per entry; the window is not asked for beside it either).
/// - With interrupts off (RFLAGS.IF clear) the window is asked for: the
///   vector comes as soon as the guest turns them on (STI, POPF, IRET),
///   after STI's one-instruction shadow.
/// - In an interrupt shadow with interrupts on (an exit right after STI or
///   MOV SS) the window is not asked for: the shadow ends with the next
///   instruction and the exit after it brings the vector (for `STI; HLT`,
///   the waiting idiom, the HLT exit at once). Asking for it there relies
///   on VMRUN honouring the VMCB's interrupt-shadow field, and the SVM of
///   QEMU 7.2 does not: the window exit then comes before the HLT, the
///   vector is taken there, its handler returns into the HLT and the vCPU
///   sleeps with its wake-up spent (the root waiting for a disk completion
///   for good: `storage_hot_add_remove_smp1` hung in about a quarter of its
///   runs so).
pub(crate) fn delivery(queued: bool, rflags: u64, shadow: bool, highest: Option<u8>) -> Delivery {
    let Some(vector) = highest else {
        return Delivery::Later;
    };
    let interrupts_on = rflags & RFLAGS_IF != 0;
    match (queued, interrupts_on, shadow) {
        (true, _, _) => Delivery::Later,
        (false, true, false) => Delivery::Inject(vector),
        (false, false, _) => Delivery::Window,
        (false, true, true) => Delivery::Later,
    }
}

impl Kernel {
    /// Prepares `vcpu` for entry on its processor. Returns false if it must
    /// not run (its partition stopped or it was paused meanwhile); it is
    /// then taken off the processor.
    pub fn prepare_entry(&mut self, m: &mut impl Machine, vcpu: ObjectId) -> bool {
        if !self.reaping.is_empty() {
            self.reap(m);
        }
        if let Some(off) = self.take_off_request(vcpu) {
            if let Some(v) = self.objects.vcpu_mut(vcpu) {
                v.state = off;
            }
            return false;
        }
        let Some(v) = self.objects.vcpu_mut(vcpu) else {
            return false;
        };
        let vmcb = m.vmcb(v.vmcb);
        if core::mem::take(&mut v.flush_tlb) {
            vmcb.write_u8(offset::TLB_CONTROL, 1);
        }
        let delivery = delivery(
            vmcb.read_u64(offset::EVENT_INJECTION) & (1 << 31) != 0,
            vmcb.read_u64(offset::RFLAGS),
            vmcb.read_u64(offset::INTERRUPT_SHADOW) & 1 != 0,
            v.highest_pending(),
        );
        if let Delivery::Inject(vector) = delivery {
            v.clear(vector);
            vmcb.write_u64(offset::EVENT_INJECTION, vector as u64 | (1 << 31));
        }
        vmcb.request_interrupt_window(delivery == Delivery::Window);
        true
    }

    /// Handles an exit of `vcpu` on `cpu`.
    pub fn handle_exit(&mut self, m: &mut impl Machine, vcpu: ObjectId, exit: Exit) -> Next {
        let Some(v) = self.objects.vcpu_mut(vcpu) else {
            return Next::Off;
        };
        v.exits = v.exits.wrapping_add(1);
        let vmcb_pa = v.vmcb;
        m.vmcb(vmcb_pa).write_u8(offset::TLB_CONTROL, 0);
        let Some(partition) = self.partition_of(vcpu) else {
            return Next::Off;
        };
        match exit {
            Exit::Interrupt | Exit::Nmi | Exit::InterruptWindow => Next::Resume,
            Exit::Cpuid => {
                self.emulate_cpuid(m, vcpu);
                Next::Resume
            }
            Exit::Hlt => self.halt(m, vcpu, partition),
            Exit::Io(io) => {
                if Some(partition) == self.root && crate::chipset::is_config_port(io.port) {
                    self.emulate_config_port(m, vmcb_pa, io);
                } else {
                    emulate_io(m.vmcb(vmcb_pa), io);
                }
                Next::Resume
            }
            Exit::Msr { write } => {
                let (rcx, rdx) = match self.objects.vcpu(vcpu) {
                    Some(v) => (v.regs.rcx, v.regs.rdx),
                    None => return Next::Off,
                };
                if let Some(rdx_out) = emulate_msr(m.vmcb(vmcb_pa), write, rcx as u32, rdx)
                    && let Some(v) = self.objects.vcpu_mut(vcpu)
                {
                    v.regs.rdx = rdx_out;
                }
                Next::Resume
            }
            Exit::Vmmcall => self.hypercall(m, vcpu, partition),
            Exit::SvmInstruction(_) | Exit::Unavailable(_) => {
                m.vmcb(vmcb_pa).inject_exception(INVALID_OPCODE, None);
                Next::Resume
            }
            Exit::CacheFlush => {
                self.ignore_cache_flush(m, vmcb_pa, partition);
                Next::Resume
            }
            Exit::NestedPageFault { gpa, error } => {
                let name = self.partition_name(partition);
                m.console_report(format_args!(
                    "{}",
                    NestedPageFault {
                        partition: name.as_str(),
                        gpa
                    }
                ));
                let rip = m.vmcb(vmcb_pa).read_u64(offset::RIP);
                let access = if error & 0x10 != 0 {
                    "execute"
                } else if error & 0x2 != 0 {
                    "write"
                } else {
                    "read"
                };
                m.console_report(format_args!(
                    "  rip={rip:#x} access={access} error={error:#x}"
                ));
                self.fault(m, vcpu, partition, StopReason::NestedPageFault, gpa)
            }
            Exit::Shutdown => {
                let rip = m.vmcb(vmcb_pa).read_u64(offset::RIP);
                let name = self.partition_name(partition);
                m.console_report(format_args!(
                    "partition {} triple-faulted at rip={rip:#x}",
                    name.as_str()
                ));
                self.fault(m, vcpu, partition, StopReason::TripleFault, rip)
            }
            Exit::InvalidState => {
                let name = self.partition_name(partition);
                m.console_report(format_args!(
                    "VMRUN refused the state of partition {}",
                    name.as_str()
                ));
                self.fault(m, vcpu, partition, StopReason::InvalidState, 0)
            }
            Exit::Other(code) => {
                let rip = m.vmcb(vmcb_pa).read_u64(offset::RIP);
                let name = self.partition_name(partition);
                m.console_report(format_args!(
                    "partition {}: unhandled exit {code:#x} at rip={rip:#x}",
                    name.as_str()
                ));
                self.fault(m, vcpu, partition, StopReason::UnhandledExit, code)
            }
        }
    }

    /// WBINVD or INVD: completes as a no-op. Partitions' memory is
    /// write-back and coherent, so neither has anything to do for them;
    /// on the processor WBINVD would stall every cache of the machine and
    /// INVD would throw away the hypervisor's dirty lines. The first one
    /// of each partition is reported, the others counted.
    fn ignore_cache_flush(&mut self, m: &mut impl Machine, vmcb: u64, partition: ObjectId) {
        let v = m.vmcb(vmcb);
        let rip = v.read_u64(offset::RIP);
        // Both are two bytes (0F 09, 0F 08).
        v.write_u64(offset::RIP, rip.wrapping_add(2));
        let Some(p) = self.objects.partition_mut(partition) else {
            return;
        };
        p.cache_flushes = p.cache_flushes.wrapping_add(1);
        if p.cache_flushes == 1 {
            let name = p.name;
            m.console_report(format_args!(
                "{}",
                ipc::platform::CacheFlushIgnored {
                    partition: name.as_str(),
                    rip
                }
            ));
        }
    }

    fn partition_name(&self, partition: ObjectId) -> ipc::hypercall::Name {
        self.objects
            .partition(partition)
            .map_or(ipc::hypercall::Name::new("?"), |p| p.name)
    }

    fn fault(
        &mut self,
        m: &mut impl Machine,
        vcpu: ObjectId,
        partition: ObjectId,
        reason: StopReason,
        detail: u64,
    ) -> Next {
        let name = self.partition_name(partition);
        m.console_report(format_args!(
            "partition {} stopped: {reason:?}",
            name.as_str()
        ));
        self.stop_partition(m, partition, reason, detail);
        if let Some(v) = self.objects.vcpu_mut(vcpu) {
            v.state = State::Stopped;
            v.pause_requested = false;
        }
        Next::Off
    }

    fn halt(&mut self, m: &mut impl Machine, vcpu: ObjectId, partition: ObjectId) -> Next {
        let Some(v) = self.objects.vcpu_mut(vcpu) else {
            return Next::Off;
        };
        let vmcb = m.vmcb(v.vmcb);
        if vmcb.read_u64(offset::RFLAGS) & RFLAGS_IF == 0 {
            // HLT with interrupts off: this vCPU has stopped for good.
            v.state = State::Stopped;
            v.pause_requested = false;
            let all_stopped = self.objects.partition(partition).is_some_and(|p| {
                p.vcpus.iter().all(|id| {
                    self.objects
                        .vcpu(*id)
                        .is_none_or(|v| matches!(v.state, State::Stopped))
                })
            });
            if all_stopped {
                self.stop_partition(m, partition, StopReason::Halted, 0);
            }
            return Next::Off;
        }
        let rip = vmcb.read_u64(offset::RIP);
        vmcb.write_u64(offset::RIP, rip.wrapping_add(1));
        // The STI shadow covered the HLT; past it, interrupts may be taken
        // (VMX reports the shadow at a HLT exit, and would keep it).
        vmcb.write_u64(offset::INTERRUPT_SHADOW, 0);
        if v.highest_pending().is_some() {
            return Next::Resume;
        }
        // A pause or stop asked meanwhile wins over waiting.
        match self.leave_processor(vcpu, State::Blocked) {
            Some(State::Blocked) => Next::Blocked,
            _ => Next::Off,
        }
    }

    fn emulate_cpuid(&mut self, m: &mut impl Machine, vcpu: ObjectId) {
        let Some(v) = self.objects.vcpu_mut(vcpu) else {
            return;
        };
        let vmcb = m.vmcb(v.vmcb);
        let leaf = vmcb.read_u64(offset::RAX) as u32;
        let subleaf = v.regs.rcx as u32;
        let mut r = m.cpuid(leaf, subleaf);
        match leaf {
            // Hypervisor present; VMX and MONITOR/MWAIT hidden.
            1 => r[2] = (r[2] | (1 << 31)) & !((1 << 5) | (1 << 3)),
            0x4000_0000 => r = [0x4000_0001, word(b"capv"), word(b"isor"), word(b"\0\0\0\0")],
            // Features: bit 0 = hypercalls by VMMCALL, bit 1 = dirty logging, bit 2 = ports.
            0x4000_0001 => r = [0b111, ipc::hypercall::number::COUNT as u32, 0, 0],
            0x8000_0001 => r[2] &= !(1 << 2),
            0x8000_000a => r = [0; 4],
            _ => {}
        }
        let vmcb = m.vmcb(v.vmcb);
        vmcb.write_u64(offset::RAX, r[0] as u64);
        v.regs.rbx = r[1] as u64;
        v.regs.rcx = r[2] as u64;
        v.regs.rdx = r[3] as u64;
        let rip = vmcb.read_u64(offset::RIP);
        vmcb.write_u64(offset::RIP, rip.wrapping_add(2));
    }

    /// Reads a hypercall's registers, performs it and writes the results.
    fn hypercall(&mut self, m: &mut impl Machine, vcpu: ObjectId, partition: ObjectId) -> Next {
        let Some(v) = self.objects.vcpu(vcpu) else {
            return Next::Off;
        };
        let vmcb_pa = v.vmcb;
        let rax = m.vmcb(vmcb_pa).read_u64(offset::RAX);
        let regs: Registers = [
            rax, v.regs.rdi, v.regs.rsi, v.regs.rdx, v.regs.r8, v.regs.r9, v.regs.r10,
        ];
        if let Some(p) = self.objects.partition_mut(partition) {
            p.hypercalls = p.hypercalls.wrapping_add(1);
        }
        let outcome = self.call(m, partition, vcpu, &regs);
        let vmcb = m.vmcb(vmcb_pa);
        let rip = vmcb.read_u64(offset::RIP);
        vmcb.write_u64(offset::RIP, rip.wrapping_add(3));
        match outcome {
            Ok(Outcome::Done(results)) => {
                self.complete(m, vcpu, Ok(results));
                Next::Resume
            }
            Ok(Outcome::Yield) => {
                self.complete(m, vcpu, Ok([0; 3]));
                Next::Yield
            }
            Ok(wait) => Next::Wait(wait),
            Err(status) => {
                self.complete(m, vcpu, Err(status));
                Next::Resume
            }
        }
    }

    /// Writes a hypercall's status and results into the caller's registers.
    pub fn complete(
        &mut self,
        m: &mut impl Machine,
        vcpu: ObjectId,
        result: Result<[u64; 3], ipc::hypercall::Status>,
    ) {
        let Some(v) = self.objects.vcpu_mut(vcpu) else {
            return;
        };
        let (status, results) = match result {
            Ok(r) => (0, r),
            Err(s) => (s as u64, [v.regs.rdi, v.regs.rsi, v.regs.rdx]),
        };
        m.vmcb(v.vmcb).write_u64(offset::RAX, status);
        v.regs.rdi = results[0];
        v.regs.rsi = results[1];
        v.regs.rdx = results[2];
    }
}

fn word(b: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*b)
}

/// An access to a port the partition does not own: reads see a floating
/// bus (all ones), writes are dropped.
fn emulate_io(vmcb: &mut Vmcb, io: IoAccess) {
    if io.input && !io.string {
        let mask: u64 = match io.size {
            1 => 0xff,
            2 => 0xffff,
            _ => 0xffff_ffff,
        };
        let rax = vmcb.read_u64(offset::RAX);
        vmcb.write_u64(offset::RAX, (rax & !mask) | mask);
    }
    vmcb.write_u64(offset::RIP, io.next_rip);
}

/// An intercepted MSR: EFER is emulated (SVME hidden and kept, only SCE and
/// NXE writable); every other MSR raises #GP. Returns RDX for a read.
fn emulate_msr(vmcb: &mut Vmcb, write: bool, msr: u32, rdx: u64) -> Option<u64> {
    if msr != EFER_MSR {
        vmcb.inject_exception(GENERAL_PROTECTION, Some(0));
        return None;
    }
    let efer = vmcb.read_u64(offset::EFER);
    let rip = vmcb.read_u64(offset::RIP);
    if write {
        let value = (rdx << 32) | (vmcb.read_u64(offset::RAX) & 0xffff_ffff);
        let fixed = efer & !(EFER_GUEST_WRITABLE | mode::EFER_SVME);
        if value & !EFER_GUEST_WRITABLE != fixed {
            vmcb.inject_exception(GENERAL_PROTECTION, Some(0));
            return None;
        }
        vmcb.write_u64(offset::EFER, value | mode::EFER_SVME);
        vmcb.write_u64(offset::RIP, rip.wrapping_add(2));
        None
    } else {
        let visible = efer & !mode::EFER_SVME;
        vmcb.write_u64(offset::RAX, visible & 0xffff_ffff);
        vmcb.write_u64(offset::RIP, rip.wrapping_add(2));
        Some(visible >> 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IF: u64 = RFLAGS_IF;

    #[test]
    fn a_vector_is_injected_when_the_guest_can_take_it_and_windowed_while_interrupts_are_off() {
        assert_eq!(delivery(false, 0x2 | IF, false, None), Delivery::Later);
        assert_eq!(
            delivery(false, 0x2 | IF, false, Some(0x51)),
            Delivery::Inject(0x51)
        );
        // Interrupts off: the window exit brings it, shadow or not.
        assert_eq!(delivery(false, 0x2, false, Some(0x51)), Delivery::Window);
        assert_eq!(delivery(false, 0x2, true, Some(0x51)), Delivery::Window);
        // An event already queued: the vector waits for the next exit.
        assert_eq!(delivery(true, 0x2 | IF, false, Some(0x51)), Delivery::Later);
        assert_eq!(delivery(true, 0x2, false, Some(0x51)), Delivery::Later);
    }

    #[test]
    fn no_window_is_asked_for_inside_an_sti_shadow() {
        // An exit right after STI: interrupts on, the shadow over the next
        // instruction. Neither injected nor windowed: the next exit brings
        // it (see `delivery`; `kernel::power`'s tests follow it through the
        // HLT exit).
        assert_eq!(delivery(false, 0x2 | IF, true, Some(0x78)), Delivery::Later);
    }
}
