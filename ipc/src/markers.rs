//! Serial-console markers: the lines the QEMU test harness waits for.
//!
//! The microkernel and the root partition print these with `{}`; the harness
//! builds the same text with `to_string()`. A marker never changes shape
//! without both sides changing with it, because both use these definitions.

use core::fmt;

/// First line the microkernel prints once its serial port is up.
pub const KERNEL_BANNER: &str = "capvisor microkernel";
/// Printed by the root partition as soon as it runs (in guest mode).
pub const ROOT_BANNER: &str = "capvisor root partition";
/// Printed by the microkernel when the processor has no SVM and no VMX.
pub const NO_VIRTUALIZATION: &str =
    "refusing to start: this processor has no hardware virtualization (AMD SVM or Intel VMX)";
/// Printed by the microkernel when SVM is present but disabled by firmware (VM_CR.SVMDIS).
pub const SVM_DISABLED: &str = "refusing to start: SVM is disabled by the firmware (VM_CR.SVMDIS)";
/// Printed by the microkernel when the processor has SVM but no nested paging.
pub const NO_NESTED_PAGING: &str =
    "refusing to start: this processor has AMD SVM but no nested paging (NPT); capvisor needs SLAT";
/// Printed by the microkernel when the processor has no no-execute pages
/// (the microkernel maps itself W^X).
pub const NO_EXECUTE_DISABLE: &str =
    "refusing to start: this processor has no no-execute pages (NX); capvisor maps itself W^X";
/// Printed by the microkernel once it has checked the page tables it runs
/// on: code read + execute, read-only data read-only, everything else
/// read + write and never executable; EFER.NXE and CR0.WP on.
pub const KERNEL_MAPPED_WX: &str =
    "memory: microkernel mapped W^X (code r-x, read-only data r--, everything else rw- no-execute)";
/// Kernel command-line word: right after the W^X check the microkernel
/// writes to its own code, which must fault (a self-test).
pub const SELFTEST_WRITE_KERNEL_TEXT: &str = "selftest=write-kernel-text";
/// Printed by the microkernel under [`SELFTEST_WRITE_KERNEL_TEXT`] just
/// before the write.
pub const SELFTEST_WRITING_KERNEL_TEXT: &str = "selftest: the microkernel writes to its own code";

/// `microkernel exception: NAME (vector V) on cpu C error=E`: the
/// microkernel itself took a processor exception (a register dump follows;
/// the machine then stops with `ExitCode::Failure`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelException {
    /// The exception's name (`page fault`, ...).
    pub name: &'static str,
    /// Its vector.
    pub vector: u64,
    /// The processor's index (-1 before per-processor state exists).
    pub cpu: i64,
    /// The error code (0 for exceptions without one).
    pub error: u64,
}

impl fmt::Display for KernelException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "microkernel exception: {} (vector {}) on cpu {} error={:#x}",
            self.name, self.vector, self.cpu, self.error
        )
    }
}

/// Printed by the root partition just before it powers off.
pub const ROOT_POWER_OFF: &str = "root partition: powering off";
/// The root booted as a node (no `scenario=` on the command line): its
/// event loop runs until it is told to stop.
pub const NODE_UP: &str = "root partition: node up";
/// Printed by the microkernel when the root partition powered off (it then exits with success).
pub const KERNEL_POWER_OFF: &str = "capvisor: root partition powered off, shutting down";

/// `cpu N online`: processor N (in MADT order, 0 = bootstrap) has its
/// stacks, GDT/TSS, IDT and local APIC up and has taken a local APIC timer interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuOnline(pub u32);

impl fmt::Display for CpuOnline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpu {} online", self.0)
    }
}

/// `all N cpus online`: every processor the MADT lists has come up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllCpusOnline(pub u32);

impl fmt::Display for AllCpusOnline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "all {} cpus online", self.0)
    }
}

