//! The hypercall ABI: call numbers, arguments, capability rights and status
//! codes, shared by the microkernel and every partition.
//!
//! # Registers
//! A partition executes `VMMCALL` (AMD) or `VMCALL` (Intel) with
//! `RAX` = call number and up to six arguments in `RDI, RSI, RDX, R8, R9,
//! R10`. On return `RAX` = [`Status`] and up to three results are in `RDI,
//! RSI, RDX`; every other register is preserved. `docs/hypercalls.md` has a
//! table per call.
//!
//! # Invariants
//! [`Call::decode`] is the only place raw registers become a call: it never
//! panics, and it rejects every malformed argument before the kernel looks
//! at any state. [`Call::encode`] is its exact inverse for valid calls.

use core::fmt;

/// A capability slot as a partition names it: slot index in bits 0–15 and
/// the slot's generation in bits 16–31. A handle whose generation no longer
/// matches (the slot was emptied since) fails with [`Status::StaleSlot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlotHandle {
    /// Index in the capability space.
    pub index: u16,
    /// Generation of the slot when the handle was issued.
    pub generation: u16,
}

impl SlotHandle {
    /// Packs the handle into a register.
    pub const fn raw(self) -> u64 {
        self.index as u64 | ((self.generation as u64) << 16)
    }

    /// Unpacks a register; bits above 31 must be zero.
    pub const fn from_raw(raw: u64) -> Result<Self, Status> {
        if raw >> 32 != 0 {
            return Err(Status::InvalidSlot);
        }
        Ok(SlotHandle {
            index: raw as u16,
            generation: (raw >> 16) as u16,
        })
    }
}

bitflags::bitflags! {
    /// Capability rights. A capability's rights can only shrink as it is
    /// delegated. The bits are ABI (`docs/hypercalls.md`); bits 11–14 are
    /// reserved, and [`Rights::from_raw`] refuses them.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Rights: u32 {
        /// Memory: may be mapped readable.
        const READ = 1 << 0;
        /// Memory: may be mapped writable.
        const WRITE = 1 << 1;
        /// Memory: may be mapped executable.
        const EXECUTE = 1 << 2;
        /// Memory: may be mapped into a partition this caller controls.
        const MAP = 1 << 3;
        /// Memory: may be donated to create a partition.
        const DONATE = 1 << 4;
        /// Partition or vCPU: create vCPUs, map memory, start, pause, resume,
        /// destroy. Timer: set and cancel it.
        const CONTROL = 1 << 5;
        /// Partition or vCPU: read its memory and state, dirty logging, status.
        const INSPECT = 1 << 6;
        /// Partition (one's own): create partitions.
        const CREATE = 1 << 7;
        /// Port: signal it.
        const SIGNAL = 1 << 8;
        /// Port or interrupt: bind it to a vCPU vector and acknowledge it.
        const BIND = 1 << 9;
        /// I/O port range: access the ports directly.
        const USE = 1 << 10;
        /// Any capability: may be delegated.
        const GRANT = 1 << 15;
    }
}

impl Rights {
    /// No rights.
    pub const NONE: Rights = Rights::empty();
    /// Every right.
    pub const ALL: Rights = Rights::all();

    /// Rights from a hypercall register: [`Status::InvalidArgument`] if
    /// any bit is not a right (reserved bits, bits above 31 included).
    pub const fn from_raw(raw: u64) -> Result<Rights, Status> {
        if raw > u32::MAX as u64 {
            return Err(Status::InvalidArgument);
        }
        match Rights::from_bits(raw as u32) {
            Some(rights) => Ok(rights),
            None => Err(Status::InvalidArgument),
        }
    }
}

