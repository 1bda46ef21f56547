//! Decoding #VMEXIT: the exit code and its information fields as a typed
//! value, so the handlers never read raw numbers.

/// Why a vCPU left guest mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// A physical interrupt arrived.
    Interrupt,
    /// A non-maskable interrupt arrived.
    Nmi,
    /// CPUID executed.
    Cpuid,
    /// HLT executed.
    Hlt,
    /// An intercepted port access.
    Io(IoAccess),
    /// RDMSR or WRMSR of an intercepted MSR.
    Msr {
        /// WRMSR rather than RDMSR.
        write: bool,
    },
    /// VMMCALL executed: a hypercall.
    Vmmcall,
    /// The guest tried to use SVM itself (VMRUN, VMLOAD, CLGI, INVLPGA, ...).
    SvmInstruction(u64),
    /// MONITOR or MWAIT: not for partitions (they idle with HLT).
    Unavailable(u64),
    /// WBINVD or INVD: never passed to the processor.
    CacheFlush,
    /// The guest can take the virtual interrupt the kernel asked to be
    /// told about (the interrupt window opened).
    InterruptWindow,
    /// The guest touched a guest-physical address its nested page tables do
    /// not allow.
    NestedPageFault {
        /// Faulting guest-physical address.
        gpa: u64,
        /// Page-fault style error code (bit 0 present, 1 write, 4 fetch; bit 32 final translation, 33 page walk).
        error: u64,
    },
    /// The guest triple-faulted.
    Shutdown,
    /// VMRUN refused the VMCB's state.
    InvalidState,
    /// Anything else (reported and fatal for the partition).
    Other(u64),
}

/// An intercepted IN or OUT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoAccess {
    /// The port.
    pub port: u16,
    /// IN (true) or OUT.
    pub input: bool,
    /// Operand size in bytes: 1, 2 or 4.
    pub size: u8,
    /// INS/OUTS.
    pub string: bool,
    /// Address of the next instruction (EXITINFO2).
    pub next_rip: u64,
}

/// Exit codes (APM vol. 2, table C-1).
#[allow(missing_docs)]
pub mod code {
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const VINTR: u64 = 0x64;
    pub const CPUID: u64 = 0x72;
    pub const INVD: u64 = 0x76;
    pub const HLT: u64 = 0x78;
    pub const INVLPGA: u64 = 0x7a;
    pub const IOIO: u64 = 0x7b;
    pub const MSR: u64 = 0x7c;
    pub const SHUTDOWN: u64 = 0x7f;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const VMLOAD: u64 = 0x82;
    pub const VMSAVE: u64 = 0x83;
    pub const STGI: u64 = 0x84;
    pub const CLGI: u64 = 0x85;
    pub const SKINIT: u64 = 0x86;
    pub const WBINVD: u64 = 0x89;
    pub const MONITOR: u64 = 0x8a;
    pub const MWAIT: u64 = 0x8b;
    pub const MWAIT_CONDITIONAL: u64 = 0x8c;
    pub const XSETBV: u64 = 0x8d;
    pub const NPF: u64 = 0x400;
}

impl Exit {
    /// Decodes an exit from the VMCB's EXITCODE, EXITINFO1 and EXITINFO2.
    pub fn decode(exit_code: u64, info1: u64, info2: u64) -> Exit {
        // VMRUN failures write -1; compare the low 32 bits (QEMU writes 32).
        if exit_code as u32 == u32::MAX {
            return Exit::InvalidState;
        }
        match exit_code {
            code::INTR => Exit::Interrupt,
            code::NMI => Exit::Nmi,
            code::VINTR => Exit::InterruptWindow,
            code::INVD | code::WBINVD => Exit::CacheFlush,
            code::MONITOR | code::MWAIT | code::MWAIT_CONDITIONAL => Exit::Unavailable(exit_code),
            code::CPUID => Exit::Cpuid,
            code::HLT => Exit::Hlt,
            code::IOIO => Exit::Io(IoAccess {
                port: (info1 >> 16) as u16,
                input: info1 & 1 != 0,
                size: match (info1 >> 4) & 0b111 {
                    0b001 => 1,
                    0b010 => 2,
                    _ => 4,
                },
                string: info1 & (1 << 2) != 0,
                next_rip: info2,
            }),
            code::MSR => Exit::Msr {
                write: info1 & 1 != 0,
            },
            code::VMMCALL => Exit::Vmmcall,
            code::VMRUN
            | code::VMLOAD
            | code::VMSAVE
            | code::STGI
            | code::CLGI
            | code::SKINIT
            | code::INVLPGA
            | code::XSETBV => Exit::SvmInstruction(exit_code),
            code::NPF => Exit::NestedPageFault {
                gpa: info2,
                error: info1,
            },
            code::SHUTDOWN => Exit::Shutdown,
            other => Exit::Other(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_exits() {
        assert_eq!(Exit::decode(0xffff_ffff, 0, 0), Exit::InvalidState);
        assert_eq!(Exit::decode(u64::MAX, 0, 0), Exit::InvalidState);
        assert_eq!(
            Exit::decode(code::NPF, 0x1_0000_0007, 0x10_0000),
            Exit::NestedPageFault {
                gpa: 0x10_0000,
                error: 0x1_0000_0007
            }
        );
        // OUT dx, al to 0x3f8: type 0, SZ8, port in bits 31:16.
        assert_eq!(
            Exit::decode(code::IOIO, (0x3f8 << 16) | (1 << 4), 0x1234),
            Exit::Io(IoAccess {
                port: 0x3f8,
                input: false,
                size: 1,
                string: false,
                next_rip: 0x1234
            })
        );
        assert_eq!(
            Exit::decode(code::IOIO, (0x60 << 16) | (0b100 << 4) | 1, 0),
            Exit::Io(IoAccess {
                port: 0x60,
                input: true,
                size: 4,
                string: false,
                next_rip: 0
            })
        );
        assert_eq!(Exit::decode(code::MSR, 1, 0), Exit::Msr { write: true });
        assert_eq!(Exit::decode(code::VINTR, 0, 0), Exit::InterruptWindow);
        assert_eq!(Exit::decode(code::WBINVD, 0, 0), Exit::CacheFlush);
        assert_eq!(Exit::decode(code::INVD, 0, 0), Exit::CacheFlush);
        assert_eq!(
            Exit::decode(code::INVLPGA, 0, 0),
            Exit::SvmInstruction(code::INVLPGA)
        );
        assert_eq!(
            Exit::decode(code::MONITOR, 0, 0),
            Exit::Unavailable(code::MONITOR)
        );
        assert_eq!(Exit::decode(0x1234, 0, 0), Exit::Other(0x1234));
    }
}