/// `root partition running in guest mode (svm, npt)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootRunning {
    /// Virtualization backend: `svm` or `vmx`.
    pub backend: &'static str,
    /// Second-level address translation: `npt` or `ept`.
    pub slat: &'static str,
}

impl fmt::Display for RootRunning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root partition running in guest mode ({}, {})",
            self.backend, self.slat
        )
    }
}

/// `nested page fault in partition root: gpa=0x...`: the microkernel caught a
/// partition touching a guest-physical address its SLAT does not map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NestedPageFault<'a> {
    /// Name of the faulting partition.
    pub partition: &'a str,
    /// Faulting guest-physical address.
    pub gpa: u64,
}

impl fmt::Display for NestedPageFault<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "nested page fault in partition {}: gpa={:#x}",
            self.partition, self.gpa
        )
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn markers_render_as_documented() {
        assert_eq!(CpuOnline(3).to_string(), "cpu 3 online");
        assert_eq!(
            KernelException {
                name: "page fault",
                vector: 14,
                cpu: 0,
                error: 3
            }
            .to_string(),
            "microkernel exception: page fault (vector 14) on cpu 0 error=0x3"
        );
        assert_eq!(AllCpusOnline(4).to_string(), "all 4 cpus online");
        assert_eq!(
            RootRunning {
                backend: "svm",
                slat: "npt"
            }
            .to_string(),
            "root partition running in guest mode (svm, npt)"
        );
        assert_eq!(
            NestedPageFault {
                partition: "root",
                gpa: 0x10_0000
            }
            .to_string(),
            "nested page fault in partition root: gpa=0x100000"
        );
    }
}

/// `root partition: reading hypervisor frame at 0x...`: printed by the root
/// just before the isolation self-test's forbidden read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootReadsHypervisorFrame(pub u64);

impl fmt::Display for RootReadsHypervisorFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root partition: reading hypervisor frame at {:#x}",
            self.0
        )
    }
}

/// `root: started child NAME (N vcpus, M MiB at 0x...)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildStarted<'a> {
    /// Child name.
    pub name: &'a str,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub mib: u64,
    /// Host-physical base of its memory.
    pub base: u64,
}

impl fmt::Display for ChildStarted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root: started child {} ({} vcpus, {} MiB at {:#x})",
            self.name, self.vcpus, self.mib, self.base
        )
    }
}

/// `root: child NAME ended: HOW`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildEnded<'a> {
    /// Child name.
    pub name: &'a str,
    /// Why it stopped.
    pub reason: crate::hypercall::StopReason,
    /// The reason's detail (GPA, RIP, exit code).
    pub detail: u64,
}

impl fmt::Display for ChildEnded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::hypercall::StopReason::*;
        write!(f, "root: child {} ended: ", self.name)?;
        match self.reason {
            Halted => write!(f, "halted"),
            NestedPageFault => write!(f, "nested page fault at {:#x}", self.detail),
            TripleFault => write!(f, "triple fault at rip {:#x}", self.detail),
            InvalidState => write!(f, "invalid vCPU state"),
            UnhandledExit => write!(f, "unhandled exit {:#x}", self.detail),
        }
    }
}

/// Printed by the root when every child of its scenario has ended.
pub const ALL_CHILDREN_ENDED: &str = "root: every child has ended";

/// `root: paused NAME at rip=0x...; it stayed there`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildPaused<'a>(pub &'a str);

impl fmt::Display for ChildPaused<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "root: paused {}; its vcpus stayed put", self.0)
    }
}

/// `root: resumed NAME; it moved on`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildResumed<'a>(pub &'a str);

impl fmt::Display for ChildResumed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "root: resumed {}; it moved on", self.0)
    }
}

/// `root: destroyed NAME; M MiB returned`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildDestroyed<'a> {
    /// Child name.
    pub name: &'a str,
    /// MiB returned.
    pub mib: u64,
}

