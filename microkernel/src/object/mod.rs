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
pub mod vcpu;

use alloc::vec::Vec;

pub use interrupt::Interrupt;
pub use ioports::IoPorts;
pub use memory::Memory;
pub use partition::Partition;
pub use port::Port;
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
        }
    }
}

#[derive(Debug)]
struct Entry {
    generation: u32,
    object: Option<Object>,
}

/// The object table.
#[derive(Debug, Default)]
pub struct Objects {
    entries: Vec<Entry>,
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
    /// Inserts an object; returns its id.
    pub fn insert(&mut self, object: Object) -> ObjectId {
        if let Some((index, entry)) = self
            .entries
            .iter_mut()
            .enumerate()
            .find(|(_, e)| e.object.is_none())
        {
            entry.object = Some(object);
            return ObjectId {
                index: index as u32,
                generation: entry.generation,
            };
        }
        self.entries.push(Entry {
            generation: 0,
            object: Some(object),
        });
        ObjectId {
            index: self.entries.len() as u32 - 1,
            generation: 0,
        }
    }

    /// Removes an object; its id (and every copy of it) goes stale.
    pub fn remove(&mut self, id: ObjectId) -> Option<Object> {
        let entry = self.entries.get_mut(id.index as usize)?;
        if entry.generation != id.generation {
            return None;
        }
        let object = entry.object.take();
        entry.generation = entry.generation.wrapping_add(1);
        object
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_go_stale_when_objects_die() {
        let mut objects = Objects::default();
        let a = objects.insert(Object::IoPorts(IoPorts {
            first: 0x3f8,
            count: 8,
        }));
        assert!(objects.ioports(a).is_some());
        assert!(objects.port(a).is_none(), "wrong type");
        objects.remove(a).unwrap();
        assert!(objects.get(a).is_none());
        let b = objects.insert(Object::IoPorts(IoPorts {
            first: 0x60,
            count: 1,
        }));
        assert_eq!(b.index, a.index);
        assert!(
            objects.get(a).is_none(),
            "old id must not reach the new object"
        );
        assert!(objects.remove(a).is_none());
        assert_eq!(objects.ids_of(ObjectKind::IoPorts), alloc::vec![b]);
    }
}
