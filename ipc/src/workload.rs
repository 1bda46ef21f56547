//! The child runtime's workloads as the root partition and the test harness
//! see them: workload names, what their `args` mean, the dirty-page protocol
//! with the root, and every console line a test waits for.
//!
//! The child runtime prints these with `{}`; the root and the QEMU harness
//! build the same text with `to_string()` (the microkernel prefixes each
//! child line with `[<partition name>] `).
//!
//! # Invariants
//! A marker's text is defined here once; the host tests below pin its shape.

use core::fmt;

/// Workload `hello`: every vCPU prints [`VcpuHello`] and halts. No args.
pub const HELLO: &str = "hello";
/// Workload `idle`: every vCPU prints [`IDLE_LINE`] once; vCPU 0 then
/// sleeps in `STI; HLT` (interrupts still taken: VMBus, integration
/// services) until the root asks for a shutdown, the others halt at once;
/// the VM a node keeps running at no cost. No args.
pub const IDLE: &str = "idle";
/// The line each vCPU of the `idle` workload prints before it sleeps.
pub const IDLE_LINE: &str = "idle: sleeping until stopped";

/// Workload `spin`: every vCPU busy-loops, printing [`SpinProgress`] for
/// step 1..=`args[0]` (0 = [`SPIN_DEFAULT_STEPS`]) every `args[1]`
/// iterations (0 = [`SPIN_DEFAULT_ITERATIONS`]), then halts.
pub const SPIN: &str = "spin";
/// Steps the `spin` workload reports when `args[0]` is 0.
pub const SPIN_DEFAULT_STEPS: u64 = 3;
/// Busy-loop iterations per `spin` step when `args[1]` is 0 (about half a
/// second per step under QEMU TCG).
pub const SPIN_DEFAULT_ITERATIONS: u64 = 250_000_000;

/// Workload `dirty`: the dirty-page-logging protocol with the root.
///
/// 1. vCPU 0 binds nothing itself: the root has bound `from_root` to
///    [`crate::child::CHILD_EVENT_VECTOR`]. The child enables interrupts and
///    signals `to_root` once ("ready").
/// 2. The root enables dirty logging (and clears the log), then signals
///    `from_root` ("go").
/// 3. The child acknowledges `from_root`, writes one byte into page `i` of
///    the [`DIRTY_WINDOW_PAGES`]-page window at guest-physical `args[0]` for
///    every bit `i` set in `args[1]`, touches nothing else in the window,
///    signals `to_root` again ("done"), prints [`DirtyDone`] and halts.
///
/// `args[0]` must be page-aligned, and the window must lie inside the
/// child's memory clear of page 0, the boot page and the vCPU stacks (the
/// heap range is the natural place: the runtime allocates nothing while
/// `dirty` runs). Other vCPUs halt at once.
pub const DIRTY: &str = "dirty";
/// Pages in the `dirty` workload's window (one bit of `args[1]` each).
pub const DIRTY_WINDOW_PAGES: u64 = 64;
/// Byte offset inside each page that the `dirty` workload writes.
pub const DIRTY_BYTE_OFFSET: u64 = 8;

/// Workload `hostile`: vCPU 0 tries what a hostile child could (see the
/// child runtime's `workloads/hostile.rs`), prints one [`HostileCheck`] line
/// per check and the [`HostileSummary`], then touches guest-physical
/// `memory_bytes + HOSTILE_UNMAPPED_OFFSET`, which the microkernel must
/// answer by stopping the partition with a nested page fault. `args[0]`
/// seeds the random-hypercall round (0 = a fixed seed). Other vCPUs halt.
pub const HOSTILE: &str = "hostile";
/// How far past the end of its memory the `hostile` workload's last access lands.
pub const HOSTILE_UNMAPPED_OFFSET: u64 = 1 << 20;
/// Checks the `hostile` workload runs: a clean run ends with
/// `HostileSummary { passed: HOSTILE_CHECKS, failed: 0 }`.
pub const HOSTILE_CHECKS: u32 = 23;
/// Random hypercalls in the `hostile` workload's last round.
pub const HOSTILE_RANDOM_CALLS: u64 = 10_000;

