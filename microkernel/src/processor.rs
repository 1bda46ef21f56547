//! The processor loop's decisions, one per hold of the kernel lock: what a
//! processor does with a vCPU after an exit (enter again, leave it, take
//! it off, wait for other processors), when a waiting hypercall may
//! finish, and whether a vCPU going off ends the run. The binary's
//! `run.rs` does the hardware part around them (guest entry, the null
//! hypercall's fast path, interrupts, power); here host tests run several
//! processors against one kernel, interleaving their lock holds at will.
//!
//! # Invariants
//! - Each function is one hold of the kernel lock; between two of them
//!   any other processor may change anything.
//! - A vCPU leaves its processor (any way but guest entry) through
//!   [`Kernel::leave_processor`] or [`Kernel::prepare_entry`], and both
//!   honour a stop or pause asked while it ran: whoever asked waits only
//!   until the vCPU is off its processor, so nothing asked is left behind
//!   (issue 14, defect 3).
//! - The run ends when a processor takes off a root vCPU and finds the
//!   root stopped ([`Kernel::run_end`]): the last root vCPU to stop always
//!   goes off on its own processor, so that moment always comes.
//! - A vCPU waiting in a hypercall stops waiting when it is itself asked
//!   to stop or pause ([`Kernel::wait_over`]): two vCPUs pausing each
//!   other (or a destroy waiting for a vCPU that pauses the destroyer)
//!   would otherwise hold both processors in the kernel for ever.

use ipc::hypercall::StopReason;

use crate::kernel::{Kernel, Next, Outcome};
use crate::machine::Machine;
use crate::object::ObjectId;
use crate::object::partition::RunState;
use crate::svm::exit::Exit;

/// What the processor does with a vCPU after one of its exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Enter it again (its entry is prepared).
    Enter,
    /// Leave it: it blocked, yielded or was preempted (it is in its queue
    /// or waits for an interrupt). Pick the next one.
    Leave,
    /// It stopped or was paused: ask [`Kernel::run_end`], then pick the next one.
    Off,
    /// Its hypercall waits for other processors: poll
    /// [`Kernel::wait_over`], then [`Kernel::finish_wait`].
    Wait(Outcome),
}

/// How the run ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// The root halted (every vCPU executed HLT with interrupts off) or
    /// asked to power off.
    PoweredOff,
    /// The root stopped for another reason (a fault).
    RootFault,
}

impl Kernel {
    /// Handles an exit of `vcpu`, running on `cpu` at `priority`, and
    /// decides what the processor does next; `slice_over` when its time
    /// slice has ended (it leaves if another vCPU wants the processor).
    pub fn after_exit(
        &mut self,
        m: &mut impl Machine,
        cpu: u32,
        vcpu: ObjectId,
        exit: Exit,
        slice_over: bool,
        priority: u8,
    ) -> After {
        match self.handle_exit(m, vcpu, exit) {
            Next::Resume if slice_over && self.should_preempt(cpu, priority) => {
                self.leave_or_off(vcpu)
            }
            Next::Resume => self.enter_or_off(m, vcpu),
            Next::Yield => self.leave_or_off(vcpu),
            Next::Blocked => After::Leave,
            Next::Off => After::Off,
            Next::Wait(outcome) => After::Wait(outcome),
        }
    }

    /// Prepares `vcpu`'s next entry: [`After::Enter`], or [`After::Off`]
    /// when it was stopped or paused meanwhile.
    pub fn enter_or_off(&mut self, m: &mut impl Machine, vcpu: ObjectId) -> After {
        if self.prepare_entry(m, vcpu) {
            After::Enter
        } else {
            After::Off
        }
    }

    /// Puts `vcpu` back in its queue ([`After::Leave`]), or takes it off
    /// when a stop or pause was asked while it ran ([`After::Off`]).
    fn leave_or_off(&mut self, vcpu: ObjectId) -> After {
        if self.requeue(vcpu) {
            After::Leave
        } else {
            After::Off
        }
    }

    /// Whether `caller` may stop waiting for `outcome`: the vCPU is off
    /// every processor, or every vCPU of the dying partition is; or
    /// `caller` itself was asked to stop or pause meanwhile (then it must
    /// leave its processor rather than hold it: what it waits for may be
    /// waiting for it).
    pub fn wait_over(&self, caller: ObjectId, outcome: Outcome) -> bool {
        let done = match outcome {
            Outcome::WaitVcpu(v) => !self.is_running(v),
            Outcome::WaitDestroy(p) => self.destroy_ready(p),
            Outcome::Done(_) | Outcome::Yield => true,
        };
        done || self.asked_off(caller)
    }

