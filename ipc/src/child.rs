//! The boot protocol between the root partition and a child partition.
//!
//! The root prepares a child's memory before donating it: the child runtime
//! image, initial page tables, one stack per vCPU, and a
//! [`ChildBootInfo`] page. Every vCPU starts in 64-bit mode at the image's
//! entry with `RDI` = the boot page's guest-physical address and `RSI` =
//! the vCPU's index (0 first). See `docs/boot.md`, "Child partitions".
//!
//! # Invariants
//! The page layout is explicit little-endian (`to_page`/`from_page`); the
//! decoder checks magic, version and every count, never panics.

use crate::boot::PhysRange;
use crate::hypercall::{Name, SlotHandle};

/// `ChildBootInfo::magic`: "CAPVCHLD".
pub const CHILD_BOOT_MAGIC: u64 = u64::from_le_bytes(*b"CAPVCHLD");
/// Version of the layout below.
pub const CHILD_BOOT_VERSION: u32 = 2;
/// Longest workload name.
pub const MAX_WORKLOAD: usize = 32;
/// Most vCPUs a child has.
pub const MAX_CHILD_VCPUS: u32 = 4;
/// Guest-physical address of the boot page in every child.
pub const CHILD_BOOT_PAGE: u64 = 0x1000;
/// Vector the root binds a child's event port to on vCPU 0 (root → child events).
pub const CHILD_EVENT_VECTOR: u8 = 0x40;
/// Vector the root binds a child's VMBus event ports to on vCPU 0: the
/// control channel's, then one per opened channel (`+ 1 + offer id`).
pub const CHILD_VMBUS_VECTOR: u8 = 0x41;

/// The boot page of a child partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildBootInfo {
    /// The partition's name.
    pub name: Name,
    /// vCPUs the root created.
    pub vcpu_count: u32,
    /// Workload to run (e.g. `hello`, `spin`, `hostile`, `dirty`).
    pub workload: [u8; MAX_WORKLOAD],
    /// Workload parameters (their meaning is the workload's).
    pub args: [u64; 4],
    /// Bytes of guest-physical memory mapped from address 0 (page 0 excepted).
    pub memory_bytes: u64,
    /// Guest-physical range free for the runtime's heap.
    pub heap: PhysRange,
    /// Top of vCPU 0's stack; vCPU i's is `stack_top - i * stack_bytes`.
    pub stack_top: u64,
    /// Bytes of each vCPU stack.
    pub stack_bytes: u64,
    /// The child's capability on itself (rights: GRANT-free INSPECT).
    pub self_slot: SlotHandle,
    /// A port the child may signal to reach the root (SIGNAL), or `None`.
    pub to_root: Option<SlotHandle>,
    /// A port the child owns, bound by the root to [`CHILD_EVENT_VECTOR`] on vCPU 0
    /// (BIND, to acknowledge), or `None`.
    pub from_root: Option<SlotHandle>,
    /// The VMBus control channel's pages (`ipc::vmbus::control`): a ring
    /// of `CONTROL_RING_PAGES` child-to-root, then one root-to-child,
    /// initialised by the root; empty if the child has no VMBus.
    pub vmbus_control: PhysRange,
    /// The port the child signals for the control channel (SIGNAL), or `None`.
    pub vmbus_signal: Option<SlotHandle>,
    /// The control channel's event port, bound to [`CHILD_VMBUS_VECTOR`]
    /// on vCPU 0 (BIND, to acknowledge), or `None`.
    pub vmbus_event: Option<SlotHandle>,
    /// Time-stamp counter ticks per millisecond as the microkernel measured
    /// them (0: unknown); children have no timer device of their own:
    /// kernel timers run on a clock derived from it
    /// ([`crate::hypercall::timer::clock_ns`]).
    pub tsc_khz: u64,
}

/// Why a child boot page was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildBootError {
    /// Wrong magic.
    BadMagic,
    /// Unknown version.
    BadVersion,
    /// A field is out of range (name, vCPU count, workload text, ranges).
    BadField,
}

const NO_SLOT: u64 = u64::MAX;

fn opt_slot(s: Option<SlotHandle>) -> u64 {
    s.map_or(NO_SLOT, SlotHandle::raw)
}

fn read_opt_slot(raw: u64) -> Result<Option<SlotHandle>, ChildBootError> {
    if raw == NO_SLOT {
        return Ok(None);
    }
    SlotHandle::from_raw(raw)
        .map(Some)
        .map_err(|_| ChildBootError::BadField)
}

impl ChildBootInfo {
    /// The workload name as text.
    pub fn workload(&self) -> &str {
        let len = self
            .workload
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(MAX_WORKLOAD);
        core::str::from_utf8(&self.workload[..len]).unwrap_or("")
    }

    /// Sets the workload name (cut at [`MAX_WORKLOAD`] bytes).
    pub fn set_workload(&mut self, name: &str) {
        self.workload = [0; MAX_WORKLOAD];
        let len = name.len().min(MAX_WORKLOAD);
        self.workload[..len].copy_from_slice(&name.as_bytes()[..len]);
    }

