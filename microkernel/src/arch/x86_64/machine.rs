//! The hardware behind the kernel core's [`Machine`] trait: nested page
//! tables in pool frames, physical pages through the identity map, VMCBs
//! and permission maps in pool frames, the serial console, and IPIs.

use ipc::hypercall::Status;
use microkernel::machine::Machine;
use microkernel::paging::{
    Access, CacheMode, EntryFormat, EptFormat, NptFormat, PageSize, PageTable,
};
use microkernel::svm::permissions::{self, IOPM_BYTES, MSRPM_BYTES, PASSTHROUGH_MSRS};
use microkernel::svm::vmcb::Vmcb;

use super::virt::{self, Backend};
use super::{apic, cpu, idt, memory, serial};

/// The machine the microkernel runs on.
pub struct HwMachine;

/// Runs `$body` with `$table` bound to the SLAT at `$root` in the backend's format.
macro_rules! with_slat {
    ($root:expr, |$table:ident| $body:expr) => {
        match virt::backend() {
            Backend::Svm => {
                // Some bodies only read the tables.
                #[allow(unused_mut)]
                let mut $table = PageTable::<NptFormat>::from_root($root);
                $body
            }
            Backend::Vmx => {
                // Some bodies only read the tables.
                #[allow(unused_mut)]
                let mut $table = PageTable::<EptFormat>::from_root($root);
                $body
            }
        }
    };
}

fn new_slat<F: EntryFormat>() -> Result<u64, Status> {
    let mut mem = memory::pool_tables();
    PageTable::<F>::new(&mut mem)
        .map(|t| t.root())
        .map_err(|_| Status::OutOfMemory)
}

fn map_pages<F: EntryFormat>(
    table: &mut PageTable<F>,
    gpa: u64,
    hpa: u64,
    pages: u64,
    access: Access,
) -> Result<(), Status> {
    let mut mem = memory::pool_tables();
    for i in 0..pages {
        let r = table.map(
            &mut mem,
            gpa + i * 4096,
            hpa + i * 4096,
            4096,
            PageSize::Small,
            access,
            CacheMode::WriteBack,
        );
        if r.is_err() {
            let _ = table.unmap_range(&mut mem, gpa, i * 4096);
            return Err(Status::OutOfMemory);
        }
    }
    Ok(())
}

fn free_frames(addr: u64, count: usize) {
    if let Some(pool) = memory::POOL.lock().as_mut() {
        let _ = pool.free(addr, count);
    }
}

impl Machine for HwMachine {
    fn slat_new(&mut self) -> Result<u64, Status> {
        match virt::backend() {
            Backend::Svm => new_slat::<NptFormat>(),
            Backend::Vmx => new_slat::<EptFormat>(),
        }
    }

    fn slat_map(
        &mut self,
        root: u64,
        gpa: u64,
        hpa: u64,
        pages: u64,
        access: Access,
    ) -> Result<(), Status> {
        with_slat!(root, |table| map_pages(&mut table, gpa, hpa, pages, access))
    }

    fn slat_unmap(&mut self, root: u64, gpa: u64, pages: u64) -> Result<(), Status> {
        let mut mem = memory::pool_tables();
        with_slat!(root, |table| table
            .unmap_range(&mut mem, gpa, pages * 4096)
            .map_err(|_| Status::OutOfMemory))
    }

    fn slat_translate(&self, root: u64, gpa: u64) -> Option<(u64, Access)> {
        let mem = memory::pool_tables();
        with_slat!(root, |table| table
            .translate(&mem, gpa)
            .map(|t| (t.phys, t.access)))
    }

    fn slat_take_dirty(&mut self, root: u64, gpa: u64) -> bool {
        let mut mem = memory::pool_tables();
        with_slat!(root, |table| table.take_dirty(&mut mem, gpa))
    }

    fn slat_free(&mut self, root: u64) {
        let mem = memory::pool_tables();
        let tables = with_slat!(root, |table| table.tables(&mem));
        for table in tables {
            free_frames(table, 1);
        }
    }

    fn copy_page(&mut self, dst: u64, src: u64) {
        memory::copy_partition_page(dst, src);
    }

