//! `selftest=race`, a test-only mode of the root partition (issue 14,
//! defect 3): the root starts a second vCPU of its own, which hammers
//! `VcpuCreate` (then `VcpuStart`), `VcpuPause`/`VcpuResume` and
//! `MemoryMap` on the children the first vCPU creates and destroys, and
//! yields now and then, round after round (`race-rounds=N`, default
//! [`RACE_ROUNDS_DEFAULT`](ipc::markers::RACE_ROUNDS_DEFAULT)). In every
//! round the first vCPU also pauses and resumes the second in the middle
//! of its calls, and in every third round it waits for the child to halt
//! by itself (both its vCPUs execute `cli; hlt` at about the same time).
//! At the end both root vCPUs execute `cli; hlt` together, so the kernel
//! sees the root's last two halts race; it must report the root's end.
//!
//! Each child is 16 pages: identity page tables (one 2 MiB page) and a few
//! bytes of code. Its two vCPUs spin a short while and then wait for an
//! interrupt that never comes, or halt for good, or (every third round)
//! pause and resume each other without end, through the capabilities on
//! each other the first vCPU delegates to the child; the vCPUs the second
//! vCPU adds halt at once.
//!
//! # Invariants
//! - Only the first vCPU creates and destroys children. It publishes the
//!   current child's handles in the statics below once the child's memory
//!   is mapped, and withdraws them after the destroy, so the second vCPU
//!   also works on children being destroyed and on handles gone stale.
//! - A withdrawn handle is [`NONE`], never a slot of the root's: the second
//!   vCPU never names the root itself or its vCPUs.
//! - Every status is checked against the ones `docs/hypercalls.md`
//!   documents for the call in that situation; any other is counted and
//!   the first one printed. The first vCPU's own calls must all succeed:
//!   at its first failure it stops the rounds and goes to the end.
//! - Every wait is bounded: a vCPU that never comes back is reported, and
//!   the root still halts (then the kernel must still end the run).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use ipc::boot::{BootInfo, cap_kind};
use ipc::hypercall::{Call, Name, Rights, SlotHandle, Status, StopReason, number, run_state};
use ipc::markers::{self, RACE_ROUNDS, RACE_ROUNDS_DEFAULT, RaceSummary};

use crate::hal;

macro_rules! println {
    ($($arg:tt)*) => {
        partition_rt::console::print_line(format_args!($($arg)*))
    };
}

/// A published handle that names nothing.
const NONE: u64 = u64::MAX;
/// Pages of each child.
const CHILD_PAGES: u64 = 16;
/// Guest-physical layout of a child: page tables, code, stacks.
const PML4: usize = 0x0000;
const PDPT: usize = 0x1000;
const PD: usize = 0x2000;
/// Spins, then waits for an interrupt (blocked for good).
const CODE_SPIN_THEN_WAIT: u64 = 0x3000;
/// Spins, then halts with interrupts off (stopped for good).
const CODE_SPIN_THEN_HALT: u64 = 0x3010;
/// Halts with interrupts off at once.
const CODE_HALT: u64 = 0x3020;
/// Pauses and resumes, for ever, the vCPU whose handle (in the child's own
/// space) it gets in RDI: the child's two vCPUs do it to each other.
const CODE_PAUSE_THE_OTHER: u64 = 0x3030;
/// The child's own handles on its two vCPUs (delegated by the first root
/// vCPU into these empty slots of a new child).
const CHILD_VCPU_SLOTS: [SlotHandle; 2] = [
    SlotHandle {
        index: 1,
        generation: 0,
    },
    SlotHandle {
        index: 2,
        generation: 0,
    },
];
const STACK_TOP: u64 = 0x8000;
/// Spin iterations of the child code (a few hundred microseconds under TCG).
const SPIN_ITERATIONS: u32 = 20_000;
/// Where the second vCPU maps extra pages into a child (one per call, 32
/// places: with the first vCPU's mapping, well within a child's limit).
const EXTRA_MAPS: u64 = 0x10_0000;
/// Bounds of the waits, in milliseconds of the time-stamp counter: a
/// child halting by itself, the second vCPU finishing, both at the end.
const CHILD_HALT_MS: u64 = 5_000;
const SECOND_DONE_MS: u64 = 5_000;

