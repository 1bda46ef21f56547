//! Building the root partition: its SLAT (nested page tables mapping all
//! RAM and device ranges except the microkernel's), its initial guest page
//! tables, its ELF image, its boot-information page, its permission maps
//! and its first vCPU — then running it on the bootstrap processor.
//!
//! The root's guest-physical addresses equal host-physical ones. Its boot
//! area (page tables, boot page, stack, image) is taken from its own RAM.

use alloc::vec::Vec;
use ipc::boot::{BootCap, BootInfo, PARTITION_IMAGE_BASE, PhysRange};
use ipc::elf::Image;
use ipc::exit::ExitCode;
use ipc::markers::RootRunning;
use microkernel::kernel::{InitialCap, Kernel};
use microkernel::machine::Machine;
use microkernel::memory::map::{MemoryMap, RegionKind};
use microkernel::paging::{
    Access, CacheMode, EntryFormat, EptFormat, NptFormat, PageSize, PageTable, X86Format,
};
use microkernel::svm::vmcb::{LongModeStart, Vmcb};
use microkernel::{LARGE_PAGE_SIZE, PAGE_SIZE, align_down, align_up, chipset};

use crate::arch::machine::HwMachine;
use crate::arch::virt::{self, Backend};
use crate::arch::{self, ioapic, memory, power};
use crate::boot::BootData;
use crate::platform::Platform;

/// Pages reserved in the boot area for the root's initial page tables.
const TABLE_PAGES: u64 = 64;
/// Bytes of the root's shared window (`BootInfo::shared_window`).
const SHARED_WINDOW_BYTES: u64 = 1 << 30;
/// Pages of initial stack.
const STACK_PAGES: u64 = 16;

fn fail(args: core::fmt::Arguments<'_>) -> ! {
    kprintln!("cannot start the root partition: {args}");
    power::exit(ExitCode::Failure)
}

/// The ports the root partition may use directly: the RTC (its clock and
/// the device-interrupt self-test) and the PCI I/O space, where its
/// devices' I/O BARs are (from `chipset::PCI_IO_START` up), less the
/// ports the microkernel keeps there ([`kept_ports`]).
///
/// Every other legacy port stays with the microkernel: the PICs, the PIT
/// and its gate, the fast-reset port (0x92), the keyboard controller (its
/// reset command and output port), the ACPI PM block, QEMU's fw_cfg and
/// debug-exit devices, the serial console, the ISA DMA controllers. The
/// PCI configuration ports (0xCF8–0xCFF) are emulated for the root
/// (`microkernel::chipset`): the reset control register at 0xCF9 lies
/// inside the 32-bit address register, and a processor checks every byte
/// of a 4-byte access against the permission map, so the microkernel
/// keeps all eight and carries out the accesses itself.
const ROOT_PORTS: [(u16, u32); 2] = [(0x70, 2), (chipset::PCI_IO_START, 0x1_0000 - 0x1000)];

/// Ports the microkernel keeps even inside [`ROOT_PORTS`]: the ACPI PM1a
/// control block (where sleep is entered; at 0xB004 on Bochs) and QEMU's
/// debug-exit device.
fn kept_ports() -> Vec<(u32, u32)> {
    let mut kept = alloc::vec![(ipc::exit::DEBUG_EXIT_PORT as u32, 4)];
    if let Some(pm1a) = power::pm1a_control_port() {
        kept.push((pm1a as u32, 2));
    }
    kept.sort_unstable();
    kept
}

/// Device interrupt lines the root receives: every I/O APIC input except
/// the timer (0) and the cascade (2).
fn root_gsis() -> Vec<u32> {
    (1..ioapic::LINES).filter(|&g| g != 2).collect()
}

/// The port ranges the root may use: [`ROOT_PORTS`] less [`kept_ports`].
fn root_ports() -> Vec<(u16, u32)> {
    let kept = kept_ports();
    let mut ranges = Vec::new();
    for &(first, count) in &ROOT_PORTS {
        let (mut next, end) = (first as u32, first as u32 + count);
        for &(k, n) in &kept {
            if k + n <= next || k >= end {
                continue;
            }
            if k > next {
                ranges.push((next as u16, k - next));
            }
            next = next.max(k + n);
        }
        if next < end {
            ranges.push((next as u16, end - next));
        }
    }
    ranges
}