impl fmt::Display for ChildDestroyed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root: destroyed {}; {} MiB returned",
            self.name, self.mib
        )
    }
}

/// `root: NAME heartbeat lost after N missed`: a child that answered
/// heartbeats stopped (integration services, `docs/vmbus.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatLost<'a> {
    /// Child name.
    pub child: &'a str,
    /// Consecutive heartbeats unanswered.
    pub missed: u32,
}

impl fmt::Display for HeartbeatLost<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root: {} heartbeat lost after {} missed",
            self.child, self.missed
        )
    }
}

/// `root: NAME stopped gracefully in N ms` (scenario action `stop`): the
/// child acknowledged the shutdown, reported it done and halted in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoppedGracefully<'a> {
    /// Child name.
    pub child: &'a str,
    /// Milliseconds from the request to the child's halt.
    pub ms: u64,
}

impl fmt::Display for StoppedGracefully<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root: {} stopped gracefully in {} ms",
            self.child, self.ms
        )
    }
}

/// `root: NAME did not shut down in N ms (WHY): turned off` (scenario
/// action `stop`): the time limit passed, the child refused, or it has no
/// integration channel; the root destroyed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TurnedOff<'a> {
    /// Child name.
    pub child: &'a str,
    /// Milliseconds from the request to the turn-off.
    pub ms: u64,
    /// Why: `time limit passed`, `refused`, `no integration channel`.
    pub why: &'a str,
}

impl fmt::Display for TurnedOff<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root: {} did not shut down in {} ms ({}): turned off",
            self.child, self.ms, self.why
        )
    }
}

/// [`TurnedOff::why`] when the time limit passed.
pub const TIME_LIMIT_PASSED: &str = "time limit passed";

/// `root: deleted its last capability on NAME; the microkernel destroyed it and returned M MiB`:
/// an orphan (scenario action `forget`) was torn down by the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrphanDestroyed<'a> {
    /// Child name.
    pub name: &'a str,
    /// MiB returned.
    pub mib: u64,
}

impl fmt::Display for OrphanDestroyed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root: deleted its last capability on {}; the microkernel destroyed it and returned {} MiB",
            self.name, self.mib
        )
    }
}

/// `root: NEW reuses the memory of OLD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryReused<'a> {
    /// The new child.
    pub new: &'a str,
    /// The destroyed child whose memory it got.
    pub old: &'a str,
}

impl fmt::Display for MemoryReused<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "root: {} reuses the memory of {}", self.new, self.old)
    }
}

/// `root: dirty log of NAME: N pages, exactly the pages written`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirtyLogMatches<'a> {
    /// Child name.
    pub name: &'a str,
    /// Pages reported dirty.
    pub pages: u32,
}

impl fmt::Display for DirtyLogMatches<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root: dirty log of {}: {} pages, exactly the pages written",
            self.name, self.pages
        )
    }
}

/// `root: dirty log of NAME cleared`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirtyLogCleared<'a>(pub &'a str);

impl fmt::Display for DirtyLogCleared<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "root: dirty log of {} cleared", self.0)
    }
}

/// Kernel command-line word that makes the root partition measure the
/// null-hypercall round trip (`cargo image bench`).
pub const BENCH_HYPERCALL: &str = "bench=hypercall";
/// Command-line word: after the scenario, the root reads
/// [`crate::disk::BENCH_FILE`] directly, as the child did over VMBus.
pub const BENCH_STORAGE: &str = "bench=storage";

/// `bench: null hypercall round trip: N instructions (guest view, min of B batches of C)`:
/// time-stamp-counter ticks per call, which under QEMU `-icount shift=0`
/// are instructions executed (the guest's and the microkernel's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HypercallRoundTrip {
    /// Instructions per round trip (minimum over the batches).
    pub instructions: u64,
    /// Batches measured.
    pub batches: u32,
    /// Calls per batch.
    pub calls: u32,
}

