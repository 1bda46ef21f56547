//! The root partition's PCI configuration ports (0xCF8–0xCFF), emulated:
//! the address is latched here, data accesses are carried out on the
//! hardware through the [`Machine`], and writes that would move what the
//! microkernel keeps are refused (`crate::chipset`).
//!
//! # Invariants
//! - Only the root gets the emulation; in any other partition the ports
//!   behave as every port it does not hold (reads all ones, writes dropped).
//! - A refused write changes nothing on the hardware; the root's access
//!   completes as if it had been made (a write to a read-only register).

use ipc::platform::ConfigWriteRefused;

use super::Kernel;
use crate::chipset::{ConfigAccess, ConfigAddress, Target, bar_count, refuse_write};
use crate::machine::{Machine, Report};
use crate::svm::exit::IoAccess;
use crate::svm::vmcb::offset;

/// Refused writes reported one by one; later ones are only counted.
const REPORTED_REFUSALS: u64 = 8;

impl Kernel {
    /// Carries out the root's access `io` to a configuration port and
    /// moves it past the instruction (`vmcb` is the vCPU's).
    pub(super) fn emulate_config_port(&mut self, m: &mut impl Machine, vmcb: u64, io: IoAccess) {
        let rax = m.vmcb(vmcb).read_u64(offset::RAX);
        let value = match self
            .pci_config
            .access(io.port, io.size, io.input, rax as u32)
        {
            ConfigAccess::Value(v) => Some(v),
            ConfigAccess::Dropped => None,
            ConfigAccess::Read {
                address,
                offset,
                size,
            } => Some(m.pci_config_read(address.0, offset, size)),
            ConfigAccess::Write {
                address,
                offset,
                size,
                value,
            } => {
                self.config_write(m, address, offset, size, value);
                None
            }
        };
        let v = m.vmcb(vmcb);
        if let (Some(value), true) = (value, io.input && !io.string) {
            let mask: u64 = match io.size {
                1 => 0xff,
                2 => 0xffff,
                _ => 0xffff_ffff,
            };
            v.write_u64(offset::RAX, (rax & !mask) | (value as u64 & mask));
        }
        v.write_u64(offset::RIP, io.next_rip);
    }

    fn config_write(
        &mut self,
        m: &mut impl Machine,
        address: ConfigAddress,
        offset: u8,
        size: u8,
        value: u32,
    ) {
        let register = address.register();
        let header_type = (m.pci_config_read(address.with_register(0x0c).0, 2, 1) & 0x7f) as u8;
        let mut bars = [0u32; 6];
        let count = bar_count(header_type);
        if (0x10..0x10 + 4 * count as u8).contains(&register) {
            for (i, bar) in bars.iter_mut().enumerate().take(count) {
                *bar = m.pci_config_read(address.with_register(0x10 + 4 * i as u8).0, 0, 4);
            }
        }
        let target = Target {
            ids: m.pci_config_read(address.with_register(0).0, 0, 4),
            header_type,
            bars,
        };
        let kept = self.pci_config.kept_ports();
        match refuse_write(&target, register, offset, size, value, kept) {
            None => m.pci_config_write(address.0, offset, size, value),
            Some(why) => {
                self.pci_config.refused = self.pci_config.refused.wrapping_add(1);
                if self.pci_config.refused <= REPORTED_REFUSALS {
                    m.console_report(format_args!(
                        "{}",
                        ConfigWriteRefused {
                            bus: address.bus(),
                            device: address.device(),
                            function: address.function(),
                            register: register + offset,
                            why,
                        }
                    ));
                }
            }
        }
    }
}
