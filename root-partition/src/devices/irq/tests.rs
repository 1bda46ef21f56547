//! Host tests of a device's interrupt and the RTC self-test, over the
//! real kernel core (`hv::fake::FakeKernel`).

use std::vec::Vec;

use ipc::boot::cap_kind;
use ipc::hypercall::SlotHandle;
use microkernel::object::interrupt::MESSAGE_VECTOR_FIRST;

use super::*;
use crate::hv::fake::FakeKernel;

/// A device's registers and handler, as the binary's would be, recorded.
struct FakeDevice {
    /// It has an MSI-X table and virtio vector registers.
    msix: bool,
    /// Its MSI-X table entry stays masked.
    masked: bool,
    /// It has an interrupt status register.
    status: bool,
    /// Table entries written: (entry, address, data).
    entries: Vec<(u16, u64, u32)>,
    enabled: bool,
    config_vector: u16,
    queue_vectors: Vec<u16>,
    /// What the handler was set up with: (vector, slot, edge, status).
    prepared: Option<(u8, SlotHandle, bool, bool)>,
    /// Methods called, in order.
    log: Vec<&'static str>,
}

impl FakeDevice {
    fn new(msix: bool) -> Self {
        FakeDevice {
            msix,
            masked: false,
            status: true,
            entries: Vec::new(),
            enabled: false,
            config_vector: 0,
            queue_vectors: vec![7; 3],
            prepared: None,
            log: Vec::new(),
        }
    }
}

impl Device for FakeDevice {
    fn install_handler(&mut self, _vector: u8) -> bool {
        self.log.push("install");
        true
    }
    fn find_msix(&mut self) -> bool {
        self.log.push("find_msix");
        self.msix
    }
    fn set_msix_entry(&mut self, entry: u16, address: u64, data: u32) -> bool {
        self.entries.push((entry, address, data));
        !self.masked
    }
    fn enable_msix(&mut self) {
        self.enabled = true;
    }
    fn msix_enabled(&mut self) -> bool {
        self.enabled
    }
    fn queues(&mut self) -> u16 {
        self.queue_vectors.len() as u16
    }
    fn set_config_vector(&mut self, vector: u16) -> u16 {
        self.config_vector = vector;
        vector
    }
    fn set_queue_vector(&mut self, queue: u16, vector: u16) -> u16 {
        self.queue_vectors[usize::from(queue)] = vector;
        vector
    }
    fn find_status(&mut self) -> bool {
        self.log.push("find_status");
        self.status
    }
    fn prepare(&mut self, vector: u8, slot: SlotHandle, edge: bool, status: bool) {
        self.prepared = Some((vector, slot, edge, status));
    }
    fn forget(&mut self, _vector: u8) {
        self.log.push("forget");
        self.prepared = None;
    }
}

/// A root with lines 10 and 11, level-triggered when `level`.
fn kernel(level: bool) -> FakeKernel {
    FakeKernel::with_lines(&[10, 11], if level { 1 << 10 | 1 << 11 } else { 0 })
}

/// Whether `vector` is pending on the root's vCPU; clears it.
fn raised(k: &FakeKernel, vector: u8) -> bool {
    let mut host = k.host.borrow_mut();
    let vcpu = host.root_vcpu;
    let v = host.k.objects.vcpu_mut(vcpu).expect("the root's vCPU");
    let (word, bit) = (usize::from(vector) / 64, 1u64 << (vector % 64));
    let was = v.pending[word] & bit != 0;
    v.pending[word] &= !bit;
    was
}

/// Line `gsi` fires: how many bound objects the kernel raised.
fn fire_line(k: &FakeKernel, gsi: u32) -> usize {
    let host = &mut *k.host.borrow_mut();
    host.k.device_interrupt(&mut host.m, gsi)
}

fn line_cap(info: &BootInfo, gsi: u32) -> SlotHandle {
    boot_cap(info, cap_kind::INTERRUPT, Some(u64::from(gsi)))
        .expect("the line's capability")
        .0
}

