//! Per-processor state: each CPU's GDT, TSS, IDT, stacks and counters,
//! reached through the GS base.
//!
//! # Invariants
//! A `PerCpu` is created once per processor, never freed, and only its own
//! processor mutates the descriptor tables in it.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::{gdt::Gdt, idt::Idt, msr};

/// Task-state segment (64-bit).
#[repr(C, packed(4))]
pub struct Tss {
    reserved0: u32,
    /// Stacks for privilege changes (unused: everything runs at ring 0).
    pub rsp: [u64; 3],
    reserved1: u64,
    /// Interrupt stack table: 1 = double fault, 2 = NMI, 3 = machine check.
    pub ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    /// Offset of the I/O bitmap (past the end: none).
    pub iomap_base: u16,
}

impl Tss {
    /// A TSS with the given IST stacks.
    pub const fn new(ist: [u64; 7]) -> Self {
        Tss {
            reserved0: 0,
            rsp: [0; 3],
            reserved1: 0,
            ist,
            reserved2: 0,
            reserved3: 0,
            iomap_base: 104,
        }
    }
}

/// One processor's state.
#[repr(C, align(4096))]
pub struct PerCpu {
    /// Points at itself, so `gs:[0]` finds the structure.
    self_ptr: u64,
    /// Index in MADT order; 0 is the bootstrap processor.
    pub index: u32,
    /// Local APIC id.
    pub apic_id: u32,
    /// Local APIC timer interrupts taken.
    pub ticks: AtomicU64,
    /// Wake-up IPIs taken (another processor wants this one's attention).
    pub kicks: AtomicU64,
    /// VMX: the VMCS current on this processor (0: none).
    pub current_vmcs: AtomicU64,
    /// Physical address of the host state-save area (VM_HSAVE_PA).
    pub host_save_area: u64,
    /// Physical address of the VMCB holding the host's VMSAVE state.
    pub host_vmcb: u64,
    /// Global descriptor table.
    pub gdt: Gdt,
    /// Task-state segment.
    pub tss: Tss,
    /// Interrupt descriptor table.
    pub idt: Idt,
}

impl PerCpu {
    /// Fresh state for processor `index`.
    pub fn new(index: u32, apic_id: u32, ist: [u64; 7]) -> Self {
        PerCpu {
            self_ptr: 0,
            index,
            apic_id,
            ticks: AtomicU64::new(0),
            kicks: AtomicU64::new(0),
            current_vmcs: AtomicU64::new(0),
            host_save_area: 0,
            host_vmcb: 0,
            gdt: Gdt::new(),
            tss: Tss::new(ist),
            idt: Idt::new(),
        }
    }

    /// Makes this structure the running processor's (GS base) and loads its
    /// GDT, TSS and IDT.
    pub fn install(&'static mut self) {
        self.self_ptr = self as *const PerCpu as u64;
        let tss = &self.tss as *const Tss as u64;
        self.gdt.set_tss(tss);
        self.idt.fill();
        // SAFETY: `self` is 'static, so the tables it holds live forever.
        unsafe {
            self.gdt.load();
            self.idt.load();
        }
        // SAFETY: GS base is free for the kernel's per-CPU pointer; nothing
        // else uses GS in ring 0.
        unsafe { msr::wrmsr(msr::Msr::GsBase, self.self_ptr) };
    }
}

/// The running processor's state.
pub fn current() -> &'static PerCpu {
    // SAFETY: `install` set GS base to a PerCpu that lives forever before
    // interrupts (the only early callers) are enabled.
    unsafe { &*(msr::rdmsr(msr::Msr::GsBase) as *const PerCpu) }
}

/// Whether `install` ran on this processor.
pub fn installed() -> bool {
    // SAFETY: GS_BASE exists on every x86-64 processor.
    unsafe { msr::rdmsr(msr::Msr::GsBase) != 0 }
}

/// Counts a wake-up IPI on this processor.
pub fn kicked() {
    current().kicks.fetch_add(1, Ordering::Relaxed);
}

/// Timer ticks of the bootstrap processor: the kernel's clock.
static GLOBAL_TICKS: AtomicU64 = AtomicU64::new(0);

/// Counts a timer tick on this processor.
pub fn tick() {
    let cpu = current();
    cpu.ticks.fetch_add(1, Ordering::Relaxed);
    if cpu.index == 0 {
        GLOBAL_TICKS.fetch_add(1, Ordering::Relaxed);
    }
}

/// The kernel's clock in timer ticks.
pub fn global_ticks() -> u64 {
    GLOBAL_TICKS.load(Ordering::Relaxed)
}

/// Most processors.
pub const MAX_CPUS: usize = 64;
/// APIC id of each processor index (u32::MAX: none).
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_CPUS];

/// Records processor `index`'s APIC id.
pub fn set_apic_id(index: u32, apic_id: u32) {
    if let Some(slot) = APIC_IDS.get(index as usize) {
        slot.store(apic_id, Ordering::Relaxed);
    }
}

/// The APIC id of processor `index`.
pub fn apic_id_of(index: u32) -> Option<u32> {
    let id = APIC_IDS.get(index as usize)?.load(Ordering::Relaxed);
    (id != u32::MAX).then_some(id)
}
