//! The chipset registers the microkernel keeps from partitions: PCI
//! configuration mechanism #1 (ports 0xCF8–0xCFF), emulated for the root
//! partition so that the reset control register at 0xCF9 and the
//! configuration registers that place the microkernel's own resources
//! never reach the hardware from it.
//!
//! The configuration address register (0xCF8, 32 bits) contains the reset
//! control register (0xCF9, 8 bits): a processor checks every byte of a
//! 4-byte access against the I/O permission map, so the microkernel cannot
//! keep 0xCF9 and pass 0xCF8. It keeps all eight ports and latches the
//! address itself; a data-port access (0xCFC–0xCFF) is then carried out
//! on the hardware by the microkernel, address and data together.
//!
//! # Invariants
//! - A write to 0xCF9 (or any access to 0xCF8–0xCFB other than a dword at
//!   0xCF8) never reaches the hardware: reads see all ones, writes are
//!   dropped.
//! - A configuration write is forwarded only after [`refuse_write`] let it
//!   through; reads are always forwarded.
//! - Nothing here touches hardware: [`ConfigMechanism::access`] says what
//!   to do, the kernel core does it through its `Machine`.

/// The configuration address register.
pub const CONFIG_ADDRESS: u16 = 0xcf8;
/// The reset control register (PIIX3/PIIX4, ICH9), inside the address register.
pub const RESET_CONTROL: u16 = 0xcf9;
/// The first byte of the configuration data register.
pub const CONFIG_DATA: u16 = 0xcfc;
/// Ports below this one are the legacy ISA ones: the microkernel keeps
/// them from the root (except the RTC) and no I/O BAR may be placed there.
pub const PCI_IO_START: u16 = 0x1000;

/// Whether `port` is one of the eight configuration ports.
pub const fn is_config_port(port: u16) -> bool {
    port >= CONFIG_ADDRESS && port <= CONFIG_DATA + 3
}

/// Bits of the address register that hold something: enable (31), bus,
/// device, function and the dword register (7:2).
const ADDRESS_MASK: u32 = 0x80ff_fffc;
/// The enable bit of the address register.
const ENABLE: u32 = 1 << 31;

/// A latched configuration address: enable, bus, device, function, register.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConfigAddress(pub u32);

impl ConfigAddress {
    /// Bus number.
    pub const fn bus(self) -> u8 {
        (self.0 >> 16) as u8
    }
    /// Device number.
    pub const fn device(self) -> u8 {
        ((self.0 >> 11) & 0x1f) as u8
    }
    /// Function number.
    pub const fn function(self) -> u8 {
        ((self.0 >> 8) & 0x7) as u8
    }
    /// The dword register (a multiple of 4).
    pub const fn register(self) -> u8 {
        self.0 as u8 & 0xfc
    }
    /// The same function's dword register `register`.
    pub const fn with_register(self, register: u8) -> ConfigAddress {
        ConfigAddress((self.0 & !0xff) | (register as u32 & 0xfc))
    }
}

/// What an access to a configuration port asks of the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigAccess {
    /// Give the guest this value (an `IN`), nothing else to do.
    Value(u32),
    /// Nothing (a dropped `OUT`).
    Dropped,
    /// Read `size` bytes at byte `offset` of the dword at `address` on the hardware.
    Read {
        /// The dword.
        address: ConfigAddress,
        /// Byte offset in the dword (0–3).
        offset: u8,
        /// Bytes (1, 2 or 4; offset + size ≤ 4).
        size: u8,
    },
    /// Write `value` there, if [`refuse_write`] allows it.
    Write {
        /// The dword.
        address: ConfigAddress,
        /// Byte offset in the dword (0–3).
        offset: u8,
        /// Bytes (1, 2 or 4; offset + size ≤ 4).
        size: u8,
        /// The value (its low `size` bytes).
        value: u32,
    },
}

