//! Ending a run: QEMU's isa-debug-exit device, then ACPI soft-off (S5);
//! and resetting the machine. The microkernel owns both: the ports and
//! chipset registers involved are kept from every partition (`root.rs`,
//! `microkernel::chipset`).

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use ipc::exit::{DEBUG_EXIT_PORT, ExitCode};

use super::{cpu, port};

/// PM1a control port from the FADT (0 = unknown).
static PM1A_CONTROL: AtomicU32 = AtomicU32::new(0);
/// SLP_TYPa for S5 from the DSDT.
static SLP_TYP_S5: AtomicU32 = AtomicU32::new(0);

/// Power off whatever the outcome (`poweroff-on-exit` on the command line).
static ALWAYS_POWER_OFF: AtomicBool = AtomicBool::new(false);

/// Makes every end of the run power off (not only a successful one).
pub fn power_off_on_every_exit() {
    ALWAYS_POWER_OFF.store(true, Ordering::Relaxed);
}

/// Records how to power off through ACPI.
pub fn set_acpi_soft_off(pm1a_control_port: u16, slp_typ: u8) {
    PM1A_CONTROL.store(pm1a_control_port as u32, Ordering::Relaxed);
    SLP_TYP_S5.store(slp_typ as u32, Ordering::Relaxed);
}

/// The PM1a control port, if known (the root is kept off it).
pub fn pm1a_control_port() -> Option<u16> {
    match PM1A_CONTROL.load(Ordering::Relaxed) {
        0 => None,
        p => Some(p as u16),
    }
}

/// Ends the run with `code`. Under the test harness QEMU exits at once; on
/// a machine without the debug device a successful run powers off through
/// ACPI and a failed one halts with its message on the console.
pub fn exit(code: ExitCode) -> ! {
    let (count, first) = super::idt::stray_interrupts();
    if count > 0 {
        super::serial::write_line_emergency(format_args!(
            "{}",
            ipc::platform::StrayInterrupts { count, first }
        ));
    }
    super::serial::write_line_emergency(format_args!("{}", ipc::markers::RunEnded(code)));
    // SAFETY: port 0xf4 is QEMU's isa-debug-exit when present and unused
    // otherwise; the write has no other effect.
    unsafe { port::outl(DEBUG_EXIT_PORT, code as u32) };
    if (code == ExitCode::Success || ALWAYS_POWER_OFF.load(Ordering::Relaxed))
        && let Some(port) = pm1a_control_port()
    {
        let slp_typ = SLP_TYP_S5.load(Ordering::Relaxed) as u16;
        // SAFETY: PM1a_CNT from the FADT; SLP_TYP | SLP_EN requests S5.
        unsafe { port::outw(port, (slp_typ << 10) | (1 << 13)) };
    }
    cpu::halt_forever()
}

/// The chipset's reset control register (PIIX3/PIIX4, ICH9).
const RESET_CONTROL: u16 = 0xcf9;
/// The keyboard controller's command and status port.
const KBC_COMMAND: u16 = 0x64;

/// Resets the machine: the reset control register (a hard reset), then
/// the keyboard controller's reset line, then a triple fault.
pub fn reset() -> ! {
    // SAFETY: 0xCF9 and 0x64 are kept from every partition; these writes
    // reset the machine, which is what the caller asked for.
    unsafe {
        port::outb(RESET_CONTROL, 0x02);
        port::outb(RESET_CONTROL, 0x06);
        for _ in 0..100_000 {
            if port::inb(KBC_COMMAND) & 0x02 == 0 {
                break;
            }
        }
        port::outb(KBC_COMMAND, 0xfe);
    }
    for _ in 0..1_000_000 {
        core::hint::spin_loop();
    }
    super::cpu::triple_fault()
}
