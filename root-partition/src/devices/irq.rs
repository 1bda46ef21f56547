//! A device's interrupt through the root's interrupt capabilities, and
//! the RTC device-interrupt self-test ([`rtc_test`]).
//!
//! A device's interrupt comes, in order of preference ([`attach`]):
//! - as MSI-X messages: the microkernel hands out a vector of its own and
//!   the message address and data (`InterruptMessage`); the root writes
//!   them into entry 0 of the device's MSI-X table and points every
//!   virtqueue at that entry;
//! - on its PCI interrupt line (register 0x3C), level-triggered on QEMU's
//!   `pc` machine (the MADT's overrides, which the boot page's interrupt
//!   capabilities carry): the first device on a line binds the root's
//!   capability for it, the next ones a share of it (`InterruptShare`),
//!   each with its own vector and acknowledge.
//!
//! A device on an edge-triggered line another device holds has no
//! interrupt ([`attach`] fails): an edge two devices raise can be lost.
//! The kernel command line word `pci-intx` skips MSI-X (to test lines).
//!
//! The device's registers (its MSI-X table, virtio's vector and interrupt
//! status registers) and the root's interrupt handlers are the binary's,
//! behind [`Device`] and [`Rtc`]; the handler's order of acknowledge and
//! status read is [`take`].

use alloc::format;
use alloc::string::String;
use core::fmt;

use ipc::boot::{BootInfo, cap_kind};
use ipc::hypercall::{Call, SlotHandle, Status};
use ipc::markers::{self, DeviceInterrupts};

use crate::hv::Kernel;
use crate::say;

/// "No vector" in virtio's vector registers.
pub const NO_VECTOR: u16 = 0xffff;

/// A device's interrupt registers and the root's handler for its vector,
/// as [`attach`] needs them (on the machine `virtio.rs` over `hal::pci`).
pub trait Device {
    /// Installs the root's handler for `vector`; false when it cannot.
    fn install_handler(&mut self, vector: u8) -> bool;
    /// Looks for the device's MSI-X table and virtio vector registers;
    /// false when it lacks either (then no other MSI-X method is called).
    fn find_msix(&mut self) -> bool;
    /// Writes MSI-X table entry `entry` (message address and data,
    /// unmasked); false when it stays masked or does not exist.
    fn set_msix_entry(&mut self, entry: u16, address: u64, data: u32) -> bool;
    /// Turns MSI-X on (the device stops using its line).
    fn enable_msix(&mut self);
    /// Whether MSI-X is on.
    fn msix_enabled(&mut self) -> bool;
    /// Queues the device has.
    fn queues(&mut self) -> u16;
    /// Sets the configuration-change vector; what the device kept.
    fn set_config_vector(&mut self, vector: u16) -> u16;
    /// Sets queue `queue`'s vector; what the device kept.
    fn set_queue_vector(&mut self, queue: u16, vector: u16) -> u16;
    /// Looks for the device's interrupt status register (which lowers
    /// its line when read); false when it has none.
    fn find_status(&mut self) -> bool;
    /// Sets up what the handler of `vector` needs before the interrupt is
    /// bound: the capability `slot` to acknowledge, whether the source is
    /// `edge`-triggered, and whether to read the status register found by
    /// [`Device::find_status`] (`status`, lines only).
    fn prepare(&mut self, vector: u8, slot: SlotHandle, edge: bool, status: bool);
    /// Undoes [`Device::prepare`] for `vector` (the handler does nothing).
    fn forget(&mut self, vector: u8);
}

/// The root's capability of `kind` in the boot page (the first one whose
/// first word is `a`, when given): its handle and second word.
pub fn boot_cap(info: &BootInfo, kind: u32, a: Option<u64>) -> Option<(SlotHandle, u64)> {
    info.caps()
        .iter()
        .find(|c| c.kind == kind && a.is_none_or(|a| c.a == a))
        .and_then(|c| Some((SlotHandle::from_raw(c.slot).ok()?, c.b)))
}

