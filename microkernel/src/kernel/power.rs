//! `PowerOff` and `Reset`: the machine's power and reset belong to the
//! microkernel, which carries them out for a holder of CONTROL on the root
//! partition itself (the root holds it from boot; a child holds CONTROL
//! only on itself, so it is refused).
//!
//! # Invariants
//! - Both calls check the capability before anything changes; a refused
//!   call changes nothing.
//! - `PowerOff` stops the root as a halt does (`StopReason::Halted`): the
//!   processor loop then ends the run with `Success`, the one path a run
//!   ends normally. `Reset` goes to the hardware at once.

use ipc::hypercall::{Call, Rights, SlotHandle, Status, StopReason};
use ipc::platform::KERNEL_RESET;

use super::Kernel;
use super::calls::{CallResult, done};
use crate::machine::{Machine, Report};
use crate::object::{ObjectId, ObjectKind};

impl Kernel {
    /// Decodes and performs `PowerOff` or `Reset` for `caller`.
    pub(super) fn power(
        &mut self,
        m: &mut impl Machine,
        caller: ObjectId,
        call: Call,
    ) -> CallResult {
        match call {
            Call::PowerOff { partition } => {
                let root = self.root_authority(caller, partition)?;
                self.stop_partition(m, root, StopReason::Halted, 0);
                done([0; 3])
            }
            Call::Reset { partition } => {
                self.root_authority(caller, partition)?;
                m.console_report(format_args!("{KERNEL_RESET}"));
                m.reset();
                done([0; 3])
            }
            _ => Err(Status::UnknownCall),
        }
    }

    /// The root partition, if `handle` in `caller`'s space names it with CONTROL.
    fn root_authority(&self, caller: ObjectId, handle: SlotHandle) -> Result<ObjectId, Status> {
        let cap = self.cap(caller, handle, ObjectKind::Partition, Rights::CONTROL)?;
        match self.root {
            Some(root) if root == cap.object => Ok(root),
            _ => Err(Status::InsufficientRights),
        }
    }
}

/// Host tests of the machine's controls as the kernel core sees them:
/// power-off and reset, the root's configuration space, and the
/// instructions and interrupt window partitions get no hardware effect from.
#[cfg(test)]
mod tests {
    use ipc::hypercall::{Name, run_state};

    use super::*;
    use crate::kernel::{Next, Outcome};
    use crate::object::partition::RunState;
    use crate::object::{Object, Partition};
    use crate::svm::exit::{Exit, IoAccess, code};
    use crate::svm::vmcb::offset;
    use crate::testkit::FakeMachine as Fake;

    struct World {
        k: Kernel,
        m: Fake,
        root: ObjectId,
        root_vcpu: ObjectId,
        root_self: SlotHandle,
        child: ObjectId,
        child_self: SlotHandle,
    }

    /// A root with one vCPU (running on processor 0) and a child holding
    /// CONTROL on itself, as `PartitionCreate` leaves it.
    fn world() -> World {
        let mut m = Fake::default();
        let mut k = Kernel::new(2, 16);
        let (root, caps) = k
            .create_root(&mut m, 0x10_0000, &[(0x100_0000, 16)], &[], &[(0x70, 2)])
            .expect("root");
        let vmcb = m.vmcb_new().expect("VMCB");
        let (root_vcpu, _) = k.create_boot_vcpu(root, vmcb, 0).expect("vCPU");
        assert_eq!(k.pick(0), Some(root_vcpu));
        let maps = m.permission_maps_new().expect("maps");
        let p = Partition::new(Name::new("evil"), 0x20_0000, 2, maps, Some(root)).expect("heap");
        let child = k.objects.insert(Object::Partition(p)).expect("table");
        let cap = k.new_cap(
            child,
            ObjectKind::Partition,
            Rights::CONTROL | Rights::INSPECT,
            None,
        );
        let child_self = k.insert_cap(child, cap).expect("slot");
        World {
            k,
            m,
            root,
            root_vcpu,
            root_self: caps[0].slot,
            child,
            child_self,
        }
    }

