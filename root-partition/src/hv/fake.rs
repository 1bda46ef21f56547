//! [`FakeKernel`]: the root's hypercalls made into the real kernel core
//! (`microkernel::testkit::Host`) on the host, with the root's RAM in a
//! page map, a boot page describing its capabilities, the console lines
//! kept, and a clock the test moves.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::string::String;
use std::vec::Vec;

use ipc::boot::{BootCap, BootInfo, PhysRange};
use ipc::hypercall::{Call, Rights, SlotHandle, Status};
use ipc::vmbus::memory::RingMemory;
use microkernel::testkit::Host;

use super::{Kernel, Results, Scratch, SplitRings, buffer_of};

/// First byte of the fake root's RAM.
pub const RAM_BASE: u64 = 0x10_0000;
/// Bytes of the fake root's RAM (pages are stored only once written).
pub const RAM_BYTES: u64 = 256 << 20;
/// Counter ticks per millisecond of the fake clock (1 GHz: a tick is a
/// nanosecond).
pub const TSC_KHZ: u64 = 1_000_000;

/// The kernel core on the host, as the root sees it.
pub struct FakeKernel {
    /// The kernel core and its machine (tests look inside; shared with the
    /// ring memory [`Kernel::map_rings`] hands out).
    pub host: Rc<RefCell<Host>>,
    /// Console lines printed by the root, in order.
    pub lines: RefCell<Vec<String>>,
    /// The counter (tests move it with [`FakeKernel::advance_ns`]).
    pub tsc: Cell<u64>,
    scratch_address: u64,
    busy: Cell<bool>,
}

impl Default for FakeKernel {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeKernel {
    /// A kernel core for two processors whose root owns [`RAM_BYTES`] at
    /// [`RAM_BASE`], the interrupt lines 10 and 11 and the COM1 ports.
    pub fn new() -> Self {
        Self::with_lines(&[10, 11], 0)
    }

    /// As [`FakeKernel::new`], the root owning the interrupt lines `gsis`
    /// instead, those whose bit is set in `level_lines` level-triggered.
    pub fn with_lines(gsis: &[u32], level_lines: u64) -> Self {
        let host = Host::with_level_lines(
            2,
            (RAM_BASE, RAM_BYTES / 4096),
            gsis,
            level_lines,
            &[(0x3f8, 8)],
        );
        let mut kernel = FakeKernel {
            host: Rc::new(RefCell::new(host)),
            lines: RefCell::new(Vec::new()),
            tsc: Cell::new(1),
            scratch_address: 0,
            busy: Cell::new(false),
        };
        // The scratch page is the page below the heap, as on the machine.
        let info = kernel.boot_info();
        if let Ok((heap, _)) = crate::partition::heap_range(&info) {
            kernel.scratch_address = heap.start - 4096;
        }
        kernel
    }

    /// The boot page the kernel core would hand this root: its RAM, its
    /// capabilities, the clock rate.
    pub fn boot_info(&self) -> BootInfo {
        let host = self.host.borrow();
        let mut info = BootInfo::new();
        info.push_memory(PhysRange {
            start: RAM_BASE,
            end: RAM_BASE + RAM_BYTES,
        });
        info.boot_area = PhysRange {
            start: RAM_BASE,
            end: RAM_BASE + (1 << 20),
        };
        for cap in &host.caps {
            let kind = cap.kind.cap_kind();
            info.push_cap(BootCap {
                slot: cap.slot.raw(),
                kind,
                a: cap.a,
                b: cap.b,
            });
        }
        info.tsc_khz = TSC_KHZ as u32;
        info
    }

    /// Moves the clock on by `ns` nanoseconds.
    pub fn advance_ns(&self, ns: u64) {
        self.tsc.set(self.tsc.get().saturating_add(ns));
    }

    /// Whether a console line contains `text`.
    pub fn printed(&self, text: &str) -> bool {
        self.lines.borrow().iter().any(|l| l.contains(text))
    }