#[test]
fn a_device_on_a_free_line_binds_it_and_its_vector_is_delivered() {
    let k = kernel(true);
    let info = k.boot_info();
    let mut lines = Lines::new();
    let mut disk = FakeDevice::new(false);
    let irq = attach(
        &k, &mut lines, &info, &mut disk, "00:04.0", 11, 0x41, "disk",
    )
    .expect("the disk's line");
    assert_eq!(
        irq,
        Attached {
            vector: 0x41,
            delivery: Delivery::Line {
                gsi: 11,
                level: true,
                shared_with: None
            }
        }
    );
    assert_eq!(
        disk.prepared,
        Some((0x41, line_cap(&info, 11), false, true)),
        "the handler acknowledges the root's own line capability, reading the status first"
    );
    assert_eq!(lines.taken(11), Some("disk"));
    assert!(k.printed("root partition: disk at 00:04.0 interrupts on GSI 11 (level-triggered)"));
    assert!(!raised(&k, 0x41));
    assert_eq!(fire_line(&k, 11), 1);
    assert!(
        raised(&k, 0x41),
        "the line's interrupt reaches the root's vector"
    );
    assert_eq!(fire_line(&k, 10), 0, "line 10 is bound to nothing");
}

#[test]
fn two_devices_share_a_level_triggered_line() {
    let k = kernel(true);
    let info = k.boot_info();
    let mut lines = Lines::new();
    let mut disk = FakeDevice::new(false);
    let mut nic = FakeDevice::new(false);
    attach(
        &k, &mut lines, &info, &mut disk, "00:04.0", 11, 0x41, "disk",
    )
    .unwrap();
    let irq = attach(&k, &mut lines, &info, &mut nic, "00:03.0", 11, 0x42, "NIC").unwrap();
    assert_eq!(
        irq.delivery,
        Delivery::Line {
            gsi: 11,
            level: true,
            shared_with: Some("disk")
        }
    );
    assert!(k.printed(
        "root partition: NIC at 00:03.0 interrupts on GSI 11 (level-triggered, shared with the disk)"
    ));
    let (_, share, edge, _) = nic.prepared.unwrap();
    assert!(!edge);
    assert_ne!(
        share,
        line_cap(&info, 11),
        "the NIC acknowledges a share of its own"
    );
    assert_eq!(fire_line(&k, 11), 2, "the line raises both bindings");
    assert!(raised(&k, 0x41) && raised(&k, 0x42));
    // The disk acknowledges, the NIC not yet: the line stays masked for both.
    take(&k, disk.prepared.unwrap().1, false, || {});
    assert_eq!(
        fire_line(&k, 11),
        1,
        "only the acknowledged binding is armed"
    );
    assert!(raised(&k, 0x41) && !raised(&k, 0x42));
    take(&k, share, false, || {});
    assert_eq!(fire_line(&k, 11), 1);
    assert!(raised(&k, 0x42));
}

#[test]
fn an_edge_triggered_line_is_not_shared() {
    let k = kernel(false);
    let info = k.boot_info();
    let mut lines = Lines::new();
    let mut disk = FakeDevice::new(false);
    let irq = attach(
        &k, &mut lines, &info, &mut disk, "00:04.0", 11, 0x41, "disk",
    )
    .unwrap();
    assert!(k.printed("interrupts on GSI 11 (edge-triggered)"));
    assert!(
        disk.prepared.unwrap().2,
        "edge: the handler acknowledges first"
    );
    assert_eq!(irq.vector, 0x41);
    let mut nic = FakeDevice::new(false);
    let e = attach(&k, &mut lines, &info, &mut nic, "00:03.0", 11, 0x42, "NIC").unwrap_err();
    assert_eq!(e, "GSI 11 is edge-triggered and the disk holds it");
    assert_eq!(nic.prepared, None);
    assert_eq!(fire_line(&k, 11), 1);
    assert!(raised(&k, 0x41) && !raised(&k, 0x42));
}

