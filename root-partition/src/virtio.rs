//! What every virtio device of the root shares: finding it on PCI bus 0,
//! enabling it, its transport, and its interrupt (the drivers:
//! `crate::blk`, `crate::net`).
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

use alloc::format;
use alloc::string::String;
use core::fmt;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use ipc::boot::{BootInfo, cap_kind};
use ipc::hypercall::{Call, SlotHandle};
use ipc::markers;
use virtio_drivers::transport::DeviceType;
use virtio_drivers::transport::pci::bus::{Command, ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::{PciTransport, virtio_device_type};

use partition_rt::sync::SpinLock;

use crate::hal::dma::RootHal;
use crate::hal::pci::{self, Msix, NO_VECTOR, PortCam, VirtioInterruptRegisters};

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
static BOUND: SpinLock<[Option<(u32, &'static str)>; 8]> = SpinLock::new([None; 8]);

/// The device already bound to line `gsi`, if any.
fn line_taken(gsi: u32) -> Option<&'static str> {
    BOUND
        .lock()
        .iter()
        .flatten()
        .find(|(g, _)| *g == gsi)
        .map(|(_, what)| *what)
}

/// How a device's interrupts reach the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// MSI-X messages on the microkernel's vector `vector`.
    Msix {
        /// The processor vector the kernel chose.
        vector: u8,
    },
    /// Its PCI interrupt line.
    Line {
        /// Global system interrupt.
        gsi: u32,
        /// Level-triggered (else edge).
        level: bool,
        /// The device bound to the line first, when this one shares it.
        shared_with: Option<&'static str>,
    },
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Delivery::Msix { vector } => write!(f, "MSI-X (kernel vector {vector:#x})"),
            Delivery::Line {
                gsi,
                level,
                shared_with,
            } => {
                let trigger = if level { "level" } else { "edge" };
                match shared_with {
                    Some(other) => {
                        write!(
                            f,
                            "GSI {gsi} ({trigger}-triggered, shared with the {other})"
                        )
                    }
                    None => write!(f, "GSI {gsi} ({trigger}-triggered)"),
                }
            }
        }
    }
}

/// A device's interrupt, bound to a vector of the root's vCPU.
#[derive(Clone, Copy, Debug)]
pub struct DeviceInterrupt {
    /// The root vector it arrives on.
    vector: u8,
    /// How it comes.
    pub delivery: Delivery,
}

