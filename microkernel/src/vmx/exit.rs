//! Translating a VMX exit into the exit codes and information fields the
//! kernel core reads (the SVM vocabulary, `svm::exit`), so exit handling is
//! written once.

use crate::svm::exit::code;

/// Exit reasons (SDM vol. 3, appendix C) the translation knows.
#[allow(missing_docs)]
pub mod reason {
    pub const EXCEPTION_OR_NMI: u32 = 0;
    pub const EXTERNAL_INTERRUPT: u32 = 1;
    pub const TRIPLE_FAULT: u32 = 2;
    pub const INIT: u32 = 3;
    pub const SIPI: u32 = 4;
    pub const INTERRUPT_WINDOW: u32 = 7;
    pub const CPUID: u32 = 10;
    pub const HLT: u32 = 12;
    pub const INVD: u32 = 13;
    pub const VMCALL: u32 = 18;
    pub const VMCLEAR: u32 = 19;
    pub const VMXON: u32 = 27;
    pub const IO: u32 = 30;
    pub const RDMSR: u32 = 31;
    pub const WRMSR: u32 = 32;
    pub const INVALID_GUEST_STATE: u32 = 33;
    pub const MSR_LOADING: u32 = 34;
    pub const MWAIT: u32 = 36;
    pub const MONITOR: u32 = 39;
    pub const EPT_VIOLATION: u32 = 48;
    pub const EPT_MISCONFIGURATION: u32 = 49;
    pub const INVEPT: u32 = 50;
    pub const INVVPID: u32 = 53;
    pub const WBINVD: u32 = 54;
    pub const XSETBV: u32 = 55;
}

/// What the hardware reported about one exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxExit {
    /// Basic exit reason (bits 0–15) and the entry-failure flag (bit 31).
    pub reason: u32,
    /// Exit qualification.
    pub qualification: u64,
    /// Guest-physical address (EPT exits).
    pub guest_physical: u64,
    /// Length of the exiting instruction.
    pub instruction_length: u64,
    /// Guest RIP at the exit.
    pub rip: u64,
}

/// Which exit-information fields an exit needs: the backend reads only
/// these from the VMCS after an exit ([`translate`] ignores the others for
/// that reason, which the tests check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    /// The exit qualification.
    pub qualification: bool,
    /// The guest-physical address.
    pub guest_physical: bool,
    /// The length of the exiting instruction.
    pub instruction_length: bool,
    /// The IDT-vectoring information: the exit may have interrupted the
    /// delivery of an event, which must then be delivered again. Exits
    /// caused by executing an instruction never do.
    pub vectoring: bool,
}

/// The fields [`translate`] reads for an exit with `reason` (and what the
/// backend must look at besides). Unknown reasons get everything but the
/// address and length.
pub const fn needs(reason: u32) -> Needs {
    const NOTHING: Needs = Needs {
        qualification: false,
        guest_physical: false,
        instruction_length: false,
        vectoring: false,
    };
    if reason & (1 << 31) != 0 {
        return NOTHING;
    }
    match reason & 0xffff {
        reason::CPUID
        | reason::HLT
        | reason::VMCALL
        | reason::VMCLEAR..=reason::VMXON
        | reason::INVEPT
        | reason::INVVPID
        | reason::XSETBV
        | reason::RDMSR
        | reason::WRMSR => NOTHING,
        reason::IO => Needs {
            qualification: true,
            instruction_length: true,
            ..NOTHING
        },
        reason::EXTERNAL_INTERRUPT
        | reason::EXCEPTION_OR_NMI
        | reason::TRIPLE_FAULT
        | reason::INIT
        | reason::SIPI => Needs {
            vectoring: true,
            ..NOTHING
        },
        reason::EPT_VIOLATION | reason::EPT_MISCONFIGURATION => Needs {
            qualification: true,
            guest_physical: true,
            vectoring: true,
            ..NOTHING
        },
        _ => Needs {
            qualification: true,
            vectoring: true,
            ..NOTHING
        },
    }
}