/// Lines bound so far (GSIs), and by what: the first device on a line
/// binds the root's capability, the next ones share it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lines {
    bound: [Option<(u32, &'static str)>; 8],
}

impl Lines {
    /// No line bound.
    pub const fn new() -> Self {
        Lines { bound: [None; 8] }
    }

    /// The device already bound to line `gsi`, if any.
    pub fn taken(&self, gsi: u32) -> Option<&'static str> {
        self.bound
            .iter()
            .flatten()
            .find(|(g, _)| *g == gsi)
            .map(|(_, what)| *what)
    }

    fn record(&mut self, gsi: u32, what: &'static str) {
        if let Some(free) = self.bound.iter_mut().find(|b| b.is_none()) {
            *free = Some((gsi, what));
        }
    }
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attached {
    /// The root vector it arrives on.
    pub vector: u8,
    /// How it comes.
    pub delivery: Delivery,
}

/// Gives the started device at `location` (line `gsi`) an interrupt on
/// `vector` of the root's vCPU: MSI-X when the device has it (and
/// `pci-intx` is not on the command line), else its line. Prints which.
/// `what` names the device in messages.
#[allow(clippy::too_many_arguments)]
pub fn attach<K: Kernel, D: Device>(
    k: &K,
    lines: &mut Lines,
    info: &BootInfo,
    device: &mut D,
    location: impl fmt::Display,
    gsi: u32,
    vector: u8,
    what: &'static str,
) -> Result<Attached, String> {
    let (vcpu, _) =
        boot_cap(info, cap_kind::VCPU, None).ok_or_else(|| String::from("no vCPU capability"))?;
    if !device.install_handler(vector) {
        return Err(format!("cannot install the {what}'s interrupt handler"));
    }
    let msix = if info.has_flag(markers::PCI_INTX) {
        None
    } else {
        match attach_msix(k, info, device, vcpu, vector, what) {
            Ok(found) => found,
            Err(e) => {
                say!(
                    k,
                    "root partition: {what} at {location}: no MSI-X ({e}); using its line"
                );
                None
            }
        }
    };
    let irq = match msix {
        Some(irq) => irq,
        None => attach_line(k, lines, info, device, gsi, vcpu, vector, what)?,
    };
    say!(
        k,
        "root partition: {what} at {location} interrupts on {}",
        irq.delivery
    );
    Ok(irq)
}

/// MSI-X: `Ok(None)` when the device has no MSI-X capability.
fn attach_msix<K: Kernel, D: Device>(
    k: &K,
    info: &BootInfo,
    device: &mut D,
    vcpu: SlotHandle,
    vector: u8,
    what: &'static str,
) -> Result<Option<Attached>, String> {
    if !device.find_msix() {
        return Ok(None);
    }
    let (me, _) = boot_cap(info, cap_kind::PARTITION, None)
        .ok_or_else(|| String::from("no partition capability"))?;
    let [raw, address, data] = k
        .call(&Call::InterruptMessage { partition: me })
        .map_err(|e| format!("no message vector: {e:?}"))?;
    let slot = SlotHandle::from_raw(raw).map_err(|e| format!("{e:?}"))?;
    let undo = |device: &mut D, why: String| {
        let _ = k.call(&Call::CapDelete { slot });
        device.forget(vector);
        why
    };
    device.prepare(vector, slot, false, false);
    if let Err(e) = k.call(&Call::InterruptBind {
        interrupt: slot,
        vcpu,
        vector,
    }) {
        return Err(undo(
            device,
            format!("binding the {what}'s message interrupt: {e:?}"),
        ));
    }
    if !device.set_msix_entry(0, address, data as u32) {
        return Err(undo(
            device,
            String::from("its MSI-X table entry 0 stays masked"),
        ));
    }
    device.enable_msix();
    if !device.msix_enabled() {
        return Err(undo(device, String::from("MSI-X does not turn on")));
    }
    // Configuration changes stay without an interrupt; every queue on entry 0.
    device.set_config_vector(NO_VECTOR);
    for queue in 0..device.queues() {
        if device.set_queue_vector(queue, 0) != 0 {
            return Err(undo(device, format!("queue {queue} refuses MSI-X entry 0")));
        }
    }
    Ok(Some(Attached {
        vector,
        delivery: Delivery::Msix { vector: data as u8 },
    }))
}

/// The device's line: the root's capability for it, or a share of it
/// when another device holds the line (level-triggered lines only).
#[allow(clippy::too_many_arguments)]
fn attach_line<K: Kernel, D: Device>(
    k: &K,
    lines: &mut Lines,
    info: &BootInfo,
    device: &mut D,
    gsi: u32,
    vcpu: SlotHandle,
    vector: u8,
    what: &'static str,
) -> Result<Attached, String> {
    let (line, level) = boot_cap(info, cap_kind::INTERRUPT, Some(u64::from(gsi)))
        .ok_or_else(|| format!("no interrupt capability for the {what}'s line {gsi}"))?;
    let level = level & 1 != 0;
    let shared_with = lines.taken(gsi);
    let slot = match shared_with {
        None => line,
        Some(other) if level => {
            let [raw, ..] = k
                .call(&Call::InterruptShare { interrupt: line })
                .map_err(|e| format!("sharing GSI {gsi} with the {other}: {e:?}"))?;
            SlotHandle::from_raw(raw).map_err(|e| format!("{e:?}"))?
        }
        Some(other) => {
            return Err(format!(
                "GSI {gsi} is edge-triggered and the {other} holds it"
            ));
        }
    };
    if !device.find_status() {
        return Err(format!(
            "the {what} has no virtio interrupt status register"
        ));
    }
    device.prepare(vector, slot, !level, true);
    k.call(&Call::InterruptBind {
        interrupt: slot,
        vcpu,
        vector,
    })
    .map_err(|e| format!("binding the {what}'s line {gsi}: {e:?}"))?;
    if shared_with.is_none() {
        lines.record(gsi, what);
    }
    Ok(Attached {
        vector,
        delivery: Delivery::Line {
            gsi,
            level,
            shared_with,
        },
    })
}

/// Takes a device interrupt whose capability is `slot`: reads the
/// device's interrupt status (`read_status`; it lowers a line) and
/// acknowledges the interrupt to the microkernel (which unmasks the line
/// once every device on it has, or raises a message that came meanwhile).
///
/// On a level-triggered line the status is read first: the line is low
/// at the unmask unless a device raised it again, and then it fires
/// again, so nothing is lost. On an edge-triggered line the unmask comes
/// first: an I/O APIC ignores an edge on a masked line, and a completion
/// between a status read and the unmask would leave the line high with no
/// edge to come; read after the unmask, the line is low again and every
/// later completion makes an edge. Messages cannot be lost (the kernel
/// keeps one pending until the acknowledge).
pub fn take<K: Kernel>(k: &K, slot: SlotHandle, edge: bool, read_status: impl FnOnce()) {
    let ack = || {
        let _ = k.call(&Call::Acknowledge { slot });
    };
    if edge {
        ack();
        read_status();
    } else {
        read_status();
        ack();
    }
}

/// The RTC's global system interrupt.
pub const RTC_GSI: u64 = 8;
/// The vector the root takes it on.
pub const RTC_VECTOR: u8 = 0x70;
/// Interrupts to take.
pub const RTC_WANTED: u32 = 3;

/// The RTC (CMOS ports 0x70/0x71) and the root's handler for its
/// interrupt, as [`rtc_test`] needs them (on the machine `devirq.rs`).
pub trait Rtc {
    /// Installs the root's handler (which counts) for `vector`; false
    /// when it cannot.
    fn install_handler(&mut self, vector: u8) -> bool;
    /// Reads RTC register `register` (NMIs stay off).
    fn read(&mut self, register: u8) -> u8;
    /// Writes RTC register `register`.
    fn write(&mut self, register: u8, value: u8);
    /// Lets the root's vCPU take interrupts.
    fn enable_interrupts(&mut self);
    /// Waits until the handler has counted `count` interrupts.
    fn wait_taken(&mut self, count: u32);
    /// Interrupts the handler counted.
    fn taken(&self) -> u32;
}

/// A real device interrupt through an interrupt capability: binds the
/// RTC's line ([`RTC_GSI`]) to [`RTC_VECTOR`] of the root's vCPU, turns on
/// the RTC's periodic interrupt, and takes [`RTC_WANTED`] of them,
/// acknowledging each; the result line or why it failed.
pub fn rtc_test<K: Kernel, R: Rtc>(
    k: &K,
    info: &BootInfo,
    rtc: &mut R,
) -> Result<DeviceInterrupts, Status> {
    let cap = |kind: u32, a: Option<u64>| {
        info.caps()
            .iter()
            .find(|c| c.kind == kind && a.is_none_or(|a| c.a == a))
            .ok_or(Status::InvalidSlot)
            .and_then(|c| SlotHandle::from_raw(c.slot))
    };
    let line = cap(cap_kind::INTERRUPT, Some(RTC_GSI))?;
    let vcpu = cap(cap_kind::VCPU, None)?;
    if !rtc.install_handler(RTC_VECTOR) {
        return Err(Status::InvalidArgument);
    }
    k.call(&Call::InterruptBind {
        interrupt: line,
        vcpu,
        vector: RTC_VECTOR,
    })?;
    // Periodic interrupt on (register B bit 6), at the default rate.
    let b = rtc.read(0x0b);
    rtc.write(0x0b, b | 0x40);
    let _ = rtc.read(0x0c);
    rtc.enable_interrupts();
    for seen in 1..=RTC_WANTED {
        rtc.wait_taken(seen);
        // Reading register C ends the RTC's interrupt; acknowledging unmasks the line.
        let _ = rtc.read(0x0c);
        k.call(&Call::Acknowledge { slot: line })?;
    }
    let b = rtc.read(0x0b);
    rtc.write(0x0b, b & !0x40);
    Ok(DeviceInterrupts {
        gsi: RTC_GSI as u32,
        count: rtc.taken(),
    })
}

#[cfg(test)]
mod tests;