    /// Whether a stop or pause was asked for `vcpu` while it runs (or it is gone).
    fn asked_off(&self, vcpu: ObjectId) -> bool {
        let stopped = self
            .partition_of(vcpu)
            .and_then(|p| self.objects.partition(p))
            .is_none_or(|p| p.state != RunState::Running);
        stopped || self.objects.vcpu(vcpu).is_none_or(|v| v.pause_requested)
    }

    /// Finishes the waiting hypercall of `caller` once [`Kernel::wait_over`]
    /// said so, and prepares the caller's next entry. A destroy tears the
    /// partition down now or, when the caller stopped waiting before the
    /// partition's vCPUs were off, hands it to the reaper, which does once
    /// they are. The call succeeds either way: what it asked is under way
    /// (a paused vCPU's pause takes effect as it leaves its processor).
    pub fn finish_wait(
        &mut self,
        m: &mut impl Machine,
        caller: ObjectId,
        outcome: Outcome,
    ) -> After {
        match outcome {
            Outcome::WaitDestroy(p) if self.destroy_ready(p) => self.destroy_finish(m, p),
            Outcome::WaitDestroy(p) if !self.reaping.contains(&p) => {
                // Room: each partition at most once, and there are at most
                // MAX_PARTITIONS (quotas).
                let queued = self.reaping.push(p);
                debug_assert!(queued.is_ok(), "more partitions than MAX_PARTITIONS");
            }
            _ => {}
        }
        self.complete(m, caller, Ok([0; 3]));
        self.enter_or_off(m, caller)
    }

    /// Whether `vcpu`, just taken off its processor, ends the run: it is
    /// the root's and the root has stopped.
    pub fn run_end(&self, vcpu: ObjectId) -> Option<RunEnd> {
        let root = self.root?;
        if self.partition_of(vcpu) != Some(root) {
            return None;
        }
        match self.objects.partition(root)?.state {
            RunState::Stopped(StopReason::Halted, _) => Some(RunEnd::PoweredOff),
            RunState::Stopped(..) => Some(RunEnd::RootFault),
            RunState::Running | RunState::Dying => None,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Processors as state machines over one kernel, advanced one lock
    //! hold at a time in an order a seeded generator picks: the schedules
    //! of real processors, including the unlucky ones.

    use std::collections::HashMap;
    use std::vec::Vec;

    use ipc::hypercall::{Call, Rights, SlotHandle, Status};

    use super::*;
    use crate::object::vcpu::State;
    use crate::paging::Access;
    use crate::svm::vmcb::offset;

    use crate::testkit::FakeMachine as Fake;

    /// A processor between two lock holds.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Cpu {
        /// Picks the next vCPU.
        Idle,
        /// Picked this vCPU: prepares its entry.
        Entering(ObjectId),
        /// Runs it in guest mode: its next exit.
        Guest(ObjectId),
        /// Its hypercall waits for other processors.
        Waiting(ObjectId, Outcome),
        /// Took it off: does the run end?
        Off(ObjectId),
    }

    /// xorshift64*: a schedule per seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    const RAM_BASE: u64 = 0x100_0000;
    const RAM_PAGES: u64 = 1024;
    const VECTOR: u8 = 0x40;
    const IF: u64 = 1 << 9;

    /// What the guest of a vCPU asked last (to read its result at its next entry).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Asked {
        Nothing,
        Pause,
        Resume,
        Other,
    }

    /// The selftest=race root in miniature: vCPU A (processor 0) pauses
    /// and resumes vCPU B (processor 1) `rounds` times and signals B's
    /// port after each resume; B yields, is preempted by a busy child vCPU
    /// beside it, waits for its port with interrupts on, and acknowledges
    /// it; then both execute `cli; hlt`.
    struct Race {
        k: Kernel,
        m: Fake,
        cpus: [Cpu; 2],
        rng: Rng,
        a: ObjectId,
        b: ObjectId,
        child: ObjectId,
        /// The root's handles on A and on the busy child.
        a_slot: SlotHandle,
        child_slot: SlotHandle,
        b_slot: SlotHandle,
        port: SlotHandle,
        rounds: u32,
        /// A's progress: pauses asked, and whether its next call is the resume.
        done: u32,
        asked: HashMap<ObjectId, Asked>,
        b_acks: bool,
        /// Statuses A got that the ABI does not promise for its calls.
        wrong: Vec<(Asked, u64)>,
        end: Option<RunEnd>,
    }

