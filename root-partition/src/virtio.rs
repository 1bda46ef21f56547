//! What every virtio device of the root shares: finding it on PCI bus 0,
//! enabling it, its transport, and binding its interrupt line through the
//! root's interrupt capability (the drivers: `crate::blk`, `crate::net`).

use alloc::format;
use alloc::string::String;

use ipc::boot::{BootInfo, cap_kind};
use ipc::hypercall::{Call, SlotHandle};
use virtio_drivers::transport::DeviceType;
use virtio_drivers::transport::pci::bus::{Command, ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::{PciTransport, virtio_device_type};

use partition_rt::sync::SpinLock;

use crate::hal::dma::RootHal;
use crate::hal::pci::PortCam;

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
    let mut pci = PciRoot::new(PortCam);
    let found = pci
        .enumerate_bus(0)
        .find(|(_, function)| virtio_device_type(function) == Some(kind));
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
static BOUND: SpinLock<[Option<(u32, &'static str)>; 8]> = SpinLock::new([None; 8]);

/// The device already bound to line `gsi`, if any. The microkernel
/// programs device lines edge-triggered, so two devices cannot share one:
/// a second device on a bound line runs polled, without interrupts (QEMU's
/// `pc` machine under SeaBIOS puts PCI slots 3 and 4 on the same line).
pub fn line_taken(gsi: u32) -> Option<&'static str> {
    BOUND
        .lock()
        .iter()
        .flatten()
        .find(|(g, _)| *g == gsi)
        .map(|(_, what)| *what)
}

/// Binds line `gsi` to `vector` on the root's vCPU with `handler`; the
/// line's capability (to acknowledge it). `what` names the device in errors.
pub fn bind_line(
    info: &BootInfo,
    gsi: u32,
    vector: u8,
    handler: fn(u8),
    what: &'static str,
) -> Result<SlotHandle, String> {
    let cap = |kind: u32, a: Option<u64>| {
        info.caps()
            .iter()
            .find(|c| c.kind == kind && a.is_none_or(|a| c.a == a))
            .and_then(|c| SlotHandle::from_raw(c.slot).ok())
    };
    let line = cap(cap_kind::INTERRUPT, Some(u64::from(gsi)))
        .ok_or_else(|| format!("no interrupt capability for the {what}'s line {gsi}"))?;
    let vcpu = cap(cap_kind::VCPU, None).ok_or_else(|| String::from("no vCPU capability"))?;
    partition_rt::set_interrupt_handler(vector, handler)
        .map_err(|_| format!("cannot install the {what}'s interrupt handler"))?;
    partition_rt::hypercall(&Call::InterruptBind {
        interrupt: line,
        vcpu,
        vector,
    })
    .map_err(|e| format!("binding the {what}'s line {gsi}: {e:?}"))?;
    if let Some(free) = BOUND.lock().iter_mut().find(|b| b.is_none()) {
        *free = Some((gsi, what));
    }
    Ok(line)
}
