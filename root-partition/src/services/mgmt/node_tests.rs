//! The node's management service end to end on the host: a client stack
//! over the in-memory wire talks HTTP to the server, the API acts on the
//! VM service over the fake hypervisor, and the node stops when asked.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use smoltcp::wire::EthernetAddress;

use super::*;
use crate::services::mgmt::Addressing;
use crate::services::mgmt::api::auth::{Auth, token_digest};
use crate::services::mgmt::api::openapi::OpenApi;
use crate::services::mgmt::api::{Api, NodeFacts};
use crate::services::vm::definition::{VmDefinition, VmUuid};
use crate::services::vm::fake::FakeHypervisor;
use crate::services::vm::manager::{ManagerConfig, VmManager};
use crate::services::vm::store::MemStore;
use crate::testing::http::{CLIENT, Clients, NODE, statuses};
use crate::testing::wire::{End, wire};

const MS: u64 = 1_000_000;
const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn quiet(_: core::fmt::Arguments<'_>) {}

fn node(nic: End) -> Management<End, FakeHypervisor, MemStore> {
    let store = MemStore::new();
    let mut manager = VmManager::new(
        FakeHypervisor::new(Some(store.clone())),
        store,
        ManagerConfig::default(),
    );
    manager
        .define(VmDefinition {
            name: "alpha".into(),
            id: VmUuid::from_random(1),
            memory_mib: 16,
            vcpus: 1,
            workload: "idle".into(),
            args: Vec::new(),
            disks: Vec::new(),
            nic: None,
            priority: 0,
            cpu: None,
            autostart: false,
        })
        .unwrap();
    let vms = VmService::new(manager, None, quiet);
    let facts = NodeFacts {
        name: "capvisor".into(),
        version: "0.1.0".into(),
        processors: 2,
        seed: 7,
    };
    let api = Api::new(Auth::with_digest(token_digest(TOKEN.as_bytes())), facts, 0);
    let at = Addressing {
        mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
        address: NODE,
        prefix: 24,
        gateway: CLIENT,
    };
    Management::new(vms, api, Some(ApiServer::new(nic, at, 0).unwrap()))
}

fn request(method: &str, path: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// The body of the one answer in `bytes`.
fn body(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.split_once("\r\n\r\n").map_or("", |(_, b)| b).into()
}

/// Runs node and clients until connection `peer` is closed; the time and
/// the node's last answer.
fn exchange(
    m: &mut Management<End, FakeHypervisor, MemStore>,
    c: &mut Clients,
    peer: usize,
    mut now: u64,
) -> (u64, Poll) {
    for _ in 0..20_000 {
        let last = m.poll(now, 0);
        c.poll(now);
        if c.peers[peer].closed || last == Poll::Stop {
            return (now, last);
        }
        now += MS;
    }
    panic!(
        "no answer: {:?}",
        String::from_utf8_lossy(&c.peers[peer].got)
    );
}

#[test]
fn a_vm_started_over_http_runs_and_a_shutdown_stops_the_node() {
    let doc = OpenApi::document().unwrap();
    let (a, b) = wire();
    let mut m = node(a);
    let mut c = Clients::new(b);
    let start = c.connect(&request("POST", "/api/v1/vms/alpha/start"));
    let (mut now, _) = exchange(&mut m, &mut c, start, 0);
    assert_eq!(statuses(&c.peers[start].got), [202]);
    let job = body(&c.peers[start].got);
    doc.check_response(
        "POST",
        "/api/v1/vms/alpha/start",
        202,
        "application/json",
        job.as_bytes(),
    )
    .unwrap();
    // The fake boots the guest in the next rounds: the job completes.
    let url: serde_json::Value = serde_json::from_str(&job).unwrap();
    let url = url["url"].as_str().unwrap().to_owned();
    let mut completed = false;
    for _ in 0..50 {
        let p = c.connect(&request("GET", &url));
        now = exchange(&mut m, &mut c, p, now).0;
        let job: serde_json::Value = serde_json::from_str(&body(&c.peers[p].got)).unwrap();
        if job["state"] == "Completed" {
            completed = true;
            break;
        }
        now += 100 * MS;
    }
    assert!(completed, "the start job never completed");
    let id = m.vms.manager.find("alpha").unwrap();
    assert_eq!(m.vms.manager.state(id).unwrap().name(), "Running");
    assert!(m.api.stats().connections >= 2);

    let stop = c.connect(&request("POST", "/api/v1/node/shutdown"));
    now = exchange(&mut m, &mut c, stop, now).0;
    assert_eq!(
        statuses(&c.peers[stop].got),
        [202],
        "{:?}",
        String::from_utf8_lossy(&c.peers[stop].got)
    );
    let mut rounds = 0;
    while m.poll(now, 0) != Poll::Stop {
        c.poll(now);
        now += 10 * MS;
        rounds += 1;
        assert!(rounds < 10_000, "the node never stopped");
    }
    assert_eq!(m.vms.manager.state(id).unwrap().name(), "Off");
}

#[test]
fn a_node_without_a_server_still_runs_its_vms_and_sleeps() {
    let (a, _b) = wire();
    let mut m = node(a);
    m.server = None;
    assert!(matches!(m.poll(0, 0), Poll::Idle(_) | Poll::Busy));
    let id = m.vms.manager.find("alpha").unwrap();
    m.vms.manager.start(id, 0).unwrap();
    let mut now = 0;
    while m.vms.manager.state(id).unwrap().name() != "Running" {
        let _ = m.poll(now, 0);
        now += 10 * MS;
        assert!(now < 10_000 * MS, "the VM never ran");
    }
}