    fn h(raw: u64) -> SlotHandle {
        SlotHandle::from_raw(raw).expect("a slot handle")
    }

    impl Race {
        fn new(seed: u64, rounds: u32) -> Race {
            let mut m = Fake::default();
            let mut k = Kernel::new(2, 16);
            let slat = m.slat_new().expect("SLAT");
            m.slat_map(slat, RAM_BASE, RAM_BASE, RAM_PAGES, Access::RWX)
                .expect("root RAM");
            let (root, caps) = k
                .create_root(&mut m, slat, &[(RAM_BASE, RAM_PAGES)], &[], &[])
                .expect("root");
            let vmcb = m.vmcb_new().expect("VMCB");
            let (a, a_cap) = k.create_boot_vcpu(root, vmcb, 0).expect("root vCPU");
            let (me, ram) = (caps[0].slot, caps[1].slot);
            let call = |k: &mut Kernel, m: &mut Fake, c: Call| match k.call(m, root, a, &c.encode())
            {
                Ok(Outcome::Done(r)) => r,
                other => panic!("{c:?}: {other:?}"),
            };
            // B on processor 1, with a port that wakes it.
            let b_slot = h(call(
                &mut k,
                &mut m,
                Call::VcpuCreate {
                    partition: me,
                    rip: 0x1000,
                    rsp: 0x8000,
                    cr3: 0x2000,
                    arg: 0,
                    flags: 2 << 8,
                },
            )[0]);
            call(&mut k, &mut m, Call::VcpuStart { vcpu: b_slot });
            let port = h(call(&mut k, &mut m, Call::PortCreate)[0]);
            call(
                &mut k,
                &mut m,
                Call::PortBind {
                    port,
                    vcpu: b_slot,
                    vector: VECTOR,
                },
            );
            // A child whose vCPU is always ready on processor 1: B gets preempted.
            let r = call(
                &mut k,
                &mut m,
                Call::PartitionCreate {
                    authority: me,
                    memory: ram,
                    first_page: 512,
                    pages: 16,
                    name: ipc::hypercall::Name::new("busy"),
                    ceiling: 0,
                },
            );
            let (p, mem) = (h(r[0]), h(r[1]));
            call(
                &mut k,
                &mut m,
                Call::MemoryMap {
                    partition: p,
                    memory: mem,
                    first_page: 0,
                    gpa: 0,
                    pages: 16,
                    access: Rights::READ | Rights::WRITE | Rights::EXECUTE,
                },
            );
            let c = h(call(
                &mut k,
                &mut m,
                Call::VcpuCreate {
                    partition: p,
                    rip: 0x1000,
                    rsp: 0x8000,
                    cr3: 0x2000,
                    arg: 0,
                    flags: 2 << 8,
                },
            )[0]);
            call(&mut k, &mut m, Call::VcpuStart { vcpu: c });
            let vcpu_of = |k: &Kernel, slot: SlotHandle| {
                k.objects
                    .partition(root)
                    .expect("root")
                    .cspace
                    .check(slot, crate::object::ObjectKind::Vcpu, Rights::NONE)
                    .expect("cap")
                    .object
            };
            let (b, child) = (vcpu_of(&k, b_slot), vcpu_of(&k, c));
            let vmcb_b = k.objects.vcpu(b).expect("B").vmcb;
            m.vmcb(vmcb_b).write_u64(offset::RFLAGS, 0x2 | IF);
            Race {
                k,
                m,
                cpus: [Cpu::Idle; 2],
                rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
                a,
                b,
                child,
                a_slot: a_cap.slot,
                child_slot: p,
                b_slot,
                port,
                rounds,
                done: 0,
                asked: HashMap::new(),
                b_acks: false,
                wrong: Vec::new(),
                end: None,
            }
        }

        /// Puts `call` in `vcpu`'s registers as its guest would.
        fn ask(&mut self, vcpu: ObjectId, call: Call, asked: Asked) -> Exit {
            let r = call.encode();
            let v = self.k.objects.vcpu_mut(vcpu).expect("live vCPU");
            (v.regs.rdi, v.regs.rsi, v.regs.rdx) = (r[1], r[2], r[3]);
            (v.regs.r8, v.regs.r9, v.regs.r10) = (r[4], r[5], r[6]);
            let vmcb = v.vmcb;
            self.m.vmcb(vmcb).write_u64(offset::RAX, r[0]);
            self.asked.insert(vcpu, asked);
            Exit::Vmmcall
        }

