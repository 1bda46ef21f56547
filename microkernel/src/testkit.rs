//! A fake machine for host tests of the kernel core, and of the partitions
//! that call it (`root-partition`'s host tests make their hypercalls into
//! the real kernel core through [`Host`]): SLATs as maps, RAM as a page
//! map, VMCBs in boxes. Built for tests and with the `testkit` feature.
//! A broken assumption of a test (an address the machine never handed out)
//! panics, as a failed assertion does.
#![allow(clippy::unwrap_used)]

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use ipc::hypercall::{Call, Status};

use crate::kernel::{InitialCap, Kernel, Outcome};
use crate::machine::Machine;
use crate::object::ObjectId;
use crate::paging::Access;
use crate::svm::permissions::{IOPM_BYTES, MSRPM_BYTES};
use crate::svm::vmcb::Vmcb;

/// A fake machine: SLATs as maps, RAM as a page map, VMCBs in boxes.
#[derive(Default)]
pub struct FakeMachine {
    /// Last address handed out for a machine structure.
    pub next: u64,
    /// SLATs by root: GPA page -> (HPA, access, dirty).
    pub slats: BTreeMap<u64, BTreeMap<u64, (u64, Access, bool)>>,
    /// RAM pages by address (unwritten pages read as zeros).
    pub ram: BTreeMap<u64, Box<[u8; 4096]>>,
    /// VMCBs by address.
    pub vmcbs: BTreeMap<u64, Box<Vmcb>>,
    /// I/O permission maps by address.
    pub iopms: BTreeMap<u64, Box<[u8; IOPM_BYTES]>>,
    /// MSR permission maps by address.
    pub msrpms: BTreeMap<u64, Box<[u8; MSRPM_BYTES]>>,
    /// Console lines, `[partition] line`.
    pub lines: Vec<String>,
    /// Processors kicked, in order.
    pub kicks: Vec<u32>,
    /// Refuse new SLATs (out of memory).
    pub fail_slat: bool,
    /// Report no dirty-page tracking.
    pub no_dirty_flags: bool,
    /// Message vectors let through (`Machine::message_vector`).
    pub message_vectors: Vec<u8>,
    /// PCI configuration dwords by address (enable | bus | device |
    /// function | register); absent ones read all ones.
    pub config: BTreeMap<u32, u32>,
    /// Machine resets asked for.
    pub resets: u32,
}

impl FakeMachine {
    /// A fresh machine address.
    pub fn addr(&mut self) -> u64 {
        self.next += 0x1000;
        0x7000_0000 + self.next
    }
    /// Whether `gpa` is mapped in the SLAT at `root`.
    pub fn mapped(&self, root: u64, gpa: u64) -> bool {
        self.slats[&root].contains_key(&gpa)
    }
    /// Marks `gpa` written by the guest (dirty) in the SLAT at `root`.
    pub fn write_guest(&mut self, root: u64, gpa: u64) {
        self.slats.get_mut(&root).unwrap().get_mut(&gpa).unwrap().2 = true;
    }
}

impl Machine for FakeMachine {
    fn slat_new(&mut self) -> Result<u64, Status> {
        if self.fail_slat {
            return Err(Status::OutOfMemory);
        }
        let a = self.addr();
        self.slats.insert(a, BTreeMap::new());
        Ok(a)
    }
    fn slat_map(
        &mut self,
        root: u64,
        gpa: u64,
        hpa: u64,
        pages: u64,
        access: Access,
    ) -> Result<(), Status> {
        let slat = self.slats.get_mut(&root).unwrap();
        for i in 0..pages {
            assert!(
                slat.insert(gpa + i * 4096, (hpa + i * 4096, access, false))
                    .is_none(),
                "double map"
            );
        }
        Ok(())
    }
    fn slat_unmap(&mut self, root: u64, gpa: u64, pages: u64) -> Result<(), Status> {
        let slat = self.slats.get_mut(&root).unwrap();
        for i in 0..pages {
            slat.remove(&(gpa + i * 4096));
        }
        Ok(())
    }
    fn slat_translate(&self, root: u64, gpa: u64) -> Option<(u64, Access)> {
        let page = gpa & !0xfff;
        self.slats
            .get(&root)?
            .get(&page)
            .map(|e| (e.0 + (gpa & 0xfff), e.1))
    }
    fn slat_take_dirty(&mut self, root: u64, gpa: u64) -> bool {
        self.slats
            .get_mut(&root)
            .and_then(|s| s.get_mut(&gpa))
            .is_some_and(|e| core::mem::take(&mut e.2))
    }
    fn slat_free(&mut self, root: u64) {
        self.slats.remove(&root).expect("freeing a live SLAT");
    }
    fn copy_page(&mut self, dst: u64, src: u64) {
        let page = self.ram.get(&src).map_or([0; 4096], |p| **p);
        self.ram.insert(dst, Box::new(page));
    }
    fn write_bytes(&mut self, dst: u64, bytes: &[u8]) {
        let page = self
            .ram
            .entry(dst & !0xfff)
            .or_insert_with(|| Box::new([0; 4096]));
        let off = (dst & 0xfff) as usize;
        page[off..off + bytes.len()].copy_from_slice(bytes);
    }
    fn read_bytes(&self, src: u64, out: &mut [u8]) {
        let off = (src & 0xfff) as usize;
        match self.ram.get(&(src & !0xfff)) {
            Some(p) => out.copy_from_slice(&p[off..off + out.len()]),
            None => out.fill(0),
        }
    }
    fn vmcb_new(&mut self) -> Result<u64, Status> {
        let a = self.addr();
        self.vmcbs.insert(a, Box::new(Vmcb::new()));
        Ok(a)
    }
    fn vmcb(&mut self, hpa: u64) -> &mut Vmcb {
        self.vmcbs.get_mut(&hpa).expect("live VMCB")
    }
    fn vmcb_free(&mut self, hpa: u64) {
        self.vmcbs.remove(&hpa).expect("freeing a live VMCB");
    }
    fn permission_maps_new(&mut self) -> Result<(u64, u64), Status> {
        let (a, b) = (self.addr(), self.addr());
        self.iopms.insert(a, Box::new([0xff; IOPM_BYTES]));
        self.msrpms.insert(b, Box::new([0xff; MSRPM_BYTES]));
        Ok((a, b))
    }
    fn iopm(&mut self, hpa: u64) -> &mut [u8; IOPM_BYTES] {
        self.iopms.get_mut(&hpa).unwrap()
    }
    fn msrpm(&mut self, hpa: u64) -> &mut [u8; MSRPM_BYTES] {
        self.msrpms.get_mut(&hpa).unwrap()
    }
    fn permission_maps_free(&mut self, maps: (u64, u64)) {
        self.iopms.remove(&maps.0).unwrap();
        self.msrpms.remove(&maps.1).unwrap();
    }
    fn console(&mut self, partition: &str, line: &str) {
        self.lines.push(format!("[{partition}] {line}"));
    }
    fn cpuid(&self, _leaf: u32, _subleaf: u32) -> [u32; 4] {
        [0, 0, 0, 0]
    }
    fn tracks_dirty_pages(&self) -> bool {
        !self.no_dirty_flags
    }
    fn kick(&mut self, cpu: u32) {
        self.kicks.push(cpu);
    }
    fn message_vector(&mut self, vector: u8, on: bool) {
        self.message_vectors.retain(|&v| v != vector);
        if on {
            self.message_vectors.push(vector);
        }
    }
    fn pci_config_read(&mut self, address: u32, offset: u8, size: u8) -> u32 {
        let dword = self.config.get(&address).copied().unwrap_or(u32::MAX);
        let value = dword >> (offset * 8);
        match size {
            1 => value & 0xff,
            2 => value & 0xffff,
            _ => value,
        }
    }
    fn pci_config_write(&mut self, address: u32, offset: u8, size: u8, value: u32) {
        let mask = match size {
            1 => 0xffu32,
            2 => 0xffff,
            _ => u32::MAX,
        } << (offset * 8);
        let dword = self.config.entry(address).or_insert(0);
        *dword = (*dword & !mask) | ((value << (offset * 8)) & mask);
    }
    fn reset(&mut self) {
        self.resets += 1;
    }
}

