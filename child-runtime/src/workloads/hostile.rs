//! Workload `hostile`: vCPU 0 tries what a hostile child could, each try a
//! named check with the outcome the ABI documents, then touches memory it
//! does not own, which must get the partition stopped.
//!
//! # Invariants
//! - Every check prints exactly one [`HostileCheck`] line and counts once
//!   in the [`HostileSummary`].
//! - Nothing here harms the child itself on purpose before the final
//!   access: calls on its own partition capability that destroy, pause,
//!   unmap, delete, revoke or write memory are never made, and buffers the
//!   microkernel writes are a scratch page (`arch::fuzz_hypercall`).
//! - Other vCPUs halt at once.

use super::checks::Checks;
use ipc::child::ChildBootInfo;
use ipc::hypercall::{Call, Name, Results, Rights, SlotHandle, Status, number};
use ipc::workload::{
    HOSTILE_CHECKS, HOSTILE_RANDOM_CALLS, HOSTILE_STILL_RUNNING, HOSTILE_UNMAPPED_OFFSET,
    HostileTouchUnmapped,
};
use partition_rt::interrupts::{GENERAL_PROTECTION, INVALID_OPCODE};
use partition_rt::{halt_forever, hypercall, println};

use crate::arch::{self, BufferPage, SvmInstruction};

impl Checks {
    /// Passes if `got` is an error in `want`.
    fn status(&mut self, check: &str, got: Result<Results, Status>, want: &[Status]) {
        match got {
            Err(status) if want.contains(&status) => self.record(check, None),
            other => self.record(check, Some(format_args!("got {other:?}, want {want:?}"))),
        }
    }

    /// Passes if `got` succeeded; returns the results.
    fn success(&mut self, check: &str, got: Result<Results, Status>) -> Option<Results> {
        match got {
            Ok(results) => Some(results),
            Err(status) => {
                self.record(check, Some(format_args!("setup call failed: {status:?}")));
                None
            }
        }
    }

    /// Passes if an expected fault came with `want`.
    fn fault(&mut self, check: &str, got: Option<u8>, want: u8) {
        match got {
            Some(vector) if vector == want => self.record(check, None),
            Some(vector) => self.record(
                check,
                Some(format_args!("got vector {vector}, want {want}")),
            ),
            None => self.record(check, Some(format_args!("no fault, want vector {want}"))),
        }
    }
}

/// A small xorshift generator (deterministic per seed).
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// A new port of the child's own, as a slot handle.
fn port_create() -> Result<SlotHandle, Status> {
    let [raw, ..] = hypercall(&Call::PortCreate)?;
    SlotHandle::from_raw(raw)
}

fn delegate(slot: SlotHandle, target: SlotHandle, rights: Rights) -> Result<Results, Status> {
    hypercall(&Call::CapDelegate {
        slot,
        target,
        rights,
    })
}

fn handle_of(results: Results) -> Option<SlotHandle> {
    SlotHandle::from_raw(results[0]).ok()
}

