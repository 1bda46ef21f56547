//! Live migration on one node: the root moves a running child to a new
//! partition with the pre-copy engine (`root_partition::migrate`), through
//! an in-node transport that applies the stream to the destination as it
//! is produced.
//!
//! Steps: place and create the destination (same memory size and vCPUs,
//! not started) and give it a slot-for-slot copy of the child's
//! capabilities (`CapClone`); run the engine — dirty log on, pass after
//! pass while the child runs and the root keeps serving every bus; then
//! the blackout: the child paused, its last dirty pages plus every page
//! the root shares with it (rings and buffers the root writes without
//! the dirty log seeing it), its vCPU states; hand over — the child's bus
//! is mapped again from the new memory at the same root addresses, its
//! ports deliver to the new vCPUs, its switch port announces its MAC —
//! start the destination and destroy the source. Any failure before the
//! handover leaves the source running (the engine resumes it) and
//! destroys the destination.
//!
//! # Invariants
//! - During the blackout the root serves no bus: nothing it does may
//!   write the child's memory between the final copy and the handover.
//! - The source is destroyed only after the destination has every page,
//!   every vCPU state and the bus.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use ipc::child::CHILD_EVENT_VECTOR;
use ipc::hypercall::{Call, SlotHandle, Status};
use ipc::migration::{DeviceKind, Header};
use partition_rt::hypercall;
use root_partition::config::AbortAt;
use root_partition::migrate::engine::DeviceOut;
use root_partition::migrate::{
    self, Aborted, Clock, Control, Destination, Loopback, PAGE, Phase, Policy, Source, Stats,
};

use crate::children::{Child, Root, call};
use crate::hal;
use crate::hal::kernel::HwKernel;
use root_partition::partition::{self, Purpose};

macro_rules! println {
    ($($arg:tt)*) => {
        partition_rt::console::print_line(format_args!($($arg)*))
    };
}