impl fmt::Display for HypercallRoundTrip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bench: null hypercall round trip: {} instructions (guest view, min of {} batches of {})",
            self.instructions, self.batches, self.calls
        )
    }
}

/// `bench: microkernel null hypercall path: min N, mean M instructions over K calls`:
/// from the #VMEXIT to the next VMRUN, measured by the microkernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelHypercallPath {
    /// Shortest path.
    pub min: u64,
    /// Mean path.
    pub mean: u64,
    /// Null hypercalls measured.
    pub calls: u64,
}

impl fmt::Display for KernelHypercallPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bench: microkernel null hypercall path: min {}, mean {} instructions over {} calls",
            self.min, self.mean, self.calls
        )
    }
}

/// Kernel command-line word that lets child partitions print through the
/// `DebugWrite` hypercall (off by default: children print over their VMBus
/// console; the root always may).
pub const DEBUG_CONSOLE: &str = "debug-console";

/// `[NAME] LINE`: a child's console line as the root prints it (received
/// over the child's VMBus console).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildConsoleLine<'a> {
    /// The child's name.
    pub child: &'a str,
    /// The line.
    pub line: &'a str,
}

impl fmt::Display for ChildConsoleLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.child, self.line)
    }
}

/// `root: vmbus: NAME opened its console`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleOpened<'a>(pub &'a str);

impl fmt::Display for ConsoleOpened<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "root: vmbus: {} opened its console", self.0)
    }
}

/// `root: vmbus: closed the CHANNEL channel of NAME: REASON`.
#[derive(Clone, Copy)]
pub struct ChannelClosed<'a> {
    /// The child's name.
    pub child: &'a str,
    /// `control` or `console`.
    pub channel: &'a dyn fmt::Display,
    /// Why.
    pub reason: &'a dyn fmt::Display,
}

impl fmt::Display for ChannelClosed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root: vmbus: closed the {} channel of {}: {}",
            self.channel, self.child, self.reason
        )
    }
}

/// `root: console of NAME: N lines over vmbus, all in order`: every line
/// the child numbered arrived, none missing, none out of order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleInOrder<'a> {
    /// The child's name.
    pub child: &'a str,
    /// Lines received.
    pub lines: u64,
}

impl fmt::Display for ConsoleInOrder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root: console of {}: {} lines over vmbus, all in order",
            self.child, self.lines
        )
    }
}

/// The root's summary of a child's console when the child ended:
/// `<ConsoleInOrder>, S signals from the child`, or with
/// `FAILED: M lines out of sequence` when lines were lost or reordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleSummary<'a> {
    /// The child's name.
    pub child: &'a str,
    /// Lines received.
    pub lines: u64,
    /// Lines whose sequence number was not the next one (lost or reordered).
    pub out_of_sequence: u64,
    /// Console-channel signals (interrupts) the root received from the child.
    pub signals: u64,
}

impl fmt::Display for ConsoleSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.out_of_sequence == 0 {
            write!(
                f,
                "{}, {} signals from the child",
                ConsoleInOrder {
                    child: self.child,
                    lines: self.lines
                },
                self.signals
            )
        } else {
            write!(
                f,
                "root: console of {}: {} lines over vmbus, FAILED: {} lines out of sequence, {} signals from the child",
                self.child, self.lines, self.out_of_sequence, self.signals
            )
        }
    }
}

/// Lines per signal above which the root reports signal suppression working.
pub const LINES_PER_SIGNAL: u64 = 10;

/// `root: console of NAME: fewer than one signal per 10 lines`: printed
/// with the summary when the child's signals stayed below
/// `lines / LINES_PER_SIGNAL` (and it sent at least 100 lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalsSuppressed<'a>(pub &'a str);

impl fmt::Display for SignalsSuppressed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root: console of {}: fewer than one signal per {} lines",
            self.0, LINES_PER_SIGNAL
        )
    }
}

