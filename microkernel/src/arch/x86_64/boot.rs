//! The multiboot2 header and the 32-bit entry: from GRUB's protected mode to
//! long mode with an identity map of the first 4 GiB, then into Rust.
//!
//! GRUB enters `_start` in 32-bit protected mode, paging off, with
//! EAX = 0x36d76289 and EBX = the physical address of the boot information.
//! The boot page tables built here (identity, 4 GiB, 2 MiB pages, all
//! read + write + execute) live on after `memory::init_kernel_tables` loads
//! the microkernel's own W^X tables, for one use only: application
//! processors run their start-up trampoline below 1 MiB on them and switch
//! to the kernel's tables in `.text` (`smp.rs`).

use core::arch::global_asm;

global_asm!(
    r#"
    .section .multiboot2, "a"
    .balign 8
multiboot2_header:
    .long 0xe85250d6            /* magic */
    .long 0                     /* architecture: i386 protected mode */
    .long 24                    /* header length */
    .long 0x17adaf12            /* checksum: -(magic + arch + length) mod 2^32 */
    .short 0                    /* end tag */
    .short 0
    .long 8

    .section .boot, "ax"
    .code32
    .global _start
_start:
    cli
    cld
    mov $boot_stack_top, %esp
    mov %eax, %edi              /* multiboot2 magic: first argument */
    mov %ebx, %esi              /* boot information: second argument */

    /* PML4[0] -> PDPT; PDPT[0..4] -> four page directories of 2 MiB pages. */
    mov $boot_pdpt, %eax
    or $3, %eax
    mov %eax, boot_pml4
    xor %ecx, %ecx
1:
    mov %ecx, %eax
    shl $12, %eax
    add $boot_pd, %eax
    or $3, %eax
    mov %eax, boot_pdpt(,%ecx,8)
    inc %ecx
    cmp $4, %ecx
    jne 1b
    xor %ecx, %ecx
2:
    mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax              /* present, writable, 2 MiB */
    mov %eax, boot_pd(,%ecx,8)
    movl $0, boot_pd+4(,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jne 2b

    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax              /* PAE */
    mov %eax, %cr4
    mov $0xc0000080, %ecx       /* EFER */
    rdmsr
    or $0x100, %eax             /* LME */
    wrmsr
    mov %cr0, %eax
    or $0x80000011, %eax        /* PG | ET | PE */
    mov %eax, %cr0
    lgdt boot_gdt_pointer
    push $0x08
    push $long_mode_entry
    lret

    .code64
long_mode_entry:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    mov $boot_stack_top, %rsp
    mov %edi, %edi              /* zero-extend the two arguments */
    mov %esi, %esi
    call kernel_main
2:
    cli
    hlt
    jmp 2b

    .section .rodata
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
boot_gdt_pointer:
    .short boot_gdt_pointer - boot_gdt - 1
    .long boot_gdt

    .section .bss
    .balign 4096
    .global boot_pml4
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4 * 4096
boot_stack:
    .skip 64 * 1024
boot_stack_top:
"#,
    options(att_syntax)
);
