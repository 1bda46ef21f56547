//! Physical memory as the microkernel reaches it: everything is identity
//! mapped, so a physical address is also a pointer. This module is the only
//! place that turns one into the other.
//!
//! # Invariants
//! Table memory handed to the page-table code comes either from the
//! microkernel's frame pool or from a window of root-partition RAM that the
//! boot code checked against the memory map; reads and writes outside the
//! owning range are refused with a panic (a kernel bug, not an input error).

use microkernel::memory::frames::FrameAllocator;
use microkernel::memory::kernel_map::{self, ImageLayout, LayoutError};
use microkernel::paging::{self, CacheMode, PageTable, TableMemory, X86Format};
use spin::Mutex;
use x86_64::registers::control::{Cr0, Cr0Flags};

use super::cpu;
use super::msr::{self, Msr, efer};

unsafe extern "C" {
    static __kernel_start: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __kernel_end: u8;
}

/// The microkernel's frame pool, set up once by the bootstrap processor.
pub static POOL: Mutex<Option<FrameAllocator>> = Mutex::new(None);

/// Hands the pool `[base, base + frames * 4 KiB)` to the allocator.
pub fn init_pool(base: u64, frames: usize) -> Result<(), microkernel::memory::frames::FrameError> {
    *POOL.lock() = Some(FrameAllocator::new(base, frames)?);
    Ok(())
}

/// Allocates `count` zeroed frames from the pool, aligned to `align` bytes.
pub fn alloc_frames(count: usize, align: u64) -> Option<u64> {
    let addr = POOL.lock().as_mut()?.alloc(count, align).ok()?;
    // SAFETY: the frames were just allocated from the kernel's own pool,
    // which is identity mapped and used by nothing else.
    unsafe { core::ptr::write_bytes(addr as *mut u8, 0, count * 4096) };
    Some(addr)
}

/// A pool frame as a mutable reference to `T` (which must fit in the frames).
///
/// The frames must have been allocated by [`alloc_frames`] for this use only;
/// the reference is handed out once.
pub fn frame_as<T>(addr: u64) -> &'static mut T {
    let pool = POOL.lock();
    let pool = pool.as_ref().expect("pool initialised");
    assert!(addr >= pool.base() && addr + core::mem::size_of::<T>() as u64 <= pool.end());
    assert_eq!(addr % core::mem::align_of::<T>() as u64, 0);
    // SAFETY: the range is inside the kernel's identity-mapped pool (checked
    // above), zeroed by `alloc_frames`, aligned, and handed out once.
    unsafe { &mut *(addr as *mut T) }
}

/// Table memory in a physical range the caller owns, with tables allocated by `next`.
pub struct Tables<F: FnMut() -> Option<u64>> {
    start: u64,
    end: u64,
    next: F,
}

impl<F: FnMut() -> Option<u64>> Tables<F> {
    /// Tables that may live only in `[start, end)`.
    pub fn new(start: u64, end: u64, next: F) -> Self {
        Tables { start, end, next }
    }

    fn slot(&self, table: u64, index: usize) -> *mut u64 {
        assert!(
            table >= self.start
                && table + 4096 <= self.end
                && table.is_multiple_of(4096)
                && index < 512
        );
        (table + index as u64 * 8) as *mut u64
    }
}

impl<F: FnMut() -> Option<u64>> TableMemory for Tables<F> {
    fn alloc_table(&mut self) -> Option<u64> {
        let table = (self.next)()?;
        assert!(table >= self.start && table + 4096 <= self.end && table % 4096 == 0);
        // SAFETY: the table is inside the caller's identity-mapped range (checked).
        unsafe { core::ptr::write_bytes(table as *mut u8, 0, 4096) };
        Some(table)
    }

    fn read(&self, table: u64, index: usize) -> u64 {
        // SAFETY: `slot` checked the entry lies in the owned range.
        unsafe { core::ptr::read_volatile(self.slot(table, index)) }
    }

    fn write(&mut self, table: u64, index: usize, value: u64) {
        // SAFETY: `slot` checked the entry lies in the owned range.
        unsafe { core::ptr::write_volatile(self.slot(table, index), value) };
    }
}

/// Table memory from the kernel pool.
pub fn pool_tables() -> Tables<impl FnMut() -> Option<u64>> {
    let (start, end) = {
        let pool = POOL.lock();
        let pool = pool.as_ref().expect("pool initialised");
        (pool.base(), pool.end())
    };
    Tables::new(start, end, || alloc_frames(1, 4096))
}

/// The kernel image's sections, from the linker script's symbols.
pub fn image_layout() -> ImageLayout {
    // SAFETY: only the addresses of the linker symbols are taken.
    let at = |symbol: &u8| symbol as *const u8 as u64;
    // SAFETY: as above: the statics are never read.
    unsafe {
        ImageLayout {
            boot: (at(&__kernel_start), at(&__text_start)),
            text: (at(&__text_start), at(&__text_end)),
            rodata: (at(&__rodata_start), at(&__rodata_end)),
            data: (at(&__rodata_end), at(&__kernel_end)),
        }
    }
}