#[cfg(test)]
mod vmbus_marker_tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn vmbus_markers_render_as_documented() {
        let summary = ConsoleSummary {
            child: "c1",
            lines: 10,
            out_of_sequence: 0,
            signals: 2,
        };
        assert_eq!(
            summary.to_string(),
            "root: console of c1: 10 lines over vmbus, all in order, 2 signals from the child"
        );
        assert!(
            summary.to_string().contains(
                &ConsoleInOrder {
                    child: "c1",
                    lines: 10
                }
                .to_string()
            )
        );
        let bad = ConsoleSummary {
            out_of_sequence: 1,
            ..summary
        };
        assert!(bad.to_string().contains("FAILED"));
        assert_eq!(
            ChildConsoleLine {
                child: "c1",
                line: "x"
            }
            .to_string(),
            "[c1] x"
        );
        assert_eq!(
            ChannelClosed {
                child: "v1",
                channel: &"console",
                reason: &"ring: bad"
            }
            .to_string(),
            "root: vmbus: closed the console channel of v1: ring: bad"
        );
        assert_eq!(
            SignalsSuppressed("c2").to_string(),
            "root: console of c2: fewer than one signal per 10 lines"
        );
    }
}

/// Printed by the microkernel when the processor has VMX but no EPT or VPID.
pub const NO_EPT: &str =
    "refusing to start: this processor has Intel VMX but no EPT or VPID; capvisor needs SLAT";

/// Kernel command-line word: power off through ACPI however the run ends
/// (for emulators without QEMU's debug-exit device, such as Bochs).
pub const POWEROFF_ON_EXIT: &str = "poweroff-on-exit";

/// `capvisor: run ended: CODE`: the microkernel's last line, whatever the
/// outcome (the Bochs harness decides by it; Bochs's own status is always 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunEnded(pub crate::exit::ExitCode);

impl fmt::Display for RunEnded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "capvisor: run ended: {:?}", self.0)
    }
}

/// Kernel command-line word: the root gives its PCI devices their
/// interrupt lines (INTx, level-triggered and shared where several
/// devices are wired to one) instead of MSI-X.
pub const PCI_INTX: &str = "pci-intx";

/// Kernel command-line word that makes the root partition take a real
/// device interrupt (the RTC, GSI 8) through its interrupt capability.
pub const SELFTEST_DEVICE_INTERRUPT: &str = "selftest=device-interrupt";

/// `root: device interrupt GSI G delivered N times`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceInterrupts {
    /// The line.
    pub gsi: u32,
    /// Interrupts taken (each acknowledged).
    pub count: u32,
}

impl fmt::Display for DeviceInterrupts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root: device interrupt GSI {} delivered {} times",
            self.gsi, self.count
        )
    }
}

/// `root: data volume LABEL on virtio-blk at LOC (GSI G, N MiB), F files;
/// R requests, I interrupts` (the requests and interrupts of mounting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataVolume<'a> {
    /// PCI location of the disk.
    pub location: &'a str,
    /// Its interrupt line.
    pub gsi: u32,
    /// Disk size in MiB.
    pub mib: u64,
    /// The exFAT volume's label.
    pub label: &'a str,
    /// Files in the volume's root directory.
    pub files: usize,
    /// Disk requests so far.
    pub requests: u64,
    /// Device interrupts taken so far.
    pub interrupts: u64,
}

impl fmt::Display for DataVolume<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root: data volume {} on virtio-blk at {} (GSI {}, {} MiB), {} files; {} requests, {} interrupts",
            self.label,
            self.location,
            self.gsi,
            self.mib,
            self.files,
            self.requests,
            self.interrupts
        )
    }
}

/// `root: CHILD LUN L is FILE (S sectors)[, hot-added]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LunAttached<'a> {
    /// The child.
    pub child: &'a str,
    /// The LUN.
    pub lun: u8,
    /// The VHD file on the data volume.
    pub file: &'a str,
    /// Capacity in sectors.
    pub sectors: u64,
    /// Added while the child runs.
    pub hot: bool,
}

