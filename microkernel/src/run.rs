//! The processor loop: every processor picks the next vCPU from its run
//! queue, enters guest mode, hands each exit to the kernel core, and
//! preempts at the end of a time slice. The kernel core's state sits behind
//! one lock, held only between guest entries, never in guest mode.

use core::sync::atomic::Ordering;

use ipc::exit::ExitCode;
use ipc::hypercall::StopReason;
use ipc::markers;
use microkernel::kernel::{Kernel, Next, Outcome};
use microkernel::object::ObjectId;
use microkernel::object::partition::RunState;
use microkernel::sched::SLICE_TICKS;
use microkernel::svm::exit::Exit;
use microkernel::svm::vmcb::{Vmcb, offset};
use spin::Mutex;

use crate::arch::machine::HwMachine;
use crate::arch::{cpu, ioapic, memory, percpu, power, svm};

/// The kernel core, once the root partition exists.
pub static KERNEL: Mutex<Option<Kernel>> = Mutex::new(None);

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

/// Runs vCPUs on this processor forever.
pub fn processor_loop(cpu_index: u32) -> ! {
    while KERNEL.lock().is_none() {
        cpu::wait_for_interrupt();
    }
    loop {
        let picked = with_kernel(|k, m| {
            k.ticks = percpu::global_ticks();
            let fired = ioapic::take_fired();
            for gsi in 0..ioapic::LINES {
                if fired & (1 << gsi) != 0 {
                    k.device_interrupt(m, gsi);
                }
            }
            k.pick(cpu_index)
        });
        match picked {
            Some(vcpu) => run_vcpu(cpu_index, vcpu),
            None => cpu::wait_for_interrupt(),
        }
    }
}

/// Runs one vCPU until it blocks, stops, yields or its slice ends.
fn run_vcpu(cpu_index: u32, vcpu: ObjectId) {
    let host_vmcb = percpu::current().host_vmcb;
    let slice_start = percpu::current().ticks.load(Ordering::Relaxed);
    loop {
        let entry = with_kernel(|k, m| {
            if !k.prepare_entry(m, vcpu) {
                return None;
            }
            k.objects.vcpu(vcpu).map(|v| (v.vmcb, v.regs, v.priority))
        });
        let Some((vmcb_pa, mut regs, priority)) = entry else {
            after_off(vcpu);
            return;
        };
        let vmcb: &mut Vmcb = memory::frame_as(vmcb_pa);
        svm::enter(vmcb, &mut regs, host_vmcb);
        let exit = Exit::decode(
            vmcb.read_u64(offset::EXIT_CODE),
            vmcb.read_u64(offset::EXIT_INFO1),
            vmcb.read_u64(offset::EXIT_INFO2),
        );
        let next = with_kernel(|k, m| {
            if let Some(v) = k.objects.vcpu_mut(vcpu) {
                v.regs = regs;
            }
            k.handle_exit(m, vcpu, exit)
        });
        match next {
            Next::Resume => {
                let used = percpu::current().ticks.load(Ordering::Relaxed) - slice_start;
                if used >= SLICE_TICKS
                    && with_kernel(|k, _| k.run_queues.has_ready(cpu_index, priority))
                {
                    with_kernel(|k, _| k.requeue(vcpu));
                    return;
                }
            }
            Next::Yield => {
                with_kernel(|k, _| k.requeue(vcpu));
                return;
            }
            Next::Blocked => return,
            Next::Off => {
                after_off(vcpu);
                return;
            }
            Next::Wait(outcome) => wait(vcpu, outcome),
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
