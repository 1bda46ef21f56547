//! The processor loop: every processor picks the next vCPU from its run
//! queue, enters guest mode, hands each exit to the kernel core, and
//! preempts at the end of a time slice. The kernel core's state sits behind
//! one lock, held only between guest entries, never in guest mode. What to
//! do at each hold is decided by the host-tested `microkernel::processor`;
//! this file adds the hardware: guest entry, the null hypercall's fast
//! path, idling, and the end of the run.

use core::sync::atomic::{AtomicU64, Ordering};

use ipc::exit::ExitCode;
use ipc::markers;
use microkernel::kernel::{Kernel, Outcome};
use microkernel::object::ObjectId;
use microkernel::processor::{After, RunEnd};
use microkernel::sched::SLICE_TICKS;
use microkernel::svm::exit::Exit;
use microkernel::svm::vmcb::{GuestRegs, Vmcb, offset};
use spin::Mutex;

use crate::arch::machine::HwMachine;
use crate::arch::{apic, cpu, ioapic, memory, msi, percpu, power, virt};

/// The kernel core, once the root partition exists.
pub static KERNEL: Mutex<Option<Kernel>> = Mutex::new(None);

/// Null hypercalls measured from the VM exit to the next VM entry (the
/// backend's own stamps, `virt::Stamps`), their total and shortest path (TSC ticks).
static NULL_CALLS: AtomicU64 = AtomicU64::new(0);
static NULL_TOTAL: AtomicU64 = AtomicU64::new(0);
static NULL_MIN: AtomicU64 = AtomicU64::new(u64::MAX);

/// Prints the microkernel's own null-hypercall path, if any were made.
fn report_hypercall_path() {
    let calls = NULL_CALLS.load(Ordering::Relaxed);
    if let Some(mean) = NULL_TOTAL.load(Ordering::Relaxed).checked_div(calls) {
        let min = NULL_MIN.load(Ordering::Relaxed);
        kprintln!("{}", markers::KernelHypercallPath { min, mean, calls });
    }
}

fn with_kernel<R>(f: impl FnOnce(&mut Kernel, &mut HwMachine) -> R) -> R {
    let mut guard = KERNEL.lock();
    let kernel = guard
        .as_mut()
        .expect("the processor loop runs after the kernel core exists");
    let result = f(kernel, &mut HwMachine);
    apply_routes(kernel);
    result
}

fn apply_routes(kernel: &mut Kernel) {
    let bsp = percpu::apic_id_of(0).unwrap_or(0);
    for (gsi, on) in kernel.pending_routes.drain(..) {
        ioapic::route(gsi, on, bsp);
    }
}

/// The kernel's clock (`ipc::hypercall::timer`): TSC-derived nanoseconds,
/// or timer ticks if the TSC was never calibrated.
fn clock_ns() -> u64 {
    match apic::tsc_khz() {
        0 => percpu::global_ticks().saturating_mul(u64::from(crate::cpus::TICK_MS) * 1_000_000),
        khz => ipc::hypercall::timer::clock_ns(cpu::rdtsc(), u64::from(khz)),
    }
}

/// Hands device interrupts (lines and messages) that fired to the kernel
/// core and updates its clocks (ticks, and the timers' clock, which fires
/// due timers).
fn deliver_device_interrupts(k: &mut Kernel, m: &mut HwMachine) {
    k.ticks = percpu::global_ticks();
    k.advance_clock(m, clock_ns());
    let fired = ioapic::take_fired();
    for gsi in 0..ioapic::LINES {
        if fired & (1 << gsi) != 0 {
            k.device_interrupt(m, gsi);
        }
    }
    msi::take_fired(|vector| {
        k.message_interrupt(m, vector);
    });
}

/// Runs vCPUs on this processor forever.
pub fn processor_loop(cpu_index: u32) -> ! {
    while KERNEL.lock().is_none() {
        cpu::wait_for_interrupt();
    }
    loop {
        let picked = with_kernel(|k, m| {
            deliver_device_interrupts(k, m);
            k.pick(cpu_index)
        });
        match picked {
            Some(vcpu) => run_vcpu(cpu_index, vcpu),
            None => cpu::wait_for_interrupt(),
        }
    }
}

/// What a vCPU needs to enter guest mode: its VMCB, registers and priority.
type EntryContext = (u64, GuestRegs, u8);

/// What the processor does after `after` (under the kernel lock): the
/// entry context when the vCPU enters again.
fn step_of(k: &Kernel, vcpu: ObjectId, after: After) -> Step {
    match after {
        After::Enter => match k.objects.vcpu(vcpu) {
            Some(v) => Step::Enter((v.vmcb, v.regs, v.priority)),
            None => Step::Off,
        },
        After::Leave => Step::Leave,
        After::Off => Step::Off,
        After::Wait(outcome) => Step::Wait(outcome),
    }
}

