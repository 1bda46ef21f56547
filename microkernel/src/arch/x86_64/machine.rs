//! The hardware behind the kernel core's [`Machine`] trait: nested page
//! tables in pool frames, physical pages through the identity map, VMCBs
//! and permission maps in pool frames, the serial console, and IPIs.

use ipc::hypercall::Status;
use microkernel::machine::Machine;
use microkernel::paging::{Access, CacheMode, NptFormat, PageSize, PageTable};
use microkernel::svm::permissions::{self, IOPM_BYTES, MSRPM_BYTES, PASSTHROUGH_MSRS};
use microkernel::svm::vmcb::Vmcb;

use super::{apic, cpu, idt, memory, serial};

/// The machine the microkernel runs on.
pub struct HwMachine;

fn slat(root: u64) -> PageTable<NptFormat> {
    PageTable::from_root(root)
}

fn free_frames(addr: u64, count: usize) {
    if let Some(pool) = memory::POOL.lock().as_mut() {
        let _ = pool.free(addr, count);
    }
}

impl Machine for HwMachine {
    fn slat_new(&mut self) -> Result<u64, Status> {
        let mut mem = memory::pool_tables();
        PageTable::<NptFormat>::new(&mut mem)
            .map(|t| t.root())
            .map_err(|_| Status::OutOfMemory)
    }

    fn slat_map(
        &mut self,
        root: u64,
        gpa: u64,
        hpa: u64,
        pages: u64,
        access: Access,
    ) -> Result<(), Status> {
        let mut mem = memory::pool_tables();
        let mut table = slat(root);
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

    fn slat_unmap(&mut self, root: u64, gpa: u64, pages: u64) -> Result<(), Status> {
        let mut mem = memory::pool_tables();
        slat(root)
            .unmap_range(&mut mem, gpa, pages * 4096)
            .map_err(|_| Status::OutOfMemory)
    }

    fn slat_translate(&self, root: u64, gpa: u64) -> Option<(u64, Access)> {
        let mem = memory::pool_tables();
        slat(root).translate(&mem, gpa).map(|t| (t.phys, t.access))
    }

    fn slat_take_dirty(&mut self, root: u64, gpa: u64) -> bool {
        let mut mem = memory::pool_tables();
        slat(root).take_dirty(&mut mem, gpa)
    }

    fn slat_free(&mut self, root: u64) {
        let mem = memory::pool_tables();
        for table in slat(root).tables(&mem) {
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
        memory::alloc_frames(1, 4096).ok_or(Status::OutOfMemory)
    }

    fn vmcb(&mut self, hpa: u64) -> &mut Vmcb {
        memory::vmcb_at(hpa)
    }

    fn vmcb_free(&mut self, hpa: u64) {
        free_frames(hpa, 1);
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
        for msr in PASSTHROUGH_MSRS {
            permissions::pass_msr(map, msr);
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

    fn kick(&mut self, cpu: u32) {
        if let Some(apic_id) = super::percpu::apic_id_of(cpu)
            && cpu != super::percpu::current().index
        {
            apic::send_ipi(apic_id, idt::WAKEUP_VECTOR);
        }
    }
}