impl fmt::Display for LunAttached<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root: {} LUN {} is {} ({} sectors)",
            self.child, self.lun, self.file, self.sectors
        )?;
        if self.hot {
            write!(f, ", hot-added")?;
        }
        Ok(())
    }
}

/// `root: CHILD LUN L (FILE) hot-removed after R requests, flushed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LunRemoved<'a> {
    /// The child.
    pub child: &'a str,
    /// The LUN.
    pub lun: u8,
    /// Its file.
    pub file: &'a str,
    /// Requests the controller had served when it was removed.
    pub served: u64,
}

impl fmt::Display for LunRemoved<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root: {} LUN {} ({}) hot-removed after {} requests, flushed",
            self.child, self.lun, self.file, self.served
        )
    }
}

/// `root: CHILD storage: R requests, E errors, S signals from the child`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageSummary<'a> {
    /// The child.
    pub child: &'a str,
    /// Requests received.
    pub requests: u64,
    /// Error completions.
    pub errors: u64,
    /// Port signals the child sent on the storage channel.
    pub signals: u64,
}

impl fmt::Display for StorageSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root: {} storage: {} requests, {} errors, {} signals from the child",
            self.child, self.requests, self.errors, self.signals
        )
    }
}

/// `root: vmbus: CHILD opened its storage controller`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageOpened<'a>(pub &'a str);

impl fmt::Display for StorageOpened<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "root: vmbus: {} opened its storage controller", self.0)
    }
}

/// Command-line word: the root brings its network interface up and pings
/// the management network's gateway.
pub const SELFTEST_NETWORK: &str = "selftest=network";

/// Command-line word (test only): the root maps one of its own pages a
/// second time (an alias in its shared window), unmaps the alias and reads
/// the original again, which must still be mapped ([`AliasUnmapped`]).
pub const SELFTEST_ALIAS_UNMAP: &str = "selftest=alias-unmap";

/// `root: unmapped the alias 0x... of its page 0x...; the page still reads 0x...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AliasUnmapped {
    /// The page's guest-physical address.
    pub page: u64,
    /// Where the alias was.
    pub alias: u64,
    /// What the original reads after the alias went.
    pub value: u64,
}

impl AliasUnmapped {
    /// The tag the self-test writes through the alias (with the page's
    /// address in its low bits).
    pub const TAG: u64 = 0xa11a_5000_0000_0000;
}

/// `the page still reads 0xa11a5`: the part of [`AliasUnmapped`]'s line
/// that does not depend on where RAM is (the original page still holds
/// what was written through the alias).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AliasStillReads;

impl fmt::Display for AliasStillReads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the page still reads {:#x}", AliasUnmapped::TAG >> 44)
    }
}

impl fmt::Display for AliasUnmapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root: unmapped the alias {:#x} of its page {:#x}; the page still reads {:#x}",
            self.alias, self.page, self.value
        )
    }
}

/// Command-line word (test only): the root starts a second vCPU of its own
/// that hammers `VcpuCreate`, `VcpuPause`/`VcpuResume` and `MemoryMap` on
/// the children its first vCPU creates and destroys, round after round,
/// while the first pauses and resumes it; then both root vCPUs halt with
/// interrupts off at once, and the kernel must report the root's end
/// (`selftest=race`, see `docs/arch.md`).
pub const SELFTEST_RACE: &str = "selftest=race";

/// Command-line prefix of the number of rounds of `selftest=race`
/// (`race-rounds=N`; [`RACE_ROUNDS_DEFAULT`] without it).
pub const RACE_ROUNDS: &str = "race-rounds=";

/// Rounds of `selftest=race` when the command line names none.
pub const RACE_ROUNDS_DEFAULT: u64 = 3000;

