//! A virtual processor and its exit handling: the loop that enters guest
//! mode, decodes each #VMEXIT and either resumes the guest or stops the
//! partition with a report.
//!
//! # Invariants
//! Every exit either advances the guest past the instruction it emulated,
//! injects an exception, or stops the partition; the kernel never resumes a
//! guest at an instruction it failed to handle.

use core::arch::x86_64::CpuidResult;

use ipc::exit::ExitCode;
use ipc::markers::{self, NestedPageFault};
use microkernel::svm::exit::{Exit, IoAccess};
use microkernel::svm::vmcb::{Vmcb, mode, offset};

use crate::arch::{cpu, percpu, power, svm};

/// Vectors injected into a guest.
const INVALID_OPCODE: u8 = 6;
const GENERAL_PROTECTION: u8 = 13;

/// EFER bits a partition may change: SCE and NXE (long mode stays on).
const EFER_GUEST_WRITABLE: u64 = 1 | (1 << 11);
const EFER_MSR: u32 = 0xc000_0080;

/// What to do after an exit.
enum Next {
    Resume,
    PowerOff,
    Stop,
}

/// A virtual processor bound to the processor that runs it.
pub struct Vcpu {
    name: &'static str,
    vmcb: &'static mut Vmcb,
    /// General-purpose registers VMRUN does not keep in the VMCB.
    pub regs: svm::GuestRegs,
}

impl Vcpu {
    /// A vCPU of partition `name` with a prepared VMCB.
    pub fn new(name: &'static str, vmcb: &'static mut Vmcb) -> Self {
        Vcpu {
            name,
            vmcb,
            regs: svm::GuestRegs::default(),
        }
    }

    /// Runs until the partition powers off or is stopped; ends the run.
    pub fn run(&mut self) -> ! {
        let host_vmcb = percpu::current().host_vmcb;
        loop {
            svm::enter(self.vmcb, &mut self.regs, host_vmcb);
            let exit = Exit::decode(
                self.vmcb.read_u64(offset::EXIT_CODE),
                self.vmcb.read_u64(offset::EXIT_INFO1),
                self.vmcb.read_u64(offset::EXIT_INFO2),
            );
            self.vmcb.write_u8(offset::TLB_CONTROL, 0);
            match self.handle(exit) {
                Next::Resume => {}
                Next::PowerOff => {
                    kprintln!("{}", markers::KERNEL_POWER_OFF);
                    power::exit(ExitCode::Success)
                }
                Next::Stop => {
                    kprintln!("partition {} stopped", self.name);
                    power::exit(ExitCode::RootFault)
                }
            }
        }
    }

    fn rip(&self) -> u64 {
        self.vmcb.read_u64(offset::RIP)
    }

    fn advance(&mut self, bytes: u64) {
        self.vmcb
            .write_u64(offset::RIP, self.rip().wrapping_add(bytes));
    }

    fn handle(&mut self, exit: Exit) -> Next {
        match exit {
            Exit::Interrupt | Exit::Nmi => Next::Resume,
            Exit::Cpuid => {
                self.cpuid();
                Next::Resume
            }
            Exit::Hlt => {
                if self.vmcb.read_u64(offset::RFLAGS) & (1 << 9) == 0 {
                    // HLT with interrupts off: the partition has stopped for good.
                    return Next::PowerOff;
                }
                self.advance(1);
                cpu::wait_for_interrupt();
                Next::Resume
            }
            Exit::Io(io) => {
                self.io(io);
                Next::Resume
            }
            Exit::Msr { write } => {
                self.msr(write);
                Next::Resume
            }
            Exit::Vmmcall => {
                // No hypercalls yet: report an unknown call.
                self.vmcb.write_u64(offset::RAX, u64::MAX);
                self.advance(3);
                Next::Resume
            }
            Exit::SvmInstruction(_) => {
                self.vmcb.inject_exception(INVALID_OPCODE, None);
                Next::Resume
            }
            Exit::NestedPageFault { gpa, error } => {
                kprintln!(
                    "{}",
                    NestedPageFault {
                        partition: self.name,
                        gpa
                    }
                );
                kprintln!(
                    "  rip={:#x} access={} error={:#x}",
                    self.rip(),
                    if error & 0x10 != 0 {
                        "execute"
                    } else if error & 0x2 != 0 {
                        "write"
                    } else {
                        "read"
                    },
                    error
                );
                Next::Stop
            }
            Exit::Shutdown => {
                kprintln!(
                    "partition {} triple-faulted at rip={:#x}",
                    self.name,
                    self.rip()
                );
                Next::Stop
            }
            Exit::InvalidState => {
                kprintln!("VMRUN refused the state of partition {}", self.name);
                Next::Stop
            }
            Exit::Other(code) => {
                kprintln!(
                    "partition {}: unexpected exit {:#x} at rip={:#x}",
                    self.name,
                    code,
                    self.rip()
                );
                Next::Stop
            }
        }
    }

