//! Workload `instructions` (`ipc::workload::INSTRUCTIONS`): vCPU 0 tries
//! the instructions a partition gets no effect from, takes a pending port
//! interrupt inside a three-instruction interrupt window, and asks for the
//! machine's power-off and reset; then it halts normally.
//!
//! # Invariants
//! - Every check prints exactly one [`HostileCheck`] line and counts once
//!   in the [`InstructionsSummary`].
//! - Nothing here harms the child: every instruction tried either faults
//!   (absorbed) or is a no-op under the microkernel.

use core::sync::atomic::{AtomicU32, Ordering};

use super::checks::Checks;
use ipc::boot::cap_kind;
use ipc::child::ChildBootInfo;
use ipc::hypercall::{Call, Results, Rights, SlotHandle, Status};
use ipc::workload::{INSTRUCTION_CHECKS, INSTRUCTIONS_VECTOR, InstructionsSummary};
use partition_rt::interrupts::INVALID_OPCODE;
use partition_rt::{halt_forever, hypercall, println};

use crate::arch::insn::{self, Instruction};

/// Interrupts taken on [`INSTRUCTIONS_VECTOR`].
static TAKEN: AtomicU32 = AtomicU32::new(0);

fn on_port(_vector: u8) {
    TAKEN.fetch_add(1, Ordering::SeqCst);
}

impl Checks {
    fn probe(&mut self, check: &str, instruction: Instruction, want: Option<u8>) {
        let got = insn::probe(instruction);
        if got == want {
            self.record(check, None);
        } else {
            self.record(
                check,
                Some(format_args!("got vector {got:?}, want {want:?}")),
            );
        }
    }

    fn refused(&mut self, check: &str, got: Result<Results, Status>, want: Status) {
        match got {
            Err(status) if status == want => self.record(check, None),
            other => self.record(check, Some(format_args!("got {other:?}, want {want:?}"))),
        }
    }
}

/// The child's capability on one of its own vCPUs (CONTROL), which the
/// root delegated to it: found by inspecting its own capability space.
pub(super) fn own_vcpu(me: SlotHandle) -> Option<SlotHandle> {
    (0..256u16).find_map(|index| {
        let [kind, rights, _] = hypercall(&Call::CapInspect {
            partition: me,
            index,
        })
        .ok()?;
        let handle = SlotHandle {
            index,
            generation: kind as u16,
        };
        ((kind >> 16) as u32 == cap_kind::VCPU
            && Rights::from_raw(rights).is_ok_and(|r| r.contains(Rights::CONTROL)))
        .then_some(handle)
    })
}

/// A port of the child's own, bound to [`INSTRUCTIONS_VECTOR`] of its vCPU.
fn bound_port(me: SlotHandle) -> Result<SlotHandle, &'static str> {
    let vcpu = own_vcpu(me).ok_or("no capability on its own vCPU")?;
    let [raw, ..] = hypercall(&Call::PortCreate).map_err(|_| "PortCreate failed")?;
    let port = SlotHandle::from_raw(raw).map_err(|_| "bad port handle")?;
    hypercall(&Call::PortBind {
        port,
        vcpu,
        vector: INSTRUCTIONS_VECTOR,
    })
    .map_err(|_| "PortBind failed")?;
    Ok(port)
}

/// Runs on every vCPU.
pub fn run(info: &ChildBootInfo, vcpu: u32) -> ! {
    if vcpu != 0 {
        halt_forever()
    }
    let me = info.self_slot;
    let mut checks = Checks::new();
    let ud = Some(INVALID_OPCODE);
    checks.probe("invlpga raises #UD", Instruction::Invlpga, ud);
    checks.probe("monitor raises #UD", Instruction::Monitor, ud);
    checks.probe("mwait raises #UD", Instruction::Mwait, ud);
    let [_, _, ecx, _] = crate::arch::cpuid(1);
    let check = "cpuid hides monitor/mwait";
    if ecx & (1 << 3) == 0 {
        checks.record(check, None);
    } else {
        checks.record(check, Some(format_args!("leaf 1 ecx={ecx:#x}")));
    }
    checks.probe("wbinvd completes (as a no-op)", Instruction::Wbinvd, None);
    checks.probe("invd completes (as a no-op)", Instruction::Invd, None);

    // A port interrupt raised while interrupts are off must be taken as
    // soon as they are on again (the interrupt-window exit), inside
    // `sti; nop; nop; nop; cli`, not at the next exit that happens to come.
    // A try may miss it for a reason of its own: an exit inside STI's
    // shadow (another interrupt's) leaves it to the next exit
    // (docs/hypercalls.md, "Virtual interrupts"). So up to three tries, and
    // one must take it inside.
    let check = "port interrupt taken inside sti; nop; nop; nop; cli";
    match bound_port(me) {
        Ok(port) => {
            let _ = partition_rt::set_interrupt_handler(INSTRUCTIONS_VECTOR, on_port);
            let were_on = partition_rt::arch::interrupts_enabled();
            let mut tries = 0;
            let (signalled, before, inside, later) = loop {
                tries += 1;
                partition_rt::disable_interrupts();
                let start = TAKEN.load(Ordering::SeqCst);
                let signalled = hypercall(&Call::PortSignal { port });
                let before = TAKEN.load(Ordering::SeqCst) - start;
                insn::interrupt_window();
                let inside = TAKEN.load(Ordering::SeqCst) - start;
                // A missed one comes at the next exit (a timer tick at the
                // latest); taken before the port is acknowledged, it cannot
                // count in the next try.
                partition_rt::enable_interrupts();
                let mut spins = 0u64;
                while TAKEN.load(Ordering::SeqCst) == start && spins < 200_000_000 {
                    core::hint::spin_loop();
                    spins += 1;
                }
                partition_rt::disable_interrupts();
                let later = TAKEN.load(Ordering::SeqCst) - start;
                let _ = hypercall(&Call::Acknowledge { slot: port });
                let done = signalled.is_err() || before != 0 || inside == 1 || later != 1;
                if done || tries == 3 {
                    break (signalled, before, inside, later);
                }
            };
            if were_on {
                partition_rt::enable_interrupts();
            }
            if signalled.is_ok() && before == 0 && inside == 1 {
                checks.record(check, None);
            } else {
                checks.record(
                    check,
                    Some(format_args!(
                        "signal {signalled:?}; last of {tries} tries: taken {before} before, {inside} in the window, {later} by the next exit"
                    )),
                );
            }
        }
        Err(why) => checks.record(check, Some(format_args!("{why}"))),
    }

    checks.refused(
        "PowerOff with its own partition capability",
        hypercall(&Call::PowerOff { partition: me }),
        Status::InsufficientRights,
    );
    checks.refused(
        "Reset with its own partition capability",
        hypercall(&Call::Reset { partition: me }),
        Status::InsufficientRights,
    );

    let ran = checks.complete(INSTRUCTION_CHECKS);
    if ran != INSTRUCTION_CHECKS {
        println!("instructions: FAILED: ran {ran} checks of {INSTRUCTION_CHECKS}");
    }
    let (passed, failed) = checks.counts();
    println!("{}", InstructionsSummary { passed, failed });
    halt_forever()
}