/// Runs on every vCPU.
pub fn run(info: &ChildBootInfo, vcpu: u32) -> ! {
    if vcpu != 0 {
        halt_forever()
    }
    let me = info.self_slot;
    let mut checks = Checks::new();

    // Slots the child never held.
    let [console_signal, console_event] = crate::vmbus::console_ports();
    let [integration_signal, integration_event] = crate::vmbus::integration_ports();
    let held = [
        Some(me),
        info.to_root,
        info.from_root,
        info.vmbus_signal,
        info.vmbus_event,
        console_signal,
        console_event,
        integration_signal,
        integration_event,
    ];
    let empty_index = held.iter().flatten().map(|h| h.index).max().unwrap_or(0) + 1;
    let empty = SlotHandle {
        index: empty_index,
        generation: 0,
    };
    checks.status(
        "signal an empty slot",
        hypercall(&Call::PortSignal { port: empty }),
        &[Status::InvalidSlot],
    );
    // Before any port is created: the kernel fills the lowest free slot.
    let some_gpa = info.memory_bytes.next_multiple_of(4096);
    checks.status(
        "map an empty slot as memory",
        hypercall(&Call::MemoryMap {
            partition: me,
            memory: empty,
            first_page: 0,
            gpa: some_gpa,
            pages: 1,
            access: Rights::READ,
        }),
        &[Status::InvalidSlot],
    );
    let far = SlotHandle {
        index: 999,
        generation: 0,
    };
    checks.status(
        "signal slot 999",
        hypercall(&Call::PortSignal { port: far }),
        &[Status::InvalidSlot],
    );

    // A copy is stale once the original is revoked.
    let check = "revoked copy is stale";
    if let Some(port) = checks.success(check, port_create().map(|h| [h.raw(), 0, 0]))
        && let Some(port) = handle_of(port)
        && let Some(copy) =
            checks.success(check, delegate(port, me, Rights::SIGNAL | Rights::GRANT))
        && let Some(copy) = handle_of(copy)
        && checks
            .success(check, hypercall(&Call::CapRevoke { slot: port }))
            .is_some()
    {
        checks.status(
            check,
            hypercall(&Call::PortSignal { port: copy }),
            &[Status::StaleSlot],
        );
    }

    // Delegation never adds rights.
    let port = port_create();
    let check = "delegation cannot add rights";
    if let Some(port) = checks
        .success(check, port.map(|h| [h.raw(), 0, 0]))
        .and_then(handle_of)
        && let Some(copy) = checks
            .success(check, delegate(port, me, Rights::SIGNAL | Rights::GRANT))
            .and_then(handle_of)
    {
        checks.status(
            check,
            delegate(copy, me, Rights::SIGNAL | Rights::BIND),
            &[Status::InsufficientRights],
        );
    }
    let check = "delegation needs GRANT";
    if let Ok(port) = port
        && let Some(copy) = checks
            .success(check, delegate(port, me, Rights::SIGNAL))
            .and_then(handle_of)
    {
        checks.status(
            check,
            delegate(copy, me, Rights::SIGNAL),
            &[Status::InsufficientRights],
        );
    }

    // Memory and partitions the child has no authority over.
    if let Ok(port) = port {
        checks.status(
            "map a port as memory",
            hypercall(&Call::MemoryMap {
                partition: me,
                memory: port,
                first_page: 0,
                gpa: some_gpa,
                pages: 1,
                access: Rights::READ | Rights::WRITE,
            }),
            &[Status::WrongType],
        );
        checks.status(
            "create a partition without CREATE",
            hypercall(&Call::PartitionCreate {
                authority: me,
                memory: port,
                first_page: 0,
                pages: 1,
                name: Name::new("evil"),
                ceiling: 0,
            }),
            &[Status::InsufficientRights, Status::WrongType],
        );
    }

    flood(&mut checks, port.ok());
    privileged(&mut checks);
    random_calls(&mut checks, info);

    let ran = checks.complete(HOSTILE_CHECKS);
    if ran != HOSTILE_CHECKS {
        // A setup step failed and took the checks built on it along.
        println!("hostile: FAILED: ran {ran} checks of {HOSTILE_CHECKS}");
    }
    println!("{}", checks.summary());
    let target = info.memory_bytes + HOSTILE_UNMAPPED_OFFSET;
    println!("{}", HostileTouchUnmapped(target));
    match arch::touch_unmapped(info, target) {
        Some(value) => println!("{HOSTILE_STILL_RUNNING} (read {value:#x})"),
        None => println!("hostile: FAILED: could not map {target:#x} to touch it"),
    }
    halt_forever()
}