/// `root: race: R rounds, U unexpected statuses`: what `selftest=race`
/// did; every status it saw is one the call documents unless U is non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaceSummary {
    /// Rounds done: children created, run and destroyed.
    pub rounds: u64,
    /// Statuses outside the documented ones for their call.
    pub unexpected: u64,
}

impl fmt::Display for RaceSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root: race: {} rounds, {} unexpected statuses",
            self.rounds, self.unexpected
        )
    }
}

/// `root: network up at A (MAC M, virtio-net GSI G): gateway W answered a ping; I interrupts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkUp<'a> {
    /// The root's address.
    pub address: &'a str,
    /// The gateway pinged.
    pub gateway: &'a str,
    /// The NIC's MAC address.
    pub mac: &'a str,
    /// Its interrupt line.
    pub gsi: u32,
    /// Interrupts taken.
    pub interrupts: u64,
}

impl fmt::Display for NetworkUp<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root: network up at {} (MAC {}, virtio-net GSI {}): gateway {} answered a ping; {} interrupts",
            self.address, self.mac, self.gsi, self.gateway, self.interrupts
        )
    }
}

/// `root: CHILD network: S sent (R refused: spoofed), D delivered; port: X spoofed, Q queue full; signals: K in, L out`
/// Signals: from the child to the root ("in") and back ("out"). Fits a
/// 160-byte console line for names of up to 8 bytes and counts of up to 7
/// digits (a longer line would be cut).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkSummary<'a> {
    /// The child.
    pub child: &'a str,
    /// Frames the child asked to send.
    pub sent: u64,
    /// Sends refused because the source MAC was not the child's.
    pub refused_spoofed: u64,
    /// Frames delivered into the child's receive buffers.
    pub delivered: u64,
    /// Frames the switch dropped at the child's port as spoofed.
    pub switch_spoofed: u64,
    /// Frames the switch dropped at the child's port because its queue was full.
    pub queue_full: u64,
    /// Port signals the child sent on its network channel.
    pub signals: u64,
    /// Port signals the root sent the child on it.
    pub signals_to: u64,
}

impl fmt::Display for NetworkSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root: {} network: {} sent ({} refused: spoofed), {} delivered; port: {} spoofed, {} queue full; signals: {} in, {} out",
            self.child,
            self.sent,
            self.refused_spoofed,
            self.delivered,
            self.switch_spoofed,
            self.queue_full,
            self.signals,
            self.signals_to
        )
    }
}

/// `root: CHILD network messages: M in, N out (F frames)`: packets the
/// child sent on its network channel and messages the root sent it, and
/// the frames it sent and received (`cargo image bench` divides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkMessages<'a> {
    /// The child.
    pub child: &'a str,
    /// Packets read from the child.
    pub from_child: u64,
    /// Messages sent to the child.
    pub to_child: u64,
    /// Frames the child sent plus frames delivered to it.
    pub frames: u64,
}

impl fmt::Display for NetworkMessages<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root: {} network messages: {} in, {} out ({} frames)",
            self.child, self.from_child, self.to_child, self.frames
        )
    }
}

/// Command-line word: after the scenario, the root pushes the network
/// benchmark's frames through its switch itself (`cargo image bench`).
pub const BENCH_NETWORK: &str = "bench=network";

#[cfg(test)]
mod network_summary_tests {
    extern crate std;
    use super::NetworkSummary;
    use std::string::ToString;

    #[test]
    fn the_network_summary_fits_a_console_line() {
        let big = 9_999_999;
        let line = NetworkSummary {
            child: "abcdefgh",
            sent: big,
            refused_spoofed: big,
            delivered: big,
            switch_spoofed: big,
            queue_full: big,
            signals: big,
            signals_to: big,
        }
        .to_string();
        assert!(line.len() <= crate::vmbus::console::MAX_LINE, "{line}");
        assert!(line.ends_with("signals: 9999999 in, 9999999 out"));
    }
}
