//! What the kernel core needs from the hardware layer: second-level page
//! tables, physical pages, VMCBs and permission maps, the console, and
//! kicking another processor. The bare-metal binary implements it over
//! real memory; host tests implement it over fake memory.

use ipc::hypercall::Status;

use crate::paging::Access;
use crate::svm::permissions::{IOPM_BYTES, MSRPM_BYTES};
use crate::svm::vmcb::Vmcb;

/// The hardware operations of the kernel core.
pub trait Machine {
    /// A new, empty SLAT; its root's host-physical address.
    fn slat_new(&mut self) -> Result<u64, Status>;
    /// Maps `pages` 4 KiB pages at `gpa` to `hpa`; nothing is mapped on error.
    fn slat_map(
        &mut self,
        root: u64,
        gpa: u64,
        hpa: u64,
        pages: u64,
        access: Access,
    ) -> Result<(), Status>;
    /// Unmaps `pages` pages at `gpa`, splitting large pages; absent pages are skipped.
    fn slat_unmap(&mut self, root: u64, gpa: u64, pages: u64) -> Result<(), Status>;
    /// The host-physical address and rights `gpa` maps to.
    fn slat_translate(&self, root: u64, gpa: u64) -> Option<(u64, Access)>;
    /// Reads and clears the dirty bit of the 4 KiB page mapping `gpa`.
    fn slat_take_dirty(&mut self, root: u64, gpa: u64) -> bool;
    /// Frees every table of a SLAT (not the memory it maps).
    fn slat_free(&mut self, root: u64);
    /// Copies a 4 KiB page between host-physical addresses.
    fn copy_page(&mut self, dst: u64, src: u64);
    /// Writes bytes at a host-physical address (within one page).
    fn write_bytes(&mut self, dst: u64, bytes: &[u8]);
    /// Reads bytes at a host-physical address (within one page).
    fn read_bytes(&self, src: u64, out: &mut [u8]);
    /// A new zeroed VMCB; its host-physical address.
    fn vmcb_new(&mut self) -> Result<u64, Status>;
    /// The VMCB at `hpa` (allocated by `vmcb_new`).
    fn vmcb(&mut self, hpa: u64) -> &mut Vmcb;
    /// Frees a VMCB.
    fn vmcb_free(&mut self, hpa: u64);
    /// New permission maps (IOPM all intercepted, MSRPM with the VMCB-held MSRs passed).
    fn permission_maps_new(&mut self) -> Result<(u64, u64), Status>;
    /// The I/O permission map at `hpa`.
    fn iopm(&mut self, hpa: u64) -> &mut [u8; IOPM_BYTES];
    /// The MSR permission map at `hpa`.
    fn msrpm(&mut self, hpa: u64) -> &mut [u8; MSRPM_BYTES];
    /// Frees permission maps.
    fn permission_maps_free(&mut self, maps: (u64, u64));
    /// Prints one console line of a partition.
    fn console(&mut self, partition: &str, line: &str);
    /// CPUID on the host processor.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// Makes processor `cpu` leave guest mode (or wake from idle) soon.
    fn kick(&mut self, cpu: u32);
    /// Whether the SLAT records dirty pages (NPT always; EPT only with A/D flags).
    fn tracks_dirty_pages(&self) -> bool {
        true
    }
    /// Reads `size` bytes (1, 2, 4) at byte `offset` of the PCI
    /// configuration dword `address` (mechanism #1: enable, bus, device,
    /// function, register), address and data as one operation. All ones
    /// where there is no configuration space (host tests).
    fn pci_config_read(&mut self, address: u32, offset: u8, size: u8) -> u32 {
        let _ = (address, offset);
        match size {
            1 => 0xff,
            2 => 0xffff,
            _ => u32::MAX,
        }
    }
    /// Writes the low `size` bytes of `value` there, as one operation.
    fn pci_config_write(&mut self, address: u32, offset: u8, size: u8, value: u32) {
        let _ = (address, offset, size, value);
    }
    /// Lets message interrupts on processor `vector` through to the kernel
    /// (`on`), or makes them stray ones again (counted and dropped).
    fn message_vector(&mut self, vector: u8, on: bool) {
        let _ = (vector, on);
    }
    /// The message address devices write their message interrupts to
    /// (the local APIC window, with the destination processor).
    fn message_address(&self) -> u64 {
        0xfee0_0000
    }
    /// Resets the machine; on hardware it does not return (host tests
    /// record it).
    fn reset(&mut self) {}
}

/// Convenience on top of [`Machine::console`] for kernel reports.
pub trait Report {
    /// Prints a kernel line (not attributed to a partition).
    fn console_report(&mut self, args: core::fmt::Arguments<'_>);
}

impl<M: Machine + ?Sized> Report for M {
    fn console_report(&mut self, args: core::fmt::Arguments<'_>) {
        let mut line = Line::default();
        let _ = core::fmt::write(&mut line, args);
        self.console("", line.as_str());
    }
}

/// A fixed-size line buffer for reports (longer text is cut).
pub struct Line {
    data: [u8; 200],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            data: [0; 200],
            len: 0,
        }
    }
}

impl Line {
    /// The text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.data[..self.len]).unwrap_or("")
    }
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for c in s.chars() {
            let mut buf = [0u8; 4];
            let enc = c.encode_utf8(&mut buf).as_bytes();
            if self.len + enc.len() > self.data.len() {
                break;
            }
            self.data[self.len..self.len + enc.len()].copy_from_slice(enc);
            self.len += enc.len();
        }
        Ok(())
    }
}
