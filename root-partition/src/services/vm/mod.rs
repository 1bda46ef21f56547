//! The VM service: definitions on the data volume ([`definition`],
//! [`store`]), the VM table and its state machine ([`manager`]) over the
//! [`hypervisor::Hypervisor`] trait, and a fake of it ([`fake`]) for host
//! tests. The format and the states are in `docs/vm-definition.md`.

pub mod definition;
#[cfg(any(test, feature = "testkit"))]
pub mod fake;
pub mod hypervisor;
pub mod machine;
pub mod manager;
pub mod service;
pub mod store;

pub use definition::{DefinitionError, VmDefinition, VmUuid};
pub use hypervisor::{HvError, HvEvent, Hypervisor};
pub use manager::{
    ManagerConfig, Operation, VmError, VmEvent, VmEventKind, VmId, VmManager, VmState,
};
pub use store::{LoadReport, MemStore, Skipped, Store, StoreError};
