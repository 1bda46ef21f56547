//! Exit codes a capvisor run ends with.
//!
//! The microkernel ends a run by writing one of these values to QEMU's
//! `isa-debug-exit` device (I/O port [`DEBUG_EXIT_PORT`]); QEMU then exits with
//! status `(value << 1) | 1`. [`qemu_status`] computes that status and
//! [`from_qemu_status`] maps it back.

/// I/O port of QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Why the microkernel ended the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// The root partition powered off normally.
    Success = 0x10,
    /// The microkernel refused to start or hit an internal error (a message says which).
    Failure = 0x11,
    /// The root partition was stopped by a fault (nested page fault, triple fault, bad state).
    RootFault = 0x12,
}

impl ExitCode {
    /// Every exit code, for lookups.
    pub const ALL: [ExitCode; 3] = [ExitCode::Success, ExitCode::Failure, ExitCode::RootFault];

    /// The process status QEMU exits with when the kernel writes this code.
    pub const fn qemu_status(self) -> i32 {
        ((self as u32 as i32) << 1) | 1
    }
}

/// Maps a QEMU process exit status back to the kernel's exit code, if it is one.
pub fn from_qemu_status(status: i32) -> Option<ExitCode> {
    ExitCode::ALL
        .into_iter()
        .find(|code| code.qemu_status() == status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_are_distinct() {
        assert_eq!(ExitCode::Success.qemu_status(), 33);
        assert_eq!(ExitCode::Failure.qemu_status(), 35);
        assert_eq!(ExitCode::RootFault.qemu_status(), 37);
        for code in ExitCode::ALL {
            assert_eq!(from_qemu_status(code.qemu_status()), Some(code));
        }
        assert_eq!(from_qemu_status(0), None);
        assert_eq!(from_qemu_status(1), None);
    }
}
