//! The hardware access of a capvisor partition (x86-64 in guest mode,
//! ring 0), the one copy the root partition and the child runtime share:
//! the hypercall instruction, descriptor-table loads, the 256 interrupt
//! entry stubs, the interrupt flag, HLT, port I/O ([`port`]) and processor
//! registers ([`registers`]: time-stamp counter, CR2/CR3, CPUID, MSRs).
//!
//! # Invariants
//! Everything else in the crate is safe Rust on top of these wrappers. The
//! code compiles on an x86-64 host too (so host `cargo test` and clippy see
//! it), but only a partition may run it: on a host most of it faults.
//!
//! The instructions come from the `x86_64` crate where it has a wrapper
//! that fits; what stays hand-written here is what it lacks: VMMCALL and
//! VMCALL, the entry stubs (its `x86-interrupt` ABI needs nightly), and
//! `STI; HLT` without `nomem` (its `enable_and_hlt` is `nomem`, but
//! interrupt handlers change memory while the vCPU sleeps there).
//!
//! The entry stubs are [`STUB_BYTES`] bytes apart, stub `v` at
//! `isr_stub_base() + v * STUB_BYTES`, and each pushes a zero error code
//! (unless the CPU pushed one), then the vector, then jumps to a common path
//! that saves every general-purpose register as an
//! [`InterruptFrame`](crate::interrupts::InterruptFrame) and calls
//! [`crate::interrupts::dispatch`] with it.

use core::arch::{asm, global_asm};

use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::{interrupts, tables};
use x86_64::structures::DescriptorTablePointer;
use x86_64::structures::gdt::SegmentSelector;

pub mod port;
pub mod registers;

pub use port::{inb, inl, inw, outb, outl, outw};
pub use registers::{cpuid, flush_page, rdmsr, rdtsc, read_cr2, read_cr3, wrmsr};

/// Distance between two interrupt entry stubs.
pub const STUB_BYTES: u64 = 16;

global_asm!(
    ".pushsection .text.partition_rt_isr,\"ax\",@progbits",
    ".balign 16",
    ".globl partition_rt_isr_stubs",
    "partition_rt_isr_stubs:",
    ".set partition_rt_vector, 0",
    ".rept 256",
    ".balign 16",
    // Vectors for which the CPU pushes an error code itself.
    ".if (partition_rt_vector == 8) || (partition_rt_vector == 10) || (partition_rt_vector == 11) || (partition_rt_vector == 12) || (partition_rt_vector == 13) || (partition_rt_vector == 14) || (partition_rt_vector == 17) || (partition_rt_vector == 21) || (partition_rt_vector == 29) || (partition_rt_vector == 30)",
    ".else",
    "pushq $0",
    ".endif",
    "pushq $partition_rt_vector",
    "jmp partition_rt_isr_common",
    ".set partition_rt_vector, partition_rt_vector + 1",
    ".endr",
    ".balign 16",
    "partition_rt_isr_common:",
    "pushq %rax",
    "pushq %rbx",
    "pushq %rcx",
    "pushq %rdx",
    "pushq %rsi",
    "pushq %rdi",
    "pushq %rbp",
    "pushq %r8",
    "pushq %r9",
    "pushq %r10",
    "pushq %r11",
    "pushq %r12",
    "pushq %r13",
    "pushq %r14",
    "pushq %r15",
    // The CPU aligned RSP to 16 before pushing its 5 (or 6 with the error
    // code, 6 with ours) words; vector + 15 registers keep it aligned.
    "movq %rsp, %rdi",
    "cld",
    "call {dispatch}",
    "popq %r15",
    "popq %r14",
    "popq %r13",
    "popq %r12",
    "popq %r11",
    "popq %r10",
    "popq %r9",
    "popq %r8",
    "popq %rbp",
    "popq %rdi",
    "popq %rsi",
    "popq %rdx",
    "popq %rcx",
    "popq %rbx",
    "popq %rax",
    "addq $16, %rsp",
    "iretq",
    ".popsection",
    dispatch = sym crate::interrupts::dispatch,
    options(att_syntax)
);

unsafe extern "C" {
    /// The first interrupt entry stub (see the module invariants).
    static partition_rt_isr_stubs: [u8; 256 * STUB_BYTES as usize];
}