/// Floods the microkernel with cheap calls and console lines.
fn flood(checks: &mut Checks, port: Option<SlotHandle>) {
    let failures = (0..100_000)
        .filter(|_| hypercall(&Call::Null).is_err())
        .count();
    let check = "100000 null hypercalls";
    if failures == 0 {
        checks.record(check, None);
    } else {
        checks.record(check, Some(format_args!("{failures} failed")));
    }

    if let Some(port) = port {
        let (mut ok, mut refused, mut unknown) = (0u32, 0u32, 0u32);
        for _ in 0..10_000 {
            match partition_rt::hypercall::hypercall_registers(&Call::PortSignal { port })
                .map(|out| Status::from_raw(out[0]))
            {
                Some(Some(Status::Success)) => ok += 1,
                Some(Some(_)) => refused += 1,
                Some(None) | None => unknown += 1,
            }
        }
        let check = "10000 signals to an unbound port";
        if unknown == 0 {
            checks.record(check, None);
            println!("hostile: (signals: {ok} accepted, {refused} refused)");
        } else {
            checks.record(
                check,
                Some(format_args!("{unknown} answers were no status")),
            );
        }
    }

    // Console lines without retrying, until the rate limit bites.
    let mut limited_after = None;
    let mut other = None;
    for line in 0..1000u32 {
        match partition_rt::console::try_line(format_args!("hostile: flood line {line}")) {
            Ok(()) => {}
            Err(Status::RateLimited) => {
                limited_after = Some(line);
                break;
            }
            Err(status) => {
                other = Some(status);
                break;
            }
        }
    }
    // Without `debug-console` the microkernel refuses a child's DebugWrite
    // outright: then both console checks are about that refusal.
    let debug_console_off = limited_after.is_none() && other == Some(Status::InsufficientRights);
    if debug_console_off {
        println!("hostile: (DebugWrite refused outright: no debug-console)");
    }
    // Wait (yielding) until the console takes a line again.
    let mut waited = 0u32;
    let recovered = debug_console_off
        || loop {
            match partition_rt::console::try_line(format_args!("hostile: console works again")) {
                Ok(()) => break true,
                Err(Status::RateLimited) if waited < 10_000_000 => {
                    waited += 1;
                    let _ = hypercall(&Call::Yield);
                }
                Err(_) => break false,
            }
        };
    let check = "console flood is rate-limited";
    match (limited_after, other) {
        (Some(_), _) => checks.record(check, None),
        (None, Some(Status::InsufficientRights)) => checks.record(check, None),
        (None, Some(status)) => checks.record(check, Some(format_args!("got {status:?}"))),
        (None, None) => checks.record(check, Some(format_args!("1000 lines, no RateLimited"))),
    }
    let check = "console works again after the flood";
    if recovered {
        checks.record(check, None);
    } else {
        checks.record(
            check,
            Some(format_args!("still refused after {waited} yields")),
        );
    }
}

/// Privileged instructions, MSRs and I/O ports.
fn privileged(checks: &mut Checks) {
    const APIC_BASE: u32 = 0x1b;
    checks.fault(
        "rdmsr APIC_BASE",
        arch::probe_read_msr(APIC_BASE).err(),
        GENERAL_PROTECTION,
    );
    match arch::probe_clear_efer_lme() {
        Ok(fault) => checks.fault("wrmsr EFER without LME", fault, GENERAL_PROTECTION),
        Err(vector) => checks.record(
            "wrmsr EFER without LME",
            Some(format_args!("reading EFER raised vector {vector}")),
        ),
    }
    for (check, instruction) in [
        ("vmrun", SvmInstruction::Vmrun),
        ("vmload", SvmInstruction::Vmload),
        ("vmsave", SvmInstruction::Vmsave),
        ("clgi", SvmInstruction::Clgi),
        ("stgi", SvmInstruction::Stgi),
    ] {
        checks.fault(check, arch::probe_svm(instruction), INVALID_OPCODE);
    }

    // If the debug-exit port were not intercepted, QEMU would exit here.
    arch::probe_out32(arch::DEBUG_EXIT_PORT, 0x11);
    checks.record("out to the debug-exit port is dropped", None);
    let value = arch::probe_in8(arch::PIT_COUNTER_0);
    let check = "in from the PIT reads all ones";
    if value == 0xff {
        checks.record(check, None);
    } else {
        checks.record(check, Some(format_args!("got {value:#x}")));
    }

    let [_, b, c, d] = arch::cpuid(0x4000_0000);
    let mut signature = [0u8; 12];
    for (i, reg) in [b, c, d].into_iter().enumerate() {
        signature[i * 4..i * 4 + 4].copy_from_slice(&reg.to_le_bytes());
    }
    let check = "cpuid 0x40000000 says capvisor";
    if signature.starts_with(b"capvisor") {
        checks.record(check, None);
    } else {
        checks.record(check, Some(format_args!("got {signature:?}")));
    }
}