/// Workload `greedy`: a child that tries to take more than it was given.
/// vCPU 0 runs one attack, prints a [`HostileCheck`] line per check and
/// a [`HostileSummary`], then halts; other vCPUs halt at once.
/// - `args[0]` = [`GREEDY_MEMORY`]: kernel memory. [`GREEDY_ROUNDS`] rounds
///   of `PortCreate` + `CapDelete` (each must succeed: deleted ports are
///   freed), then ports until the kernel refuses one (it must say
///   `OutOfMemory`, its quota spent, before the capability space fills),
///   then every port deleted and one created again.
/// - `args[0]` = [`GREEDY_CPU`]: processor time. A vCPU of priority 7 on
///   itself (refused with `InvalidArgument` above the ceiling its creator
///   set), then as many vCPUs as it may have at the highest priority the
///   kernel accepts, every one (vCPU 0 too) spinning with interrupts off
///   for `args[1]` milliseconds; then [`GreedySpun`].
pub const GREEDY: &str = "greedy";
/// `greedy` mode: kernel memory.
pub const GREEDY_MEMORY: u64 = 1;
/// `greedy` mode: processor time.
pub const GREEDY_CPU: u64 = 2;
/// `PortCreate` + `CapDelete` rounds of the memory attack (the kernel of
/// issue 14 ran out of heap and panicked after about 4,000).
pub const GREEDY_ROUNDS: u64 = 20_000;
/// Checks of the memory attack.
pub const GREEDY_MEMORY_CHECKS: u32 = 4;
/// Checks of the processor-time attack.
pub const GREEDY_CPU_CHECKS: u32 = 2;

/// `greedy: N vcpus spun with interrupts off at priority P`: the
/// processor-time attack is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GreedySpun {
    /// vCPUs that spun (vCPU 0 included).
    pub vcpus: u32,
    /// Their priority.
    pub priority: u8,
}

impl fmt::Display for GreedySpun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "greedy: {} vcpus spun with interrupts off at priority {}",
            self.vcpus, self.priority
        )
    }
}

/// Workload `instructions`: vCPU 0 tries the instructions a partition
/// gets no effect from — INVLPGA, MONITOR and MWAIT (each must raise
/// #UD), WBINVD and INVD (each must complete, as a no-op the microkernel
/// reports), CPUID's MONITOR bit (hidden) — then takes a port interrupt
/// made pending while its interrupts were off inside `STI; NOP; NOP; NOP;
/// CLI`, and asks for `PowerOff` and `Reset` with its own partition
/// capability (each refused with `InsufficientRights`). One
/// [`HostileCheck`] line per check, then [`InstructionsSummary`]; it then
/// halts normally. The root gives it CONTROL on its own vCPU 0 (to bind a
/// port of its own). Other vCPUs halt at once. No args.
pub const INSTRUCTIONS: &str = "instructions";
/// Checks of the `instructions` workload.
pub const INSTRUCTION_CHECKS: u32 = 9;
/// The vector the `instructions` workload binds its own port to.
pub const INSTRUCTIONS_VECTOR: u8 = 0x50;

/// `instructions: N checks passed, M failed`: the `instructions` workload's summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstructionsSummary {
    /// Checks that passed.
    pub passed: u32,
    /// Checks that failed.
    pub failed: u32,
}

impl fmt::Display for InstructionsSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "instructions: {} checks passed, {} failed",
            self.passed, self.failed
        )
    }
}

/// Workload `hang`: a child whose integration services misbehave
/// (`docs/vmbus.md`, "Integration services"). vCPU 0 answers heartbeats;
/// other vCPUs halt at once.
/// - `args[0]` = [`HANG_SILENT`]: for `args[1]` milliseconds, then prints
///   [`HangSilent`] and spins with interrupts off for good, answering
///   nothing (the root reports its heartbeat lost).
/// - `args[0]` = [`HANG_STUBBORN`]: for ever, and ignores shutdown
///   requests (the root turns it off when the time limit passes).
pub const HANG: &str = "hang";
/// `hang` mode: falls silent.
pub const HANG_SILENT: u64 = 1;
/// `hang` mode: ignores shutdown requests.
pub const HANG_STUBBORN: u64 = 2;

/// `hang: silent from now on (interrupts off)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HangSilent;

impl fmt::Display for HangSilent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hang: silent from now on (interrupts off)")
    }
}

/// `shutdown: workload stopped, disks flushed` (or `no disks`): the child
/// runtime ends a graceful shutdown the root asked for; it reports
/// `ShutdownDone` and halts next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownComplete {
    /// Whether the workload had disks (and flushed them).
    pub flushed: bool,
}

impl fmt::Display for ShutdownComplete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let disks = if self.flushed {
            "disks flushed"
        } else {
            "no disks"
        };
        write!(f, "shutdown: workload stopped, {disks}")
    }
}

