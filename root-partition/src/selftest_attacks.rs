//! The root's test-only attack modes on the machine (`ipc::platform`): a
//! hostile root tries to reset or power off the machine behind the
//! microkernel, to write the hypervisor's memory with QEMU's fw_cfg DMA
//! engine, and to crash the microkernel with message interrupts on vectors
//! it does not use. Each attack prints what it tries and whether the
//! microkernel refused it; an attack that works usually prints nothing
//! more (the machine resets or powers off, or the microkernel dies).
//!
//! Also the root's side of the `Reset` call and of the PCI configuration
//! measurement (`bench=pci-config`).
//!
//! The bookkeeping, the power calls and the verdicts are the library's
//! (`root_partition::selftest::attacks`, host-tested against the kernel
//! core); what stays here is what only the machine answers: port I/O,
//! PCI configuration, the fw_cfg DMA engine and the HPET's registers.
//!
//! # Invariants
//! - Every attack prints one `RootAttack` line and counts once in the
//!   `RootAttacksDone` line (the library's `Tally`).
//! - What an attack changed when it was not refused is put back (a device
//!   register), so the run goes on as far as it can.

use crate::hal::dma::DevicePage;
use ipc::boot::BootInfo;
use ipc::hypercall::SlotHandle;
use ipc::platform::{
    BENCH_PCI_CONFIG, DMA_ATTACKS, PciConfigBench, RESET_ATTACKS, SELFTEST_ATTACK_DMA,
    SELFTEST_ATTACK_RESET, SELFTEST_RESET,
};
use partition_rt::arch::{inb, inl, outb, outl, outw};
use root_partition::selftest::attacks::{
    self, APIC_WINDOW, HPET_MESSAGES, dma_done, fsb_route, fw_cfg_descriptor, hpet_plan,
};
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};

use crate::hal::kernel::HwKernel;
use crate::hal::pci::PortCam;

macro_rules! println {
    ($($arg:tt)*) => {
        partition_rt::console::print_line(format_args!($($arg)*))
    };
}

/// The attack modes' tally (`root_partition::selftest::attacks::Tally`)
/// on the machine.
type Tally = attacks::Tally<'static, HwKernel>;

/// Runs the attack modes and the measurement the command line asks for.
pub fn run(info: &BootInfo) {
    if info.has_flag(BENCH_PCI_CONFIG) {
        println!("{}", pci_config_bench());
    }
    if info.has_flag(SELFTEST_ATTACK_RESET) {
        let mut tally = Tally::new(&HwKernel);
        reset_attacks(&mut tally);
        tally.done(RESET_ATTACKS);
    }
    if info.has_flag(SELFTEST_ATTACK_DMA) {
        let mut tally = Tally::new(&HwKernel);
        dma_attacks(info, &mut tally);
        tally.done(DMA_ATTACKS);
    }
    if info.has_flag(SELFTEST_RESET) {
        attacks::request_reset(&HwKernel, authority(info));
    }
}

/// The root's capability on itself (from the boot page).
pub fn authority(info: &BootInfo) -> Option<SlotHandle> {
    attacks::authority(info)
}

/// Ends the run through the microkernel's `PowerOff` call; if that is
/// refused, halts with interrupts off (which the microkernel takes for a
/// power-off too).
pub fn power_off(info: &BootInfo) -> ! {
    attacks::request_power_off(&HwKernel, authority(info));
    crate::hal::power_off()
}

/// The function on bus 0 with vendor and device id `ids` (vendor in bits 15:0), if any.
fn find_function(ids: u32) -> Option<DeviceFunction> {
    let cam = PortCam;
    (0..32u8)
        .flat_map(|device| (0..8u8).map(move |function| (device, function)))
        .find_map(|(device, function)| {
            let df = DeviceFunction {
                bus: 0,
                device,
                function,
            };
            (cam.read_word(df, 0) == ids).then_some(df)
        })
}

const PIIX4_PM: u32 = 0x7113_8086;
const PIIX3_IDE: u32 = 0x7010_8086;
/// SLP_EN with SLP_TYP 0: soft-off on QEMU's and Bochs's PIIX4.
const SLEEP_S5: u16 = 1 << 13;
/// Where the attack moves the PM block: a port range the root holds.
const MOVED_PM_BASE: u32 = 0x7000;