/// Why the kernel's own page tables could not be built.
#[derive(Clone, Copy, Debug)]
pub enum KernelTablesError {
    /// The processor has no no-execute pages (CPUID 0x80000001 EDX bit 20).
    NoExecuteDisable,
    /// The image's sections cannot be told apart page by page.
    Layout(LayoutError),
    /// Mapping failed.
    Map(paging::MapError),
}

impl core::fmt::Display for KernelTablesError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KernelTablesError::NoExecuteDisable => write!(f, "no no-execute pages"),
            KernelTablesError::Layout(e) => write!(f, "image layout: {e:?}"),
            KernelTablesError::Map(e) => write!(f, "mapping: {e:?}"),
        }
    }
}

/// Builds and loads the microkernel's own page tables: an identity map of
/// `[0, top)`, W^X (`microkernel::memory::kernel_map`: code read + execute,
/// read-only data read-only, everything else read + write, no-execute),
/// uncacheable outside RAM; turns EFER.NXE on before and CR0.WP (supervisor
/// writes to read-only pages fault) right after loading them, so both bind
/// the kernel itself. Returns the root.
pub fn init_kernel_tables(
    top: u64,
    is_ram: impl Fn(u64) -> bool,
    nx: bool,
) -> Result<u64, KernelTablesError> {
    if !nx {
        return Err(KernelTablesError::NoExecuteDisable);
    }
    let layout = image_layout();
    layout.check().map_err(KernelTablesError::Layout)?;
    let mut mem = pool_tables();
    let mut table = PageTable::<X86Format>::new(&mut mem).map_err(KernelTablesError::Map)?;
    for m in kernel_map::plan(layout, top) {
        let cache = if is_ram(m.at) {
            CacheMode::WriteBack
        } else {
            CacheMode::Uncacheable
        };
        table
            .map(
                &mut mem,
                m.at,
                m.at,
                m.size.bytes(),
                m.size,
                m.access,
                cache,
            )
            .map_err(KernelTablesError::Map)?;
    }
    // SAFETY: the processor has NX (checked above), so EFER.NXE is valid;
    // it must be on before tables with NX bits are loaded (the bit is
    // reserved otherwise).
    unsafe { msr::wrmsr(Msr::Efer, msr::rdmsr(Msr::Efer) | efer::NXE) };
    // SAFETY: the new tables identity-map everything the old ones did (the
    // first 4 GiB) and all RAM, so the running code (.text, executable),
    // the stack and data (.bss, writable) stay mapped with the access they
    // are used with.
    unsafe { cpu::write_cr3(table.root()) };
    // SAFETY: from here on nothing writes code or read-only data (the
    // tables were built from the sections the linker placed it in).
    unsafe { Cr0::update(|flags| flags.insert(Cr0Flags::WRITE_PROTECT)) };
    Ok(table.root())
}

/// Where the loaded kernel tables disagree with the W^X decision.
#[derive(Clone, Copy, Debug)]
pub enum WxViolation {
    /// EFER.NXE is off: the NX bits mean nothing (or fault).
    NoExecuteOff,
    /// CR0.WP is off: the kernel could write its read-only pages.
    WriteProtectOff,
    /// A page is mapped otherwise.
    Page {
        /// The address checked.
        addr: u64,
        /// What it should be mapped with.
        expected: paging::Access,
        /// What it is mapped with (`None`: not mapped at its own address).
        found: Option<paging::Access>,
    },
}

impl core::fmt::Display for WxViolation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WxViolation::NoExecuteOff => write!(f, "EFER.NXE is off"),
            WxViolation::WriteProtectOff => write!(f, "CR0.WP is off"),
            WxViolation::Page {
                addr,
                expected,
                found,
            } => write!(f, "{addr:#x} should be {expected:?}, is {found:?}"),
        }
    }
}

/// Checks the tables loaded in CR3 against the W^X decision, on this
/// processor: EFER.NXE and CR0.WP on, every page of the first 2 MiB regions
/// the image touches and every 2 MiB region up to `top` mapped as
/// `kernel_map::access_at` says.
pub fn verify_kernel_tables(top: u64) -> Result<(), WxViolation> {
    let layout = image_layout();
    // SAFETY: EFER exists on every x86-64 processor.
    let nxe = unsafe { msr::rdmsr(Msr::Efer) } & efer::NXE != 0;
    let wp = Cr0::read().contains(Cr0Flags::WRITE_PROTECT);
    if !nxe {
        return Err(WxViolation::NoExecuteOff);
    }
    if !wp {
        return Err(WxViolation::WriteProtectOff);
    }
    let mem = pool_tables();
    let table = PageTable::<X86Format>::from_root(cpu::read_cr3());
    let check = |addr: u64| {
        let expected = kernel_map::access_at(&layout, addr);
        let found = table.translate(&mem, addr);
        match found {
            Some(t) if t.phys == addr && t.access == expected => Ok(()),
            _ => Err(WxViolation::Page {
                addr,
                expected,
                found: found.filter(|t| t.phys == addr).map(|t| t.access),
            }),
        }
    };
    let large = paging::PageSize::Large.bytes();
    let image = (
        layout.boot.0 & !(large - 1),
        layout.data.1.next_multiple_of(large),
    );
    for addr in (image.0..image.1).step_by(4096) {
        check(addr)?;
    }
    for addr in (0..top).step_by(large as usize) {
        check(addr)?;
        check(addr + large - 4096)?;
    }
    Ok(())
}