/// Workload `sleep`: vCPU 0 sleeps on a kernel timer (a port of its own
/// bound to [`SLEEP_VECTOR`], through `partition_rt::Sleeper`) for each
/// of [`SLEEP_CHECK_NAMES`] and checks against its TSC that it woke not
/// before the deadline and at most [`SLEEP_LATE_LIMIT_MS`] after it: one
/// [`SleepCheck`] line per check, then [`SleepSummary`]; then halts. The
/// root gives it CONTROL on its own vCPU 0 ([`binds_own_port`]). Other
/// vCPUs halt at once. `args[0]`: milliseconds to sleep before the
/// checks (0: none).
pub const SLEEP: &str = "sleep";
/// The vector the `sleep` workload's timer port is bound to (the second
/// timer of its last check uses the next one).
pub const SLEEP_VECTOR: u8 = 0x51;
/// The checks of the `sleep` workload, in order: one-shot sleeps of 1, 10
/// and 100 ms; an absolute deadline 50 ms ahead; a periodic 20 ms timer
/// firing five times (each fire checked against its own deadline); a wait
/// whose condition never holds, ended by its 30 ms timeout; a wait with a
/// 10 s timeout ended after about 20 ms by a second timer's signal.
pub const SLEEP_CHECK_NAMES: [&str; 7] = [
    "1 ms",
    "10 ms",
    "100 ms",
    "absolute 50 ms",
    "periodic 20 ms x5",
    "timeout 30 ms",
    "a signal before a 10 s timeout",
];
/// How late after its deadline a `sleep` wake-up may come (generous: QEMU
/// TCG on a loaded host; the kernel checks timers every 10 ms tick).
pub const SLEEP_LATE_LIMIT_MS: u64 = 500;

/// Workload `hostile-timers`: vCPU 0 abuses kernel timers — first timers
/// until the kernel refuses one (`OutOfMemory`), every one armed periodic
/// at the minimum period for `args[0]` ms (0 =
/// [`HOSTILE_TIMERS_DEFAULT_FLOOD_MS`]) on a port bound to
/// [`HOSTILE_TIMERS_VECTOR`], then deleted; then timers on slots that are
/// no port it may signal (empty, stale, another type, a port without
/// SIGNAL), zero, maximal and over-a-year deadlines, periods below the
/// minimum, unknown flags, a copy without CONTROL, a timer whose port is
/// gone, 5,000 create/delete rounds — one [`HostileCheck`] line per check
/// and a [`HostileSummary`] of [`HOSTILE_TIMER_CHECKS`]; then it halts.
/// The root gives it CONTROL on its own vCPU 0.
pub const HOSTILE_TIMERS: &str = "hostile-timers";
/// Checks of the `hostile-timers` workload.
pub const HOSTILE_TIMER_CHECKS: u32 = 20;
/// The vector of the `hostile-timers` workload's flood port.
pub const HOSTILE_TIMERS_VECTOR: u8 = 0x52;
/// How long the `hostile-timers` flood runs when `args[0]` is 0.
pub const HOSTILE_TIMERS_DEFAULT_FLOOD_MS: u64 = 5_000;

/// Whether the root gives a child running `workload` CONTROL on its own
/// vCPU 0, to bind a port of its own to it.
pub fn binds_own_port(workload: &str) -> bool {
    [INSTRUCTIONS, SLEEP, HOSTILE_TIMERS].contains(&workload)
}

/// `sleep: <check>: ok`: the start of a passed [`SleepCheck`] line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SleepOk<'a>(pub &'a str);

impl fmt::Display for SleepOk<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sleep: {}: ok", self.0)
    }
}

/// `sleep: <check>: ok, woke N us after its deadline` or `sleep:
/// <check>: FAILED (<detail>)`.
#[derive(Clone, Copy, Debug)]
pub struct SleepCheck<'a> {
    /// The check's name (one of [`SLEEP_CHECK_NAMES`]).
    pub check: &'a str,
    /// How late it woke (µs), or what went wrong.
    pub outcome: Result<u64, fmt::Arguments<'a>>,
}

impl fmt::Display for SleepCheck<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.outcome {
            Ok(late_us) => write!(
                f,
                "{}, woke {} us after its deadline",
                SleepOk(self.check),
                late_us
            ),
            Err(detail) => write!(f, "sleep: {}: FAILED ({})", self.check, detail),
        }
    }
}

/// `sleep: N checks passed, M failed`: the `sleep` workload's summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SleepSummary {
    /// Checks that passed.
    pub passed: u32,
    /// Checks that failed.
    pub failed: u32,
}

impl fmt::Display for SleepSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sleep: {} checks passed, {} failed",
            self.passed, self.failed
        )
    }
}