/// The current child's partition, memory and first two vCPUs ([`NONE`]: none).
static PARTITION: AtomicU64 = AtomicU64::new(NONE);
static MEMORY: AtomicU64 = AtomicU64::new(NONE);
static VCPUS: [AtomicU64; 2] = [const { AtomicU64::new(NONE) }; 2];
/// The second vCPU was started.
static SECOND_STARTED: AtomicBool = AtomicBool::new(false);
/// The first vCPU finished its rounds.
static DONE: AtomicBool = AtomicBool::new(false);
/// The second vCPU saw [`DONE`] and stopped calling.
static SECOND_DONE: AtomicBool = AtomicBool::new(false);
/// Both vCPUs halt once this reaches 2.
static AT_THE_END: AtomicU32 = AtomicU32::new(0);
/// Calls the second vCPU made.
static SECOND_CALLS: AtomicU64 = AtomicU64::new(0);
/// Statuses seen, by value (both vCPUs).
static SEEN: [AtomicU64; Status::ALL.len()] = [const { AtomicU64::new(0) }; Status::ALL.len()];
/// Statuses outside the documented ones, and the first as call number << 32 | RAX.
static UNEXPECTED: AtomicU64 = AtomicU64::new(0);
static FIRST_UNEXPECTED: AtomicU64 = AtomicU64::new(NONE);
/// Time-stamp counter ticks per millisecond.
static TSC_KHZ: AtomicU64 = AtomicU64::new(1_000_000);

