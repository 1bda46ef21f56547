//! What every virtio device of the root shares: finding it on PCI bus 0,
//! enabling it, its transport, and its interrupt (the drivers:
//! `crate::hal::blk`, `crate::hal::net`).
//!
//! A device's interrupt comes, in order of preference:
//! - as MSI-X messages: the microkernel hands out a vector of its own and
//!   the message address and data (`InterruptMessage`); the root writes
//!   them into entry 0 of the device's MSI-X table and points every
//!   virtqueue at that entry;
//! - on its PCI interrupt line (register 0x3C), level-triggered on QEMU's
//!   `pc` machine (the MADT's overrides): the first device on a line
//!   binds the root's capability for it, the next ones a share of it
//!   (`InterruptShare`), each with its own vector and acknowledge.
//!
//! Each interrupt is taken whole in its handler ([`on_interrupt`]): the
//! device's interrupt status is read (which lowers its line) and the
//! interrupt acknowledged to the microkernel, then counted for the
//! driver, which finds its completions in its used rings. So no device
//! on a shared line ever keeps it masked while its driver is busy
//! elsewhere (the disk's driver sleeping in HLT for a completion while
//! the NIC's interrupt waits would otherwise hold the line both share).
//!
//! A device on an edge-triggered line another device holds has no
//! interrupt ([`attach`] fails): an edge two devices raise can be lost.
//! The kernel command line word `pci-intx` skips MSI-X (to test lines).
//!
//! The hypercalls and decisions are the library's
//! (`root_partition::devices::irq`); here are the handler and its
//! statics, and [`PciDevice`], the registers the library reaches through
//! its `Device` trait.

use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use ipc::boot::BootInfo;
use ipc::hypercall::SlotHandle;
use root_partition::devices::irq::{self, Attached, Lines};
use virtio_drivers::transport::DeviceType;
use virtio_drivers::transport::pci::bus::{Command, ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::{PciTransport, virtio_device_type};

use partition_rt::sync::SpinLock;

use crate::hal::dma::RootHal;
use crate::hal::kernel::HwKernel;
use crate::hal::pci::{self, Msix, PortCam, VirtioInterruptRegisters};

/// A virtio device found and enabled, not yet started by its driver.
pub struct Found {
    /// Its transport, for the driver.
    pub transport: PciTransport,
    /// PCI location.
    pub location: DeviceFunction,
    /// Global system interrupt of its line (PCI register 0x3C).
    pub gsi: u32,
}

/// The first virtio device of `kind` on PCI bus 0, with memory, I/O and
/// bus mastering enabled; `Ok(None)` when there is none.
pub fn find(kind: DeviceType) -> Result<Option<Found>, String> {
    find_nth(kind, 0)
}

/// The `nth` (from 0) virtio device of `kind` on PCI bus 0, as [`find`].
pub fn find_nth(kind: DeviceType, nth: usize) -> Result<Option<Found>, String> {
    let mut pci = PciRoot::new(PortCam);
    let found = pci
        .enumerate_bus(0)
        .filter(|(_, function)| virtio_device_type(function) == Some(kind))
        .nth(nth);
    let Some((location, _)) = found else {
        return Ok(None);
    };
    let (_, command) = pci.get_status_command(location);
    pci.set_command(
        location,
        command | Command::MEMORY_SPACE | Command::IO_SPACE | Command::BUS_MASTER,
    );
    let gsi = PortCam.read_word(location, 0x3c) & 0xff;
    let transport = PciTransport::new::<RootHal, _>(&mut pci, location)
        .map_err(|e| format!("virtio-pci transport at {location}: {e:?}"))?;
    Ok(Some(Found {
        transport,
        location,
        gsi,
    }))
}

/// Lines bound so far (GSIs), and by what.
static LINES: SpinLock<Lines> = SpinLock::new(Lines::new());

/// A device's interrupt, bound to a vector of the root's vCPU.
#[derive(Clone, Copy, Debug)]
pub struct DeviceInterrupt {
    /// The root vector it arrives on and how it comes.
    attached: Attached,
}

impl DeviceInterrupt {
    /// Interrupts taken so far.
    pub fn count(&self) -> u64 {
        COUNT[usize::from(self.attached.vector)].load(Ordering::Acquire)
    }
}

/// Per root vector: the interrupt capability's handle + 1 (0 = none).
static SLOT: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];
/// Per root vector: 1 when the line is edge-triggered.
static EDGE: [AtomicU8; 256] = [const { AtomicU8::new(0) }; 256];
/// Per root vector: interrupts taken.
static COUNT: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];