/// The kernel core with a root partition over a [`FakeMachine`], for host
/// tests of the code that makes hypercalls: the root's RAM is identity
/// mapped, so a buffer the root names by address is [`Host::read`] and
/// [`Host::write`] at that address.
pub struct Host {
    /// The kernel core.
    pub k: Kernel,
    /// The machine under it.
    pub m: FakeMachine,
    /// The root partition.
    pub root: ObjectId,
    /// The root's vCPU (every call is made on it).
    pub root_vcpu: ObjectId,
    /// The root's initial capabilities, as its boot page lists them.
    pub caps: Vec<InitialCap>,
}

impl Host {
    /// A kernel for `cpus` processors whose root owns `ram` (first byte,
    /// pages), the interrupt lines `gsis` and the port ranges `ports`.
    pub fn new(cpus: u32, ram: (u64, u64), gsis: &[u32], ports: &[(u16, u32)]) -> Host {
        Host::with_level_lines(cpus, ram, gsis, 0, ports)
    }

    /// As [`Host::new`], the lines whose bit is set in `level_lines`
    /// level-triggered (as the MADT's overrides make them on the machine).
    pub fn with_level_lines(
        cpus: u32,
        ram: (u64, u64),
        gsis: &[u32],
        level_lines: u64,
        ports: &[(u16, u32)],
    ) -> Host {
        let mut m = FakeMachine::default();
        let mut k = Kernel::new(cpus, 64);
        k.level_lines = level_lines;
        let slat = m.slat_new().expect("a SLAT");
        m.slat_map(slat, ram.0, ram.0, ram.1, Access::RWX)
            .expect("the root's RAM");
        let (root, caps) = k
            .create_root(&mut m, slat, &[ram], gsis, ports)
            .expect("the root partition");
        let vmcb = m.vmcb_new().expect("a VMCB");
        let (root_vcpu, vcpu_cap) = k.create_boot_vcpu(root, vmcb, 0).expect("the root's vCPU");
        let mut caps = caps;
        caps.push(vcpu_cap);
        Host {
            k,
            m,
            root,
            root_vcpu,
            caps,
        }
    }

    /// Makes `call` as the root; a call that waits for vCPUs to leave
    /// their processors finishes at once (on the host no child vCPU runs).
    pub fn call(&mut self, call: &Call) -> Result<[u64; 3], Status> {
        match self
            .k
            .call(&mut self.m, self.root, self.root_vcpu, &call.encode())?
        {
            Outcome::Done(r) => Ok(r),
            Outcome::Yield => Ok([0; 3]),
            wait @ (Outcome::WaitVcpu(_) | Outcome::WaitDestroy(_)) => {
                let _ = self.k.finish_wait(&mut self.m, self.root_vcpu, wait);
                Ok([0; 3])
            }
        }
    }

    /// Reads the root's memory at `address`.
    pub fn read(&self, address: u64, out: &mut [u8]) {
        self.m.read_bytes(address, out);
    }

    /// Writes the root's memory at `address`.
    pub fn write(&mut self, address: u64, bytes: &[u8]) {
        self.m.write_bytes(address, bytes);
    }

    /// The console lines the kernel printed (`[partition] line`).
    pub fn lines(&self) -> &[String] {
        &self.m.lines
    }
}
