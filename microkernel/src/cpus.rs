//! Bringing every processor online: per-CPU tables and stacks, the local
//! APIC and its timer, SVM enabled, then the application processors one by
//! one through INIT-SIPI-SIPI.
//!
//! A processor is "online" once it has taken its first local APIC timer
//! interrupt; it prints `cpu N online` itself.

use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use ipc::exit::ExitCode;
use ipc::markers::CpuOnline;

use crate::arch::{apic, cpu, memory, msr, percpu::PerCpu, pit, power, smp, virt};
use crate::platform::{MAX_CPUS, Platform};

/// Kernel stack per processor.
const STACK_BYTES: usize = 64 * 1024;
/// Each interrupt-stack-table stack.
const IST_BYTES: usize = 16 * 1024;
/// Local APIC timer period.
pub const TICK_MS: u32 = 10;

/// Per-CPU state prepared by the bootstrap processor, by index.
static PER_CPU: [AtomicPtr<PerCpu>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
/// Processors online.
static ONLINE: AtomicU32 = AtomicU32::new(0);

fn alloc_stack(bytes: usize) -> u64 {
    match memory::alloc_frames(bytes / 4096, 4096) {
        Some(base) => base + bytes as u64,
        None => {
            kprintln!("out of microkernel memory for processor stacks");
            power::exit(ExitCode::Failure)
        }
    }
}

/// Allocates processor `index`'s state and stacks; returns its kernel stack top.
fn prepare(index: u32, apic_id: u32) -> u64 {
    let ist = [
        alloc_stack(IST_BYTES),
        alloc_stack(IST_BYTES),
        alloc_stack(IST_BYTES),
        0,
        0,
        0,
        0,
    ];
    let frames = core::mem::size_of::<PerCpu>().div_ceil(4096);
    let Some(addr) = memory::alloc_frames(frames, 4096) else {
        kprintln!("out of microkernel memory for per-processor state");
        power::exit(ExitCode::Failure)
    };
    let state: &'static mut PerCpu = memory::frame_as(addr);
    *state = PerCpu::new(index, apic_id, ist);
    crate::arch::percpu::set_apic_id(index, apic_id);
    state.host_save_area = memory::alloc_frames(1, 4096).unwrap_or(0);
    state.host_vmcb = memory::alloc_frames(1, 4096).unwrap_or(0);
    if state.host_save_area == 0 || state.host_vmcb == 0 {
        kprintln!("out of microkernel memory for SVM host state");
        power::exit(ExitCode::Failure)
    }
    PER_CPU[index as usize].store(state, Ordering::Release);
    alloc_stack(STACK_BYTES)
}

/// Everything a processor does to come online, bootstrap or not.
fn come_online(index: u32) {
    let state = PER_CPU[index as usize].load(Ordering::Acquire);
    // `prepare` stored a 'static PerCpu for this index; only this
    // processor uses it from here on.
    let state: &'static mut PerCpu = match memory::claim_per_cpu(state) {
        Some(s) => s,
        None => power::exit(ExitCode::Failure),
    };
    let (save, host) = (state.host_save_area, state.host_vmcb);
    state.install();
    msr::enable_nx_if_supported(cpu::virt_features().nx);
    apic::enable();
    apic::start_timer(TICK_MS);
    if let Err(e) = virt::enable(save, host) {
        kprintln!("cpu {index}: cannot turn virtualization on: {e:?}");
        power::exit(ExitCode::Failure);
    }
    cpu::enable_interrupts();
    while crate::arch::percpu::current().ticks.load(Ordering::Relaxed) == 0 {
        cpu::wait_for_interrupt();
    }
    kprintln!("{}", CpuOnline(index));
    ONLINE.fetch_add(1, Ordering::AcqRel);
}

/// Entry of every application processor (from the trampoline).
extern "C" fn ap_entry(index: u64) -> ! {
    smp::report_started(index as u32);
    come_online(index as u32);
    crate::run::processor_loop(index as u32)
}

/// Brings up the bootstrap processor and then every other processor the
/// platform lists. Returns how many are online.
pub fn bring_up(platform: &Platform, cr3: u64, trampoline: u64) -> u32 {
    pit::disable_legacy_pic();
    let _ = prepare(0, platform.apic_ids()[0]);
    apic::enable();
    apic::calibrate();
    come_online(0);
    for (index, &apic_id) in platform.apic_ids().iter().enumerate().skip(1) {
        let index = index as u32;
        let stack_top = prepare(index, apic_id);
        let before = ONLINE.load(Ordering::Acquire);
        if let Err(e) = smp::start(trampoline, cr3, apic_id, index, stack_top, ap_entry) {
            kprintln!("cpu {index} (apic id {apic_id}) did not start: {e:?}");
            continue;
        }
        // Wait (up to ~2 s) for it to take its first timer tick.
        let mut waited = 0;
        while ONLINE.load(Ordering::Acquire) == before && waited < 2000 {
            pit::sleep_us(1000);
            waited += 1;
        }
        if ONLINE.load(Ordering::Acquire) == before {
            kprintln!("cpu {index} (apic id {apic_id}) started but never took a timer interrupt");
        }
    }
    ONLINE.load(Ordering::Acquire)
}
