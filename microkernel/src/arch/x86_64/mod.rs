//! x86-64 hardware: boot entry, descriptor tables, interrupts, APIC, timers,
//! processors, physical memory access, AMD SVM.

pub mod acpi;
pub mod apic;
pub mod boot;
pub mod cpu;
pub mod exceptions;
pub mod gdt;
pub mod heap;
pub mod idt;
pub mod ioapic;
pub mod machine;
pub mod memory;
pub mod msi;
pub mod msr;
pub mod multiboot;
pub mod pci;
pub mod percpu;
pub mod pit;
pub mod port;
pub mod power;
pub mod serial;
pub mod smp;
pub mod svm;
pub mod virt;
pub mod vmx;
