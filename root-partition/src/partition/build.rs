//! The one path that builds a partition, for a new child, a live
//! migration's destination and a restored child ([`build`], [`Purpose`]):
//! the partition created with the specification's priority ceiling from
//! free memory of the pool, its memory mapped, its vCPUs with the
//! specification's priority and processor affinity, and what the purpose
//! adds (a new child's image and page tables loaded before the memory is
//! donated, its ports to and from the root; a destination's copy of the
//! source's capabilities). A failure destroys what was made: no partition
//! is left and the memory is the root's again.
//!
//! # Invariants
//! - Every vCPU of a built partition has the priority and the affinity of
//!   its specification, whatever the purpose (a restored child keeps
//!   them).
//! - [`build`] returns a partition none of whose vCPUs runs; on an error
//!   it leaves neither a partition nor a port of the root's behind.

use ipc::child::{CHILD_EVENT_VECTOR, ChildBootInfo};
use ipc::elf::Image;
use ipc::hypercall::{Call, Rights, SlotHandle};
use ipc::markers;

use super::{Child, Failure, Root, handle};
use crate::config::ChildSpec;
use crate::hv::Kernel;
use crate::layout::{Layout, STACK_BYTES, STACK_TOP};
use crate::say;

/// Most vCPUs of a child.
pub const MAX_VCPUS: usize = 4;

/// What a partition is built for.
#[derive(Clone, Copy)]
pub enum Purpose<'a> {
    /// A new child: its page tables and `image` loaded into its memory
    /// while the memory is still the root's, its vCPUs at the image's
    /// entry with their stacks, and its ports: `to_root` (bound to the
    /// root's vCPU at `to_root_vector`) and `from_root` (bound to its vCPU
    /// 0).
    New {
        /// The child runtime.
        image: &'a Image<'a>,
        /// The root's vector for the child's `to_root` port.
        to_root_vector: u8,
    },
    /// A live migration's destination: vCPUs to be set from the source's
    /// states, and a slot-for-slot copy of `source`'s capabilities.
    Target {
        /// The partition being migrated.
        source: SlotHandle,
    },
    /// A restored child: vCPUs to be set from the saved states; its ports
    /// are made in the saved slots afterwards ([`make_to_root`],
    /// [`make_from_root`]).
    Restore,
}

/// A port between the root and a child: the root's capability and the
/// child's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    /// The root's capability on the port.
    pub root: SlotHandle,
    /// The child's capability (its slot in the child's space).
    pub child: SlotHandle,
}

/// A built partition, none of whose vCPUs runs yet.
#[derive(Clone, Copy, Debug)]
pub struct Built {
    /// The root's capability on the partition.
    pub partition: SlotHandle,
    /// The root's capability on its memory object.
    pub memory: SlotHandle,
    /// The partition's capability on itself (its slot).
    pub self_slot: SlotHandle,
    /// The root's capabilities on its vCPUs.
    pub vcpus: [Option<SlotHandle>; MAX_VCPUS],
    /// First byte of its memory in the root's pool.
    pub base: u64,
    /// Pages of its memory.
    pub pages: u64,
    /// A new child's layout.
    pub layout: Option<Layout>,
    /// A new child's `to_root` port.
    pub to_root: Option<Ports>,
    /// A new child's `from_root` port.
    pub from_root: Option<Ports>,
}

impl Built {
    /// The child as the root holds it once it runs.
    pub fn child(&self, spec: &ChildSpec) -> Child {
        Child {
            spec: *spec,
            partition: self.partition,
            memory: self.memory,
            vcpus: self.vcpus,
            base: self.base,
            pages: self.pages,
            ended: false,
            from_root: self.from_root.map(|p| p.root),
        }
    }

    /// Its vCPUs, in order.
    pub fn vcpu_list(&self) -> impl Iterator<Item = SlotHandle> + '_ {
        self.vcpus.iter().flatten().copied()
    }
}

/// Makes a call; a refusal names it.
pub fn call<K: Kernel>(k: &K, what: &'static str, c: Call) -> Result<[u64; 3], Failure> {
    k.any_call(&c).map_err(|s| Failure::Call(what, s))
}

/// The `VcpuCreate` flags of vCPU `i` of `spec`: its priority, and its
/// processor (`cpu + i`, plus one: 0 is "any").
pub fn vcpu_flags(spec: &ChildSpec, i: usize) -> u64 {
    let affinity = spec.cpu.map_or(0, |c| u64::from(c) + i as u64 + 1);
    u64::from(spec.priority) | (affinity << 8)
}