/// The emulated configuration mechanism of the root partition: one
/// latched address, as the hardware has one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConfigMechanism {
    address: u32,
    /// Ports the microkernel keeps inside the PCI I/O space (first,
    /// count; count 0 = unused): no I/O BAR may cover them.
    kept: [(u16, u16); KEPT_IO_RANGES],
    /// Accesses to the configuration ports (statistics).
    pub accesses: u64,
    /// Configuration writes refused.
    pub refused: u64,
    /// Writes to the reset control register dropped.
    pub resets_dropped: u64,
}

fn ones(size: u8) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => u32::MAX,
    }
}

/// Port ranges inside the PCI I/O space the microkernel can keep.
pub const KEPT_IO_RANGES: usize = 4;

impl ConfigMechanism {
    /// Keeps `count` ports from `first` (inside the PCI I/O space, such as
    /// the ACPI PM1a control block on Bochs) from every I/O BAR; false when
    /// no room is left.
    pub fn keep_ports(&mut self, first: u16, count: u16) -> bool {
        match self.kept.iter_mut().find(|(_, n)| *n == 0) {
            Some(slot) => {
                *slot = (first, count);
                true
            }
            None => false,
        }
    }

    /// The ranges [`ConfigMechanism::keep_ports`] kept.
    pub fn kept_ports(&self) -> &[(u16, u16)] {
        let used = self.kept.iter().take_while(|(_, n)| *n != 0).count();
        &self.kept[..used]
    }

    /// Decides what an `IN` (`input`) or `OUT` of `size` bytes (1, 2, 4)
    /// at `port` (a configuration port) does; `value` is what an `OUT` writes.
    pub fn access(&mut self, port: u16, size: u8, input: bool, value: u32) -> ConfigAccess {
        self.accesses = self.accesses.wrapping_add(1);
        let size = match size {
            1 | 2 => size,
            _ => 4,
        };
        if port == CONFIG_ADDRESS && size == 4 {
            if input {
                return ConfigAccess::Value(self.address);
            }
            self.address = value & ADDRESS_MASK;
            return ConfigAccess::Dropped;
        }
        if port < CONFIG_DATA {
            // Bytes and words of the address register, and the reset
            // control register in it: kept.
            if input {
                return ConfigAccess::Value(ones(size));
            }
            if port <= RESET_CONTROL && port + size as u16 > RESET_CONTROL {
                self.resets_dropped = self.resets_dropped.wrapping_add(1);
            }
            return ConfigAccess::Dropped;
        }
        let offset = (port - CONFIG_DATA) as u8;
        if self.address & ENABLE == 0 || offset + size > 4 {
            return if input {
                ConfigAccess::Value(ones(size))
            } else {
                ConfigAccess::Dropped
            };
        }
        let address = ConfigAddress(self.address);
        if input {
            ConfigAccess::Read {
                address,
                offset,
                size,
            }
        } else {
            ConfigAccess::Write {
                address,
                offset,
                size,
                value: value & ones(size),
            }
        }
    }
}

/// What the kernel knows about the function a write targets, read from
/// the hardware just before the write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// Vendor (bits 15:0) and device id (31:16): dword 0.
    pub ids: u32,
    /// The header type byte (register 0x0E) without the multi-function bit.
    pub header_type: u8,
    /// The base address registers (0x10, 0x14, ...) as they read now,
    /// when the write touches one (zeros otherwise).
    pub bars: [u32; 6],
}

/// Base address registers of a header type: six in a device (type 0),
/// two in a bridge (type 1), none in anything else.
pub const fn bar_count(header_type: u8) -> usize {
    match header_type & 0x7f {
        0 => 6,
        1 => 2,
        _ => 0,
    }
}

