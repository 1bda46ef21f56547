//! Starting application processors: the real-mode trampoline and the
//! INIT-SIPI-SIPI sequence.
//!
//! The trampoline is copied to a free page below 1 MiB; a start-up IPI makes
//! the processor run it in real mode at that page. It loads a temporary GDT,
//! enables PAE and long mode with the boot page tables (`boot.rs`: the
//! microkernel's own are W^X, and low memory is never executable in them)
//! and jumps to `ap_long_entry` in `.text`, which turns EFER.NXE and CR0.WP
//! on, loads the microkernel's page tables and calls `entry(arg)` on the
//! stack it was given.
//!
//! # Invariants
//! One processor is started at a time: the parameters in the trampoline
//! page belong to that processor until it reports in. No code runs from
//! the trampoline page once the microkernel's tables are loaded.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use super::{apic, pit};

global_asm!(
    r#"
    .section .rodata.trampoline, "a"
    .balign 16
    .global ap_trampoline_start
    .global ap_trampoline_end
    .global ap_trampoline_far_target
    .global ap_trampoline_long
    .global ap_trampoline_gdt
    .global ap_trampoline_gdtr
    .global ap_trampoline_cr3
    .global ap_trampoline_kernel_cr3
    .global ap_trampoline_stack
    .global ap_trampoline_entry
    .global ap_trampoline_arg
    .code16
ap_trampoline_start:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (ap_trampoline_gdtr - ap_trampoline_start)
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    movl (ap_trampoline_cr3 - ap_trampoline_start), %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000011, %eax
    mov %eax, %cr0
    .byte 0x66, 0xea
ap_trampoline_far_target:
    .long 0
    .short 0x08

    .code64
ap_trampoline_long:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov ap_trampoline_kernel_cr3(%rip), %r8
    mov ap_trampoline_stack(%rip), %rsi
    mov ap_trampoline_arg(%rip), %rdi
    mov ap_trampoline_entry(%rip), %r9
    movabs $ap_long_entry, %rax
    jmp *%rax

    .balign 8
ap_trampoline_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
ap_trampoline_gdtr:
    .short 23
    .long 0
    .balign 8
ap_trampoline_cr3:
    .quad 0
ap_trampoline_kernel_cr3:
    .quad 0
ap_trampoline_stack:
    .quad 0
ap_trampoline_entry:
    .quad 0
ap_trampoline_arg:
    .quad 0
ap_trampoline_end:
    .code64

    .section .text.ap_long_entry, "ax"
    .global ap_long_entry
/* From the trampoline, on the boot page tables: r8 = the microkernel's page
   tables, rsi = stack top, rdi = argument, r9 = entry. */
ap_long_entry:
    mov $0xc0000080, %ecx       /* EFER */
    rdmsr
    or $0x800, %eax             /* NXE: the kernel's tables use the NX bit */
    wrmsr
    mov %cr0, %rax
    or $0x10000, %rax           /* WP: read-only pages bind the kernel too */
    mov %rax, %cr0
    mov %r8, %cr3
    mov %rsi, %rsp
    call *%r9
1:
    cli
    hlt
    jmp 1b
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_trampoline_far_target: u8;
    static ap_trampoline_long: u8;
    static ap_trampoline_gdt: u8;
    static ap_trampoline_gdtr: u8;
    static ap_trampoline_cr3: u8;
    static ap_trampoline_kernel_cr3: u8;
    static boot_pml4: u8;
    static ap_trampoline_stack: u8;
    static ap_trampoline_entry: u8;
    static ap_trampoline_arg: u8;
}

/// Set by a starting processor (to its index + 1) as soon as it runs Rust code.
static STARTED: AtomicU64 = AtomicU64::new(0);

/// Called by a processor's entry function first thing.
pub fn report_started(index: u32) {
    STARTED.store(index as u64 + 1, Ordering::Release);
}

fn offset(symbol: &u8) -> usize {
    // SAFETY: only the address of the extern statics is taken.
    let start = unsafe { &ap_trampoline_start } as *const u8 as usize;
    symbol as *const u8 as usize - start
}

/// Why a processor did not start.
#[derive(Clone, Copy, Debug)]
pub enum StartError {
    /// The trampoline page is not below 1 MiB or not page-aligned.
    BadTrampolinePage,
    /// The boot page tables are above 4 GiB (the trampoline loads CR3 in 32-bit code).
    PageTablesTooHigh,
    /// The processor did not report in within a second.
    Timeout,
}

/// Starts the processor with `apic_id`, which calls `entry(index)` on the
/// stack ending at `stack_top`. `page` is a free, identity-mapped page below
/// 1 MiB that the microkernel owns; `cr3` the kernel's page tables (the
/// processor switches to them from the boot tables in `ap_long_entry`).
pub fn start(
    page: u64,
    cr3: u64,
    apic_id: u32,
    index: u32,
    stack_top: u64,
    entry: extern "C" fn(u64) -> !,
) -> Result<(), StartError> {
    if !page.is_multiple_of(4096) || page >= 0x10_0000 {
        return Err(StartError::BadTrampolinePage);
    }
    // SAFETY: only the address of the extern static is taken.
    let boot_tables = unsafe { &boot_pml4 } as *const u8 as u64;
    if boot_tables >= 1 << 32 {
        return Err(StartError::PageTablesTooHigh);
    }
    // SAFETY: the symbols delimit the trampoline's bytes in .rodata.
    let code = unsafe {
        let start = &ap_trampoline_start as *const u8;
        let len = &ap_trampoline_end as *const u8 as usize - start as usize;
        core::slice::from_raw_parts(start, len)
    };
    let dest = page as *mut u8;
    let patch32 = |symbol: &u8, at: usize, value: u32| {
        // SAFETY: `page` is a kernel-owned identity-mapped page and the
        // trampoline is far smaller than a page; `at` is inside it.
        unsafe { core::ptr::write_unaligned(dest.add(offset(symbol) + at) as *mut u32, value) };
    };
    let patch64 = |symbol: &u8, value: u64| {
        // SAFETY: as for `patch32`.
        unsafe { core::ptr::write_unaligned(dest.add(offset(symbol)) as *mut u64, value) };
    };
    // SAFETY: `page` is a kernel-owned identity-mapped page (caller) and the
    // trampoline is shorter than a page.
    unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), dest, code.len()) };
    // SAFETY: only the addresses of the extern statics are used.
    unsafe {
        patch32(
            &ap_trampoline_far_target,
            0,
            (page as usize + offset(&ap_trampoline_long)) as u32,
        );
        patch32(
            &ap_trampoline_gdtr,
            2,
            (page as usize + offset(&ap_trampoline_gdt)) as u32,
        );
        patch64(&ap_trampoline_cr3, boot_tables);
        patch64(&ap_trampoline_kernel_cr3, cr3);
        patch64(&ap_trampoline_stack, stack_top);
        patch64(&ap_trampoline_entry, entry as usize as u64);
        patch64(&ap_trampoline_arg, index as u64);
    }
    STARTED.store(0, Ordering::Release);
    apic::send_init(apic_id);
    pit::sleep_us(10_000);
    for _ in 0..2 {
        apic::send_startup(apic_id, page);
        for _ in 0..20 {
            pit::sleep_us(100);
            if STARTED.load(Ordering::Acquire) == index as u64 + 1 {
                return Ok(());
            }
        }
    }
    for _ in 0..1000 {
        pit::sleep_us(1000);
        if STARTED.load(Ordering::Acquire) == index as u64 + 1 {
            return Ok(());
        }
    }
    Err(StartError::Timeout)
}
