//! A real device interrupt through an interrupt capability: the root binds
//! the RTC's line (GSI 8) to a vector of its vCPU, turns on the RTC's
//! periodic interrupt, and takes a few of them, acknowledging each.

use core::sync::atomic::{AtomicU32, Ordering};

use ipc::boot::{BootInfo, cap_kind};
use ipc::hypercall::{Call, SlotHandle, Status};
use ipc::markers::DeviceInterrupts;

use crate::hal;

/// The RTC's global system interrupt.
const RTC_GSI: u64 = 8;
/// The vector the root takes it on.
const VECTOR: u8 = 0x70;
/// Interrupts to take.
const WANTED: u32 = 3;

static TAKEN: AtomicU32 = AtomicU32::new(0);

fn on_interrupt(_vector: u8) {
    TAKEN.fetch_add(1, Ordering::AcqRel);
}

fn rtc_read(register: u8) -> u8 {
    hal::outb(0x70, register | 0x80);
    hal::inb(0x71)
}

fn rtc_write(register: u8, value: u8) {
    hal::outb(0x70, register | 0x80);
    hal::outb(0x71, value);
}

/// Runs the test; the result line or why it failed.
pub fn run(info: &BootInfo) -> Result<DeviceInterrupts, Status> {
    let cap = |kind: u32, a: Option<u64>| {
        info.caps()
            .iter()
            .find(|c| c.kind == kind && a.is_none_or(|a| c.a == a))
            .ok_or(Status::InvalidSlot)
            .and_then(|c| SlotHandle::from_raw(c.slot))
    };
    let line = cap(cap_kind::INTERRUPT, Some(RTC_GSI))?;
    let vcpu = cap(cap_kind::VCPU, None)?;
    partition_rt::set_interrupt_handler(VECTOR, on_interrupt)
        .map_err(|_| Status::InvalidArgument)?;
    partition_rt::hypercall(&Call::InterruptBind {
        interrupt: line,
        vcpu,
        vector: VECTOR,
    })?;
    // Periodic interrupt on (register B bit 6), at the default rate.
    rtc_write(0x0b, rtc_read(0x0b) | 0x40);
    let _ = rtc_read(0x0c);
    partition_rt::enable_interrupts();
    for seen in 1..=WANTED {
        partition_rt::wait_until(|| TAKEN.load(Ordering::Acquire) >= seen);
        // Reading register C ends the RTC's interrupt; acknowledging unmasks the line.
        let _ = rtc_read(0x0c);
        partition_rt::hypercall(&Call::Acknowledge { slot: line })?;
    }
    rtc_write(0x0b, rtc_read(0x0b) & !0x40);
    Ok(DeviceInterrupts {
        gsi: RTC_GSI as u32,
        count: TAKEN.load(Ordering::Acquire),
    })
}