/// Builds a partition for `spec` from the pool's memory at `base` (see
/// [`Purpose`]); not started. On an error nothing it made is left.
pub fn build<K: Kernel>(
    k: &K,
    root: &Root,
    spec: &ChildSpec,
    base: u64,
    purpose: Purpose<'_>,
) -> Result<Built, Failure> {
    let vcpu_count = spec.vcpus as usize;
    if vcpu_count == 0 || vcpu_count > MAX_VCPUS {
        return Err(Failure::Check("vCPU count"));
    }
    let end = base.checked_add(spec.memory).ok_or(Failure::NoMemory)?;
    if spec.memory < 2 * 4096
        || !spec.memory.is_multiple_of(4096)
        || !base.is_multiple_of(4096)
        || base < root.pool.start
        || end > root.pool.end
    {
        return Err(Failure::NoMemory);
    }
    let pages = spec.memory / 4096;
    // Prepare a new child's memory while it is still the root's.
    let layout = match purpose {
        Purpose::New { image, .. } => {
            let (span_start, span_end) = image.span();
            let layout = Layout::new(spec.memory, span_start, span_end).map_err(Failure::Layout)?;
            load(k, base, &layout, image)?;
            Some(layout)
        }
        Purpose::Target { .. } | Purpose::Restore => None,
    };
    // Create it: the memory leaves the root.
    let r = call(
        k,
        "create",
        Call::PartitionCreate {
            authority: root.authority,
            memory: root.ram,
            first_page: (base - root.ram_range.start) / 4096,
            pages,
            name: spec.name,
            ceiling: spec.priority,
        },
    )?;
    let partition = handle(r[0])?;
    let mut made = Made::default();
    let built = (|| {
        let (memory, self_slot) = (handle(r[1])?, handle(r[2])?);
        call(
            k,
            "map",
            Call::MemoryMap {
                partition,
                memory,
                first_page: 1,
                gpa: 0x1000,
                pages: pages - 1,
                access: Rights::READ | Rights::WRITE | Rights::EXECUTE,
            },
        )?;
        let mut vcpus = [None; MAX_VCPUS];
        for (i, slot) in vcpus.iter_mut().enumerate().take(vcpu_count) {
            let (rip, rsp, cr3, arg) = match (purpose, layout) {
                (Purpose::New { image, .. }, Some(l)) => (
                    image.entry,
                    STACK_TOP - i as u64 * STACK_BYTES - 8,
                    l.cr3(),
                    l.boot_page(),
                ),
                _ => (0, 0, 0, 0),
            };
            let r = call(
                k,
                "vcpu",
                Call::VcpuCreate {
                    partition,
                    rip,
                    rsp,
                    cr3,
                    arg,
                    flags: vcpu_flags(spec, i),
                },
            )?;
            *slot = Some(handle(r[0])?);
        }
        let vcpu0 = vcpus[0].ok_or(Failure::Missing("vcpu"))?;
        let mut built = Built {
            partition,
            memory,
            self_slot,
            vcpus,
            base,
            pages,
            layout,
            to_root: None,
            from_root: None,
        };
        match purpose {
            Purpose::New { to_root_vector, .. } => {
                if ipc::workload::binds_own_port(spec.workload()) {
                    // It binds a port of its own to its vCPU 0 (the
                    // interrupt-window check, a timer's port).
                    call(
                        k,
                        "own vcpu",
                        Call::CapDelegate {
                            slot: vcpu0,
                            target: partition,
                            rights: Rights::CONTROL,
                        },
                    )?;
                }
                let to_root = make_to_root(k, root, to_root_vector, partition, None)?;
                made.ports[0] = Some(to_root.root);
                let from_root = make_from_root(k, partition, vcpu0, None)?;
                made.ports[1] = Some(from_root.root);
                built.to_root = Some(to_root);
                built.from_root = Some(from_root);
            }
            Purpose::Target { source } => {
                call(
                    k,
                    "clone",
                    Call::CapClone {
                        source,
                        target: partition,
                    },
                )?;
            }
            Purpose::Restore => {}
        }
        Ok(built)
    })();
    if built.is_err() {
        // Its memory goes back to the root with it.
        let _ = k.call(&Call::PartitionDestroy { partition });
        for port in made.ports.iter().flatten() {
            let _ = k.call(&Call::CapDelete { slot: *port });
        }
    }
    built
}

/// The root's capabilities a failed build deletes.
#[derive(Default)]
struct Made {
    ports: [Option<SlotHandle>; 2],
}

/// Writes a new child's page tables and image into `[base, base +
/// layout.memory)` of the pool (still the root's).
fn load<K: Kernel>(k: &K, base: u64, layout: &Layout, image: &Image<'_>) -> Result<(), Failure> {
    let mut fits = true;
    k.fill_ram(base, layout.memory, &mut |memory| {
        let tables = layout.tables();
        let Some(area) = memory.get_mut(..tables.end as usize) else {
            fits = false;
            return;
        };
        area.fill(0);
        for (gpa, value) in layout.table_entries() {
            if let Some(word) = memory.get_mut(gpa as usize..gpa as usize + 8) {
                word.copy_from_slice(&value.to_le_bytes());
            } else {
                fits = false;
            }
        }
        for seg in image.segments() {
            let at = layout.image_gpa(seg.vaddr) as usize;
            let bytes = image.file_bytes(seg);
            let Some(dest) = memory.get_mut(at..at + seg.mem_size as usize) else {
                fits = false;
                continue;
            };
            let Some((file, rest)) = dest.split_at_mut_checked(bytes.len()) else {
                fits = false;
                continue;
            };
            file.copy_from_slice(bytes);
            rest.fill(0);
        }
    })
    .map_err(|_| Failure::NoMemory)?;
    if fits {
        Ok(())
    } else {
        Err(Failure::Check("the image does not fit its layout"))
    }
}

