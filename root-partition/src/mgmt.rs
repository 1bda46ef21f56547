//! The management network on the machine: the library's status service
//! (`root_partition::services::mgmt`) on the management NIC, the second
//! virtio-net device (the first is the virtual switch's uplink).

use alloc::string::String;

use root_partition::services::mgmt::{Addressing, StatusBoard, StatusServer};

use crate::hal::net::Network;

/// The management network as a node service.
pub type Management = StatusServer<Network>;

/// The status service on `nic` at the management address; `now_ns` is
/// the node's clock.
pub fn management(nic: Network, board: StatusBoard, now_ns: u64) -> Result<Management, String> {
    let (address, gateway) = crate::hal::net::management_address();
    let at = Addressing {
        mac: nic.mac(),
        address,
        prefix: 24,
        gateway,
    };
    StatusServer::new(nic, at, board, now_ns)
}