/// Whether BAR `index` of `bars` (the first `count`) is an I/O BAR. The
/// upper half of a 64-bit memory BAR is none, whatever it reads (all
/// ones while it is being sized).
fn is_io_bar(bars: &[u32; 6], count: usize, index: usize) -> bool {
    let mut i = 0;
    while i < count {
        let io = bars[i] & 1 == 1;
        if i == index {
            return io;
        }
        // A 64-bit memory BAR (type 10b in bits 2:1) takes the next one too.
        i += if !io && (bars[i] >> 1) & 0b11 == 0b10 {
            2
        } else {
            1
        };
    }
    false
}

/// Chipset registers that place what the microkernel keeps, per function:
/// (vendor | device << 16, first byte, bytes, why).
const KEPT_REGISTERS: [(u32, u8, u8, &str); 7] = [
    // PIIX4 power management (QEMU `pc`, Bochs): PMBA and PMREGMISC (PM I/O enable).
    (0x7113_8086, 0x40, 4, "PM base"),
    (0x7113_8086, 0x80, 1, "PM I/O enable"),
    // ICH9 LPC (QEMU `q35`): PMBASE and ACPI_CNTL (ACPI I/O enable).
    (0x2918_8086, 0x40, 4, "PM base"),
    (0x2918_8086, 0x44, 1, "ACPI I/O enable"),
    // i440FX host bridge: SMRAM control (open SMRAM, where the firmware's SMI handler lives).
    (0x1237_8086, 0x72, 1, "SMRAM control"),
    // Q35 host bridge: SMRAM and extended SMRAM control.
    (0x29c0_8086, 0x9d, 2, "SMRAM control"),
    // Q35 host bridge: the memory-mapped configuration window's base.
    (0x29c0_8086, 0x60, 8, "configuration window base"),
];

/// Bytes an I/O BAR decodes at most (PCI local bus specification 3.0, 6.2.5.1).
const IO_BAR_MAX: u32 = 256;