        /// `vcpu`'s guest runs until its next exit.
        fn guest(&mut self, vcpu: ObjectId) -> Exit {
            let vmcb = self.k.objects.vcpu(vcpu).expect("live vCPU").vmcb;
            // The result of its last call.
            let status = self.m.vmcb(vmcb).read_u64(offset::RAX);
            match self
                .asked
                .insert(vcpu, Asked::Nothing)
                .unwrap_or(Asked::Nothing)
            {
                asked @ (Asked::Pause | Asked::Resume) => {
                    if status != Status::Success as u64 {
                        self.wrong.push((asked, status));
                    }
                    if asked == Asked::Resume {
                        self.done += 1;
                    }
                }
                Asked::Nothing | Asked::Other => {}
            }
            // An interrupt injected at entry is taken.
            let event = self.m.vmcb(vmcb).read_u64(offset::EVENT_INJECTION);
            if event & (1 << 31) != 0 {
                self.m.vmcb(vmcb).write_u64(offset::EVENT_INJECTION, 0);
                self.b_acks = true;
            }
            if vcpu == self.a {
                return self.first_vcpu();
            }
            if vcpu == self.b {
                return self.second_vcpu();
            }
            Exit::Interrupt
        }

        /// A: pause B, resume B, signal B's port; after the rounds, halt.
        fn first_vcpu(&mut self) -> Exit {
            let (a, b) = (self.a, self.b_slot);
            if self.done >= self.rounds {
                // B may wait for its port: wake it until it can see the end.
                if self
                    .k
                    .objects
                    .vcpu(self.b)
                    .is_some_and(|v| v.state == State::Blocked)
                {
                    return self.ask(a, Call::PortSignal { port: self.port }, Asked::Other);
                }
                return self.halt(a, false);
            }
            match self.rng.below(4) {
                0 => Exit::Interrupt,
                1 => self.ask(a, Call::PortSignal { port: self.port }, Asked::Other),
                _ if self
                    .k
                    .objects
                    .vcpu(self.b)
                    .is_some_and(|v| v.state == State::Paused) =>
                {
                    self.ask(a, Call::VcpuResume { vcpu: b }, Asked::Resume)
                }
                _ => self.ask(a, Call::VcpuPause { vcpu: b }, Asked::Pause),
            }
        }

        /// B: yields, runs, waits for its port; after A's rounds, halts.
        fn second_vcpu(&mut self) -> Exit {
            let b = self.b;
            if core::mem::take(&mut self.b_acks) {
                return self.ask(b, Call::Acknowledge { slot: self.port }, Asked::Other);
            }
            if self.done >= self.rounds {
                return self.halt(b, false);
            }
            match self.rng.below(4) {
                0 => self.ask(b, Call::Yield, Asked::Other),
                1 => self.halt(b, true),
                _ => Exit::Interrupt,
            }
        }

        /// `hlt`, with interrupts on (`sti; hlt`) or off (`cli; hlt`).
        fn halt(&mut self, vcpu: ObjectId, interrupts: bool) -> Exit {
            let vmcb = self.k.objects.vcpu(vcpu).expect("live vCPU").vmcb;
            let rflags = if interrupts { 0x2 | IF } else { 0x2 };
            self.m.vmcb(vmcb).write_u64(offset::RFLAGS, rflags);
            Exit::Hlt
        }

        /// Advances processor `cpu` by one lock hold.
        fn step(&mut self, cpu: usize) {
            let (k, m) = (&mut self.k, &mut self.m);
            let next = |after: After, v: ObjectId| match after {
                After::Enter => Cpu::Guest(v),
                After::Leave => Cpu::Idle,
                After::Off => Cpu::Off(v),
                After::Wait(o) => Cpu::Waiting(v, o),
            };
            self.cpus[cpu] = match self.cpus[cpu] {
                Cpu::Idle => match k.pick(cpu as u32) {
                    Some(v) => Cpu::Entering(v),
                    None => Cpu::Idle,
                },
                Cpu::Entering(v) => next(k.enter_or_off(m, v), v),
                Cpu::Guest(v) => {
                    let exit = self.guest(v);
                    let slice_over = self.rng.below(3) == 0;
                    let priority = self.k.objects.vcpu(v).map_or(0, |x| x.priority);
                    let after =
                        self.k
                            .after_exit(&mut self.m, cpu as u32, v, exit, slice_over, priority);
                    next(after, v)
                }
                Cpu::Waiting(v, o) if k.wait_over(v, o) => next(k.finish_wait(m, v, o), v),
                Cpu::Waiting(v, o) => Cpu::Waiting(v, o),
                Cpu::Off(v) => {
                    self.end = self.end.or(k.run_end(v));
                    Cpu::Idle
                }
            };
        }