#[test]
fn a_line_without_a_capability_is_refused() {
    let k = kernel(true);
    let info = k.boot_info();
    let mut lines = Lines::new();
    let mut nic = FakeDevice::new(false);
    let e = attach(&k, &mut lines, &info, &mut nic, "00:03.0", 5, 0x42, "NIC").unwrap_err();
    assert_eq!(e, "no interrupt capability for the NIC's line 5");
    assert_eq!(nic.prepared, None);
    assert_eq!(lines.taken(5), None);
    assert!(!k.printed("interrupts on"));
}

#[test]
fn a_device_without_a_status_register_gets_no_line() {
    let k = kernel(true);
    let info = k.boot_info();
    let mut lines = Lines::new();
    let mut disk = FakeDevice::new(false);
    disk.status = false;
    let e = attach(
        &k, &mut lines, &info, &mut disk, "00:04.0", 10, 0x41, "disk",
    )
    .unwrap_err();
    assert_eq!(e, "the disk has no virtio interrupt status register");
    assert_eq!(lines.taken(10), None);
    assert_eq!(fire_line(&k, 10), 0, "nothing bound");
}

#[test]
fn msix_programs_what_the_kernel_gives() {
    let k = kernel(true);
    let info = k.boot_info();
    let mut lines = Lines::new();
    let mut nic = FakeDevice::new(true);
    let irq = attach(&k, &mut lines, &info, &mut nic, "00:03.0", 11, 0x42, "NIC").unwrap();
    let Delivery::Msix { vector } = irq.delivery else {
        panic!("{irq:?}: MSI-X expected");
    };
    assert_eq!(
        vector, MESSAGE_VECTOR_FIRST,
        "the kernel's first message vector"
    );
    assert!(k.host.borrow().m.message_vectors.contains(&vector));
    assert_eq!(
        nic.entries,
        [(0, 0xfee0_0000, u32::from(vector))],
        "entry 0 holds the kernel's message address and data"
    );
    assert!(nic.enabled);
    assert_eq!(nic.config_vector, NO_VECTOR);
    assert_eq!(nic.queue_vectors, [0, 0, 0], "every queue on entry 0");
    let (root_vector, _, edge, status) = nic.prepared.unwrap();
    assert_eq!((root_vector, edge, status), (0x42, false, false));
    assert_eq!(lines.taken(11), None, "the line stays free");
    assert!(k.printed(&format!(
        "root partition: NIC at 00:03.0 interrupts on MSI-X (kernel vector {vector:#x})"
    )));
    let delivered = {
        let host = &mut *k.host.borrow_mut();
        host.k.message_interrupt(&mut host.m, vector)
    };
    assert!(delivered);
    assert!(raised(&k, 0x42), "the message reaches the root's vector");
    assert_eq!(fire_line(&k, 11), 0, "nothing on the line");
}

#[test]
fn msix_failing_falls_back_to_the_line_and_frees_the_message_vector() {
    let k = kernel(true);
    let info = k.boot_info();
    let mut lines = Lines::new();
    let mut nic = FakeDevice::new(true);
    nic.masked = true;
    let irq = attach(&k, &mut lines, &info, &mut nic, "00:03.0", 11, 0x42, "NIC").unwrap();
    assert_eq!(nic.log, ["install", "find_msix", "forget", "find_status"]);
    assert!(k.printed(
        "root partition: NIC at 00:03.0: no MSI-X (its MSI-X table entry 0 stays masked); using its line"
    ));
    assert!(matches!(irq.delivery, Delivery::Line { gsi: 11, .. }));
    assert!(
        k.host.borrow().m.message_vectors.is_empty(),
        "the message interrupt was deleted"
    );
    assert_eq!(fire_line(&k, 11), 1);
    assert!(raised(&k, 0x42));
}

#[test]
fn pci_intx_skips_msix() {
    let k = kernel(true);
    let mut info = k.boot_info();
    info.set_cmdline("console pci-intx");
    let mut lines = Lines::new();
    let mut nic = FakeDevice::new(true);
    let irq = attach(&k, &mut lines, &info, &mut nic, "00:03.0", 10, 0x42, "NIC").unwrap();
    assert_eq!(nic.log, ["install", "find_status"], "MSI-X never looked at");
    assert!(nic.entries.is_empty() && !nic.enabled);
    assert_eq!(
        irq.delivery,
        Delivery::Line {
            gsi: 10,
            level: true,
            shared_with: None
        }
    );
}

