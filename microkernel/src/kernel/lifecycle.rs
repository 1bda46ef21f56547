//! The end of a partition's life.

use alloc::vec::Vec;

use super::Kernel;
use crate::cap::CapId;
use crate::machine::Machine;
use crate::object::partition::RunState;
use crate::object::{ObjectId, ObjectKind};
use crate::paging::Access;

impl Kernel {
    /// Whether a dying partition's vCPUs have all left the processors.
    pub fn destroy_ready(&self, partition: ObjectId) -> bool {
        !self.partition_running(partition)
    }

    /// Tears a dying partition down: its vCPUs and their VMCBs, its SLAT and
    /// permission maps, its ports and timers, every capability to any of them (and
    /// everything derived from the capabilities it held); its memory goes
    /// back to the donor and into the donor's mappings it came from.
    pub fn destroy_finish(&mut self, m: &mut impl Machine, partition: ObjectId) {
        let Some(p) = self.objects.partition(partition) else {
            return;
        };
        debug_assert_eq!(p.state, RunState::Dying);
        let held: Vec<CapId> = p.cspace.caps().map(|c| c.id).collect();
        // What it held a capability on may be left without one.
        let mut named: Vec<ObjectId> = Vec::new();
        for c in p.cspace.caps() {
            if !named.contains(&c.object) {
                named.push(c.object);
            }
        }
        let vcpus = p.vcpus.clone();
        let memory = p.memory.clone();
        let (slat, maps, asid) = (p.slat_root, p.permission_maps, p.asid);
        for id in held {
            self.revoke_derived(m, id);
        }
        let ports: Vec<ObjectId> = self
            .objects
            .ids_of(ObjectKind::Port)
            .into_iter()
            .filter(|&id| {
                self.objects
                    .port(id)
                    .is_some_and(|port| port.owner == partition)
            })
            .collect();
        let timers: Vec<ObjectId> = self
            .objects
            .ids_of(ObjectKind::Timer)
            .into_iter()
            .filter(|&id| self.objects.timer(id).is_some_and(|t| t.owner == partition))
            .collect();
        // Unbind ports and interrupts that deliver to this partition's vCPUs.
        for id in self.objects.ids_of(ObjectKind::Port) {
            if let Some(port) = self.objects.port_mut(id)
                && port.binding.is_some_and(|(v, _)| vcpus.contains(&v))
            {
                port.binding = None;
            }
        }
        for id in self.objects.ids_of(ObjectKind::Interrupt) {
            if let Some(line) = self.objects.interrupt_mut(id)
                && line.binding.is_some_and(|(v, _)| vcpus.contains(&v))
            {
                line.binding = None;
                line.armed = true;
                if let Some(gsi) = line.gsi() {
                    self.sync_line(gsi);
                }
            }
        }
        let mut dead: Vec<ObjectId> = Vec::new();
        dead.push(partition);
        dead.extend(&vcpus);
        dead.extend(&ports);
        dead.extend(&timers);
        dead.extend(&memory);
        for pid in self.objects.ids_of(ObjectKind::Partition) {
            if let Some(p) = self.objects.partition_mut(pid) {
                for id in &dead {
                    p.cspace.remove_object(*id);
                }
            }
        }
        // Mappings of its memory in other partitions go away with it.
        for &mem_id in &memory {
            let Some(mem) = self.objects.memory(mem_id) else {
                continue;
            };
            let elsewhere: Vec<(ObjectId, u64, u64)> = mem
                .mappings
                .iter()
                .filter(|x| x.partition != partition)
                .map(|x| (x.partition, x.gpa, x.pages))
                .collect();
            for (pid, gpa, pages) in elsewhere {
                if let Some(p) = self.objects.partition(pid) {
                    let _ = m.slat_unmap(p.slat_root, gpa, pages);
                }
                self.flush_partition_tlb(m, pid);
            }
        }
        for id in vcpus {
            self.run_queues.remove(id);
            if let Some(v) = self.objects.vcpu(id) {
                m.vmcb_free(v.vmcb);
            }
            self.remove_paid(id);
        }
        for id in ports {
            self.remove_paid(id);
        }
        for id in timers {
            self.free_timer(id);
        }
        m.slat_free(slat);
        m.permission_maps_free(maps);
        self.free_asid(asid);
        for mem_id in memory {
            self.return_memory(m, mem_id);
        }
        self.remove_paid(partition);
        self.reaping.retain(|&p| p != partition);
        named.retain(|&o| o != partition);
        self.release_unreferenced(m, &named);
    }

    /// Gives a donated memory object back to its donor and restores the
    /// donor's mappings its pages were taken from.
    fn return_memory(&mut self, m: &mut impl Machine, mem_id: ObjectId) {
        let Some(crate::object::Object::Memory(mem)) = self.remove_paid(mem_id) else {
            return;
        };
        let Some(donor_id) = mem.donor else { return };
        let Some(donor) = self.objects.memory_mut(donor_id) else {
            return;
        };
        donor.donated.retain(|d| d.2 != mem_id);
        let donor_base = donor.base;
        donor.mappings.extend(mem.restore.iter().copied());
        for map in mem.restore {
            if let Some(p) = self.objects.partition(map.partition) {
                let hpa = donor_base + map.first_page * 4096;
                let _ = m.slat_map(p.slat_root, map.gpa, hpa, map.pages, Access::RWX);
            }
        }
    }
}
