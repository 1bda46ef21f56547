//! The child runtime's hardware access: its view of guest-physical memory
//! (identity-mapped by the page tables the root built: guest-virtual =
//! guest-physical below `memory_bytes`, page 0 excepted), the heap, and the
//! probes the `hostile` workload uses to try what a partition must not do.
//!
//! Port I/O, MSRs, CR3, CPUID and TLB flushes are `partition_rt::arch`'s
//! (one copy for every partition, on the `x86_64` crate); what is
//! hand-written here is only the SVM instructions a child must not use
//! (emitted as bytes, so each probe's length is exact).
//!
//! # Invariants
//! - Every address turned into a pointer here is either inside the
//!   identity map (checked against the boot page's `memory_bytes`) or is
//!   the deliberate access to unmapped memory of [`touch_unmapped`].
//! - Probes that are expected to fault run under
//!   [`partition_rt::expect_fault`] with the exact length of the one
//!   instruction that may fault.

use core::alloc::Layout;
use core::arch::asm;

use ipc::child::{CHILD_BOOT_PAGE, ChildBootInfo};
use ipc::hypercall::Call;
use partition_rt::heap::LockedHeap;
use x86_64::structures::paging::PageTableFlags;

pub mod insn;

const PAGE: u64 = 4096;

/// The boot page the root put at guest-physical `addr`, if `addr` is the
/// documented boot page address.
pub fn boot_page(addr: u64) -> Option<&'static [u8; 4096]> {
    if addr != CHILD_BOOT_PAGE {
        return None;
    }
    // SAFETY: the root maps the boot page at CHILD_BOOT_PAGE in every child
    // (identity mapped by the initial page tables) and never changes it;
    // the runtime only reads it.
    Some(unsafe { &*(addr as *const [u8; 4096]) })
}

/// The part of the heap range the runtime may use: clear of page 0 and the
/// boot page, inside the child's memory.
pub fn heap_range(info: &ChildBootInfo) -> (u64, u64) {
    let start = info.heap.start.max(CHILD_BOOT_PAGE + PAGE);
    let end = info.heap.end.min(info.memory_bytes);
    (start, end.max(start))
}

/// Gives `heap` the boot page's heap range. Call once, on vCPU 0, before
/// any allocation.
pub fn init_heap(heap: &LockedHeap, info: &ChildBootInfo) {
    let (start, end) = heap_range(info);
    // SAFETY: the root reserves the heap range for the runtime (boot
    // protocol), it is identity mapped (inside memory_bytes, above the boot
    // page), and this runs once so the heap gets it once.
    unsafe { heap.init(start as usize, end as usize) };
}

/// A page of the heap that the microkernel may write into (a hypercall
/// buffer): Rust holds no reference to it, only its address, which is its
/// guest-physical address too (the heap is identity mapped).
pub struct BufferPage(u64);

impl BufferPage {
    /// Allocates a zeroed page; `None` if the heap is exhausted.
    pub fn new() -> Option<BufferPage> {
        let layout = Layout::from_size_align(PAGE as usize, PAGE as usize).ok()?;
        // SAFETY: the layout has a non-zero size.
        let page = unsafe { alloc::alloc::alloc_zeroed(layout) };
        (!page.is_null()).then_some(BufferPage(page as u64))
    }

    /// The page's guest-physical address.
    pub fn gpa(&self) -> u64 {
        self.0
    }
}

/// A window of pages of the child's own memory that the root chose for the
/// `dirty` workload (see `ipc::workload::DIRTY`).
pub struct DirtyWindow {
    base: u64,
    pages: u64,
}