    /// Makes `call` as the root (`root`) or as the child.
    fn call(w: &mut World, root: bool, call: Call) -> Result<[u64; 3], Status> {
        let caller = if root { w.root } else { w.child };
        match w.k.call(&mut w.m, caller, w.root_vcpu, &call.encode())? {
            Outcome::Done(r) => Ok(r),
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    #[test]
    fn a_child_cannot_power_off_or_reset_the_machine() {
        let mut w = world();
        let me = w.child_self;
        assert_eq!(
            call(&mut w, false, Call::PowerOff { partition: me }),
            Err(Status::InsufficientRights)
        );
        assert_eq!(
            call(&mut w, false, Call::Reset { partition: me }),
            Err(Status::InsufficientRights)
        );
        let empty = SlotHandle {
            index: 200,
            generation: 0,
        };
        assert_eq!(
            call(&mut w, false, Call::PowerOff { partition: empty }),
            Err(Status::InvalidSlot)
        );
        assert_eq!(w.m.resets, 0);
        let root = w.k.objects.partition(w.root).expect("root");
        assert_eq!(root.state, RunState::Running);
    }

    #[test]
    fn the_root_powers_off_and_resets() {
        let mut w = world();
        let me = w.root_self;
        assert_eq!(
            call(&mut w, true, Call::Reset { partition: me }),
            Ok([0; 3])
        );
        assert_eq!(w.m.resets, 1);
        assert!(w.m.lines.iter().any(|l| l.contains(KERNEL_RESET)));
        assert_eq!(
            call(&mut w, true, Call::PowerOff { partition: me }),
            Ok([0; 3])
        );
        let root = w.k.objects.partition(w.root).expect("root");
        assert_eq!(root.state, RunState::Stopped(StopReason::Halted, 0));
        // The caller's vCPU is taken off its processor at its next entry.
        assert!(!w.k.prepare_entry(&mut w.m, w.root_vcpu));
        // The status a creator would read of the root: halted.
        let status = call(&mut w, true, Call::PartitionStatus { partition: me });
        assert_eq!(
            status,
            Ok([run_state::STOPPED, StopReason::Halted as u64, 0])
        );
    }

    /// The root's access to a configuration port, as its vCPU would exit.
    fn port(w: &mut World, port: u16, size: u8, input: bool, rax: u64) -> u64 {
        let vmcb = w.k.objects.vcpu(w.root_vcpu).expect("vCPU").vmcb;
        w.m.vmcb(vmcb).write_u64(offset::RAX, rax);
        let io = IoAccess {
            port,
            input,
            size,
            string: false,
            next_rip: 0x1234,
        };
        w.k.handle_exit(&mut w.m, w.root_vcpu, Exit::Io(io));
        assert_eq!(w.m.vmcb(vmcb).read_u64(offset::RIP), 0x1234);
        w.m.vmcb(vmcb).read_u64(offset::RAX)
    }

    #[test]
    fn the_root_reaches_configuration_space_but_not_the_pm_base() {
        let mut w = world();
        // 00:01.3, a PIIX4 power-management function with its PM base at 0x600.
        let pm = 0x8000_0b00;
        w.m.config.insert(pm, 0x7113_8086);
        w.m.config.insert(pm | 0x0c, 0x0000_0000);
        w.m.config.insert(pm | 0x40, 0x0000_0601);
        w.m.config.insert(pm | 0x80, 0x0000_0001);
        port(&mut w, 0xcf8, 4, false, pm as u64);
        assert_eq!(port(&mut w, 0xcfc, 4, true, 0), 0x7113_8086);
        assert_eq!(
            port(&mut w, 0xcfe, 2, true, 0xdead_0000_0000),
            0xdead_0000_7113
        );
        port(&mut w, 0xcf8, 4, false, (pm | 0x40) as u64);
        port(&mut w, 0xcfc, 4, false, 0x7001);
        port(&mut w, 0xcf8, 4, false, (pm | 0x80) as u64);
        port(&mut w, 0xcfc, 1, false, 0);
        assert_eq!(w.m.config[&(pm | 0x40)], 0x601, "the PM base did not move");
        assert_eq!(w.m.config[&(pm | 0x80)], 1, "PM I/O stays on");
        assert_eq!(w.k.pci_config.refused, 2);
        assert!(
            w.m.lines
                .iter()
                .any(|l| l.contains("00:01.3 register 0x40 (PM base)"))
        );
        // The SMBus base next to it is the root's.
        port(&mut w, 0xcf8, 4, false, (pm | 0x90) as u64);
        port(&mut w, 0xcfc, 4, false, 0xb101);
        assert_eq!(w.m.config[&(pm | 0x90)], 0xb101);
        // The reset control register: dropped, reads all ones.
        port(&mut w, 0xcf9, 1, false, 6);
        assert_eq!(port(&mut w, 0xcf9, 1, true, 0), 0xff);
        assert_eq!(w.k.pci_config.resets_dropped, 1);
        assert_eq!(w.m.resets, 0);
        // The address register reads back what was latched.
        assert_eq!(port(&mut w, 0xcf8, 4, true, 0), (pm | 0x90) as u64);
    }

    #[test]
    fn a_child_gets_no_configuration_space() {
        let mut w = world();
        w.m.config.insert(0x8000_0000, 0x1237_8086);
        let vmcb = w.m.vmcb_new().expect("VMCB");
        let (vcpu, _) = w.k.create_boot_vcpu(w.child, vmcb, 1).expect("vCPU");
        for (port, input) in [(0xcf8, false), (0xcfc, true)] {
            w.m.vmcb(vmcb).write_u64(offset::RAX, 0x8000_0000);
            let io = IoAccess {
                port,
                input,
                size: 4,
                string: false,
                next_rip: 0x10,
            };
            w.k.handle_exit(&mut w.m, vcpu, Exit::Io(io));
        }
        assert_eq!(w.m.vmcb(vmcb).read_u64(offset::RAX), 0xffff_ffff);
        assert_eq!(w.k.pci_config.accesses, 0);
    }

    fn root_vmcb(w: &mut World) -> u64 {
        w.k.objects.vcpu(w.root_vcpu).expect("vCPU").vmcb
    }

    #[test]
    fn a_vector_raised_while_interrupts_are_off_comes_at_the_interrupt_window() {
        let mut w = world();
        let vmcb = root_vmcb(&mut w);
        const IF: u64 = 1 << 9;
        w.m.vmcb(vmcb).write_u64(offset::RFLAGS, 0x2);
        w.k.raise(&mut w.m, w.root_vcpu, 0x50);
        assert!(w.k.prepare_entry(&mut w.m, w.root_vcpu));
        let v = w.m.vmcb(vmcb);
        assert_eq!(v.read_u64(offset::EVENT_INJECTION), 0, "interrupts are off");
        assert!(v.interrupt_window_requested());
        // The guest executes STI; the processor exits at the window.
        v.write_u64(offset::RFLAGS, 0x2 | IF);
        assert_eq!(
            w.k.handle_exit(&mut w.m, w.root_vcpu, Exit::InterruptWindow),
            Next::Resume
        );
        assert!(w.k.prepare_entry(&mut w.m, w.root_vcpu));
        let v = w.m.vmcb(vmcb);
        assert_eq!(v.read_u64(offset::EVENT_INJECTION), 0x50 | (1 << 31));
        assert!(!v.interrupt_window_requested(), "nothing else pending");
        // Two pending: one injected, the other at the next exit (no window
        // beside an injection).
        v.write_u64(offset::EVENT_INJECTION, 0);
        w.k.raise(&mut w.m, w.root_vcpu, 0x51);
        w.k.raise(&mut w.m, w.root_vcpu, 0x52);
        assert!(w.k.prepare_entry(&mut w.m, w.root_vcpu));
        let v = w.m.vmcb(vmcb);
        assert_eq!(v.read_u64(offset::EVENT_INJECTION), 0x52 | (1 << 31));
        assert!(!v.interrupt_window_requested());
        // The guest took it and its handler runs with interrupts off: the
        // window for the other.
        v.write_u64(offset::EVENT_INJECTION, 0);
        v.write_u64(offset::RFLAGS, 0x2);
        assert_eq!(
            w.k.handle_exit(&mut w.m, w.root_vcpu, Exit::Interrupt),
            Next::Resume
        );
        assert!(w.k.prepare_entry(&mut w.m, w.root_vcpu));
        let v = w.m.vmcb(vmcb);
        assert_eq!(v.read_u64(offset::EVENT_INJECTION), 0);
        assert!(v.interrupt_window_requested(), "0x51 waits for the window");
    }

    #[test]
    fn a_vector_raised_inside_an_sti_shadow_comes_past_the_hlt() {
        let mut w = world();
        let vmcb = root_vmcb(&mut w);
        const IF: u64 = 1 << 9;
        // `STI; HLT` at 0x1000: another interrupt's exit comes right after
        // the STI, the HLT at 0x1001 in its shadow, and raises 0x78.
        let v = w.m.vmcb(vmcb);
        v.write_u64(offset::RIP, 0x1001);
        v.write_u64(offset::RFLAGS, 0x2 | IF);
        v.write_u64(offset::INTERRUPT_SHADOW, 1);
        w.k.raise(&mut w.m, w.root_vcpu, 0x78);
        assert_eq!(
            w.k.handle_exit(&mut w.m, w.root_vcpu, Exit::Interrupt),
            Next::Resume
        );
        assert!(w.k.prepare_entry(&mut w.m, w.root_vcpu));
        let v = w.m.vmcb(vmcb);
        assert_eq!(v.read_u64(offset::EVENT_INJECTION), 0, "in the shadow");
        // No window: where VMRUN drops the shadow (QEMU) its exit would
        // come before the HLT, and the handler would return into the HLT
        // with the wake-up spent.
        assert!(!v.interrupt_window_requested());
        // The guest executes the HLT: its exit finds the vector pending and
        // the vCPU takes it past the HLT.
        assert_eq!(
            w.k.handle_exit(&mut w.m, w.root_vcpu, Exit::Hlt),
            Next::Resume
        );
        assert!(w.k.prepare_entry(&mut w.m, w.root_vcpu));
        let v = w.m.vmcb(vmcb);
        assert_eq!(v.read_u64(offset::RIP), 0x1002);
        assert_eq!(v.read_u64(offset::EVENT_INJECTION), 0x78 | (1 << 31));
        assert!(!v.interrupt_window_requested());
    }

    #[test]
    fn cache_flushes_are_no_ops_reported_once_and_svm_leftovers_raise_ud() {
        let mut w = world();
        let vmcb = root_vmcb(&mut w);
        w.m.vmcb(vmcb).write_u64(offset::RIP, 0x1000);
        for _ in 0..3 {
            w.k.handle_exit(&mut w.m, w.root_vcpu, Exit::CacheFlush);
        }
        assert_eq!(w.m.vmcb(vmcb).read_u64(offset::RIP), 0x1006);
        let reports =
            w.m.lines
                .iter()
                .filter(|l| l.contains("WBINVD and INVD are ignored"));
        assert_eq!(reports.count(), 1);
        let root = w.k.objects.partition(w.root).expect("root");
        assert_eq!(root.cache_flushes, 3);
        let ud = 6 | (3 << 8) | (1 << 31);
        for exit in [
            Exit::SvmInstruction(code::INVLPGA),
            Exit::Unavailable(code::MONITOR),
            Exit::Unavailable(code::MWAIT),
        ] {
            w.m.vmcb(vmcb).write_u64(offset::EVENT_INJECTION, 0);
            w.k.handle_exit(&mut w.m, w.root_vcpu, exit);
            assert_eq!(
                w.m.vmcb(vmcb).read_u64(offset::EVENT_INJECTION),
                ud,
                "{exit:?}"
            );
        }
    }
}