/// Why a migration failed (the source keeps running).
// The fields are read through `Debug` when the failure is printed.
#[allow(dead_code)]
#[derive(Debug)]
pub enum MigrateError {
    /// Building the destination failed.
    Setup(&'static str, Status),
    /// The root has no shared window: the bus could not follow the child.
    NoWindow,
    /// The engine aborted (reason in the statistics).
    Aborted(Box<Stats>),
    /// The handover failed.
    Handover(&'static str),
}

impl From<crate::children::Failure> for MigrateError {
    fn from(f: crate::children::Failure) -> Self {
        match f {
            crate::children::Failure::Call(what, status) => MigrateError::Setup(what, status),
            _ => MigrateError::Handover("setup"),
        }
    }
}

/// The child being migrated or saved, through hypercalls.
pub struct ChildSource {
    partition: SlotHandle,
    vcpus: Vec<SlotHandle>,
    pages: u64,
    /// Pages the root shares with the child (sent again in the blackout).
    shared: Vec<(u64, u64)>,
    index: usize,
    paused: bool,
    /// Auto-converge: percent of each [`THROTTLE_PERIOD_MS`] the vCPUs are
    /// held paused, whether they are now, and when that flips.
    throttle: u8,
    held: bool,
    flip_at: u64,
    tsc_khz: u64,
    /// A save's extra device records (`crate::quick`).
    pub extras: Option<crate::quick::SaveExtras>,
    /// vCPUs found halted for good at the pause (not resumed on abort).
    stopped: Vec<usize>,
}

/// The duty cycle of the auto-converge throttle.
const THROTTLE_PERIOD_MS: u64 = 10;

impl ChildSource {
    /// The source for `child` (bus `index`).
    pub fn new(root: &Root, child: &Child, index: usize) -> Self {
        ChildSource {
            partition: child.partition,
            vcpus: child.vcpus.iter().flatten().copied().collect(),
            pages: child.pages,
            shared: Vec::new(),
            index,
            paused: false,
            throttle: 0,
            held: false,
            flip_at: 0,
            tsc_khz: u64::from(root.tsc_khz),
            extras: None,
            stopped: Vec::new(),
        }
    }

    /// Runs the child again after a save that could not be completed.
    pub fn resume_after_save(&mut self) -> Result<(), Status> {
        Source::resume(self)
    }

    fn set_vcpus(&self, run: bool) -> Result<(), Status> {
        for v in &self.vcpus {
            let c = if run {
                Call::VcpuResume { vcpu: *v }
            } else {
                Call::VcpuPause { vcpu: *v }
            };
            match hypercall(&c) {
                // A vCPU halted for good stays so.
                Ok(_) | Err(Status::InvalidState) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Holds or releases the vCPUs as the throttle's duty cycle says
    /// (called for every page read: the copy loop is the clock).
    fn duty_cycle(&mut self) -> Result<(), Status> {
        if self.throttle == 0 || self.paused {
            return Ok(());
        }
        let now = partition_rt::rdtsc();
        if now < self.flip_at {
            return Ok(());
        }
        let period = self.tsc_khz * THROTTLE_PERIOD_MS;
        let held = u64::from(self.throttle);
        self.held = !self.held;
        self.set_vcpus(!self.held)?;
        let share = if self.held { held } else { 100 - held };
        self.flip_at = now + period * share / 100;
        Ok(())
    }
}

impl Source for ChildSource {
    type Error = Status;

    fn pages(&self) -> u64 {
        self.pages
    }

    fn vcpus(&self) -> u16 {
        self.vcpus.len() as u16
    }

    fn log_dirty(&mut self, on: bool) -> Result<(), Status> {
        hypercall(&Call::DirtyLog {
            partition: self.partition,
            enable: on,
        })
        .map(|_| ())
    }

    fn fetch_dirty(&mut self, first: u64, bits: &mut [u64]) -> Result<(), Status> {
        // One call covers a page of bitmap: 32,768 pages.
        for (chunk, words) in bits.chunks_mut(512).enumerate() {
            let first_page = first + chunk as u64 * 32_768;
            let pages = (words.len() as u64 * 64).min(self.pages.saturating_sub(first_page));
            if pages == 0 {
                words.fill(0);
                continue;
            }
            let partition = self.partition;
            hal::scratch::with(|s| {
                s.call(&Call::DirtyFetch {
                    partition,
                    first_gpa: first_page * 4096,
                    pages,
                    buffer: s.address(),
                })?;
                let bitmap = s.page();
                for (i, w) in words.iter_mut().enumerate() {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&bitmap[i * 8..i * 8 + 8]);
                    *w = u64::from_le_bytes(b);
                }
                Ok(())
            })?;
        }
        if self.paused {
            // What the root wrote is not in the child's log.
            for &(gpa, count) in &self.shared {
                for page in gpa / 4096..gpa / 4096 + count {
                    if let Some(rel) = page.checked_sub(first)
                        && let Some(w) = bits.get_mut((rel / 64) as usize)
                    {
                        *w |= 1 << (rel % 64);
                    }
                }
            }
        }
        Ok(())
    }

    fn read_page(&mut self, page: u64, buf: &mut [u8; PAGE]) -> Result<(), Status> {
        self.duty_cycle()?;
        if page == 0 {
            // Never mapped in a child.
            buf.fill(0);
            return Ok(());
        }
        let partition = self.partition;
        hal::scratch::with(|s| {
            s.call(&Call::MemoryRead {
                partition,
                gpa: page * 4096,
                buffer: s.address(),
            })?;
            buf.copy_from_slice(s.page());
            Ok(())
        })
    }

    fn throttle(&mut self, percent: u8) -> Result<(), Status> {
        self.throttle = percent.min(99);
        if percent == 0 && self.held {
            self.held = false;
            self.set_vcpus(true)?;
        }
        self.flip_at = 0;
        Ok(())
    }

    fn pause(&mut self) -> Result<(), Status> {
        self.stopped.clear();
        for (i, v) in self.vcpus.iter().enumerate() {
            match hypercall(&Call::VcpuPause { vcpu: *v }) {
                Ok(_) => {}
                // Halted for good (its workload ended): nothing to pause.
                Err(Status::InvalidState) => self.stopped.push(i),
                Err(e) => {
                    for (j, v) in self.vcpus[..i].iter().enumerate() {
                        if !self.stopped.contains(&j) {
                            let _ = hypercall(&Call::VcpuResume { vcpu: *v });
                        }
                    }
                    return Err(e);
                }
            }
        }
        self.paused = true;
        // Shared pages may have changed since the root mapped them.
        self.shared = crate::vmbus::shared_pages(self.index);
        Ok(())
    }

    fn resume(&mut self) -> Result<(), Status> {
        self.paused = false;
        let mut result = Ok(());
        for (i, v) in self.vcpus.iter().enumerate() {
            if self.stopped.contains(&i) {
                continue;
            }
            if let Err(e) = hypercall(&Call::VcpuResume { vcpu: *v }) {
                result = Err(e);
            }
        }
        result.map(|_| ())
    }

    fn vcpu_state(&mut self, index: u16, buf: &mut [u8]) -> Result<usize, Status> {
        let vcpu = *self
            .vcpus
            .get(index as usize)
            .ok_or(Status::InvalidArgument)?;
        let len = ipc::vcpu_state::WORDS * 8;
        let out = buf.get_mut(..len).ok_or(Status::InvalidArgument)?;
        hal::scratch::with(|s| {
            s.call(&Call::VcpuGetState {
                vcpu,
                buffer: s.address(),
            })?;
            out.copy_from_slice(&s.page()[..len]);
            Ok(len)
        })
    }

    fn device_states(&mut self, out: &mut DeviceOut<'_>) -> Result<(), Status> {
        // Live on one node the child's bus stays in the root and follows it
        // at the handover (its rings and buffers are in the copied memory);
        // a save records it.
        match &self.extras {
            Some(extras) => {
                // A refused record stops the engine, which reports it.
                let _ = extras.emit(out);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// The destination partition, written through hypercalls (a live
/// migration's, or a restored child's).
pub struct ChildDestination {
    /// The partition.
    pub partition: SlotHandle,
    /// Its vCPUs, not started.
    pub vcpus: Vec<SlotHandle>,
    /// The page count the stream must have, if known.
    pub pages: Option<u64>,
    /// Device records kept (a restore's), or `None` to ignore them (on one
    /// node the bus stays in the root).
    pub devices: Option<Vec<(DeviceKind, Vec<u8>)>>,
}

impl Destination for ChildDestination {
    type Error = Status;

    fn write_page(&mut self, page: u64, data: &[u8; PAGE]) -> Result<(), Status> {
        if page == 0 {
            return Ok(());
        }
        let partition = self.partition;
        hal::scratch::with(|s| {
            s.page_mut().copy_from_slice(data);
            s.call(&Call::MemoryWrite {
                partition,
                gpa: page * 4096,
                buffer: s.address(),
            })
            .map(|_| ())
        })
    }

    fn set_vcpu_state(&mut self, index: u16, bytes: &[u8]) -> Result<(), Status> {
        set_vcpu_state(&self.vcpus, index, bytes)
    }

    fn device_state(&mut self, kind: DeviceKind, instance: u8, bytes: &[u8]) -> Result<(), Status> {
        let Some(devices) = self.devices.as_mut() else {
            return Ok(());
        };
        if instance != 0 || devices.iter().any(|(k, _)| *k == kind) {
            return Err(Status::InvalidArgument);
        }
        devices.push((kind, bytes.to_vec()));
        Ok(())
    }

    fn begin(&mut self, header: &Header) -> Result<(), Status> {
        if usize::from(header.vcpus) != self.vcpus.len()
            || self.pages.is_some_and(|p| p != header.pages)
        {
            return Err(Status::InvalidArgument);
        }
        Ok(())
    }

    fn zero_pages(&mut self, first: u64, count: u64) -> Result<(), Status> {
        let zero = [0u8; PAGE];
        for page in first..first.saturating_add(count) {
            self.write_page(page, &zero)?;
        }
        Ok(())
    }
}

/// Sets vCPU `index` of `vcpus` to a saved state (through the scratch page).
pub fn set_vcpu_state(vcpus: &[SlotHandle], index: u16, bytes: &[u8]) -> Result<(), Status> {
    let vcpu = *vcpus.get(index as usize).ok_or(Status::InvalidArgument)?;
    hal::scratch::with(|s| {
        let page = s.page_mut();
        page.fill(0);
        page.get_mut(..bytes.len())
            .ok_or(Status::InvalidArgument)?
            .copy_from_slice(bytes);
        s.call(&Call::VcpuSetState {
            vcpu,
            buffer: s.address(),
        })
        .map(|_| ())
    })
}

/// Nanoseconds and ticks from the time-stamp counter.
pub struct Tsc {
    khz: u64,
}

impl Tsc {
    /// A clock at `khz` ticks per millisecond.
    pub fn new(khz: u32) -> Self {
        Tsc {
            khz: u64::from(khz),
        }
    }
}

impl Clock for Tsc {
    fn now_ns(&mut self) -> u64 {
        (u128::from(partition_rt::rdtsc()) * 1_000_000 / u128::from(self.khz.max(1))) as u64
    }
    fn ticks(&mut self) -> u64 {
        partition_rt::rdtsc()
    }
}

/// Serves every bus while the child runs, none in the blackout; carries
/// out a scenario's abort.
struct Steering {
    abort: Option<AbortAt>,
    destination: SlotHandle,
    destroyed: bool,
    /// Pre-copy control points passed (one per 1,024 pages and per pass).
    copy_points: u32,
}

impl Control for Steering {
    fn proceed(&mut self, phase: Phase) -> bool {
        match phase {
            Phase::Blackout => self.abort != Some(AbortAt::Blackout),
            Phase::Precopy { pass } => {
                self.copy_points += 1;
                // A few thousand pages into the first pass.
                if self.abort == Some(AbortAt::Destination) && self.copy_points == 4 {
                    println!(
                        "root: migration test: destroying the destination mid-copy (pass {pass})"
                    );
                    let _ = hypercall(&Call::PartitionDestroy {
                        partition: self.destination,
                    });
                    self.destroyed = true;
                }
                crate::vmbus::service_all();
                true
            }
            _ => true,
        }
    }
}

/// The destination before the handover.
struct Target {
    partition: SlotHandle,
    memory: SlotHandle,
    vcpus: Vec<SlotHandle>,
    base: u64,
}

/// The destination through the one construction path: the source's
/// memory size, vCPU count, priority and affinity, and a slot-for-slot
/// copy of its capabilities; on a failure nothing of it is left.
fn create_target(root: &Root, child: &Child, base: u64) -> Result<Target, MigrateError> {
    let mut spec = child.spec;
    spec.memory = child.pages * 4096;
    spec.vcpus = child.vcpus.iter().flatten().count() as u32;
    let purpose = Purpose::Target {
        source: child.partition,
    };
    let built = partition::build(&HwKernel, root, &spec, base, purpose)?;
    Ok(Target {
        partition: built.partition,
        memory: built.memory,
        vcpus: built.vcpu_list().collect(),
        base,
    })
}

/// Live-migrates `child` (bus `index`) to a new partition at `base` (free
/// memory of the root's). On success `child` describes the destination.
pub fn live(
    root: &Root,
    child: &mut Child,
    index: usize,
    base: u64,
    abort: Option<AbortAt>,
) -> Result<Stats, MigrateError> {
    if crate::vmbus::window_of(index, 0).1 == u64::MAX {
        return Err(MigrateError::NoWindow);
    }
    let target = create_target(root, child, base)?;
    let vcpus: Vec<SlotHandle> = child.vcpus.iter().flatten().copied().collect();
    let mut source = ChildSource::new(root, child, index);
    let mut transport = Loopback::new(ChildDestination {
        partition: target.partition,
        vcpus: target.vcpus.clone(),
        pages: Some(child.pages),
        devices: None,
    });
    let mut steering = Steering {
        abort,
        destination: target.partition,
        destroyed: false,
        copy_points: 0,
    };
    let policy = Policy::default();
    let mut clock = Tsc::new(root.tsc_khz);
    let name = child.spec.name;
    let result = migrate::migrate(
        &mut source,
        &mut transport,
        &mut clock,
        &mut steering,
        &policy,
        name.as_str(),
    );
    let stats = match result {
        Ok(stats) => stats,
        Err(Aborted { stats, .. }) => {
            if !steering.destroyed {
                let _ = hypercall(&Call::PartitionDestroy {
                    partition: target.partition,
                });
            }
            return Err(MigrateError::Aborted(stats));
        }
    };
    // The source is paused with everything sent: hand over.
    let vcpu0 = *target.vcpus.first().ok_or(MigrateError::Handover("vcpu"))?;
    let handover = (|| {
        crate::vmbus::move_child(
            index,
            crate::vmbus::MovedChild {
                partition: target.partition,
                memory: target.memory,
                vcpu0,
                base: target.base,
            },
        )
        .map_err(|_| MigrateError::Handover("bus"))?;
        if let Some(port) = child.from_root {
            call(
                "bind",
                Call::PortBind {
                    port,
                    vcpu: vcpu0,
                    vector: CHILD_EVENT_VECTOR,
                },
            )
            .map_err(|_| MigrateError::Handover("port"))?;
        }
        Ok(())
    })();
    if let Err(e) = handover {
        // Back to the source, which never stopped being whole.
        let _ = crate::vmbus::move_child(
            index,
            crate::vmbus::MovedChild {
                partition: child.partition,
                memory: child.memory,
                vcpu0: vcpus[0],
                base: child.base,
            },
        );
        if let Some(port) = child.from_root {
            let _ = hypercall(&Call::PortBind {
                port,
                vcpu: vcpus[0],
                vector: CHILD_EVENT_VECTOR,
            });
        }
        let _ = source.resume();
        let _ = hypercall(&Call::PartitionDestroy {
            partition: target.partition,
        });
        return Err(e);
    }
    for v in &target.vcpus {
        call("start", Call::VcpuStart { vcpu: *v }).map_err(|_| MigrateError::Handover("start"))?;
    }
    let _ = hypercall(&Call::PartitionDestroy {
        partition: child.partition,
    });
    crate::vmbus::announce(index);
    child.partition = target.partition;
    child.memory = target.memory;
    child.base = target.base;
    for (slot, v) in child.vcpus.iter_mut().flatten().zip(&target.vcpus) {
        *slot = *v;
    }
    Ok(stats)
}

/// The statistics as the console shows them, and as one JSON line.
pub fn report(name: &str, stats: &Stats) {
    for line in alloc::format!("{stats}").lines() {
        println!("root: {name}: {line}");
    }
    let mut json = String::new();
    let _ = stats.write_json(&mut json);
    // Console lines are short: the JSON goes out in numbered pieces
    // (`json K/N <piece>`) that a reader joins in order.
    let pieces: Vec<&str> = json
        .as_bytes()
        .chunks(JSON_PIECE)
        .filter_map(|c| core::str::from_utf8(c).ok())
        .collect();
    for (i, piece) in pieces.iter().enumerate() {
        println!(
            "root: {name}: migration json {}/{} {piece}",
            i + 1,
            pieces.len()
        );
    }
}

/// Bytes of JSON per console line (the JSON is ASCII).
const JSON_PIECE: usize = 100;