/// Makes `call` and checks its status against `allowed` (Success is always
/// allowed); returns the results on success.
fn checked(call: Call, allowed: &[Status]) -> Option<[u64; 3]> {
    let number = call.encode()[0];
    let out = partition_rt::hypercall::hypercall_registers(&call).unwrap_or([NONE; 4]);
    let status = Status::from_raw(out[0]);
    if let Some(s) = status
        && let Some(counter) = SEEN.get(s as usize)
    {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    match status {
        Some(Status::Success) => Some([out[1], out[2], out[3]]),
        Some(s) if allowed.contains(&s) => None,
        _ => {
            UNEXPECTED.fetch_add(1, Ordering::Relaxed);
            let _ = FIRST_UNEXPECTED.compare_exchange(
                NONE,
                (number << 32) | (out[0] & 0xffff_ffff),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            None
        }
    }
}

fn slot(raw: u64) -> Option<SlotHandle> {
    if raw == NONE {
        return None;
    }
    SlotHandle::from_raw(raw).ok()
}

/// The time-stamp counter `ms` milliseconds from now.
fn deadline(ms: u64) -> u64 {
    partition_rt::rdtsc().saturating_add(ms.saturating_mul(TSC_KHZ.load(Ordering::Relaxed)))
}

/// A child's memory before it is donated: page tables mapping its first 2
/// MiB at 0 (one large page), the code, zeroed stacks. Hypercalls are
/// VMCALL on Intel, VMMCALL elsewhere.
fn prepare_child(memory: &mut [u8], intel: bool) {
    memory.fill(0);
    // Present and writable; the last one is a 2 MiB page at 0.
    for (at, value) in [
        (PML4, PDPT as u64 | 0x3),
        (PDPT, PD as u64 | 0x3),
        (PD, 0x83),
    ] {
        memory[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }
    let [a, b, c, d] = SPIN_ITERATIONS.to_le_bytes();
    // mov ecx, N; 1: pause; dec ecx; jnz 1b; sti|cli; 2: hlt; jmp 2b
    for (code, interrupts) in [(CODE_SPIN_THEN_WAIT, 0xfb), (CODE_SPIN_THEN_HALT, 0xfa)] {
        let at = code as usize;
        memory[at..at + 15].copy_from_slice(&[
            0xb9, a, b, c, d, 0xf3, 0x90, 0xff, 0xc9, 0x75, 0xfa, interrupts, 0xf4, 0xeb, 0xfd,
        ]);
    }
    // cli; 1: hlt; jmp 1b
    let at = CODE_HALT as usize;
    memory[at..at + 4].copy_from_slice(&[0xfa, 0xf4, 0xeb, 0xfd]);
    // mov rbx, rdi; 1: mov rdi, rbx; mov eax, VCPU_PAUSE; hypercall;
    // mov rdi, rbx; mov eax, VCPU_RESUME; hypercall; jmp 1b
    let call = if intel { 0xc1 } else { 0xd9 };
    let (pause, resume) = (number::VCPU_PAUSE as u8, number::VCPU_RESUME as u8);
    let at = CODE_PAUSE_THE_OTHER as usize;
    memory[at..at + 27].copy_from_slice(&[
        0x48, 0x89, 0xfb, 0x48, 0x89, 0xdf, 0xb8, pause, 0, 0, 0, 0x0f, 0x01, call, 0x48, 0x89,
        0xdf, 0xb8, resume, 0, 0, 0, 0x0f, 0x01, call, 0xeb, 0xe8,
    ]);
}

/// `PartitionCreate` with no priority ceiling beyond the default, built
/// from its registers so this works whatever optional fields the call has.
fn partition_create(authority: SlotHandle, ram: SlotHandle, first_page: u64) -> Option<Call> {
    let name = Name::new("race").raw();
    Call::decode(&[
        number::PARTITION_CREATE,
        authority.raw(),
        ram.raw(),
        first_page,
        CHILD_PAGES,
        name,
        0,
    ])
    .ok()
}

/// Runs the race and ends the root: never returns.
pub fn run(info: &BootInfo) -> ! {
    let rounds = info
        .cmdline()
        .split_whitespace()
        .find_map(|w| w.strip_prefix(RACE_ROUNDS)?.parse().ok())
        .unwrap_or(RACE_ROUNDS_DEFAULT);
    TSC_KHZ.store(u64::from(info.tsc_khz).max(1), Ordering::Relaxed);
    let done = match first_vcpu(info, rounds) {
        Ok(()) => rounds,
        Err((what, round)) => {
            println!("root: race: FAILED: {what} (round {round})");
            round
        }
    };
    DONE.store(true, Ordering::Release);
    let second = SECOND_STARTED.load(Ordering::Acquire);
    let until = deadline(SECOND_DONE_MS);
    while second && !SECOND_DONE.load(Ordering::Acquire) && partition_rt::rdtsc() < until {
        partition_rt::pause();
    }
    if second && !SECOND_DONE.load(Ordering::Acquire) {
        println!("root: race: FAILED: the second vCPU never came back to finish");
    }
    let unexpected = UNEXPECTED.load(Ordering::Relaxed);
    println!(
        "{}",
        RaceSummary {
            rounds: done,
            unexpected
        }
    );
    let mut seen = alloc::string::String::new();
    for s in Status::ALL {
        let n = SEEN[s as usize].load(Ordering::Relaxed);
        if n > 0 {
            let _ = core::fmt::Write::write_fmt(&mut seen, format_args!(" {s:?}={n}"));
        }
    }
    let calls = SECOND_CALLS.load(Ordering::Relaxed);
    println!("root: race: {calls} calls from the second vCPU; statuses:{seen}");
    if unexpected > 0 {
        let first = FIRST_UNEXPECTED.load(Ordering::Relaxed);
        println!(
            "root: race: FAILED: call {} answered status {}",
            first >> 32,
            first & 0xffff_ffff
        );
    }
    println!("{}", markers::ROOT_POWER_OFF);
    if second {
        halt_together()
    }
    hal::power_off()
}

/// Both root vCPUs halt with interrupts off as close together as they can
/// (the other one may never come: then after a while alone).
fn halt_together() -> ! {
    AT_THE_END.fetch_add(1, Ordering::AcqRel);
    let until = deadline(SECOND_DONE_MS);
    while AT_THE_END.load(Ordering::Acquire) < 2 && partition_rt::rdtsc() < until {
        partition_rt::pause();
    }
    hal::power_off()
}

/// The first vCPU: starts the second, then creates, runs and destroys
/// `rounds` children. A failure says what failed in which round.
fn first_vcpu(info: &BootInfo, rounds: u64) -> Result<(), (&'static str, u64)> {
    let setup = setup(info).map_err(|what| (what, 0))?;
    (0..rounds).try_for_each(|round| one_round(&setup, round).map_err(|what| (what, round)))
}

/// What every round uses: the root's capabilities and the child's place.
#[derive(Clone, Copy)]
struct Setup {
    authority: SlotHandle,
    ram: SlotHandle,
    base: u64,
    first_page: u64,
    /// The second root vCPU.
    second: SlotHandle,
    processors: u64,
    /// Hypercalls are VMCALL (Intel), not VMMCALL.
    intel: bool,
}

/// Finds the root's capabilities and a place for children; starts the second vCPU.
fn setup(info: &BootInfo) -> Result<Setup, &'static str> {
    let find = |kind| info.caps().iter().filter(move |c| c.kind == kind);
    let authority = find(cap_kind::PARTITION)
        .next()
        .and_then(|c| SlotHandle::from_raw(c.slot).ok())
        .ok_or("finding the root's own capability")?;
    let ram = find(cap_kind::MEMORY)
        .max_by_key(|c| c.b)
        .ok_or("finding the root's RAM")?;
    let ram_slot = SlotHandle::from_raw(ram.slot).map_err(|_| "the RAM capability")?;
    let (heap, _) = crate::children::heap_range(info).map_err(|_| "placing the heap")?;
    // Child memory: the first 2 MiB-aligned 64 KiB past the heap.
    let base = (heap.end + (2 << 20) - 1) & !((2 << 20) - 1);
    if base + CHILD_PAGES * 4096 > ram.a + ram.b * 4096 {
        return Err("finding room for a child");
    }
    let first_page = (base - ram.a) / 4096;

    // The second root vCPU, on the other processor when there is one.
    let processor = if info.cpu_count > 1 { 2 } else { 0 };
    let stack_top = crate::hal::stack::second_vcpu_stack_top();
    let entry: extern "C" fn(u64, u64) -> ! = second_vcpu;
    let second = checked(
        Call::VcpuCreate {
            partition: authority,
            rip: entry as usize as u64,
            rsp: stack_top,
            // The second vCPU shares the root's address space.
            cr3: partition_rt::arch::read_cr3(),
            arg: 0,
            flags: processor << 8,
        },
        &[],
    )
    .ok_or("creating the second root vCPU")?;
    let second = SlotHandle::from_raw(second[0]).map_err(|_| "its handle")?;
    checked(Call::VcpuStart { vcpu: second }, &[]).ok_or("starting the second root vCPU")?;
    SECOND_STARTED.store(true, Ordering::Release);
    println!("root: race: second vCPU started");
    Ok(Setup {
        authority,
        ram: ram_slot,
        base,
        first_page,
        second,
        processors: u64::from(info.cpu_count.max(1)),
        intel: partition_rt::arch::cpuid(0, 0).ebx == u32::from_le_bytes(*b"Genu"),
    })
}

/// One round: a child created, mapped, given two vCPUs, run a while (the
/// second root vCPU paused and resumed meanwhile), perhaps halted by
/// itself, destroyed.
fn one_round(setup: &Setup, round: u64) -> Result<(), &'static str> {
    if round.is_multiple_of(500) {
        println!("root: race: round {round}");
    }
    let mut lease = hal::ram::lease(setup.base, CHILD_PAGES * 4096)
        .map_err(|_| "leasing the child's memory")?;
    prepare_child(lease.bytes(), setup.intel);
    drop(lease);
    let create =
        partition_create(setup.authority, setup.ram, setup.first_page).ok_or("encoding")?;
    let r = checked(create, &[]).ok_or("creating a child")?;
    let (partition, memory) = (r[0], r[1]);
    let partition_slot = SlotHandle::from_raw(partition).map_err(|_| "child handle")?;
    let memory_slot = SlotHandle::from_raw(memory).map_err(|_| "memory handle")?;
    checked(
        Call::MemoryMap {
            partition: partition_slot,
            memory: memory_slot,
            first_page: 0,
            gpa: 0,
            pages: CHILD_PAGES,
            access: Rights::READ | Rights::WRITE | Rights::EXECUTE,
        },
        &[],
    )
    .ok_or("mapping a child's memory")?;
    MEMORY.store(memory, Ordering::Release);
    PARTITION.store(partition, Ordering::Release);
    // A third of the children halt by themselves, a third have their two
    // vCPUs pause each other, a third wait for ever.
    let (halts, mutual) = (round % 3 == 1, round % 3 == 2);
    let code = match (halts, mutual) {
        (true, _) => CODE_SPIN_THEN_HALT,
        (_, true) => CODE_PAUSE_THE_OTHER,
        _ => CODE_SPIN_THEN_WAIT,
    };
    let mut vcpus = [None; 2];
    for (i, vcpu) in vcpus.iter_mut().enumerate() {
        let processor = (i as u64 % setup.processors) + 1;
        // The second vCPU may have filled the child's four vCPUs.
        *vcpu = checked(
            Call::VcpuCreate {
                partition: partition_slot,
                rip: code,
                rsp: STACK_TOP - i as u64 * 0x1000,
                cr3: PML4 as u64,
                // The other vCPU's handle, for the code that pauses it.
                arg: CHILD_VCPU_SLOTS[1 - i].raw(),
                flags: processor << 8,
            },
            &[Status::InvalidState],
        )
        .map(|r| r[0]);
        if let Some(raw) = *vcpu {
            VCPUS[i].store(raw, Ordering::Release);
        }
    }
    if mutual && let [Some(first), Some(second)] = vcpus {
        for (raw, at) in [first, second].into_iter().zip(CHILD_VCPU_SLOTS) {
            let slot = SlotHandle::from_raw(raw).map_err(|_| "vCPU handle")?;
            checked(
                Call::CapDelegateAt {
                    slot,
                    target: partition_slot,
                    rights: Rights::CONTROL,
                    at,
                },
                &[],
            )
            .ok_or("giving a child its vCPUs")?;
        }
    }
    for raw in vcpus.iter().flatten() {
        let vcpu = SlotHandle::from_raw(*raw).map_err(|_| "vCPU handle")?;
        checked(Call::VcpuStart { vcpu }, &[]).ok_or("starting a child vCPU")?;
    }
    // Let the children run and the second vCPU work on them a while; then
    // pause the second vCPU in the middle of its calls and resume it.
    let until = partition_rt::rdtsc() + TSC_KHZ.load(Ordering::Relaxed) / 4;
    while partition_rt::rdtsc() < until {
        partition_rt::pause();
    }
    let second = setup.second;
    checked(Call::VcpuPause { vcpu: second }, &[]).ok_or("pausing the second root vCPU")?;
    checked(Call::VcpuResume { vcpu: second }, &[]).ok_or("resuming the second root vCPU")?;
    if halts {
        wait_halted(partition_slot)?;
    }
    checked(
        Call::PartitionDestroy {
            partition: partition_slot,
        },
        &[],
    )
    .ok_or("destroying a child")?;
    PARTITION.store(NONE, Ordering::Release);
    MEMORY.store(NONE, Ordering::Release);
    for v in &VCPUS {
        v.store(NONE, Ordering::Release);
    }
    Ok(())
}

/// Waits (yielding) until the child's vCPUs have all halted with
/// interrupts off, however the second vCPU paused and resumed them.
fn wait_halted(partition: SlotHandle) -> Result<(), &'static str> {
    let until = deadline(CHILD_HALT_MS);
    loop {
        let r =
            checked(Call::PartitionStatus { partition }, &[]).ok_or("asking a child's status")?;
        if r[0] == run_state::STOPPED {
            return match StopReason::from_raw(r[1]) {
                Some(StopReason::Halted) => Ok(()),
                _ => Err("a child stopped for another reason than a halt"),
            };
        }
        if partition_rt::rdtsc() > until {
            return Err("a child never halted (a vCPU stuck paused?)");
        }
        checked(Call::Yield, &[]).ok_or("yielding")?;
    }
}

