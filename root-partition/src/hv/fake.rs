//! [`FakeKernel`]: the root's hypercalls made into the real kernel core
//! (`microkernel::testkit::Host`) on the host, with the root's RAM in a
//! page map, a boot page describing its capabilities, the console lines
//! kept, and a clock the test moves.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::string::String;
use std::vec::Vec;

use ipc::boot::{BootCap, BootInfo, PhysRange, cap_kind};
use ipc::hypercall::{Call, Status};
use microkernel::object::ObjectKind;
use microkernel::testkit::Host;

use super::{Kernel, Results, Scratch, buffer_of};

/// First byte of the fake root's RAM.
pub const RAM_BASE: u64 = 0x10_0000;
/// Bytes of the fake root's RAM (pages are stored only once written).
pub const RAM_BYTES: u64 = 256 << 20;
/// Counter ticks per millisecond of the fake clock (1 GHz: a tick is a
/// nanosecond).
pub const TSC_KHZ: u64 = 1_000_000;

/// The kernel core on the host, as the root sees it.
pub struct FakeKernel {
    /// The kernel core and its machine (tests look inside).
    pub host: RefCell<Host>,
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
        let host = Host::new(2, (RAM_BASE, RAM_BYTES / 4096), &[10, 11], &[(0x3f8, 8)]);
        let mut kernel = FakeKernel {
            host: RefCell::new(host),
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
            let kind = match cap.kind {
                ObjectKind::Partition => cap_kind::PARTITION,
                ObjectKind::Memory => cap_kind::MEMORY,
                ObjectKind::Interrupt => cap_kind::INTERRUPT,
                ObjectKind::IoPorts => cap_kind::IO_PORTS,
                ObjectKind::Vcpu => cap_kind::VCPU,
                ObjectKind::Port => cap_kind::PORT,
                _ => continue,
            };
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