    /// CPUID as the partition sees it: the host's, with virtualization
    /// hidden and the hypervisor leaves added.
    fn cpuid(&mut self) {
        let leaf = self.vmcb.read_u64(offset::RAX) as u32;
        let subleaf = self.regs.rcx as u32;
        let mut r = cpu::cpuid(leaf, subleaf);
        match leaf {
            1 => r.ecx = (r.ecx | (1 << 31)) & !(1 << 5),
            0x4000_0000 => {
                let sig = *b"capvisor\0\0\0\0";
                let word =
                    |i: usize| u32::from_le_bytes([sig[i], sig[i + 1], sig[i + 2], sig[i + 3]]);
                r = CpuidResult {
                    eax: 0x4000_0000,
                    ebx: word(0),
                    ecx: word(4),
                    edx: word(8),
                };
            }
            0x8000_0001 => r.ecx &= !(1 << 2),
            0x8000_000a => {
                r = CpuidResult {
                    eax: 0,
                    ebx: 0,
                    ecx: 0,
                    edx: 0,
                }
            }
            _ => {}
        }
        self.vmcb.write_u64(offset::RAX, r.eax as u64);
        self.regs.rbx = r.ebx as u64;
        self.regs.rcx = r.ecx as u64;
        self.regs.rdx = r.edx as u64;
        self.advance(2);
    }

    /// An access to a port the partition does not own: reads see a floating
    /// bus (all ones), writes are dropped.
    fn io(&mut self, io: IoAccess) {
        if io.input && !io.string {
            let mask = match io.size {
                1 => 0xff,
                2 => 0xffff,
                _ => 0xffff_ffff,
            };
            let rax = self.vmcb.read_u64(offset::RAX);
            self.vmcb.write_u64(offset::RAX, (rax & !mask) | mask);
        }
        self.vmcb.write_u64(offset::RIP, io.next_rip);
    }

    /// An intercepted MSR: EFER is emulated (SVME hidden and kept), every
    /// other MSR raises #GP as if it did not exist.
    fn msr(&mut self, write: bool) {
        let msr = self.regs.rcx as u32;
        if msr != EFER_MSR {
            self.vmcb.inject_exception(GENERAL_PROTECTION, Some(0));
            return;
        }
        let efer = self.vmcb.read_u64(offset::EFER);
        if write {
            let value = (self.regs.rdx << 32) | (self.vmcb.read_u64(offset::RAX) & 0xffff_ffff);
            let fixed = efer & !(EFER_GUEST_WRITABLE | mode::EFER_SVME);
            if value & !(EFER_GUEST_WRITABLE) != fixed & !mode::EFER_SVME {
                self.vmcb.inject_exception(GENERAL_PROTECTION, Some(0));
                return;
            }
            self.vmcb.write_u64(offset::EFER, value | mode::EFER_SVME);
        } else {
            let visible = efer & !mode::EFER_SVME;
            self.vmcb.write_u64(offset::RAX, visible & 0xffff_ffff);
            self.regs.rdx = visible >> 32;
        }
        self.advance(2);
    }
}