/// Builds the root partition and runs it; never returns.
pub fn start(boot: &BootData, platform: &Platform, cpus: u32) -> ! {
    let Some(module) = boot.module("root-partition") else {
        fail(format_args!("no `root-partition` boot module"));
    };
    let image = Image::parse(
        memory::module_bytes(module.start, module.end),
        PARTITION_IMAGE_BASE,
        u64::MAX,
    )
    .unwrap_or_else(|e| fail(format_args!("its ELF image is invalid: {e:?}")));
    let (span_start, span_end) = image.span();
    let image_base = align_down(span_start, PAGE_SIZE);
    let image_pages = (align_up(span_end, PAGE_SIZE).unwrap_or(u64::MAX) - image_base) / PAGE_SIZE;
    if image_pages > 64 * 1024 {
        fail(format_args!("its image spans more than 256 MiB"));
    }

    // The boot area: tables | boot page | stack | image.
    let area_bytes = (TABLE_PAGES + 1 + STACK_PAGES + image_pages) * PAGE_SIZE;
    let area_start = boot
        .map
        .find_usable_bottom_up(area_bytes, LARGE_PAGE_SIZE, 0x100_0000)
        .unwrap_or_else(|| {
            fail(format_args!(
                "no room for its boot area ({} KiB)",
                area_bytes >> 10
            ))
        });
    let area = (area_start, area_start + area_bytes);
    let boot_page = area_start + TABLE_PAGES * PAGE_SIZE;
    let stack_top = boot_page + (1 + STACK_PAGES) * PAGE_SIZE;
    let image_phys = stack_top;
    memory::zero_window(area, area.0, area_bytes);
    for seg in image.segments() {
        memory::write_window(
            area,
            image_phys + (seg.vaddr - image_base),
            image.file_bytes(seg),
        );
    }

    // Initial guest page tables: identity map of everything, plus the image
    // high, plus the shared window above `top` (not in the SLAT).
    let top = align_up(boot.map.usable_end().max(1 << 32), 1 << 30).unwrap_or(1 << 32);
    let window = PhysRange {
        start: top,
        end: top + SHARED_WINDOW_BYTES,
    };
    let mut next_table = area_start;
    let mut tables = memory::Tables::new(area_start, boot_page, || {
        let t = next_table;
        next_table += PAGE_SIZE;
        (t < boot_page).then_some(t)
    });
    let mut guest = PageTable::<X86Format>::new(&mut tables)
        .unwrap_or_else(|e| fail(format_args!("guest page tables: {e:?}")));
    guest
        .map(
            &mut tables,
            0,
            0,
            window.end,
            PageSize::Large,
            Access::RWX,
            CacheMode::WriteBack,
        )
        .and_then(|()| {
            guest.map(
                &mut tables,
                image_base,
                image_phys,
                image_pages * PAGE_SIZE,
                PageSize::Small,
                Access::RWX,
                CacheMode::WriteBack,
            )
        })
        .unwrap_or_else(|e| fail(format_args!("guest page tables: {e:?}")));

    let nested_cr3 = match virt::backend() {
        Backend::Svm => build_slat::<NptFormat>(&boot.map, platform, top),
        Backend::Vmx => build_slat::<EptFormat>(&boot.map, platform, top),
    };
    let ram: Vec<(u64, u64)> = boot
        .map
        .regions()
        .iter()
        .filter(|r| matches!(r.kind, RegionKind::Usable | RegionKind::Module))
        .map(|r| (r.start, r.len() / PAGE_SIZE))
        .collect();
    // VPIDs are 16 bits; QEMU's SVM offers 16 ASIDs.
    let asids = match virt::backend() {
        Backend::Svm => arch::cpu::virt_features().asids,
        Backend::Vmx => 256,
    };
    let mut kernel = Kernel::new(cpus, asids);
    kernel.child_debug_console = boot
        .cmdline
        .as_str()
        .split_whitespace()
        .any(|w| w == ipc::markers::DEBUG_CONSOLE);
    kernel.level_lines = ioapic::level_lines();
    let mut machine = HwMachine;
    let (root, mut caps) = kernel
        .create_root(&mut machine, nested_cr3, &ram, &root_gsis(), &root_ports())
        .unwrap_or_else(|e| fail(format_args!("creating its kernel objects: {e:?}")));
    // No I/O BAR of the root's may cover what the kernel keeps in the PCI I/O space.
    for (first, count) in kept_ports() {
        if first >= chipset::PCI_IO_START as u32 {
            kernel.pci_config.keep_ports(first as u16, count as u16);
        }
    }
    let maps = kernel
        .objects
        .partition(root)
        .map(|p| (p.permission_maps, p.asid))
        .unwrap_or(((0, 0), 1));
    let vmcb_pa = machine
        .vmcb_new()
        .unwrap_or_else(|_| fail(format_args!("no memory for its VMCB")));
    let vmcb: &mut Vmcb = machine.vmcb(vmcb_pa);
    vmcb.init_long_mode(&LongModeStart {
        cr3: guest.root(),
        rip: image.entry,
        rsp: stack_top - 8,
        asid: maps.1,
        nested_cr3,
        iopm: maps.0.0,
        msrpm: maps.0.1,
    });
    let (vcpu, vcpu_cap) = kernel
        .create_boot_vcpu(root, vmcb_pa, 0)
        .unwrap_or_else(|e| fail(format_args!("its vCPU: {e:?}")));
    caps.push(vcpu_cap);
    if let Some(v) = kernel.objects.vcpu_mut(vcpu) {
        v.regs.rdi = boot_page;
    }
    let mut info = boot_info(boot, platform, cpus, (area_start, area.1), &caps);
    info.shared_window = window;
    memory::write_window(area, boot_page, &info.to_page());
    kprintln!(
        "root partition: image {:#x}..{:#x} at {:#x}, entry {:#x}, boot page {:#x}, {} capabilities",
        span_start,
        span_end,
        image_phys,
        image.entry,
        boot_page,
        caps.len()
    );
    kprintln!(
        "{}",
        RootRunning {
            backend: virt::backend().name(),
            slat: virt::backend().slat()
        }
    );
    *crate::run::KERNEL.lock() = Some(kernel);
    crate::run::processor_loop(0)
}

