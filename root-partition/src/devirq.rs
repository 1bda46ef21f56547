//! A real device interrupt through an interrupt capability: the root binds
//! the RTC's line (GSI 8) to a vector of its vCPU, turns on the RTC's
//! periodic interrupt, and takes a few of them, acknowledging each
//! (`root_partition::devices::irq::rtc_test`). Here: the RTC's ports and
//! the handler's count.

use core::sync::atomic::{AtomicU32, Ordering};

use ipc::boot::BootInfo;
use ipc::hypercall::Status;
use ipc::markers::DeviceInterrupts;
use root_partition::devices::irq::{self, Rtc};

use crate::hal;
use crate::hal::kernel::HwKernel;

static TAKEN: AtomicU32 = AtomicU32::new(0);

fn on_interrupt(_vector: u8) {
    TAKEN.fetch_add(1, Ordering::AcqRel);
}

/// The RTC behind CMOS ports 0x70/0x71.
struct Cmos;

impl Rtc for Cmos {
    fn install_handler(&mut self, vector: u8) -> bool {
        partition_rt::set_interrupt_handler(vector, on_interrupt).is_ok()
    }
    fn read(&mut self, register: u8) -> u8 {
        hal::outb(0x70, register | 0x80);
        hal::inb(0x71)
    }
    fn write(&mut self, register: u8, value: u8) {
        hal::outb(0x70, register | 0x80);
        hal::outb(0x71, value);
    }
    fn enable_interrupts(&mut self) {
        partition_rt::enable_interrupts();
    }
    fn wait_taken(&mut self, count: u32) {
        partition_rt::wait_until(|| TAKEN.load(Ordering::Acquire) >= count);
    }
    fn taken(&self) -> u32 {
        TAKEN.load(Ordering::Acquire)
    }
}

/// Runs the test; the result line or why it failed.
pub fn run(info: &BootInfo) -> Result<DeviceInterrupts, Status> {
    irq::rtc_test(&HwKernel, info, &mut Cmos)
}