/// What the processor does after an exit was handled.
enum Step {
    /// Enter the guest again.
    Enter(EntryContext),
    /// Leave the vCPU (it blocked, yielded or was preempted).
    Leave,
    /// The vCPU stopped or was paused.
    Off,
    /// Finish a hypercall that waits for other processors, then go on.
    Wait(Outcome),
}

/// Runs one vCPU until it blocks, stops, yields or its slice ends. One
/// lock hold per exit: handling it and preparing the next entry.
fn run_vcpu(cpu_index: u32, vcpu: ObjectId) {
    let me = percpu::current();
    let host_vmcb = me.host_vmcb;
    let mut slice_start = me.ticks.load(Ordering::Relaxed);
    // Set at a null-hypercall exit: the time-stamp counter at the exit.
    let mut null_exit_at: Option<u64> = None;
    let mut step = with_kernel(|k, m| {
        let after = k.enter_or_off(m, vcpu);
        step_of(k, vcpu, after)
    });
    loop {
        let (vmcb_pa, mut regs, priority) = match step {
            Step::Enter(context) => context,
            Step::Leave => return,
            Step::Off => {
                after_off(vcpu);
                return;
            }
            Step::Wait(outcome) => {
                step = wait(vcpu, outcome);
                continue;
            }
        };
        let vmcb: &mut Vmcb = memory::vmcb_at(vmcb_pa);
        let kicks = me.kicks.load(Ordering::Relaxed);
        let stamps = virt::enter(vmcb, &mut regs, host_vmcb);
        if let Some(exit_at) = null_exit_at.take() {
            let path = stamps.entered.wrapping_sub(exit_at);
            NULL_CALLS.fetch_add(1, Ordering::Relaxed);
            NULL_TOTAL.fetch_add(path, Ordering::Relaxed);
            NULL_MIN.fetch_min(path, Ordering::Relaxed);
        }
        let exit_at = stamps.exited;
        let exit = Exit::decode(
            vmcb.read_u64(offset::EXIT_CODE),
            vmcb.read_u64(offset::EXIT_INFO1),
            vmcb.read_u64(offset::EXIT_INFO2),
        );
        let null_call =
            exit == Exit::Vmmcall && vmcb.read_u64(offset::RAX) == ipc::hypercall::number::NULL;
        let slice_over = me.ticks.load(Ordering::Relaxed) - slice_start >= SLICE_TICKS;
        // The fast path: a null hypercall changes no kernel state, so unless
        // something needs the kernel's attention (a kick from another
        // processor, a device interrupt, the end of the slice) the vCPU goes
        // straight back without the lock.
        if null_call
            && !slice_over
            && me.kicks.load(Ordering::Relaxed) == kicks
            && !ioapic::any_fired()
            && !msi::any_fired()
        {
            vmcb.write_u64(offset::RAX, 0);
            (regs.rdi, regs.rsi, regs.rdx) = (0, 0, 0);
            let rip = vmcb.read_u64(offset::RIP);
            vmcb.write_u64(offset::RIP, rip.wrapping_add(3));
            null_exit_at = Some(exit_at);
            step = Step::Enter((vmcb_pa, regs, priority));
            continue;
        }
        // Everything else sees the vCPU's whole state (VMX left part of it
        // in the VMCS, which only this processor can read).
        virt::complete(vmcb);
        step = with_kernel(|k, m| {
            deliver_device_interrupts(k, m);
            if let Some(v) = k.objects.vcpu_mut(vcpu) {
                v.regs = regs;
            }
            let after = k.after_exit(m, cpu_index, vcpu, exit, slice_over, priority);
            step_of(k, vcpu, after)
        });
        if matches!(step, Step::Enter(_)) {
            if null_call {
                null_exit_at = Some(exit_at);
            }
            // The slice ended but nobody else wants the processor: the vCPU
            // keeps it for a new slice (else every later exit would take the
            // locked path as "slice over").
            if slice_over {
                slice_start = me.ticks.load(Ordering::Relaxed);
            }
        }
    }
}

/// Finishes a hypercall that had to wait for other processors; what the
/// processor does next.
fn wait(caller: ObjectId, outcome: Outcome) -> Step {
    while !with_kernel(|k, _| k.wait_over(caller, outcome)) {
        // Stay off the lock a while: the processor we wait for needs it.
        for _ in 0..1000 {
            core::hint::spin_loop();
        }
    }
    with_kernel(|k, m| {
        let after = k.finish_wait(m, caller, outcome);
        step_of(k, caller, after)
    })
}

/// A vCPU left for good or was paused: if it was the root's and the root
/// has stopped, the machine's run ends.
fn after_off(vcpu: ObjectId) {
    match with_kernel(|k, _| k.run_end(vcpu)) {
        Some(RunEnd::PoweredOff) => {
            report_hypercall_path();
            kprintln!("{}", markers::KERNEL_POWER_OFF);
            power::exit(ExitCode::Success)
        }
        Some(RunEnd::RootFault) => {
            kprintln!("the root partition stopped; shutting down");
            power::exit(ExitCode::RootFault)
        }
        None => {}
    }
}