/// The exit as (EXITCODE, EXITINFO1, EXITINFO2) in the SVM vocabulary.
pub fn translate(e: &VmxExit) -> (u64, u64, u64) {
    if e.reason & (1 << 31) != 0 {
        return (u64::MAX, e.reason as u64, 0);
    }
    match e.reason & 0xffff {
        reason::EXTERNAL_INTERRUPT => (code::INTR, 0, 0),
        reason::EXCEPTION_OR_NMI => (code::NMI, 0, 0),
        reason::TRIPLE_FAULT | reason::INIT | reason::SIPI => (code::SHUTDOWN, 0, 0),
        reason::CPUID => (code::CPUID, 0, 0),
        reason::HLT => (code::HLT, 0, 0),
        reason::VMCALL => (code::VMMCALL, 0, 0),
        reason::VMCLEAR..=reason::VMXON | reason::INVEPT | reason::INVVPID => (code::VMRUN, 0, 0),
        reason::XSETBV => (code::XSETBV, 0, 0),
        reason::INTERRUPT_WINDOW => (code::VINTR, 0, 0),
        reason::INVD => (code::INVD, 0, 0),
        reason::WBINVD => (code::WBINVD, 0, 0),
        reason::MONITOR => (code::MONITOR, 0, 0),
        reason::MWAIT => (code::MWAIT, 0, 0),
        reason::IO => {
            let q = e.qualification;
            let size: u64 = match q & 0b111 {
                0 => 1,
                1 => 2,
                _ => 4,
            };
            let input = (q >> 3) & 1;
            let string = (q >> 4) & 1;
            let rep = (q >> 5) & 1;
            let port = (q >> 16) & 0xffff;
            // SVM IOIO EXITINFO1: type (bit 0, 1 = IN), STR (2), REP (3), SZ8/16/32 (4–6), port (16–31).
            let info1 = input | (string << 2) | (rep << 3) | (size << 4) | (port << 16);
            (code::IOIO, info1, e.rip.wrapping_add(e.instruction_length))
        }
        reason::RDMSR => (code::MSR, 0, 0),
        reason::WRMSR => (code::MSR, 1, 0),
        reason::EPT_VIOLATION | reason::EPT_MISCONFIGURATION => {
            let q = e.qualification;
            // Page-fault style error code: bit 0 present (any permission), 1 write, 4 fetch.
            let present = u64::from(q & 0b11_1000 != 0);
            let error = present | (((q >> 1) & 1) << 1) | (((q >> 2) & 1) << 4) | (1 << 32);
            (code::NPF, error, e.guest_physical)
        }
        other => (0x1000 | other as u64, e.qualification, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svm::exit::{Exit, IoAccess};

    fn exit(reason: u32, qualification: u64) -> Exit {
        let (c, i1, i2) = translate(&VmxExit {
            reason,
            qualification,
            guest_physical: 0x10_0000,
            instruction_length: 1,
            rip: 0x4000,
        });
        Exit::decode(c, i1, i2)
    }

    #[test]
    fn exits_mean_the_same_as_on_svm() {
        assert_eq!(exit(reason::VMCALL, 0), Exit::Vmmcall);
        assert_eq!(exit(reason::HLT, 0), Exit::Hlt);
        assert_eq!(exit(reason::EXTERNAL_INTERRUPT, 0), Exit::Interrupt);
        assert_eq!(exit(reason::TRIPLE_FAULT, 0), Exit::Shutdown);
        assert_eq!(exit(reason::WRMSR, 0), Exit::Msr { write: true });
        assert_eq!(
            exit(reason::INVALID_GUEST_STATE | (1 << 31), 0),
            Exit::InvalidState
        );
        // OUT dx, al to 0xf4: size 1 (0), out, port in bits 16–31.
        assert_eq!(
            exit(reason::IO, 0xf4 << 16),
            Exit::Io(IoAccess {
                port: 0xf4,
                input: false,
                size: 1,
                string: false,
                next_rip: 0x4001
            })
        );
        // IN eax, dx from 0x40: size 4 (3), in.
        assert_eq!(
            exit(reason::IO, (0x40 << 16) | (1 << 3) | 3),
            Exit::Io(IoAccess {
                port: 0x40,
                input: true,
                size: 4,
                string: false,
                next_rip: 0x4001
            })
        );
        // A read of an unmapped page: qualification bit 0, no permission bits.
        assert_eq!(
            exit(reason::EPT_VIOLATION, 1),
            Exit::NestedPageFault {
                gpa: 0x10_0000,
                error: 1 << 32
            }
        );
        assert!(matches!(exit(reason::VMCLEAR, 0), Exit::SvmInstruction(_)));
        assert_eq!(exit(reason::INTERRUPT_WINDOW, 0), Exit::InterruptWindow);
        assert_eq!(exit(reason::INVD, 0), Exit::CacheFlush);
        assert_eq!(exit(reason::WBINVD, 0), Exit::CacheFlush);
        assert!(matches!(exit(reason::MONITOR, 0), Exit::Unavailable(_)));
        assert!(matches!(exit(reason::MWAIT, 0), Exit::Unavailable(_)));
        assert!(matches!(exit(77, 0), Exit::Other(_)));
    }

    /// What the backend leaves unread must not change the translation:
    /// every field `needs` says no to is filled with garbage.
    #[test]
    fn translation_reads_only_what_needs_names() {
        let reasons = (0..80).chain([reason::INVALID_GUEST_STATE | (1 << 31)]);
        for reason in reasons {
            for qualification in [0, 1, 0x3f, (0x3f8 << 16) | 0b11_1001, u64::MAX] {
                let real = VmxExit {
                    reason,
                    qualification,
                    guest_physical: 0x1234_5000,
                    instruction_length: 2,
                    rip: 0x4000,
                };
                let n = needs(reason);
                let lazy = VmxExit {
                    reason,
                    qualification: if n.qualification {
                        qualification
                    } else {
                        0xdead
                    },
                    guest_physical: if n.guest_physical {
                        real.guest_physical
                    } else {
                        0xbad
                    },
                    instruction_length: if n.instruction_length { 2 } else { 99 },
                    rip: 0x4000,
                };
                assert_eq!(translate(&real), translate(&lazy), "reason {reason}");
            }
        }
    }

    #[test]
    fn instruction_exits_never_carry_an_interrupted_event() {
        for r in [
            reason::VMCALL,
            reason::IO,
            reason::CPUID,
            reason::HLT,
            reason::WRMSR,
        ] {
            assert!(!needs(r).vectoring);
        }
        for r in [reason::EPT_VIOLATION, reason::EXCEPTION_OR_NMI, 77] {
            assert!(needs(r).vectoring);
        }
        assert_eq!(
            needs(reason::VMCALL),
            Needs {
                qualification: false,
                guest_physical: false,
                instruction_length: false,
                vectoring: false
            }
        );
    }
}