/// Copies `bytes` to physical address `addr` in root-partition RAM.
///
/// `window` is the range the boot code took from the root's RAM for its boot
/// area; the copy must lie inside it.
pub fn write_window(window: (u64, u64), addr: u64, bytes: &[u8]) {
    let end = addr.checked_add(bytes.len() as u64).expect("no wrap");
    assert!(
        addr >= window.0 && end <= window.1,
        "write outside the boot window"
    );
    // SAFETY: the destination lies in the boot window (checked), RAM that the
    // memory map marks usable and that nothing else uses during boot.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
}

/// Zeroes `[addr, addr + len)` inside the boot window.
pub fn zero_window(window: (u64, u64), addr: u64, len: u64) {
    let end = addr.checked_add(len).expect("no wrap");
    assert!(
        addr >= window.0 && end <= window.1,
        "write outside the boot window"
    );
    // SAFETY: as for `write_window`.
    unsafe { core::ptr::write_bytes(addr as *mut u8, 0, len as usize) };
}

/// Reads a boot module's bytes. The range comes from the boot loader and is
/// marked as a module in the memory map, so nothing else writes it while the
/// microkernel reads it.
pub fn module_bytes(start: u64, end: u64) -> &'static [u8] {
    assert!(end >= start);
    // SAFETY: GRUB loaded the module there; the range is identity mapped and
    // reserved as a module until the root partition starts.
    unsafe { core::slice::from_raw_parts(start as *const u8, (end - start) as usize) }
}

/// Turns the per-CPU pointer the bootstrap processor prepared into the
/// running processor's exclusive reference.
pub fn claim_per_cpu(
    state: *mut super::percpu::PerCpu,
) -> Option<&'static mut super::percpu::PerCpu> {
    // SAFETY: non-null pointers stored by `cpus::prepare` point at a PerCpu
    // in pool frames that live forever; each index is claimed by exactly one
    // processor (the one started with that index), once.
    unsafe { state.as_mut() }
}

/// Ranges the microkernel keeps (its image, low memory, its pool): no
/// partition page may lie in them.
static HYPERVISOR_RANGES: Mutex<[(u64, u64); 4]> = Mutex::new([(0, 0); 4]);

/// Records the microkernel's own ranges (boot, once).
pub fn set_hypervisor_ranges(ranges: [(u64, u64); 4]) {
    *HYPERVISOR_RANGES.lock() = ranges;
}

/// Panics if `[addr, addr + len)` touches the microkernel's own memory:
/// partition pages come from partition SLATs, which never map it, so this
/// is a kernel bug, not an input error.
fn check_partition_range(addr: u64, len: u64) {
    let end = addr.checked_add(len).expect("no wrap");
    for &(start, stop) in HYPERVISOR_RANGES.lock().iter() {
        assert!(
            end <= start || addr >= stop,
            "partition access to hypervisor memory at {addr:#x}"
        );
    }
}

/// Copies a 4 KiB page of partition memory.
pub fn copy_partition_page(dst: u64, src: u64) {
    check_partition_range(dst, 4096);
    check_partition_range(src, 4096);
    // SAFETY: both pages are partition RAM (checked against the kernel's
    // ranges), identity mapped; `copy` tolerates overlap.
    unsafe { core::ptr::copy(src as *const u8, dst as *mut u8, 4096) };
}

/// Writes bytes into partition memory.
pub fn write_partition_bytes(dst: u64, bytes: &[u8]) {
    check_partition_range(dst, bytes.len() as u64);
    // SAFETY: the destination is partition RAM (checked), identity mapped.
    unsafe { core::ptr::copy(bytes.as_ptr(), dst as *mut u8, bytes.len()) };
}

/// Reads bytes from partition memory.
pub fn read_partition_bytes(src: u64, out: &mut [u8]) {
    check_partition_range(src, out.len() as u64);
    // SAFETY: the source is partition RAM (checked), identity mapped.
    unsafe { core::ptr::copy(src as *const u8, out.as_mut_ptr(), out.len()) };
}

/// The VMCB at `addr`, without the pool lookup of [`frame_as`]: the vCPU
/// loop and the kernel core touch a VMCB on every exit.
///
/// `addr` must come from `HwMachine::vmcb_new` (a zeroed, page-aligned pool
/// frame holding one vCPU's VMCB, used only by the processor running that
/// vCPU or under the kernel lock while it is off every processor).
pub fn vmcb_at(addr: u64) -> &'static mut microkernel::svm::vmcb::Vmcb {
    debug_assert_eq!(addr % 4096, 0);
    // SAFETY: see above: the frame is a live VMCB in the identity-mapped
    // pool, and the kernel's vCPU states make its users take turns.
    unsafe { &mut *(addr as *mut microkernel::svm::vmcb::Vmcb) }
}