/// Fills the boot-information page (see `docs/boot.md`).
fn boot_info(
    boot: &BootData,
    platform: &Platform,
    cpus: u32,
    area: (u64, u64),
    caps: &[InitialCap],
) -> BootInfo {
    let mut info = BootInfo::new();
    info.cpu_count = cpus;
    info.backend = virt::backend().boot_code();
    info.tsc_khz = arch::apic::tsc_khz();
    if let Some((revision, table)) = platform.acpi {
        info.acpi_revision = revision as u32;
        info.acpi_root_table = table;
    }
    info.hypervisor_image = PhysRange {
        start: boot.kernel_image.0,
        end: boot.kernel_image.1,
    };
    if let Some(child) = boot.module("child-runtime") {
        info.child_image = PhysRange {
            start: child.start,
            end: child.end,
        };
    }
    if let Some(config) = boot.module("boot-config") {
        info.config = PhysRange {
            start: config.start,
            end: config.end,
        };
    }
    info.boot_area = PhysRange {
        start: area.0,
        end: area.1,
    };
    info.set_cmdline(boot.cmdline.as_str());
    for cap in caps {
        let kind = cap.kind.cap_kind();
        if !info.push_cap(BootCap {
            slot: cap.slot.raw(),
            kind,
            a: cap.a,
            b: cap.b,
        }) {
            kprintln!(
                "root partition: boot page full, capability in slot {} not listed",
                cap.slot.index
            );
        }
    }
    for r in boot.map.regions() {
        let range = PhysRange {
            start: r.start,
            end: r.end,
        };
        let ok = match r.kind {
            RegionKind::Usable | RegionKind::Module => info.push_memory(range),
            RegionKind::Hypervisor => info.push_reserved(range),
            _ => true,
        };
        if !ok {
            kprintln!(
                "root partition: boot page full, range {:#x}..{:#x} not listed",
                r.start,
                r.end
            );
        }
    }
    info
}

/// Whether the root may touch `addr`: everything except the microkernel's
/// RAM, the local APIC and the I/O APICs.
fn root_may_access(map: &MemoryMap, platform: &Platform, addr: u64) -> bool {
    let page = align_down(addr, PAGE_SIZE);
    map.kind_at(addr) != Some(RegionKind::Hypervisor)
        && page != arch::apic::base()
        && !platform.ioapics().contains(&page)
}

fn cache_mode(map: &MemoryMap, addr: u64) -> CacheMode {
    match map.kind_at(addr) {
        None | Some(RegionKind::Reserved) => CacheMode::Uncacheable,
        Some(_) => CacheMode::WriteBack,
    }
}

/// Builds the root's nested page tables over `[0, top)`: 2 MiB pages where
/// a whole chunk is uniform, 4 KiB pages where a boundary falls inside.
fn build_slat<F: EntryFormat>(map: &MemoryMap, platform: &Platform, top: u64) -> u64 {
    let mut mem = memory::pool_tables();
    let mut npt =
        PageTable::<F>::new(&mut mem).unwrap_or_else(|e| fail(format_args!("SLAT: {e:?}")));
    let excluded_page = |p: u64| p == arch::apic::base() || platform.ioapics().contains(&p);
    let boundary_inside = |start: u64, end: u64| {
        map.regions()
            .iter()
            .any(|r| (r.start > start && r.start < end) || (r.end > start && r.end < end))
            || (start..end).contains(&arch::apic::base())
            || platform
                .ioapics()
                .iter()
                .any(|&p| (start..end).contains(&p))
    };
    let mut chunk = 0;
    while chunk < top {
        let end = chunk + LARGE_PAGE_SIZE;
        let result = if !boundary_inside(chunk, end) && !excluded_page(chunk) {
            if root_may_access(map, platform, chunk) {
                npt.map(
                    &mut mem,
                    chunk,
                    chunk,
                    LARGE_PAGE_SIZE,
                    PageSize::Large,
                    Access::RWX,
                    cache_mode(map, chunk),
                )
            } else {
                Ok(())
            }
        } else {
            let mut page = chunk;
            let mut r = Ok(());
            while page < end && r.is_ok() {
                if root_may_access(map, platform, page) {
                    r = npt.map(
                        &mut mem,
                        page,
                        page,
                        PAGE_SIZE,
                        PageSize::Small,
                        Access::RWX,
                        cache_mode(map, page),
                    );
                }
                page += PAGE_SIZE;
            }
            r
        };
        if let Err(e) = result {
            fail(format_args!("NPT at {chunk:#x}: {e:?}"));
        }
        chunk = end;
    }
    npt.root()
}