/// Why a write of `size` bytes of `value` at byte `offset` of register
/// `register` (a dword) of `target` must not reach the hardware, if it
/// must not: it would move or switch off a resource the microkernel keeps
/// (the ACPI power-management block, SMRAM, the configuration window), or
/// place an I/O BAR over ports the microkernel keeps: the legacy ones
/// below [`PCI_IO_START`], and `kept` above it. The BAR's size is not
/// known without sizing it, so a base less than 256 ports (the most an
/// I/O BAR decodes) below a kept port is refused too.
pub fn refuse_write(
    target: &Target,
    register: u8,
    offset: u8,
    size: u8,
    value: u32,
    kept: &[(u16, u16)],
) -> Option<&'static str> {
    let first = register as u32 + offset as u32;
    let end = first + size as u32;
    for &(ids, at, len, why) in &KEPT_REGISTERS {
        if ids == target.ids && first < at as u32 + len as u32 && (at as u32) < end {
            return Some(why);
        }
    }
    let count = bar_count(target.header_type);
    let index = (register as usize).wrapping_sub(0x10) / 4;
    if (0x10..0x10 + 4 * count as u8).contains(&register) && is_io_bar(&target.bars, count, index) {
        // An I/O BAR: the new base is the old one with the written bytes in.
        let mask = ones(size) << (offset * 8);
        let current = target.bars[index];
        let new = (current & !mask) | ((value << (offset * 8)) & mask);
        let base = new & 0xffff_fffc;
        let covers = |&(first, count): &(u16, u16)| {
            let (first, end) = (first as u32, first as u32 + count as u32);
            base < end && first < base + IO_BAR_MAX
        };
        // All ones is how a BAR is sized, not placed.
        if new != u32::MAX && (base < PCI_IO_START as u32 || kept.iter().any(covers)) {
            return Some("I/O BAR over the ports the kernel keeps");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(bus: u8, device: u8, function: u8, register: u8) -> u32 {
        ENABLE
            | (bus as u32) << 16
            | (device as u32) << 11
            | (function as u32) << 8
            | register as u32
    }

    #[test]
    fn the_address_is_latched_and_data_accesses_are_forwarded() {
        let mut c = ConfigMechanism::default();
        let pm = address(0, 1, 3, 0x40);
        assert_eq!(c.access(0xcf8, 4, false, pm | 3), ConfigAccess::Dropped);
        assert_eq!(c.access(0xcf8, 4, true, 0), ConfigAccess::Value(pm));
        let a = ConfigAddress(pm);
        assert_eq!(
            (a.bus(), a.device(), a.function(), a.register()),
            (0, 1, 3, 0x40)
        );
        assert_eq!(
            c.access(0xcfc, 4, true, 0),
            ConfigAccess::Read {
                address: a,
                offset: 0,
                size: 4
            }
        );
        assert_eq!(
            c.access(0xcfe, 2, false, 0x1234_5678),
            ConfigAccess::Write {
                address: a,
                offset: 2,
                size: 2,
                value: 0x5678
            }
        );
        // A dword at 0xcfd would leave the data register.
        assert_eq!(c.access(0xcfd, 4, true, 0), ConfigAccess::Value(u32::MAX));
        assert_eq!(c.access(0xcfd, 4, false, 0), ConfigAccess::Dropped);
        // Disabled: nothing reaches the hardware.
        c.access(0xcf8, 4, false, pm & !ENABLE);
        assert_eq!(c.access(0xcfc, 1, true, 0), ConfigAccess::Value(0xff));
        assert_eq!(c.access(0xcfc, 4, false, 0), ConfigAccess::Dropped);
        assert_eq!(c.accesses, 9);
    }

    #[test]
    fn the_reset_control_register_never_reaches_the_hardware() {
        let mut c = ConfigMechanism::default();
        assert_eq!(c.access(0xcf9, 1, false, 6), ConfigAccess::Dropped);
        assert_eq!(c.access(0xcf8, 2, false, 0x0600), ConfigAccess::Dropped);
        assert_eq!(c.access(0xcfa, 1, false, 6), ConfigAccess::Dropped);
        assert_eq!(c.resets_dropped, 2);
        assert_eq!(c.access(0xcf9, 1, true, 0), ConfigAccess::Value(0xff));
        // A dword at 0xcf8 only sets the latch (its byte 1 is not 0xcf9's).
        c.access(0xcf8, 4, false, 0x8000_0600);
        assert_eq!(
            c.access(0xcf8, 4, true, 0),
            ConfigAccess::Value(0x8000_0600)
        );
        assert_eq!(c.resets_dropped, 2);
    }

    fn device(ids: u32, header_type: u8, bar0: u32) -> Target {
        Target {
            ids,
            header_type,
            bars: [bar0, 0, 0, 0, 0, 0],
        }
    }

    #[test]
    fn kept_chipset_registers_are_refused() {
        let pm = device(0x7113_8086, 0, 0x601);
        assert_eq!(refuse_write(&pm, 0x40, 0, 4, 0x7001, &[]), Some("PM base"));
        assert_eq!(refuse_write(&pm, 0x40, 1, 1, 0x70, &[]), Some("PM base"));
        assert_eq!(refuse_write(&pm, 0x80, 0, 1, 0, &[]), Some("PM I/O enable"));
        // A dword write covering 0x80 through its first byte.
        assert_eq!(refuse_write(&pm, 0x80, 0, 4, 1, &[]), Some("PM I/O enable"));
        // Other registers of the same function (SMBus base, command) pass.
        assert_eq!(refuse_write(&pm, 0x90, 0, 4, 0xb101, &[]), None);
        assert_eq!(refuse_write(&pm, 0x04, 0, 2, 0x0007, &[]), None);
        let lpc = device(0x2918_8086, 0, 0);
        assert_eq!(
            refuse_write(&lpc, 0x44, 0, 1, 0, &[]),
            Some("ACPI I/O enable")
        );
        let host = device(0x1237_8086, 0, 0);
        assert_eq!(
            refuse_write(&host, 0x70, 2, 1, 0x4a, &[]),
            Some("SMRAM control")
        );
        assert_eq!(
            refuse_write(&host, 0x58, 1, 1, 0x33, &[]),
            None,
            "PAM stays the root's"
        );
        // Another vendor's register 0x40 is its own business.
        let virtio = device(0x1001_1af4, 0, 0);
        assert_eq!(refuse_write(&virtio, 0x40, 0, 4, 0, &[]), None);
    }

    #[test]
    fn io_bars_stay_above_the_legacy_ports() {
        let io_bar = device(0x1001_1af4, 0x80, 0xc041);
        assert_eq!(
            refuse_write(&io_bar, 0x10, 0, 4, 0x0601, &[]),
            Some("I/O BAR over the ports the kernel keeps")
        );
        assert_eq!(
            refuse_write(&io_bar, 0x10, 1, 1, 0x00, &[]),
            Some("I/O BAR over the ports the kernel keeps"),
            "0xc041 with byte 1 cleared is 0x0041"
        );
        assert_eq!(
            refuse_write(&io_bar, 0x10, 0, 4, u32::MAX, &[]),
            None,
            "sizing"
        );
        assert_eq!(refuse_write(&io_bar, 0x10, 0, 4, 0xd001, &[]), None);
        // A memory BAR is not an I/O one.
        let mem_bar = device(0x1001_1af4, 0, 0xfebf_0000);
        assert_eq!(refuse_write(&mem_bar, 0x14, 0, 4, 0x0000_0600, &[]), None);
        // Past the BARs of a bridge.
        let bridge = device(0x0001_1b36, 1, 0x0000_0001);
        assert_eq!(refuse_write(&bridge, 0x18, 0, 4, 0x0001_0100, &[]), None);
        // The upper half of a 64-bit memory BAR reads all ones while it is
        // sized; putting it back (0) is no I/O BAR below 0x1000.
        let virtio = Target {
            ids: 0x1001_1af4,
            header_type: 0,
            bars: [0xc041, 0xfebf_1000, 0, 0, 0xffff_c00c, u32::MAX],
        };
        assert_eq!(refuse_write(&virtio, 0x24, 0, 4, 0, &[]), None);
        assert_eq!(refuse_write(&virtio, 0x20, 0, 4, 0xfe00_000c, &[]), None);
        assert_eq!(
            refuse_write(&virtio, 0x10, 0, 4, 0x61, &[]),
            Some("I/O BAR over the ports the kernel keeps")
        );
        // An I/O BAR after a 64-bit BAR whose upper half looks like a BAR.
        let after = Target {
            ids: 0x1234_5678,
            header_type: 0,
            bars: [0x8000_000c, 0x0000_0005, 0x0000_d001, 0, 0, 0],
        };
        assert_eq!(
            refuse_write(&after, 0x18, 0, 4, 0x0401, &[]),
            Some("I/O BAR over the ports the kernel keeps")
        );
        assert_eq!(refuse_write(&after, 0x14, 0, 4, 0x0000_0001, &[]), None);
        // Bochs's PM block is at 0xb000: PM1a control (0xb004) is kept.
        let mut c = ConfigMechanism::default();
        assert!(c.keep_ports(0xb004, 2));
        let kept = c.kept_ports();
        assert_eq!(kept, &[(0xb004, 2)]);
        let why = Some("I/O BAR over the ports the kernel keeps");
        assert_eq!(refuse_write(&io_bar, 0x10, 0, 4, 0xb001, kept), why);
        assert_eq!(
            refuse_write(&io_bar, 0x10, 0, 4, 0xaf41, kept),
            why,
            "256 ports below"
        );
        assert_eq!(refuse_write(&io_bar, 0x10, 0, 4, 0xb011, kept), None);
        assert_eq!(refuse_write(&io_bar, 0x10, 0, 4, 0xaf01, kept), None);
    }
}
