//! The node's management as one service of its loop: the VM service
//! (the manager and its printing), the management API over it, and the
//! API's HTTP server on the management NIC (when the node has one).
//!
//! They are one service because the API's handlers act on the VM service
//! (a `vm start` is a call of its manager) and the VM service's events are
//! the API's jobs and event stream: each round moves the VMs, hands their
//! events to the API, then serves the network.
//!
//! # Invariants
//! - A round that served a request is busy: what the request changed (a
//!   VM starting, a node stopping) is acted on in the next round, without
//!   a sleep in between.
//! - The node stops only when the VM service says so (every VM stopped),
//!   and at most [`LINGER_NS`] later: the server delivers the answers it
//!   made (the shutdown's 202) meanwhile, but is not waited for longer.

use smoltcp::phy::Device;

use super::api::{Api, Bound};
use super::server::ApiServer;
use crate::node::{Poll, Service};
use crate::services::vm::service::VmService;
use crate::services::vm::{Hypervisor, Store};

/// The VMs, their API and its server.
pub struct Management<D: Device, H: Hypervisor, S: Store> {
    /// The VM service.
    pub vms: VmService<H, S>,
    /// The management API.
    pub api: Api,
    /// The API's server on the management NIC (none without one).
    pub server: Option<ApiServer<D>>,
    /// Connections of the server already counted in the API's statistics.
    counted: u64,
    /// When the VM service said stop: the server gets [`LINGER_NS`] to
    /// deliver the answers already made (the shutdown's own 202).
    stopped_at: Option<u64>,
}

/// How long the server may go on answering after the VMs stopped.
pub const LINGER_NS: u64 = 500_000_000;

impl<D: Device, H: Hypervisor, S: Store> Management<D, H, S> {
    /// The service over `vms`, answering through `api` on `server`.
    pub fn new(vms: VmService<H, S>, api: Api, server: Option<ApiServer<D>>) -> Self {
        Management {
            vms,
            api,
            server,
            counted: 0,
            stopped_at: None,
        }
    }
}

/// The earlier of two deadlines (`None`: never).
fn earlier(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl<D: Device, H: Hypervisor, S: Store> Service for Management<D, H, S> {
    fn name(&self) -> &'static str {
        "management"
    }

    fn poll(&mut self, now: u64, events: u64) -> Poll {
        let vms = match self.stopped_at {
            Some(_) => Poll::Stop,
            None => self.vms.poll(now, events),
        };
        self.api.update(&mut self.vms, now);
        if vms == Poll::Stop {
            let since = *self.stopped_at.get_or_insert(now);
            let open = self.server.as_ref().map_or(0, ApiServer::open);
            if open == 0 || now >= since.saturating_add(LINGER_NS) {
                return Poll::Stop;
            }
        }
        let net = match self.server.as_mut() {
            Some(server) => {
                let mut handler = Bound {
                    api: &mut self.api,
                    vms: &mut self.vms,
                };
                let net = server.poll(now, &mut handler);
                while self.counted < server.accepted() {
                    self.api.connection_opened();
                    self.counted += 1;
                }
                net
            }
            None => Poll::Idle(None),
        };
        match (vms, net) {
            (Poll::Busy, _) | (_, Poll::Busy) => Poll::Busy,
            (Poll::Idle(a), Poll::Idle(b)) => Poll::Idle(earlier(a, b)),
            // The server does not stop the node.
            (Poll::Idle(a), Poll::Stop) => Poll::Idle(a),
            // Lingering: the server's answers go out, then the node stops.
            (Poll::Stop, _) => Poll::Idle(self.stopped_at.map(|t| t + LINGER_NS)),
        }
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