/// The second root vCPU: works on whatever child is published until the
/// first vCPU is done, then halts with it.
extern "C" fn second_vcpu(_arg: u64, index: u64) -> ! {
    if partition_rt::init_vcpu(index as u32).is_ok() {
        hammer();
    }
    SECOND_DONE.store(true, Ordering::Release);
    halt_together()
}

fn hammer() {
    use Status::{AlreadyMapped, InvalidSlot, InvalidState, StaleSlot};
    let mut k: u64 = 0;
    let mut calls: u64 = 0;
    while !DONE.load(Ordering::Acquire) {
        let Some(partition) = slot(PARTITION.load(Ordering::Acquire)) else {
            partition_rt::pause();
            continue;
        };
        // A vCPU that halts at once (the child may be stopped, dying, gone or full).
        let created = checked(
            Call::VcpuCreate {
                partition,
                rip: CODE_HALT,
                rsp: STACK_TOP - 0x2000,
                cr3: PML4 as u64,
                arg: k,
                flags: 0,
            },
            &[InvalidState, InvalidSlot, StaleSlot],
        );
        calls += 1;
        if let Some(r) = created
            && let Some(vcpu) = slot(r[0])
        {
            checked(
                Call::VcpuStart { vcpu },
                &[InvalidState, InvalidSlot, StaleSlot],
            );
            calls += 1;
        }
        // Pause one of the first vCPUs (running, blocked, stopped or gone) and resume it.
        if let Some(vcpu) = slot(VCPUS[(k % 2) as usize].load(Ordering::Acquire)) {
            let paused = checked(
                Call::VcpuPause { vcpu },
                &[InvalidState, InvalidSlot, StaleSlot],
            );
            calls += 1;
            if paused.is_some() {
                checked(
                    Call::VcpuResume { vcpu },
                    &[InvalidState, InvalidSlot, StaleSlot],
                );
                calls += 1;
            }
        }
        // Map one more page of its memory (its memory may be gone, the place taken).
        if let Some(memory) = slot(MEMORY.load(Ordering::Acquire)) {
            checked(
                Call::MemoryMap {
                    partition,
                    memory,
                    first_page: k % CHILD_PAGES,
                    gpa: EXTRA_MAPS + (k % 32) * 4096,
                    pages: 1,
                    access: Rights::READ,
                },
                &[AlreadyMapped, InvalidState, InvalidSlot, StaleSlot],
            );
            calls += 1;
        }
        // Give the processor up now and then: the first vCPU's pause may
        // land on the way out.
        if k.is_multiple_of(2) {
            checked(Call::Yield, &[]);
            calls += 1;
        }
        k += 1;
    }
    SECOND_CALLS.store(calls, Ordering::Relaxed);
}