    /// Reads the root's memory.
    pub fn read(&self, address: u64, out: &mut [u8]) {
        self.host.borrow().read(address, out);
    }

    /// Writes the root's memory.
    pub fn write(&self, address: u64, bytes: &[u8]) {
        self.host.borrow_mut().write(address, bytes);
    }

    /// Ring memory over the machine's RAM at host-physical `address` (a
    /// child's side of its rings, in tests).
    pub fn physical_rings(&self, address: u64, len: usize) -> FakeRings {
        FakeRings {
            host: self.host.clone(),
            slat: None,
            base: address,
            len,
        }
    }

    /// The root's SLAT (the machine's first).
    pub fn root_slat(&self) -> u64 {
        *self
            .host
            .borrow()
            .m
            .slats
            .keys()
            .next()
            .expect("the root's SLAT")
    }

    /// Where the root's `gpa` leads in its SLAT (host-physical), if mapped.
    pub fn root_translate(&self, gpa: u64) -> Option<u64> {
        let slat = self.root_slat();
        let host = self.host.borrow();
        host.m.slats[&slat]
            .get(&(gpa & !0xfff))
            .map(|e| e.0 + (gpa & 0xfff))
    }
}

/// Ring memory of the fake machine: the root's guest-physical addresses
/// looked up in its SLAT at every access (so unmapped pages read zeros and
/// drop writes, as a fault would stop the root), or host-physical ones.
#[derive(Clone)]
pub struct FakeRings {
    host: Rc<RefCell<Host>>,
    /// The SLAT the addresses go through (`None`: host-physical).
    slat: Option<u64>,
    base: u64,
    len: usize,
}

impl FakeRings {
    /// Calls `f` with each (host-physical address, offset in the access,
    /// bytes) piece of `[offset, offset + len)` that lies in one page;
    /// unmapped pieces get `None`.
    fn pieces(&self, offset: usize, len: usize, mut f: impl FnMut(Option<u64>, usize, usize)) {
        let Some(end) = offset.checked_add(len).filter(|&e| e <= self.len) else {
            return;
        };
        let host = self.host.borrow();
        let mut at = offset;
        while at < end {
            let address = self.base + at as u64;
            let n = (4096 - (address & 0xfff) as usize).min(end - at);
            let physical = match self.slat {
                None => Some(address),
                Some(slat) => host
                    .m
                    .slats
                    .get(&slat)
                    .and_then(|s| s.get(&(address & !0xfff)).map(|e| e.0 + (address & 0xfff))),
            };
            f(physical, at - offset, n);
            at += n;
        }
    }
}

impl SplitRings for FakeRings {
    fn split_at(self, at: usize) -> (Self, Self) {
        let at = at.min(self.len) & !3;
        let second = FakeRings {
            host: self.host.clone(),
            slat: self.slat,
            base: self.base + at as u64,
            len: self.len - at,
        };
        (FakeRings { len: at, ..self }, second)
    }
}

impl RingMemory for FakeRings {
    fn len(&self) -> usize {
        self.len
    }

    fn load_u32_acquire(&self, offset: usize) -> u32 {
        let mut bytes = [0u8; 4];
        if offset.is_multiple_of(4) {
            self.read(offset, &mut bytes);
        }
        u32::from_le_bytes(bytes)
    }

    fn store_u32_release(&self, offset: usize, value: u32) {
        if offset.is_multiple_of(4) {
            self.write(offset, &value.to_le_bytes());
        }
    }

    fn read(&self, offset: usize, buf: &mut [u8]) {
        let mut pieces = Vec::new();
        self.pieces(offset, buf.len(), |p, at, n| pieces.push((p, at, n)));
        let host = self.host.borrow();
        for (physical, at, n) in pieces {
            match physical {
                Some(p) => host.read(p, &mut buf[at..at + n]),
                None => buf[at..at + n].fill(0),
            }
        }
    }

