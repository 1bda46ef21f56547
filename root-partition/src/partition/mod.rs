//! Partitions as the root builds and holds them: the root's view of
//! itself from the boot page ([`Root`], [`discover`]), its memory plan
//! (heap, scratch page, the pool children come from: [`heap_range`],
//! [`place`]), a child as the root holds it ([`Child`]), the one path
//! that builds a partition ([`build`]: a new child, a migration target, a
//! restored child) and what the root does to a child by hypercalls
//! ([`control`]: destroy, forget, pause, resume, stop, watch).

use ipc::boot::{BootInfo, PhysRange, cap_kind};
use ipc::hypercall::{SlotHandle, Status};

use crate::config::ChildSpec;

pub mod build;
pub mod control;

pub use build::{Built, Ports, Purpose, build};

/// Most children alive at once.
pub const MAX_CHILDREN: usize = 8;
/// Why a scenario could not go on.
// The fields are read through `Debug` when the failure is printed.
#[allow(dead_code)]
#[derive(Debug)]
pub enum Failure {
    /// A hypercall failed.
    Call(&'static str, Status),
    /// The boot page lacks something.
    Missing(&'static str),
    /// The child image is unusable.
    Image(ipc::elf::ElfError),
    /// A child does not fit.
    Layout(crate::layout::LayoutError),
    /// No memory left for a child.
    NoMemory,
    /// A check failed.
    Check(&'static str),
}

/// A slot handle from a result register.
pub fn handle(raw: u64) -> Result<SlotHandle, Failure> {
    SlotHandle::from_raw(raw).map_err(|s| Failure::Call("slot", s))
}

/// A running child, as the root holds it.
#[derive(Clone, Copy)]
pub struct Child {
    /// What it was started from (name, memory, vCPUs, workload, priority).
    pub spec: ChildSpec,
    /// The root's capability on the partition.
    pub partition: SlotHandle,
    /// The root's capability on its memory object.
    pub memory: SlotHandle,
    /// The root's capabilities on its vCPUs.
    pub vcpus: [Option<SlotHandle>; 4],
    /// First byte of its memory in the root's pool.
    pub base: u64,
    /// Pages of its memory.
    pub pages: u64,
    /// Whether it ended (halted, faulted or was destroyed).
    pub ended: bool,
    /// The port the root signals it on, if made.
    pub from_root: Option<SlotHandle>,
}

/// The root's view of itself, from the boot page.
pub struct Root {
    /// The root's own partition capability.
    pub authority: SlotHandle,
    /// The root's vCPU.
    pub vcpu: SlotHandle,
    /// The root's capability on its largest RAM range.
    pub ram: SlotHandle,
    /// That range.
    pub ram_range: PhysRange,
    /// Child memory is taken top-down from here.
    pub pool: PhysRange,
    /// A page of the root's for hypercall buffers.
    pub scratch: u64,
    /// Time-stamp counter ticks per millisecond (from the boot page).
    pub tsc_khz: u32,
}

/// Reads the root's capabilities and picks the memory children come from:
/// the largest RAM range, above the root's boot area and modules.
pub fn discover(info: &BootInfo) -> Result<Root, Failure> {
    let cap = |kind| {
        info.caps()
            .iter()
            .find(|c| c.kind == kind)
            .copied()
            .ok_or(Failure::Missing("capability"))
    };
    let authority = handle(cap(cap_kind::PARTITION)?.slot)?;
    let vcpu = handle(cap(cap_kind::VCPU)?.slot)?;
    let ram_cap = largest_ram(info)?;
    let (heap, ram_range) = heap_range(info)?;
    let start = heap.end;
    if start + (8 << 20) > ram_range.end {
        return Err(Failure::NoMemory);
    }
    // One scratch page below the heap for hypercall buffers.
    let scratch = heap.start - 4096;
    Ok(Root {
        authority,
        vcpu,
        ram: handle(ram_cap.slot)?,
        ram_range,
        pool: PhysRange {
            start,
            end: ram_range.end,
        },
        scratch,
        tsc_khz: info.tsc_khz,
    })
}

/// The root's capability on its largest RAM range.
fn largest_ram(info: &BootInfo) -> Result<ipc::boot::BootCap, Failure> {
    info.caps()
        .iter()
        .filter(|c| c.kind == cap_kind::MEMORY)
        .max_by_key(|c| c.b)
        .copied()
        .ok_or(Failure::Missing("memory"))
}

/// Bytes of the root's own heap (the storage stack's tables and buffers,
/// virtio queues).
pub const ROOT_HEAP_BYTES: u64 = 32 << 20;

/// The root's heap and the RAM range it lies in: the largest RAM range,
/// above the root's boot area, modules and boot information, 2 MiB
/// aligned and a 2 MiB gap after them (the scratch page lies there).
/// Child memory comes from above the heap.
pub fn heap_range(info: &BootInfo) -> Result<(PhysRange, PhysRange), Failure> {
    let ram_cap = largest_ram(info)?;
    let ram_range = PhysRange {
        start: ram_cap.a,
        end: ram_cap.a + ram_cap.b * 4096,
    };
    let busy_end = [info.boot_area.end, info.child_image.end, info.config.end]
        .into_iter()
        .max()
        .unwrap_or(0);
    let start = ((busy_end.max(ram_range.start) + (2 << 20) - 1) & !((2 << 20) - 1)) + (2 << 20);
    let heap = PhysRange {
        start,
        end: start + ROOT_HEAP_BYTES,
    };
    if heap.end > ram_range.end {
        return Err(Failure::NoMemory);
    }
    Ok((heap, ram_range))
}

/// The highest free 2 MiB-aligned range of `bytes` in the pool.
pub fn place(root: &Root, children: &[Option<Child>], bytes: u64) -> Option<u64> {
    let mut top = root.pool.end & !((2 << 20) - 1);
    loop {
        let base = top.checked_sub(bytes)?;
        if base < root.pool.start {
            return None;
        }
        match children
            .iter()
            .flatten()
            .find(|c| base < c.base + c.pages * 4096 && c.base < base + bytes)
        {
            Some(busy) => top = busy.base & !((2 << 20) - 1),
            None => return Some(base),
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod build_tests;
