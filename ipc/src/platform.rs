//! The machine's own controls — reset, power-off, the chipset registers the
//! microkernel keeps, interrupts it did not expect — as the microkernel,
//! the root partition and the test harness name them: the root's test-only
//! attack modes (kernel command-line words) and every line they and the
//! microkernel print about them.
//!
//! # Invariants
//! A line's text is defined here once; the host tests below pin its shape.

use core::fmt;

/// Kernel command-line word (test only): the root tries to reset or power
/// off the machine behind the microkernel's back — the keyboard
/// controller's reset, the chipset's reset control register (0xCF9), the
/// ACPI PM1a control block directly and after moving the PIIX4
/// power-management base through PCI configuration space — then runs its
/// scenario and powers off through the `PowerOff` call.
pub const SELFTEST_ATTACK_RESET: &str = "selftest=attack-reset";

/// Kernel command-line word (test only): the root programs QEMU's fw_cfg
/// DMA engine to write its own memory, the hypervisor's image and the
/// local APIC's interrupt window, then makes the HPET send message
/// interrupts on vectors the microkernel does not expect them on (3, 14,
/// 0x99, 0xff) and a non-maskable one; then it runs its scenario and
/// powers off.
pub const SELFTEST_ATTACK_DMA: &str = "selftest=attack-dma";

/// Kernel command-line prefix (test only, with [`SELFTEST_ATTACK_DMA`]):
/// `attack-dma-target=0x...` aims the fw_cfg DMA at that host-physical
/// address instead of the first page of the hypervisor image.
pub const ATTACK_DMA_TARGET: &str = "attack-dma-target=";

/// Kernel command-line word (test only): the root asks for a reset
/// through the `Reset` call instead of powering off.
pub const SELFTEST_RESET: &str = "selftest=reset";

/// Kernel command-line word: the root measures PCI configuration reads
/// (through the microkernel's emulation of ports 0xCF8/0xCFC) against
/// port reads that pass straight to the hardware.
pub const BENCH_PCI_CONFIG: &str = "bench=pci-config";

/// Printed by the microkernel when the root's `Reset` call is carried out.
pub const KERNEL_RESET: &str = "capvisor: the root partition asked for a reset, resetting";

/// `root attack: NAME: refused (DETAIL)` or `root attack: NAME: NOT REFUSED
/// (DETAIL)`: one attack of a test-only root mode and what came of it. An
/// attack that is not refused usually never prints: the machine resets,
/// powers off or the microkernel dies.
#[derive(Clone, Copy, Debug)]
pub struct RootAttack<'a> {
    /// The attack's name.
    pub name: &'a str,
    /// Whether the microkernel refused it.
    pub refused: bool,
    /// What the root saw.
    pub detail: fmt::Arguments<'a>,
}

impl fmt::Display for RootAttack<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = if self.refused {
            "refused"
        } else {
            "NOT REFUSED"
        };
        write!(f, "root attack: {}: {outcome} ({})", self.name, self.detail)
    }
}

/// `root attack: NAME`: printed by the root just before an attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootAttackStart<'a>(pub &'a str);

impl fmt::Display for RootAttackStart<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "root attack: {}", self.0)
    }
}

/// `root attacks: R of N refused`: the end of a test-only attack mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootAttacksDone {
    /// Attacks the microkernel refused.
    pub refused: u32,
    /// Attacks made.
    pub total: u32,
}

impl fmt::Display for RootAttacksDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root attacks: {} of {} refused",
            self.refused, self.total
        )
    }
}

/// Attacks of [`SELFTEST_ATTACK_RESET`].
pub const RESET_ATTACKS: u32 = 8;
/// Attacks of [`SELFTEST_ATTACK_DMA`].
pub const DMA_ATTACKS: u32 = 4;

/// `capvisor: N stray interrupts (first on vector V)`: interrupts the
/// microkernel did not expect (vectors it does not use, non-maskable
/// interrupts, message interrupts on exception vectors), each counted,
/// acknowledged and otherwise ignored; printed as the run ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StrayInterrupts {
    /// Stray interrupts taken.
    pub count: u64,
    /// The vector of the first (2 for a non-maskable interrupt).
    pub first: u8,
}

impl fmt::Display for StrayInterrupts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "capvisor: {} stray interrupts (first on vector {})",
            self.count, self.first
        )
    }
}

/// `partition NAME: WBINVD and INVD are ignored (first at rip=0x...)`: the
/// microkernel's report of the first cache-flush instruction a partition
/// executed (intercepted, completed as a no-op; later ones are counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheFlushIgnored<'a> {
    /// The partition.
    pub partition: &'a str,
    /// Where it executed the instruction.
    pub rip: u64,
}

impl fmt::Display for CacheFlushIgnored<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "partition {}: WBINVD and INVD are ignored (first at rip={:#x})",
            self.partition, self.rip
        )
    }
}

/// `capvisor: PCI configuration write refused: BB:DD.F register 0xRR (WHY)`:
/// the first configuration writes of the root that would move a resource
/// the microkernel keeps (later ones are counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigWriteRefused<'a> {
    /// Bus.
    pub bus: u8,
    /// Device.
    pub device: u8,
    /// Function.
    pub function: u8,
    /// The first byte written.
    pub register: u8,
    /// Why.
    pub why: &'a str,
}

impl fmt::Display for ConfigWriteRefused<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "capvisor: PCI configuration write refused: {:02x}:{:02x}.{} register {:#04x} ({})",
            self.bus, self.device, self.function, self.register, self.why
        )
    }
}

/// `bench: pci config read: C instructions (direct port pair: D)`: the
/// cost of one configuration read through the microkernel's emulation
/// (address and data port) and of the same two port accesses passed
/// straight through, cheapest batch (`bench=pci-config`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciConfigBench {
    /// Time-stamp counter ticks per emulated configuration read.
    pub emulated: u64,
    /// Ticks per pair of directly passed port accesses.
    pub direct: u64,
    /// Configuration accesses the root made before the measurement.
    pub boot_accesses: u64,
}

impl fmt::Display for PciConfigBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bench: pci config read: {} instructions (direct port pair: {}); {} configuration accesses at boot",
            self.emulated, self.direct, self.boot_accesses
        )
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn lines_keep_their_shape() {
        assert_eq!(
            RootAttack {
                name: "kbc reset",
                refused: true,
                detail: format_args!("still running")
            }
            .to_string(),
            "root attack: kbc reset: refused (still running)"
        );
        assert_eq!(
            RootAttacksDone {
                refused: 7,
                total: 7
            }
            .to_string(),
            "root attacks: 7 of 7 refused"
        );
        assert_eq!(
            StrayInterrupts { count: 4, first: 3 }.to_string(),
            "capvisor: 4 stray interrupts (first on vector 3)"
        );
        assert_eq!(
            CacheFlushIgnored {
                partition: "evil",
                rip: 0x1000
            }
            .to_string(),
            "partition evil: WBINVD and INVD are ignored (first at rip=0x1000)"
        );
        assert_eq!(
            ConfigWriteRefused {
                bus: 0,
                device: 1,
                function: 3,
                register: 0x40,
                why: "PM base"
            }
            .to_string(),
            "capvisor: PCI configuration write refused: 00:01.3 register 0x40 (PM base)"
        );
    }
}
