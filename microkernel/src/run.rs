//! The processor loop: every processor picks the next vCPU from its run
//! queue, enters guest mode, hands each exit to the kernel core, and
//! preempts at the end of a time slice. The kernel core's state sits behind
//! one lock, held only between guest entries, never in guest mode.

use core::sync::atomic::{AtomicU64, Ordering};

use ipc::exit::ExitCode;
use ipc::hypercall::StopReason;
use ipc::markers;
use microkernel::kernel::{Kernel, Next, Outcome};
use microkernel::object::ObjectId;
use microkernel::object::partition::RunState;
use microkernel::sched::SLICE_TICKS;
use microkernel::svm::exit::Exit;
use microkernel::svm::vmcb::{GuestRegs, Vmcb, offset};
use spin::Mutex;

use crate::arch::machine::HwMachine;
use crate::arch::{cpu, ioapic, memory, percpu, power, virt};

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

/// Hands device interrupts that fired to the kernel core (and updates its clock).
fn deliver_device_interrupts(k: &mut Kernel, m: &mut HwMachine) {
    k.ticks = percpu::global_ticks();
    let fired = ioapic::take_fired();
    for gsi in 0..ioapic::LINES {
        if fired & (1 << gsi) != 0 {
            k.device_interrupt(m, gsi);
        }
    }
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

/// Prepares `vcpu`'s entry (under the kernel lock); `None` if it must not run.
fn entry_context(k: &mut Kernel, m: &mut HwMachine, vcpu: ObjectId) -> Option<EntryContext> {
    if !k.prepare_entry(m, vcpu) {
        return None;
    }
    k.objects.vcpu(vcpu).map(|v| (v.vmcb, v.regs, v.priority))
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
    let mut step = match with_kernel(|k, m| entry_context(k, m, vcpu)) {
        Some(context) => Step::Enter(context),
        None => Step::Off,
    };
    loop {
        let (vmcb_pa, mut regs, priority) = match step {
            Step::Enter(context) => context,
            Step::Leave => return,
            Step::Off => {
                after_off(vcpu);
                return;
            }
            Step::Wait(outcome) => {
                wait(vcpu, outcome);
                step = match with_kernel(|k, m| entry_context(k, m, vcpu)) {
                    Some(context) => Step::Enter(context),
                    None => Step::Off,
                };
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
            match k.handle_exit(m, vcpu, exit) {
                Next::Resume if slice_over && k.should_preempt(cpu_index, priority) => {
                    k.requeue(vcpu);
                    Step::Leave
                }
                Next::Resume => match entry_context(k, m, vcpu) {
                    Some(context) => Step::Enter(context),
                    None => Step::Off,
                },
                Next::Yield => {
                    k.requeue(vcpu);
                    Step::Leave
                }
                Next::Blocked => Step::Leave,
                Next::Off => Step::Off,
                Next::Wait(outcome) => Step::Wait(outcome),
            }
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

/// Finishes a hypercall that had to wait for other processors.
fn wait(caller: ObjectId, outcome: Outcome) {
    let until_off = |k: &Kernel| match outcome {
        Outcome::WaitVcpu(v) => !k.is_running(v),
        Outcome::WaitDestroy(p) => k.destroy_ready(p),
        _ => true,
    };
    while !with_kernel(|k, _| until_off(k)) {
        // Stay off the lock a while: the processor we wait for needs it.
        for _ in 0..1000 {
            core::hint::spin_loop();
        }
    }
    with_kernel(|k, m| {
        if let Outcome::WaitDestroy(p) = outcome {
            k.destroy_finish(m, p);
        }
        k.complete(m, caller, Ok([0; 3]));
    });
}

/// A vCPU left for good or was paused: if it was the root's and the root
/// has stopped, the machine's run ends.
fn after_off(vcpu: ObjectId) {
    let root_state = with_kernel(|k, _| {
        let root = k.root?;
        (k.partition_of(vcpu) == Some(root)).then(|| k.objects.partition(root).map(|p| p.state))?
    });
    match root_state {
        Some(RunState::Stopped(StopReason::Halted, _)) => {
            report_hypercall_path();
            kprintln!("{}", markers::KERNEL_POWER_OFF);
            power::exit(ExitCode::Success)
        }
        Some(RunState::Stopped(..)) => {
            kprintln!("the root partition stopped; shutting down");
            power::exit(ExitCode::RootFault)
        }
        _ => {}
    }
}