impl DeviceInterrupt {
    /// Interrupts taken so far.
    pub fn count(&self) -> u64 {
        COUNT[usize::from(self.vector)].load(Ordering::Acquire)
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
/// microkernel (which unmasks the line once every device on it has, or
/// raises a message that came meanwhile).
///
/// On a level-triggered line the status is read first: the line is low
/// at the unmask unless a device raised it again, and then it fires
/// again, so nothing is lost. On an edge-triggered line the unmask comes
/// first: an I/O APIC ignores an edge on a masked line, and a completion
/// between a status read and the unmask would leave the line high with no
/// edge to come; read after the unmask, the line is low again and every
/// later completion makes an edge. Messages cannot be lost (the kernel
/// keeps one pending until the acknowledge).
fn on_interrupt(vector: u8) {
    let v = usize::from(vector);
    let Some(slot) = SLOT[v]
        .load(Ordering::Acquire)
        .checked_sub(1)
        .and_then(|raw| SlotHandle::from_raw(raw).ok())
    else {
        return;
    };
    let ack = || {
        let _ = partition_rt::hypercall(&Call::Acknowledge { slot });
    };
    if EDGE[v].load(Ordering::Acquire) != 0 {
        ack();
        let _ = pci::read_isr_of_vector(vector);
    } else {
        let _ = pci::read_isr_of_vector(vector);
        ack();
    }
    COUNT[v].fetch_add(1, Ordering::AcqRel);
}

/// Sets up what [`on_interrupt`] needs for `vector` before the interrupt is bound.
fn prepare(vector: u8, slot: SlotHandle, edge: bool, registers: Option<&VirtioInterruptRegisters>) {
    let v = usize::from(vector);
    VirtioInterruptRegisters::register_isr(registers, vector);
    EDGE[v].store(u8::from(edge), Ordering::Release);
    SLOT[v].store(slot.raw() + 1, Ordering::Release);
}

fn boot_cap(info: &BootInfo, kind: u32, a: Option<u64>) -> Option<(SlotHandle, u64)> {
    info.caps()
        .iter()
        .find(|c| c.kind == kind && a.is_none_or(|a| c.a == a))
        .and_then(|c| Some((SlotHandle::from_raw(c.slot).ok()?, c.b)))
}

/// Gives the started device at `location` (line `gsi`) an interrupt on
/// `vector` of the root's vCPU: MSI-X when the device has it (and
/// `pci-intx` is not on the command line), else its line. Prints which.
/// `what` names the device in messages.
pub fn attach(
    info: &BootInfo,
    location: DeviceFunction,
    gsi: u32,
    vector: u8,
    what: &'static str,
) -> Result<DeviceInterrupt, String> {
    let (vcpu, _) =
        boot_cap(info, cap_kind::VCPU, None).ok_or_else(|| String::from("no vCPU capability"))?;
    partition_rt::set_interrupt_handler(vector, on_interrupt)
        .map_err(|_| format!("cannot install the {what}'s interrupt handler"))?;
    let msix = if info.has_flag(markers::PCI_INTX) {
        None
    } else {
        match attach_msix(info, location, vcpu, vector, what) {
            Ok(found) => found,
            Err(e) => {
                partition_rt::console::print_line(format_args!(
                    "root partition: {what} at {location}: no MSI-X ({e}); using its line"
                ));
                None
            }
        }
    };
    let irq = match msix {
        Some(irq) => irq,
        None => attach_line(info, location, gsi, vcpu, vector, what)?,
    };
    partition_rt::console::print_line(format_args!(
        "root partition: {what} at {location} interrupts on {}",
        irq.delivery
    ));
    Ok(irq)
}

/// MSI-X: `Ok(None)` when the device has no MSI-X capability.
fn attach_msix(
    info: &BootInfo,
    location: DeviceFunction,
    vcpu: SlotHandle,
    vector: u8,
    what: &'static str,
) -> Result<Option<DeviceInterrupt>, String> {
    let (Some(msix), Some(vectors)) = (
        Msix::find(location),
        VirtioInterruptRegisters::find(location),
    ) else {
        return Ok(None);
    };
    let (me, _) = boot_cap(info, cap_kind::PARTITION, None)
        .ok_or_else(|| String::from("no partition capability"))?;
    let [raw, address, data] = partition_rt::hypercall(&Call::InterruptMessage { partition: me })
        .map_err(|e| format!("no message vector: {e:?}"))?;
    let slot = SlotHandle::from_raw(raw).map_err(|e| format!("{e:?}"))?;
    let undo = |why: String| {
        let _ = partition_rt::hypercall(&Call::CapDelete { slot });
        SLOT[usize::from(vector)].store(0, Ordering::Release);
        why
    };
    prepare(vector, slot, false, None);
    partition_rt::hypercall(&Call::InterruptBind {
        interrupt: slot,
        vcpu,
        vector,
    })
    .map_err(|e| undo(format!("binding the {what}'s message interrupt: {e:?}")))?;
    if !msix.set_entry(0, address, data as u32) {
        return Err(undo(String::from("its MSI-X table entry 0 stays masked")));
    }
    msix.enable();
    if !msix.enabled() {
        return Err(undo(String::from("MSI-X does not turn on")));
    }
    // Configuration changes stay without an interrupt; every queue on entry 0.
    vectors.set_config_vector(NO_VECTOR);
    for queue in 0..vectors.queues() {
        if vectors.set_queue_vector(queue, 0) != 0 {
            return Err(undo(format!("queue {queue} refuses MSI-X entry 0")));
        }
    }
    Ok(Some(DeviceInterrupt {
        vector,
        delivery: Delivery::Msix { vector: data as u8 },
    }))
}

/// The device's line: the root's capability for it, or a share of it
/// when another device holds the line (level-triggered lines only).
fn attach_line(
    info: &BootInfo,
    location: DeviceFunction,
    gsi: u32,
    vcpu: SlotHandle,
    vector: u8,
    what: &'static str,
) -> Result<DeviceInterrupt, String> {
    let (line, level) = boot_cap(info, cap_kind::INTERRUPT, Some(u64::from(gsi)))
        .ok_or_else(|| format!("no interrupt capability for the {what}'s line {gsi}"))?;
    let level = level & 1 != 0;
    let shared_with = line_taken(gsi);
    let slot = match shared_with {
        None => line,
        Some(other) if level => {
            let [raw, ..] = partition_rt::hypercall(&Call::InterruptShare { interrupt: line })
                .map_err(|e| format!("sharing GSI {gsi} with the {other}: {e:?}"))?;
            SlotHandle::from_raw(raw).map_err(|e| format!("{e:?}"))?
        }
        Some(other) => {
            return Err(format!(
                "GSI {gsi} is edge-triggered and the {other} holds it"
            ));
        }
    };
    let registers = VirtioInterruptRegisters::find(location)
        .ok_or_else(|| format!("the {what} has no virtio interrupt status register"))?;
    prepare(vector, slot, !level, Some(&registers));
    partition_rt::hypercall(&Call::InterruptBind {
        interrupt: slot,
        vcpu,
        vector,
    })
    .map_err(|e| format!("binding the {what}'s line {gsi}: {e:?}"))?;
    if shared_with.is_none()
        && let Some(free) = BOUND.lock().iter_mut().find(|b| b.is_none())
    {
        *free = Some((gsi, what));
    }
    Ok(DeviceInterrupt {
        vector,
        delivery: Delivery::Line {
            gsi,
            level,
            shared_with,
        },
    })
}