/// Address of the first interrupt entry stub.
pub fn isr_stub_base() -> u64 {
    (&raw const partition_rt_isr_stubs) as u64
}

/// The bytes of the entry stubs (for host tests of their layout).
pub fn isr_stub_bytes() -> &'static [u8; 256 * STUB_BYTES as usize] {
    // SAFETY: the stubs are code the linker placed in a loaded, readable
    // section that is never written.
    unsafe { &partition_rt_isr_stubs }
}

/// Performs a hypercall: `VMMCALL` with `RAX, RDI, RSI, RDX, R8, R9, R10`
/// from `regs`; returns `RAX, RDI, RSI, RDX`.
///
/// # Safety
/// Some calls make the microkernel write into the caller's memory (e.g.
/// `VcpuGetState`, `DirtyFetch`, `MemoryRead` write the page named by their
/// buffer argument; `MemoryWrite` with the caller's own partition writes any
/// of its pages). The caller must make sure such a write lands only in
/// memory no Rust reference covers while the call runs.
pub unsafe fn vmmcall(regs: [u64; 7]) -> [u64; 4] {
    let [mut rax, mut rdi, mut rsi, mut rdx, r8, r9, r10] = regs;
    // SAFETY: VMMCALL (AMD) or VMCALL (Intel) exits to the microkernel,
    // which preserves every register but the four outputs; memory effects
    // are the caller's contract above (the asm is not `nomem`, so the
    // compiler assumes any).
    unsafe {
        if intel() {
            asm!(
                "vmcall",
                inout("rax") rax,
                inout("rdi") rdi,
                inout("rsi") rsi,
                inout("rdx") rdx,
                in("r8") r8,
                in("r9") r9,
                in("r10") r10,
                options(nostack),
            );
        } else {
            asm!(
                "vmmcall",
                inout("rax") rax,
                inout("rdi") rdi,
                inout("rsi") rsi,
                inout("rdx") rdx,
                in("r8") r8,
                in("r9") r9,
                in("r10") r10,
                options(nostack),
            );
        }
    }
    [rax, rdi, rsi, rdx]
}

/// Whether the processor is Intel's (hypercalls use VMCALL there, VMMCALL on AMD).
fn intel() -> bool {
    use core::sync::atomic::{AtomicU8, Ordering};
    // 0: not known yet, 1: AMD, 2: Intel.
    static VENDOR: AtomicU8 = AtomicU8::new(0);
    match VENDOR.load(Ordering::Relaxed) {
        0 => {
            let leaf = cpuid(0, 0);
            let intel = leaf.ebx == u32::from_le_bytes(*b"Genu");
            VENDOR.store(if intel { 2 } else { 1 }, Ordering::Relaxed);
            intel
        }
        v => v == 2,
    }
}

/// Loads the GDT and IDT and reloads CS (with `code`), SS/DS/ES (with `data`).
///
/// # Safety
/// `gdt` must point at `gdt_bytes` bytes of descriptors, `idt` at
/// `idt_bytes` bytes of gates, both valid for the rest of the vCPU's life
/// and never changed again while loaded; `code` must select a 64-bit code
/// descriptor and `data` a writable data descriptor in that GDT; every
/// gate must point at an entry stub of this module.
pub unsafe fn load_descriptor_tables(
    gdt: *const u8,
    gdt_bytes: u16,
    idt: *const u8,
    idt_bytes: u16,
    code: u16,
    data: u16,
) {
    let gdtr = DescriptorTablePointer {
        limit: gdt_bytes - 1,
        base: VirtAddr::from_ptr(gdt),
    };
    let idtr = DescriptorTablePointer {
        limit: idt_bytes - 1,
        base: VirtAddr::from_ptr(idt),
    };
    // SAFETY: the tables are valid and live forever (caller's contract);
    // CS is reloaded with `code` (a far return to the next instruction),
    // then the data selectors with `data`, which names a valid data
    // descriptor of the GDT just loaded.
    unsafe {
        tables::lgdt(&gdtr);
        tables::lidt(&idtr);
        CS::set_reg(SegmentSelector(code));
        SS::set_reg(SegmentSelector(data));
        DS::set_reg(SegmentSelector(data));
        ES::set_reg(SegmentSelector(data));
    }
}