    fn write(&self, offset: usize, data: &[u8]) {
        let mut pieces = Vec::new();
        self.pieces(offset, data.len(), |p, at, n| pieces.push((p, at, n)));
        let mut host = self.host.borrow_mut();
        for (physical, at, n) in pieces {
            if let Some(p) = physical {
                host.write(p, &data[at..at + n]);
            }
        }
    }
}

/// The fake scratch page: a copy of the root's page, written back around
/// each call.
struct FakeScratch<'a> {
    kernel: &'a FakeKernel,
    page: Box<[u8; 4096]>,
}

impl Scratch for FakeScratch<'_> {
    fn address(&self) -> u64 {
        self.kernel.scratch_address
    }
    fn page(&self) -> &[u8; 4096] {
        &self.page
    }
    fn page_mut(&mut self) -> &mut [u8; 4096] {
        &mut self.page
    }
    fn call(&mut self, call: &Call) -> Result<Results, Status> {
        if buffer_of(call) != Some(self.kernel.scratch_address) {
            return Err(Status::InvalidArgument);
        }
        let address = self.kernel.scratch_address;
        let mut host = self.kernel.host.borrow_mut();
        host.write(address, &self.page[..]);
        let result = host.call(call);
        host.read(address, &mut self.page[..]);
        result
    }
}

impl Kernel for FakeKernel {
    type Rings = FakeRings;

    fn map_rings(
        &self,
        root: SlotHandle,
        memory: SlotHandle,
        first_page: u64,
        gpa: u64,
        pages: u64,
    ) -> Result<FakeRings, Status> {
        let len = pages.checked_mul(4096).ok_or(Status::InvalidArgument)?;
        self.call(&Call::MemoryMap {
            partition: root,
            memory,
            first_page,
            gpa,
            pages,
            access: Rights::READ | Rights::WRITE,
        })?;
        Ok(FakeRings {
            host: self.host.clone(),
            slat: Some(self.root_slat()),
            base: gpa,
            len: len as usize,
        })
    }

    fn call(&self, call: &Call) -> Result<Results, Status> {
        if buffer_of(call).is_some() {
            return Err(Status::InvalidArgument);
        }
        self.host.borrow_mut().call(call)
    }

    fn scratch<T>(
        &self,
        f: impl FnOnce(&mut dyn Scratch) -> Result<T, Status>,
    ) -> Result<T, Status> {
        if self.scratch_address == 0 || self.busy.replace(true) {
            return Err(Status::InvalidState);
        }
        let mut page = Box::new([0; 4096]);
        self.read(self.scratch_address, &mut page[..]);
        let result = f(&mut FakeScratch { kernel: self, page });
        self.busy.set(false);
        result
    }

    fn print(&self, line: fmt::Arguments<'_>) {
        self.lines.borrow_mut().push(line.to_string());
    }

    fn fill_ram(&self, base: u64, len: u64, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), Status> {
        let end = base.checked_add(len).ok_or(Status::InvalidArgument)?;
        if len == 0 || !base.is_multiple_of(4096) || base < RAM_BASE || end > RAM_BASE + RAM_BYTES {
            return Err(Status::InvalidArgument);
        }
        if self.busy.replace(true) {
            return Err(Status::InvalidArgument);
        }
        let mut bytes = vec![0u8; len as usize];
        self.read(base, &mut bytes);
        let before = bytes.clone();
        fill(&mut bytes);
        // Only the pages written (unwritten pages are not stored).
        for (i, (new, old)) in bytes.chunks(4096).zip(before.chunks(4096)).enumerate() {
            if new != old {
                self.write(base + i as u64 * 4096, new);
            }
        }
        self.busy.set(false);
        Ok(())
    }

    fn ticks(&self) -> u64 {
        let t = self.tsc.get();
        // Time passes a little with every look at the clock, as it does
        // on the machine (loops that wait for a deadline end).
        self.tsc.set(t.saturating_add(1_000));
        t
    }

    fn tsc_khz(&self) -> u64 {
        TSC_KHZ
    }
}