impl DirtyWindow {
    /// Checks the window `[base, base + pages pages)`: page-aligned, inside
    /// the child's memory, clear of page 0, the boot page and the stacks.
    pub fn new(info: &ChildBootInfo, base: u64, pages: u64) -> Option<DirtyWindow> {
        let end = base.checked_add(pages.checked_mul(PAGE)?)?;
        let stacks_bottom = info
            .stack_top
            .saturating_sub(info.stack_bytes * u64::from(info.vcpu_count));
        let overlaps = |start: u64, stop: u64| base < stop && start < end;
        (base.is_multiple_of(PAGE)
            && end <= info.memory_bytes
            && !overlaps(0, CHILD_BOOT_PAGE + PAGE)
            && !overlaps(stacks_bottom, info.stack_top))
        .then_some(DirtyWindow { base, pages })
    }

    /// Writes `value` at byte `offset` of page `page` of the window.
    pub fn write(&self, page: u64, offset: u64, value: u8) {
        if page >= self.pages || offset >= PAGE {
            return;
        }
        let addr = self.base + page * PAGE + offset;
        // SAFETY: the window lies inside the identity-mapped memory, clear
        // of the boot page and the stacks (checked in `new`); the root
        // reserves it for this workload, so no Rust object lives there.
        unsafe { core::ptr::write_volatile(addr as *mut u8, value) };
    }
}

/// Reads `msr`; `Err(vector)` if the read faulted.
pub fn probe_read_msr(msr: u32) -> Result<u64, u8> {
    let mut value = 0;
    // RDMSR is 2 bytes (0F 32).
    let fault = partition_rt::expect_fault(2, || {
        // SAFETY: reading an MSR changes no state; in a child the
        // microkernel intercepts it and either emulates it or raises #GP,
        // which the armed expected fault absorbs.
        value = unsafe { partition_rt::arch::rdmsr(msr) };
    });
    match fault {
        Some(vector) => Err(vector),
        None => Ok(value),
    }
}

/// The EFER MSR.
const EFER: u32 = 0xc000_0080;
/// EFER.LME: long mode enable.
const EFER_LME: u64 = 1 << 8;

/// Tries to clear EFER.LME (leaving long mode while paging is on): the
/// microkernel must refuse with #GP. Returns the vector of the fault, or
/// `None` if the write went through (isolation broken: what happens next
/// is undefined, and the check reports it if the vCPU survives); `Err` if
/// EFER could not even be read.
pub fn probe_clear_efer_lme() -> Result<Option<u8>, u8> {
    let efer = probe_read_msr(EFER)?;
    let value = efer & !EFER_LME;
    // WRMSR is 2 bytes (0F 30).
    Ok(partition_rt::expect_fault(2, || {
        // SAFETY: the microkernel emulates EFER and refuses a change of LME
        // with #GP (absorbed by the armed expected fault); the hostile
        // workload exists to check exactly that.
        unsafe { partition_rt::arch::wrmsr(EFER, value) };
    }))
}

/// The SVM instructions a child must not use.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)] // Instruction names.
pub enum SvmInstruction {
    Vmrun,
    Vmload,
    Vmsave,
    Stgi,
    Clgi,
}

/// Executes `instruction` (with RAX = 0, for the three that take a VMCB
/// address); returns the vector it raised, `None` if it completed.
pub fn probe_svm(instruction: SvmInstruction) -> Option<u8> {
    // Each is 3 bytes (0F 01 D8/DA/DB/DC/DD), emitted as bytes so the length is exact.
    partition_rt::expect_fault(3, || {
        // SAFETY: the microkernel intercepts every SVM instruction of a
        // child and raises #UD, which the armed expected fault absorbs.
        unsafe {
            match instruction {
                SvmInstruction::Vmrun => {
                    asm!(".byte 0x0f, 0x01, 0xd8", in("rax") 0u64, options(nostack))
                }
                SvmInstruction::Vmload => {
                    asm!(".byte 0x0f, 0x01, 0xda", in("rax") 0u64, options(nostack))
                }
                SvmInstruction::Vmsave => {
                    asm!(".byte 0x0f, 0x01, 0xdb", in("rax") 0u64, options(nostack))
                }
                SvmInstruction::Stgi => asm!(".byte 0x0f, 0x01, 0xdc", options(nostack)),
                SvmInstruction::Clgi => asm!(".byte 0x0f, 0x01, 0xdd", options(nostack)),
            }
        }
    })
}