/// `READ|WRITE`, or `NONE` for no rights.
impl fmt::Debug for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("NONE");
        }
        for (i, (name, _)) in self.iter_names().enumerate() {
            if i > 0 {
                f.write_str("|")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

/// What a hypercall returns in `RAX`. 0 is success; every other value is
/// an error returned to the caller, who keeps running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Status {
    /// The call did what it says.
    Success = 0,
    /// No call has this number.
    UnknownCall = 1,
    /// The slot is out of range or empty.
    InvalidSlot = 2,
    /// The slot was emptied (revoked or deleted) after the handle was issued.
    StaleSlot = 3,
    /// The capability is of the wrong object type for this call.
    WrongType = 4,
    /// The capability lacks a right the call needs, or a delegation asked for more rights than held.
    InsufficientRights = 5,
    /// An argument is out of range (alignment, size, vector, flags).
    InvalidArgument = 6,
    /// The microkernel has no memory left for the objects the call needs.
    OutOfMemory = 7,
    /// The target capability space is full.
    OutOfSlots = 8,
    /// The memory range is not inside the memory object, or is donated already.
    NotOwned = 9,
    /// A guest-physical page in the range is mapped already.
    AlreadyMapped = 10,
    /// A guest-physical page in the range is not mapped.
    NotMapped = 11,
    /// The object is not in a state that allows the call (e.g. start a running vCPU).
    InvalidState = 12,
    /// The call is rate-limited and the caller is over its budget.
    RateLimited = 13,
    /// A buffer address in the caller's own guest-physical space is unmapped or read-only.
    BadBuffer = 14,
}

impl Status {
    /// Every status, for lookups.
    pub const ALL: [Status; 15] = [
        Status::Success,
        Status::UnknownCall,
        Status::InvalidSlot,
        Status::StaleSlot,
        Status::WrongType,
        Status::InsufficientRights,
        Status::InvalidArgument,
        Status::OutOfMemory,
        Status::OutOfSlots,
        Status::NotOwned,
        Status::AlreadyMapped,
        Status::NotMapped,
        Status::InvalidState,
        Status::RateLimited,
        Status::BadBuffer,
    ];

    /// The status for a raw `RAX` value, if it is one.
    pub fn from_raw(raw: u64) -> Option<Status> {
        Status::ALL.into_iter().find(|s| *s as u64 == raw)
    }
}

/// Call numbers.
#[allow(missing_docs)] // Each is documented on its `Call` variant.
pub mod number {
    pub const NULL: u64 = 0;
    pub const DEBUG_WRITE: u64 = 1;
    pub const PARTITION_CREATE: u64 = 2;
    pub const PARTITION_DESTROY: u64 = 3;
    pub const PARTITION_STATUS: u64 = 4;
    pub const MEMORY_MAP: u64 = 5;
    pub const MEMORY_UNMAP: u64 = 6;
    pub const VCPU_CREATE: u64 = 7;
    pub const VCPU_GET_STATE: u64 = 8;
    pub const VCPU_SET_STATE: u64 = 9;
    pub const VCPU_START: u64 = 10;
    pub const VCPU_PAUSE: u64 = 11;
    pub const VCPU_RESUME: u64 = 12;
    pub const PORT_CREATE: u64 = 13;
    pub const PORT_SIGNAL: u64 = 14;
    pub const PORT_BIND: u64 = 15;
    pub const INTERRUPT_BIND: u64 = 16;
    pub const ACKNOWLEDGE: u64 = 17;
    pub const CAP_DELEGATE: u64 = 18;
    pub const CAP_REVOKE: u64 = 19;
    pub const CAP_DELETE: u64 = 20;
    pub const YIELD: u64 = 21;
    pub const DIRTY_LOG: u64 = 22;
    pub const DIRTY_FETCH: u64 = 23;
    pub const MEMORY_READ: u64 = 24;
    pub const MEMORY_WRITE: u64 = 25;
    pub const CAP_CLONE: u64 = 26;
    pub const CAP_DELEGATE_AT: u64 = 27;
    pub const CAP_INSPECT: u64 = 28;
    pub const POWER_OFF: u64 = 29;
    pub const RESET: u64 = 30;
    pub const INTERRUPT_SHARE: u64 = 31;
    pub const INTERRUPT_MESSAGE: u64 = 32;
    pub const TIMER_CREATE: u64 = 33;
    pub const TIMER_SET: u64 = 34;
    pub const TIMER_CANCEL: u64 = 35;
    /// One past the highest call number.
    pub const COUNT: u64 = 36;
}

/// Most bytes one `DebugWrite` carries.
pub const DEBUG_WRITE_MAX: usize = 40;
/// Lowest vector a port or interrupt may be bound to (0–31 are exceptions).
pub const MIN_VECTOR: u8 = 32;
/// Most pages one map, unmap or dirty-fetch call covers.
pub const MAX_PAGES_PER_CALL: u64 = 1 << 20;
/// Highest guest-physical address a partition may use (64 GiB).
pub const MAX_GPA: u64 = 64 << 30;
/// Highest vCPU priority.
pub const MAX_PRIORITY: u8 = 7;

/// Kernel timers: the clock, the limits on deadlines and periods, and the
/// `TimerSet` flags (`docs/hypercalls.md`, "Timers").
///
/// # The clock
/// Timers run on the kernel's monotonic clock: nanoseconds derived from the
/// time-stamp counter, `tsc * 1_000_000 / tsc_khz` ([`timer::clock_ns`]),
/// with `tsc_khz` as the microkernel measured it (every boot page carries
/// it). Partitions read the same counter, so they can compute the same
/// clock; `TimerSet` also returns the kernel's reading.
pub mod timer {
    /// `TimerSet` flag: `deadline` is absolute on the kernel's clock (else
    /// relative to now).
    pub const ABSOLUTE: u64 = 1;
    /// Every `TimerSet` flag.
    pub const FLAGS: u64 = ABSOLUTE;
    /// Shortest period of a periodic timer: 1 ms.
    pub const MIN_PERIOD_NS: u64 = 1_000_000;
    /// Furthest deadline (from now) and longest period: 366 days.
    pub const MAX_DEADLINE_NS: u64 = 366 * 24 * 3600 * 1_000_000_000;

    /// The kernel's clock in nanoseconds for a time-stamp counter reading
    /// `tsc` at `tsc_khz` counts per millisecond (0 when `tsc_khz` is 0).
    pub const fn clock_ns(tsc: u64, tsc_khz: u64) -> u64 {
        if tsc_khz == 0 {
            return 0;
        }
        let ns = tsc as u128 * 1_000_000 / tsc_khz as u128;
        if ns > u64::MAX as u128 {
            u64::MAX
        } else {
            ns as u64
        }
    }
}

/// A partition name: up to 8 bytes of printable ASCII, packed in a register.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name(pub [u8; 8]);

impl Name {
    /// A name from a string (cut at 8 bytes; non-printable bytes become `?`).
    pub fn new(s: &str) -> Name {
        let mut b = [0u8; 8];
        for (slot, c) in b.iter_mut().zip(s.bytes()) {
            *slot = if (0x21..0x7f).contains(&c) { c } else { b'?' };
        }
        Name(b)
    }

    /// From a register: printable ASCII, zero-padded, not empty.
    pub fn from_raw(raw: u64) -> Option<Name> {
        let b = raw.to_le_bytes();
        let len = b.iter().position(|&c| c == 0).unwrap_or(8);
        if len == 0
            || b[..len].iter().any(|c| !(0x21..0x7f).contains(c))
            || b[len..].iter().any(|&c| c != 0)
        {
            return None;
        }
        Some(Name(b))
    }

    /// Packs into a register.
    pub fn raw(self) -> u64 {
        u64::from_le_bytes(self.0)
    }

    /// As text.
    pub fn as_str(&self) -> &str {
        let len = self.0.iter().position(|&c| c == 0).unwrap_or(8);
        core::str::from_utf8(&self.0[..len]).unwrap_or("?")
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// A decoded hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// Does nothing (the round-trip benchmark).
    Null,
    /// Appends `len` bytes (packed little-endian in five registers) to the
    /// caller's console line; a newline prints it. Rate-limited.
    DebugWrite {
        /// Bytes valid in `bytes`.
        len: u8,
        /// The bytes.
        bytes: [u8; DEBUG_WRITE_MAX],
    },
    /// Creates a partition from `pages` frames of `memory` starting at page `first_page`.
    PartitionCreate {
        /// A capability on the caller's own partition with CREATE.
        authority: SlotHandle,
        /// Memory to donate (DONATE).
        memory: SlotHandle,
        /// First page of the donation within the memory object.
        first_page: u64,
        /// Pages donated.
        pages: u64,
        /// The new partition's name.
        name: Name,
        /// The highest priority its vCPUs may have (0–7, at most the
        /// caller's own ceiling): no vCPU of the new partition, whoever
        /// creates it, runs above this.
        ceiling: u8,
    },
    /// Destroys a partition: its vCPUs stop, its memory returns to the donor,
    /// every capability to it or held by it is removed.
    PartitionDestroy {
        /// The partition (CONTROL).
        partition: SlotHandle,
    },
    /// Reads a partition's run state and why it stopped.
    PartitionStatus {
        /// The partition (INSPECT).
        partition: SlotHandle,
    },
    /// Maps `pages` pages of `memory` from `first_page` at `gpa` in `partition`.
    MemoryMap {
        /// Target partition (CONTROL).
        partition: SlotHandle,
        /// Memory (MAP and the requested access rights).
        memory: SlotHandle,
        /// First page within the memory object.
        first_page: u64,
        /// Guest-physical address, page-aligned.
        gpa: u64,
        /// Pages to map.
        pages: u64,
        /// READ, WRITE, EXECUTE (READ is implied).
        access: Rights,
    },
    /// Unmaps `pages` pages at `gpa` in `partition`.
    MemoryUnmap {
        /// Target partition (CONTROL).
        partition: SlotHandle,
        /// Guest-physical address, page-aligned.
        gpa: u64,
        /// Pages to unmap.
        pages: u64,
    },
    /// Creates a vCPU in `partition`, stopped, in 64-bit mode at `rip`.
    VcpuCreate {
        /// Target partition (CONTROL).
        partition: SlotHandle,
        /// Entry point (guest-virtual).
        rip: u64,
        /// Initial stack pointer.
        rsp: u64,
        /// Guest page tables (guest-physical, page-aligned).
        cr3: u64,
        /// Passed in RDI; RSI receives the vCPU's index in its partition.
        arg: u64,
        /// Bits 0–7: priority (0–7, higher runs first); bits 8–15: processor
        /// affinity + 1 (0 = any).
        flags: u64,
    },
    /// Writes the vCPU's complete state to the caller's page at `buffer`.
    VcpuGetState {
        /// The vCPU (INSPECT).
        vcpu: SlotHandle,
        /// Guest-physical address of a writable page of the caller's.
        buffer: u64,
    },
    /// Loads the vCPU's complete state from the caller's page at `buffer`; the vCPU must be paused or not started.
    VcpuSetState {
        /// The vCPU (CONTROL).
        vcpu: SlotHandle,
        /// Guest-physical address of a page of the caller's.
        buffer: u64,
    },
    /// Starts a created vCPU.
    VcpuStart {
        /// The vCPU (CONTROL).
        vcpu: SlotHandle,
    },
    /// Pauses a running vCPU.
    VcpuPause {
        /// The vCPU (CONTROL).
        vcpu: SlotHandle,
    },
    /// Resumes a paused vCPU.
    VcpuResume {
        /// The vCPU (CONTROL).
        vcpu: SlotHandle,
    },
    /// Creates a port; result: its slot (all rights).
    PortCreate,
    /// Signals a port: its bound vCPU gets the bound vector.
    PortSignal {
        /// The port (SIGNAL).
        port: SlotHandle,
    },
    /// Binds a port to `vector` of `vcpu`.
    PortBind {
        /// The port (BIND).
        port: SlotHandle,
        /// The vCPU (CONTROL).
        vcpu: SlotHandle,
        /// Vector, 32–255.
        vector: u8,
    },
    /// Binds a device interrupt to `vector` of `vcpu`.
    InterruptBind {
        /// The interrupt (BIND).
        interrupt: SlotHandle,
        /// The vCPU (CONTROL).
        vcpu: SlotHandle,
        /// Vector, 32–255.
        vector: u8,
    },
    /// Another interrupt on the same level-triggered line as `interrupt`,
    /// with its own binding and acknowledge: how two devices share a line.
    /// Result: the new interrupt's slot (BIND, GRANT).
    InterruptShare {
        /// An interrupt on an I/O APIC line (BIND).
        interrupt: SlotHandle,
    },
    /// A message-signalled interrupt (MSI, MSI-X): the kernel picks a free
    /// processor vector and its destination. Results: the new interrupt's
    /// slot (BIND, GRANT), the message address and the message data for
    /// the device.
    InterruptMessage {
        /// The caller's own partition (CREATE).
        partition: SlotHandle,
    },
    /// Re-arms a port or interrupt after its vector was delivered.
    Acknowledge {
        /// The port or interrupt (BIND).
        slot: SlotHandle,
    },
    /// Copies a capability into another partition's space with `rights`
    /// (a subset of the source's). Result: the new slot.
    CapDelegate {
        /// The capability (GRANT).
        slot: SlotHandle,
        /// The receiving partition (CONTROL); may be the caller's own.
        target: SlotHandle,
        /// Rights of the copy.
        rights: Rights,
    },
    /// Removes every capability derived from `slot` (in any partition); the slot itself stays.
    CapRevoke {
        /// The capability.
        slot: SlotHandle,
    },
    /// Removes `slot` and everything derived from it.
    CapDelete {
        /// The capability.
        slot: SlotHandle,
    },
    /// Gives up the rest of the time slice.
    Yield,
    /// Turns dirty-page logging on or off for a partition.
    DirtyLog {
        /// The partition (INSPECT).
        partition: SlotHandle,
        /// On (true) or off.
        enable: bool,
    },
    /// Writes the dirty bitmap of `pages` pages from `first_gpa` (bit n =
    /// page n) to the caller's buffer and clears those bits.
    DirtyFetch {
        /// The partition (INSPECT).
        partition: SlotHandle,
        /// First guest-physical page, page-aligned.
        first_gpa: u64,
        /// Pages covered (at most 32,768: one page of bitmap).
        pages: u64,
        /// Guest-physical address of a writable page of the caller's.
        buffer: u64,
    },
    /// Copies the page at `gpa` of a partition to the caller's page at `buffer`.
    MemoryRead {
        /// The partition (INSPECT).
        partition: SlotHandle,
        /// Guest-physical address in the partition, page-aligned.
        gpa: u64,
        /// Guest-physical address of a writable page of the caller's.
        buffer: u64,
    },
    /// Copies the caller's page at `buffer` to the page at `gpa` of a partition.
    MemoryWrite {
        /// The partition (CONTROL).
        partition: SlotHandle,
        /// Guest-physical address in the partition, page-aligned.
        gpa: u64,
        /// Guest-physical address of a page of the caller's.
        buffer: u64,
    },
    /// Gives partition `target` a copy of partition `source`'s capability
    /// space, slot for slot (same index, same generation): what migration
    /// needs so the handles in the moved memory name the same things.
    /// Capabilities naming the source itself, its vCPUs (by creation
    /// order) or its memory name the target's instead; every other one
    /// names the same object, derived from the same parent. `target`'s
    /// space must hold nothing but capabilities to itself and its memory
    /// (what `PartitionCreate` put there), each in the slot the source
    /// has its counterpart in.
    CapClone {
        /// The partition copied from (CONTROL).
        source: SlotHandle,
        /// The partition copied to (CONTROL); no vCPU of it started yet.
        target: SlotHandle,
    },
    /// As `CapDelegate`, into one chosen empty slot of the target, which
    /// takes the handle's generation: how a restored partition gets back
    /// the handles its saved memory holds. Result: `at`.
    CapDelegateAt {
        /// The capability (GRANT).
        slot: SlotHandle,
        /// The receiving partition (CONTROL), not the caller.
        target: SlotHandle,
        /// Rights of the copy.
        rights: Rights,
        /// The slot (index and generation) the copy goes to.
        at: SlotHandle,
    },
    /// Describes slot `index` of a partition's capability space: results
    /// `[generation | kind << 16 (0: empty, else ipc::boot::cap_kind),
    /// rights, the caller's own slot naming the same object or u64::MAX]`.
    CapInspect {
        /// The partition (INSPECT).
        partition: SlotHandle,
        /// The slot index (below 256).
        index: u16,
    },
    /// Ends the run: the microkernel powers the machine off (ACPI soft-off,
    /// or QEMU's debug-exit device). Only for a holder of CONTROL on the
    /// root partition itself; does not return on success.
    PowerOff {
        /// The root partition (CONTROL).
        partition: SlotHandle,
    },
    /// Resets the machine (the microkernel uses the chipset's reset
    /// control register, then the keyboard controller, then a triple
    /// fault). Only for a holder of CONTROL on the root partition itself;
    /// does not return on success.
    Reset {
        /// The root partition (CONTROL).
        partition: SlotHandle,
    },
    /// Creates a timer that signals `port` when it fires; result: its slot
    /// (CONTROL, GRANT). Costs the caller one unit of its quota.
    TimerCreate {
        /// The port it signals (SIGNAL).
        port: SlotHandle,
    },
    /// Arms a timer (re-arms an armed one): it fires at `deadline`, then
    /// every `period` ns if `period` is not 0. Results: the absolute
    /// deadline and the kernel's clock now (ns).
    TimerSet {
        /// The timer (CONTROL).
        timer: SlotHandle,
        /// Nanoseconds from now (1 to [`timer::MAX_DEADLINE_NS`]), or on
        /// the kernel's clock with [`timer::ABSOLUTE`] (not 0).
        deadline: u64,
        /// 0 (one-shot) or [`timer::MIN_PERIOD_NS`] to [`timer::MAX_DEADLINE_NS`].
        period: u64,
        /// [`timer::ABSOLUTE`] or 0.
        flags: u64,
    },
    /// Disarms a timer; result: 1 if it was armed, else 0. A signal it
    /// already gave stays pending on its port.
    TimerCancel {
        /// The timer (CONTROL).
        timer: SlotHandle,
    },
}

/// The registers of a hypercall: `RAX` and the six argument registers.
pub type Registers = [u64; 7];

fn slot(raw: u64) -> Result<SlotHandle, Status> {
    SlotHandle::from_raw(raw)
}

fn page_aligned(addr: u64) -> Result<u64, Status> {
    if !addr.is_multiple_of(4096) || addr >= MAX_GPA {
        return Err(Status::InvalidArgument);
    }
    Ok(addr)
}

fn page_count(pages: u64) -> Result<u64, Status> {
    if pages == 0 || pages > MAX_PAGES_PER_CALL {
        return Err(Status::InvalidArgument);
    }
    Ok(pages)
}

fn vector(raw: u64) -> Result<u8, Status> {
    match u8::try_from(raw) {
        Ok(v) if v >= MIN_VECTOR => Ok(v),
        _ => Err(Status::InvalidArgument),
    }
}

fn rights(raw: u64) -> Result<Rights, Status> {
    Rights::from_raw(raw)
}

/// Page-aligned guest-physical range check: `gpa + pages` stays below [`MAX_GPA`].
fn gpa_range(gpa: u64, pages: u64) -> Result<(u64, u64), Status> {
    let gpa = page_aligned(gpa)?;
    let pages = page_count(pages)?;
    match pages.checked_mul(4096).and_then(|b| b.checked_add(gpa)) {
        Some(end) if end <= MAX_GPA => Ok((gpa, pages)),
        _ => Err(Status::InvalidArgument),
    }
}

impl Call {
    /// Decodes `RAX, RDI, RSI, RDX, R8, R9, R10`. Never panics.
    pub fn decode(r: &Registers) -> Result<Call, Status> {
        let [nr, a, b, c, d, e, f] = *r;
        Ok(match nr {
            number::NULL => Call::Null,
            number::DEBUG_WRITE => {
                if a > DEBUG_WRITE_MAX as u64 {
                    return Err(Status::InvalidArgument);
                }
                let mut bytes = [0u8; DEBUG_WRITE_MAX];
                for (i, word) in [b, c, d, e, f].into_iter().enumerate() {
                    bytes[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
                }
                Call::DebugWrite {
                    len: a as u8,
                    bytes,
                }
            }
            number::PARTITION_CREATE => {
                if f > MAX_PRIORITY as u64 {
                    return Err(Status::InvalidArgument);
                }
                let pages = page_count(d)?;
                if c.checked_add(pages).is_none() {
                    return Err(Status::InvalidArgument);
                }
                Call::PartitionCreate {
                    authority: slot(a)?,
                    memory: slot(b)?,
                    first_page: c,
                    pages,
                    name: Name::from_raw(e).ok_or(Status::InvalidArgument)?,
                    ceiling: f as u8,
                }
            }
            number::PARTITION_DESTROY => Call::PartitionDestroy {
                partition: slot(a)?,
            },
            number::PARTITION_STATUS => Call::PartitionStatus {
                partition: slot(a)?,
            },
            number::MEMORY_MAP => {
                let (gpa, pages) = gpa_range(d, e)?;
                let access = rights(f)?;
                if !Rights::READ
                    .union(Rights::WRITE)
                    .union(Rights::EXECUTE)
                    .contains(access)
                {
                    return Err(Status::InvalidArgument);
                }
                if c.checked_add(pages).is_none() {
                    return Err(Status::InvalidArgument);
                }
                Call::MemoryMap {
                    partition: slot(a)?,
                    memory: slot(b)?,
                    first_page: c,
                    gpa,
                    pages,
                    access: access.union(Rights::READ),
                }
            }
            number::MEMORY_UNMAP => {
                let (gpa, pages) = gpa_range(b, c)?;
                Call::MemoryUnmap {
                    partition: slot(a)?,
                    gpa,
                    pages,
                }
            }
            number::VCPU_CREATE => {
                if f & !0xffff != 0 || (f & 0xff) > MAX_PRIORITY as u64 {
                    return Err(Status::InvalidArgument);
                }
                Call::VcpuCreate {
                    partition: slot(a)?,
                    rip: b,
                    rsp: c,
                    cr3: page_aligned(d)?,
                    arg: e,
                    flags: f,
                }
            }
            number::VCPU_GET_STATE => Call::VcpuGetState {
                vcpu: slot(a)?,
                buffer: page_aligned(b)?,
            },
            number::VCPU_SET_STATE => Call::VcpuSetState {
                vcpu: slot(a)?,
                buffer: page_aligned(b)?,
            },
            number::VCPU_START => Call::VcpuStart { vcpu: slot(a)? },
            number::VCPU_PAUSE => Call::VcpuPause { vcpu: slot(a)? },
            number::VCPU_RESUME => Call::VcpuResume { vcpu: slot(a)? },
            number::PORT_CREATE => Call::PortCreate,
            number::PORT_SIGNAL => Call::PortSignal { port: slot(a)? },
            number::PORT_BIND => Call::PortBind {
                port: slot(a)?,
                vcpu: slot(b)?,
                vector: vector(c)?,
            },
            number::INTERRUPT_BIND => Call::InterruptBind {
                interrupt: slot(a)?,
                vcpu: slot(b)?,
                vector: vector(c)?,
            },
            number::ACKNOWLEDGE => Call::Acknowledge { slot: slot(a)? },
            number::INTERRUPT_SHARE => Call::InterruptShare {
                interrupt: slot(a)?,
            },
            number::INTERRUPT_MESSAGE => Call::InterruptMessage {
                partition: slot(a)?,
            },
            number::CAP_DELEGATE => Call::CapDelegate {
                slot: slot(a)?,
                target: slot(b)?,
                rights: rights(c)?,
            },
            number::CAP_REVOKE => Call::CapRevoke { slot: slot(a)? },
            number::CAP_DELETE => Call::CapDelete { slot: slot(a)? },
            number::YIELD => Call::Yield,
            number::DIRTY_LOG => match b {
                0 | 1 => Call::DirtyLog {
                    partition: slot(a)?,
                    enable: b == 1,
                },
                _ => return Err(Status::InvalidArgument),
            },
            number::DIRTY_FETCH => {
                let (first_gpa, pages) = gpa_range(b, c)?;
                if pages > 4096 * 8 {
                    return Err(Status::InvalidArgument);
                }
                Call::DirtyFetch {
                    partition: slot(a)?,
                    first_gpa,
                    pages,
                    buffer: page_aligned(d)?,
                }
            }
            number::MEMORY_READ => Call::MemoryRead {
                partition: slot(a)?,
                gpa: page_aligned(b)?,
                buffer: page_aligned(c)?,
            },
            number::MEMORY_WRITE => Call::MemoryWrite {
                partition: slot(a)?,
                gpa: page_aligned(b)?,
                buffer: page_aligned(c)?,
            },
            number::CAP_CLONE => Call::CapClone {
                source: slot(a)?,
                target: slot(b)?,
            },
            number::CAP_DELEGATE_AT => Call::CapDelegateAt {
                slot: slot(a)?,
                target: slot(b)?,
                rights: rights(c)?,
                at: slot(d)?,
            },
            number::CAP_INSPECT => Call::CapInspect {
                partition: slot(a)?,
                index: u16::try_from(b).map_err(|_| Status::InvalidArgument)?,
            },
            number::POWER_OFF => Call::PowerOff {
                partition: slot(a)?,
            },
            number::RESET => Call::Reset {
                partition: slot(a)?,
            },
            number::TIMER_CREATE => Call::TimerCreate { port: slot(a)? },
            number::TIMER_SET => {
                let absolute = match d {
                    0 => false,
                    timer::ABSOLUTE => true,
                    _ => return Err(Status::InvalidArgument),
                };
                // Zero is never a deadline; a relative one beyond the
                // limit is refused here, an absolute one by the kernel
                // (it needs the clock).
                if b == 0 || (!absolute && b > timer::MAX_DEADLINE_NS) {
                    return Err(Status::InvalidArgument);
                }
                if c != 0 && !(timer::MIN_PERIOD_NS..=timer::MAX_DEADLINE_NS).contains(&c) {
                    return Err(Status::InvalidArgument);
                }
                Call::TimerSet {
                    timer: slot(a)?,
                    deadline: b,
                    period: c,
                    flags: d,
                }
            }
            number::TIMER_CANCEL => Call::TimerCancel { timer: slot(a)? },
            _ => return Err(Status::UnknownCall),
        })
    }

    /// Encodes the call into registers (the inverse of [`Call::decode`]).
    pub fn encode(&self) -> Registers {
        use number::*;
        match *self {
            Call::Null => [NULL, 0, 0, 0, 0, 0, 0],
            Call::DebugWrite { len, bytes } => {
                let w = |i: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
                    u64::from_le_bytes(b)
                };
                [DEBUG_WRITE, len as u64, w(0), w(1), w(2), w(3), w(4)]
            }
            Call::PartitionCreate {
                authority,
                memory,
                first_page,
                pages,
                name,
                ceiling,
            } => [
                PARTITION_CREATE,
                authority.raw(),
                memory.raw(),
                first_page,
                pages,
                name.raw(),
                u64::from(ceiling),
            ],
            Call::PartitionDestroy { partition } => {
                [PARTITION_DESTROY, partition.raw(), 0, 0, 0, 0, 0]
            }
            Call::PartitionStatus { partition } => {
                [PARTITION_STATUS, partition.raw(), 0, 0, 0, 0, 0]
            }
            Call::MemoryMap {
                partition,
                memory,
                first_page,
                gpa,
                pages,
                access,
            } => [
                MEMORY_MAP,
                partition.raw(),
                memory.raw(),
                first_page,
                gpa,
                pages,
                access.bits() as u64,
            ],
            Call::MemoryUnmap {
                partition,
                gpa,
                pages,
            } => [MEMORY_UNMAP, partition.raw(), gpa, pages, 0, 0, 0],
            Call::VcpuCreate {
                partition,
                rip,
                rsp,
                cr3,
                arg,
                flags,
            } => [VCPU_CREATE, partition.raw(), rip, rsp, cr3, arg, flags],
            Call::VcpuGetState { vcpu, buffer } => [VCPU_GET_STATE, vcpu.raw(), buffer, 0, 0, 0, 0],
            Call::VcpuSetState { vcpu, buffer } => [VCPU_SET_STATE, vcpu.raw(), buffer, 0, 0, 0, 0],
            Call::VcpuStart { vcpu } => [VCPU_START, vcpu.raw(), 0, 0, 0, 0, 0],
            Call::VcpuPause { vcpu } => [VCPU_PAUSE, vcpu.raw(), 0, 0, 0, 0, 0],
            Call::VcpuResume { vcpu } => [VCPU_RESUME, vcpu.raw(), 0, 0, 0, 0, 0],
            Call::PortCreate => [PORT_CREATE, 0, 0, 0, 0, 0, 0],
            Call::PortSignal { port } => [PORT_SIGNAL, port.raw(), 0, 0, 0, 0, 0],
            Call::PortBind { port, vcpu, vector } => {
                [PORT_BIND, port.raw(), vcpu.raw(), vector as u64, 0, 0, 0]
            }
            Call::InterruptBind {
                interrupt,
                vcpu,
                vector,
            } => [
                INTERRUPT_BIND,
                interrupt.raw(),
                vcpu.raw(),
                vector as u64,
                0,
                0,
                0,
            ],
            Call::Acknowledge { slot } => [ACKNOWLEDGE, slot.raw(), 0, 0, 0, 0, 0],
            Call::InterruptShare { interrupt } => [INTERRUPT_SHARE, interrupt.raw(), 0, 0, 0, 0, 0],
            Call::InterruptMessage { partition } => {
                [INTERRUPT_MESSAGE, partition.raw(), 0, 0, 0, 0, 0]
            }
            Call::CapDelegate {
                slot,
                target,
                rights,
            } => [
                CAP_DELEGATE,
                slot.raw(),
                target.raw(),
                rights.bits() as u64,
                0,
                0,
                0,
            ],
            Call::CapRevoke { slot } => [CAP_REVOKE, slot.raw(), 0, 0, 0, 0, 0],
            Call::CapDelete { slot } => [CAP_DELETE, slot.raw(), 0, 0, 0, 0, 0],
            Call::Yield => [YIELD, 0, 0, 0, 0, 0, 0],
            Call::DirtyLog { partition, enable } => {
                [DIRTY_LOG, partition.raw(), enable as u64, 0, 0, 0, 0]
            }
            Call::DirtyFetch {
                partition,
                first_gpa,
                pages,
                buffer,
            } => [DIRTY_FETCH, partition.raw(), first_gpa, pages, buffer, 0, 0],
            Call::MemoryRead {
                partition,
                gpa,
                buffer,
            } => [MEMORY_READ, partition.raw(), gpa, buffer, 0, 0, 0],
            Call::MemoryWrite {
                partition,
                gpa,
                buffer,
            } => [MEMORY_WRITE, partition.raw(), gpa, buffer, 0, 0, 0],
            Call::CapClone { source, target } => {
                [CAP_CLONE, source.raw(), target.raw(), 0, 0, 0, 0]
            }
            Call::CapDelegateAt {
                slot,
                target,
                rights,
                at,
            } => [
                CAP_DELEGATE_AT,
                slot.raw(),
                target.raw(),
                rights.bits() as u64,
                at.raw(),
                0,
                0,
            ],
            Call::CapInspect { partition, index } => {
                [CAP_INSPECT, partition.raw(), u64::from(index), 0, 0, 0, 0]
            }
            Call::PowerOff { partition } => [POWER_OFF, partition.raw(), 0, 0, 0, 0, 0],
            Call::Reset { partition } => [RESET, partition.raw(), 0, 0, 0, 0, 0],
            Call::TimerCreate { port } => [TIMER_CREATE, port.raw(), 0, 0, 0, 0, 0],
            Call::TimerSet {
                timer,
                deadline,
                period,
                flags,
            } => [TIMER_SET, timer.raw(), deadline, period, flags, 0, 0],
            Call::TimerCancel { timer } => [TIMER_CANCEL, timer.raw(), 0, 0, 0, 0, 0],
        }
    }
}

/// Results of a successful call, in `RDI, RSI, RDX`.
pub type Results = [u64; 3];

/// Run state reported by `PartitionStatus` in `RDI`.
#[allow(missing_docs)]
pub mod run_state {
    pub const RUNNING: u64 = 0;
    /// Stopped; `RSI` holds a [`super::StopReason`] code and `RDX` its detail.
    pub const STOPPED: u64 = 1;
}

/// Why a partition stopped (reported by `PartitionStatus` in `RSI`, detail in `RDX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum StopReason {
    /// Every vCPU halted with interrupts disabled (detail: 0).
    Halted = 1,
    /// A nested page fault (detail: the guest-physical address).
    NestedPageFault = 2,
    /// A triple fault (detail: RIP).
    TripleFault = 3,
    /// The processor refused the vCPU's state (detail: 0).
    InvalidState = 4,
    /// An exit the microkernel does not handle (detail: the exit code).
    UnhandledExit = 5,
}

impl StopReason {
    /// From a raw `RSI` value.
    pub fn from_raw(raw: u64) -> Option<StopReason> {
        [
            StopReason::Halted,
            StopReason::NestedPageFault,
            StopReason::TripleFault,
            StopReason::InvalidState,
            StopReason::UnhandledExit,
        ]
        .into_iter()
        .find(|r| *r as u64 == raw)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    fn h(index: u16, generation: u16) -> SlotHandle {
        SlotHandle { index, generation }
    }

    #[test]
    fn valid_calls_round_trip() {
        let mut bytes = [0u8; DEBUG_WRITE_MAX];
        bytes[..5].copy_from_slice(b"hello");
        let calls = [
            Call::Null,
            Call::DebugWrite { len: 5, bytes },
            Call::PartitionCreate {
                authority: h(0, 0),
                memory: h(1, 3),
                first_page: 10,
                pages: 4096,
                name: Name::new("alpha"),
                ceiling: 3,
            },
            Call::MemoryMap {
                partition: h(4, 1),
                memory: h(5, 1),
                first_page: 0,
                gpa: 0x20_0000,
                pages: 16,
                access: Rights::READ | Rights::WRITE,
            },
            Call::VcpuCreate {
                partition: h(4, 1),
                rip: 0xffff_ffff_8000_0000,
                rsp: 0x8000,
                cr3: 0x2000,
                arg: 0x1000,
                flags: 0x0203,
            },
            Call::CapDelegate {
                slot: h(7, 2),
                target: h(4, 1),
                rights: Rights::SIGNAL,
            },
            Call::DirtyFetch {
                partition: h(4, 1),
                first_gpa: 0,
                pages: 512,
                buffer: 0x5000,
            },
            Call::DirtyLog {
                partition: h(4, 1),
                enable: true,
            },
            Call::MemoryWrite {
                partition: h(4, 1),
                gpa: 0x1000,
                buffer: 0x3000,
            },
            Call::CapClone {
                source: h(4, 1),
                target: h(9, 0),
            },
            Call::CapDelegateAt {
                slot: h(7, 2),
                target: h(4, 1),
                rights: Rights::SIGNAL,
                at: h(12, 3),
            },
            Call::CapInspect {
                partition: h(4, 1),
                index: 255,
            },
            Call::PowerOff { partition: h(0, 0) },
            Call::Reset { partition: h(0, 0) },
            Call::InterruptShare { interrupt: h(9, 2) },
            Call::InterruptMessage { partition: h(0, 0) },
            Call::TimerCreate { port: h(7, 2) },
            Call::TimerSet {
                timer: h(8, 1),
                deadline: 1,
                period: 0,
                flags: 0,
            },
            Call::TimerSet {
                timer: h(8, 1),
                deadline: timer::MAX_DEADLINE_NS,
                period: timer::MIN_PERIOD_NS,
                flags: 0,
            },
            Call::TimerSet {
                timer: h(8, 1),
                deadline: u64::MAX,
                period: timer::MAX_DEADLINE_NS,
                flags: timer::ABSOLUTE,
            },
            Call::TimerCancel { timer: h(8, 1) },
        ];
        for call in calls {
            assert_eq!(Call::decode(&call.encode()), Ok(call));
        }
    }

    #[test]
    fn malformed_arguments_are_refused() {
        use number::*;
        assert_eq!(
            Call::decode(&[COUNT, 0, 0, 0, 0, 0, 0]),
            Err(Status::UnknownCall)
        );
        assert_eq!(
            Call::decode(&[u64::MAX, 0, 0, 0, 0, 0, 0]),
            Err(Status::UnknownCall)
        );
        assert_eq!(
            Call::decode(&[DEBUG_WRITE, 41, 0, 0, 0, 0, 0]),
            Err(Status::InvalidArgument)
        );
        assert_eq!(
            Call::decode(&[PORT_SIGNAL, 1 << 32, 0, 0, 0, 0, 0]),
            Err(Status::InvalidSlot)
        );
        // Unaligned, too large, wrapping ranges.
        assert_eq!(
            Call::decode(&[MEMORY_UNMAP, 1, 0x1001, 1, 0, 0, 0]),
            Err(Status::InvalidArgument)
        );
        assert_eq!(
            Call::decode(&[MEMORY_UNMAP, 1, MAX_GPA - 4096, 2, 0, 0, 0]),
            Err(Status::InvalidArgument)
        );
        assert_eq!(
            Call::decode(&[MEMORY_UNMAP, 1, 0, 0, 0, 0, 0]),
            Err(Status::InvalidArgument)
        );
        assert_eq!(
            Call::decode(&[MEMORY_MAP, 1, 2, u64::MAX, 0, 1, 1]),
            Err(Status::InvalidArgument)
        );
        assert_eq!(
            Call::decode(&[MEMORY_MAP, 1, 2, 0, 0, 1, Rights::DONATE.bits() as u64]),
            Err(Status::InvalidArgument)
        );
        assert_eq!(
            Call::decode(&[CAP_DELEGATE, 1, 2, 1 << 20, 0, 0, 0]),
            Err(Status::InvalidArgument)
        );
        // Vectors below 32 are exceptions.
        assert_eq!(
            Call::decode(&[PORT_BIND, 1, 2, 14, 0, 0, 0]),
            Err(Status::InvalidArgument)
        );
        assert_eq!(
            Call::decode(&[PORT_BIND, 1, 2, 256, 0, 0, 0]),
            Err(Status::InvalidArgument)
        );
        assert_eq!(
            Call::decode(&[VCPU_CREATE, 1, 0, 0, 0, 0, 8]),
            Err(Status::InvalidArgument)
        );
        assert_eq!(
            Call::decode(&[PARTITION_CREATE, 0, 1, 0, 1, 0, 0]),
            Err(Status::InvalidArgument),
            "empty name"
        );
        let name = Name::new("n").raw();
        assert_eq!(
            Call::decode(&[PARTITION_CREATE, 0, 1, 0, 1, name, 8]),
            Err(Status::InvalidArgument),
            "priority ceiling above 7"
        );
        assert!(
            Call::decode(&[PARTITION_CREATE, 1, 1, 0, 1, name, 0]).is_ok(),
            "one slot for authority and memory decodes: the kernel answers WrongType"
        );
        assert_eq!(
            Call::decode(&[DIRTY_LOG, 1, 2, 0, 0, 0, 0]),
            Err(Status::InvalidArgument)
        );
        assert_eq!(
            Call::decode(&[POWER_OFF, 1 << 32, 0, 0, 0, 0, 0]),
            Err(Status::InvalidSlot)
        );
        assert_eq!(
            Call::decode(&[RESET, 1 << 40, 0, 0, 0, 0, 0]),
            Err(Status::InvalidSlot)
        );
    }

    #[test]
    fn timer_arguments_are_checked() {
        use number::*;
        let set =
            |deadline, period, flags| Call::decode(&[TIMER_SET, 1, deadline, period, flags, 0, 0]);
        assert_eq!(set(0, 0, 0), Err(Status::InvalidArgument), "zero deadline");
        assert_eq!(
            set(0, 0, timer::ABSOLUTE),
            Err(Status::InvalidArgument),
            "zero absolute deadline"
        );
        assert_eq!(
            set(timer::MAX_DEADLINE_NS + 1, 0, 0),
            Err(Status::InvalidArgument),
            "beyond a year"
        );
        assert_eq!(set(u64::MAX, 0, 0), Err(Status::InvalidArgument));
        assert!(
            set(u64::MAX, 0, timer::ABSOLUTE).is_ok(),
            "an absolute deadline is the kernel's to judge"
        );
        assert_eq!(
            set(1, timer::MIN_PERIOD_NS - 1, 0),
            Err(Status::InvalidArgument),
            "period below the minimum"
        );
        assert_eq!(set(1, 1, 0), Err(Status::InvalidArgument));
        assert_eq!(
            set(1, timer::MAX_DEADLINE_NS + 1, 0),
            Err(Status::InvalidArgument),
            "period beyond a year"
        );
        assert_eq!(set(1, 0, 2), Err(Status::InvalidArgument), "unknown flag");
        assert_eq!(set(1, 0, 3), Err(Status::InvalidArgument));
        assert_eq!(
            Call::decode(&[TIMER_SET, 1 << 32, 1, 0, 0, 0, 0]),
            Err(Status::InvalidSlot)
        );
        assert_eq!(
            Call::decode(&[TIMER_CREATE, 1 << 33, 0, 0, 0, 0, 0]),
            Err(Status::InvalidSlot)
        );
        assert_eq!(
            Call::decode(&[TIMER_CANCEL, 1 << 32, 0, 0, 0, 0, 0]),
            Err(Status::InvalidSlot)
        );
    }

    #[test]
    fn the_clock_is_tsc_derived_nanoseconds() {
        assert_eq!(timer::clock_ns(2_000_000, 2_000_000), 1_000_000);
        assert_eq!(timer::clock_ns(3, 3_000_000), 1);
        assert_eq!(timer::clock_ns(u64::MAX, 1), u64::MAX, "saturates");
        assert_eq!(timer::clock_ns(12345, 0), 0, "no calibration");
        // A year of nanoseconds fits with room to spare.
        const { assert!(timer::MAX_DEADLINE_NS < u64::MAX / 2) };
    }

    #[test]
    fn names_and_rights() {
        assert_eq!(Name::new("beta").as_str(), "beta");
        assert_eq!(
            Name::from_raw(Name::new("beta").raw()),
            Some(Name::new("beta"))
        );
        assert_eq!(Name::from_raw(u64::from_le_bytes(*b"a\0b\0\0\0\0\0")), None);
        assert_eq!(
            Name::from_raw(u64::from_le_bytes(*b"a\n\0\0\0\0\0\0")),
            None
        );
        assert!(Rights::ALL.contains(Rights::GRANT | Rights::SIGNAL));
        assert!(!Rights::SIGNAL.contains(Rights::SIGNAL | Rights::BIND));
        assert_eq!(format!("{:?}", Rights::READ | Rights::GRANT), "READ|GRANT");
        assert_eq!(format!("{:?}", Rights::NONE), "NONE");
        assert_eq!(Rights::ALL.bits(), 0x87ff);
        assert_eq!(Rights::from_raw(0x87ff), Ok(Rights::ALL));
        assert_eq!(Rights::from_raw(1 << 11), Err(Status::InvalidArgument));
        assert_eq!(Rights::from_raw(1 << 32), Err(Status::InvalidArgument));
        for s in Status::ALL {
            assert_eq!(Status::from_raw(s as u64), Some(s));
        }
    }
}
