//! The node's services, each owning its state and tested on the host over
//! fakes of what it drives (DESIGN.md, "The root partition as a node").

pub mod mgmt;
pub mod migration;
pub mod network;
pub mod scenario;
pub mod vm;
pub mod vmbus;