/// Takes a device interrupt: reads the device's interrupt status (lines
/// only: it lowers the line) and acknowledges the interrupt to the
/// microkernel, in the order `irq::take` gives; counts it.
fn on_interrupt(vector: u8) {
    let v = usize::from(vector);
    let Some(slot) = SLOT[v]
        .load(Ordering::Acquire)
        .checked_sub(1)
        .and_then(|raw| SlotHandle::from_raw(raw).ok())
    else {
        return;
    };
    let edge = EDGE[v].load(Ordering::Acquire) != 0;
    irq::take(&HwKernel, slot, edge, || {
        let _ = pci::read_isr_of_vector(vector);
    });
    COUNT[v].fetch_add(1, Ordering::AcqRel);
}

/// A virtio-pci device's interrupt registers, found as the library asks.
struct PciDevice {
    location: DeviceFunction,
    msix: Option<(Msix, VirtioInterruptRegisters)>,
    status: Option<VirtioInterruptRegisters>,
}

impl PciDevice {
    fn msix(&self) -> Option<&(Msix, VirtioInterruptRegisters)> {
        self.msix.as_ref()
    }
}

impl irq::Device for PciDevice {
    fn install_handler(&mut self, vector: u8) -> bool {
        partition_rt::set_interrupt_handler(vector, on_interrupt).is_ok()
    }
    fn find_msix(&mut self) -> bool {
        self.msix = Msix::find(self.location).zip(VirtioInterruptRegisters::find(self.location));
        self.msix.is_some()
    }
    fn set_msix_entry(&mut self, entry: u16, address: u64, data: u32) -> bool {
        self.msix()
            .is_some_and(|(m, _)| m.set_entry(entry, address, data))
    }
    fn enable_msix(&mut self) {
        if let Some((m, _)) = self.msix() {
            m.enable();
        }
    }
    fn msix_enabled(&mut self) -> bool {
        self.msix().is_some_and(|(m, _)| m.enabled())
    }
    fn queues(&mut self) -> u16 {
        self.msix().map_or(0, |(_, r)| r.queues())
    }
    fn set_config_vector(&mut self, vector: u16) -> u16 {
        self.msix()
            .map_or(pci::NO_VECTOR, |(_, r)| r.set_config_vector(vector))
    }
    fn set_queue_vector(&mut self, queue: u16, vector: u16) -> u16 {
        self.msix()
            .map_or(pci::NO_VECTOR, |(_, r)| r.set_queue_vector(queue, vector))
    }
    fn find_status(&mut self) -> bool {
        self.status = VirtioInterruptRegisters::find(self.location);
        self.status.is_some()
    }
    fn prepare(&mut self, vector: u8, slot: SlotHandle, edge: bool, status: bool) {
        let v = usize::from(vector);
        let registers = if status { self.status.as_ref() } else { None };
        VirtioInterruptRegisters::register_isr(registers, vector);
        EDGE[v].store(u8::from(edge), Ordering::Release);
        SLOT[v].store(slot.raw() + 1, Ordering::Release);
    }
    fn forget(&mut self, vector: u8) {
        SLOT[usize::from(vector)].store(0, Ordering::Release);
    }
}

/// Gives the started device at `location` (line `gsi`) an interrupt on
/// `vector` of the root's vCPU: MSI-X when the device has it (and
/// `pci-intx` is not on the command line), else its line. Prints which.
/// `what` names the device in messages (`irq::attach`).
pub fn attach(
    info: &BootInfo,
    location: DeviceFunction,
    gsi: u32,
    vector: u8,
    what: &'static str,
) -> Result<DeviceInterrupt, String> {
    let mut device = PciDevice {
        location,
        msix: None,
        status: None,
    };
    let attached = irq::attach(
        &HwKernel,
        &mut LINES.lock(),
        info,
        &mut device,
        location,
        gsi,
        vector,
        what,
    )?;
    Ok(DeviceInterrupt { attached })
}
