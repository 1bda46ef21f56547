//! PCI configuration space through the legacy ports 0xCF8 (address) and
//! 0xCFC (data), as the i440FX chipset QEMU's `pc` machine has it. The
//! microkernel emulates these ports for the root: it latches the address
//! and carries out each data access, refusing writes that would move what
//! it keeps (`microkernel::chipset`).
//!
//! Also a device's message interrupts: its MSI-X capability and table
//! ([`Msix`]) and, for virtio, the vector registers of its common
//! configuration ([`VirtioVectors`]), which `virtio-drivers` does not
//! expose. Both reach only the registers of a memory BAR the device's own
//! configuration space names.

use core::sync::atomic::{AtomicU64, Ordering};

use partition_rt::arch::{inl, outl};
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};

/// Configuration reads and writes made (each is two port accesses, both
/// emulated by the microkernel: `docs/boot.md`).
static ACCESSES: AtomicU64 = AtomicU64::new(0);

/// Configuration reads and writes made so far.
pub fn accesses() -> u64 {
    ACCESSES.load(Ordering::Relaxed)
}

const ADDRESS: u16 = 0xcf8;
const DATA: u16 = 0xcfc;

/// Configuration mechanism #1 (port I/O).
pub struct PortCam;

fn address(df: DeviceFunction, register: u8) -> u32 {
    (1 << 31)
        | (u32::from(df.bus) << 16)
        | (u32::from(df.device & 0x1f) << 11)
        | (u32::from(df.function & 0x7) << 8)
        | u32::from(register & 0xfc)
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, register: u8) -> u32 {
        // The address/data pair is one operation: no interrupt handler of
        // the root touches configuration space, so no lock is needed.
        ACCESSES.fetch_add(1, Ordering::Relaxed);
        outl(ADDRESS, address(df, register));
        inl(DATA)
    }

    fn write_word(&mut self, df: DeviceFunction, register: u8, data: u32) {
        ACCESSES.fetch_add(1, Ordering::Relaxed);
        outl(ADDRESS, address(df, register));
        outl(DATA, data);
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

/// PCI capability id of MSI-X.
const CAP_MSIX: u8 = 0x11;
/// PCI capability id of a vendor capability (virtio's structures).
const CAP_VENDOR: u8 = 0x09;
/// Virtio structure type of the common configuration.
const VIRTIO_COMMON_CFG: u8 = 1;
/// Virtio structure type of the interrupt status register.
const VIRTIO_ISR_CFG: u8 = 3;
/// "No vector" in virtio's vector registers.
pub const NO_VECTOR: u16 = 0xffff;

/// The address of memory BAR `index` of `df`, if it is one and placed.
fn memory_bar(df: DeviceFunction, index: u8) -> Option<u64> {
    if index > 5 {
        return None;
    }
    let low = PortCam.read_word(df, 0x10 + 4 * index);
    if low & 1 != 0 {
        return None;
    }
    let high = if (low >> 1) & 0b11 == 0b10 && index < 5 {
        PortCam.read_word(df, 0x10 + 4 * (index + 1))
    } else {
        0
    };
    let address = u64::from(high) << 32 | u64::from(low & !0xf);
    (address != 0).then_some(address)
}

fn mmio_read32(address: u64) -> u32 {
    // SAFETY: `address` lies in a memory BAR the device's configuration
    // space names (callers check the offset against the structure's
    // length), identity-mapped uncacheable in the root; a device register
    // read has no effect on memory.
    unsafe { core::ptr::read_volatile(address as *const u32) }
}

fn mmio_write32(address: u64, value: u32) {
    // SAFETY: as for `mmio_read32`: a register of the device's own BAR.
    unsafe { core::ptr::write_volatile(address as *mut u32, value) }
}

fn mmio_read8(address: u64) -> u8 {
    // SAFETY: as for `mmio_read32` (reading virtio's interrupt status
    // clears it, which is what its readers want).
    unsafe { core::ptr::read_volatile(address as *const u8) }
}

fn mmio_read16(address: u64) -> u16 {
    // SAFETY: as for `mmio_read32`.
    unsafe { core::ptr::read_volatile(address as *const u16) }
}

fn mmio_write16(address: u64, value: u16) {
    // SAFETY: as for `mmio_read32`: a register of the device's own BAR.
    unsafe { core::ptr::write_volatile(address as *mut u16, value) }
}

/// A device's MSI-X capability and vector table.
#[derive(Clone, Copy, Debug)]
pub struct Msix {
    df: DeviceFunction,
    /// Offset of the capability in configuration space.
    cap: u8,
    /// Address of the vector table.
    table: u64,
    /// Entries in the table.
    pub entries: u16,
}

impl Msix {
    /// The MSI-X capability of `df`, if it has one with a placed table.
    pub fn find(df: DeviceFunction) -> Option<Msix> {
        let pci = PciRoot::new(PortCam);
        let cap = pci.capabilities(df).find(|c| c.id == CAP_MSIX)?;
        let control = cap.private_header;
        let table = PortCam.read_word(df, cap.offset + 4);
        let base = memory_bar(df, (table & 0x7) as u8)?;
        Some(Msix {
            df,
            cap: cap.offset,
            table: base + u64::from(table & !0x7),
            entries: (control & 0x7ff) + 1,
        })
    }

    /// Writes table entry `entry`: message address and data, unmasked.
    pub fn set_entry(&self, entry: u16, address: u64, data: u32) -> bool {
        if entry >= self.entries {
            return false;
        }
        let at = self.table + 16 * u64::from(entry);
        mmio_write32(at + 12, 1);
        mmio_write32(at, address as u32);
        mmio_write32(at + 4, (address >> 32) as u32);
        mmio_write32(at + 8, data);
        mmio_write32(at + 12, 0);
        mmio_read32(at + 12) & 1 == 0
    }

    /// Turns MSI-X on (function unmasked): the device stops using its
    /// interrupt line.
    pub fn enable(&self) {
        let word = PortCam.read_word(self.df, self.cap);
        let control = ((word >> 16) as u16 | 1 << 15) & !(1 << 14);
        PortCam.write_word(
            self.df,
            self.cap,
            (word & 0xffff) | u32::from(control) << 16,
        );
    }

    /// Whether MSI-X is on.
    pub fn enabled(&self) -> bool {
        PortCam.read_word(self.df, self.cap) & 1 << 31 != 0
    }
}

/// The interrupt registers of a virtio-pci device (virtio 1.x, 4.1.4):
/// in its common configuration `msix_config` and, per queue,
/// `queue_msix_vector`; and its interrupt status register.
#[derive(Clone, Copy, Debug)]
pub struct VirtioInterruptRegisters {
    common: u64,
    isr: u64,
}

/// The address of virtio structure `kind` of `df` if its BAR is placed
/// and it is at least `length` bytes long.
fn virtio_structure(df: DeviceFunction, kind: u8, length: u32) -> Option<u64> {
    let pci = PciRoot::new(PortCam);
    let cap = pci
        .capabilities(df)
        .find(|c| c.id == CAP_VENDOR && (c.private_header >> 8) as u8 == kind)?;
    let bar = PortCam.read_word(df, cap.offset + 4) as u8;
    let offset = PortCam.read_word(df, cap.offset + 8);
    if PortCam.read_word(df, cap.offset + 12) < length {
        return None;
    }
    Some(memory_bar(df, bar)? + u64::from(offset))
}

impl VirtioInterruptRegisters {
    const MSIX_CONFIG: u64 = 16;
    const NUM_QUEUES: u64 = 18;
    const QUEUE_SELECT: u64 = 22;
    const QUEUE_MSIX_VECTOR: u64 = 26;
    /// Bytes of the common configuration the registers above need.
    const LENGTH: u32 = 28;

    /// The registers of virtio-pci device `df`, if it has them.
    pub fn find(df: DeviceFunction) -> Option<VirtioInterruptRegisters> {
        Some(VirtioInterruptRegisters {
            common: virtio_structure(df, VIRTIO_COMMON_CFG, Self::LENGTH)?,
            isr: virtio_structure(df, VIRTIO_ISR_CFG, 1)?,
        })
    }

    /// Queues the device has.
    pub fn queues(&self) -> u16 {
        mmio_read16(self.common + Self::NUM_QUEUES)
    }

    /// Sets the configuration-change vector; what the device kept
    /// ([`NO_VECTOR`] when it refused).
    pub fn set_config_vector(&self, vector: u16) -> u16 {
        mmio_write16(self.common + Self::MSIX_CONFIG, vector);
        mmio_read16(self.common + Self::MSIX_CONFIG)
    }

    /// Sets queue `queue`'s vector; what the device kept.
    pub fn set_queue_vector(&self, queue: u16, vector: u16) -> u16 {
        mmio_write16(self.common + Self::QUEUE_SELECT, queue);
        mmio_write16(self.common + Self::QUEUE_MSIX_VECTOR, vector);
        mmio_read16(self.common + Self::QUEUE_MSIX_VECTOR)
    }
}

/// Interrupt status registers of virtio devices, by the root vector their
/// interrupt arrives on (0 = none): read by interrupt handlers, which take
/// no lock.
static ISR_BY_VECTOR: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];

impl VirtioInterruptRegisters {
    /// Makes [`read_isr_of_vector`]`(vector)` read this device's interrupt
    /// status register (`None`: read nothing).
    pub fn register_isr(registers: Option<&Self>, vector: u8) {
        ISR_BY_VECTOR[usize::from(vector)].store(registers.map_or(0, |r| r.isr), Ordering::Release);
    }
}

/// Reads (and so clears) the interrupt status register of the virtio
/// device registered for `vector`, which lowers its line; `None` when
/// none is registered.
pub fn read_isr_of_vector(vector: u8) -> Option<u8> {
    let address = ISR_BY_VECTOR[usize::from(vector)].load(Ordering::Acquire);
    (address != 0).then(|| mmio_read8(address))
}