fn reset_attacks(t: &mut Tally) {
    let name = "keyboard controller reset (out 0x64, 0xfe)";
    t.start(name);
    outb(0x64, 0xfe);
    t.settle(50);
    t.outcome(name, true, format_args!("the machine is still running"));

    let name = "keyboard controller output port (0xd1, then 0xfe to 0x60)";
    t.start(name);
    outb(0x64, 0xd1);
    t.settle(1);
    outb(0x60, 0xfe);
    t.settle(50);
    t.outcome(name, true, format_args!("the machine is still running"));

    let name = "reset control register (out 0xcf9, 6)";
    t.start(name);
    outb(0xcf9, 0x02);
    outb(0xcf9, 0x06);
    t.settle(50);
    t.outcome(name, true, format_args!("the machine is still running"));

    let name = "reset control register in a word at 0xcf8 (0x0e00)";
    t.start(name);
    outw(0xcf8, 0x0e00);
    t.settle(50);
    t.outcome(name, true, format_args!("the machine is still running"));

    let cam = PortCam;
    let mut cam_mut = PortCam;
    let Some(pm) = find_function(PIIX4_PM) else {
        for name in [
            "ACPI sleep through PM1a",
            "PM base moved, then sleep there",
            "PM I/O switched off",
            "I/O BAR moved over the PM block",
        ] {
            t.outcome(
                name,
                false,
                format_args!("no PIIX4 power-management function to attack"),
            );
        }
        return;
    };
    let pm_base = cam.read_word(pm, 0x40) & 0xffc0;

    let name = "ACPI sleep through PM1a";
    t.start(name);
    outw(pm_base as u16 + 4, SLEEP_S5);
    t.settle(50);
    t.outcome(
        name,
        true,
        format_args!("PM1a control at {:#x}; still running", pm_base + 4),
    );

    let name = "PM base moved, then sleep there";
    t.start(name);
    cam_mut.write_word(pm, 0x40, MOVED_PM_BASE | 1);
    let moved = cam.read_word(pm, 0x40) & 0xffc0;
    outw(moved as u16 + 4, SLEEP_S5);
    t.settle(50);
    if moved != pm_base {
        cam_mut.write_word(pm, 0x40, pm_base | 1);
    }
    t.outcome(
        name,
        moved == pm_base,
        format_args!("PM base reads {moved:#x} after writing {MOVED_PM_BASE:#x}"),
    );

    let name = "PM I/O switched off";
    t.start(name);
    let misc = cam.read_word(pm, 0x80);
    cam_mut.write_word(pm, 0x80, misc & !1);
    let after = cam.read_word(pm, 0x80);
    if after != misc {
        cam_mut.write_word(pm, 0x80, misc);
    }
    t.outcome(
        name,
        after & 1 == 1,
        format_args!("PMREGMISC reads {:#x} after clearing bit 0", after & 0xff),
    );

    let name = "I/O BAR moved over the PM block";
    t.start(name);
    match find_function(PIIX3_IDE) {
        Some(ide) => {
            // BAR4: the IDE bus-master registers, an I/O BAR.
            let bar = cam.read_word(ide, 0x20);
            cam_mut.write_word(ide, 0x20, pm_base | 1);
            let after = cam.read_word(ide, 0x20);
            if after != bar {
                cam_mut.write_word(ide, 0x20, bar);
            }
            t.outcome(
                name,
                after == bar,
                format_args!("IDE BAR4 reads {after:#x} after writing {:#x}", pm_base | 1),
            );
        }
        None => t.outcome(name, false, format_args!("no PIIX3 IDE function to attack")),
    }
}

// QEMU's fw_cfg device (docs/specs/fw_cfg.rst in QEMU): selector, data
// and the DMA address register (big-endian, the low half starts it).
const FW_CFG_SELECTOR: u16 = 0x510;
const FW_CFG_DATA: u16 = 0x511;
const FW_CFG_DMA_HIGH: u16 = 0x514;
const FW_CFG_DMA_LOW: u16 = 0x518;
/// Item 0: the signature "QEMU"; item 1: the features (3 = traditional + DMA).
const FW_CFG_SIGNATURE: u16 = 0;
const FW_CFG_ID: u16 = 1;

/// fw_cfg's signature as the root reads it through the data port.
fn fw_cfg_signature() -> [u8; 4] {
    outw(FW_CFG_SELECTOR, FW_CFG_SIGNATURE);
    [
        inb(FW_CFG_DATA),
        inb(FW_CFG_DATA),
        inb(FW_CFG_DATA),
        inb(FW_CFG_DATA),
    ]
}

/// Programs one fw_cfg DMA transfer: `length` bytes of `item` written to
/// host-physical `target`; returns the control word the device left in
/// the descriptor (0 = done, bit 0 = error; unchanged if nothing ran).
fn fw_cfg_dma(descriptor: &mut DevicePage, item: u16, length: u32, target: u64) -> u32 {
    let bytes = fw_cfg_descriptor(item, length, target);
    let address = descriptor.address(0);
    descriptor.write(0, &bytes);
    outl(FW_CFG_DMA_HIGH, ((address >> 32) as u32).to_be());
    outl(FW_CFG_DMA_LOW, (address as u32).to_be());
    u32::from_be_bytes(descriptor.read4(0))
}

