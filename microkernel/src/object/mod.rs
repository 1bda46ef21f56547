//! Kernel objects and the table that holds them.
//!
//! One module per object type; each type's operations live beside it. The
//! table hands out [`ObjectId`]s that carry a generation, so an id kept
//! after its object was destroyed never reaches a new object.

pub mod interrupt;
pub mod ioports;
pub mod memory;
pub mod partition;
pub mod port;
pub mod timer;
pub mod vcpu;

use alloc::vec::Vec;
use ipc::hypercall::Status;

pub use interrupt::Interrupt;
pub use ioports::IoPorts;
pub use memory::Memory;
pub use partition::Partition;
pub use port::Port;
pub use timer::Timer;
pub use vcpu::Vcpu;

/// Identifies an object: its table index and the generation of that entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId {
    /// Index in the object table.
    pub index: u32,
    /// Generation of the entry.
    pub generation: u32,
}

/// Object types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    /// A partition.
    Partition,
    /// A virtual processor.
    Vcpu,
    /// A range of physical frames.
    Memory,
    /// An event endpoint.
    Port,
    /// A device interrupt line.
    Interrupt,
    /// A range of I/O ports.
    IoPorts,
    /// A deadline that signals a port.
    Timer,
}

impl ObjectKind {
    /// The object type as the ABI names it (`ipc::boot::cap_kind`: boot
    /// pages, `CapInspect`).
    pub const fn cap_kind(self) -> u32 {
        use ipc::boot::cap_kind;
        match self {
            ObjectKind::Partition => cap_kind::PARTITION,
            ObjectKind::Memory => cap_kind::MEMORY,
            ObjectKind::Interrupt => cap_kind::INTERRUPT,
            ObjectKind::IoPorts => cap_kind::IO_PORTS,
            ObjectKind::Vcpu => cap_kind::VCPU,
            ObjectKind::Port => cap_kind::PORT,
            ObjectKind::Timer => cap_kind::TIMER,
        }
    }
}

/// A kernel object.
#[derive(Debug)]
pub enum Object {
    /// A partition.
    Partition(Partition),
    /// A virtual processor.
    Vcpu(Vcpu),
    /// A range of physical frames.
    Memory(Memory),
    /// An event endpoint.
    Port(Port),
    /// A device interrupt line.
    Interrupt(Interrupt),
    /// A range of I/O ports.
    IoPorts(IoPorts),
    /// A deadline that signals a port.
    Timer(Timer),
}

impl Object {
    /// The object's type.
    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Partition(_) => ObjectKind::Partition,
            Object::Vcpu(_) => ObjectKind::Vcpu,
            Object::Memory(_) => ObjectKind::Memory,
            Object::Port(_) => ObjectKind::Port,
            Object::Interrupt(_) => ObjectKind::Interrupt,
            Object::IoPorts(_) => ObjectKind::IoPorts,
            Object::Timer(_) => ObjectKind::Timer,
        }
    }
}

#[derive(Debug)]
struct Entry {
    generation: u32,
    object: Option<Object>,
    /// The partition whose quota paid for the object (None: boot objects).
    payer: Option<ObjectId>,
}

/// The object table: a fixed number of entries, reserved when the kernel
/// starts, so creating an object never allocates (nor fails to).
#[derive(Debug, Default)]
pub struct Objects {
    entries: Vec<Entry>,
    capacity: usize,
}

macro_rules! typed_access {
    ($get:ident, $get_mut:ident, $variant:ident, $ty:ty) => {
        /// The object `id` if it is alive and of this type.
        pub fn $get(&self, id: ObjectId) -> Option<&$ty> {
            match self.get(id)? {
                Object::$variant(o) => Some(o),
                _ => None,
            }
        }

        /// The object `id` if it is alive and of this type, mutably.
        pub fn $get_mut(&mut self, id: ObjectId) -> Option<&mut $ty> {
            match self.get_mut(id)? {
                Object::$variant(o) => Some(o),
                _ => None,
            }
        }
    };
}

impl Objects {
    /// A table of `capacity` entries, reserved now; `OutOfMemory` when the
    /// heap cannot hold them.
    pub fn with_capacity(capacity: usize) -> Result<Self, Status> {
        let mut entries = Vec::new();
        entries
            .try_reserve_exact(capacity)
            .map_err(|_| Status::OutOfMemory)?;
        Ok(Objects { entries, capacity })
    }

    /// Bytes of kernel heap a table of `capacity` entries takes.
    pub const fn heap_bytes(capacity: usize) -> usize {
        capacity * core::mem::size_of::<Entry>()
    }