/// A register value for the random round: biased to slot handles with
/// small indices and generations, small numbers, page addresses and rights.
fn random_argument(rng: &mut XorShift, known: &[SlotHandle], memory_bytes: u64) -> u64 {
    let r = rng.next();
    match r % 8 {
        0 | 1 => ((r >> 8) % 8) | (((r >> 16) % 3) << 16),
        2 => known[((r >> 8) as usize) % known.len()].raw(),
        3 => (r >> 8) % 64,
        4 => ((r >> 8) % (2 * memory_bytes.max(4096))) & !0xfff,
        5 => (r >> 8) & u64::from(Rights::ALL.bits()),
        _ => rng.next(),
    }
}

/// Whether `call` would harm the child itself (on its own partition:
/// destroy, unmap, create vCPUs, write memory; delete or revoke its own
/// partition capability), or only scribble on its console.
fn harms_itself(call: &Call, me: SlotHandle) -> bool {
    let mine = |slot: &SlotHandle| slot.index == me.index;
    match call {
        Call::PartitionDestroy { partition }
        | Call::MemoryUnmap { partition, .. }
        | Call::MemoryMap { partition, .. }
        | Call::VcpuCreate { partition, .. }
        | Call::MemoryWrite { partition, .. } => mine(partition),
        Call::CapRevoke { slot } | Call::CapDelete { slot } => mine(slot),
        Call::VcpuPause { .. } | Call::VcpuSetState { .. } => true,
        Call::DebugWrite { .. } => true,
        _ => false,
    }
}

/// Random hypercalls: each must come back with some status, and the child
/// must keep running.
fn random_calls(checks: &mut Checks, info: &ChildBootInfo) {
    let check = "random hypercalls";
    let Some(scratch) = BufferPage::new() else {
        checks.record(
            check,
            Some(format_args!("no heap page for the scratch buffer")),
        );
        return;
    };
    let me = info.self_slot;
    let mut known = [me; 3];
    if let Some(h) = info.to_root {
        known[1] = h;
    }
    if let Some(h) = info.from_root {
        known[2] = h;
    }
    let mut rng = XorShift::new(info.args[0]);
    let (mut sent, mut skipped, mut success, mut bad) = (0u32, 0u32, 0u32, 0u32);
    let mut first_bad = None;
    for _ in 0..HOSTILE_RANDOM_CALLS {
        let mut regs = [0u64; 7];
        // Every call and one number past them (UnknownCall).
        regs[0] = rng.next() % (number::COUNT + 1);
        for reg in &mut regs[1..] {
            *reg = random_argument(&mut rng, &known, info.memory_bytes);
        }
        if regs[0] == number::DEBUG_WRITE {
            skipped += 1;
            continue;
        }
        if let Ok(call) = Call::decode(&regs)
            && harms_itself(&call, me)
        {
            skipped += 1;
            continue;
        }
        let Some(out) = arch::fuzz_hypercall(regs, &scratch) else {
            skipped += 1;
            continue;
        };
        sent += 1;
        match Status::from_raw(out[0]) {
            Some(Status::Success) => success += 1,
            Some(_) => {}
            None => {
                bad += 1;
                first_bad.get_or_insert((regs, out[0]));
            }
        }
    }
    match first_bad {
        None => {
            checks.record(check, None);
            println!("hostile: ({sent} random calls sent, {success} succeeded, {skipped} skipped)");
        }
        Some((regs, rax)) => checks.record(
            check,
            Some(format_args!(
                "{bad} answers were no status, first rax={rax:#x} for {regs:x?}"
            )),
        ),
    }
}