    /// Encodes the page (little-endian u64 words, in field order).
    pub fn to_page(&self) -> [u8; 4096] {
        let mut words = [0u64; 24];
        words[0] = CHILD_BOOT_MAGIC;
        words[1] = CHILD_BOOT_VERSION as u64 | ((self.vcpu_count as u64) << 32);
        words[2] = self.name.raw();
        for (i, chunk) in self.workload.chunks(8).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            words[3 + i] = u64::from_le_bytes(b);
        }
        words[7..11].copy_from_slice(&self.args);
        words[11] = self.memory_bytes;
        words[12] = self.heap.start;
        words[13] = self.heap.end;
        words[14] = self.stack_top;
        words[15] = self.stack_bytes;
        words[16] = self.self_slot.raw();
        words[17] = opt_slot(self.to_root);
        words[18] = opt_slot(self.from_root);
        words[19] = self.vmbus_control.start;
        words[20] = self.vmbus_control.end;
        words[21] = opt_slot(self.vmbus_signal);
        words[22] = opt_slot(self.vmbus_event);
        words[23] = self.tsc_khz;
        let mut page = [0u8; 4096];
        for (i, w) in words.iter().enumerate() {
            page[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        page
    }

    /// Decodes and validates a page.
    pub fn from_page(page: &[u8; 4096]) -> Result<ChildBootInfo, ChildBootError> {
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&page[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        if word(0) != CHILD_BOOT_MAGIC {
            return Err(ChildBootError::BadMagic);
        }
        if word(1) as u32 != CHILD_BOOT_VERSION {
            return Err(ChildBootError::BadVersion);
        }
        let vcpu_count = (word(1) >> 32) as u32;
        if vcpu_count == 0 || vcpu_count > MAX_CHILD_VCPUS {
            return Err(ChildBootError::BadField);
        }
        let name = Name::from_raw(word(2)).ok_or(ChildBootError::BadField)?;
        let mut workload = [0u8; MAX_WORKLOAD];
        for i in 0..4 {
            workload[i * 8..i * 8 + 8].copy_from_slice(&word(3 + i).to_le_bytes());
        }
        let info = ChildBootInfo {
            name,
            vcpu_count,
            workload,
            args: [word(7), word(8), word(9), word(10)],
            memory_bytes: word(11),
            heap: PhysRange {
                start: word(12),
                end: word(13),
            },
            stack_top: word(14),
            stack_bytes: word(15),
            self_slot: SlotHandle::from_raw(word(16)).map_err(|_| ChildBootError::BadField)?,
            to_root: read_opt_slot(word(17))?,
            from_root: read_opt_slot(word(18))?,
            vmbus_control: PhysRange {
                start: word(19),
                end: word(20),
            },
            vmbus_signal: read_opt_slot(word(21))?,
            vmbus_event: read_opt_slot(word(22))?,
            tsc_khz: word(23),
        };
        let vmbus = info.vmbus_control;
        let vmbus_ok = vmbus.is_empty()
            || (vmbus.start.is_multiple_of(4096)
                && vmbus.start > CHILD_BOOT_PAGE
                && vmbus.len() == crate::vmbus::control::CONTROL_CHANNEL_PAGES * 4096
                && vmbus.end <= info.memory_bytes);
        let len = workload
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(MAX_WORKLOAD);
        if core::str::from_utf8(&workload[..len]).is_err()
            || !vmbus_ok
            || info.heap.start > info.heap.end
            || info.heap.end > info.memory_bytes
            || info.stack_top > info.memory_bytes
            || info
                .stack_bytes
                .checked_mul(vcpu_count as u64)
                .is_none_or(|b| b > info.stack_top)
        {
            return Err(ChildBootError::BadField);
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChildBootInfo {
        let mut info = ChildBootInfo {
            name: Name::new("alpha"),
            vcpu_count: 2,
            workload: [0; MAX_WORKLOAD],
            args: [1, 2, 3, 4],
            memory_bytes: 16 << 20,
            heap: PhysRange {
                start: 8 << 20,
                end: 16 << 20,
            },
            stack_top: 0x40_0000,
            stack_bytes: 0x1_0000,
            self_slot: SlotHandle {
                index: 0,
                generation: 0,
            },
            to_root: Some(SlotHandle {
                index: 3,
                generation: 1,
            }),
            from_root: None,
            vmbus_control: PhysRange {
                start: 0xf0_0000,
                end: 0xf0_4000,
            },
            vmbus_signal: Some(SlotHandle {
                index: 5,
                generation: 2,
            }),
            vmbus_event: None,
            tsc_khz: 2_000_000,
        };
        info.set_workload("hello");
        info
    }

    #[test]
    fn round_trips() {
        let info = sample();
        let back = ChildBootInfo::from_page(&info.to_page()).unwrap();
        assert_eq!(back, info);
        assert_eq!(back.workload(), "hello");
    }

    #[test]
    fn rejects_bad_pages() {
        let info = sample();
        let mut page = info.to_page();
        page[0] ^= 1;
        assert_eq!(
            ChildBootInfo::from_page(&page),
            Err(ChildBootError::BadMagic)
        );
        let mut bad = info;
        bad.vcpu_count = 9;
        assert_eq!(
            ChildBootInfo::from_page(&bad.to_page()),
            Err(ChildBootError::BadField)
        );
        let mut bad = info;
        bad.heap.end = 1 << 40;
        assert_eq!(
            ChildBootInfo::from_page(&bad.to_page()),
            Err(ChildBootError::BadField)
        );
        let mut bad = info;
        bad.stack_bytes = u64::MAX;
        assert_eq!(
            ChildBootInfo::from_page(&bad.to_page()),
            Err(ChildBootError::BadField)
        );
        let mut bad = info;
        bad.vmbus_control.start += 8;
        assert_eq!(
            ChildBootInfo::from_page(&bad.to_page()),
            Err(ChildBootError::BadField)
        );
        let mut bad = info;
        bad.vmbus_control.end += 4096;
        assert_eq!(
            ChildBootInfo::from_page(&bad.to_page()),
            Err(ChildBootError::BadField)
        );
        assert_eq!(
            ChildBootInfo::from_page(&[0u8; 4096]),
            Err(ChildBootError::BadMagic)
        );
    }
}