    /// Live objects.
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.object.is_some()).count()
    }

    /// Whether the table holds no live object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Inserts an object paid for by `payer`'s quota; returns its id, or
    /// `OutOfMemory` when every entry is taken.
    pub fn insert_paid(
        &mut self,
        object: Object,
        payer: Option<ObjectId>,
    ) -> Result<ObjectId, Status> {
        if let Some((index, entry)) = self
            .entries
            .iter_mut()
            .enumerate()
            .find(|(_, e)| e.object.is_none() && e.generation != u32::MAX)
        {
            entry.object = Some(object);
            entry.payer = payer;
            return Ok(ObjectId {
                index: index as u32,
                generation: entry.generation,
            });
        }
        if self.entries.len() >= self.capacity {
            return Err(Status::OutOfMemory);
        }
        // Within the reserved capacity: no allocation.
        self.entries.push(Entry {
            generation: 0,
            object: Some(object),
            payer,
        });
        Ok(ObjectId {
            index: self.entries.len() as u32 - 1,
            generation: 0,
        })
    }

    /// Inserts a boot object (no payer); returns its id.
    pub fn insert(&mut self, object: Object) -> Result<ObjectId, Status> {
        self.insert_paid(object, None)
    }

    /// Removes an object; its id (and every copy of it) goes stale.
    /// Returns the object and the partition that paid for it.
    pub fn remove_paid(&mut self, id: ObjectId) -> Option<(Object, Option<ObjectId>)> {
        let entry = self.entries.get_mut(id.index as usize)?;
        if entry.generation != id.generation {
            return None;
        }
        let object = entry.object.take()?;
        // Forward only; an entry whose generation is used up stays empty.
        entry.generation = entry.generation.saturating_add(1);
        Some((object, entry.payer.take()))
    }

    /// Removes an object; its id (and every copy of it) goes stale.
    pub fn remove(&mut self, id: ObjectId) -> Option<Object> {
        self.remove_paid(id).map(|(o, _)| o)
    }

    /// The object `id`, if alive.
    pub fn get(&self, id: ObjectId) -> Option<&Object> {
        let entry = self.entries.get(id.index as usize)?;
        (entry.generation == id.generation).then_some(entry.object.as_ref()?)
    }

    /// The object `id`, if alive, mutably.
    pub fn get_mut(&mut self, id: ObjectId) -> Option<&mut Object> {
        let entry = self.entries.get_mut(id.index as usize)?;
        if entry.generation != id.generation {
            return None;
        }
        entry.object.as_mut()
    }

    /// Ids of every live object of a kind.
    pub fn ids_of(&self, kind: ObjectKind) -> Vec<ObjectId> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.object.as_ref().is_some_and(|o| o.kind() == kind))
            .map(|(i, e)| ObjectId {
                index: i as u32,
                generation: e.generation,
            })
            .collect()
    }

    typed_access!(partition, partition_mut, Partition, Partition);
    typed_access!(vcpu, vcpu_mut, Vcpu, Vcpu);
    typed_access!(memory, memory_mut, Memory, Memory);
    typed_access!(port, port_mut, Port, Port);
    typed_access!(interrupt, interrupt_mut, Interrupt, Interrupt);
    typed_access!(ioports, ioports_mut, IoPorts, IoPorts);
    typed_access!(timer, timer_mut, Timer, Timer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_go_stale_when_objects_die() {
        let mut objects = Objects::with_capacity(2).unwrap();
        let a = objects
            .insert(Object::IoPorts(IoPorts {
                first: 0x3f8,
                count: 8,
            }))
            .unwrap();
        assert!(objects.ioports(a).is_some());
        assert!(objects.port(a).is_none(), "wrong type");
        objects.remove(a).unwrap();
        assert!(objects.get(a).is_none());
        let b = objects
            .insert(Object::IoPorts(IoPorts {
                first: 0x60,
                count: 1,
            }))
            .unwrap();
        assert_eq!(b.index, a.index);
        assert!(
            objects.get(a).is_none(),
            "old id must not reach the new object"
        );
        assert!(objects.remove(a).is_none());
        assert_eq!(objects.ids_of(ObjectKind::IoPorts), alloc::vec![b]);
    }

    #[test]
    fn the_table_is_fixed_and_full_is_out_of_memory() {
        let mut objects = Objects::with_capacity(2).unwrap();
        let io = |first| Object::IoPorts(IoPorts { first, count: 1 });
        let a = objects.insert(io(1)).unwrap();
        objects.insert(io(2)).unwrap();
        assert_eq!(objects.insert(io(3)), Err(Status::OutOfMemory));
        assert_eq!(objects.len(), 2);
        objects.remove(a).unwrap();
        assert!(objects.insert(io(3)).is_ok(), "a freed entry is reused");
    }
}
