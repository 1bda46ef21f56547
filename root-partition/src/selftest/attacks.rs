//! The hostile root's test-only attack modes (`ipc::platform`), as far as
//! they are hypercalls and checks: the [`Tally`] every attack reports to
//! (one [`RootAttack`] line per attack, one [`RootAttacksDone`] line per
//! mode), the root's power calls with the capability they need
//! ([`request_reset`], [`request_power_off`]), and the verdicts on what the
//! machine's devices did (fw_cfg DMA descriptors and control words, the
//! HPET's message timers). The attacks themselves (port I/O, PCI
//! configuration, fw_cfg DMA, HPET MMIO) are the binary's
//! (`selftest_attacks.rs`): only the machine can answer them.
//!
//! # Invariants
//! - Every attack counts once in the [`RootAttacksDone`] line; a mode that
//!   made another number of attacks than it expected says so first.
//! - A power call is made only with the capability the caller names; the
//!   kernel core decides whether it names the root with CONTROL.

use core::fmt;

use ipc::boot::{BootInfo, cap_kind};
use ipc::hypercall::{Call, SlotHandle, Status};
use ipc::platform::{ATTACK_DMA_TARGET, RootAttack, RootAttackStart, RootAttacksDone};

use crate::hv::{Kernel, Results};
use crate::say;

/// The root's capability on itself (from the boot page).
pub fn authority(info: &BootInfo) -> Option<SlotHandle> {
    let cap = info.caps().iter().find(|c| c.kind == cap_kind::PARTITION)?;
    SlotHandle::from_raw(cap.slot).ok()
}

/// `selftest=reset`: asks the microkernel to reset the machine with
/// `partition` (the root's authority, from [`authority`]). Returns only if
/// the call was refused (or, on the host, carried out), with its result.
pub fn request_reset<K: Kernel>(
    k: &K,
    partition: Option<SlotHandle>,
) -> Option<Result<Results, Status>> {
    let Some(partition) = partition else {
        say!(k, "root partition: no partition capability to reset with");
        return None;
    };
    say!(k, "root partition: asking the microkernel for a reset");
    let result = k.call(&Call::Reset { partition });
    if result.is_err() {
        say!(k, "root partition: reset refused: {result:?}");
    }
    Some(result)
}

/// Ends the run through the microkernel's `PowerOff` call with
/// `partition`; on the machine it returns only if refused (the caller then
/// halts), with the result.
pub fn request_power_off<K: Kernel>(
    k: &K,
    partition: Option<SlotHandle>,
) -> Option<Result<Results, Status>> {
    let partition = partition?;
    let result = k.call(&Call::PowerOff { partition });
    if result.is_err() {
        say!(k, "root partition: PowerOff refused: {result:?}");
    }
    Some(result)
}

/// Counts attacks and refusals, and waits long enough after each for a
/// reset or power-off to take effect.
pub struct Tally<'k, K: Kernel> {
    k: &'k K,
    made: u32,
    refused: u32,
    /// Time-stamp counter ticks per millisecond.
    tsc_khz: u64,
}

impl<'k, K: Kernel> Tally<'k, K> {
    /// A tally that prints through `k` and waits on its clock.
    pub fn new(k: &'k K) -> Self {
        Tally {
            k,
            made: 0,
            refused: 0,
            tsc_khz: k.tsc_khz().max(1000),
        }
    }

    /// Attacks made so far.
    pub fn made(&self) -> u32 {
        self.made
    }

    /// Attacks refused so far.
    pub fn refused(&self) -> u32 {
        self.refused
    }

    /// Says which attack comes next (an attack that works may leave no
    /// other line).
    pub fn start(&self, name: &str) {
        say!(self.k, "{}", RootAttackStart(name));
    }

    /// Lets `ms` milliseconds pass (a reset request, a message interrupt
    /// or a DMA transfer completes meanwhile).
    pub fn settle(&self, ms: u64) {
        let start = self.k.ticks();
        while self.k.ticks().wrapping_sub(start) < ms * self.tsc_khz {
            core::hint::spin_loop();
        }
    }