fn dma_attacks(info: &BootInfo, t: &mut Tally) {
    let mut page = DevicePage::new();
    let signature = fw_cfg_signature();
    let reachable = &signature == b"QEMU";
    let seen = u32::from_le_bytes(signature);

    let name = "fw_cfg DMA into the root's own memory";
    t.start(name);
    // The second half of the root's own DMA page.
    let own = page.address(2048);
    let control = fw_cfg_dma(&mut page, FW_CFG_SIGNATURE, 4, own);
    let landed = page.read4(2048);
    let wrote = &landed == b"QEMU";
    t.outcome(
        name,
        !wrote,
        format_args!(
            "signature reads {seen:#010x}; control word {control:#x}; buffer {landed:02x?}"
        ),
    );

    let target = attacks::dma_target(info);
    let name = "fw_cfg DMA into the hypervisor image";
    t.start(name);
    let control = fw_cfg_dma(&mut page, FW_CFG_SIGNATURE, 4, target);
    t.settle(10);
    let done = dma_done(reachable, control);
    t.outcome(
        name,
        !done,
        format_args!("\"QEMU\" to {target:#x}: control word {control:#x}"),
    );

    let name = "fw_cfg DMA of 3 to the local APIC (vector 3)";
    t.start(name);
    let control = fw_cfg_dma(&mut page, FW_CFG_ID, 4, APIC_WINDOW);
    t.settle(20);
    let done = dma_done(reachable, control);
    t.outcome(
        name,
        !done,
        format_args!("to {APIC_WINDOW:#x}: control word {control:#x}"),
    );

    let name = "HPET message interrupts on vectors 3, 14, 0x99, 0xee, 0xff and an NMI";
    t.start(name);
    match hpet_messages(t) {
        Some(sent) => t.outcome(
            name,
            true,
            format_args!("{sent} sent; the microkernel is still running"),
        ),
        None => t.outcome(name, false, format_args!("no HPET at {HPET_BASE:#x}")),
    }
}

// The HPET (IA-PC HPET specification 1.0a): timers whose interrupt is a
// write of a chosen value to a chosen address (FSB delivery) — a message
// interrupt the root's device makes, as a DMA write to the local APIC's
// window would.
const HPET_BASE: u64 = 0xfed0_0000;
const HPET_CAPABILITIES: u64 = 0x000;
const HPET_CONFIG: u64 = 0x010;
const HPET_COUNTER: u64 = 0x0f0;
const fn hpet_timer(n: u64, register: u64) -> u64 {
    0x100 + 0x20 * n + register
}
const TIMER_CONFIG: u64 = 0x0;
const TIMER_COMPARATOR: u64 = 0x8;
const TIMER_FSB_ROUTE: u64 = 0x10;
/// Timer configuration: interrupt enable (2) and FSB delivery (14).
const TIMER_ENABLE_FSB: u64 = (1 << 2) | (1 << 14);

/// Reads an HPET register: device memory the root's SLAT maps
/// (uncacheable), outside its RAM (all ones if refused).
fn hpet_read(register: u64) -> u64 {
    crate::hal::read_physical(HPET_BASE + register).unwrap_or(u64::MAX)
}

/// Writes an HPET register (the HPET is the root's device: the
/// microkernel does not use it).
fn hpet_write(register: u64, value: u64) {
    let _ = crate::hal::write_physical(HPET_BASE + register, value);
}

/// Sends the six message interrupts of [`HPET_MESSAGES`] through the
/// HPET's timers, each 5 ms ahead. Returns how many, or `None` without an
/// HPET.
fn hpet_messages(t: &Tally) -> Option<u32> {
    let (timers, ahead) = hpet_plan(hpet_read(HPET_CAPABILITIES))?;
    hpet_write(HPET_CONFIG, hpet_read(HPET_CONFIG) | 1);
    let mut sent = 0;
    for (timer, data) in HPET_MESSAGES {
        let timer = timer % timers;
        hpet_write(hpet_timer(timer, TIMER_CONFIG), 0);
        hpet_write(hpet_timer(timer, TIMER_FSB_ROUTE), fsb_route(data));
        let now = hpet_read(HPET_COUNTER);
        hpet_write(hpet_timer(timer, TIMER_COMPARATOR), now.wrapping_add(ahead));
        hpet_write(hpet_timer(timer, TIMER_CONFIG), TIMER_ENABLE_FSB);
        t.settle(30);
        hpet_write(hpet_timer(timer, TIMER_CONFIG), 0);
        sent += 1;
    }
    hpet_write(HPET_CONFIG, hpet_read(HPET_CONFIG) & !1);
    Some(sent)
}

/// Batches and reads per batch of the PCI configuration measurement.
const BATCHES: u32 = 20;
const READS: u32 = 200;

/// The cost of one configuration read (address write and data read, both
/// emulated by the microkernel) against two port accesses passed straight
/// through (the RTC's index and data ports): the cheapest batch of each.
fn pci_config_bench() -> PciConfigBench {
    let boot_accesses = crate::hal::pci::accesses();
    let host_bridge = (1 << 31) as u32;
    let mut emulated = u64::MAX;
    let mut direct = u64::MAX;
    for _ in 0..BATCHES {
        let start = partition_rt::rdtsc();
        for _ in 0..READS {
            outl(0xcf8, host_bridge);
            core::hint::black_box(inl(0xcfc));
        }
        emulated = emulated.min(partition_rt::rdtsc().wrapping_sub(start) / READS as u64);
        let start = partition_rt::rdtsc();
        for _ in 0..READS {
            outb(0x70, 0x0a);
            core::hint::black_box(inb(0x71));
        }
        direct = direct.min(partition_rt::rdtsc().wrapping_sub(start) / READS as u64);
    }
    PciConfigBench {
        emulated,
        direct,
        boot_accesses,
    }
}