        /// Runs until the run ends or `limit` lock holds pass.
        fn run(&mut self, limit: u32) {
            for _ in 0..limit {
                if self.end.is_some() {
                    return;
                }
                let cpu = self.rng.below(2) as usize;
                self.step(cpu);
            }
        }
    }

    #[test]
    fn a_pause_racing_a_preemption_a_yield_or_a_halt_is_never_lost() {
        for seed in 0..400 {
            let mut race = Race::new(seed, 30);
            race.run(200_000);
            let states: Vec<_> = [race.a, race.b, race.child]
                .iter()
                .map(|&v| race.k.objects.vcpu(v).map(|v| (v.state, v.pause_requested)))
                .collect();
            assert_eq!(
                race.wrong,
                [],
                "seed {seed}: a pause or resume of B failed (vCPU states {states:?})"
            );
            assert_eq!(
                race.end,
                Some(RunEnd::PoweredOff),
                "seed {seed}: the root's end was never reported after {} rounds (states {states:?}, processors {:?})",
                race.done,
                race.cpus
            );
        }
    }

    #[test]
    fn a_pause_asked_while_the_vcpu_leaves_takes_effect_as_it_leaves() {
        for (name, leave) in [
            ("preempted", 0),
            ("yielding", 1),
            ("halting with interrupts on", 2),
        ] {
            let mut race = Race::new(1, 1);
            // B on processor 1, A asks for the pause while B's exit is on its way.
            assert_eq!(race.k.pick(1), Some(race.b), "{name}");
            assert!(race.k.prepare_entry(&mut race.m, race.b));
            let exit = race.ask(race.a, Call::VcpuPause { vcpu: race.b_slot }, Asked::Pause);
            let a = race.a;
            assert_eq!(race.k.pick(0), Some(a));
            assert!(race.k.prepare_entry(&mut race.m, a));
            let wait = race.k.after_exit(&mut race.m, 0, a, exit, false, 0);
            assert_eq!(wait, After::Wait(Outcome::WaitVcpu(race.b)), "{name}");
            let b = race.b;
            let exit = match leave {
                0 => Exit::Interrupt,
                1 => race.ask(b, Call::Yield, Asked::Other),
                _ => race.halt(b, true),
            };
            // The busy child is ready beside B: a slice that ends preempts it.
            assert_eq!(
                race.k.after_exit(&mut race.m, 1, b, exit, true, 0),
                After::Off,
                "{name}"
            );
            let v = race.k.objects.vcpu(b).expect("B");
            assert_eq!(
                (v.state, v.pause_requested),
                (State::Paused, false),
                "{name}"
            );
            assert!(race.k.wait_over(a, Outcome::WaitVcpu(b)));
            assert_eq!(
                race.k.finish_wait(&mut race.m, a, Outcome::WaitVcpu(b)),
                After::Enter
            );
            let resume = race.ask(a, Call::VcpuResume { vcpu: race.b_slot }, Asked::Resume);
            assert_eq!(
                race.k.after_exit(&mut race.m, 0, a, resume, false, 0),
                After::Enter
            );
            let vmcb = race.k.objects.vcpu(a).expect("A").vmcb;
            assert_eq!(
                race.m.vmcb(vmcb).read_u64(offset::RAX),
                Status::Success as u64,
                "{name}: resumed"
            );
            assert_eq!(
                race.k.objects.vcpu(b).map(|v| v.state),
                Some(State::Ready),
                "{name}"
            );
            // The busy child was queued first on processor 1; then B.
            let picked = [race.k.pick(1), race.k.pick(1)];
            assert!(picked.contains(&Some(b)), "{name}: it runs again");
            assert!(
                race.k.prepare_entry(&mut race.m, b),
                "{name}: not paused by a stale request"
            );
        }
    }

    /// Takes `vcpu` onto processor `cpu`; what was queued before it goes
    /// back to the queue.
    fn onto(race: &mut Race, cpu: u32, vcpu: ObjectId) {
        let mut others = Vec::new();
        while let Some(v) = race.k.pick(cpu) {
            if v == vcpu {
                assert!(race.k.prepare_entry(&mut race.m, v));
                for other in others {
                    assert!(race.k.requeue(other));
                }
                return;
            }
            others.push(v);
        }
        panic!("{vcpu:?} is not ready on processor {cpu}");
    }