/// Every workload the child runtime knows.
pub const ALL: [&str; 12] = [
    HELLO,
    IDLE,
    SPIN,
    DIRTY,
    HOSTILE,
    CHATTY,
    VMBUS_HOSTILE,
    GREEDY,
    INSTRUCTIONS,
    HANG,
    SLEEP,
    HOSTILE_TIMERS,
];

/// `<workload> workload on N vcpus`: vCPU 0 starts a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadStart<'a> {
    /// The workload's name.
    pub workload: &'a str,
    /// vCPUs in the partition.
    pub vcpus: u32,
}

impl fmt::Display for WorkloadStart<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} workload on {} vcpus", self.workload, self.vcpus)
    }
}

/// `unknown workload "<name>"`: the boot page named no workload the runtime has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownWorkload<'a>(pub &'a str);

impl fmt::Display for UnknownWorkload<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown workload {:?}", self.0)
    }
}

/// `hello from vcpu I of N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuHello {
    /// This vCPU's index (0 first).
    pub vcpu: u32,
    /// vCPUs in the partition.
    pub of: u32,
}

impl fmt::Display for VcpuHello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hello from vcpu {} of {}", self.vcpu, self.of)
    }
}

/// `vcpu I progress K`: vCPU I finished busy-loop step K of the `spin` workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpinProgress {
    /// The vCPU's index.
    pub vcpu: u32,
    /// The step just finished (1 first).
    pub step: u64,
}

impl fmt::Display for SpinProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vcpu {} progress {}", self.vcpu, self.step)
    }
}

/// `dirty: wrote N pages`: the `dirty` workload wrote its pages and signalled "done".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirtyDone {
    /// Pages written (bits set in `args[1]`).
    pub pages: u32,
}

impl fmt::Display for DirtyDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dirty: wrote {} pages", self.pages)
    }
}

/// `hostile: <check>: ok` or `hostile: <check>: FAILED (<detail>)`.
#[derive(Clone, Copy, Debug)]
pub struct HostileCheck<'a> {
    /// The check's name.
    pub check: &'a str,
    /// `None` if it passed, else what happened instead.
    pub failure: Option<fmt::Arguments<'a>>,
}

impl fmt::Display for HostileCheck<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.failure {
            None => write!(f, "hostile: {}: ok", self.check),
            Some(detail) => write!(f, "hostile: {}: FAILED ({})", self.check, detail),
        }
    }
}

/// `hostile: N checks passed, M failed`: the `hostile` workload's summary,
/// printed just before its final access to unmapped memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostileSummary {
    /// Checks that passed.
    pub passed: u32,
    /// Checks that failed.
    pub failed: u32,
}

impl fmt::Display for HostileSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hostile: {} checks passed, {} failed",
            self.passed, self.failed
        )
    }
}

/// `hostile: touching unmapped guest-physical 0x...`: printed just before the
/// last access; the partition must stop on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostileTouchUnmapped(pub u64);

impl fmt::Display for HostileTouchUnmapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hostile: touching unmapped guest-physical {:#x}", self.0)
    }
}

/// Printed if the access to unmapped memory came back (isolation broken).
pub const HOSTILE_STILL_RUNNING: &str =
    "hostile: FAILED: touching unmapped memory did not stop the partition";

/// Bytes at the start of the data disk's `base.vhd` that hold the
/// [`base_pattern_byte`] pattern (the rest of the disk reads as zeros). Its
/// differencing children `beta.vhd` and `gamma.vhd` show the same bytes until
/// they are written.
pub const BASE_PATTERN_LEN: u64 = 1 << 20;