/// The base address of the IDT this vCPU has loaded.
pub fn idt_base() -> u64 {
    tables::sidt().base.as_u64()
}

/// Whether interrupts are enabled (RFLAGS.IF).
pub fn interrupts_enabled() -> bool {
    interrupts::are_enabled()
}

/// Disables interrupts on this vCPU (`CLI`, a compiler barrier too).
pub fn disable_interrupts() {
    interrupts::disable();
}

/// Enables interrupts on this vCPU (handlers may run at once): `STI`, a
/// compiler barrier too. Every vector has a handler stub once
/// `crate::cpu::init_vcpu` ran.
pub fn enable_interrupts() {
    interrupts::enable();
}

/// Enables interrupts and waits for one (`STI; HLT`: the interrupt shadow
/// of STI makes the pair atomic, so an interrupt pending before cannot be
/// missed). Interrupts stay enabled afterwards.
pub fn wait_for_interrupt() {
    // SAFETY: as for `enable_interrupts`; HLT only blocks this vCPU until
    // an interrupt arrives.
    unsafe { asm!("sti", "hlt", options(nostack)) };
}

/// Stops this vCPU for good (`CLI; HLT`). When every vCPU of a partition
/// stopped this way, the microkernel reports the partition as halted.
pub fn halt_forever() -> ! {
    loop {
        interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// A spin-wait hint (`PAUSE`).
pub fn pause() {
    core::hint::spin_loop();
}

/// Runs `f` with interrupts disabled, then restores the interrupt flag.
pub fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    interrupts::without_interrupts(f)
}

/// Ring memory over a range of this partition's memory shared with another
/// partition (VMBus rings): every access is a real load or store the peer
/// may race with — index words as atomics, data as volatile accesses —
/// and nothing is ever cached. See `ipc::vmbus::memory::RingMemory`.
#[derive(Debug)]
pub struct SharedRingMemory {
    base: u64,
    len: usize,
}

impl SharedRingMemory {
    /// Ring memory at virtual address `base`, `len` bytes.
    ///
    /// # Safety
    /// `[base, base + len)` must be mapped readable and writable for as long
    /// as the value (and every copy made by [`SharedRingMemory::split_at`])
    /// lives, 4-byte aligned, and used by no Rust reference: only through
    /// this type (and the peer partition).
    pub unsafe fn new(base: u64, len: usize) -> Self {
        SharedRingMemory { base, len }
    }

    /// Splits into `[0, at)` and `[at, len)` (`at` is clamped to `len`).
    pub fn split_at(self, at: usize) -> (Self, Self) {
        let at = at.min(self.len) & !3;
        (
            SharedRingMemory {
                base: self.base,
                len: at,
            },
            SharedRingMemory {
                base: self.base + at as u64,
                len: self.len - at,
            },
        )
    }

    fn in_range(&self, offset: usize, len: usize) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.len)
    }

    fn word(&self, offset: usize) -> &core::sync::atomic::AtomicU32 {
        // SAFETY: callers check that `offset` is 4-aligned and the word lies
        // inside the range, which `new`'s contract says is mapped, aligned
        // and accessed only atomically or volatilely (never through a Rust
        // reference to plain data), so an `AtomicU32` view is sound.
        unsafe { core::sync::atomic::AtomicU32::from_ptr((self.base + offset as u64) as *mut u32) }
    }
}

impl ipc::vmbus::memory::RingMemory for SharedRingMemory {
    fn len(&self) -> usize {
        self.len
    }

    fn load_u32_acquire(&self, offset: usize) -> u32 {
        if !offset.is_multiple_of(4) || !self.in_range(offset, 4) {
            return 0;
        }
        self.word(offset)
            .load(core::sync::atomic::Ordering::Acquire)
    }

    fn store_u32_release(&self, offset: usize, value: u32) {
        if !offset.is_multiple_of(4) || !self.in_range(offset, 4) {
            return;
        }
        self.word(offset)
            .store(value, core::sync::atomic::Ordering::Release);
    }

    fn store_u32_seqcst(&self, offset: usize, value: u32) {
        if !offset.is_multiple_of(4) || !self.in_range(offset, 4) {
            return;
        }
        // A SeqCst swap is a full barrier by itself (XCHG).
        self.word(offset)
            .swap(value, core::sync::atomic::Ordering::SeqCst);
    }

