//! The management network on the machine: the library's API server
//! (`root_partition::services::mgmt::server`) on the management NIC, the
//! second virtio-net device (the first is the virtual switch's uplink),
//! and the node service that joins it to the VMs
//! (`root_partition::services::mgmt::node`).

use alloc::string::String;

use root_partition::services::mgmt::Addressing;
use root_partition::services::mgmt::server::ApiServer;

use crate::hal::net::Network;
use crate::node_vms::MachineHv;
use crate::storage::DataVolume;

/// The VMs, their API and its server, as one node service.
pub type Management =
    root_partition::services::mgmt::node::Management<Network, MachineHv, DataVolume>;

/// The API's server on `nic` at the management address; `now_ns` is the
/// node's clock.
pub fn server(nic: Network, now_ns: u64) -> Result<ApiServer<Network>, String> {
    let (address, gateway) = crate::hal::net::management_address();
    let at = Addressing {
        mac: nic.mac(),
        address,
        prefix: 24,
        gateway,
    };
    ApiServer::new(nic, at, now_ns)
}