    /// Records an attack and whether it was refused.
    pub fn outcome(&mut self, name: &str, refused: bool, detail: fmt::Arguments<'_>) {
        self.made += 1;
        if refused {
            self.refused += 1;
        }
        say!(
            self.k,
            "{}",
            RootAttack {
                name,
                refused,
                detail
            }
        );
    }

    /// Ends a mode that should have made `expected` attacks.
    pub fn done(&self, expected: u32) {
        if self.made != expected {
            say!(
                self.k,
                "root attacks: FAILED: made {} of {expected}",
                self.made
            );
        }
        say!(
            self.k,
            "{}",
            RootAttacksDone {
                refused: self.refused,
                total: self.made
            }
        );
    }
}

/// Where the fw_cfg DMA attack aims: the command line's
/// `attack-dma-target=0x...`, else the first page of the hypervisor image.
pub fn dma_target(info: &BootInfo) -> u64 {
    info.cmdline()
        .split_whitespace()
        .find_map(|w| w.strip_prefix(ATTACK_DMA_TARGET))
        .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        .unwrap_or(info.hypervisor_image.start)
}

// QEMU's fw_cfg DMA interface (docs/specs/fw_cfg.rst in QEMU).
/// Control word bit: the transfer failed.
pub const DMA_CONTROL_ERROR: u32 = 1;
/// Control word bit: read the item into memory.
pub const DMA_CONTROL_READ: u32 = 1 << 1;
/// Control word bit: select the item first.
pub const DMA_CONTROL_SELECT: u32 = 1 << 3;

/// The fw_cfg DMA descriptor (big-endian) that writes `length` bytes of
/// `item` to `target`.
pub fn fw_cfg_descriptor(item: u16, length: u32, target: u64) -> [u8; 16] {
    let control = (u32::from(item) << 16) | DMA_CONTROL_SELECT | DMA_CONTROL_READ;
    let mut bytes = [0u8; 16];
    bytes[0..4].copy_from_slice(&control.to_be_bytes());
    bytes[4..8].copy_from_slice(&length.to_be_bytes());
    bytes[8..16].copy_from_slice(&target.to_be_bytes());
    bytes
}

/// Whether a fw_cfg DMA transfer ran: the device is there (`reachable`:
/// its signature read "QEMU") and left no error in the control word.
pub fn dma_done(reachable: bool, control: u32) -> bool {
    reachable && control & DMA_CONTROL_ERROR == 0
}

/// The HPET's message interrupts (timer, MSI data): fixed delivery of
/// vectors 3 (an exception vector without error code), 14 (one with),
/// 0x99 (a vector the microkernel has no use for), 0xee (in its message
/// range, held by no interrupt object), 0xff (the local APIC's spurious
/// vector), and an NMI (delivery mode 0x400).
pub const HPET_MESSAGES: [(u64, u64); 6] = [
    (0, 0x03),
    (1, 0x0e),
    (2, 0x99),
    (0, 0xee),
    (1, 0xff),
    (0, 0x400),
];

/// The local APIC's window: a write there is a message interrupt.
pub const APIC_WINDOW: u64 = 0xfee0_0000;

/// From the HPET's capabilities register (IA-PC HPET 1.0a): its timers
/// and the counter ticks in 5 ms; `None` when no HPET answers (all ones
/// or zeros).
pub fn hpet_plan(capabilities: u64) -> Option<(u64, u64)> {
    if capabilities == u64::MAX || capabilities == 0 {
        return None;
    }
    let timers = ((capabilities >> 8) & 0x1f) + 1;
    let period_fs = (capabilities >> 32).max(1);
    Some((timers, 5_000_000_000_000 / period_fs))
}

/// An HPET timer's FSB route: the message `data` written to the local
/// APIC's window.
pub const fn fsb_route(data: u64) -> u64 {
    (APIC_WINDOW << 32) | data
}