    fn write_bytes(&mut self, dst: u64, bytes: &[u8]) {
        memory::write_partition_bytes(dst, bytes);
    }

    fn read_bytes(&self, src: u64, out: &mut [u8]) {
        memory::read_partition_bytes(src, out);
    }

    fn vmcb_new(&mut self) -> Result<u64, Status> {
        memory::alloc_frames(virt::context_pages(), 4096).ok_or(Status::OutOfMemory)
    }

    fn vmcb(&mut self, hpa: u64) -> &mut Vmcb {
        memory::vmcb_at(hpa)
    }

    fn vmcb_free(&mut self, hpa: u64) {
        free_frames(hpa, virt::context_pages());
    }

    fn permission_maps_new(&mut self) -> Result<(u64, u64), Status> {
        let iopm = memory::alloc_frames(IOPM_BYTES / 4096, 4096).ok_or(Status::OutOfMemory)?;
        let Some(msrpm) = memory::alloc_frames(MSRPM_BYTES / 4096, 4096) else {
            free_frames(iopm, IOPM_BYTES / 4096);
            return Err(Status::OutOfMemory);
        };
        self.iopm(iopm).fill(0xff);
        let map = self.msrpm(msrpm);
        map.fill(0xff);
        match virt::backend() {
            Backend::Svm => {
                for msr in PASSTHROUGH_MSRS {
                    permissions::pass_msr(map, msr);
                }
            }
            // VMX MSR bitmap (first 4 KiB): read-low, read-high, write-low,
            // write-high, 1 KiB each. Only the MSRs the VMCS switches pass:
            // SYSENTER_CS/ESP/EIP (0x174–0x176), FS/GS base (0xc0000100–101).
            Backend::Vmx => {
                for (msr, low) in [
                    (0x174u32, true),
                    (0x175, true),
                    (0x176, true),
                    (0xc000_0100, false),
                    (0xc000_0101, false),
                ] {
                    let index = (msr & 0x1fff) as usize;
                    for base in if low { [0, 0x800] } else { [0x400, 0xc00] } {
                        map[base + index / 8] &= !(1 << (index % 8));
                    }
                }
            }
        }
        Ok((iopm, msrpm))
    }

    fn iopm(&mut self, hpa: u64) -> &mut [u8; IOPM_BYTES] {
        memory::frame_as(hpa)
    }

    fn msrpm(&mut self, hpa: u64) -> &mut [u8; MSRPM_BYTES] {
        memory::frame_as(hpa)
    }

    fn permission_maps_free(&mut self, maps: (u64, u64)) {
        free_frames(maps.0, IOPM_BYTES / 4096);
        free_frames(maps.1, MSRPM_BYTES / 4096);
    }

    fn console(&mut self, partition: &str, line: &str) {
        if partition.is_empty() {
            serial::write_line(format_args!("{line}"));
        } else {
            serial::write_line(format_args!("[{partition}] {line}"));
        }
    }

    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let r = cpu::cpuid(leaf, subleaf);
        [r.eax, r.ebx, r.ecx, r.edx]
    }

    fn tracks_dirty_pages(&self) -> bool {
        virt::backend() == Backend::Svm || super::vmx::ept_dirty_flags()
    }

    fn kick(&mut self, cpu: u32) {
        if let Some(apic_id) = super::percpu::apic_id_of(cpu)
            && cpu != super::percpu::current().index
        {
            apic::send_ipi(apic_id, idt::WAKEUP_VECTOR);
        }
    }

    fn pci_config_read(&mut self, address: u32, offset: u8, size: u8) -> u32 {
        super::pci::read(address, offset, size)
    }

    fn pci_config_write(&mut self, address: u32, offset: u8, size: u8, value: u32) {
        super::pci::write(address, offset, size, value);
    }

    fn message_vector(&mut self, vector: u8, on: bool) {
        super::msi::enable(vector, on);
    }

    fn message_address(&self) -> u64 {
        // Physical destination mode, the bootstrap processor (where the
        // I/O APIC lines go too), no redirection hint.
        let bsp = super::percpu::apic_id_of(0).unwrap_or(0);
        0xfee0_0000 | (u64::from(bsp & 0xff) << 12)
    }

    fn reset(&mut self) {
        super::power::reset()
    }
}