#[test]
fn take_orders_status_read_and_acknowledge_by_trigger() {
    for edge in [false, true] {
        let k = kernel(!edge);
        let info = k.boot_info();
        let mut lines = Lines::new();
        let mut disk = FakeDevice::new(false);
        attach(
            &k, &mut lines, &info, &mut disk, "00:04.0", 10, 0x41, "disk",
        )
        .unwrap();
        let slot = disk.prepared.unwrap().1;
        assert_eq!(fire_line(&k, 10), 1);
        assert!(raised(&k, 0x41));
        // Whether the interrupt was acknowledged when the status was read.
        let mut acked_at_read = None;
        take(&k, slot, edge, || {
            acked_at_read = Some(fire_line(&k, 10) == 1)
        });
        assert_eq!(
            acked_at_read,
            Some(edge),
            "edge: acknowledge first; level: read first"
        );
    }
}

/// The RTC and the root's handler: each wait lets the line fire in the
/// kernel core and counts what reached the root's vector.
struct FakeRtc<'a> {
    k: &'a FakeKernel,
    registers: [u8; 16],
    reads_of_c: u32,
    taken: u32,
    interrupts_on: bool,
    vector: Option<u8>,
}

impl Rtc for FakeRtc<'_> {
    fn install_handler(&mut self, vector: u8) -> bool {
        self.vector = Some(vector);
        true
    }
    fn read(&mut self, register: u8) -> u8 {
        if register == 0x0c {
            self.reads_of_c += 1;
        }
        self.registers[usize::from(register)]
    }
    fn write(&mut self, register: u8, value: u8) {
        self.registers[usize::from(register)] = value;
    }
    fn enable_interrupts(&mut self) {
        self.interrupts_on = true;
    }
    fn wait_taken(&mut self, count: u32) {
        assert!(self.interrupts_on);
        // The RTC ticks a few times; only what the kernel raises counts.
        for _ in 0..4 {
            if self.taken >= count {
                return;
            }
            if self.registers[0x0b] & 0x40 != 0 {
                fire_line(self.k, u32::from(RTC_GSI as u8));
            }
            if raised(self.k, self.vector.expect("a handler")) {
                self.taken += 1;
            }
        }
        panic!("interrupt {count} never came (taken {})", self.taken);
    }
    fn taken(&self) -> u32 {
        self.taken
    }
}

#[test]
fn the_rtc_test_takes_and_acknowledges_its_interrupts() {
    let k = FakeKernel::with_lines(&[8, 10], 0);
    let info = k.boot_info();
    let mut rtc = FakeRtc {
        k: &k,
        registers: [0; 16],
        reads_of_c: 0,
        taken: 0,
        interrupts_on: false,
        vector: None,
    };
    rtc.registers[0x0b] = 0x02;
    let result = rtc_test(&k, &info, &mut rtc).expect("the RTC's interrupts");
    assert_eq!(result, DeviceInterrupts { gsi: 8, count: 3 });
    assert_eq!(
        result.to_string(),
        "root: device interrupt GSI 8 delivered 3 times"
    );
    assert_eq!(rtc.vector, Some(RTC_VECTOR));
    assert_eq!(
        rtc.registers[0x0b], 0x02,
        "periodic interrupt off again, the rest kept"
    );
    assert_eq!(rtc.reads_of_c, 1 + RTC_WANTED);
}

#[test]
fn the_rtc_test_without_the_line_fails() {
    let k = FakeKernel::new();
    let info = k.boot_info();
    let mut rtc = FakeRtc {
        k: &k,
        registers: [0; 16],
        reads_of_c: 0,
        taken: 0,
        interrupts_on: false,
        vector: None,
    };
    assert_eq!(rtc_test(&k, &info, &mut rtc), Err(Status::InvalidSlot));
    assert_eq!(rtc.vector, None, "nothing installed");
}