/// Makes a `to_root` port bound to the root's vCPU at `vector` and gives
/// `partition` a SIGNAL copy, in slot `at` if given. A failure deletes
/// the port.
pub fn make_to_root<K: Kernel>(
    k: &K,
    root: &Root,
    vector: u8,
    partition: SlotHandle,
    at: Option<SlotHandle>,
) -> Result<Ports, Failure> {
    make_port(k, partition, root.vcpu, vector, Rights::SIGNAL, at)
}

/// Makes a `from_root` port bound to the child's `vcpu0` at its event
/// vector and gives `partition` a BIND copy, in slot `at` if given. A
/// failure deletes the port.
pub fn make_from_root<K: Kernel>(
    k: &K,
    partition: SlotHandle,
    vcpu0: SlotHandle,
    at: Option<SlotHandle>,
) -> Result<Ports, Failure> {
    make_port(k, partition, vcpu0, CHILD_EVENT_VECTOR, Rights::BIND, at)
}

fn make_port<K: Kernel>(
    k: &K,
    partition: SlotHandle,
    vcpu: SlotHandle,
    vector: u8,
    rights: Rights,
    at: Option<SlotHandle>,
) -> Result<Ports, Failure> {
    let port = handle(call(k, "port", Call::PortCreate)?[0])?;
    let granted = (|| {
        call(k, "bind", Call::PortBind { port, vcpu, vector })?;
        let grant = match at {
            Some(at) => Call::CapDelegateAt {
                slot: port,
                target: partition,
                rights,
                at,
            },
            None => Call::CapDelegate {
                slot: port,
                target: partition,
                rights,
            },
        };
        let r = call(k, "grant", grant)?;
        match at {
            Some(at) => Ok(at),
            None => handle(r[0]),
        }
    })();
    match granted {
        Ok(child) => Ok(Ports { root: port, child }),
        Err(e) => {
            let _ = k.call(&Call::CapDelete { slot: port });
            Err(e)
        }
    }
}

/// A new child's boot page: what it is, where its memory areas are, its
/// ports and its VMBus control channel's (`vmbus`: signal, event).
pub fn boot_page(
    root: &Root,
    spec: &ChildSpec,
    built: &Built,
    vmbus: (SlotHandle, SlotHandle),
) -> Result<ChildBootInfo, Failure> {
    let layout = built.layout.ok_or(Failure::Missing("layout"))?;
    Ok(ChildBootInfo {
        name: spec.name,
        vcpu_count: spec.vcpus,
        workload: spec.workload,
        args: spec.args,
        memory_bytes: spec.memory,
        heap: layout.heap,
        stack_top: STACK_TOP,
        stack_bytes: STACK_BYTES,
        self_slot: built.self_slot,
        to_root: built.to_root.map(|p| p.child),
        from_root: built.from_root.map(|p| p.child),
        vmbus_control: layout.vmbus_control(),
        vmbus_signal: Some(vmbus.0),
        vmbus_event: Some(vmbus.1),
        tsc_khz: u64::from(root.tsc_khz),
    })
}

/// Starts a new child: writes its boot page, turns its dirty log on for
/// the `dirty` workload, starts its vCPUs and says so.
pub fn launch<K: Kernel>(
    k: &K,
    spec: &ChildSpec,
    built: &Built,
    boot: &ChildBootInfo,
) -> Result<(), Failure> {
    let layout = built.layout.ok_or(Failure::Missing("layout"))?;
    let partition = built.partition;
    k.scratch(|s| {
        s.page_mut().copy_from_slice(&boot.to_page());
        let buffer = s.address();
        s.call(&Call::MemoryWrite {
            partition,
            gpa: layout.boot_page(),
            buffer,
        })
    })
    .map_err(|e| Failure::Call("boot page", e))?;
    if spec.workload() == "dirty" {
        call(
            k,
            "dirty log",
            Call::DirtyLog {
                partition,
                enable: true,
            },
        )?;
    }
    start_vcpus(k, built.vcpu_list())?;
    say!(
        k,
        "{}",
        markers::ChildStarted {
            name: spec.name.as_str(),
            vcpus: spec.vcpus,
            mib: spec.memory >> 20,
            base: built.base
        }
    );
    Ok(())
}

/// Starts `vcpus`.
pub fn start_vcpus<K: Kernel>(
    k: &K,
    vcpus: impl IntoIterator<Item = SlotHandle>,
) -> Result<(), Failure> {
    for vcpu in vcpus {
        call(k, "start", Call::VcpuStart { vcpu })?;
    }
    Ok(())
}
