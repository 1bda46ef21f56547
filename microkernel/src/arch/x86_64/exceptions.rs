//! Fatal processor exceptions in the microkernel: print a register dump and
//! stop the machine cleanly.

use super::{cpu, idt::TrapFrame, percpu, serial};

const NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor overrun",
    "invalid TSS",
    "segment not present",
    "stack fault",
    "general protection",
    "page fault",
    "reserved",
    "x87 floating point",
    "alignment check",
    "machine check",
    "SIMD floating point",
    "virtualization",
    "control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection",
    "VMM communication",
    "security",
    "reserved",
];

/// Reports an exception taken in the microkernel and stops.
pub fn fatal(frame: &TrapFrame) -> ! {
    let cpu = if percpu::installed() {
        percpu::current().index as i64
    } else {
        -1
    };
    let name = NAMES
        .get(frame.vector as usize)
        .copied()
        .unwrap_or("unknown");
    let line = |args: core::fmt::Arguments<'_>| serial::write_line_emergency(args);
    line(format_args!(
        "{}",
        ipc::markers::KernelException {
            name,
            vector: frame.vector,
            cpu,
            error: frame.error,
        }
    ));
    line(format_args!(
        "  rip={:#018x} cs={:#x} rflags={:#x} rsp={:#018x} ss={:#x}",
        frame.rip, frame.cs, frame.rflags, frame.rsp, frame.ss
    ));
    line(format_args!(
        "  cr2={:#018x} cr3={:#018x}",
        cpu::read_cr2(),
        cpu::read_cr3()
    ));
    line(format_args!(
        "  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}",
        frame.rax, frame.rbx, frame.rcx, frame.rdx
    ));
    line(format_args!(
        "  rsi={:#018x} rdi={:#018x} rbp={:#018x} r8 ={:#018x}",
        frame.rsi, frame.rdi, frame.rbp, frame.r8
    ));
    line(format_args!(
        "  r9 ={:#018x} r10={:#018x} r11={:#018x} r12={:#018x}",
        frame.r9, frame.r10, frame.r11, frame.r12
    ));
    line(format_args!(
        "  r13={:#018x} r14={:#018x} r15={:#018x}",
        frame.r13, frame.r14, frame.r15
    ));
    super::power::exit(ipc::exit::ExitCode::Failure)
}