    #[test]
    fn two_vcpus_pausing_each_other_leave_their_processors() {
        let mut race = Race::new(7, 1);
        let (a, b) = (race.a, race.b);
        onto(&mut race, 0, a);
        onto(&mut race, 1, b);
        let exit = race.ask(a, Call::VcpuPause { vcpu: race.b_slot }, Asked::Pause);
        let a_waits = race.k.after_exit(&mut race.m, 0, a, exit, false, 0);
        assert_eq!(a_waits, After::Wait(Outcome::WaitVcpu(b)));
        let exit = race.ask(b, Call::VcpuPause { vcpu: race.a_slot }, Asked::Pause);
        let b_waits = race.k.after_exit(&mut race.m, 1, b, exit, false, 0);
        assert_eq!(b_waits, After::Wait(Outcome::WaitVcpu(a)));
        // Each waits for the other to leave its processor: both must stop
        // waiting (before, both processors spun in the kernel for ever).
        assert!(
            race.k.wait_over(a, Outcome::WaitVcpu(b)),
            "A was asked to pause"
        );
        assert_eq!(
            race.k.finish_wait(&mut race.m, a, Outcome::WaitVcpu(b)),
            After::Off
        );
        assert!(race.k.wait_over(b, Outcome::WaitVcpu(a)));
        assert_eq!(
            race.k.finish_wait(&mut race.m, b, Outcome::WaitVcpu(a)),
            After::Off
        );
        for v in [a, b] {
            let v = race.k.objects.vcpu(v).expect("vCPU");
            assert_eq!((v.state, v.pause_requested), (State::Paused, false));
            let status = race.m.vmcb(v.vmcb).read_u64(offset::RAX);
            assert_eq!(status, Status::Success as u64, "both pauses succeeded");
        }
    }

    #[test]
    fn a_destroy_whose_caller_is_paused_meanwhile_is_finished_by_the_reaper() {
        let mut race = Race::new(7, 1);
        let (a, b, child) = (race.a, race.b, race.child);
        onto(&mut race, 0, a);
        onto(&mut race, 1, child);
        let exit = race.ask(
            a,
            Call::PartitionDestroy {
                partition: race.child_slot,
            },
            Asked::Other,
        );
        let partition = race.k.partition_of(child).expect("child partition");
        assert_eq!(
            race.k.after_exit(&mut race.m, 0, a, exit, false, 0),
            After::Wait(Outcome::WaitDestroy(partition))
        );
        // B (on no processor) is not running: its pause of A is a request.
        let pause = race.ask(b, Call::VcpuPause { vcpu: race.a_slot }, Asked::Pause);
        assert_eq!(pause, Exit::Vmmcall);
        let regs = race.k.objects.vcpu(b).expect("B").regs;
        let vmcb = race.k.objects.vcpu(b).expect("B").vmcb;
        let rax = race.m.vmcb(vmcb).read_u64(offset::RAX);
        let call = [
            rax, regs.rdi, regs.rsi, regs.rdx, regs.r8, regs.r9, regs.r10,
        ];
        let root = race.k.root.expect("root");
        assert_eq!(
            race.k.call(&mut race.m, root, b, &call),
            Ok(Outcome::WaitVcpu(a))
        );
        // A stops waiting although the child's vCPU is still on processor 1.
        let destroy = Outcome::WaitDestroy(partition);
        assert!(race.k.wait_over(a, destroy));
        assert_eq!(race.k.finish_wait(&mut race.m, a, destroy), After::Off);
        assert!(
            race.k.objects.partition(partition).is_some(),
            "its vCPU is still on"
        );
        // The child's vCPU leaves; the next entry anywhere tears it down.
        assert!(!race.k.prepare_entry(&mut race.m, child));
        onto(&mut race, 1, b);
        assert!(
            race.k.objects.partition(partition).is_none(),
            "the reaper finished it"
        );
    }

    #[test]
    fn the_last_root_vcpu_to_halt_ends_the_run_whatever_the_order() {
        for seed in 0..200 {
            let mut race = Race::new(seed, 0);
            race.run(10_000);
            assert_eq!(race.end, Some(RunEnd::PoweredOff), "seed {seed}");
        }
    }
}
