//! The bootstrap processor's path from GRUB to the root partition.
//!
//! Order matters: console first, then refuse early on a processor without
//! SVM+NPT, then memory (map, pool, page tables), ACPI, every processor,
//! and finally the root partition.

use ipc::exit::ExitCode;
use ipc::markers;
use microkernel::memory::map::{MemoryMap, RegionKind};
use microkernel::{LARGE_PAGE_SIZE, align_up};
use multiboot2::MemoryAreaType;

use crate::arch::{self, cpu, memory, multiboot, power};
use crate::{cpus, platform, root};

unsafe extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// A short string copied out of the boot information.
#[derive(Clone, Copy, Debug)]
pub struct Text<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    /// Copies `s`, cut at `N` bytes on a character boundary.
    pub fn new(s: &str) -> Self {
        let mut len = s.len().min(N);
        while !s.is_char_boundary(len) {
            len -= 1;
        }
        let mut bytes = [0; N];
        bytes[..len].copy_from_slice(&s.as_bytes()[..len]);
        Text { bytes, len }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

/// A boot module: its physical range and GRUB command line.
#[derive(Clone, Copy, Debug)]
pub struct Module {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// The name given on GRUB's `module2` line.
    pub name: Text<64>,
}

/// Most modules the kernel looks at.
pub const MAX_MODULES: usize = 8;

/// What the boot loader told us, in our own types.
pub struct BootData {
    /// The memory map, with the kernel's and the modules' ranges marked.
    pub map: MemoryMap,
    /// Boot modules.
    pub modules: [Option<Module>; MAX_MODULES],
    /// Kernel command line.
    pub cmdline: Text<{ ipc::boot::MAX_CMDLINE }>,
    /// ACPI revision and RSDT/XSDT address.
    pub acpi: Option<(u8, u64)>,
    /// The kernel image's physical range.
    pub kernel_image: (u64, u64),
}

impl BootData {
    /// The module whose name is `name`.
    pub fn module(&self, name: &str) -> Option<Module> {
        self.modules
            .iter()
            .flatten()
            .copied()
            .find(|m| m.name.as_str() == name)
    }
}

fn fail(args: core::fmt::Arguments<'_>) -> ! {
    kprintln!("{args}");
    power::exit(ExitCode::Failure)
}

fn kind_of(typ: MemoryAreaType) -> RegionKind {
    match typ {
        MemoryAreaType::Available => RegionKind::Usable,
        MemoryAreaType::AcpiAvailable => RegionKind::AcpiReclaimable,
        MemoryAreaType::ReservedHibernate => RegionKind::AcpiNvs,
        MemoryAreaType::Defective => RegionKind::Bad,
        _ => RegionKind::Reserved,
    }
}

/// Entered from the 32-bit boot code on the bootstrap processor.
#[unsafe(no_mangle)]
extern "C" fn kernel_main(magic: u32, info: u64) -> ! {
    arch::serial::init();
    kprintln!(
        "{} {} starting",
        markers::KERNEL_BANNER,
        env!("CARGO_PKG_VERSION")
    );
    if magic != multiboot::BOOTLOADER_MAGIC {
        fail(format_args!(
            "refusing to start: not loaded by a multiboot2 boot loader (magic {magic:#x})"
        ));
    }
    check_virtualization();

    let (mut boot, trampoline) = read_boot_information(info);
    let (pool_base, pool_size) = take_pool(&mut boot.map);
    let top = align_up(boot.map.usable_end().max(1 << 32), LARGE_PAGE_SIZE).unwrap_or(1 << 32);
    let map = boot.map.clone();
    let is_ram = |at| !matches!(map.kind_at(at), None | Some(RegionKind::Reserved));
    let cr3 = match memory::init_kernel_tables(top, is_ram, cpu::virt_features().nx) {
        Ok(cr3) => cr3,
        Err(memory::KernelTablesError::NoExecuteDisable) => {
            fail(format_args!("{}", markers::NO_EXECUTE_DISABLE))
        }
        Err(e) => fail(format_args!("building the kernel page tables failed: {e}")),
    };
    check_own_mappings(top);
    kprintln!(
        "memory: {} MiB usable for partitions, microkernel pool {} MiB at {:#x}, identity map up to {:#x}",
        boot.map.total(RegionKind::Usable) >> 20,
        pool_size >> 20,
        pool_base,
        top
    );

    // The kernel heap: 1/8 of the pool, at least what every object the
    // quotas allow needs (`kernel::MIN_HEAP_BYTES`).
    let heap_bytes = ((pool_size / 8) as usize).max(microkernel::kernel::MIN_HEAP_BYTES);
    let Some(heap) = memory::alloc_frames(heap_bytes / 4096, 4096) else {
        fail(format_args!(
            "refusing to start: no memory for the kernel heap"
        ));
    };
    crate::arch::heap::init(heap, heap_bytes);
    memory::set_hypervisor_ranges([
        (0, 0x1000),
        (trampoline, trampoline + 0x1000),
        boot.kernel_image,
        (pool_base, pool_base + pool_size),
    ]);

    let platform = platform::discover(boot.acpi);
    if let Some(&base) = platform.ioapics().first() {
        crate::arch::ioapic::init(base);
        for o in platform.overrides() {
            crate::arch::ioapic::configure(o.gsi, o.level(), o.active_low());
            kprintln!(
                "ioapic: ISA IRQ {} on GSI {}, {}-triggered, active-{} (MADT override)",
                o.irq,
                o.gsi,
                if o.level() { "level" } else { "edge" },
                if o.active_low() { "low" } else { "high" }
            );
        }
    }
    let online = cpus::bring_up(&platform, cr3, trampoline);
    kprintln!("{}", markers::AllCpusOnline(online));
    selftest_write_kernel_text(&boot);
    root::start(&boot, &platform, online)
}

/// Checks the page tables just loaded against the W^X decision and says so.
fn check_own_mappings(top: u64) {
    if let Err(e) = memory::verify_kernel_tables(top) {
        fail(format_args!(
            "refusing to start: the kernel's own mappings are not W^X: {e}"
        ));
    }
    kprintln!("{}", markers::KERNEL_MAPPED_WX);
    let layout = memory::image_layout();
    kprintln!(
        "memory: code {:#x}-{:#x}, read-only {:#x}-{:#x}, data {:#x}-{:#x}",
        layout.text.0,
        layout.text.1,
        layout.rodata.0,
        layout.rodata.1,
        layout.data.0,
        layout.data.1
    );
}

/// Under `selftest=write-kernel-text` (once this processor's exception
/// handlers are in place): writes to the kernel's own code, which must
/// fault; the page-fault handler reports it and stops the machine.
fn selftest_write_kernel_text(boot: &BootData) {
    if boot
        .cmdline
        .as_str()
        .split_whitespace()
        .any(|w| w == markers::SELFTEST_WRITE_KERNEL_TEXT)
    {
        kprintln!("{}", markers::SELFTEST_WRITING_KERNEL_TEXT);
        let target = memory::image_layout().text.0;
        // SAFETY: the store is meant to fault (the page is read + execute
        // and CR0.WP is on) and the page-fault handler stops the machine;
        // were it to succeed, the byte (INT3) would land at the start of
        // .text, and the next line stops the machine anyway.
        unsafe { core::arch::asm!("mov byte ptr [{}], 0xcc", in(reg) target, options(nostack)) };
        fail(format_args!(
            "selftest: the write to the kernel's code at {target:#x} did not fault"
        ));
    }
}

/// Refuses to go on without hardware virtualization the kernel can use.
fn check_virtualization() {
    use crate::arch::virt::{self, Backend};
    let features = cpu::virt_features();
    if features.svm {
        if arch::svm::disabled_by_firmware() {
            fail(format_args!("{}", markers::SVM_DISABLED));
        }
        if !features.npt {
            fail(format_args!("{}", markers::NO_NESTED_PAGING));
        }
        virt::select(Backend::Svm);
        kprintln!(
            "virtualization: AMD SVM with nested paging, {} ASIDs",
            features.asids
        );
    } else if features.vmx {
        if !arch::vmx::has_ept() {
            fail(format_args!("{}", markers::NO_EPT));
        }
        virt::select(Backend::Vmx);
        kprintln!("virtualization: Intel VMX with EPT and VPID");
    } else {
        fail(format_args!("{}", markers::NO_VIRTUALIZATION));
    }
}

/// Reads the multiboot2 information into [`BootData`] and picks the page
/// below 1 MiB that application processors start in.
fn read_boot_information(info: u64) -> (BootData, u64) {
    let Some(mbi) = multiboot::load(info) else {
        fail(format_args!(
            "refusing to start: unreadable multiboot2 boot information at {info:#x}"
        ));
    };
    let mut map = MemoryMap::new();
    let Some(areas) = mbi.memory_map_tag() else {
        fail(format_args!(
            "refusing to start: the boot loader gave no memory map"
        ));
    };
    for area in areas.memory_areas() {
        if map
            .add(area.start_address(), area.size(), kind_of(area.typ()))
            .is_err()
        {
            fail(format_args!(
                "refusing to start: the memory map has too many regions"
            ));
        }
    }
    // SAFETY: only the addresses of the linker symbols are taken.
    let kernel_image = unsafe {
        (
            &__kernel_start as *const u8 as u64,
            &__kernel_end as *const u8 as u64,
        )
    };
    let mut reserve = |start: u64, end: u64, kind: RegionKind| {
        if map.reserve(start, end, kind).is_err() {
            fail(format_args!(
                "refusing to start: the memory map has too many regions"
            ));
        }
    };
    // Page 0 (real-mode interrupt table) and the kernel image stay with the kernel.
    reserve(0, 0x1000, RegionKind::Hypervisor);
    reserve(kernel_image.0, kernel_image.1, RegionKind::Hypervisor);
    // Boot information and modules are read later; keep them from any allocation.
    reserve(
        mbi.start_address() as u64,
        mbi.end_address() as u64,
        RegionKind::Module,
    );
    let mut modules = [None; MAX_MODULES];
    for (slot, module) in modules.iter_mut().zip(mbi.module_tags()) {
        let (start, end) = (module.start_address() as u64, module.end_address() as u64);
        reserve(start, end, RegionKind::Module);
        *slot = Some(Module {
            start,
            end,
            name: Text::new(module.cmdline().unwrap_or("")),
        });
    }
    // The AP trampoline page (after the modules are marked, so it is never one): usable RAM below 1 MiB, as high as possible
    // below the EBDA, never page 0.
    let trampoline = map
        .find_usable_top_down(4096, 4096, 0x1000, 0x9_f000)
        .unwrap_or_else(|| {
            fail(format_args!(
                "refusing to start: no free page below 1 MiB for processor start-up"
            ))
        });

    if map
        .reserve(trampoline, trampoline + 0x1000, RegionKind::Hypervisor)
        .is_err()
    {
        fail(format_args!(
            "refusing to start: the memory map has too many regions"
        ));
    }
    let acpi = match (mbi.rsdp_v2_tag(), mbi.rsdp_v1_tag()) {
        (Some(v2), _) if v2.checksum_is_valid() => {
            Some((v2.revision().max(2), v2.xsdt_address() as u64))
        }
        (_, Some(v1)) if v1.checksum_is_valid() => Some((0, v1.rsdt_address() as u64)),
        _ => None,
    };
    let cmdline = Text::new(
        mbi.command_line_tag()
            .and_then(|t| t.cmdline().ok())
            .unwrap_or(""),
    );
    kprintln!("command line: {:?}", cmdline.as_str());
    if cmdline
        .as_str()
        .split_whitespace()
        .any(|w| w == ipc::markers::POWEROFF_ON_EXIT)
    {
        crate::arch::power::power_off_on_every_exit();
    }
    (
        BootData {
            map,
            modules,
            cmdline,
            acpi,
            kernel_image,
        },
        trampoline,
    )
}

/// Takes the microkernel's frame pool out of usable RAM: 1/16 of it, between
/// 16 and 256 MiB, below 4 GiB (processor start-up loads CR3 in 32-bit code).
fn take_pool(map: &mut MemoryMap) -> (u64, u64) {
    let usable = map.total(RegionKind::Usable);
    let size = (usable / 16).clamp(16 << 20, 256 << 20) & !(LARGE_PAGE_SIZE - 1);
    let Some(base) = map.find_usable_top_down(size, LARGE_PAGE_SIZE, 0x100_0000, 1 << 32) else {
        fail(format_args!(
            "refusing to start: no {} MiB of RAM below 4 GiB for the microkernel",
            size >> 20
        ));
    };
    if map
        .reserve(base, base + size, RegionKind::Hypervisor)
        .is_err()
    {
        fail(format_args!(
            "refusing to start: the memory map has too many regions"
        ));
    }
    if let Err(e) = memory::init_pool(base, (size / 4096) as usize) {
        fail(format_args!("refusing to start: frame pool: {e:?}"));
    }
    (base, size)
}