/// QEMU's `isa-debug-exit` port: a write ends the whole machine unless the
/// microkernel intercepts it.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// PIT channel 0's counter.
pub const PIT_COUNTER_0: u16 = 0x40;

/// `OUT port, EAX`. A child is granted no I/O port: the microkernel drops
/// the write.
pub fn probe_out32(port: u16, value: u32) {
    partition_rt::arch::outl(port, value);
}

/// `IN AL, port`. A child is granted no I/O port: reads return all ones.
pub fn probe_in8(port: u16) -> u8 {
    partition_rt::arch::inb(port)
}

/// CPUID `leaf` (subleaf 0): EAX, EBX, ECX, EDX.
pub fn cpuid(leaf: u32) -> [u32; 4] {
    let r = partition_rt::arch::cpuid(leaf, 0);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Page-table entry bits of a table entry and of a 2 MiB leaf.
const TABLE: u64 = PageTableFlags::PRESENT.bits() | PageTableFlags::WRITABLE.bits();
const HUGE_LEAF: u64 = TABLE | PageTableFlags::HUGE_PAGE.bits();
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Maps guest-physical `gpa` (which the child does not own) into its own
/// page tables and reads it. The microkernel must stop the partition with
/// a nested page fault on the read; if it returns, the value is returned.
/// `None` if the mapping could not be built (no free top-level slot, no
/// heap for the tables).
pub fn touch_unmapped(info: &ChildBootInfo, gpa: u64) -> Option<u64> {
    let pml4 = partition_rt::arch::read_cr3() & ADDRESS_MASK;
    if pml4 == 0 || pml4 + PAGE > info.memory_bytes {
        return None;
    }
    // Top-level slots 1..256 cover lower-half addresses from 512 GiB up,
    // far above any child's identity map.
    let slot = (1..256u64).find(|&i| {
        // SAFETY: the PML4 lies in the identity-mapped memory (checked
        // above); reading an entry has no side effect.
        unsafe { core::ptr::read_volatile((pml4 + i * 8) as *const u64) == 0 }
    })?;
    let pdpt = BufferPage::new()?;
    let pd = BufferPage::new()?;
    let va = (slot << 39) | (gpa & 0x1f_ffff);
    // SAFETY: `pdpt` and `pd` are fresh zeroed heap pages that no Rust
    // reference covers (identity mapped: address = guest-physical); the
    // PML4 slot was empty, so filling it changes no existing mapping; the
    // new mapping (a 2 MiB page at `gpa`) is used only by the read below.
    unsafe {
        core::ptr::write_volatile(pd.gpa() as *mut u64, (gpa & !0x1f_ffff) | HUGE_LEAF);
        core::ptr::write_volatile(pdpt.gpa() as *mut u64, pd.gpa() | TABLE);
        core::ptr::write_volatile((pml4 + slot * 8) as *mut u64, pdpt.gpa() | TABLE);
    }
    partition_rt::arch::flush_page(va);
    // SAFETY: `va` is mapped (just above) to guest-physical `gpa`; the read
    // must end the partition; if it does not, it reads whatever is there.
    Some(unsafe { core::ptr::read_volatile(va as *const u64) })
}

/// Makes an arbitrary hypercall for the `hostile` workload, keeping the
/// microkernel from writing into the child's live memory: a call with a
/// buffer (`VcpuGetState`, `DirtyFetch`, `MemoryRead`) gets `scratch` as
/// its buffer; `MemoryWrite` (whose target is at best the child itself) is
/// not sent (`None`). Registers that do not decode go out as they are: the
/// microkernel decodes with the same `Call::decode` and refuses them
/// before touching anything.
pub fn fuzz_hypercall(regs: [u64; 7], scratch: &BufferPage) -> Option<[u64; 4]> {
    let buffer = scratch.gpa();
    let regs = match Call::decode(&regs) {
        Err(_) => regs,
        Ok(Call::MemoryWrite { .. }) => return None,
        Ok(Call::VcpuGetState { vcpu, .. }) => Call::VcpuGetState { vcpu, buffer }.encode(),
        Ok(Call::MemoryRead { partition, gpa, .. }) => Call::MemoryRead {
            partition,
            gpa,
            buffer,
        }
        .encode(),
        Ok(Call::DirtyFetch {
            partition,
            first_gpa,
            pages,
            ..
        }) => Call::DirtyFetch {
            partition,
            first_gpa,
            pages,
            buffer,
        }
        .encode(),
        Ok(_) => regs,
    };
    // SAFETY: after the rewrite above the only memory of the child's the
    // microkernel may write is `scratch`, a heap page no Rust reference
    // covers (see `BufferPage`).
    Some(unsafe { partition_rt::raw_hypercall(regs) })
}

/// Ring memory over `len` bytes of the child's own memory at guest-physical
/// `gpa` (VMBus rings), if the range lies inside the identity map clear of
/// page 0 and the boot page.
///
/// The rings are pages the child reserved for one channel (the control
/// channel's pages, outside the heap, or pages it allocated from the heap
/// and never frees); the runtime reaches them only through ring memory.
pub fn ring_memory(
    info: &ChildBootInfo,
    gpa: u64,
    len: u64,
) -> Option<partition_rt::SharedRingMemory> {
    let end = gpa.checked_add(len)?;
    if gpa < CHILD_BOOT_PAGE + PAGE || end > info.memory_bytes || !gpa.is_multiple_of(PAGE) {
        return None;
    }
    // SAFETY: the range is inside the identity-mapped memory, page-aligned,
    // clear of page 0 and the boot page (checked above); it holds ring
    // pages that no Rust reference covers (see above), shared with the root.
    Some(unsafe { partition_rt::SharedRingMemory::new(gpa, len as usize) })
}

/// Allocates `pages` zeroed, page-aligned pages from the heap for good
/// (ring pages granted to the root are never given back); their
/// guest-physical address, `None` if the heap is exhausted.
pub fn alloc_ring_pages(pages: u64) -> Option<u64> {
    let layout = Layout::from_size_align((pages * PAGE) as usize, PAGE as usize).ok()?;
    // SAFETY: the layout has a non-zero size (callers ask for pages > 0).
    let page = unsafe { alloc::alloc::alloc_zeroed(layout) };
    (!page.is_null()).then_some(page as u64)
}

/// Where a vCPU the child creates on itself starts (`VcpuCreate`): the
/// `greedy` workload's hog, its own stack page, and this vCPU's page
/// tables. The hog spins with interrupts off until the time-stamp counter
/// passes its argument (RDI), then stops (`CLI; HLT`). `None` if the heap
/// has no page for the stack.
pub fn hog_vcpu_start() -> Option<(u64, u64, u64)> {
    let stack = BufferPage::new()?;
    let cr3 = partition_rt::arch::read_cr3();
    // The stack page is leaked on purpose: the hog never returns it.
    // As if called: the return-address slot below a 16-byte-aligned top.
    Some((
        hog as *const () as u64,
        stack.gpa() + PAGE - 8,
        cr3 & !0xfff,
    ))
}

/// A vCPU created by the `greedy` workload: spins with interrupts off
/// until the time-stamp counter reaches `until`, then halts for good.
extern "C" fn hog(until: u64) -> ! {
    partition_rt::disable_interrupts();
    while partition_rt::rdtsc() < until {
        core::hint::spin_loop();
    }
    partition_rt::halt_forever()
}