/// The byte at virtual-disk `offset` of the data disk's `base.vhd` (for
/// `offset < BASE_PATTERN_LEN`): `(offset / 512 * 7 + offset % 512) as u8`,
/// so each 512-byte sector is a ramp that starts 7 higher than the one before
/// (a sector read from the wrong place does not match).
pub const fn base_pattern_byte(offset: u64) -> u8 {
    (offset / 512 * 7 + offset % 512) as u8
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn base_pattern_is_a_ramp_per_sector() {
        assert_eq!(base_pattern_byte(0), 0);
        assert_eq!(base_pattern_byte(1), 1);
        assert_eq!(base_pattern_byte(511), 255);
        assert_eq!(base_pattern_byte(512), 7);
        assert_eq!(base_pattern_byte(513), 8);
        assert_eq!(base_pattern_byte(1024), 14);
        assert_eq!(
            base_pattern_byte(BASE_PATTERN_LEN - 1),
            ((2047 * 7 + 511) % 256) as u8
        );
        // Neighbouring sectors differ everywhere.
        assert!((0..512).all(|i| base_pattern_byte(i) != base_pattern_byte(512 + i)));
    }

    #[test]
    fn markers_render_as_documented() {
        assert_eq!(
            WorkloadStart {
                workload: SPIN,
                vcpus: 4
            }
            .to_string(),
            "spin workload on 4 vcpus"
        );
        assert_eq!(
            UnknownWorkload("nope").to_string(),
            "unknown workload \"nope\""
        );
        assert_eq!(
            VcpuHello { vcpu: 1, of: 2 }.to_string(),
            "hello from vcpu 1 of 2"
        );
        assert_eq!(
            SpinProgress { vcpu: 3, step: 2 }.to_string(),
            "vcpu 3 progress 2"
        );
        assert_eq!(DirtyDone { pages: 5 }.to_string(), "dirty: wrote 5 pages");
        assert_eq!(
            HostileSummary {
                passed: 20,
                failed: 0
            }
            .to_string(),
            "hostile: 20 checks passed, 0 failed"
        );
        assert_eq!(
            HostileTouchUnmapped(0x110_0000).to_string(),
            "hostile: touching unmapped guest-physical 0x1100000"
        );
    }

    #[test]
    fn hostile_check_lines() {
        assert_eq!(
            HostileCheck {
                check: "stale slot",
                failure: None
            }
            .to_string(),
            "hostile: stale slot: ok"
        );
        let got = 7;
        assert_eq!(
            HostileCheck {
                check: "rdmsr apic base",
                failure: Some(format_args!("got vector {got}")),
            }
            .to_string(),
            "hostile: rdmsr apic base: FAILED (got vector 7)"
        );
    }

    #[test]
    fn sleep_lines() {
        assert_eq!(
            SleepCheck {
                check: "1 ms",
                outcome: Ok(9500)
            }
            .to_string(),
            "sleep: 1 ms: ok, woke 9500 us after its deadline"
        );
        assert!(
            SleepCheck {
                check: "1 ms",
                outcome: Ok(1)
            }
            .to_string()
            .starts_with(&SleepOk("1 ms").to_string())
        );
        assert_eq!(
            SleepCheck {
                check: "10 ms",
                outcome: Err(format_args!("woke 3 us early"))
            }
            .to_string(),
            "sleep: 10 ms: FAILED (woke 3 us early)"
        );
        assert_eq!(
            SleepSummary {
                passed: 7,
                failed: 0
            }
            .to_string(),
            "sleep: 7 checks passed, 0 failed"
        );
        assert!(binds_own_port(SLEEP) && binds_own_port(HOSTILE_TIMERS));
        assert!(!binds_own_port(HELLO));
    }

    #[test]
    fn workload_names_fit_the_boot_page() {
        for name in ALL {
            assert!(name.len() <= crate::child::MAX_WORKLOAD);
        }
    }
}

/// Workload `chatty`: vCPU 0 prints [`ChattyLine`] for 1..=`args[0]` (0 =
/// [`CHATTY_DEFAULT_LINES`]) as fast as its console takes them, then
/// [`ChattyDone`], and halts. Other vCPUs halt.
pub const CHATTY: &str = "chatty";
/// Lines `chatty` prints when `args[0]` is 0.
pub const CHATTY_DEFAULT_LINES: u64 = 100;

/// `console line N of M`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChattyLine {
    /// This line's number (1 first).
    pub seq: u64,
    /// Lines in all.
    pub of: u64,
}

impl fmt::Display for ChattyLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "console line {} of {}", self.seq, self.of)
    }
}

/// `chatty: N lines sent, S signals to the root`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChattyDone {
    /// Lines sent over VMBus (this line not counted).
    pub lines: u64,
    /// Signals the child sent on its console channel.
    pub signals: u64,
}

impl fmt::Display for ChattyDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chatty: {} lines sent, {} signals to the root",
            self.lines, self.signals
        )
    }
}

/// Workload `vmbus-hostile`: vCPU 0 prints [`VMBUS_HOSTILE_GOOD_LINES`]
/// good lines, then attacks its VMBus: `args[0]` = 1 corrupts its console
/// ring's write index, then sends a malformed control packet; 2 corrupts a
/// console packet's length, then sends a control message out of order.
/// After each attack it waits (bounded) for the root to react, prints
/// [`VmbusAttack`] lines (which can no longer arrive), and halts.
pub const VMBUS_HOSTILE: &str = "vmbus-hostile";
/// Good lines before the attacks.
pub const VMBUS_HOSTILE_GOOD_LINES: u64 = 3;

/// `vmbus-hostile: attack NAME`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmbusAttack<'a>(pub &'a str);

impl fmt::Display for VmbusAttack<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vmbus-hostile: attack {}", self.0)
    }
}