    fn load_u32_seqcst(&self, offset: usize) -> u32 {
        if !offset.is_multiple_of(4) || !self.in_range(offset, 4) {
            return 0;
        }
        self.word(offset).load(core::sync::atomic::Ordering::SeqCst)
    }

    fn read(&self, offset: usize, buf: &mut [u8]) {
        if !self.in_range(offset, buf.len()) {
            buf.fill(0);
            return;
        }
        let mut at = self.base + offset as u64;
        let mut rest = buf;
        // Bytes up to an 8-byte boundary, then whole words, then the tail.
        while !rest.is_empty() && !at.is_multiple_of(8) {
            // SAFETY: one byte inside the range (checked above).
            rest[0] = unsafe { core::ptr::read_volatile(at as *const u8) };
            rest = &mut rest[1..];
            at += 1;
        }
        let whole = rest.len() / 8 * 8;
        let (words, tail) = rest.split_at_mut(whole);
        for (i, word) in words.chunks_exact_mut(8).enumerate() {
            // SAFETY: 8 bytes inside the range (checked above), aligned;
            // a volatile read of shared memory the peer may change.
            let w = unsafe { core::ptr::read_volatile((at + 8 * i as u64) as *const u64) };
            word.copy_from_slice(&w.to_le_bytes());
        }
        at += whole as u64;
        for (i, byte) in tail.iter_mut().enumerate() {
            // SAFETY: one byte inside the range (checked above).
            *byte = unsafe { core::ptr::read_volatile((at + i as u64) as *const u8) };
        }
    }

    fn write(&self, offset: usize, data: &[u8]) {
        if !self.in_range(offset, data.len()) {
            return;
        }
        let mut at = self.base + offset as u64;
        let mut rest = data;
        // Bytes up to an 8-byte boundary, then whole words, then the tail.
        while !rest.is_empty() && !at.is_multiple_of(8) {
            // SAFETY: one byte inside the range (checked above).
            unsafe { core::ptr::write_volatile(at as *mut u8, rest[0]) };
            rest = &rest[1..];
            at += 1;
        }
        let words = rest.chunks_exact(8);
        let tail = words.remainder();
        for (i, word) in words.enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(word);
            // SAFETY: 8 bytes inside the range (checked above), aligned;
            // the ring protocol gives these bytes to this side now.
            unsafe {
                core::ptr::write_volatile((at + 8 * i as u64) as *mut u64, u64::from_le_bytes(b))
            };
        }
        at += (rest.len() - tail.len()) as u64;
        for (i, &byte) in tail.iter().enumerate() {
            // SAFETY: one byte inside the range (checked above).
            unsafe { core::ptr::write_volatile((at + i as u64) as *mut u8, byte) };
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::SharedRingMemory;
    use ipc::vmbus::memory::RingMemory;
    use std::vec;
    use std::vec::Vec;

    /// Every offset and length within a 64-byte window of 8-byte-aligned
    /// memory, both directions, against a plain copy.
    #[test]
    fn bytes_round_trip_at_every_offset_and_length() {
        let mut backing = vec![0u64; 16];
        let base = backing.as_mut_ptr() as u64;
        // SAFETY: `backing` is 128 bytes, aligned, alive for the whole test
        // and touched only through this memory while it is used.
        let memory = unsafe { SharedRingMemory::new(base, 128) };
        for offset in 0..64 {
            for len in 0..64 {
                let data: Vec<u8> = (0..len).map(|i| (offset * 64 + i + 1) as u8).collect();
                memory.write(0, &[0u8; 128]);
                memory.write(offset, &data);
                let mut all = [0u8; 128];
                memory.read(0, &mut all);
                let mut expected = [0u8; 128];
                expected[offset..offset + len].copy_from_slice(&data);
                assert_eq!(all, expected, "write at {offset}+{len}");
                let mut back = vec![0xffu8; len];
                memory.read(offset, &mut back);
                assert_eq!(back, data, "read at {offset}+{len}");
            }
        }
        // Out of range: nothing written, reads give zeros.
        memory.write(120, &[1u8; 16]);
        let mut out = [0xffu8; 16];
        memory.read(120, &mut out);
        assert_eq!(out, [0u8; 16]);
    }
}
